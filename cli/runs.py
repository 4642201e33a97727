"""Commands that read (or rebuild) the run database: ``tuneplan runs``, ``tuneplan runs ingest``
and ``tuneplan sql`` (read-only, sealed; docs/sql.md).

Exit codes: 0 success; 1 the store failed (a locked database); 2 bad input (a refused or invalid
SQL statement, a missing database for ``sql``, a database older than this tuneplan: these commands
only read, and ``tuneplan runs upgrade`` is the one that upgrades it in place). Only argparse and the standard library load with
this module: DuckDB and rich are imported inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from tuneplan.base.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK

from .options import DB_HELP, non_negative_int
from .output import (
    COLUMN_CAP,
    before_after,
    console,
    db_label,
    err,
    fits,
    gib,
    input_error,
    jsonable,
    print_vertical,
    signed_pct,
)


# --------------------------------------------------------------------------------------------
# Parsers


def add_runs(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "runs",
        help="list recorded runs: predicted vs measured memory, learning, forgetting, speed",
        description="List recorded runs, newest first. `tuneplan runs ingest PATH...` rebuilds "
        "database rows from run directories (result.json, metrics.jsonl).",
    )
    p.add_argument("--db", metavar="PATH", help=DB_HELP)
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument(
        "--vertical",
        action="store_true",
        help="one field per line for each run (also used when the table is wider than the terminal)",
    )
    p.add_argument("--limit", type=non_negative_int, metavar="N", help="show the N newest runs")
    p.set_defaults(func=cmd_runs)
    runs_sub = p.add_subparsers(dest="runs_command", metavar="{ingest,upgrade}")
    ing = runs_sub.add_parser(
        "ingest",
        help="rebuild database rows from run directories",
        description="Rebuild runs and metrics rows from run directories (result.json, "
        "metrics.jsonl, plan.json). PATH may be a run directory, its result.json, or a "
        "directory searched recursively.",
    )
    ing.add_argument("paths", metavar="PATH", nargs="+", help="run directory or parent directory")
    ing.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS, help=DB_HELP)
    ing.set_defaults(func=cmd_ingest)
    up = runs_sub.add_parser(
        "upgrade",
        help="upgrade an older run database in place (read-only commands never do)",
        description="Apply the missing schema migrations and re-create the views of the run "
        "database, keeping every row. `tuneplan check`, `runs`, `sql`, `report` and `calibrate` "
        "only read and refuse an older database (exit 2) until this has run; `tuneplan run`, "
        "`compare`, `sweep` and `runs ingest` upgrade it as they write.",
    )
    up.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS, help=DB_HELP)
    up.set_defaults(func=cmd_upgrade)


def add_sql(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser(
        "sql",
        help="run a read-only SQL query against the run database",
        description="Run one read-only statement (SELECT, WITH, DESCRIBE, SHOW, EXPLAIN, PRAGMA "
        "table_info) against the run database. Tables: runs, metrics, comparisons, "
        "distance_measurements; views: run_settings, run_predictions, run_learning, "
        "run_memory_checks, comparison_runs, sweep_trials, method_summary, "
        "audit_qlora_vs_lora_memory, audit_lora_vs_full_forgetting, audit_lora_vs_full_learning, "
        "audit_memory_predictions, audit_learning_rate; each carries only its own columns and "
        "its keys, so JOIN runs USING (run_id) is never ambiguous. The connection is sealed: read-only, no file "
        "outside the database and --read directories, no URL, no extension, configuration "
        "locked; the statement is checked with DuckDB's parser. Writes are refused (exit 2) and "
        "change nothing. `tuneplan sql --schema` lists every table and view with a line per "
        "column; docs/sql.md has worked queries.",
    )
    p.add_argument("query", metavar="QUERY", nargs="?", help='e.g. "SELECT * FROM method_summary"')
    p.add_argument(
        "--schema",
        action="store_true",
        help="list every table and view with a one-line description of each column "
        "(with --format json: as JSON; markdown also accepted)",
    )
    p.add_argument("--db", metavar="PATH", help=DB_HELP)
    p.add_argument(
        "--format",
        choices=("table", "vertical", "csv", "json", "markdown"),
        default="table",
        help="output format (default: table, one field per line when it is wider "
        "than the terminal; vertical: always one field per line; markdown only with "
        "--schema); csv and json stream row batches",
    )
    p.add_argument(
        "--read",
        metavar="DIR",
        action="append",
        default=None,
        help="a directory queries may read files from, e.g. for "
        "read_parquet('runs/*/run.parquet') pooling; repeatable (default: ./runs "
        "when it exists). Nothing else on disk and no URL is reachable",
    )
    lim = p.add_mutually_exclusive_group()
    lim.add_argument(
        "--limit",
        type=non_negative_int,
        metavar="N",
        default=None,
        help="return at most N rows (default: 1000; a note on stderr says when rows were cut)",
    )
    lim.add_argument(
        "--no-limit", action="store_true", help="return every row (use with --format csv/json, which stream)"
    )
    p.set_defaults(func=cmd_sql)


# --------------------------------------------------------------------------------------------
# runs


def cmd_runs(args: argparse.Namespace) -> int:
    from tuneplan.executor.ledger import LIST_KEYS, NoDatabase, SchemaOutdated, StoreError, list_runs

    try:
        rows = list_runs(args.db, limit=args.limit)
    except NoDatabase as exc:
        err(str(exc))
        rows = []
    except SchemaOutdated as exc:
        err(f"error: {exc}")
        return EXIT_BAD_INPUT
    except StoreError as exc:
        err(f"error: {exc}")
        return EXIT_FAILED
    if args.json:
        print(json.dumps([{k: jsonable(r.get(k)) for k in LIST_KEYS} for r in rows], indent=2))
        return EXIT_OK
    _print_runs_table(rows, args.db, vertical=getattr(args, "vertical", False))
    return EXIT_OK


def _resumable(rows: list[dict]) -> list[tuple[dict, int]]:
    """(row, checkpoint step) of the runs `tuneplan run --resume` can continue."""
    from tuneplan.executor.checkpoint import complete_checkpoints

    out = []
    for r in rows:
        if r.get("status") in ("interrupted", "failed") and r.get("run_dir"):
            found = complete_checkpoints(Path(r["run_dir"]))
            if found:
                out.append((r, found[-1][0]))
    return out


_RUNS_COLUMNS = [
    ("id", "left"),
    ("status", "left"),
    ("method", "left"),
    ("model", "left"),
    ("device planned / used", "left"),
    ("procs", "right"),
    ("peak GiB pred/meas", "right"),
    ("err", "right"),
    ("err like-for-like", "right"),
    ("eval before→after", "right"),
    ("probe before→after", "right"),
    ("tok/s", "right"),
    ("wall s", "right"),
]


def _runs_cells(r: dict) -> list[str]:
    """One run's cells, plain text, in _RUNS_COLUMNS order (errors read from the views)."""
    return [
        r["run_id"],
        r["status"] or "-",
        r["method"] or "-",
        r["model"] or "-",
        f"{r.get('planned_hardware') or '-'} / {r['hardware'] or '-'}",
        str(r["num_processes"] or 1),
        f"{gib(r['predicted_peak_bytes'])} / {gib(r['measured_peak_bytes'])}",
        signed_pct(r["memory_error"]) or "-",
        signed_pct(r["memory_error_comparable"]) or "-",
        before_after(r["eval_loss_before"], r["eval_loss_after"]),
        before_after(r["forgetting_loss_before"], r["forgetting_loss_after"]),
        "-" if r["tokens_per_second"] is None else f"{r['tokens_per_second']:,.0f}",
        "-" if r["wall_seconds"] is None else f"{r['wall_seconds']:.1f}",
    ]


