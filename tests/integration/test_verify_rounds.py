"""``dsprof verify --rounds N`` for real: paired rounds of a tiny example, judged with the
paired interval (``reports.paired_verdict``, the judge's own function)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dsprof.reports.verification import compare
from tests.integration.helpers import REPO, analyzed_here
from tests.integration.helpers import dsprof as run_dsprof

pytestmark = [pytest.mark.slow, pytest.mark.timed_runs]

ARGS = ("--steps", "12", "--batch-size", "256", "--width", "64")
WINDOW = ("--wait", "1", "--warmup", "1", "--active", "2")
VERDICTS = ("within 25 %, confirmed", "within 25 % (interval wider)", "inside the noise",
            "OFF ")
WIDE = {"COLUMNS": "200"}  # one sentence a line, as on a wide terminal


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("verify-rounds") / "mlp"
    res = run_dsprof("run", "-q", "--no-analyze", "-o", str(out), *WINDOW,
                     str(REPO / "examples" / "fusion_mlp.py"), *ARGS)
    assert res.code == 0, res.stderr
    found = analyzed_here(out)["findings"]
    gelu = next(f for f in found if f["kind"] == "fusion.hand_gelu")
    return out, gelu["id"]


def test_two_rounds_print_the_paired_interval_and_a_verdict(baseline, tmp_path):
    base, fid = baseline
    out = tmp_path / "v"
    # WHEN the GELU swap is verified in two paired rounds
    res = run_dsprof("verify", str(base), fid, "--rounds", "2", "-o", str(out), env=WIDE,
                     timeout=600)
    assert res.code == 0, res.stderr
    # THEN the rounds ran alternately, baseline k before fix k
    assert re.findall(r"round (\d)/2: the script (without|with)", res.stderr) == [
        ("1", "without"), ("1", "with"), ("2", "without"), ("2", "with")]
    # AND the change is printed with its 95 % interval over the 2 paired rounds, and a verdict
    # in the judge's words
    line = next(ln for ln in res.stdout.splitlines() if "paired rounds" in ln)
    m = re.match(r"predicted (-[\d.]+) ms/step, measured ([-+][\d.]+) ms/step \(95 % interval "
                 r"([-+][\d.]+) to ([-+][\d.]+) ms/step, 2 paired rounds\): (.+)$", line)
    assert m, line
    predicted, measured, lo, hi = (float(m.group(i)) for i in range(1, 5))
    assert lo <= measured <= hi and predicted < 0
    assert m.group(5).startswith(VERDICTS)
    # (a bound printed as +-0.00 may lie either side of zero: the print has 2 decimals)
    if min(abs(lo), abs(hi)) >= 0.01:
        assert ("no measurable change" in m.group(5)) == (lo <= 0 <= hi)
    # AND each arm's spread and the step band are still printed
    assert "spread (robust sd)" in res.stdout and "step noise band ±" in res.stdout
    # AND the JSON of the same runs carries the numbers printed
    v = compare([out.with_name(f"v-r{k}") for k in range(2)],
                [out.with_name(f"v-r{k}-baseline") for k in range(2)])
    data = v.to_json()["paired"]
    assert data["rounds"] == 2 and data["paired"] and m.group(5).startswith(data["verdict"])
    assert round(-data["measured_saving_s"] * 1e3, 2) == measured
    assert round(-data["interval_s"][1] * 1e3, 2) == lo
    assert round(-data["interval_s"][0] * 1e3, 2) == hi
    assert round(-data["predicted_saving_s"] * 1e3, 2) == predicted


def test_one_round_says_there_is_no_verdict(baseline, tmp_path):
    base, fid = baseline
    res = run_dsprof("verify", str(base), fid, "--fresh-baseline", "--json", "-o",
                     str(tmp_path / "v1"), timeout=600)
    assert res.code == 0, res.stderr
    data = json.loads(res.stdout)
    # THEN the one round's change is measured, with no interval of its own and no verdict
    assert data["paired"]["rounds"] == 1 and data["paired"]["verdict"] is None
    assert data["paired"]["paired_band_s"] is None and data["paired"]["measured_saving_s"]
    # AND in words: no verdict, and how to get one
    text = run_dsprof("verify", str(base), fid, "-o", str(tmp_path / "v1b"), env=WIDE,
                      timeout=600)
    assert text.code == 0, text.stderr
    assert "(one round: no interval, so no verdict)" in text.stdout
    assert "--rounds 2 or more pairs baseline and fix runs" in text.stdout
