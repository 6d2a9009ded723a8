"""``dsprof.load``: meta, tables, SQL and Arrow access on an imported run."""

from __future__ import annotations

import pytest

import dsprof
from dsprof.errors import RunDirError
from dsprof.ingest.importer import import_traces
from tests.conftest import trace_dir


def test_load_gives_meta_tables_sql_and_arrow(tmp_path):
    # GIVEN an imported 2-rank trace set
    run_dir, _ = import_traces([trace_dir("hta_sampled_2rank_nccl")], tmp_path / "run")
    # WHEN loaded through the public API
    with dsprof.load(run_dir.path) as run:
        # THEN meta, the present tables, SQL over all ranks and Arrow tables are there
        assert run.meta["source"] == "import" and run.meta["ranks"] == [0, 1]
        assert run.tables == ["steps", "ops", "kernels", "comms",
                              # the per-rank aggregates ingest writes (dsprof/ingest/aggregates.py)
                              "rank_totals", "kernel_time", "op_time", "phase_time"]
        assert run.sql("SELECT count(DISTINCT rank) FROM kernels") == [(2,)]
        steps = run.table("steps")
        assert steps.num_rows == 4 and "dur_ns" in steps.column_names
        assert run.arrow("SELECT * FROM ops WHERE rank = ?", [1]).num_rows > 0
        with pytest.raises(RunDirError, match="no 'memory' table"):
            run.table("memory")
