"""Predicted vs measured: run every bundled example and every model of the corpus
(tests/corpus/models), apply every fix dsprof proposes through its knob, and print the
predicted and the measured step time side by side, with a verdict for each.

    python benchmarks/advice.py [--rounds 2] [--only NAME ...] [--no-corpus] [--no-examples]
                                [--list] [--timeout 900]

For each case: one `dsprof run` (the baseline), its findings, then for every finding that has
an `apply` knob and a time saving, `dsprof verify` with `--rounds N` (N fresh baseline runs and
N runs with the fix, alternated, full-speed steps pooled; see dsprof/apply/verify.py). The aim
(issue 19): every ranked prediction within 25 % of the measured change in step time, or the
finding outside the ranked list (severity info: inside the run's own noise, or impact unknown
on a loaded machine), and no fix that makes the step slower. Each row says which:

- ``within 25 %``: ranked, and the measured change is within 25 % of the predicted one;
- ``outside the ranked list``: dsprof did not rank it (it makes no claim to check);
- ``OFF +x %``: ranked, and the measured change is further than 25 % from the prediction;
- ``MISSED``: a case built to show this problem (``expect``) got no finding of that kind;
- ``found, no knob``: it got one, but with no knob to verify it by (the fix is code to paste);
- ``SLOWER`` is added when the fix made the step measurably slower (beyond the arms' band).

Each case runs in its own process, with a time limit (``--timeout``) after which its whole
process group is stopped: a multi-rank job that hangs at exit (torch 2.13 + gloo, see
benchmarks/gloo_teardown_race.py) costs one case, not the table. For fixes that remove work
from the training thread (fusion, the optimizer) the thread's CPU time saved per step is
printed too: on a loaded machine the wall time also holds the time the thread was
descheduled, which no fix changes. Nothing is asserted; this machine's load decides the noise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

EXAMPLES = REPO / "examples"
# Corpus models run long enough to have full-speed steps after the profiler's window.
CORPUS_STEPS = 30
WITHIN = 0.25


@dataclass(frozen=True)
class Case:
    """One script to judge. ``expect``: the auto-applicable finding kinds it is built to show
    (absent: MISSED)."""

    name: str
    script: Path
    args: tuple[str, ...]
    ranks: int = 1
    expect: tuple[str, ...] = ()


# Small sizes: each baseline runs in seconds on 2 CPU cores.
EXAMPLE_CASES = [
    Case("slow_loader", EXAMPLES / "slow_loader.py",
         ("--steps", "40", "--read-ms", "1.5", "--batch-size", "32"),
         expect=("input.dataloader_wait",)),
    Case("fusion_mlp", EXAMPLES / "fusion_mlp.py", ("--steps", "40"),
         expect=("fusion.hand_gelu", "fusion.hand_norm", "fusion.optimizer")),
    Case("transformer_attention", EXAMPLES / "transformer_lm.py", ("--steps", "30"),
         expect=("fusion.hand_attention", "fusion.attention")),
    Case("transformer_sdpa", EXAMPLES / "transformer_lm.py", ("--steps", "30", "--sdpa")),
    Case("mlp", EXAMPLES / "mlp.py", ("--steps", "30", "--batch-size", "64")),
    Case("cnn", EXAMPLES / "cnn.py",
         ("--steps", "30", "--batch-size", "32", "--samples", "1024")),
    Case("periodic_eval", EXAMPLES / "periodic_eval.py", ("--steps", "30")),
    Case("leaky_loss", EXAMPLES / "leaky_loss.py", ("--steps", "30")),
    Case("sync_in_loop", EXAMPLES / "sync_in_loop.py", ("--steps", "30")),
    Case("ddp_train", EXAMPLES / "ddp_train.py", ("--steps", "30"), ranks=2),
]


def corpus_cases() -> list[Case]:
    """Every corpus model, multi-rank ones included (verify reruns the whole job)."""
    from tests.corpus.corpus import HAND_ATTENTION, MODELS, MODELS_DIR

    # a loop with no optimizer profiles only once backward() became the step source (after
    # 64 calls, tests/corpus/corpus.py): it runs that many more steps
    return [Case(f"corpus:{m.name}", MODELS_DIR / m.script,
                 (*m.args, "--steps", str(max(CORPUS_STEPS, m.steps + CORPUS_STEPS - 2))),
                 ranks=m.ranks,
                 expect=("fusion.hand_attention",) if m.name in HAND_ATTENTION else ())
            for m in MODELS]


def all_cases(examples: bool = True, corpus: bool = True) -> list[Case]:
    return (EXAMPLE_CASES if examples else []) + (corpus_cases() if corpus else [])


# -- one case, in its own process ----------------------------------------------------------

def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DS_", "DSPROF_"))}
    # this checkout's dsprof, in the runs verify starts too
    env.update({"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    return env


def run_baseline(case: Case, out: Path) -> None:
    cmd = [sys.executable, "-m", "dsprof", "run", "-q", "-o", str(out)]
    if case.ranks > 1:
        cmd += ["--nproc-per-node", str(case.ranks)]
    cmd += [str(case.script), *case.args]
    proc = subprocess.run(cmd, cwd=REPO, env=_clean_env(), check=False,
                          stdout=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"baseline run failed ({proc.returncode})")


def judge_case(case: Case, rounds: int, rows_file: Path) -> None:
    """Baseline, then verify each auto-applicable finding; one JSON line per row."""
    from dsprof.apply.verify import verify

    os.environ.update(_clean_env())
    for k in [k for k in os.environ if k.startswith(("DS_", "DSPROF_"))]:
        del os.environ[k]
    with tempfile.TemporaryDirectory(prefix="dsprof-advice-") as tmp:
        base = Path(tmp) / case.name.replace(":", "-")
        run_baseline(case, base)
        findings = json.loads((base / "findings.json").read_text())["findings"]
        applicable = [f for f in findings if f["apply"] and f["saving_s"] > 0]
        for kind in case.expect:
            if not any(f["kind"] == kind for f in findings):
                _write(rows_file, {"case": case.name, "kind": kind, "verdict": "MISSED"})
            elif not any(f["kind"] == kind for f in applicable):
                _write(rows_file, {"case": case.name, "kind": kind,
                                   "verdict": "found, no knob"})
        for f in applicable:
            out = Path(tmp) / f"{base.name}-{f['id']}"
            v = verify(base, [f["id"]], out=out, rounds=rounds, fresh_baseline=True)
            cpu = None
            if f["kind"].startswith(WORK_KINDS):
                b_runs, f_runs = arms(out, rounds)
                cpu = (thread_cpu_s(b_runs), thread_cpu_s(f_runs))
            _write(rows_file, row(case.name, f, v, cpu))


def _write(rows_file: Path, data: dict) -> None:
    with rows_file.open("a") as fh:
        fh.write(json.dumps(data) + "\n")


def row(case: str, f: dict, v, cpu: tuple[float | None, float | None] | None) -> dict:
    ranked = f["severity"] != "info"
    err = v.error
    slower = bool(v.measured_step_s and v.baseline_step_s
                  and v.measured_step_s - v.baseline_step_s > (v.band_s or 0.0))
    if not ranked:
        verdict = "outside the ranked list"
    elif err is not None and abs(err) <= WITHIN:
        verdict = "within 25 %"
    else:
        verdict = f"OFF {err:+.0%}" if err is not None else "OFF (no measurement)"
    if slower:
        verdict += ", SLOWER"
    return {"case": case, "kind": f["kind"], "id": f["id"], "title": f["title"],
            "severity": f["severity"], "ranked": ranked, "verdict": verdict,
            "why_unranked": _why_unranked(f) if not ranked else None,
            "baseline_ms": _ms(v.baseline_step_s), "predicted_ms": _ms(v.predicted_step_s),
            "measured_ms": _ms(v.measured_step_s), "band_ms": _ms(v.band_s),
            "sd_ms": [_ms(v.baseline_spread_s), _ms(v.measured_spread_s)],
            "error": err, "measurable": v.measurable, "slower": slower,
            "cpu_saved_ms": (None if not cpu or None in cpu else (cpu[0] - cpu[1]) * 1e3),
            "cpu_error": _cpu_error(v, cpu)}


def _why_unranked(f: dict) -> str:
    data = f.get("data") or {}
    for key, text in (("withheld", "withheld"), ("impact_unknown", "impact unknown"),
                      ("inside_noise", "inside noise")):
        if data.get(key):
            return text
    return "info"


def _ms(x: float | None) -> float | None:
    return None if x is None else x * 1e3


def thread_cpu_s(runs: list[Path]) -> float | None:
    """Median CPU time of the training thread over the steps verify counts (rank 0), pooled
    over ``runs``: the work a fix that removes work removes (not a wait, like a DataLoader's)."""
    from dsprof.run import load

    cpu = []
    for path in runs:
        with load(path, ingest=False) as run:
            counted = {s for r, s, _ in run.facts.step.counted if r == 0}
            cpu += [c for s, c in run.sql("SELECT step, cpu_ns FROM steps WHERE rank = 0 "
                                          "AND cpu_ns IS NOT NULL") if s in counted]
    return statistics.median(cpu) / 1e9 if cpu else None


def arms(out: Path, rounds: int) -> tuple[list[Path], list[Path]]:
    """The run directories verify wrote (dsprof/apply/verify.py's names): baselines, fixes."""
    if rounds == 1:
        return [out.with_name(out.name + "-baseline")], [out]
    return ([out.with_name(f"{out.name}-r{k}-baseline") for k in range(rounds)],
            [out.with_name(f"{out.name}-r{k}") for k in range(rounds)])


# Findings that remove work from the training thread: judged on its CPU time as well.
WORK_KINDS = ("fusion.", "precision.", "tensor_core.")


def _cpu_error(v, cpu: tuple[float | None, float | None] | None) -> float | None:
    """(measured - predicted) / predicted saving, in the thread's CPU time. The prediction is
    a share of the step (verify's rule), applied to the baseline's CPU time."""
    if not cpu or cpu[0] is None or cpu[1] is None or not v.baseline_step_s \
            or v.predicted_step_s is None:
        return None
    share = 1 - v.predicted_step_s / v.baseline_step_s
    if share <= 0:
        return None
    predicted = cpu[0] * share
    return (cpu[0] - cpu[1] - predicted) / predicted


# -- the whole table -------------------------------------------------------------------------

def run_case_process(case: Case, rounds: int, timeout: float, rows_file: Path) -> str | None:
    """Judge ``case`` in a child process; None when it finished, else what went wrong."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", case.name,
           "--rounds", str(rounds), "--rows", str(rows_file)]
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its dsprof runs and their ranks with it
        proc.wait()
        return f"TIMEOUT after {timeout:.0f} s"
    return None if code == 0 else f"FAILED (exit {code})"


def print_table(rows: list[dict], problems: dict[str, str], elapsed: dict[str, float]) -> None:
    def f2(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    print()
    print(f"{'case':30} {'finding':24} {'base ms':>8} {'pred ms':>8} {'meas ms':>8} "
          f"{'pred -ms':>8} {'meas -ms':>8} {'sd b/f ms':>11} {'band ms':>8} {'cpu -ms':>8} "
          f"{'cpu err':>7}  verdict")
    for r in rows:
        if r["verdict"] in ("MISSED", "found, no knob"):
            print(f"{r['case'][:30]:30} {r['kind'][:24]:24} {'':>95}  {r['verdict']}")
            continue
        b, p, m = r["baseline_ms"], r["predicted_ms"], r["measured_ms"]
        pred = None if b is None or p is None else b - p
        meas = None if b is None or m is None else b - m
        sds = "/".join(f2(x) for x in r["sd_ms"])
        cpu_err = "-" if r["cpu_error"] is None else f"{r['cpu_error']:+.0%}"
        verdict = r["verdict"]
        if r["why_unranked"]:
            verdict += f" ({r['why_unranked']})"
        if r["measurable"] is False:
            verdict += "; no measurable change"
        print(f"{r['case'][:30]:30} {r['kind'][:24]:24} {f2(b):>8} {f2(p):>8} {f2(m):>8} "
              f"{f2(pred):>8} {f2(meas):>8} {sds:>11} {f2(r['band_ms']):>8} "
              f"{f2(r['cpu_saved_ms']):>8} {cpu_err:>7}  {verdict}")
    quiet = [c for c in elapsed if c not in problems and not any(r["case"] == c for r in rows)]
    if quiet:
        print(f"\nno auto-applicable finding with a saving: {', '.join(quiet)}")
    for case, what in problems.items():
        print(f"{case}: {what}")
    ranked = [r for r in rows if r.get("ranked")]
    within = sum(r["verdict"].startswith("within") for r in ranked)
    print(f"\n{within}/{len(ranked)} ranked findings within 25 % of the measured change; "
          f"{sum(r['verdict'].startswith('outside') for r in rows)} outside the ranked list; "
          f"{sum(r['verdict'] == 'MISSED' for r in rows)} MISSED; "
          f"{sum(bool(r.get('slower')) for r in rows)} made the step slower; "
          f"{len(elapsed)} cases in {sum(elapsed.values()) / 60:.1f} min")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2, help="verify rounds per finding")
    p.add_argument("--only", action="append", help="run only these cases (by name)")
    p.add_argument("--no-corpus", action="store_true", help="leave out the corpus models")
    p.add_argument("--no-examples", action="store_true", help="leave out the examples")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--timeout", type=float, default=900, help="seconds per case")
    p.add_argument("--case", help=argparse.SUPPRESS)  # one case, in a child process
    p.add_argument("--rows", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()

    cases = {c.name: c for c in all_cases(not args.no_examples, not args.no_corpus)}
    if args.case:
        judge_case({c.name: c for c in all_cases()}[args.case], args.rounds, args.rows)
        return
    unknown = sorted(set(args.only or ()) - set(cases))
    if unknown:
        print(f"unknown case(s): {', '.join(unknown)}; --list lists them", file=sys.stderr)
        raise SystemExit(2)
    if args.list:
        print("\n".join(cases))
        return
    selected = [c for c in cases.values() if not args.only or c.name in args.only]
    problems: dict[str, str] = {}
    elapsed: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="dsprof-advice-rows-") as tmp:
        rows_file = Path(tmp) / "rows.jsonl"
        rows_file.touch()
        try:
            for case in selected:
                t0 = time.perf_counter()
                seen = len(rows_file.read_text().splitlines())
                problem = run_case_process(case, args.rounds, args.timeout, rows_file)
                elapsed[case.name] = time.perf_counter() - t0
                if problem:
                    problems[case.name] = problem
                for line in rows_file.read_text().splitlines()[seen:]:
                    r = json.loads(line)
                    print(f"{case.name}: {r['kind']}: {r['verdict']}", flush=True)
                print(f"{case.name}: done in {elapsed[case.name]:.0f} s"
                      + (f" ({problem})" if problem else ""), flush=True)
        except KeyboardInterrupt:  # Ctrl-C: the table of what was measured so far
            print("\ninterrupted: the findings measured so far", flush=True)
        rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    print_table(rows, problems, elapsed)


if __name__ == "__main__":
    main()
