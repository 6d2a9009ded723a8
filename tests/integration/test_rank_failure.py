"""A multi-rank run where one rank fails: the rank that failed first is named, not the same
failure for every rank; and a plain DDP script's teardown under dsprof ends (issue 13 item 4).
Real gloo on 127.0.0.1 through ``dsprof run --nproc-per-node 2``."""

from __future__ import annotations

import time

import pytest

from dsprof.cli.run import RANK_WAIT_S
from dsprof.rundir import INGESTED_FILE
from tests.integration import safety_scripts as scripts
from tests.integration.helpers import dsprof, meta, write

pytestmark = pytest.mark.slow
SCHEDULE = ["--wait", "1", "--warmup", "1", "--active", "2", "--sample-ms", "0"]


def test_the_rank_that_raised_is_named_first(tmp_path):
    # GIVEN DDP on 2 ranks where rank 1 raises at step 4 (rank 0 then fails in its all-reduce
    # or is stopped by the launcher)
    script = write(tmp_path / "ddp.py", scripts.DDP)
    out = tmp_path / "run"
    t0 = time.monotonic()
    res = dsprof("run", "--nproc-per-node", "2", "-o", str(out), *SCHEDULE, str(script), "1",
                 cwd=tmp_path, timeout=600)
    took = time.monotonic() - t0
    # THEN the status is the launcher's, and rank 1 is named as the first failure
    assert res.code == 1, res.stderr
    m = meta(out)
    assert m["first_failure"]["rank"] == 1, m["rank_failures"]
    assert "ValueError" in m["first_failure"]["why"]
    assert "rank 1 failed first" in res.stderr and "ValueError" in res.stderr
    # AND rank 0's failure is its own, told as coming after rank 1's
    if "0" in m["rank_failures"]:
        assert m["rank_failures"]["0"] != m["rank_failures"]["1"]
        assert "after rank 1 failed" in m["rank_failures"]["0"]
    # AND the failed rank ended as it does without dsprof (the plain job: ~5 s), not after
    # waiting out the others' RANK_WAIT_S while rank 0 sat in its all-reduce with it (36 s),
    # nor after ingesting its own trace: it left it raw, and the run's first read took it in
    assert took < RANK_WAIT_S, f"{took:.1f} s"
    assert not (out / "raw" / "rank1" / INGESTED_FILE).exists()
    assert (out / "tables" / "steps" / "rank1.parquet").is_file()


def test_a_plain_ddp_script_with_destroy_process_group_ends(tmp_path):
    # GIVEN the script of issue 13 item 4: 12 steps, destroy_process_group() at the end
    script = write(tmp_path / "ddp.py", scripts.DDP)
    out = tmp_path / "run"
    # WHEN run under dsprof on 2 ranks (the timeout is the hang detector)
    res = dsprof("run", "--nproc-per-node", "2", "-o", str(out), *SCHEDULE, str(script), "-1",
                 cwd=tmp_path, timeout=300)
    # THEN every rank ends, and the run is whole
    assert res.code == 0, res.stderr
    m = meta(out)
    assert (m["status"], m["partial"], m["ranks"]) == ("finished", False, [0, 1])
    assert m["first_failure"] is None
