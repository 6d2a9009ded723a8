"""Every saving counted once, by construction: the claimed-time ledger (analyzers/claims.py)
on every trace in ../shared/traces, re-derived from the raw trace JSON (a reader written here,
not dsprof's parser), and the registry's order rule."""

from __future__ import annotations

import re

import pytest

from dsprof.analyzers.claims import EXPOSED_COMM, GPU_IDLE, ClaimLedger, check_order
from dsprof.analyzers.registry import (
    ANALYZERS,
    Analyzer,
    Context,
    analyze,
    load_analyzer,
)
from dsprof.findings import Evidence, Finding
from dsprof.ingest.importer import import_traces
from dsprof.render.findings import saving_text
from dsprof.run import Run, load
from tests.unit.shared_traces import NAMES, SETS, analysis, covered, events, union

DEVICE_CATS = {"kernel", "Kernel", "gpu_memcpy", "gpu_memset", "Memcpy", "Memset"}
STEP = re.compile(r"^ProfilerStep#\d+$")

CLAIMERS = [load_analyzer(e) for e in ANALYZERS]


def claim_kinds(resource: str) -> tuple[str, ...]:
    """The finding kinds whose savings claim ``resource`` (as the analyzers declare them)."""
    return tuple(k for a in CLAIMERS for r, kinds in a.claims if r == resource for k in kinds)


