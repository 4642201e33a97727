"""Old run databases for the ledger's upgrade tests: built from the frozen scripts tuneplan
shipped for schema versions 1-6 (tests/fixtures/ledger_schema_v6, copied verbatim from the last
executor/store.py that held them), so an "old database" really has the old tables and views,
whatever the current migrations say."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

FROZEN = Path(__file__).parent / "fixtures" / "ledger_schema_v6"


def old_ledger_schema(con, target: int) -> list[int]:
    """Make ``con`` a run database exactly as tuneplan wrote schema version ``target`` (1-6),
    views of that time included, recorded in schema_migrations. Returns the versions applied."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, applied_at TIMESTAMP NOT NULL)"
    )
    applied = []
    for path in sorted(FROZEN.glob("*.sql")):
        version = int(path.stem)
        if version > target:
            break
        con.execute(path.read_text(encoding="utf-8"))
        con.execute("INSERT INTO schema_migrations VALUES (?, ?)", [version, datetime(2025, 1, 1)])
        applied.append(version)
    return applied