def _print_runs_table(rows: list[dict], db: str | None, *, vertical: bool = False) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"runs in {db_label(db)}"), title_justify="left")
    for name, justify in _RUNS_COLUMNS:
        table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis", max_width=COLUMN_CAP)
    styles = {"succeeded": "green", "failed": "red", "interrupted": "yellow", "running": "cyan"}
    cells = [_runs_cells(r) for r in rows]
    for c in cells:
        table.add_row(
            *(f"[{styles[v]}]{v}[/]" if i == 1 and v in styles else escape(v) for i, v in enumerate(c))
        )
    out = console()
    if vertical or not fits(out, [name for name, _ in _RUNS_COLUMNS], cells):
        out.print(escape(f"runs in {db_label(db)}"))
        print_vertical(out, [name for name, _ in _RUNS_COLUMNS], cells)
    else:
        out.print(table)
    resumable = _resumable(rows)
    if resumable:
        out.print("resumable (interrupted or failed, with a checkpoint):")
        for r, step in resumable:
            out.print(
                f"  {escape(r['run_id'])} at step {step}: tuneplan run --resume {escape(r['run_dir'])}",
                soft_wrap=True,
            )
    if rows:
        out.print(
            "err = (predicted - measured) / measured, whole peaks; err like-for-like = "
            "the same on tensor bytes (prediction less framework overhead, measurement "
            "less runtime); eval = in-domain loss (lower is learning); probe = "
            "general-text loss (higher is forgetting)"
        )


