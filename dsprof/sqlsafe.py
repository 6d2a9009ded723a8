"""The one way a name or a path read from disk enters a SQL string.

A run directory is shared between people, so everything in it (Parquet column names, table
folders, its own path) is data an attacker may have chosen. DuckDB runs multi-statement
strings, so a column named ``0; COPY (SELECT 'x') TO '/path'; SELECT 1`` interpolated into a
SELECT list writes a file. The rules, used everywhere SQL is built:

- values are always bound parameters (``?``), never formatted in;
- a column name that came from the data is first checked against ``dsprof/schema/``
  (:func:`table_columns` only returns schema columns) and then quoted (:func:`ident`);
- a path is a quoted string literal (:func:`literal`), used only where DuckDB takes no
  parameter (``CREATE VIEW ... read_parquet(...)``), and never a glob (:func:`parquet_files`).
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dsprof.errors import RunDirError
from dsprof.schema import TABLES


def ident(name: str) -> str:
    """``name`` as a DuckDB quoted identifier (``"..."`` with ``"`` doubled)."""
    if "\x00" in name:
        raise ValueError("an SQL identifier cannot hold a NUL character")
    return '"' + name.replace('"', '""') + '"'


def idents(names: Iterable[str]) -> str:
    """A comma-separated list of quoted identifiers, for a SELECT list."""
    return ", ".join(ident(n) for n in names)


def literal(text: str) -> str:
    """``text`` as a SQL string literal (``'...'`` with ``'`` doubled)."""
    if "\x00" in text:
        raise ValueError("an SQL string cannot hold a NUL character")
    return "'" + text.replace("'", "''") + "'"


def parquet_files(run_dir: Any, table: str) -> str:
    """``read_parquet``'s argument for a table's parts: a list of file literals.

    Not a glob: DuckDB would read ``[...]``, ``*`` and ``?`` in the run directory's own path
    as patterns (a run in ``runs[12]/`` would find no files, or another run's), so each part
    is listed here and its name escaped (:func:`glob_escape`).
    """
    parts = sorted(run_dir.table_dir(table).glob("*.parquet"))
    if not parts:
        raise ValueError(f"table {table!r} has no parts")
    for part in parts:
        _check_complete(part)
    return "[" + ", ".join(literal(glob_escape(str(p))) for p in parts) + "]"


def glob_escape(path: str) -> str:
    """``path`` with DuckDB's glob characters made literal: DuckDB expands every file name it
    is given, even in a list, so ``runs[12]/...`` would match ``runs1/...`` too."""
    return path.replace("[", "[[]").replace("*", "[*]").replace("?", "[?]")


_PARQUET_MAGIC = b"PAR1"


def _check_complete(part: Path) -> None:
    """Refuse a Parquet part that is cut short (copied while written, a full disk): its
    footer magic is missing. Checked here, once per part, so a damaged table is one line
    naming the file instead of a DuckDB error in whichever query reads it first. A part that
    is no regular file is refused before it is opened (a FIFO there blocked every command)."""
    try:
        st = part.stat()
        if not stat.S_ISREG(st.st_mode):
            raise RunDirError(f"{part} is not a regular file; the run directory is damaged: "
                              "import or run it again")
        size = st.st_size
        with open(part, "rb") as fh:
            head = fh.read(4)
            fh.seek(max(size - 4, 0))
            tail = fh.read(4)
    except OSError as exc:
        raise RunDirError(f"{part}: cannot read it ({exc.strerror or exc})") from None
    if size < 12 or head != _PARQUET_MAGIC or tail != _PARQUET_MAGIC:
        raise RunDirError(f"{part} is truncated or not Parquet; the run directory is damaged: "
                          "import or run it again")


# DuckDB's errors for a file it cannot read (a damaged page, a footer that is no Parquet's):
# by name, so that the CLI and the dashboard can tell them without importing DuckDB
_UNREADABLE = ("IOException", "InvalidInputException", "SerializationException")
_UNREADABLE_WORDS = ("parquet", "tprotocol", "thrift", "footer", "don't know what type",
                     "decompress", "corrupt")


def damaged_run(exc: BaseException) -> RunDirError | None:
    """The one line for a DuckDB error that says a table's files cannot be read (a Parquet
    part damaged inside, its magic bytes whole: the check above passes it), else None: an
    error in dsprof's own SQL stays the bug it is."""
    cls = type(exc)
    if not cls.__module__.lstrip("_").startswith("duckdb"):
        return None
    text = first_line(exc)
    if cls.__name__ in _UNREADABLE or (cls.__name__ == "Error" and any(
            w in text.lower() for w in _UNREADABLE_WORDS)):
        return RunDirError(f"the run's tables cannot be read ({cls.__name__}: {text}); the run "
                           "directory is damaged: import or run it again")
    return None


def first_line(exc: BaseException) -> str:
    """An error's first line, cut to 300 characters (DuckDB's run on for pages), or its class."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def table_name(name: str) -> str:
    """A table's name, quoted, once it is known to be one of the schema's tables.

    Raises:
        ValueError: ``name`` is not a table of ``dsprof/schema/``.
    """
    if name not in TABLES:
        raise ValueError(f"{name!r} is not a dsprof table")
    return ident(name)


def table_columns(run: Any, table: str) -> set[str]:
    """The columns ``table`` has in this run that the schema knows of.

    Older runs lack some columns, so callers ask which are present; a column the schema does
    not declare (a newer dsprof's, or a hostile name) is never returned, so it never reaches SQL.

    Args:
        run: a :class:`dsprof.run.Run` (anything with ``has`` and ``sql``).
        table: a schema table name.
    """
    if table not in TABLES or not run.has(table):
        return set()
    known = set(TABLES[table].column_names)
    rows = run.sql(f"SELECT column_name FROM (DESCRIBE {table_name(table)})")
    return {r[0] for r in rows if r[0] in known}


def relation_columns(con: Any, relation: str) -> dict[str, str]:
    """Column name -> DuckDB type of a relation built by dsprof (a ``read_parquet(...)`` of
    :func:`parquet_files`, or a registered Arrow table).

    The names come back from the file, so they are data: callers only test them for membership
    against the schema's columns, never put them into SQL.
    """
    rows = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    return {r[0]: r[1] for r in rows}
