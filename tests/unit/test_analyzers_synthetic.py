"""Every registered analyzer on synthetic runs (Run.from_tables): each finding kind fires on
its positive case and stays silent on its negative case, with no real run or trace needed.

A case is (analyzer, kind, positive, negative): two functions that build the smallest run
showing the pattern and the nearest run that must not. Times are in ms below, ns in tables.
"""

from __future__ import annotations

import pytest

from dsprof.analyzers.registry import ANALYZERS, analyze, load_analyzer
from dsprof.run import Run

MS = 1_000_000
SCRIPT = {"target": {"kind": "script", "name": "train.py", "argv": ["train.py"]}}


def table(*rows: dict, **defaults) -> dict[str, list]:
    """Column lists from row dicts (a key missing from a row is null; ``defaults`` fill it)."""
    keys = list(dict.fromkeys([*defaults, *(k for r in rows for k in r)]))
    return {k: [r.get(k, defaults.get(k)) for r in rows] for k in keys}


def steps(durs_ms, **cols) -> dict[str, list]:
    """Steps back to back from t=0, one per duration."""
    starts, t = [], 0
    for d in durs_ms:
        starts.append(t)
        t += int(d * MS)
    return {"step": list(range(len(durs_ms))), "start_ns": starts,
            "end_ns": [s + int(d * MS) for s, d in zip(starts, durs_ms)],
            "dur_ns": [int(d * MS) for d in durs_ms], "profiled": [True] * len(durs_ms), **cols}


# -- steps ----------------------------------------------------------------------------------

def outliers_pos():
    # two slow steps at no stride: one alone is a sample, not a pattern
    return Run.from_tables(steps=steps([50, 10, 10, 10, 10, 10, 60, 10, 10, 55, 10, 10]))


def outliers_neg():
    return Run.from_tables(steps=steps([50, 10, 10.2, 9.9, 10, 10.1, 10, 9.8, 10, 10, 10]))


def test_sporadic_outliers_a_fraction_of_a_millisecond_over_are_noise_whatever_their_ratio():
    # GIVEN 0.33 ms steps (pytorch/examples' regression) with sporadic slower ones, one of them
    # 0.67 ms (2.1x) and the others 0.1 ms over, their thread CPU grown as much, no data wait
    durs = [0.33] * 40
    for i, d in ((5, 0.67), (9, 0.43), (17, 0.44), (23, 0.42), (31, 0.45)):
        durs[i] = d
    run = Run.from_tables(meta=SCRIPT, steps=steps(
        durs, cpu_ns=[int(d * MS) for d in durs], profiled=[False] * 40))
    # THEN they are step-to-step noise with no saving, not a ranked "outliers" finding
    found = analyze(run, only=("step_outliers",), write=False).findings
    assert [(f.kind, f.saving_s) for f in found] == [("steps.noise", 0.0)], found
    assert "0.5 ms over the median or more" in found[0].fix


# -- input pipeline --------------------------------------------------------------------------

def _loader(wait_ms: float):
    n = 8
    return Run.from_tables(
        meta=SCRIPT,
        steps=steps([20] * n, data_wait_ns=[int(wait_ms * MS)] * n),
        dataloaders=table({"loader": 0, "site": "train.py:12", "dataset": "Synthetic",
                           "batch_size": 32, "num_workers": 0, "pin_memory": False,
                           "persistent_workers": False, "prefetch_factor": None,
                           "iterators": 1, "batches": n, "wait_ns": int(wait_ms * MS) * n,
                           "wait_cpu_ns": int(wait_ms * MS) * n, "first_wait_ns": int(wait_ms * MS),
                           "cpu_count": 8, "torch_threads": 4}))


def _copies(kernel_name: str):
    return Run.from_tables(
        steps=steps([20, 20]),
        ops=table({"id": 1, "step": 1, "name": "cudaMemcpyAsync", "cat": "cuda_runtime",
                   "start_ns": 21 * MS, "dur_ns": 3 * MS, "thread": 1}),
        kernels=table({"step": 1, "name": kernel_name, "kind": "memcpy", "category": "memcpy",
                       "start_ns": 22 * MS, "dur_ns": 2 * MS, "launch_id": 1,
                       "bytes": 64 << 20}))


# -- tensor cores ---------------------------------------------------------------------------

def _matmul(dtype: str, shapes: str, meta: dict | None = None):
    return Run.from_tables(
        meta=meta, steps=steps([20, 20]),
        ops=table({"id": 1, "step": 1, "name": "aten::mm", "cat": "cpu_op", "thread": 1,
                   "start_ns": 21 * MS, "dur_ns": 5 * MS, "flops": 2 * 512**3,
                   "dtypes": f'["{dtype}", "{dtype}"]', "input_shapes": shapes,
                   "module": "model.proj", "phase": "forward"}))


