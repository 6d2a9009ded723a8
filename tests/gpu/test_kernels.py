"""CUDA kernels as dsprof records them, against torch.profiler's own view of the same run:
per-name counts and times, the CUPTI whole-run mode, TF32 and bf16 Tensor Core kernels."""

from __future__ import annotations

import json

import pytest

from tests.gpu.runs import SCHEDULE, median, run_probe, short, tensor_core_share

pytestmark = pytest.mark.gpu

# device events that are not kernels, memcpy or memset (Kineto's cuda_sync events)
_SYNC_WORDS = ("Sync", "Wait Event")
# GPU-side spans of record_function ranges, should a torch version not mark them as annotations
_ANNOTATIONS = ("ProfilerStep", "dsprof.")


def test_kernels_table_matches_key_averages(fp32_run, record_property):
    """CUDA activity in windows: kernels table == key_averages() (count, time per name)"""
    dumps = sorted(fp32_run.probe_dir.glob("*.keyavg.json"))
    assert dumps, "the probe saw no profiler export (no window was saved)"
    reference: dict[str, list[float]] = {}
    for dump in dumps:
        for name, (count, us) in json.loads(dump.read_text()).items():
            if not any(w in name for w in _SYNC_WORDS) and not name.startswith(_ANNOTATIONS):
                ref = reference.setdefault(name, [0, 0.0])
                ref[0] += count
                ref[1] += us
    ours = {name: (n, ns / 1e3) for name, n, ns in fp32_run.sql(
        "SELECT name, count(*), sum(dur_ns) FROM kernels WHERE kind <> 'sync' GROUP BY name")}
    missing = sorted(set(reference) - set(ours))
    extra = sorted(set(ours) - set(reference))
    count_off = [n for n in set(ours) & set(reference) if ours[n][0] != reference[n][0]]
    time_err = max((abs(ours[n][1] - reference[n][1]) / max(reference[n][1], 1e-3)
                    for n in set(ours) & set(reference)), default=0.0)
    kernels = sum(r[0] for r in reference.values())
    record_property("figure", f"{len(reference)} names, {kernels} kernels; missing "
                    f"{len(missing)}, extra {len(extra)}, count off {len(count_off)}; "
                    f"max time diff {100 * time_err:.2f} %")
    assert not missing, f"key_averages() names not in the kernels table: {missing[:5]}"
    assert not extra, f"kernels table names key_averages() does not have: {extra[:5]}"
    assert not count_off, f"counts differ for {count_off[:5]}"
    assert time_err <= 0.01, f"total time per name differs by up to {100 * time_err:.2f} %"


def test_cupti_mode_counts_the_window_kernels(runs_dir, record_property):
    """CUPTI kernel mode: kernels per step outside windows == the window's per step"""
    pytest.importorskip("cupti", reason="cupti-python is not installed (pip install "
                        "'dsprof[gpu]', or carry its wheel: docs/gpu.md)")
    run = run_probe(runs_dir, "cupti", "train_probe", "--steps", "16",
                    dsprof_args=(*SCHEDULE, "--cupti-kernels", "--no-analyze"))
    if not run.has("cupti_kernels"):
        pytest.fail(f"no cupti_kernels table; dsprof.log: {run.log_lines('cupti')}")
    window = dict(run.sql("SELECT step, count(*) FROM kernels WHERE kind = 'compute' "
                          "AND step IN (SELECT step FROM steps WHERE profiled) GROUP BY step"))
    last = run.sql("SELECT max(step) FROM steps")[0][0]
    outside = dict(run.sql("SELECT step, count(*) FROM cupti_kernels WHERE step >= 7 "
                           "AND step < ? GROUP BY step", [last]))
    record_property("figure", f"window steps {sorted(window.items())}; CUPTI per step: "
                    f"median {median(list(outside.values()))} over {len(outside)} steps "
                    f"(min {min(outside.values(), default=0)}, "
                    f"max {max(outside.values(), default=0)})")
    assert window and outside, "no kernels in the window or no CUPTI kernels after it"
    assert len(set(window.values())) == 1, f"window steps differ: {window}"
    assert median(list(outside.values())) == next(iter(window.values()))


def test_tf32_switches_fp32_gemms_to_tensor_cores(fp32_run, tf32_run, record_property):
    """--tf32: fp32 GEMM kernels become TF32 Tensor Core kernels; TC share rises"""
    with_meta = json.loads((tf32_run.path / "meta.json").read_text())
    off_share, _, off_names = tensor_core_share(fp32_run)
    on_share, unknown, on_names = tensor_core_share(tf32_run)
    record_property("figure", f"TC share of matrix time {100 * off_share:.0f} % -> "
                    f"{100 * on_share:.0f} %; top GEMM off: {short(off_names[0]) if off_names else '-'}; "
                    f"on: {short(on_names[0]) if on_names else '-'}")
    assert with_meta["precision"]["matmul_allow_tf32"] is True
    assert fp32_run.probe["tf32"] is False and tf32_run.probe["tf32"] is True
    assert set(on_names) != set(off_names), "the same GEMM kernels ran with TF32 on and off"
    assert off_share < 0.5, f"fp32 GEMMs classified as Tensor Core ({off_names})"
    assert on_share >= 0.9 and unknown == 0, f"TF32 GEMMs not classified as TC: {on_names}"


def test_bf16_autocast_kernels_are_tensor_core(bf16_run, record_property):
    """bf16 autocast: the GEMM kernels are classified as Tensor Core kernels"""
    share, unknown, names = tensor_core_share(bf16_run)
    record_property("figure", f"TC share of matrix time {100 * share:.1f} %, "
                    f"{unknown} unclassified; top: {short(names[0]) if names else '-'}")
    assert names, "no GEMM kernels recorded"
    assert share >= 0.95 and unknown == 0, f"bf16 GEMMs not classified as TC: {names}"
