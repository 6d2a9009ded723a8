"""Exposed communication claimed once through the ledger (comm.poor_overlap, then comm.bound),
and all-reduce sizes printed in the unit they read best in (issue 19: "0.0 MiB")."""

from __future__ import annotations

import pytest

from dsprof.analyzers.registry import analyze
from dsprof.run import Run
from tests.unit.test_analyzers_synthetic import MS, SCRIPT, steps, table


def _late_all_reduce(nbytes: int, micro_batches: int = 0, reducer: bool = False,
                     meta: dict | None = None) -> Run:
    """Step 1 (100 ms): backward 100-150 ms, then one fp32 all-reduce of ``nbytes`` issued at
    152 ms and running 30 ms on gloo's thread with nothing else running: all of it exposed.
    ``micro_batches``: that many ``DistributedDataParallel.forward`` spans in the step;
    ``reducer``: DDP's reducer issued it, as one bucket (a ``c10d::allreduce_`` at the end of
    backward, around the collective's call); ``meta``: meta.json fields beside the script's."""
    ops = [
        {"id": 1, "step": 1, "name": "autograd::engine::evaluate_function: MmBackward0",
         "cat": "cpu_op", "depth": 0, "thread": 1, "start_ns": 100 * MS, "dur_ns": 50 * MS,
         "phase": "backward"},
        {"id": 2, "step": 1, "name": "aten::add_", "cat": "cpu_op", "depth": 0, "thread": 1,
         "start_ns": 150 * MS, "dur_ns": 1 * MS, "phase": "optimizer"},
        {"id": 3, "step": 1, "name": "gloo:all_reduce", "cat": "user_annotation", "depth": 0,
         "thread": 2, "start_ns": 152 * MS, "dur_ns": 30 * MS},
    ]
    ops += [{"id": 10 + i, "step": 1, "name": "DistributedDataParallel.forward",
             "cat": "user_annotation", "depth": 0, "thread": 1, "start_ns": (90 + i) * MS,
             "dur_ns": MS // 2} for i in range(micro_batches)]
    if reducer:
        ops.append({"id": 30, "step": 1, "name": "c10d::allreduce_", "cat": "cpu_op",
                    "depth": 0, "thread": 1, "start_ns": 149 * MS, "dur_ns": 4 * MS,
                    "phase": "backward"})
    comms = table({"step": 1, "collective": "all_reduce", "dtype": "float", "group_size": 2,
                   "in_bytes": nbytes, "out_bytes": nbytes, "start_ns": 152 * MS,
                   "dur_ns": 30 * MS, "call_ns": 152 * MS, "source": "gloo"})
    return Run.from_tables(meta={**SCRIPT, **(meta or {})}, steps=steps([100, 100]),
                           ops=table(*ops), comms=comms)


def test_compression_is_priced_on_what_the_overlap_finding_left():
    # GIVEN an all-reduce issued after backward: both the overlap and the bound finding fire
    res = analyze(_late_all_reduce(64 << 20), write=False,
                  only=("comm_overlap", "comm_bound"))
    by_kind = {f.kind: f for f in res.findings}
    overlap, bound = by_kind["comm.poor_overlap"], by_kind["comm.bound"]
    # THEN comm.bound subtracts the time comm.poor_overlap claims (the ledger), and the two
    # together claim no more than the 30 ms of exposed communication
    assert overlap.saving_s > 0
    assert f"already claims {overlap.saving_s * 1e3:.1f} ms" in bound.explanation
    assert overlap.saving_s + bound.saving_s <= 0.030 * 1.001
    # AND analyzing comm_bound alone gives the same saving (the claimer runs silently first)
    alone = analyze(_late_all_reduce(64 << 20), write=False, only=("comm_bound",))
    assert [f.kind for f in alone.findings] == ["comm.bound"]
    assert alone.findings[0].saving_s == pytest.approx(bound.saving_s)


@pytest.mark.parametrize(("nbytes", "said"), [(12 << 10, "12.0 KiB"), (600, "600 B"),
                                              (64 << 20, "64.0 MiB")])
def test_all_reduce_sizes_are_never_printed_as_zero_mib(nbytes, said):
    res = analyze(_late_all_reduce(nbytes), write=False, only=("comm_bound",))
    (f,) = res.findings
    assert f"All-reduces move {said} per step" in f.explanation, f.explanation
    assert "0.0 MiB" not in f.explanation


def test_exposed_time_far_beyond_what_the_bytes_take_is_latency_not_a_compression_saving():
    # GIVEN 30 ms of exposed all-reduce that moves 12 KiB (0.25 ms even at 100 MB/s)
    (f,) = analyze(_late_all_reduce(12 << 10), write=False, only=("comm_bound",)).findings
    # THEN bf16 compression is not promised the 15 ms a bytes-proportional model gives: the
    # finding says latency, advises fewer all-reduces (no_sync), and predicts no saving
    assert f.data["latency_bound"] is True and f.saving_s == 0
    assert "latency, not bytes" in f.title
    assert "no_sync()" in f.fix and "compress_hook" not in f.fix
    assert "would save at most 0.123 ms" in f.explanation, f.explanation
    # AND with 64 MiB (1.3 s at 100 MB/s: bytes can explain the 30 ms) compression is the fix
    # (priced on what the overlap finding leaves, test above; fp16 over gloo, which refuses
    # the bf16 hook: test_comm_switches.py)
    (big,) = analyze(_late_all_reduce(64 << 20), write=False, only=("comm_bound",)).findings
    assert big.data["latency_bound"] is False
    assert "fp16_compress_hook" in big.fix and "latency" not in big.title


def test_a_tiny_bus_bandwidth_is_printed_in_its_unit_not_as_zero():
    (f,) = analyze(_late_all_reduce(12 << 10), write=False, only=("comm_bound",)).findings
    assert "0.00 GB/s" not in f.explanation



def test_a_script_that_already_accumulates_is_told_to_accumulate_more():
    # GIVEN the latency-bound all-reduce of a step that ran DDP's forward twice (two
    # micro-batches, the first under no_sync, as nanoGPT does)
    (f,) = analyze(_late_all_reduce(12 << 10, micro_batches=2), write=False,
                   only=("comm_bound",)).findings
    # THEN the fix does not paste an accumulation loop the script already has
    assert f.data["latency_bound"] and f.saving_s == 0
    assert "already accumulates 2 micro-batches" in f.fix and "for i, batch" not in f.fix
    assert "2 forward passes of DistributedDataParallel" in f.explanation


def test_bandwidths_print_in_the_unit_they_read_best_in():
    from dsprof.units import fmt_rate

    assert fmt_rate(12.5) == "12.50 GB/s" and fmt_rate(12.5, 1) == "12.5 GB/s"
    assert fmt_rate(0.00274) == "2.74 MB/s" and fmt_rate(None) == "-"
    assert fmt_rate(2e-6) == "2.0 KB/s"


@pytest.mark.parametrize("nbytes,advised", [(26112, False), (64 << 20, True)])
def test_one_ddp_bucket_is_told_to_split_only_when_its_bytes_can_be(nbytes, advised):
    # GIVEN DDP (its forward span in the trace) all-reducing one bucket after backward: 25.5
    # KiB a step (tests/corpus' ddp_gloo: one bucket because its gradients are small), or 64 MiB
    run = _late_all_reduce(nbytes, micro_batches=1, reducer=True)
    found = analyze(run, write=False, only=("comm_overlap",)).findings
    # THEN lowering bucket_cap_mb is advised only where a split all-reduce would not stay
    # latency-bound: over DDP's 1 MiB first bucket
    titles = [f.title for f in found if f.kind == "comm.poor_overlap"]
    assert bool(titles) == advised, titles
    if advised:
        assert titles[0].startswith("Lower DistributedDataParallel's bucket_cap_mb")


@pytest.mark.parametrize("nbytes,advised", [(512 << 10, False), (64 << 20, True)])
def test_compression_fix_names_bucket_cap_mb_only_for_more_than_one_bucket(nbytes, advised):
    # GIVEN exposed fp32 all-reduces the bytes can explain (not latency-bound): 512 KiB a step,
    # under DDP's 1 MiB first bucket (one bucket whatever bucket_cap_mb says), or 64 MiB
    (f,) = analyze(_late_all_reduce(nbytes), write=False, only=("comm_bound",)).findings
    assert f.data["latency_bound"] is False and "fp16_compress_hook" in f.fix
    # THEN a smaller bucket_cap_mb is suggested only where the gradients fill more than one
    assert ("bucket_cap_mb" in f.fix) == advised, f.fix
