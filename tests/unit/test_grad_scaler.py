"""GradScaler monitoring with no code change: loss scale and skipped steps per step, the
boundaries of skipped steps, and the grad_scaler analyzer's findings (real CPU GradScaler)."""

from __future__ import annotations

import torch
from torch import nn

import dsprof
from dsprof.analyzers.registry import read_findings
from dsprof.collectors.device import detect
from dsprof.collectors.steps import StepCollector


def amp_loop(steps: int, bad: set[int], init_scale: float) -> torch.amp.GradScaler:
    torch.manual_seed(0)
    model = nn.Linear(8, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    for step in range(steps):
        x = torch.randn(4, 8)
        if step in bad:
            x[0, 0] = float("inf")  # inf gradients: the scaler skips opt.step()
        scaler.scale(model(x).pow(2).mean()).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
    return scaler


def test_scale_history_and_skipped_steps_become_steps_columns(tmp_path):
    # GIVEN an unmodified AMP loop whose batches 6, 8 and 9 hold an inf
    with dsprof.profile(tmp_path / "run", schedule=dsprof.schedule(wait=1, active=1),
                        quiet=True) as prof:
        scaler = amp_loop(12, {6, 8, 9}, init_scale=2.0**20)
    rows = prof.run.sql("SELECT step, loss_scale, skipped FROM steps ORDER BY step")
    # THEN skipped steps still count as steps (no optimizer hook fired for them) and the scale
    # halves at each, as the scaler itself reports
    assert [r[0] for r in rows] == list(range(12))
    assert [r[0] for r in rows if r[2]] == [6, 8, 9]
    assert rows[5][1] == 2.0**20 and rows[6][1] == 2.0**19 and rows[9][1] == 2.0**17
    assert rows[-1][1] == scaler.get_scale()
    # AND the analyzer reports the repeated skips with their share of the time
    found = {f.kind: f for f in read_findings(prof.run).findings}
    skipped = found["amp.skipped_steps"]
    assert skipped.title.startswith("GradScaler skipped 3 of 12")
    assert skipped.saving_s > 0 and [e.step for e in skipped.evidence] == [6, 8, 9]
    assert "amp.scale_collapse" not in found
    # AND the monitor is gone after the session
    assert torch.amp.GradScaler.update.__module__ == "torch.amp.grad_scaler"


def test_collapsing_scale_is_a_finding(tmp_path):
    # GIVEN a loop that overflows on every step from step 3 on
    with dsprof.profile(tmp_path / "run", quiet=True) as prof:
        amp_loop(15, set(range(3, 15)), init_scale=16.0)
    found = {f.kind: f for f in read_findings(prof.run).findings}
    collapse = found["amp.scale_collapse"]
    assert collapse.title == "Loss scale collapsed from 16 to 0.00390625 on rank 0"
    assert found["amp.skipped_steps"].data["skipped_steps"] == list(range(3, 15))


def test_with_manual_steps_the_update_belongs_to_the_step_in_progress():
    steps = StepCollector(detect(), lambda step: None)
    steps.manual_step()                 # step 0 ends
    steps.scaler_update(8.0, True)      # during step 1
    steps.manual_step()                 # step 1 ends
    rec = steps.record()
    assert rec["loss_scale"] == [None, 8.0] and rec["skipped"] == [None, True]
    assert len(rec["boundaries_ns"]) == 2  # a skipped update marks no boundary by hand


def fp16_loop(steps: int, **scaler_args) -> None:
    """fp16 autocast on CPU: gradients overflow float16 above the scale the model allows."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", **scaler_args)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(32, 128, generator=g), torch.randint(0, 10, (32,), generator=g)
        with torch.autocast("cpu", dtype=torch.float16):
            loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()


def test_a_high_initial_scale_that_settles_is_no_collapse(tmp_path):
    # GIVEN Megatron-LM's initial scale, 2**32: the scaler halves it for a dozen steps, then
    # holds (it read as "collapsed from 2.1e9 to 262144: the model produces non-finite values")
    with dsprof.profile(tmp_path / "run", quiet=True) as prof:
        fp16_loop(40, init_scale=2.0**32)
    scales = [r[0] for r in prof.run.sql("SELECT loss_scale FROM steps ORDER BY step")]
    assert scales[0] < 2.0**32 and scales[-1] <= 2.0**20  # it calibrated down
    # THEN neither a collapse nor repeated skips
    kinds = {f.kind for f in read_findings(prof.run).findings}
    assert "amp.scale_collapse" not in kinds and "amp.skipped_steps" not in kinds


def test_growth_probes_are_the_scalers_not_float16s_range(tmp_path):
    # GIVEN a scaler that grows its scale every 10 good steps, past what the gradients allow
    with dsprof.profile(tmp_path / "run", quiet=True) as prof:
        fp16_loop(80, init_scale=2.0**40, growth_interval=10)
    found = {f.kind: f for f in read_findings(prof.run).findings}
    # THEN the late skips are its growth probes, and the fix is its growth_interval
    skipped = found["amp.skipped_steps"]
    assert "growth probes" in skipped.title and skipped.data["probes"]
    assert "growth_interval=2000" in skipped.fix and "bfloat16" not in skipped.fix
    assert "float16's range" in skipped.explanation  # (says it is not that)
    assert "amp.scale_collapse" not in found


def test_a_scale_that_settles_after_the_first_updates_is_no_repeated_overflow(tmp_path):
    # GIVEN SGD at lr 0.7 under fp16 autocast with the default scaler: step 0 (the weights as
    # initialised) holds 65536, the first updates' gradients overflow it twice (-> 16384),
    # and then no step overflows
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                          nn.Linear(512, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.7, momentum=0.9)
    x, y = torch.randn(4096, 128) * 3, torch.randint(0, 10, (4096,))
    with dsprof.profile(tmp_path / "run", quiet=True) as prof:
        scaler = torch.amp.GradScaler("cpu")
        for step in range(40):
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.float16):
                loss = nn.functional.cross_entropy(model(x[step * 64:][:64]),
                                                   y[step * 64:][:64])
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    rows = prof.run.sql("SELECT step, loss_scale, skipped FROM steps ORDER BY step")
    assert [r[0] for r in rows if r[2]] == [1, 2] and rows[-1][1] == 16384.0
    # THEN no finding: the scaler calibrated (it read as "skipped 2 of 200 ... Repeated
    # overflow means some values exceed float16's range", fixed by bf16)
    kinds = {f.kind for f in read_findings(prof.run).findings}
    assert "amp.skipped_steps" not in kinds and "amp.scale_collapse" not in kinds


def test_skips_after_the_scale_held_still_count_and_say_the_saving_as_the_title():
    from dsprof.analyzers.grad_scaler import SETTLED_RUN, LossScaling
    from dsprof.analyzers.registry import Context
    from tests.unit.test_analyzers_synthetic import _scales

    def found(skipped: list[bool]):
        scales, scale = [], 65536.0
        for s in skipped:
            scale = scale / 2 if s else scale
            scales.append(scale)
        ctx = Context(_scales(skipped, scales))
        return [f for f in LossScaling().run(ctx) if f.kind == "amp.skipped_steps"]

    # GIVEN skips after the scale held for SETTLED_RUN good steps: THEN found
    (late,) = found([False] * SETTLED_RUN + [True, False] * 3 + [False] * 20)
    assert late.title.startswith("GradScaler skipped 3 of")
    # AND the explanation's time per step is the saving as the title states it (3 digits:
    # "saves 0.0666 ms/step" stood beside "about 0.1 ms per step")
    assert f"about {late.saving_s * 1e3:.3g} ms" in late.explanation
    # AND the same two skips after a single good step, then only good ones: calibration
    assert found([False, True, True] + [False] * 30) == []
    # AND a run that never holds SETTLED_RUN good steps counts from its first good step
    assert found([False, True, False, True] + [False] * (SETTLED_RUN - 1))