ALIGNED = "[[512, 512], [512, 512]]"
UNALIGNED = "[[512, 511], [511, 512]]"
TF32_OFF = {"precision": {"matmul_allow_tf32": False, "cudnn_allow_tf32": True}}
TF32_ON = {"precision": {"matmul_allow_tf32": True, "cudnn_allow_tf32": True}}


# -- communication (gloo: comms rows + host ops) ---------------------------------------------

def _gloo(comm_start_ms: float, comm_ms: float, call_ms: float, compute_until_ms: float):
    """One rank, steps 0-1 of 100 ms; step 1's backward runs 100..150 ms on thread 1, and its
    compute (top-level ops) until ``compute_until_ms``; one fp32 all-reduce on gloo's thread."""
    t0 = 100
    ops = [
        {"id": 1, "step": 1, "name": "autograd::engine::evaluate_function: MmBackward0",
         "cat": "cpu_op", "depth": 0, "thread": 1, "start_ns": t0 * MS, "dur_ns": 50 * MS,
         "phase": "backward"},
        {"id": 2, "step": 1, "name": "aten::add_", "cat": "cpu_op", "depth": 0, "thread": 1,
         "start_ns": (t0 + 50) * MS, "dur_ns": int((compute_until_ms - 50) * MS),
         "phase": "optimizer"},
        {"id": 3, "step": 1, "name": "gloo:all_reduce", "cat": "user_annotation", "depth": 0,
         "thread": 2, "start_ns": int((t0 + comm_start_ms) * MS), "dur_ns": int(comm_ms * MS)},
    ]
    comms = table({"step": 1, "collective": "all_reduce", "dtype": "float", "group_size": 2,
                   "in_bytes": 64 << 20, "out_bytes": 64 << 20,
                   "start_ns": int((t0 + comm_start_ms) * MS), "dur_ns": int(comm_ms * MS),
                   "call_ns": int((t0 + call_ms) * MS), "source": "gloo"})
    return Run.from_tables(meta=SCRIPT, steps=steps([100, 100]), ops=table(*ops), comms=comms)


def _per_param(n: int, nbytes: int, ddp: bool = False):
    """Step 1 (100 ms) all-reduces ``n`` gradients of ``nbytes`` (plus 1 us a KiB) one after
    the other on gloo's thread after backward, nothing else running: all exposed."""
    t, rows = 160 * MS, []
    for i in range(n):
        dur = 60_000 + (nbytes + i * 64) // 1024 * 1_000
        rows.append({"step": 1, "collective": "all_reduce", "dtype": "float", "group_size": 2,
                     "in_bytes": nbytes + i * 64, "out_bytes": nbytes + i * 64,
                     "start_ns": t, "dur_ns": dur, "call_ns": t, "source": "gloo"})
        t += dur
    ops = [{"id": 1, "step": 1, "name": "aten::mm", "cat": "cpu_op", "depth": 0, "thread": 1,
            "start_ns": 100 * MS, "dur_ns": 50 * MS, "phase": "backward"}]
    if ddp:  # issued by DistributedDataParallel's reducer (its forward span is in the trace)
        ops.append({"id": 2, "step": 1, "name": "DistributedDataParallel.forward",
                    "cat": "user_annotation", "depth": 0, "thread": 1, "start_ns": 95 * MS,
                    "dur_ns": 5 * MS, "phase": "forward"})
    return Run.from_tables(meta=SCRIPT, steps=steps([100, 100]), ops=table(*ops),
                           comms=table(*rows))


def _zero_step(n: int, nbytes: int):
    """Step 1 (100 ms): a ZeroRedundancyOptimizer step, then ``n`` broadcasts of ``nbytes``
    (plus 1 us a KiB) one after the other, nothing else running: all exposed."""
    t, rows = 160 * MS, []
    for i in range(n):
        dur = 200_000 + (nbytes + i * 64) // 1024 * 1_000
        rows.append({"step": 1, "collective": "broadcast", "dtype": "float", "group_size": 2,
                     "in_bytes": nbytes + i * 64, "out_bytes": nbytes + i * 64,
                     "start_ns": t, "dur_ns": dur, "call_ns": t, "source": "gloo"})
        t += dur
    ops = [{"id": 1, "step": 1, "name": "Optimizer.step#ZeroRedundancyOptimizer.step",
            "cat": "user_annotation", "depth": 0, "thread": 1, "start_ns": 150 * MS,
            "dur_ns": 10 * MS, "phase": "optimizer"}]
    return Run.from_tables(meta={**SCRIPT, "world_size": 2}, steps=steps([100, 100]),
                           ops=table(*ops), comms=table(*rows))


