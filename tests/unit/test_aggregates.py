"""Per-rank aggregates written at ingest: present, equal to the on-the-fly computation over the
big tables on real traces, read by ``summary`` without rescanning ops or kernels, and a run
directory without them (an older dsprof's) still summarises to the same report."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from dsprof.ingest.aggregates import AGGREGATE_TABLES, SOURCE_COLUMNS, compute_aggregates
from dsprof.ingest.importer import import_traces
from dsprof.reports.summary import summarize
from dsprof.run import Run, load
from dsprof.rundir import RunDir
from tests.conftest import trace_dir

# one rank with kernels, ProfilerSteps and NCCL; two ranks of one job (each rank is ingested
# on its own, the on-the-fly computation sees both at once)
TRACES = ["hta_a100_2rank_nccl_r0", "hta_sampled_2rank_nccl"]


def _rows(run: Run, relation: str, columns: tuple[str, ...]) -> list[tuple]:
    cols = ", ".join(f'"{c}"' for c in columns)
    return sorted(run.sql(f"SELECT {cols} FROM {relation}"), key=repr)


def _summary_doc(run_path) -> dict:
    with load(run_path) as run:
        doc = summarize(run).to_json()
    doc["facts"].pop("run")
    return doc


@pytest.fixture(scope="module", params=TRACES)
def imported(request, tmp_path_factory):
    run_dir, _ = import_traces([trace_dir(request.param)],
                               tmp_path_factory.mktemp("agg") / "run")
    return run_dir.path


def test_ingest_writes_aggregates_equal_to_the_on_the_fly_rows(imported):
    # GIVEN a real trace imported (ingest wrote the aggregates rank by rank)
    with load(imported) as run:
        for name in AGGREGATE_TABLES:
            assert run.has(name) or name == "phase_time", f"no {name} written at ingest"
        assert run.has("kernel_time") and run.has("op_time")
        # WHEN the same rows are computed over all ranks' big tables at once
        sources = {t: run.arrow(f"SELECT {', '.join(cols)} FROM {t}")
                   for t, cols in SOURCE_COLUMNS.items() if run.has(t)}
        fresh = compute_aggregates(sources)
        from dsprof.schema import TABLES

        for name in AGGREGATE_TABLES:
            columns = TABLES[name].column_names
            run.con.register(f"_fresh_{name}", TABLES[name].build(fresh[name]))
            # THEN every stored row is the fresh one, and no row is missing or extra
            stored = _rows(run, run.aggregate(name), columns)
            assert stored == _rows(run, f"_fresh_{name}", columns), name
        ranks = {r[0] for r in run.sql("SELECT DISTINCT rank FROM ops")}
        assert {r[0] for r in run.sql("SELECT rank FROM rank_totals")} == ranks


def test_summary_reads_no_big_table(imported, monkeypatch):
    # GIVEN an ingested run WHEN summarized, every query is recorded
    queries: list[str] = []
    real_sql = Run.sql

    def recording(self, query, params=None):
        queries.append(" ".join(query.split()))
        return real_sql(self, query, params)

    monkeypatch.setattr(Run, "sql", recording)
    with load(imported) as run:
        summary = summarize(run)
    # THEN it had kernel types, top ops, and read neither ops nor kernels to get them
    assert summary.kernel_types and summary.top_ops
    big = [q for q in queries if any(f" {t} " in f" {q} ".replace(",", " ")
                                     for t in ("ops", "kernels"))]
    assert big == []
    assert any("op_time" in q for q in queries) and any("kernel_time" in q for q in queries)


def test_run_without_aggregates_summarises_the_same(imported, tmp_path):
    # GIVEN a copy of the run with the aggregates removed and a version-2 header, as an older
    # dsprof left it
    old = tmp_path / "old"
    shutil.copytree(imported, old)
    for name in AGGREGATE_TABLES:
        shutil.rmtree(old / "tables" / name, ignore_errors=True)
    rundir = RunDir(old)
    meta = rundir.read_meta()
    meta["schema_version"] = 2
    rundir.write_meta(meta)
    assert '"schema_version": 2' in (old / "meta.json").read_text()
    with load(old) as run:
        assert not any(run.has(n) for n in AGGREGATE_TABLES)
    # WHEN both are summarized THEN the reports are the same, computed on the fly for the old
    assert _summary_doc(old) == _summary_doc(imported)


def test_in_memory_run_computes_aggregates():
    # GIVEN a run built in memory (no ingest): two ranks, kernels of two types overlapping
    run = Run.from_tables(
        ops={"rank": [0, 1], "id": [1, 1], "name": ["aten::mm", "aten::mm"],
             "cat": ["cpu_op", "cpu_op"], "start_ns": [0, 0], "dur_ns": [10, 20],
             "self_ns": [10, 20]},
        kernels={"rank": [0, 0, 1], "kind": ["compute", "communication", "compute"],
                 "start_ns": [0, 5, 0], "dur_ns": [10, 10, 4]})
    # WHEN the aggregates are read THEN they are computed from its tables
    assert run.sql(f"SELECT rank, types, ns FROM {run.aggregate('kernel_time')} "
                   "WHERE NOT last_step_dropped AND ns > 0 ORDER BY rank, types") == [
        (0, 1, 5), (0, 2, 5), (0, 3, 5), (1, 1, 4)]
    assert run.sql(f"SELECT sum(calls), sum(self_ns) FROM {run.aggregate('op_time')}") == [
        (2, 30)]
    with pytest.raises(KeyError):
        run.aggregate("ops")


def test_op_time_and_kernel_time_add_up_to_the_big_tables(imported):
    # GIVEN an ingested real trace WHEN its aggregates are summed THEN they are what a scan of
    # ops and kernels says (an independent SQL statement of the same totals)
    with load(imported) as run:
        by_sql = run.sql("""SELECT name, step IS NOT NULL, count(*), sum(self_ns), sum(dur_ns)
                            FROM ops WHERE cat = 'cpu_op' GROUP BY ALL ORDER BY ALL""")
        stored = run.sql("""SELECT name, in_step, sum(calls), sum(self_ns), sum(dur_ns)
                            FROM op_time GROUP BY ALL ORDER BY ALL""")
        assert stored == by_sql and len(stored) > 10
        # every rank's kernel span with all kernels kept is its first start to its last end
        spans = dict(run.sql("SELECT rank, max(start_ns + greatest(dur_ns, 0)) - min(start_ns) "
                             "FROM kernels GROUP BY rank"))
        agg = dict(run.sql("SELECT rank, sum(ns) FROM kernel_time WHERE NOT last_step_dropped "
                           "GROUP BY rank"))
        assert agg == spans
        totals = run.sql("SELECT sum(ops), sum(kernels) FROM rank_totals")[0]
        assert totals == (run.sql("SELECT count(*) FROM ops")[0][0],
                          run.sql("SELECT count(*) FROM kernels")[0][0])


def test_position_finds_what_a_binary_search_finds():
    """aggregates._position: by subtraction where the ids are consecutive, else a binary search;
    the rows it matches (ids[pos] == value) are those searchsorted matches."""
    from dsprof.ingest.aggregates import _position

    rng = np.random.default_rng(1)
    for ids in (np.arange(100, 200), np.arange(5, 6), np.array([1, 3, 4, 9]),
                np.array([0, 0, 1, 4, 4])):  # the last: the span of consecutive ids, not them
        values = rng.integers(-10, 300, 1000)
        want = np.minimum(np.searchsorted(ids, values), len(ids) - 1)
        got = _position(ids, values)
        assert np.array_equal(ids[got] == values, ids[want] == values), ids
        assert np.array_equal(ids[got][ids[got] == values], values[ids[want] == values])
