"""benchmarks/advice_passes.py: the judge's rounds spread over passes, its state kept on disk
between the child processes of benchmarks/advice.py.

``measure`` stands in for ``dsprof verify`` (whose runs take tens of seconds each): it returns
the arms of quiet runs about chosen medians, as tests/unit/test_advice_judge.py builds them, and
records where it was asked to write. Everything else (the state files, the verdicts, the rows)
is the real code."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from benchmarks.advice_judge import Arm
from benchmarks.advice_passes import (
    Measured,
    case_dir,
    cut_short,
    first_pass,
    later_pass,
    load_pending,
)
from tests.unit.test_advice_judge import MS, _rounds

CASE = "corpus:gan"
RANKED = {"kind": "fusion.optimizer", "id": "fusion-0000abcd", "title": "Use Adam(fused=True)",
          "severity": "low", "data": {"saving_clock": "thread_cpu"}}
UNRANKED = {"kind": "fusion.hand_gelu", "id": "fusion-0000beef", "title": "Swap the GELU",
            "severity": "info", "data": {"saving_clock": "thread_cpu", "impact_unknown": "x"}}


class FakeVerify:
    """Each call returns the next rounds of (baseline ms, fix ms) medians."""

    def __init__(self, *calls: list[tuple[float, float]], predicted_ms: float = 0.4):
        self.calls = list(calls)
        self.asked: list[tuple[Path, str, Path, int]] = []
        self.predicted_s = predicted_ms * MS

    def __call__(self, base: Path, f: dict, out: Path, rounds: int) -> Measured:
        self.asked.append((base, f["id"], out, rounds))
        medians = self.calls.pop(0)
        assert len(medians) == rounds
        b, fx = _rounds([m[0] for m in medians], [m[1] for m in medians])
        return Measured(self.predicted_s, Arm(b.wall_runs, b.wall_runs),
                        Arm(fx.wall_runs, fx.wall_runs))


def first(*args) -> list[dict]:
    """first_pass's emitted rows."""
    rows: list[dict] = []
    first_pass(*args, rows.append)
    return rows


def later(*args) -> list[dict]:
    """later_pass's emitted rows."""
    rows: list[dict] = []
    later_pass(*args, rows.append)
    return rows


def _row(p, j, cut):
    return {"id": p.finding["id"], "verdict": j.verdict if j else None, "rounds": p.rounds,
            "round_pass": list(p.round_pass), "cut_short": cut}


def _baseline(work: Path) -> Path:
    base = case_dir(work, CASE) / "baseline"
    base.mkdir(parents=True)
    (base / "findings.json").write_text("{}")
    return base


def test_a_ranked_verdict_gets_its_deciding_round_in_a_later_pass(tmp_path):
    base = _baseline(tmp_path)
    # GIVEN two rounds in pass 0 that agree with the prediction (one degree of freedom)
    verify = FakeVerify([(20.4, 20.0), (20.4, 20.0)], [(20.4, 20.0)])
    rows = first(CASE, [RANKED], base, 2, 6, tmp_path, verify, _row)
    # THEN no verdict yet: the finding waits on disk, with its baseline, for the next pass
    assert rows == [] and base.is_dir()
    (p,) = load_pending(tmp_path, CASE)
    assert p.rounds == 2 and p.round_pass == [0, 0] and p.predicted_s == pytest.approx(0.4 * MS)
    # WHEN pass 1 (another process: only the files carry over) runs its one round
    rows = later(CASE, 1, 6, tmp_path, verify, _row)
    # THEN the verdict stands on three rounds from two passes, measured against the same
    # baseline into a folder of that pass, and the case's folder is gone
    assert rows == [{"id": RANKED["id"], "verdict": "within 25 %, confirmed", "rounds": 3,
                     "round_pass": [0, 0, 1], "cut_short": False}]
    assert [(a[0], a[3]) for a in verify.asked] == [(base, 2), (base, 1)]
    assert verify.asked[0][2].name.endswith("pass0") and verify.asked[1][2].name.endswith("pass1")
    assert not case_dir(tmp_path, CASE).exists()


def test_an_unranked_finding_is_settled_in_the_first_pass(tmp_path):
    base = _baseline(tmp_path)
    verify = FakeVerify([(20.4, 20.3), (20.4, 19.7)])
    rows = first(CASE, [UNRANKED], base, 2, 6, tmp_path, verify, _row)
    assert [r["verdict"] for r in rows] == ["outside the ranked list"]
    assert rows[0]["round_pass"] == [0, 0]
    assert load_pending(tmp_path, CASE) == [] and not case_dir(tmp_path, CASE).exists()


