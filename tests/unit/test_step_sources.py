"""Step sources beside optimizer.step(): the closure annotation, backward() as the fallback,
gradient accumulation, and compile time per step. Real torch on CPU."""

from __future__ import annotations

import logging

import torch
from torch import nn

from dsprof.collectors import steps as steps_mod
from dsprof.collectors.compile_watch import CompileWatch, compile_meta
from dsprof.collectors.device import Device
from dsprof.collectors.host_sync import HostSyncCollector
from dsprof.collectors.step_sources import BackwardWatch, ClosureMarker
from dsprof.collectors.steps import StepCollector
from dsprof.ingest.events import CLOSURE_SPAN
from dsprof.ingest.phases import own_phase
from dsprof.ingest.steps import compile_per_step, steps_from_record

CPU = Device("cpu", None, "cpu", 1 << 30, None, 2)


def _model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)), torch.randn(4, 8), \
        torch.randint(0, 2, (4,))


def test_closure_runs_inside_a_closure_span_and_returns_its_loss():
    # GIVEN the closure marker and an optimizer stepped with a closure under the profiler
    model, x, y = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    marker = ClosureMarker()
    marker.install()
    try:
        def closure():
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            loss = opt.step(closure)
            loss_kw = opt.step(closure=closure)
            opt.step()  # no closure: left alone
    finally:
        marker.uninstall()
    # THEN the optimizer got the closure's own loss back, and the span brackets each call
    assert isinstance(loss, torch.Tensor) and loss.requires_grad
    assert isinstance(loss_kw, torch.Tensor)
    names = [e.name for e in prof.events()]
    assert names.count(CLOSURE_SPAN) == 2
    assert marker.closures == 2
    # and ingest calls that span forward (its backward ops name themselves backward)
    assert own_phase(CLOSURE_SPAN) == "forward"


def test_backward_watch_sees_both_spellings_and_restores_torch():
    model, x, y = _model()
    ends: list[int] = []
    original = torch.autograd.backward
    watch = BackwardWatch(ends.append, lambda: len(ends))
    watch.install()
    try:
        nn.functional.cross_entropy(model(x), y).backward()
        torch.autograd.backward(nn.functional.cross_entropy(model(x), y))
        # (torch.autograd.grad has a watch of its own: GradWatch)
        torch.autograd.grad(model(x).sum(), list(model.parameters()))
    finally:
        watch.uninstall()
    assert watch.calls == 2 and ends == [0, 1]
    assert torch.autograd.backward is original


def test_backward_becomes_the_step_source_only_without_an_optimizer(monkeypatch):
    monkeypatch.setattr(steps_mod, "BACKWARD_DECIDE_CALLS", 5)
    told: list[int] = []
    steps = StepCollector(CPU, told.append)
    late: list[int] = []
    steps.on_late_steps = late.append
    # four backwards: kept aside, no step yet
    for _ in range(4):
        steps._backward_ended(steps.now_ns())
    assert steps.steps_done == 0 and steps.source is None
    # the fifth decides: all five are steps, the timeline hears of the last one only
    steps._backward_ended(steps.now_ns())
    assert steps.steps_done == 5 and steps.source == "backward"
    assert told == [4] and late == [4]
    # later backwards mark steps live
    steps._backward_ended(steps.now_ns())
    assert steps.steps_done == 6 and told == [4, 5]
    rec = steps.record()
    assert rec["sources"] == ["backward"] * 6
    assert rec["rss_bytes"][:4] == [None] * 4 and rec["rss_bytes"][4] is not None
    rows = steps_from_record({**rec, "windows": []}, 0)
    assert rows["source"] == ["backward"] * 6


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_the_steps_a_decision_records_after_the_fact_are_step_lines(monkeypatch):
    # GIVEN a loop with no optimizer: its first backwards are kept aside until backward() is
    # decided to end the steps, then recorded at once
    monkeypatch.setattr(steps_mod, "BACKWARD_DECIDE_CALLS", 8)
    steps = StepCollector(CPU, lambda step: None)
    logger = logging.getLogger("dsprof")
    seen, level = _Records(), logger.level
    logger.addHandler(seen)
    logger.setLevel(logging.INFO)
    try:
        for _ in range(8):
            steps._backward_ended(steps.now_ns())
    finally:
        logger.removeHandler(seen)
        logger.setLevel(level)
    # THEN each of the eight steps has its line, marked as a per-step line (kept in the
    # run's dsprof.log, off the terminal unless asked for), not a burst on the script's stderr
    lines = [r for r in seen.records if r.getMessage().startswith("step ")]
    assert len(lines) == 8
    assert all(getattr(r, "dsprof_step_line", False) for r in lines)
    # AND the decision itself is said once, as a plain line
    (said,) = [r for r in seen.records if "no optimizer step after" in r.getMessage()]
    assert not getattr(said, "dsprof_step_line", False)


