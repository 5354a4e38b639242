"""The one door for user SQL: read-only statements (`query`) and `--where` conditions.

Every piece of SQL a user types reaches DuckDB through this module, on a connection from
`qgen_sweep.analysis.db.connect` (file access off, configuration locked, a memory limit). On top
of that sandbox this module checks what the SQL is before it runs:

- `query` takes exactly one statement that only reads: SELECT / WITH / FROM / DESCRIBE / SHOW /
  SUMMARIZE, or EXPLAIN [ANALYZE] of one. DuckDB's parse tree (json_serialize_sql) is walked so a
  data-modifying statement nested in a CTE or a subquery (`WITH d AS (DELETE ... RETURNING *)`) is
  refused too.
- `--where` is parsed by DuckDB as exactly ONE expression (duckdb.SQLExpression), checked the same
  way for nested statements, and applied as an expression object: it is never pasted into SQL text,
  so `FALSE); COPY ...; SELECT (` is a parse error, not three statements.
- A time limit (the connection is interrupted after `timeout` seconds) and a row cap bound what a
  statement may cost; the memory limit is the connection's.

Every refusal and every DuckDB error of the user's SQL is a UsageError (exit 2): the SQL is input.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import duckdb

from qgen_sweep.errors import UsageError

DEFAULT_TIMEOUT_S = 60.0  # s: `query --timeout`, and every --where selection
DEFAULT_ROW_LIMIT = 1000  # rows `query` prints unless --limit says otherwise (0 = no cap)
# Statement types `query` accepts (DESCRIBE / SHOW / SUMMARIZE / FROM parse as SELECT).
_READ_ONLY_TYPES = ("SELECT", "EXPLAIN")
# Query-node types of DuckDB's parse tree that only read; INSERT_QUERY_NODE, DELETE_QUERY_NODE,
# UPDATE_QUERY_NODE (and any node type DuckDB adds later) are refused.
_READ_NODES = {"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE",
               "BOUND_SUBQUERY_NODE"}
_EXPLAIN_WORDS = {"EXPLAIN", "ANALYZE", "ANALYSE"}

T = TypeVar("T")
_PARSER: list[duckdb.DuckDBPyConnection] = []  # one connection that only parses (~60 ms to open)
_PARSER_LOCK = threading.Lock()
_JSON_DEPTH = 20_000  # recursion limit while reading a parse tree (see _load_json)


def _parser() -> duckdb.DuckDBPyConnection:
    """An empty in-memory connection used only for json_serialize_sql: it binds and runs nothing
    of the user's SQL (the text is a string argument), has no tables and no file access."""
    if not _PARSER:
        con = duckdb.connect(":memory:")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        _PARSER.append(con)
    return _PARSER[0]


@dataclass(frozen=True)
class Result:
    """A capped query result: column names, the rows kept, and whether more rows existed."""

    names: list[str]
    rows: list[tuple]
    truncated: bool


def one_line(error: BaseException) -> str:
    """An error message on one line (DuckDB's span several)."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


# ---- what a statement is -----------------------------------------------------------------------
def shown(text: str, limit: int = 120) -> str:
    """repr(text) cut to `limit` characters, for one-line messages about arbitrary SQL."""
    quoted = repr(text)
    return quoted if len(quoted) <= limit else quoted[: limit - 5] + " ...'"


def _node_types(tree: Any) -> Iterator[str]:
    """Every query-node type in a json_serialize_sql tree (a `type` ending in _NODE), found
    without recursion (an expression may nest ~1,000 deep)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            kind = node.get("type")
            if isinstance(kind, str) and kind.endswith("_NODE"):
                yield kind
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _writes_in_tree(sql: str, what: str = "query") -> list[str]:
    """Data-modifying query nodes anywhere inside one SELECT statement (CTEs, subqueries).

    A statement whose tree DuckDB cannot serialise is refused: what cannot be checked does not run.
    """
    with _PARSER_LOCK:
        text = _parser().execute("SELECT json_serialize_sql($sql::VARCHAR)",
                                 {"sql": sql}).fetchone()[0]
        tree = _load_json(text, what)
    if tree.get("error"):
        raise UsageError(f"{what} could not be checked as read-only: {tree.get('error_message')} "
                         "(write one SELECT statement)")
    return sorted({kind for kind in _node_types(tree) if kind not in _READ_NODES})