def test_only_the_findings_still_undecided_wait_and_the_baseline_stays_for_them(tmp_path):
    base = _baseline(tmp_path)
    verify = FakeVerify([(20.4, 20.0), (20.4, 20.0)], [(20.4, 20.3), (20.4, 19.7)])
    rows = first(CASE, [RANKED, UNRANKED], base, 2, 6, tmp_path, verify, _row)
    assert [r["id"] for r in rows] == [UNRANKED["id"]]
    assert [p.finding["id"] for p in load_pending(tmp_path, CASE)] == [RANKED["id"]]
    assert base.is_dir()


def test_an_undecided_verdict_gets_a_round_a_pass_up_to_the_last(tmp_path):
    base = _baseline(tmp_path)
    # GIVEN rounds that swing about 0.4 ms by more than the 25 % band
    swings = [(20.4, 20.3), (20.4, 19.7), (20.4, 20.3), (20.4, 19.7)]
    verify = FakeVerify(swings[:2], *([s] for s in swings[2:]))
    assert first(CASE, [RANKED], base, 2, 4, tmp_path, verify, _row) == []
    assert later(CASE, 1, 4, tmp_path, verify, _row) == []
    (row,) = later(CASE, 2, 4, tmp_path, verify, _row)
    # THEN the last round (4 of 4) gives the verdict a last round gives, after three passes
    assert row["round_pass"] == [0, 0, 1, 2] and not row["cut_short"]
    assert row["verdict"] == "within 25 % (interval wider)"
    assert not case_dir(tmp_path, CASE).exists()


def test_a_judge_stopped_early_reports_its_pending_findings_cut_short(tmp_path):
    base = _baseline(tmp_path)
    verify = FakeVerify([(20.4, 20.0), (20.4, 20.0)])
    first(CASE, [RANKED], base, 2, 6, tmp_path, verify, _row)
    (row,) = cut_short(tmp_path, CASE, _row)
    assert row["cut_short"] and row["rounds"] == 2
    assert row["verdict"] == "within 25 %, confirmed"  # a last round's verdict on two rounds
    assert not case_dir(tmp_path, CASE).exists() and cut_short(tmp_path, CASE, _row) == []


def test_the_passes_go_on_only_for_cases_with_a_verdict_pending(tmp_path, monkeypatch, capsys):
    from benchmarks import advice

    cases = [advice.Case(n, Path("x.py"), ()) for n in ("a", "b", "c")]
    calls: list[tuple[str, int]] = []
    verify = FakeVerify(*([(20.4, 20.0)] for _ in range(8)))

    def child(case, pass_no, args, work, rows_file):
        # a: undecided until its third round; b: nothing to judge; c: fails in pass 0
        calls.append((case.name, pass_no))
        if case.name == "c":
            return "FAILED (exit 1)"
        if case.name == "a":
            if pass_no == 0:
                base = case_dir(work, "a") / "baseline"
                base.mkdir(parents=True)
                verify.calls[0] = [(20.4, 20.0), (20.4, 20.0)]
                first("a", [RANKED], base, 2, 6, work, verify, _row)
            else:
                later("a", pass_no, 6, work, verify, _row)
        return None

    monkeypatch.setattr(advice, "run_case_process", child)
    args = argparse.Namespace(rounds=2, max_rounds=6, timeout=10.0)
    problems: dict[str, str] = {}
    elapsed: dict[str, float] = {}
    rows_file = tmp_path / "rows.jsonl"
    rows_file.touch()
    work = tmp_path / "work"
    work.mkdir()
    advice.run_passes(cases, args, work, rows_file, problems, elapsed)
    assert calls == [("a", 0), ("b", 0), ("c", 0), ("a", 1)]
    assert problems == {"c": "FAILED (exit 1)"} and set(elapsed) == {"a", "b", "c"}
    out = capsys.readouterr().out
    assert "a: fusion.optimizer: 2 rounds, undecided: one more in pass 1" in out
    assert "pass 1: 1 case(s) with a verdict pending" in out


def test_a_case_killed_mid_pass_keeps_the_verdicts_it_settled(tmp_path):
    base = _baseline(tmp_path)
    verify = FakeVerify([(20.4, 20.3), (20.4, 19.7)])  # one call only: the second raises
    rows: list[dict] = []
    with pytest.raises(IndexError):
        first_pass(CASE, [UNRANKED, RANKED], base, 2, 6, tmp_path, verify, _row, rows.append)
    assert [r["id"] for r in rows] == [UNRANKED["id"]]
