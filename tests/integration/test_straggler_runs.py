"""The straggler on real 2-rank gloo runs of examples/ddp_train.py: a rank that sleeps 20 ms
before each backward is named, past the noise margin (docs/analyzers.md).

A steady 2-rank job (no slow rank) is the corpus' ddp_gloo model (tests/corpus), which must get
no straggler: on a shared 2-core machine one rank is late now and then at both steps of a short
window, which Student's t for two steps does not take as "late step after step"; the margin's
rules are tested on recorded step times in tests/unit/test_straggler_noise.py."""

from __future__ import annotations

import pytest

from dsprof.analyzers.registry import analyze
from dsprof.run import load
from tests.conftest import EXAMPLES
from tests.integration.helpers import dsprof

pytestmark = [pytest.mark.slow, pytest.mark.timed_runs]

DDP = str(EXAMPLES / "ddp_train.py")
# a window of 4 steps: the margin is measured over them; a small model keeps each step short
SCHEDULE = ["--wait", "1", "--warmup", "1", "--active", "4"]
SMALL = ["--steps", "8", "--in-features", "32", "--hidden", "64", "--batch-size", "16"]


def stragglers(out) -> list:
    with load(out) as run:
        return [f for f in analyze(run, write=False).findings if f.kind == "comm.straggler"]


def test_a_rank_sleeping_20_ms_a_step_is_the_straggler(tmp_path):
    out = tmp_path / "slow"
    res = dsprof("run", "-q", "--no-analyze", "--nproc-per-node", "2", "-o", str(out), *SCHEDULE, DDP, *SMALL,
                 "--slow-rank", "1", "--slow-ms", "20", timeout=600)
    assert res.code == 0, res.stderr
    (f,) = stragglers(out)
    assert f.key == "rank 1"
    # the sleep, give or take this machine's scheduling
    assert 0.010 < f.saving_s < 0.080
    assert f.saving_s > 1.5 * f.data["step_spread_s"]