def test_accumulated_backwards_are_micro_batches_when_an_optimizer_steps(monkeypatch):
    monkeypatch.setattr(steps_mod, "BACKWARD_DECIDE_CALLS", 5)
    steps = StepCollector(CPU, lambda step: None)

    class Opt:
        pass

    opt = Opt()
    for _ in range(3):  # three optimizer steps of four micro-batches each
        for _ in range(4):
            steps._backward_ended(steps.now_ns())
        steps._optimizer_stepped(opt, (), {})
    assert steps.steps_done == 3 and steps.source == "optimizer"
    steps.settle()
    assert steps.steps_done == 3
    assert steps.record()["sources"] == ["optimizer"] * 3


def test_a_short_loop_without_optimizer_gets_its_steps_at_exit():
    told: list[int] = []
    steps = StepCollector(CPU, told.append)
    for _ in range(3):
        steps._backward_ended(steps.now_ns())
    steps.settle()
    assert steps.steps_done == 3 and steps.source == "backward"
    assert told == []  # at exit the timeline keeps its whole-run capture


def _installed(steps: StepCollector) -> StepCollector:
    steps.grads.install()
    steps.backward.install()
    return steps


def _uninstall(steps: StepCollector) -> None:
    steps.backward.uninstall()
    steps.grads.uninstall()


def test_torch_autograd_grad_ends_the_steps_of_a_loop_with_no_backward(monkeypatch):
    monkeypatch.setattr(steps_mod, "BACKWARD_DECIDE_CALLS", 5)
    model, x, y = _model()
    params = list(model.parameters())
    original = torch.autograd.grad
    # GIVEN a loop that updates its parameters from torch.autograd.grad, and one from
    # torch.func.grad: no optimizer, no backward()
    steps = _installed(StepCollector(CPU, lambda step: None))
    try:
        for _ in range(4):
            grads = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), params)
            with torch.no_grad():
                for p, g in zip(params, grads):
                    p -= 0.1 * g
        values = {k: v.detach() for k, v in model.named_parameters()}
        for _ in range(3):
            g = torch.func.grad(lambda v: nn.functional.cross_entropy(
                torch.func.functional_call(model, v, (x,)), y))(values)
            values = {k: values[k] - 0.1 * g[k] for k in values}
        # AND jacobians of the old functional API, which call it once per output
        torch.autograd.functional.jacobian(lambda t: model(t).sum(1), x)
    finally:
        _uninstall(steps)
    # THEN each call ends a step, as backward() would, jacobian's calls aside
    assert steps.source == "backward" and steps.steps_done == 7
    assert steps.grads.calls == 7 and steps.backward.calls == 0
    assert torch.autograd.grad is original


def test_a_gradient_penalty_is_a_part_of_an_iteration_that_backward_ends():
    # GIVEN a WGAN-GP-like loop with no optimizer: torch.autograd.grad for the penalty, then
    # backward() of the loss with it, then a hand-written update
    model, x, y = _model()
    params = list(model.parameters())
    steps = _installed(StepCollector(CPU, lambda step: None))
    try:
        for _ in range(3):
            xi = x.clone().requires_grad_(True)
            (gx,) = torch.autograd.grad(model(xi).sum(), xi, create_graph=True)
            (nn.functional.cross_entropy(model(x), y) + gx.square().mean()).backward()
            with torch.no_grad():
                for p in params:
                    p -= 0.1 * p.grad
                    p.grad = None
        steps.settle()
    finally:
        _uninstall(steps)
    # THEN the steps are the backward() ends alone, the first iteration's penalty included
    assert steps.steps_done == 3 and steps.record()["sources"] == ["backward"] * 3
    assert steps.grads.calls == 3


