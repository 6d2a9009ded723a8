"""``Run.hold_tables_in_memory`` (issue 16): ``dsprof import``'s analysis queries in-memory
copies of the tables instead of the Parquet files, with the same rows in the same order."""

from __future__ import annotations

from click.testing import CliRunner

from dsprof.cli import main
from dsprof.run import Run, load
from tests.conftest import trace_dir

QUERIES = ("SELECT * FROM ops", "SELECT * FROM kernels", "SELECT * FROM steps",
           "SELECT rank, count(*), sum(dur_ns) FROM kernels GROUP BY rank ORDER BY rank")


def _imported(tmp_path):
    run_path = tmp_path / "run"
    res = CliRunner().invoke(main, ["import", "-o", str(run_path), "--no-progress",
                                    "--no-analyze", str(trace_dir("hta_sampled_2rank_nccl"))])
    assert res.exit_code == 0, res.output
    return run_path


def test_held_tables_give_the_rows_the_views_gave(tmp_path):
    # GIVEN a real two-rank run imported without analysis, queried through its views
    run_path = _imported(tmp_path)
    with load(run_path) as run:
        before = [run.sql(q) for q in QUERIES]
        # WHEN its tables are copied into DuckDB memory
        assert run.hold_tables_in_memory() is True
        # THEN the views now read the copies (no read_parquet left) and every query gives
        # the same rows in the same order
        views = dict(run.sql("SELECT view_name, sql FROM duckdb_views() WHERE NOT internal"))
        assert views["ops"] and "read_parquet" not in views["ops"]
        assert [run.sql(q) for q in QUERIES] == before


def test_tables_held_before_the_first_query_give_the_rows_the_views_give(tmp_path):
    # GIVEN a real two-rank run, and what its Parquet views give (steps with the derived
    # ``disturbed`` column, every table, every column)
    run_path = _imported(tmp_path)
    with load(run_path) as run:
        tables = run.tables
        before = [run.sql(q) for q in QUERIES]
        whole = {t: run.sql(f"SELECT * FROM {t}") for t in tables}
        columns = {t: run.sql(f"DESCRIBE {t}") for t in tables}
    # WHEN another Run of it holds its tables before any query (dsprof import's analysis)
    with load(run_path) as run:
        assert run.hold_tables_in_memory() is True
        # THEN the views read the in-memory copies, with the same columns and types, and give
        # the same rows in the same order
        views = dict(run.sql("SELECT view_name, sql FROM duckdb_views() WHERE NOT internal"))
        assert set(views) == set(tables)
        assert not any("read_parquet" in sql for sql in views.values())
        assert {t: run.sql(f"DESCRIBE {t}") for t in tables} == columns
        assert [run.sql(q) for q in QUERIES] == before
        assert {t: run.sql(f"SELECT * FROM {t}") for t in tables} == whole
        assert "disturbed" in [c[0] for c in columns["steps"]]


def test_a_run_built_in_memory_is_left_as_it_is():
    # GIVEN a run whose tables are Arrow tables already (nothing to read twice)
    run = Run.from_tables(steps={"step": [1], "start_ns": [0], "end_ns": [10]})
    # THEN holding is refused and the run still answers
    assert run.hold_tables_in_memory() is False
    assert run.sql("SELECT count(*) FROM steps") == [(1,)]
