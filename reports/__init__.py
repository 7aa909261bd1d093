"""Reports built from the DuckDB ledger, rendered as tables, JSON, CSV or HTML."""
