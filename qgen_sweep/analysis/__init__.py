"""The analysis layer: DuckDB views over the results store, report tables, statistics, figures.

`connect(results_dir)` gives an in-memory DuckDB connection whose named views (trials, epochs,
failures, plan, and measures once measured) read every sweep store under `results_dir`; it cannot
touch any file. The SQL lives in analysis/*.sql; see analysis/views.sql for the contract.
"""

from qgen_sweep.analysis.db import connect, find_stores, run_query

__all__ = ["connect", "find_stores", "run_query"]