def test_manual_steps_override_backward():
    steps = StepCollector(CPU, lambda step: None)
    steps._backward_ended(steps.now_ns())
    steps.manual_step()
    steps._backward_ended(steps.now_ns())
    steps.settle()
    assert steps.steps_done == 1 and steps.record()["sources"] == ["manual"]


def test_compile_time_is_charged_to_the_steps_it_fell_in():
    rec = {"used": True, "intervals": [[5, 25], [40, 41]], "total_ns": 21}
    assert compile_per_step([0, 10, 30], [10, 30, 50], rec) == [5, 15, 1]
    assert compile_per_step([0], [10], None) == [None]
    assert compile_meta(rec) == {"used": True, "compilations": 2, "total_s": 0.0,
                                 "module_hooks": "off"}
    assert compile_meta({"used": False, "intervals": []}) is None


def test_compile_watch_detects_torch_compile_before_the_first_compiled_call():
    detected: list[bool] = []
    durations: list[int] = []
    clock = iter(range(0, 10**12, 10**6))
    watch = CompileWatch(lambda: next(clock), lambda: detected.append(True), durations.append)
    original = torch.compile
    watch.install()
    try:
        assert torch.compile is not original
        compiled = torch.compile(nn.Linear(2, 2))  # wraps; compiles nothing yet
        assert detected == [True]
        assert watch.record()["used"] is True
        assert callable(compiled)
    finally:
        watch.uninstall()
    assert torch.compile is original


def test_compile_time_does_not_count_against_the_capture_cap(tmp_path):
    import time

    from dsprof.collectors.timeline import TimelineCollector
    from dsprof.settings import Settings

    # GIVEN the bootstrap capture with a 0.2 s cap, module hooks off as under torch.compile
    tl = TimelineCollector(Settings.load(env={}, max_capture_s=0.2), CPU, tmp_path)
    tl.start()
    tl.disable_module_hooks()
    assert tl._cap is not None and tl._cap._hook is None and not tl.annotator.installed
    try:
        # WHEN 0.3 s pass, 10 s of them compiling
        tl.extend_deadline(10 * 10**9)
        time.sleep(0.3)
        tl.poll_cap()
        # THEN the capture goes on
        assert tl.windows == []
        # and without the compile it is capped at the next backward()
        tl.extend_deadline(-10 * 10**9)
        tl.poll_cap()
        assert [w.capped for w in tl.windows] == [True]
    finally:
        tl.finish()


def test_restarted_schedule_opens_a_window_after_late_steps(tmp_path):
    from dsprof.collectors.timeline import TimelineCollector
    from dsprof.settings import Settings

    tl = TimelineCollector(Settings.load(env={}, wait=1, warmup=1, active=1), CPU, tmp_path)
    tl.start()
    # steps 0..63 were found after the fact (backward() became the source at step 63)
    tl.restart_schedule(63)
    for step in (63, 64, 65, 66):
        tl.on_boundary(step)
    tl.finish()
    assert [(w.kind, w.steps) for w in tl.windows] == [("window", [66])]


def test_with_two_optimizers_the_one_that_steps_last_ends_the_step():
    # GIVEN a GAN-style loop: the discriminator's optimizer steps first, then the generator's
    told: list[int] = []
    steps = StepCollector(CPU, told.append)
    d_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    g_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    order = []
    for i in range(5):
        steps._optimizer_stepped(d_opt, (), {})
        order.append(("D", i, steps.steps_done))
        steps._optimizer_stepped(g_opt, (), {})
        order.append(("G", i, steps.steps_done))
    # THEN one step per iteration, and from the second iteration on it ends at the generator's
    # update (the first boundary, before the order was known, is at the discriminator's)
    assert steps.steps_done == 5 and told == [0, 1, 2, 3, 4]
    assert order[:4] == [("D", 0, 1), ("G", 0, 1), ("D", 1, 1), ("G", 1, 2)]
    assert [n for who, _, n in order[4:] if who == "G"] == [3, 4, 5]
    assert [n for who, _, n in order[4:] if who == "D"] == [2, 3, 4]


