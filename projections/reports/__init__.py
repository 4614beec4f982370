"""Reports folded on demand from the events: compliance, forensics, history, metrics."""
