"""``dsprof run`` on CPU with the GPU-issue features: TF32 knob, metric sampler, Tensor Core
prediction and MFU without a GPU."""

from __future__ import annotations

import pytest

from dsprof.analyzers.registry import analyze
from dsprof.metrics.gpu import attribution as gpu_attribution
from dsprof.run import load
from tests.integration.helpers import dsprof, meta, write
from tests.integration.scripts import TINY_TRAIN

pytestmark = pytest.mark.timed_runs  # judges its runs' times: recorded alone (tests/machine_share.py)

SCHEDULE = ["--wait", "1", "--warmup", "1", "--active", "2"]


def test_cpu_run_samples_host_predicts_tf32_and_knob_turns_it_on(tmp_path):
    # GIVEN a small fp32 training script
    tiny = write(tmp_path / "tiny_train.py", TINY_TRAIN)
    # WHEN it runs with the sampler at 10 ms and TF32 left at torch's default (off)
    off = tmp_path / "off"
    res = dsprof("run", "--no-analyze", "-o", str(off), *SCHEDULE, "--sample-ms", "10", str(tiny),
                 env={"TINY_STEPS": "8"})
    assert res.code == 0, res.stderr
    # THEN one INFO line says no GPU is sampled, and the host is
    log = (off / "dsprof.log").read_text()
    assert log.count("device metrics:") == 1 and "no NVIDIA GPU" in log
    assert meta(off)["precision"]["matmul_allow_tf32"] is False
    with load(off) as run:
        n, cpu, rss, gpu = run.sql("SELECT count(*), count(cpu_util), min(rss_bytes), "
                                   "count(gpu_util) FROM device_samples")[0]
        assert n >= 2 and cpu == n and rss > 10 << 20 and gpu == 0
        # AND the fp32 addmm ops are predicted to miss the Tensor Cores because TF32 is off,
        # which on a CPU run is a "when you move to a GPU" note, never a ranked finding
        analysis = analyze(run, write=False)
        assert not [f for f in analysis.findings if f.kind.startswith("tensor_core.tf32")]
        notes = [n for n in analysis.notes if n.get("finding_kind") == "tensor_core.tf32_off"]
        assert len(notes) == 1 and notes[0]["kind"] == "gpu"
        assert notes[0]["text"].startswith("When you move to a GPU: ")
        # AND CPU runs have FLOP/s but no MFU: there is no peak for a CPU
        peak, note = gpu_attribution.peak_for(run.meta)
        assert peak is None and "CPU run" in note
        (step3, _step4) = gpu_attribution.throughput_per_step(run.con, peak)
        assert step3.flops > 0 and step3.flops_per_s > 0 and step3.mfu is None

    # WHEN the finding's knob is applied
    on = tmp_path / "on"
    res = dsprof("run", "--no-analyze", "-o", str(on), *SCHEDULE, "--sample-ms", "0", str(tiny),
                 env={"TINY_STEPS": "8", "DS_ENABLE_TENSOR_CORE": "1"})
    assert res.code == 0, res.stderr
    # THEN TF32 is on in the profiled process, the finding is gone, and sampling was off
    assert meta(on)["precision"]["matmul_allow_tf32"] is True
    assert meta(on)["settings"]["tf32"] is True
    with load(on) as run:
        assert not run.has("device_samples")
        kinds = {f.kind for f in analyze(run, write=False).findings}
        assert "tensor_core.tf32_off" not in kinds
