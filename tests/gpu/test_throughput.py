"""Whole-run figures on CUDA against hand measurements of the same run: MFU, NVML samples,
the host-sync saving, and what ``dsprof run`` costs a GPU training loop."""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import pytest

# imported at collection, so that CI's dry run (where every test here is skipped) still fails
# loudly if these move
from dsprof.metrics.gpu.attribution import peak_for, throughput_per_step
from dsprof.run import load
from tests.gpu.cuda import is_hopper
from tests.gpu.runs import REPO, median, run_probe

pytestmark = pytest.mark.gpu


def test_mfu_of_bf16_matmul_loop_matches_hand_figure(matmul_run, record_property):
    """MFU vs the device peak: bf16 matmul loop within 10 % of FLOPs/elapsed/peak by hand"""
    probe = {s["step"]: s for s in matmul_run.probe["steps"]}
    with load(matmul_run.path) as run:
        peak, note = peak_for(run.meta)
        assert peak is not None, note
        ours = {int(t.key): t for t in throughput_per_step(run.con, peak)}
    bf16 = peak.peak_flops("bf16")
    # the window's first step also holds the profiler's start (about 10 ms on a CPU): its wall
    # time is not the loop's, so the comparison starts at the second profiled step
    first = min(matmul_run.profiled_steps())
    pairs = [(ours[s].mfu, probe[s]["flops"] / probe[s]["elapsed_s"] / bf16)
             for s in sorted(ours) if s in probe and s > first and ours[s].mfu is not None]
    worst = max((abs(a - b) / b for a, b in pairs), default=1.0)
    flops_ok = all(ours[s].flops == probe[s]["flops"] for s in ours if s in probe)
    record_property("figure", f"{peak.name}: MFU {median([a for a, _ in pairs]):.3f} vs hand "
                    f"{median([b for _, b in pairs]):.3f} over {len(pairs)} steps, worst diff "
                    f"{100 * worst:.1f} %; FLOPs per step equal: {flops_ok}")
    assert pairs, f"no profiled step has an MFU ({[t.peak_note for t in ours.values()]})"
    assert flops_ok, "FLOPs per step differ from 2 n^3 x products"
    assert worst <= 0.10


def test_nvml_samples_have_utilization_memory_power(matmul_run, record_property):
    """NVML/GPM sampling: samples with utilization, memory, power; GPM tensor on Hopper"""
    pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed (pip install "
                        "'dsprof[gpu]')")
    n, util, mem, power, tensor = matmul_run.sql("""
        SELECT count(gpu_util), max(gpu_util), max(mem_used), max(power_w), max(tensor_util)
        FROM device_samples""")[0]
    hopper = is_hopper()
    record_property("figure", f"{n} GPU samples: max util {util} %, max used "
                    f"{(mem or 0) / 2**30:.1f} GiB, max power {power} W, max GPM tensor "
                    f"{tensor if hopper else 'n/a (not Hopper)'}")
    assert n >= 3, f"fewer than three GPU samples; dsprof.log: {matmul_run.log_lines('metrics')}"
    assert util and util > 0 and mem and mem > 256 << 20 and power and power > 0
    if hopper:
        assert tensor is not None and tensor > 0, "no GPM tensor activity during bf16 matmuls"


def _step_ms(run, lo: int) -> float:
    """Median wall time of the unprofiled steps from ``lo`` to the last but one, in ms."""
    rows = run.sql("SELECT dur_ns FROM steps WHERE NOT profiled AND step >= ? "
                   "AND step < (SELECT max(step) FROM steps)", [lo])
    return median([r[0] / 1e6 for r in rows])


def test_host_sync_saving_predicted_within_25_percent(runs_dir, record_property):
    """host syncs: sync_in_loop.py finding's saving within 25 % of the fix's measured"""
    example = REPO / "examples" / "sync_in_loop.py"
    args = ("--device", "cuda", "--steps", "80", "--batch-size", "256")
    before = run_probe(runs_dir, "sync-every-step", example, *args, dsprof_args=())
    after = run_probe(runs_dir, "sync-fixed", example, *args, "--every", "1000000",
                      dsprof_args=())
    found = [f for f in before.findings() if f["analyzer"] == "host_syncs"]
    predicted = sum(f["saving_s"] for f in found) * 1e3
    measured = _step_ms(before, 10) - _step_ms(after, 10)
    err = abs(predicted - measured) / measured if measured > 0 else float("inf")
    record_property("figure", f"{len(found)} findings, predicted {predicted:.3f} ms/step, "
                    f"measured {measured:.3f} ms/step ({_step_ms(before, 10):.3f} -> "
                    f"{_step_ms(after, 10):.3f}), error {100 * err:.0f} %")
    assert found, "no host_syncs finding on a loop that syncs three times a step"
    assert measured > 0, "the fix did not make the steps faster"
    assert err <= 0.25


def test_overhead_on_transformer_training_loop(record_property):
    """dsprof run overhead: transformer_lm.py on CUDA, loop time ratio dsprof / plain"""
    spec = importlib.util.spec_from_file_location("overhead", REPO / "benchmarks" /
                                                  "overhead.py")
    overhead = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(overhead)
    example = REPO / "examples" / "transformer_lm.py"
    args = ["--device", "cuda", "--steps", "100", "--batch-size", "32", "--seq-len", "256",
            "--d-model", "512", "--heads", "8", "--layers", "4"]
    loop, outside = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(2):
            plain = overhead.run_plain(example, args, Path(tmp))
            prof = overhead.run_dsprof(example, args, Path(tmp))
            loop.append(sum(prof["steps"]) / sum(plain["steps"]))
            out = [k for k in range(min(len(plain["steps"]), len(prof["steps"])))
                   if k not in prof["profiled"] and k - 1 not in prof["profiled"]
                   and k + 1 not in prof["profiled"]]
            outside.append(sum(prof["steps"][k] for k in out)
                           / sum(plain["steps"][k] for k in out))
    record_property("figure", f"loop ratio {median(loop):.3f} (pairs: "
                    f"{', '.join(f'{r:.3f}' for r in loop)}); steps away from the window "
                    f"{median(outside):.3f}; plain step {1e3 * median(plain['steps']):.2f} ms")
    # the loop ratio includes the window's fixed cost (profiler start, trace export, snapshot);
    # what dsprof costs every step is the ratio away from the window
    assert median(outside) <= 1.10


def test_pageable_copy_advice_and_its_fix(runs_dir, record_property):
    """pinned-memory advice: pageable H2D copies found; pinned + non_blocking clears it"""
    pageable = run_probe(runs_dir, "copy-pageable", "copy_probe")
    pinned = run_probe(runs_dir, "copy-pinned", "copy_probe", "--pinned")
    found = [f for f in pageable.findings() if f["kind"] == "input.pageable_copy"]
    after = [f for f in pinned.findings() if f["kind"] == "input.pageable_copy"]
    predicted = sum(f["saving_s"] for f in found) * 1e3
    before_ms, after_ms = _step_ms(pageable, 7), _step_ms(pinned, 7)
    record_property("figure", f"predicted {predicted:.2f} ms/step, measured "
                    f"{before_ms - after_ms:.2f} ms/step ({before_ms:.2f} -> {after_ms:.2f}); "
                    f"findings {len(found)} -> {len(after)}")
    assert found, "no pageable-copy finding for 64 MiB pageable copies every step"
    assert not after, "the finding stays after pinning"
    assert after_ms < before_ms, "pinned copies did not make the steps faster"