def cmd_ingest(args: argparse.Namespace) -> int:
    from tuneplan.base.errors import InputError
    from tuneplan.executor.ledger import StoreError, ingest

    notes: list[str] = []
    try:
        ids = ingest(args.db, args.paths, notes=notes)
    except InputError as exc:
        err(exc.render())
        return EXIT_BAD_INPUT
    except StoreError as exc:
        err(f"error: {exc}")
        return EXIT_FAILED
    print(f"ingested {len(ids)} run{'s' if len(ids) != 1 else ''} into {db_label(args.db)}")
    for run_id in ids:
        print(f"  {run_id}")
    for note in notes:
        print(f"  note: {note}")
    return EXIT_OK


def cmd_upgrade(args: argparse.Namespace) -> int:
    """`tuneplan runs upgrade`: the one command whose job is to upgrade the database in place."""
    from tuneplan.executor import ledger

    try:
        con = ledger.connect(args.db, read_only=True)
        try:
            before = ledger.schema_version(con)
            why = ledger.outdated(con)
        finally:
            con.close()
        if why is None and before >= ledger.SCHEMA_VERSION:
            print(f"{db_label(args.db)} is up to date (schema version {before}); nothing changed")
            return EXIT_OK
        con = ledger.connect(args.db)  # applies the migrations, re-creates the views
        try:
            after = ledger.schema_version(con)
        finally:
            con.close()
    except ledger.NoDatabase as exc:
        err(f"error: {exc}")
        return EXIT_BAD_INPUT
    except ledger.StoreError as exc:
        err(f"error: {exc}")
        return EXIT_FAILED
    print(
        f"upgraded {db_label(args.db)}: schema version {before} -> {after}, views re-created; every row kept"
    )
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# sql


def _cmd_sql_schema(args: argparse.Namespace) -> int:
    """--schema: the tables and views as this tuneplan creates them (fresh in-memory database)."""
    import duckdb

    from tuneplan.executor import ledger as store
    from tuneplan.executor.ledger.sqldocs import render_schema

    con = duckdb.connect(":memory:")
    try:
        store.migrate(con)
        kinds = dict(
            con.execute(
                "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'main'"
            ).fetchall()
        )
        cols = con.execute(
            "SELECT table_name, column_name, data_type FROM duckdb_columns() "
            "WHERE schema_name = 'main' AND NOT internal "
            "ORDER BY table_name, column_index"
        ).fetchall()
    finally:
        con.close()
    order = sorted(kinds, key=lambda t: (kinds[t] != "BASE TABLE", t))
    rows = [
        (t, "table" if kinds[t] == "BASE TABLE" else "view", c, d)
        for t in order
        for (tt, c, d) in cols
        if tt == t
    ]
    fmt = {"json": "json", "markdown": "markdown"}.get(args.format, "text")
    sys.stdout.write(render_schema(rows, fmt))
    return EXIT_OK