def comm_late():
    # issued at the end of backward (52 ms) and run while nothing else does: 30 % exposed
    return _gloo(comm_start_ms=52, comm_ms=30, call_ms=52, compute_until_ms=51)


def comm_hidden():
    # issued early in backward and hidden behind compute that runs to the end of the step
    return _gloo(comm_start_ms=5, comm_ms=30, call_ms=5, compute_until_ms=99)


# -- data parallel ---------------------------------------------------------------------------

def _modules(*names_spans):
    rows = [{"id": i + 1, "step": 1, "name": n, "cat": "module", "start_ns": s * MS,
             "dur_ns": d * MS, "parent_id": p} for i, (n, s, d, p) in enumerate(names_spans)]
    return Run.from_tables(meta=SCRIPT, ops=table(*rows))


# -- launches, stragglers, host syncs ---------------------------------------------------------

def _launches(host_bound: bool):
    """Step 2 (10 ms) runs 20 kernels of 10 us, one every 400 us. Host-bound: each launch call
    starts after the previous kernel ended; else all were queued at the step's start."""
    ops, kernels = [], []
    t0 = 20 * MS
    for k in range(20):
        start = t0 + k * 400_000
        launch = start - 5_000 if host_bound else t0 - 1_000 + k * 1_000
        ops.append({"id": k + 1, "step": 2, "name": "cudaLaunchKernel", "cat": "cuda_runtime",
                    "thread": 1, "start_ns": launch, "dur_ns": 500})
        kernels.append({"step": 2, "name": "void add_kernel<float>()", "kind": "compute",
                        "category": "elementwise", "start_ns": start, "dur_ns": 10_000,
                        "launch_id": k + 1, "stream": 7})
    return Run.from_tables(steps=steps([10, 10, 10]), ops=table(*ops),
                           kernels=table(*kernels))


def _two_ranks(late_ms: float):
    """Two ranks, steps 1-4 of 100 ms, one all-reduce per step; rank 1 calls it ``late_ms``
    after rank 0."""
    rows = []
    for step in range(1, 5):
        for rank in (0, 1):
            call = step * 100 * MS + 50 * MS + (int(late_ms * MS) if rank == 1 else 0)
            rows.append({"rank": rank, "step": step, "collective": "all_reduce",
                         "dtype": "float", "in_bytes": 1 << 20, "start_ns": call,
                         "dur_ns": 30 * MS, "call_ns": call, "source": "gloo"})
    st = steps([100] * 5)
    return Run.from_tables(
        meta=SCRIPT, comms=table(*rows),
        steps={k: v + v for k, v in st.items()} | {"rank": [0] * 5 + [1] * 5})


def _syncs(device: str, every_step: bool):
    rows = [{"step": s, "call": "item", "site": "train.py:40", "function": "train",
             "device": device, "count": 1, "total_ns": 2 * MS, "max_ns": 2 * MS}
            for s in range(1, 6) if every_step or s == 3]
    return Run.from_tables(meta=SCRIPT, steps=steps([10] * 6), host_syncs=table(*rows))


# -- memory ----------------------------------------------------------------------------------

def _allocator(growth: int, inactive_split: int = 0):
    rows = [{"device": "cuda:0", "step": s, "ts_ns": s * 10 * MS, "source": "memory_stats",
             "allocated": (1 << 30) + s * growth, "reserved": 2 << 30,
             "inactive_split": inactive_split, "alloc_retries": 0, "device_allocs": 10,
             "device_frees": 5} for s in range(2, 9)]
    return Run.from_tables(meta=SCRIPT, steps=steps([10] * 9), allocator=table(*rows))


def _reserved_events(reserved_mib: int):
    """[memory] events of an imported GPU trace: 1 GiB allocated at most, reserved as given."""
    rows = [{"device": "cuda:0", "ts_ns": (20 + i) * MS, "action": "alloc", "bytes": 256 * MIB,
             "allocated": (i + 1) * 256 * MIB, "reserved": reserved_mib * MIB, "step": 1,
             "source": "profiler", "capture": 0} for i in range(4)]
    return Run.from_tables(steps=steps([20, 20]), memory=table(*rows))


