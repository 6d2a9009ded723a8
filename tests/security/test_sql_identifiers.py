"""The class of defence, not the single case: names read from a run reach SQL only through
dsprof/sqlsafe.py, checked against the schema and quoted."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

from dsprof.run import load
from dsprof.sqlsafe import ident, idents, literal, table_columns, table_name
from tests.security.hostile_runs import comms_rows, make_run, steps_rows, with_column

PACKAGE = Path(__file__).resolve().parents[2] / "dsprof"


def test_quoting_survives_quotes_and_statements():
    con = duckdb.connect()
    evil = 'x"; DROP TABLE t; --'
    con.execute(f"CREATE TABLE t ({ident(evil)} INTEGER)")
    con.execute(f"INSERT INTO t VALUES (1)")  # noqa: F541
    assert con.execute(f"SELECT {idents([evil])} FROM t").fetchall() == [(1,)]
    assert con.execute(f"SELECT {literal(chr(39) + '; SELECT 1; --')}").fetchall() == [
        ("'; SELECT 1; --",)]
    with pytest.raises(ValueError):
        ident("a\x00b")
    with pytest.raises(ValueError):
        table_name("ops; COPY")


def test_only_schema_columns_come_back(tmp_path):
    evil = f"0; COPY (SELECT 'x') TO '{tmp_path / 'pwned'}'; SELECT 1"
    run_dir = make_run(tmp_path / "run", {"comms": with_column(comms_rows(), evil, [1, 2, 3]),
                                          "steps": steps_rows()})
    with load(run_dir) as run:
        cols = table_columns(run, "comms")
        assert evil not in cols and {"collective", "start_ns"} <= cols
        assert table_columns(run, "no_such_table") == set()


def test_a_run_under_a_glob_like_path_reads_its_own_tables(tmp_path):
    # a sibling run that a glob "run[12]" would also match must not be read
    make_run(tmp_path / "run1", {"steps": steps_rows(7)})
    run_dir = make_run(tmp_path / "run[12]", {"steps": steps_rows(3)})
    with load(run_dir) as run:
        assert run.sql("SELECT count(*) FROM steps") == [(3,)]


def test_no_query_builder_describes_a_table_itself():
    """Column names read back with DESCRIBE must pass the schema check in sqlsafe."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "sqlsafe.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"DESCRIBE|\bcolumn_name\b|read_parquet\('", line):
                offenders.append(f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