def cmd_sql(args: argparse.Namespace) -> int:
    if args.schema:
        return _cmd_sql_schema(args)
    if not args.query:
        input_error(
            "QUERY",
            "no query given",
            'pass a statement, e.g. "SELECT * FROM run_settings", or --schema to list the tables and views',
        )
        return EXIT_BAD_INPUT
    if args.format == "markdown":
        input_error("--format", "markdown is for --schema", "use table, csv or json")
        return EXIT_BAD_INPUT
    from tuneplan.executor.ledger import sqlsafe
    from tuneplan.executor.ledger import NoDatabase, QueryError, SchemaOutdated, StoreError

    if args.no_limit:
        limit = None
    else:
        limit = sqlsafe.DEFAULT_ROW_LIMIT if args.limit is None else args.limit
    read_paths = args.read if args.read is not None else sqlsafe.default_read_paths()
    try:
        with sqlsafe.stream(args.query, args.db, read_paths=read_paths, limit=limit) as result:
            shown = _print_sql_result(result, args.format)
    except (QueryError, NoDatabase, SchemaOutdated) as exc:
        err(f"error: {exc}")
        return EXIT_BAD_INPUT
    except StoreError as exc:
        err(f"error: {exc}")
        return EXIT_FAILED
    except BrokenPipeError:  # `tuneplan sql ... | head`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return EXIT_OK
    if result.truncated:
        err(
            f"note: showing the first {shown} row{'s' if shown != 1 else ''}; more exist. "
            f"Use --limit N or --no-limit (with --format csv/json, which stream)."
        )
    return EXIT_OK


def _json_typed_columns(result: Any) -> set[int]:
    """Indexes of the result's JSON-typed columns (plan_json, result_json, versions, json_extract
    results): DuckDB hands them over as text; --format json nests them as JSON instead."""
    cursor = getattr(result, "_cursor", None)
    description = getattr(cursor, "description", None) or []
    return {i for i, d in enumerate(description) if str(d[1]).upper() == "JSON"}


def _json_value(value: Any) -> Any:
    """A JSON column's text as JSON (the text itself if it does not parse)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return jsonable(value)


def _print_sql_result(result: Any, fmt: str) -> int:
    """Write a sqlsafe.QueryResult to stdout; csv/json one batch at a time. Returns rows shown."""
    columns = result.columns
    out = sys.stdout
    if fmt == "json":
        json_cols = _json_typed_columns(result)
        out.write("[")
        first = True
        for batch in result.batches:
            for row in batch:
                item = json.dumps(
                    {
                        c: _json_value(v) if i in json_cols else jsonable(v)
                        for i, (c, v) in enumerate(zip(columns, row))
                    },
                    indent=2,
                )
                out.write(("\n" if first else ",\n") + "  " + item.replace("\n", "\n  "))
                first = False
            out.flush()
        out.write("]\n" if first else "\n]\n")
        return result.rows_returned
    if fmt == "csv":
        import csv

        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for batch in result.batches:
            writer.writerows([_csv_cell(v) for v in row] for row in batch)
            out.flush()
        return result.rows_returned
    from rich.markup import escape
    from rich.table import Table

    cells = [["" if v is None else _text_cell(v) for v in row] for batch in result.batches for row in batch]
    shown = console()
    table = Table()
    for c in columns:
        table.add_column(escape(c), no_wrap=True, overflow="ellipsis", max_width=COLUMN_CAP)
    for row in cells:
        table.add_row(*(escape(v) for v in row))
    if fmt == "vertical" or not fits(shown, columns, cells):
        print_vertical(shown, columns, cells)
    else:
        shown.print(table)
    n = result.rows_returned
    shown.print(f"{n} row{'s' if n != 1 else ''}")
    return n


def _text_cell(value: Any) -> str:
    value = jsonable(value)
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _csv_cell(value: Any) -> Any:
    value = jsonable(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "" if value is None else value
