"""``dsprof verify``'s verdict: the paired rounds' interval and the judge's words, from the one
implementation (``dsprof.reports.paired_verdict``) that benchmarks/advice.py's judge uses too.
Arms of fixed step times; the rendering is the terminal text verify prints."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from dsprof.render.verification import render_verification, verdict
from dsprof.reports.paired_verdict import Arm, Judgement, judge
from dsprof.reports.verification import Verification

MS = 1e-3
KIND = "input.dataloader_wait"  # judged on wall time


def _run(median_ms: float, n: int = 20) -> tuple[float, ...]:
    """A quiet run: ``n`` steps within 0.02 ms of ``median_ms`` (its median)."""
    return tuple((median_ms + 0.01 * ((i % 5) - 2)) * MS for i in range(n))


def paired(base_ms: list[float], fixed_ms: list[float], predicted_ms: float) -> Judgement:
    """The verdict on rounds whose runs' medians are ``base_ms[k]`` / ``fixed_ms[k]``."""
    base = Arm(tuple(_run(m) for m in base_ms), ((),) * len(base_ms))
    fixed = Arm(tuple(_run(m) for m in fixed_ms), ((),) * len(fixed_ms))
    j = judge(KIND, True, predicted_ms * MS, base, fixed)
    assert j is not None
    return j


def verification(j: Judgement | None, base_ms: float = 50.0, predicted_ms: float = 5.0,
                 measured_ms: float | None = None) -> Verification:
    measured = base_ms - (j.measured_saving_s / MS if j else 0.0) \
        if measured_ms is None else measured_ms
    return Verification(
        baseline=Path("/runs/base"), applied=Path("/runs/base-verify"),
        findings=[{"id": "input-1a2b3c4d", "title": "Add DataLoader workers",
                   "apply": {"DS_DATALOADER_WORKERS": "4"}}],
        baseline_step_s=base_ms * MS, predicted_step_s=(base_ms - predicted_ms) * MS,
        measured_step_s=measured * MS, steps_used=(60, 60), baseline_peak=None,
        predicted_peak=None, measured_peak=None, baseline_spread_s=0.01 * MS,
        measured_spread_s=0.01 * MS, judgement=j)


def rendered(v: Verification) -> str:
    buf = io.StringIO()
    render_verification(v, Console(file=buf, width=200, color_system=None))
    return buf.getvalue()


def test_confirmed_when_the_whole_interval_is_within_25_percent():
    # GIVEN three rounds that changed the step by 5.0, 5.1 and 4.9 ms against 5 ms predicted
    j = paired([50.0] * 3, [45.0, 44.9, 45.1], 5.0)
    # THEN the change is their mean with Student's t(0.975, 2) = 4.303 x sd / sqrt(3)
    assert j.measured_saving_s == pytest.approx(5.0 * MS)
    assert j.paired_band_s == pytest.approx(4.303 * 0.1 / 3 ** 0.5 * MS, rel=1e-3)
    # AND the sentence carries the interval, the rounds and the judge's words
    said = verdict(verification(j))
    assert said == ("predicted -5.00 ms/step, measured -5.00 ms/step (95 % interval -5.25 to "
                    "-4.75 ms/step, 3 paired rounds): within 25 %, confirmed")


def test_mean_within_but_interval_wider_is_not_confirmed():
    # GIVEN rounds of 4.4, 5.6 and 5.0 ms: the mean is the prediction, the interval 3.5-6.5
    said = verdict(verification(paired([50.0] * 3, [45.6, 44.4, 45.0], 5.0)))
    assert said is not None and said.endswith(": within 25 % (interval wider)")
    assert "(95 % interval -6.49 to -3.51 ms/step, 3 paired rounds)" in said


def test_an_interval_holding_zero_is_no_measurable_change():
    # GIVEN rounds of +0.3 and -0.2 ms against a 0.05 ms prediction: mean 0.05, interval
    # holds both 0 and the prediction
    j = paired([50.0] * 2, [49.7, 50.2], 0.05)
    assert j.holds_zero and not j.slower
    said = verdict(verification(j, predicted_ms=0.05))
    assert said is not None and said.endswith(": within 25 % (interval wider); no measurable change")
    # AND against a 1 ms prediction it is "inside the noise", said with no measurable change
    j = paired([50.0] * 2, [49.7, 50.2], 1.0)
    assert j.verdict == "inside the noise" and j.holds_zero
    text = rendered(verification(j, predicted_ms=1.0))
    assert ": inside the noise, no measurable change" in text
    assert "the interval holds 0: the rounds cannot tell this change from none" in text