def _idle_gpu(idle: bool):
    """Three 20 ms steps; in steps 1 and 2 the GPU runs the first and last 5 ms (idle 10 ms
    while the host runs an op) or the whole step."""
    busy = [(5, 5)] if idle else [(0, 20)]
    busy = busy + [(15, 5)] if idle else busy
    return Run.from_tables(
        steps=steps([20, 20, 20]),
        ops=table(*({"id": s, "step": s, "name": "aten::nonzero_static", "cat": "cpu_op",
                     "thread": 1, "start_ns": (20 * s + 5) * MS, "dur_ns": 10 * MS,
                     "phase": "forward"} for s in (1, 2))),
        kernels=table(*({"step": s, "name": "gemm", "kind": "compute", "category": "gemm",
                         "stream": 7, "start_ns": (20 * s + a) * MS, "dur_ns": d * MS}
                        for s in (1, 2) for a, d in busy)))


def _scales(skipped: list[bool], scales: list[float]):
    return Run.from_tables(meta=SCRIPT, steps=steps([10] * len(skipped), skipped=skipped,
                                                    loss_scale=scales))


def _anomaly(present: bool):
    row = {"step": 3, "ts_ns": 35 * MS, "op": "aten.div.Tensor", "module": "model.norm",
           "phase": "forward", "site": "train.py:20", "code": "y = x / s", "kind": "nan",
           "output_index": 0, "shape": "[4, 4]", "dtype": "torch.float32", "numel": 16,
           "nan_count": 16, "inf_count": 0, "inputs": "[]", "frames": "[]"}
    return Run.from_tables(meta=SCRIPT, steps=steps([10] * 4),
                           anomalies=table(row) if present else table())


def _recompiles(gave_up: bool):
    """A compiled function recompiling for a global that changes each step: 7 recompiles and
    Dynamo's give-up, or (negative) 7 recompiles in the first steps of 40, cached after."""
    reason = "0/{n}: G['STEP'] == {n}"
    rows = [{"compile_id": f"0/{i}", "frame": 0, "attempt": i, "code": "loss_fn",
             "site": "train.py:9", "step": i, "start_ns": i * 10 * MS, "dur_ns": 40 * MS,
             "recompile_reason": reason.format(n=i - 1) if i else None} for i in range(8)]
    if gave_up:
        rows.append({"compile_id": "0/8", "frame": 0, "attempt": 8, "step": 8,
                     "start_ns": 80 * MS, "dur_ns": 2 * MS, "recompile_reason": reason.format(n=7),
                     "fail_type": "Unsupported", "fail_reason": "Dynamo recompile limit exceeded"})
    return Run.from_tables(meta={**SCRIPT, "compile": {"used": True, "recompile_limit": 8}},
                           steps=steps([10] * 40), compiles=table(*rows))


# -- precision and optimizer fusion ----------------------------------------------------------

A100 = {"devices": {"0": {"kind": "cuda", "name": "NVIDIA A100-SXM4-80GB",
                          "capability": "8.0"}}}


def _gpu_matmuls(dtype: str, kernel: str):
    """Four matmuls of step 1 on an A100, each with one 2 ms kernel."""
    ops = [{"id": i + 1, "step": 1, "name": "aten::mm", "cat": "cpu_op", "thread": 1,
            "start_ns": (21 + i) * MS, "dur_ns": 100_000, "dtypes": f'["{dtype}", "{dtype}"]',
            "input_shapes": "[[4096, 4096], [4096, 4096]]", "phase": "forward"}
           for i in range(4)]
    kernels = [{"step": 1, "name": kernel, "kind": "compute", "category": "gemm",
                "start_ns": (21 + i) * MS + 200_000, "dur_ns": 2 * MS, "op_id": i + 1,
                "launch_id": i + 1} for i in range(4)]
    return Run.from_tables(meta={**SCRIPT, **A100}, steps=steps([30, 30]), ops=table(*ops),
                           kernels=table(*kernels))


def _optimizer(child: str, n_children: int = 40, cls: str = "Adam",
               steps_table: dict | None = None):
    """``cls``.step of step 1 on CPU: ``n_children`` ops under the span, 4 small parameters
    (two 20 ms steps, or ``steps_table``)."""
    ops = [{"id": 1, "step": 1, "name": f"Optimizer.step#{cls}.step", "cat": "user_annotation",
            "thread": 1, "start_ns": 10 * MS, "dur_ns": 5 * MS}]
    ops += [{"id": 2 + i, "step": 1, "name": child, "cat": "cpu_op", "parent_id": 1,
             "thread": 1, "start_ns": 10 * MS + i * 100_000, "dur_ns": 100_000,
             "phase": "optimizer"} for i in range(n_children)]
    ops += [{"id": 100 + i, "step": 1, "name": "torch::autograd::AccumulateGrad",
             "cat": "cpu_op", "thread": 1, "start_ns": 5 * MS + i * 1000, "dur_ns": 500,
             "input_shapes": "[[64, 64]]", "dtypes": '["float"]', "phase": "backward"}
            for i in range(4)]
    return Run.from_tables(meta={**SCRIPT, "host_bandwidth": {"bytes_per_s": 1e10}},
                           steps=steps_table or steps([20, 20]), ops=table(*ops))


