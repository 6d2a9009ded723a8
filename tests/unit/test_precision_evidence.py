"""The precision finding re-derived from the raw trace JSON on every shared trace (issue 19): the
fp32 and fp16/bf16 matrix time and the kernel time it is a share of, from each kernel's launch
(correlation), the innermost matmul/conv op around the launch on its thread and that op's first
tensor dtype; and a finding, or a stated reason, wherever fp32 matrix kernels hold 5 % of the
kernel time. A reader written here; only the kernel-name classifier (tested on its own in
test_kernel_class.py) is dsprof's, for kernels no matmul/conv op launched."""

from __future__ import annotations

import gzip
import json
import re
from functools import cache

import pytest

from dsprof.analyzers.precision import MATMUL_CONV, MIN_FP32_SHARE
from dsprof.ingest.kernel_class import classify
from tests.unit.shared_traces import NAMES, SETS, analysis

STEP = re.compile(r"^ProfilerStep#\d+$")
HOST = {"cpu_op", "Operator", "user_annotation"}
RUNTIME = {"cuda_runtime", "Runtime", "cuda_driver"}
KERNEL = {"kernel", "Kernel"}
LOW = {"c10::Half", "c10::BFloat16"}
LOW_NAME = ("bf16", "f16", "h1688", "h16816", "hgemm", "__half", "half", "bfloat16", "fp16")
FP32_NAME = ("sgemm", "<float", "s1688", "s16816", "tf32", "f32")


def _name_is_low(name: str) -> bool | None:
    low = name.lower()
    if any(k in low for k in LOW_NAME):
        return True
    if any(k in low for k in FP32_NAME):
        return False
    return None


def _tensor_types(op: dict) -> list[str]:
    # Kineto's "Input type" lists scalars and lists too ("Int", "GenericList"): tensor dtypes
    # are the lower-case names and c10's
    return [t for t in op.get("args", {}).get("Input type") or []
            if t and (t[0].islower() or t.startswith("c10::"))]


def _one_file(events: list[dict]) -> tuple[float, float, float, int]:
    """(fp32 matrix us, low-precision matrix us, kernel us, steps) of one rank's trace."""
    steps = [(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in events
             if STEP.match(str(e.get("name", ""))) and e.get("cat") in HOST]
    # the innermost matmul/conv op around each launch, on the launching thread
    by_thread: dict[tuple, list[dict]] = {}
    for e in events:
        if e.get("cat") in HOST | RUNTIME:
            by_thread.setdefault((e.get("pid"), e.get("tid")), []).append(e)
    launched: dict[object, tuple[dict | None, float]] = {}
    for evs in by_thread.values():
        evs.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
        stack: list[dict] = []
        for e in evs:
            ts = float(e["ts"])
            while stack and ts >= float(stack[-1]["ts"]) + float(stack[-1]["dur"]):
                stack.pop()
            if e.get("cat") in RUNTIME:
                mm = next((o for o in reversed(stack) if o["name"] in MATMUL_CONV), None)
                launched[e.get("args", {}).get("correlation")] = (mm, ts)
            else:
                stack.append(e)
    fp32 = low = total = 0.0
    for k in events:
        if k.get("cat") not in KERNEL or "nccl" in k["name"].lower():
            continue
        mm, at = launched.get(k.get("args", {}).get("correlation"), (None, float(k["ts"])))
        if steps and not any(a <= at < b for a, b in steps):
            continue
        dur = float(k["dur"])
        total += dur
        if mm is None:
            category, tensor_core = classify(k["name"])
            if category not in ("gemm", "conv"):
                continue
            is_low = _name_is_low(k["name"])
            if is_low is None and tensor_core is False:
                is_low = False
        else:
            types = _tensor_types(mm)
            is_low = types[0] in LOW if types else _name_is_low(k["name"])
            if types and types[0] != "float" and not is_low:
                continue
        if is_low is None:
            continue
        if is_low:
            low += dur
        else:
            fp32 += dur
    return fp32, low, total, max(len(steps), 1)


@cache
def matrix_time(name: str) -> tuple[float, float, float]:
    """(fp32, low precision, kernel) seconds per rank-step over every file of the set."""
    sums = [0.0, 0.0, 0.0]
    rank_steps = 0
    for path in SETS[name]:
        with gzip.open(path, "rt") as fh:
            events = [e for e in json.load(fh)["traceEvents"] if e.get("ph") == "X" and "dur" in e]
        *parts, n = _one_file(events)
        sums = [s + p for s, p in zip(sums, parts)]
        rank_steps += n
    fp32, low, total = (s / rank_steps / 1e6 for s in sums)
    return fp32, low, total


pytestmark = pytest.mark.skipif(not NAMES, reason="../shared/traces is absent")


@pytest.mark.parametrize("name", NAMES)
def test_precision_finding_is_the_raw_matrix_time_or_says_why_not(name):
    fp32, low, total = matrix_time(name)
    result = analysis(name)[0]
    found = [f for f in result.findings if f.kind == "precision.fp32_matmul"]
    reasons = [s["reason"] for s in result.skipped if s["analyzer"] == "precision"]
    if total and fp32 >= MIN_FP32_SHARE * total:
        # fp32 GEMM/conv kernels hold a real share of GPU time: a finding, or the reason
        assert found or reasons, name
    for f in found:
        # THEN its figures are the raw trace's
        assert f.data["fp32_s"] == pytest.approx(fp32, rel=0.005), name
        assert f.data["low_precision_s"] == pytest.approx(low, rel=0.005, abs=1e-9), name
        assert f.data["kernel_s"] == pytest.approx(total, rel=0.005), name
        assert f"{fp32 / total:.0%} of GPU time is fp32" in f.title, (name, f.title)
        # autocast speeds the fp32 matrix time up 4x at most: never more than 3/4 of it saved
        assert f.saving_s <= 0.75 * fp32 * 1.001
