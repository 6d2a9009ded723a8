"""The judge's rounds spread over its whole run (benchmarks/advice.py), not run back to back.

Why: the measured change of a small CPU saving moves between sittings of this machine by more
than its rounds' spread within one sitting. hf_t5's fused AdamW measured -2.29, +2.69 and 2.15
ms in three whole tables, each interval narrow and none overlapping the others; vit's 0.99 and
1.62. Rounds run one after the other see a few minutes of the machine, and their band says
nothing about the next few. So a finding's first ``--rounds`` rounds run with its case (pass
0), and every further round (a ranked verdict still undecided, or decided on fewer than
``MIN_DECIDING_ROUNDS``) runs in a later pass over all the cases: pass ``p`` runs one more
round of each finding that still needs one, after every other case's pass ``p - 1``. A ranked
finding's third round is thus at least one case's work, and usually many minutes, after its
first two, and its paired band holds the drift between them. The table gives the mean change
of each pass beside the pooled one, so a sitting that disagrees is seen, not averaged away
unseen.

State between passes is data on disk, one ``pending.json`` per case (the finding, verify's
prediction, each arm's steady steps per round and the pass of each round), beside the case's
baseline run, which later rounds rerun; a case's folder goes once nothing of it is pending.
Nothing here needs a GPU or a dsprof run: ``measure`` is given (advice.py's runs ``dsprof
verify``), so tests drive the passes with recorded arms.
"""

from __future__ import annotations

import json
import shutil
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.advice_judge import Arm, Judgement, judge, needs_more_rounds

STATE = "pending.json"


@dataclass(frozen=True)
class Measured:
    """What one call of verify gave: its predicted saving (full-speed seconds, None when it
    predicted none) and the two arms of the rounds it ran."""

    predicted_s: float | None
    base: Arm
    fixed: Arm


# measure(baseline run, finding, output folder, rounds)
Measure = Callable[[Path, dict, Path, int], Measured]


@dataclass
class Pending:
    """A finding whose verdict waits for a later pass."""

    case: str
    seq: int  # its place among the case's auto-applicable findings (the table's order)
    finding: dict  # its findings.json record
    predicted_s: float | None
    base_wall: list[list[float]]
    base_cpu: list[list[float]]
    fixed_wall: list[list[float]]
    fixed_cpu: list[list[float]]
    round_pass: list[int] = field(default_factory=list)  # the pass of each round
    # per round, the steady steps' CPU time inside optimizer.step() (empty: none recorded)
    base_update: list[list[float]] = field(default_factory=list)
    fixed_update: list[list[float]] = field(default_factory=list)

    @property
    def arms(self) -> tuple[Arm, Arm]:
        def arm(wall: list[list[float]], cpu: list[list[float]],
                update: list[list[float]]) -> Arm:
            return Arm(tuple(tuple(r) for r in wall), tuple(tuple(r) for r in cpu),
                       tuple(tuple(r) for r in update))
        return (arm(self.base_wall, self.base_cpu, self.base_update),
                arm(self.fixed_wall, self.fixed_cpu, self.fixed_update))

    @property
    def rounds(self) -> int:
        return len(self.round_pass)

    def add(self, m: Measured, pass_no: int) -> None:
        self.base_wall += [list(r) for r in m.base.wall_runs]
        self.base_cpu += [list(r) for r in m.base.cpu_runs]
        self.fixed_wall += [list(r) for r in m.fixed.wall_runs]
        self.fixed_cpu += [list(r) for r in m.fixed.cpu_runs]
        self.base_update += [list(r) for r in m.base.update_runs]
        self.fixed_update += [list(r) for r in m.fixed.update_runs]
        self.round_pass += [pass_no] * len(m.base.wall_runs)


def case_dir(work: Path, case: str) -> Path:
    return work / case.replace(":", "-").replace("/", "-")


def load_pending(work: Path, case: str) -> list[Pending]:
    path = case_dir(work, case) / STATE
    if not path.is_file():
        return []
    return [Pending(**item) for item in json.loads(path.read_text())]


