"""Renderers: a report as JSON, CSV, Markdown or HTML, with inline SVG charts."""
