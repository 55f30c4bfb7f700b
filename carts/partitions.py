"""The log's monthly partitions (docs/operations.md, "The log's partitions").

``carts_cartevent`` is partitioned by ``recorded_at``, one partition per UTC month, named
``carts_cartevent_yYYYYmMM``. The scheduler makes the current month's and the next ones' ahead of
time (``partitions_ensure_ahead``); the append makes a missing one on demand (an append given a
time of its own). Old months are archived: copied to a file, detached and dropped, with no row
ever updated or deleted, and only once every projector has read them, so positions and
checkpoints stay valid. An archive can be attached again (``partition_restore``).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg
from django.db import connection, transaction

log = logging.getLogger(__name__)

PARENT = "carts_cartevent"
PARTITIONS_AHEAD = 3  # this month and the next two
# How long an archive waits for the month's last appends, then for the log (a DETACH waits for
# every transaction reading the log, and appends queue behind it meanwhile).
ARCHIVE_LOCK_TIMEOUT = "2s"
_MISSING = f'no partition of relation "{PARENT}" found for row'
# The archive's columns, in this order (a restore copies them back the same way).
COLUMNS = (
    "store_id", "store_position", "position", "event_id", "cart", "version", "type",
    "schema_version", "data", "shopper", "occurred_at", "recorded_at", "body_hash", "source",
    "source_ref",
)  # fmt: skip


class MonthMissing(Exception):
    """The month of an append's ``recorded_at`` has no partition yet."""

    def __init__(self, at: datetime) -> None:
        super().__init__(f"no partition of the log for {at:%Y-%m}")
        self.month = month_of(at)


class ArchiveRefused(Exception):
    """A partition that must not be archived (yet); the message says why."""


def is_month_missing(exc: BaseException) -> bool:
    """A CHECK violation (23514) on the log that names no constraint: no partition took the row
    (read from the error's fields, not its message, which follows the server's language)."""
    diag = getattr(exc, "diag", None)
    if diag is None:
        return _MISSING in str(exc)
    return diag.sqlstate == "23514" and diag.table_name == PARENT and not diag.constraint_name


def month_of(at: datetime | date) -> date:
    if isinstance(at, datetime):
        at = at.astimezone(UTC).date() if at.tzinfo else at.date()
    return date(at.year, at.month, 1)


def month_add(month: date, months: int) -> date:
    index = month.year * 12 + month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def partition_name(month: date) -> str:
    return f"{PARENT}_y{month.year:04d}m{month.month:02d}"


def _autocommit() -> psycopg.Connection[Any]:
    """A connection of its own: a partition made by an append must not wait for (or be rolled
    back with) the append's transaction."""
    params = connection.get_connection_params()
    return psycopg.connect(**params, autocommit=True)


def partition_ensure(*, month: date) -> str:
    """Make the month's partition unless it exists (in its own transaction); its name. Database
    errors surface as Django's (an outage: 503 at the edges)."""
    with connection.wrap_database_errors, _autocommit() as conn:
        # Bounded: a caller whose own transaction holds the log (DDL) would wait for itself.
        conn.execute("SET lock_timeout = '5s'")
        row = conn.execute(
            "SELECT carts_cartevent_partition_ensure(%s::date)", [month_of(month)]
        ).fetchone()
    assert row is not None
    return str(row[0])


def partitions_ensure_ahead(
    *, now: datetime | None = None, months: int = PARTITIONS_AHEAD
) -> list[str]:
    """The scheduler's job: this month's partition and the next ones exist."""
    start = month_of(now or datetime.now(UTC))
    return [partition_ensure(month=month_add(start, k)) for k in range(months)]


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    month: date
    attached: bool