def _pointwise(shapes: list[str]):
    """Forward ops mul, add, tanh of step 1 on CPU, 2 ms each, on the given input shapes."""
    names = ["aten::mul", "aten::add", "aten::tanh"]
    ops = [{"id": i + 1, "step": 1, "name": n, "cat": "cpu_op", "thread": 1,
            "start_ns": (10 + 2 * i) * MS, "dur_ns": 2 * MS, "phase": "forward",
            "input_shapes": sh, "dtypes": '["float", "float"]'}
           for i, (n, sh) in enumerate(zip(names, shapes))]
    return Run.from_tables(meta={**SCRIPT, "host_bandwidth": {"bytes_per_s": 1e10}},
                           steps=steps([20, 20]), ops=table(*ops))


BIG = "[[2048, 2048], [2048, 2048]]"


def _cpu_autocast(flops: int, gemm_ns: int, casts: int = 2, meta: dict | None = None):
    """Step 1 on CPU under bf16 autocast: a Linear's weight and bias cast (aten::to around
    aten::_to_copy of fp32 tensors, 20 us each; the first ``casts`` of them), then its bf16
    addmm of ``flops`` taking ``gemm_ns``."""
    ops = []
    for i, shape in enumerate(("[[256, 256]]", "[[256]]")[:casts]):
        ops += [{"id": 1 + 2 * i, "step": 1, "name": "aten::to", "cat": "cpu_op", "thread": 1,
                 "start_ns": (10 + i) * MS, "dur_ns": 20_000, "phase": "forward",
                 "input_shapes": shape, "dtypes": '["float", "Scalar"]'},
                {"id": 2 + 2 * i, "parent_id": 1 + 2 * i, "step": 1, "name": "aten::_to_copy",
                 "cat": "cpu_op", "thread": 1, "start_ns": (10 + i) * MS, "dur_ns": 18_000,
                 "phase": "forward", "input_shapes": shape, "dtypes": '["float", "Scalar"]'}]
    ops.append({"id": 9, "step": 1, "name": "aten::addmm", "cat": "cpu_op", "thread": 1,
                "start_ns": 12 * MS, "dur_ns": gemm_ns, "phase": "forward", "flops": flops,
                "input_shapes": "[[256], [32, 256], [256, 256]]",
                "dtypes": '["c10::BFloat16", "c10::BFloat16", "c10::BFloat16"]'})
    return Run.from_tables(meta={**SCRIPT, **(meta or {})}, steps=steps([20, 20]),
                           ops=table(*ops))


# -- memory: checkpointing and batch size ----------------------------------------------------

MIB = 1 << 20


def _peak_step(calls: int = 1, budget: int | None = None, param_mib: int = 50):
    """Step 1 (30 ms) of a two-block model: 50 MiB of parameters; block0's forward ends at
    12 ms and block1's at 14 ms, each saving 100 MiB for backward, freed by block1's backward
    at 20 ms and block0's at 24 ms. ``calls`` = 2 makes the blocks shared layers (never
    checkpointed); ``budget`` is ``--memory-budget``; ``param_mib`` the parameters' size."""
    series = []
    for t in range(10, 31):
        act = 100 * MIB * (12 <= t < 24) + 100 * MIB * (14 <= t < 20)
        series.append({"device": "cpu", "ts_ns": t * MS, "step": 1, "capture": 0,
                       "parameter": param_mib * MIB, "activation": act,
                       "total": param_mib * MIB + act})
    ops = [{"id": 1, "step": 1, "name": "model.block0", "cat": "module", "start_ns": 10 * MS,
            "dur_ns": 2 * MS},
           {"id": 2, "step": 1, "name": "model.block1", "cat": "module", "start_ns": 12 * MS,
            "dur_ns": 2 * MS},
           {"id": 3, "step": 1, "name": "aten::mm", "cat": "cpu_op", "start_ns": 20 * MS,
            "dur_ns": 2 * MS, "phase": "backward", "module": "model.block1", "thread": 1},
           {"id": 4, "step": 1, "name": "aten::mm", "cat": "cpu_op", "start_ns": 24 * MS,
            "dur_ns": 2 * MS, "phase": "backward", "module": "model.block0", "thread": 1}]
    modules = [{"name": f"model.block{i}", "type": "Block", "depth": 1, "params": 1000,
                "param_bytes": 25 * MIB, "activation_bytes": 100 * MIB, "calls": calls,
                "fwd_ns": 2 * MS, "bwd_ns": 2 * MS} for i in (0, 1)]
    meta = {**SCRIPT, "settings": {"memory_budget": budget}} if budget else SCRIPT
    return Run.from_tables(meta=meta, steps=steps([30] * 4, batch_size=[32] * 4),
                           memory_series=table(*series), ops=table(*ops),
                           modules=table(*modules))


