"""The keyledger command line: a thin layer over the ledger and projections APIs."""