def partitions_list() -> list[Partition]:
    """Every monthly partition, attached or detached (archived but not dropped), by month."""
    with connection.cursor() as cursor:
        cursor.execute(
            r"""
            SELECT c.relname, i.inhrelid IS NOT NULL
            FROM pg_class c
            LEFT JOIN pg_inherits i ON i.inhrelid = c.oid AND i.inhparent = %s::regclass
            WHERE c.relkind = 'r' AND c.relname ~ '^carts_cartevent_y\d{4}m\d{2}$'
              AND c.relnamespace = current_schema()::regnamespace
            ORDER BY c.relname
            """,
            [PARENT],
        )
        rows = cursor.fetchall()
    return [
        Partition(name, date(int(name[-7:-3]), int(name[-2:]), 1), bool(attached))
        for name, attached in rows
    ]


@dataclass(frozen=True, slots=True)
class Archive:
    name: str
    path: Path
    rows: int
    sha256: str


def _unread_by(cursor: psycopg.Cursor[Any], name: str, projector_names: list[str]) -> list[str]:
    """The projectors that have not read every event of the partition."""
    if not projector_names:
        return []
    cursor.execute(
        f"""
        SELECT DISTINCT p.name
        FROM (SELECT store_id, max(store_position) AS last FROM {name} GROUP BY store_id) AS s
        CROSS JOIN unnest(%s::text[]) AS p(name)
        LEFT JOIN carts_projectorcheckpoint c ON c.store_id = s.store_id AND c.name = p.name
        WHERE COALESCE(c.position, 0) < s.last
        ORDER BY p.name
        """,
        [projector_names],
    )
    return [row[0] for row in cursor.fetchall()]