def save_pending(work: Path, case: str, items: list[Pending]) -> None:
    folder = case_dir(work, case)
    if not items:
        shutil.rmtree(folder, ignore_errors=True)  # the baseline run is no longer needed
        return
    tmp = folder / (STATE + ".tmp")
    tmp.write_text(json.dumps([asdict(p) for p in items]))
    tmp.replace(folder / STATE)  # a pass cut off mid-write leaves the last whole state


def judgement(p: Pending, last_round: bool) -> Judgement | None:
    """advice_judge's verdict on the rounds of ``p`` so far."""
    f = p.finding
    base, fixed = p.arms
    return judge(f["kind"], f["severity"] != "info", p.predicted_s or 0.0, base, fixed,
                 saving_clock=(f.get("data") or {}).get("saving_clock"),
                 last_round=last_round)


def pass_changes_s(p: Pending, metric: str) -> list[float]:
    """Per pass, in pass order: the mean over its rounds of (median step of baseline ``k`` -
    that of fix ``k``) in ``metric``'s time; a round with no steady step in an arm is left
    out, as the paired change leaves it out."""
    base, fixed = p.arms
    by_pass: dict[int, list[float]] = {}
    for k, (b, f) in enumerate(zip(base.runs(metric), fixed.runs(metric), strict=True)):
        if b and f:
            by_pass.setdefault(p.round_pass[k], []).append(
                statistics.median(b) - statistics.median(f))
    return [statistics.fmean(by_pass[k]) for k in sorted(by_pass)]


Row = Callable[[Pending, Judgement | None, bool], dict]
# called with each row as its verdict stands: a case killed later in the pass keeps it
Emit = Callable[[dict], None]


def _settle(p: Pending, max_rounds: int, row: Row, emit: Emit,
            pending: list[Pending]) -> None:
    """``p``'s row when its verdict stands, else ``p`` kept for the next pass."""
    j = judgement(p, last_round=p.rounds >= max_rounds)
    if needs_more_rounds(j, p.rounds, max_rounds):
        pending.append(p)
    else:
        emit(row(p, j, False))


def first_pass(case: str, applicable: list[dict], base: Path, rounds: int, max_rounds: int,
               work: Path, measure: Measure, row: Row, emit: Emit) -> None:
    """Pass 0 of a case whose baseline run is ``base``: ``rounds`` rounds of each finding in
    ``applicable``. Each row whose verdict stands is emitted; the rest are saved for later
    passes (after each finding, so a case cut off keeps what it measured)."""
    pending: list[Pending] = []
    for seq, f in enumerate(applicable):
        m = measure(base, f, case_dir(work, case) / f"{f['id']}-pass0", rounds)
        p = Pending(case, seq, f, m.predicted_s, [], [], [], [])
        p.add(m, 0)
        _settle(p, max_rounds, row, emit, pending)
        if pending:  # (saving none would remove the baseline the next findings rerun)
            save_pending(work, case, pending)
    if not pending:
        save_pending(work, case, [])


def later_pass(case: str, pass_no: int, max_rounds: int, work: Path, measure: Measure,
               row: Row, emit: Emit) -> None:
    """Pass ``pass_no`` (1 on) of a case: one more round of each finding still pending. Each
    row whose verdict now stands is emitted, then dropped from the saved state."""
    waiting = load_pending(work, case)
    pending: list[Pending] = []
    base = case_dir(work, case) / "baseline"
    for i, p in enumerate(waiting):
        p.add(measure(base, p.finding, case_dir(work, case) / f"{p.finding['id']}-pass{pass_no}",
                      1), pass_no)
        _settle(p, max_rounds, row, emit, pending)
        save_pending(work, case, pending + waiting[i + 1:])


def cut_short(work: Path, case: str, row: Row) -> list[dict]:
    """The rows of a case's findings still pending when the judge stops (interrupted, the
    case timed out, or no pass is left): their verdict on the rounds they have, as a last
    round's, marked cut short. The case's folder is removed."""
    rows = [row(p, judgement(p, last_round=True), True) for p in load_pending(work, case)]
    save_pending(work, case, [])
    return rows