def test_off_and_slower_say_so():
    # GIVEN rounds that each made the step 2 ms slower, against a 5 ms saving predicted
    j = paired([50.0] * 3, [52.0, 52.1, 51.9], 5.0)
    said = verdict(verification(j))
    assert said is not None and said.startswith(
        "predicted -5.00 ms/step, measured +2.00 ms/step (95 % interval +1.75 to +2.25")
    assert said.endswith(": OFF -140%; the fix made the step slower")
    assert j.to_json()["verdict"] == "OFF -140%, SLOWER"
    # AND a change 40 % under the prediction, the prediction outside the interval, is OFF
    j = paired([50.0] * 3, [47.0, 46.9, 47.1], 5.0)
    assert verdict(verification(j)).endswith(": OFF -40%")


def test_one_round_gives_no_verdict_and_says_why():
    # GIVEN one round: a change, but no spread of changes between runs to judge it by
    j = paired([50.0], [45.0], 5.0)
    assert j.rounds == 1 and not j.paired and j.paired_band_s is None
    text = rendered(verification(j))
    # THEN the change is printed, the verdict is refused in words, and rounds are suggested
    assert ("predicted -5.00 ms/step, measured -5.00 ms/step (one round: no interval, so no "
            "verdict)") in text
    assert "--rounds 2 or more" in text
    assert "confirmed" not in text and "OFF" not in text and "paired rounds)" not in text
    # AND the JSON carries no verdict either, but the measured numbers
    data = verification(j).to_json()["paired"]
    assert data["verdict"] is None and data["rounds"] == 1
    assert data["measured_saving_s"] == pytest.approx(5.0 * MS)


def test_json_carries_the_printed_interval():
    j = paired([50.0] * 3, [45.0, 44.9, 45.1], 5.0)
    data = verification(j).to_json()["paired"]
    lo, hi = data["interval_s"]
    assert (round(-hi / MS, 2), round(-lo / MS, 2)) == (-5.25, -4.75)
    assert data["verdict"] == "within 25 %, confirmed" and data["rounds"] == 3
    assert data["metric"] == "wall" and data["predicted_saving_s"] == pytest.approx(5 * MS)


def test_verify_of_the_fused_optimizer_alone_is_judged_on_the_update(tmp_path):
    from dsprof.reports.verification import paired_judgement
    from tests.unit.test_noise import make_run

    # GIVEN three rounds of real run directories: the update 1.0 -> 0.5 ms a step, the whole
    # step's CPU 7.0 -> 6.6 ms
    def runs(arm: str, update_ms: float, cpu_ms: float) -> list[Path]:
        return [make_run(tmp_path / f"{arm}{k}", [8.0] * 20, cpu_ms=[cpu_ms] * 20,
                         optimizer_cpu_ms=[update_ms] * 20) for k in range(3)]
    base, applied = runs("b", 1.0, 7.0), runs("f", 0.5, 6.6)
    fused = {"kind": "fusion.optimizer", "saving_clock": "thread_cpu"}
    gelu = {"kind": "fusion.hand_gelu", "saving_clock": "thread_cpu"}
    j = paired_judgement([fused], 0.5 * MS, 8.0 * MS, base, applied)
    # THEN the verdict is on the update, and the printed lines say so and give the whole step
    assert j.metric == "update" and j.verdict == "within 25 %, confirmed"
    text = rendered(verification(j, base_ms=8.0, predicted_ms=0.5, measured_ms=7.6))
    assert "CPU time inside optimizer.step(), the update the fix changes" in text
    assert "the whole step's CPU time: -0.40 ms/step" in text
    # AND verified with another fix, whose saving lies outside the update, the whole step is
    # judged, whichever finding comes first
    for records in ([fused, gelu], [gelu, fused]):
        both = paired_judgement(records, 0.9 * MS, 8.0 * MS, base, applied)
        assert both.metric == "cpu" and both.whole_step is None