# -- attention (dataflow: matmul -> div -> softmax -> matmul on the same shapes) ------------

def _attention(scale_op: str):
    """One forward of 3-D attention: q @ k^T, a scale, softmax, @ v (``scale_op`` between)."""
    names = [("aten::matmul", "[[2, 8, 4], [2, 4, 8]]"), (scale_op, "[[2, 8, 8], []]"),
             ("aten::softmax", "[[2, 8, 8], [], []]"), ("aten::matmul", "[[2, 8, 8], [2, 8, 4]]")]
    ops = [{"id": i + 1, "step": 1, "name": n, "cat": "cpu_op", "thread": 1,
            "start_ns": (21 + i) * MS, "dur_ns": MS // 2, "input_shapes": shapes,
            "dtypes": '["float", "float"]', "module": "model.attn", "phase": "forward"}
           for i, (n, shapes) in enumerate(names)]
    return Run.from_tables(steps=steps([20, 20]), ops=table(*ops))


CASES = [
    ("attention", "fusion.hand_attention", lambda: _attention("aten::div"),
     lambda: _attention("aten::cat")),
    ("step_outliers", "steps.outliers", outliers_pos, outliers_neg),
    ("input_pipeline", "input.dataloader_wait", lambda: _loader(8.0), lambda: _loader(0.0)),
    ("input_pipeline", "input.pageable_copy",
     lambda: _copies("Memcpy HtoD (Pageable -> Device)"),
     lambda: _copies("Memcpy HtoD (Pinned -> Device)")),
    ("pageable_readback", "host_sync.pageable_readback",
     lambda: _copies("Memcpy DtoH (Device -> Pageable)"),
     lambda: _copies("Memcpy DtoH (Device -> Pinned)")),
    ("tensor_cores", "tensor_core.fp64", lambda: _matmul("double", ALIGNED),
     lambda: _matmul("c10::BFloat16", ALIGNED)),
    ("tensor_cores", "tensor_core.tf32_off", lambda: _matmul("float", ALIGNED, TF32_OFF),
     lambda: _matmul("float", ALIGNED, TF32_ON)),
    ("tensor_cores", "tensor_core.unaligned_dims", lambda: _matmul("c10::BFloat16", UNALIGNED),
     lambda: _matmul("c10::BFloat16", ALIGNED)),
    ("comm_bound", "comm.bound", comm_late, comm_hidden),
    # 200 all-reduces of ~4 KiB a step vs 4 bucketed ones of 8 MiB
    ("unbucketed_allreduce", "comm.unbucketed", lambda: _per_param(200, 4096),
     lambda: _per_param(4, 8 << 20)),
    ("comm_overlap", "comm.poor_overlap", comm_late, comm_hidden),
    # 40 parameter broadcasts a step on 2 ranks vs one per rank (parameters_as_bucket_view)
    ("zero_broadcasts", "comm.zero_broadcasts", lambda: _zero_step(40, 4096),
     lambda: _zero_step(2, 80 * 4096)),
    ("data_parallel", "comm.data_parallel",
     lambda: _modules(("DataParallel", 0, 10, None), ("DataParallel.module", 2, 7, 1)),
     lambda: _modules(("DistributedDataParallel", 0, 10, None), ("Model", 0, 5, 1))),
    ("gpu_idle", "gpu.idle_block", lambda: _idle_gpu(True), lambda: _idle_gpu(False)),
    ("launch_bound", "launch.bound", lambda: _launches(True), lambda: _launches(False)),
    ("straggler", "comm.straggler", lambda: _two_ranks(20), lambda: _two_ranks(0)),
    ("host_syncs", "host_sync.call", lambda: _syncs("cuda:0", True),
     lambda: _syncs("cpu", False)),
    ("memory_leak", "memory.leak", lambda: _allocator(8 << 20), lambda: _allocator(0)),
    ("fragmentation", "memory.fragmentation", lambda: _allocator(0, 512 << 20),
     lambda: _allocator(0, 1 << 20)),
    # imported traces: Total Reserved of [memory] events, reserved 2x the peak allocated
    ("fragmentation", "memory.fragmentation", lambda: _reserved_events(2048),
     lambda: _reserved_events(1040)),
    ("grad_scaler", "amp.skipped_steps",
     lambda: _scales([False] * 4 + [True, False, True, False, True, False],
                     [65536.0] * 4 + [32768.0] * 2 + [16384.0] * 2 + [8192.0] * 2),
     lambda: _scales([False] * 10, [65536.0] * 10)),
    ("grad_scaler", "amp.scale_collapse",
     lambda: _scales([False] * 10, [65536.0 / 4**i for i in range(10)]),
     lambda: _scales([False] * 10, [65536.0] * 10)),
    ("anomaly", "numerics.nonfinite", lambda: _anomaly(True), lambda: _anomaly(False)),
    ("recompiles", "compile.recompiles", lambda: _recompiles(True), lambda: _recompiles(False)),
    ("precision", "precision.fp32_matmul",
     lambda: _gpu_matmuls("float", "ampere_sgemm_128x64_nn"),
     lambda: _gpu_matmuls("c10::BFloat16", "ampere_bf16_s16816gemm_bf16_128x64_nn")),
    # a small bf16 GEMM (4 MFLOP, priced 0.03 ms in fp32) taking 1 ms: autocast costs; the
    # same casts around a 4.3 GFLOP one taking 7 ms (priced 25 ms in fp32): bf16 pays
    ("cpu_autocast", "precision.cpu_autocast_slower", lambda: _cpu_autocast(4_194_304, MS),
     lambda: _cpu_autocast(4_294_967_296, 7 * MS)),
    ("fusion", "fusion.hand_gelu", lambda: _pointwise([BIG, BIG, "[[2048, 2048]]"]),
     # the same ops on unrelated tensors: nothing feeds the next op, so no chain
     lambda: _pointwise([BIG, "[[512, 512], [512, 512]]", "[[64, 64]]"])),
    ("checkpointing", "memory.checkpointing", lambda: _peak_step(),
     lambda: _peak_step(calls=2)),
    ("batch_size", "batch.size", lambda: _peak_step(calls=2, budget=1 << 30),
     lambda: _peak_step(calls=2, budget=250 * MIB)),
    ("fusion_optimizer", "fusion.optimizer", lambda: _optimizer("aten::mul_"),
     lambda: _optimizer("aten::_fused_adam_", 1)),
]
REGISTERED = {load_analyzer(entry).name for entry in ANALYZERS}