def test_a_single_optimizer_keeps_every_boundary():
    steps = StepCollector(CPU, lambda step: None)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    for _ in range(4):
        steps._optimizer_stepped(opt, (), {})
    assert steps.steps_done == 4


def _step_spans(path) -> list[str]:
    import json

    return sorted({e["name"] for e in json.loads(path.read_text())["traceEvents"]
                   if str(e.get("name", "")).startswith("ProfilerStep#")})


def test_the_bootstrap_capture_splits_at_backward_ends_and_keeps_the_split_if_they_are_steps(
        tmp_path):
    from dsprof.collectors.timeline import TimelineCollector
    from dsprof.settings import Settings

    # GIVEN the bootstrap capture and a loop with no optimizer: 3 backward() ends, then exit,
    # where the backward ends become the run's 3 steps
    tl = TimelineCollector(Settings.load(env={}), CPU, tmp_path)
    tl.start()
    for _ in range(3):
        torch.ones(4).sum()
        tl.backward_ended()
    torch.ones(4).sum()  # the update after the last backward, then the exit
    tl.finish(backward_steps=3)
    # THEN the capture has one span per step (and one after the last), the window lists the
    # steps
    (w,) = tl.windows
    assert (w.kind, w.steps) == ("unstepped", [0, 1, 2])
    assert _step_spans(tmp_path / w.file) == [f"ProfilerStep#{k}" for k in range(4)]


def test_a_capture_capped_before_an_optimizer_took_over_is_step_0_again(tmp_path):
    import time

    from dsprof.collectors.timeline import TimelineCollector
    from dsprof.settings import Settings

    # GIVEN the bootstrap capture, capped after 2 backward() ends (gradient accumulation)
    tl = TimelineCollector(Settings.load(env={}, max_capture_s=0.05), CPU, tmp_path)
    tl.start()
    tl.backward_ended()
    tl.backward_ended()
    time.sleep(0.1)
    tl.poll_cap()
    (w,) = tl.windows
    assert w.capped and w.steps == [0, 1, 2]
    assert len(_step_spans(tmp_path / w.file)) == 3
    # WHEN an optimizer marks the steps after all
    tl.on_boundary(0)
    tl.finish(backward_steps=0)
    # THEN the saved capture is step 0, as the steps are numbered
    assert w.steps == [0] and _step_spans(tmp_path / w.file) == ["ProfilerStep#0"]


def test_a_first_optimizer_that_steps_several_times_leaves_its_split_steps_out():
    # GIVEN a WGAN-GP loop: the critic's optimizer steps 5 times, then the generator's once
    steps = StepCollector(CPU, lambda step: None)
    d_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    g_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    for _ in range(12):
        for _ in range(5):
            steps._optimizer_stepped(d_opt, (), {})
        steps._optimizer_stepped(g_opt, (), {})
    # THEN the first iteration was split at each critic step (steps 0-4), step 5 holds the
    # rest of it and the second iteration, and the generator ends every step after that
    assert steps.steps_done == 5 + 11 and steps.leader.handover_step == 5
    cols = steps_from_record(steps.record(), 0, {"settings": {}, "env": {}})
    # AND none of those is a steady step: one critic step each is no iteration
    assert cols["disturbed_by"][:6] == ["setup", "first_call"] + ["split_iteration"] * 4
    assert cols["disturbed_by"][6:] == [None] * 10


def test_a_gan_stepping_each_optimizer_once_loses_no_steady_step():
    steps = StepCollector(CPU, lambda step: None)
    d_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    g_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    for _ in range(6):
        steps._optimizer_stepped(d_opt, (), {})
        steps._optimizer_stepped(g_opt, (), {})
    cols = steps_from_record(steps.record(), 0, {"settings": {}, "env": {}})
    assert cols["disturbed_by"][:2] == ["setup", "first_call"]
    assert cols["disturbed_by"][2:] == [None] * (steps.steps_done - 2)