def partition_archive(
    *,
    month: date,
    directory: Path,
    projector_names: list[str],
    now: datetime | None = None,
    drop: bool = True,
) -> Archive:
    """Copy the month's partition to ``directory`` (gzip CSV and a manifest with its row count
    and sha256), detach it from the log and, with ``drop``, drop it. Refused for this month or
    a later one, and while a projector (``projector_names``) has not read all of it."""
    month = month_of(month)
    if month >= month_of(now or datetime.now(UTC)):
        raise ArchiveRefused(f"{month:%Y-%m} is not over yet: only past months are archived")
    name = partition_name(month)
    attached = {p.name: p.attached for p in partitions_list()}
    if not attached.get(name):
        raise ArchiveRefused(f"{name} is not a partition of the log")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.csv.gz"
    manifest_path = directory / f"{name}.json"
    digest = hashlib.sha256()
    rows = 0
    with transaction.atomic(), connection.cursor() as django_cursor:
        cursor = django_cursor.cursor
        # Waits for appends still writing the month (one that began in it may commit after it
        # ended) and keeps new ones out, so the copy holds every row the drop will take; and
        # bounded, since DETACH takes the log itself: appends queue behind it while it waits.
        cursor.execute(f"SET LOCAL lock_timeout = '{ARCHIVE_LOCK_TIMEOUT}'")
        try:
            # SHARE mode needs UPDATE (or, from PostgreSQL 17, MAINTAIN), which the log's owner
            # revoked from itself: it grants it back for this lock only (the triggers still
            # refuse any UPDATE), inside this transaction.
            cursor.execute(f"GRANT UPDATE ON {name} TO CURRENT_USER")
            cursor.execute(f"LOCK TABLE {name} IN SHARE MODE")
            cursor.execute(f"REVOKE UPDATE ON {name} FROM CURRENT_USER")
        except psycopg.errors.LockNotAvailable as exc:
            raise ArchiveRefused(f"appends to {name} are still running; try again") from exc
        unread = _unread_by(cursor, name, projector_names)
        if unread:
            raise ArchiveRefused(
                f"{name} has events not yet read by: {', '.join(unread)}; archive it later"
            )
        # Written beside its name and renamed once whole: a failed attempt leaves an earlier
        # good archive of the month as it was.
        partial = path.with_name(path.name + ".partial")
        with open(partial, "wb") as raw_out, gzip.GzipFile(fileobj=raw_out, mode="wb") as out:
            copy_sql = (
                f"COPY (SELECT {', '.join(COLUMNS)} FROM {name} "
                "ORDER BY store_id, store_position) TO STDOUT WITH (FORMAT csv, HEADER true)"
            )
            with cursor.copy(copy_sql) as copy:
                for chunk in copy:
                    data = bytes(chunk)
                    digest.update(data)
                    out.write(data)
            rows = cursor.rowcount  # what COPY wrote: no second scan of the month
            out.close()
            raw_out.flush()
            os.fsync(raw_out.fileno())
        os.replace(partial, path)
        manifest = {
            "partition": name,
            "month": month.isoformat(),
            "rows": rows,
            "sha256": digest.hexdigest(),
            "columns": list(COLUMNS),
            "dropped": drop,
        }
        # On disk for good before the month leaves the log.
        with open(manifest_path, "w") as f:
            f.write(json.dumps(manifest, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        directory_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)
        # Detaching is no row delete: the rows leave the log with their table.
        try:
            cursor.execute(f"ALTER TABLE {PARENT} DETACH PARTITION {name}")
        except psycopg.errors.LockNotAvailable as exc:
            raise ArchiveRefused(
                f"the log is busy (a long transaction is reading it): {name} stays; try again"
            ) from exc
        if drop:
            cursor.execute(f"DROP TABLE {name}")
    log.info("archived %s: %d events to %s", name, rows, path)
    return Archive(name, path, rows, digest.hexdigest())


def partition_restore(*, path: Path) -> int:
    """Attach an archived month again from its file (checked against its manifest). Returns
    the rows restored."""
    manifest = json.loads(path.with_name(path.name.removesuffix(".csv.gz") + ".json").read_text())
    month = date.fromisoformat(manifest["month"])
    name = partition_name(month)
    with gzip.open(path, "rb") as archived:
        first = archived.readline()
        header = next(csv.reader([first.decode()]), [])
    if tuple(header) != COLUMNS:
        raise ValueError(f"{path} has columns {header}, not {list(COLUMNS)}")
    # Streamed, never whole in memory (a month can be many GB): copied as it is read, its
    # sha256 taken on the way and checked before the month is attached, in one transaction.
    digest = hashlib.sha256()
    with transaction.atomic(), connection.cursor() as django_cursor:
        cursor = django_cursor.cursor
        if any(p.name == name and p.attached for p in partitions_list()):
            raise ValueError(f"{name} is attached already")
        cursor.execute(f"DROP TABLE IF EXISTS {name}")
        cursor.execute(
            f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )
        with (
            gzip.open(path, "rb") as archived,
            cursor.copy(
                f"COPY {name} ({', '.join(COLUMNS)}) FROM STDIN WITH (FORMAT csv, HEADER true)"
            ) as copy,
        ):
            while chunk := archived.read(1 << 20):
                digest.update(chunk)
                copy.write(chunk)
        if digest.hexdigest() != manifest["sha256"] or cursor.rowcount != manifest["rows"]:
            raise ValueError(f"{path} does not match its manifest's sha256 and row count")
        # Attached as the partition maker attaches (its triggers and privileges), in the same
        # transaction: the month comes back whole or not at all.
        stop = month_add(month, 1)
        cursor.execute(
            f"ALTER TABLE {PARENT} ATTACH PARTITION {name} "
            f"FOR VALUES FROM ('{month.isoformat()} 00:00:00+00') "
            f"TO ('{stop.isoformat()} 00:00:00+00')"
        )
        cursor.execute(
            f"CREATE TRIGGER carts_cartevent_no_truncate BEFORE TRUNCATE ON {name} "
            "FOR EACH STATEMENT EXECUTE FUNCTION carts_cartevent_refuse_change()"
        )
        cursor.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON {name} FROM PUBLIC")
        cursor.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON {name} FROM CURRENT_USER")
    return int(manifest["rows"])