def _kinds(run: Run, analyzer: str) -> list[str]:
    out = analyze(run, only=(analyzer,), write=False)
    assert not out.failed, out.failed
    # GPU-only advice on a CPU run is a "when you move to a GPU" note, not a finding (issue 19)
    return [f.kind for f in out.findings] + [n["finding_kind"] for n in out.notes
                                             if n.get("kind") == "gpu"]


@pytest.mark.parametrize(("analyzer", "kind", "positive", "negative"), CASES,
                         ids=[f"{a}:{k}" for a, k, _, _ in CASES])
def test_the_finding_fires_on_its_positive_case_only(analyzer, kind, positive, negative):
    assert analyzer in REGISTERED
    assert kind in _kinds(positive(), analyzer)
    assert kind not in _kinds(negative(), analyzer)


def test_every_registered_analyzer_has_a_case():
    assert REGISTERED - {a for a, _, _, _ in CASES} == set()


def test_a_checkpointing_plan_that_barely_moves_the_peak_is_no_finding():
    # GIVEN the two-block step under 5000 MiB of parameters: checkpointing both blocks lowers
    # the 5.08 GiB peak by 200 MiB at most (4 %), with no memory pressure
    out = analyze(_peak_step(param_mib=5000), only=("checkpointing",), write=False)
    # THEN no "would take the peak ... (not advised)" line, and skipped says how little
    assert not out.findings
    (why,) = [s["reason"] for s in out.skipped if s["analyzer"] == "checkpointing"]
    assert "(5.08 GiB) by 200.00 MiB at most, under the 10% a plan is worth" in why
    # AND with 50 MiB of parameters the same plan halves the peak: the information stays
    (f,) = analyze(_peak_step(), only=("checkpointing",), write=False).findings
    assert f.kind == "memory.checkpointing" and f.severity == "info"


def test_a_sync_in_a_librarys_code_names_the_scripts_line_and_no_loop_to_rewrite():
    # GIVEN a GPU run whose item() every step is Pyro's own (torch_item inside svi.step),
    # reached from the script's line 36
    rows = [{"step": s, "call": "item", "site": "pyro/infer/util.py:52", "function": "torch_item",
             "device": "cuda:0", "count": 10, "total_ns": 2 * MS, "max_ns": MS,
             "caller": "svi_regression.py:36"} for s in range(1, 6)]
    run = Run.from_tables(meta=SCRIPT, steps=steps([10] * 6), host_syncs=table(*rows))
    (f,) = analyze(run, only=("host_syncs",), write=False).findings
    # THEN the evidence and the fix say where the script reaches it, and the fix pastes no
    # loop of the script's own to rewrite
    assert "torch_item at pyro/infer/util.py:52, reached from svi_regression.py:36" in \
        f.evidence[0].text
    assert "in pyro's own code (pyro/infer/util.py:52), reached from the script at " \
        "svi_regression.py:36" in f.fix
    assert "running_loss" not in f.fix
    # AND a sync at the script's own line keeps the loop fix
    (own,) = analyze(_syncs("cuda:0", True), only=("host_syncs",), write=False).findings
    assert "running_loss += loss.detach()" in own.fix


