"""A DuckDB helper shared by the analysis modules."""

from __future__ import annotations

from typing import Any

import duckdb


def execute(con: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> None:
    """Run a statement to completion (DuckDB 2.0 refuses new work while a result is unfetched)."""
    con.execute(sql, params).fetchall()