def _load_json(text: str, what: str) -> dict[str, Any]:
    """json.loads of a parse tree. DuckDB caps expressions at 1,000 levels (max_expression_depth),
    a few JSON levels each: more than Python's default recursion limit allows json to read, so
    the limit is raised while reading (under _PARSER_LOCK)."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, _JSON_DEPTH))
    try:
        return json.loads(text)
    except RecursionError:
        raise UsageError(f"{what} is nested too deeply to be checked as read-only; write it with "
                         "fewer nested expressions") from None
    finally:
        sys.setrecursionlimit(limit)


def _explained(sql: str) -> str:
    """The statement an EXPLAIN [ANALYZE] [(options)] explains (comments anywhere)."""
    tokens = duckdb.tokenize(sql)
    index, depth = 0, 0
    while index < len(tokens):
        start, kind = tokens[index]
        end = tokens[index + 1][0] if index + 1 < len(tokens) else len(sql)
        word = sql[start:end].strip().upper()
        skipped = kind == duckdb.token_type.comment or (depth == 0 and word in _EXPLAIN_WORDS)
        if skipped:
            pass
        elif word.startswith("("):
            depth += 1
        elif depth > 0:
            depth -= word.count(")")
        else:
            return sql[start:]
        index += 1
    return ""


def _refuse(what: str) -> UsageError:
    return UsageError(
        f"query is read-only: {what}, only SELECT (also WITH / FROM / DESCRIBE / SHOW / "
        "SUMMARIZE / EXPLAIN); export results with --output FILE"
    )


def check_text(text: str, what: str) -> None:
    """A UsageError for text DuckDB would misread: NUL (it ends the C string there, silently
    dropping the rest) or lone surrogates (not Unicode: bytes that were not UTF-8)."""
    bad = [ch for ch in text if ch == "\x00" or 0xD800 <= ord(ch) <= 0xDFFF]
    if bad:
        raise UsageError(f"{what} holds U+{ord(bad[0]):04X}, which is not SQL text (a NUL byte, "
                         "or bytes that were not UTF-8); remove it")


def _extract(sql: str) -> list[Any]:
    check_text(sql, "the query")
    try:
        return duckdb.extract_statements(sql)
    except duckdb.Error as error:
        raise UsageError(one_line(error)) from error


def read_only_statement(sql: str) -> str:
    """The one read-only statement in `sql`, or a UsageError saying why it is refused."""
    statements = _extract(sql)
    if len(statements) != 1:
        raise UsageError(f"query takes exactly one SQL statement, but got {len(statements)} "
                         "(run them one at a time)")
    text = statements[0].query
    inner, kind = text, statements[0].type.name
    while kind == "EXPLAIN":  # EXPLAIN ANALYZE runs its statement: it must be read-only too
        inner = _explained(inner)
        found = _extract(inner) if inner.strip() else []
        if len(found) != 1:
            raise UsageError("EXPLAIN takes one statement to explain, e.g. EXPLAIN SELECT ...")
        inner, kind = found[0].query, found[0].type.name
    if kind not in _READ_ONLY_TYPES:
        raise _refuse(f"{kind} statements are not allowed")
    writes = _writes_in_tree(inner)
    if writes:
        raise _refuse(f"a data-modifying statement inside it ({', '.join(writes)}) is not allowed")
    return text


def where_expression(where: str, flag: str = "--where") -> duckdb.Expression:
    """`where` parsed by DuckDB as exactly one read-only expression (UsageError otherwise)."""
    example = '(e.g. "bits = 2 AND optimizer = \'sgd\'")'
    check_text(where, flag)
    try:
        expression = duckdb.SQLExpression(where)
    except (duckdb.Error, ValueError) as error:
        raise UsageError(f"{flag} must be one SQL condition {example}, but {shown(where)} is "
                         f"not: {one_line(error)}") from error
    writes = _writes_in_tree(f"SELECT 1 WHERE ({expression}\n)", flag)
    if writes:
        raise UsageError(f"{flag} is read-only: {shown(where)} holds a data-modifying "
                         f"statement ({', '.join(writes)})")
    return expression


# ---- running it under a time limit -------------------------------------------------------------
def with_timeout(con: duckdb.DuckDBPyConnection, timeout: float | None, work: Callable[[], T],
                 what: str) -> T:
    """Run `work()` (DuckDB calls on `con`); interrupt it after `timeout` seconds (None/0: none).

    DuckDB has no statement timeout setting: a timer calls con.interrupt(), which stops the running
    statement with an InterruptException (and is a no-op when nothing runs).
    """
    timer = threading.Timer(timeout, con.interrupt) if timeout else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        return work()
    except duckdb.InterruptException as error:
        raise UsageError(f"{what} stopped after the {timeout:g} s time limit; narrow it (WHERE, "
                         "LIMIT) or raise --timeout") from error
    except duckdb.OutOfMemoryException as error:
        raise UsageError(f"{what} needs more memory than the analysis connection's limit; "
                         "aggregate or filter more (WHERE, GROUP BY, LIMIT)") from error
    except duckdb.Error as error:
        raise UsageError(one_line(error)) from error
    finally:
        if timer is not None:
            # Wait for the timer thread to end: a thread still holding the connection when the
            # interpreter exits makes DuckDB abort the process (terminate, exit -6).
            timer.cancel()
            timer.join()


def run_statement(con: duckdb.DuckDBPyConnection, sql: str, limit: int = DEFAULT_ROW_LIMIT,
                  timeout: float | None = DEFAULT_TIMEOUT_S) -> Result:
    """Run one read-only statement: at most `limit` rows (0 = all) within `timeout` seconds."""
    statement = read_only_statement(sql)

    def work() -> Result:
        relation = con.sql(statement)
        if relation is None:  # nothing to return (cannot happen for a checked statement)
            return Result([], [], False)
        names = list(relation.columns)
        rows = (relation.limit(limit + 1) if limit else relation).fetchall()
        return Result(names, rows[:limit] if limit else rows, bool(limit) and len(rows) > limit)

    return with_timeout(con, timeout, work, "the query")


def run_statement_arrow(con: duckdb.DuckDBPyConnection, sql: str, limit: int = DEFAULT_ROW_LIMIT,
                        timeout: float | None = DEFAULT_TIMEOUT_S) -> tuple[Any, bool]:
    """run_statement's result as an Arrow table (DuckDB's types kept) and whether it was cut."""
    statement = read_only_statement(sql)

    def work() -> tuple[Any, bool]:
        relation = con.sql(statement)
        table = (relation.limit(limit + 1) if limit else relation).to_arrow_table()
        cut = bool(limit) and table.num_rows > limit
        return (table.slice(0, limit) if cut else table), cut

    return with_timeout(con, timeout, work, "the query")


def select_where(con: duckdb.DuckDBPyConnection, view: str, where: str | None,
                 columns: Sequence[str], *, condition: str | None = None,
                 order_by: str | None = None, flag: str = "--where",
                 timeout: float | None = DEFAULT_TIMEOUT_S) -> list[dict[str, Any]]:
    """Rows of `view` matching the user's `where` (one expression) as dicts of `columns`.

    `condition` and `order_by` are the caller's own SQL (never user text). This is the helper every
    command with a `--where` option uses (measure, ...), so each runs in the same sandbox as query.
    """
    expression = where_expression(where, flag) if where and where.strip() else None

    def work() -> list[dict[str, Any]]:
        relation = con.view(view)
        if condition:
            relation = relation.filter(condition)
        if expression is not None:
            relation = relation.filter(expression)
        relation = relation.project(", ".join(f'"{c}"' for c in columns))
        if order_by:
            relation = relation.order(order_by)
        return [dict(zip(columns, row, strict=True)) for row in relation.fetchall()]

    try:
        return with_timeout(con, timeout, work, f"{flag} {shown(where or '')}")
    except UsageError as error:
        if expression is None or "time limit" in str(error) or "memory" in str(error):
            raise
        raise UsageError(f"{flag} must be a SQL condition on the {view} columns (e.g. "
                         f"\"bits = 2\"), but {shown(where)} failed: {error}") from None