def test_a_hostile_line_in_a_run_stays_on_its_comment_line_in_the_fix():
    # GIVEN a run directory whose host sync names a caller with a line break and code after it
    rows = [{"step": s, "call": "item", "site": "pkg/x.py:1", "function": "f",
             "device": "cuda:0", "count": 1, "total_ns": MS, "max_ns": MS,
             "caller": "train.py:3\nimport os; os.system('boom')"} for s in range(1, 6)]
    run = Run.from_tables(meta=SCRIPT, steps=steps([10] * 6), host_syncs=table(*rows))
    (f,) = analyze(run, only=("host_syncs",), write=False).findings
    # THEN every line of the fix to paste is still a comment
    assert all(line.startswith("#") for line in f.fix.splitlines())
    assert "train.py:3\\nimport os" in f.fix
    # AND so it is where the call's own name carries the line
    rows = [{**r, "call": "item\nimport os", "caller": "train.py:3"} for r in rows]
    run = Run.from_tables(meta=SCRIPT, steps=steps([10] * 6), host_syncs=table(*rows))
    (f,) = analyze(run, only=("host_syncs",), write=False).findings
    assert all(line.startswith("#") for line in f.fix.splitlines()), f.fix


def test_a_hostile_model_class_stays_in_the_hf_activation_fix_comment():
    from dsprof.analyzers.frameworks import HfActivation, hf_activation_fix

    # GIVEN the model class a run directory names, with a line of code after a line break
    fix = hf_activation_fix(HfActivation("GPT2LMHeadModel\nimport os", "activation_function",
                                         "gelu_pytorch_tanh", "NewGELUActivation"))
    # THEN no line of the fix is that code: the name stays in its comment
    assert not [line for line in fix.splitlines() if line.startswith("import os")], fix
    assert "GPT2LMHeadModel\\nimport os.from_pretrained" in fix


def test_no_checkpointing_plan_for_modules_run_several_times_a_step_says_why():
    # GIVEN the two-block step whose blocks ran twice each (gradient accumulation's
    # micro-batches): the plan follows one forward and backward of a module a step
    out = analyze(_peak_step(calls=2, budget=250 * MIB), only=("checkpointing",), write=False)
    # THEN no plan, and skipped says why (it said nothing)
    assert not out.findings
    (why,) = [s["reason"] for s in out.skipped if s["analyzer"] == "checkpointing"]
    assert "ran 2 times a step" in why and "gradient accumulation" in why


def test_bf16_attention_backward_is_in_the_autocast_price():
    # GIVEN the autocast case where bf16 pays (a 4.3 GFLOP GEMM in 7 ms, priced 25 ms in fp32),
    # plus a bf16 CPU flash-attention backward of a small transformer (B 16, H 4, L 32, D 16)
    # that took 24 ms (12 a step): on one thread its bf16 backward ran 4.2 ms a call against
    # 0.29 in fp32
    def run(attention: bool) -> Run:
        base = _cpu_autocast(4_294_967_296, 7 * MS)
        if not attention:
            return base
        ops = base.table("ops").to_pylist()
        shape = "[16, 4, 32, 16]"
        ops.append({"id": 20, "rank": ops[0]["rank"], "step": 1, "name":
                    "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
                    "cat": "cpu_op", "thread": 1, "start_ns": 15 * MS, "dur_ns": 24 * MS,
                    "phase": "backward", "input_shapes": f"[{', '.join([shape] * 5)}]",
                    "dtypes": '["c10::BFloat16", "c10::BFloat16", "c10::BFloat16"]'})
        return Run.from_tables(meta=SCRIPT, steps=steps([20, 20]), ops=table(*ops))

    without = analyze(run(False), only=("cpu_autocast",), write=False)
    assert not without.findings  # bf16 pays for the GEMM alone
    (f,) = analyze(run(True), only=("cpu_autocast",), write=False).findings
    # THEN the attention's profiled bf16 time against its fp32 price tips it, and says so
    assert f.kind == "precision.cpu_autocast_slower" and "bf16 attention" in f.title
    assert any("attention ops (CPU flash attention)" in e.text for e in f.evidence)