def test_a_new_optimizer_takes_over_when_the_first_one_stops_stepping():
    # GIVEN an LR range test whose optimizer the script keeps alive, then training with a new
    # optimizer (OneCycleLR): the first one never steps again
    steps = StepCollector(CPU, lambda step: None)
    finder_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    train_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    for _ in range(47):
        steps._optimizer_stepped(finder_opt, (), {})
    for _ in range(60):
        steps._optimizer_stepped(train_opt, (), {})
    # THEN every training step is a step (none of the 60 was; they were read as a GAN's
    # second optimizer waiting for the first to step again)
    assert steps.steps_done == 47 + 60
    assert len(steps.record()["boundaries_ns"]) == 107
    # AND the training is a loop of its own from its first step (other parameters here)
    assert steps.loop_starts == [47]
    assert finder_opt is not None  # alive to the end, as in the script


def test_a_new_optimizer_starts_a_loop_unless_it_replaces_its_like_over_the_same_parameters():
    import gc

    steps = StepCollector(CPU, lambda step: None)
    model = nn.Linear(4, 4)

    def run(opt, n=3):
        for _ in range(n):
            steps._optimizer_stepped(opt, (), {})

    # GIVEN a script that builds its SGD anew each epoch (a hand-made LR decay)
    for epoch in range(3):
        run(torch.optim.SGD(model.parameters(), lr=0.1 / (epoch + 1)))
        gc.collect()
    # THEN that is one loop
    assert steps.loop_starts == []
    # WHEN an Adam takes the same parameters over (fine-tuning with another optimizer), an
    # Adam only the bias (a head fine-tuned alone), and a sweep's next model gets an SGD
    run(torch.optim.Adam(model.parameters()))
    gc.collect()
    run(torch.optim.Adam([model.bias]))
    gc.collect()
    model = nn.Linear(4, 4)
    gc.collect()
    run(torch.optim.SGD(model.parameters(), lr=0.1))
    # THEN each is a loop of its own
    assert steps.loop_starts == [9, 12, 15] and steps.steps_done == 18


def test_a_critic_that_steps_100_times_an_iteration_does_not_take_over():
    # GIVEN the reference WGAN's first iterations: 100 critic steps per generator step
    steps = StepCollector(CPU, lambda step: None)
    d_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    g_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    for _ in range(4):
        for _ in range(100):
            steps._optimizer_stepped(d_opt, (), {})
        steps._optimizer_stepped(g_opt, (), {})
    # THEN after the first iteration (one step per critic step, before the order was known)
    # the generator ends each step: the critic led before, so its long runs are iterations
    assert steps.leader.handover_step == 100
    assert steps.steps_done == 100 + 3


def _syncs_of(steps: StepCollector) -> HostSyncCollector:
    return HostSyncCollector(lambda: steps.last_end_ns, steps.step_at)


def test_reads_among_backward_ends_kept_aside_are_keyed_as_the_steps_were_split():
    # GIVEN a short hand-update loop (ends kept aside, settled at exit) that reads its loss
    # after each backward(), keyed as a dsprof run keys it
    model, x, y = _model()
    steps = _installed(StepCollector(CPU, lambda step: None))
    syncs = _syncs_of(steps)
    syncs.install()
    try:
        for _ in range(5):
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.1 * p.grad
                    p.grad = None
            loss.item()
        steps.settle()
    finally:
        syncs.uninstall()
        _uninstall(steps)
    # THEN each read is in the step after its backward(), one a step (all were step 0)
    assert steps.steps_done == 5
    assert [(r[0], r[5]) for r in syncs.rows() if r[1] == "item"] == [(k, 1) for k in
                                                                      range(1, 6)]


def test_reads_between_micro_batches_stay_in_their_optimizer_step():
    # GIVEN gradient accumulation (two backward() per optimizer step), a read after each
    model, x, y = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = StepCollector(CPU, lambda step: None)
    steps.install()
    syncs = _syncs_of(steps)
    syncs.install()
    try:
        for _ in range(3):
            for _ in range(2):
                loss = nn.functional.cross_entropy(model(x), y) / 2
                loss.backward()
                loss.item()
            opt.step()
            opt.zero_grad()
        steps.settle()
    finally:
        syncs.uninstall()
        steps.uninstall()
    # THEN the backward ends were micro-batches, not steps: two reads in each step
    assert steps.steps_done == 3
    assert [(r[0], r[5]) for r in syncs.rows() if r[1] == "item"] == [(0, 2), (1, 2), (2, 2)]