def steps(name: str) -> list[tuple[float, float]]:
    """ProfilerStep spans, fragments (under a tenth of the median) out, as dsprof does."""
    spans = sorted({(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in events(name)
                    if STEP.match(str(e.get("name", "")))
                    and e.get("cat") in ("cpu_op", "user_annotation", "Operator")})
    if not spans:
        return []
    med = sorted(b - a for a, b in spans)[len(spans) // 2]
    return [(a, b) for a, b in spans if b - a >= 0.1 * med]


@pytest.fixture(scope="module")
def analyses() -> dict:
    return {name: analysis(name) for name in NAMES}


@pytest.mark.skipif(not NAMES, reason="../shared/traces is absent")
@pytest.mark.parametrize("name", NAMES)
def test_savings_per_step_stay_within_the_step_and_shares_within_100_percent(name, analyses):
    res, step_s = analyses[name]
    assert not res.failed, res.failed
    for f in res.findings:
        assert 0 <= f.share <= 1, (f.kind, f.share)
    if step_s:
        # every time saving, ranked or not, counted once: together within the step
        total = sum(f.saving_s for f in res.findings)
        assert total <= step_s * 1.001, [(f.kind, f.saving_s) for f in res.findings]


@pytest.mark.skipif(not NAMES, reason="../shared/traces is absent")
@pytest.mark.parametrize("name", NAMES)
def test_gpu_idle_claims_fit_in_the_idle_time_of_the_raw_trace(name, analyses):
    # GIVEN the GPU idle time per step, from the raw events: a step's length less the union
    # of every device activity (kernels, copies, sets) inside it
    spans = steps(name)
    if not spans:
        pytest.skip("no ProfilerSteps: savings are per capture")
    if name == "hta_sampled_2rank_nccl":
        pytest.skip("down-sampled: the gaps between kept events are not idle time")
    busy = union([(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in events(name)
                   if e.get("cat") in DEVICE_CATS])
    if not busy:
        pytest.skip("no device activity (a CPU trace)")
    idle_s = sum((b - a) - covered(a, b, busy) for a, b in spans) / len(spans) / 1e6
    res, _ = analyses[name]
    # THEN the findings that claim GPU idle time claim no more than there is
    claimed = [f for f in res.findings if f.kind.startswith(claim_kinds(GPU_IDLE))]
    assert sum(f.saving_s for f in claimed) <= idle_s * 1.001, (
        idle_s, [(f.kind, f.saving_s) for f in claimed])


@pytest.mark.skipif(not NAMES, reason="../shared/traces is absent")
@pytest.mark.parametrize("name", [n for n in NAMES if not steps(n)])
def test_on_a_trace_without_steps_the_claims_fit_in_the_captures_idle_time(name, analyses):
    # GIVEN a trace with no ProfilerStep: its savings are over the capture (or, for an idle
    # block cut at batch fetches, per iteration: times the iterations, over the capture)
    evs = events(name)
    busy = union([(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in evs
                  if e.get("cat") in DEVICE_CATS])
    res, step_s = analyses[name]
    assert step_s is None
    def in_capture(f) -> float:
        return f.saving_s * (f.data.get("iterations", 1)
                             if f.data.get("saving_per") == "iteration" else 1)
    start = min(float(e["ts"]) for e in evs)
    end = max(float(e["ts"]) + float(e["dur"]) for e in evs)
    # THEN every saving together fits in the capture, and the GPU idle claims in its idle time
    assert sum(in_capture(f) for f in res.findings) <= (end - start) / 1e6 * 1.001
    claimed = [f for f in res.findings if f.kind.startswith(claim_kinds(GPU_IDLE))]
    idle_s = ((end - start) - covered(start, end, busy)) / 1e6 if busy else 0.0
    assert sum(in_capture(f) for f in claimed) <= idle_s * 1.001, (
        idle_s, [(f.kind, in_capture(f)) for f in claimed])


@pytest.mark.skipif(not NAMES, reason="../shared/traces is absent")
@pytest.mark.parametrize("name", NAMES)
def test_communication_claims_fit_in_the_communication_of_the_raw_trace(name, analyses):
    # GIVEN the communication time per step from the raw events: NCCL kernels on a GPU,
    # gloo's annotations on a CPU job (their union: concurrent collectives count once)
    spans = steps(name)
    comm = union([(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in events(name)
                  if (e.get("cat") in DEVICE_CATS and "nccl" in str(e["name"]).lower())
                  or str(e["name"]).startswith("gloo:")])
    res, _ = analyses[name]
    claimed = [f for f in res.findings if f.kind.startswith(claim_kinds(EXPOSED_COMM))]
    if not claimed:
        return
    assert spans and comm
    comm_s = sum(covered(a, b, comm) for a, b in spans) / len(spans) / 1e6
    # THEN the communication findings (bound, poor overlap, unbucketed) claim no more of it
    assert sum(f.saving_s for f in claimed) <= comm_s * 1.001, (
        comm_s, [(f.kind, f.saving_s) for f in claimed])


@pytest.mark.skipif(not NAMES, reason="../shared/traces is absent")
def test_down_sampled_ranks_get_no_idle_or_launch_claim(analyses):
    # GIVEN HTA's 2 of 128 down-sampled ranks: gaps between kept events are not idle time
    res, _ = analyses["hta_sampled_2rank_nccl"]
    kinds = {f.kind for f in res.findings}
    # THEN neither launch-bound gaps nor the idle after host syncs nor idle blocks are claimed
    assert not kinds & {"launch.bound", "host_sync.trace", "gpu.idle_block"}, kinds
    reasons = {s["analyzer"]: s["reason"] for s in res.skipped}
    assert "down-sampled" in reasons["launch_bound"]
    assert "down-sampled" in reasons["gpu_idle"]


@pytest.mark.skipif(not NAMES, reason="../shared/traces is absent")
def test_a_saving_on_a_trace_without_steps_is_per_capture(analyses):
    # GIVEN the AlexNet benchmark trace: no ProfilerStep, 16 pageable copies
    name = "hta_a100_alexnet_small/benchmark_result_2869224_1695835535_trace.json.gz"
    assert not steps(name)
    res, step_s = analyses[name]
    assert step_s is None
    (f,) = [f for f in res.findings if f.kind == "input.pageable_copy"]
    # THEN its saving is said per capture, never per step
    assert f.data["saving_per"] == "capture"
    assert "ms/capture" in saving_text(f) and "/step" not in saving_text(f)
    # and it is the copies' launch time in the raw trace
    corr = {e["args"]["correlation"] for e in events(name)
            if "Pageable" in str(e["name"]) and "HtoD" in str(e["name"])}
    host = sum(float(e["dur"]) for e in events(name)
               if e.get("cat") == "cuda_runtime" and e.get("args", {}).get("correlation") in corr)
    assert f.saving_s == pytest.approx(host / 1e6, rel=0.01)


@pytest.mark.skipif(not NAMES, reason="../shared/traces is absent")
def test_analyzing_the_idle_block_alone_subtracts_the_same_claims(tmp_path, analyses):
    # GIVEN the A100 DDP trace, where the idle block shares idle time with syncs and launches
    name = "hta_a100_2rank_nccl_r0/nccl_data.json.gz"
    full, _ = analyses[name]
    run_dir, _ = import_traces(SETS[name], tmp_path / "run")
    # WHEN only gpu_idle is asked for
    with load(run_dir.path) as run:
        alone = analyze(run, only=("gpu_idle",), write=False)
    (f,) = alone.findings
    (g,) = [x for x in full.findings if x.kind == "gpu.idle_block"]
    # THEN it claims what it claims in the full analysis: the others' share is subtracted
    others = sum(x.saving_s for x in full.findings
                 if x.kind.startswith(("input.", "host_sync.", "launch.bound")))
    assert others > 0
    assert f.saving_s == pytest.approx(g.saving_s)
    assert f.data["claimed_elsewhere_ms"] == pytest.approx(others * 1e3)


def test_registry_order_lets_every_reader_see_every_claim():
    analyzers = [load_analyzer(e) for e in ANALYZERS]
    check_order(analyzers)  # the registry's own order passes
    names = [a.name for a in analyzers]
    for reader in analyzers:
        for r in reader.reads:
            pure = [a.name for a in analyzers if r in {x for x, _ in a.claims}
                    and r not in a.reads]
            assert all(names.index(p) < names.index(reader.name) for p in pure), (reader, r)


def test_a_reader_listed_before_a_claimer_is_refused():
    class Claimer(Analyzer):
        name = "claimer"
        claims = ((GPU_IDLE, ("x.",)),)

    class Reader(Analyzer):
        name = "reader"
        reads = (GPU_IDLE,)

    check_order([Claimer(), Reader()])
    with pytest.raises(ValueError, match="claimer claims gpu_idle but runs after reader"):
        check_order([Reader(), Claimer()])


def _finding(kind: str, saving: float, rank: int | None = None) -> Finding:
    return Finding(analyzer="t", kind=kind, key=kind, title=kind, saving_s=saving,
                   evidence=(Evidence("e", rank=rank, step=3, start_ns=10, end_ns=20),))


def test_the_ledger_sums_claims_per_resource_and_rank():
    ledger = ClaimLedger()
    ledger.record(GPU_IDLE, _finding("input.x", 0.004, rank=0))
    ledger.record(GPU_IDLE, _finding("launch.bound", 0.002, rank=1))
    ledger.record(GPU_IDLE, _finding("host_sync.x", 0.001))  # no rank: counts for every rank
    ledger.record(EXPOSED_COMM, _finding("comm.bound", 0.010, rank=0))
    ledger.record(GPU_IDLE, _finding("input.none", 0.0))  # no saving: nothing claimed
    assert ledger.claimed_s(GPU_IDLE) == pytest.approx(0.007)
    assert ledger.claimed_s(GPU_IDLE, rank=0) == pytest.approx(0.005)
    assert ledger.claimed_s(EXPOSED_COMM) == pytest.approx(0.010)
    (c,) = [c for c in ledger.by(GPU_IDLE) if c.claimed_by.startswith("input.x")]
    assert (c.rank, c.step, c.start_ns, c.end_ns) == (0, 3, 10, 20)
    with pytest.raises(ValueError):
        ledger.record("cpu_time", _finding("x", 1.0))


class _Fixed(Analyzer):
    """Claims ``saving`` of GPU idle time with one finding."""

    name = "fixed_claimer"
    claims = ((GPU_IDLE, ("input.",)),)

    def __init__(self, saving: float):
        self.saving = saving

    def run(self, ctx: Context) -> list[Finding]:
        return [_finding("input.fixed", self.saving, rank=0)]


class _Rest(Analyzer):
    """Claims what is left of 10 ms of idle time, as gpu_idle does."""

    name = "rest_reader"
    claims = ((GPU_IDLE, ("gpu.",)),)
    reads = (GPU_IDLE,)

    def run(self, ctx: Context) -> list[Finding]:
        left = 0.010 - ctx.claims.claimed_s(GPU_IDLE, 0)
        return [_finding("gpu.rest", left, rank=0)] if left > 0 else []


def _tiny_run() -> Run:
    return Run.from_tables(meta={"kind": "import"},
                           steps={"rank": [0, 0], "step": [0, 1], "start_ns": [0, 20_000_000],
                                  "dur_ns": [20_000_000, 20_000_000]})


def test_a_reader_prices_only_what_the_claimers_before_it_left():
    # GIVEN 10 ms of idle time, 4 ms of which an earlier finding claims
    res = analyze(_tiny_run(), write=False, analyzers=[_Fixed(0.004), _Rest()])
    by_kind = {f.kind: f.saving_s for f in res.findings}
    # THEN the reader claims the other 6 ms: together they claim the 10 ms once
    assert by_kind == pytest.approx({"input.fixed": 0.004, "gpu.rest": 0.006})
    # AND analyzing the reader alone still subtracts the claimer's share (run silently)
    alone = analyze(_tiny_run(), write=False, only=("rest_reader",),
                    analyzers=[_Fixed(0.004), _Rest()])
    assert [(f.kind, f.saving_s) for f in alone.findings] == [("gpu.rest", pytest.approx(0.006))]
    assert not [s for s in alone.skipped if s["analyzer"] == "fixed_claimer"]
