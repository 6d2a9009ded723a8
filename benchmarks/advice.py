"""Predicted vs measured: run each bottleneck example and each single-process model of the
corpus (tests/corpus/models), apply every fix dsprof proposes through its knob, and print the
predicted and the measured step time side by side.

    python benchmarks/advice.py [--rounds 2] [--only slow_loader] [--no-corpus]

For each example: one `dsprof run` (the baseline), its findings, then for every finding that
has an `apply` knob, `dsprof verify` with `--rounds N` (N fresh baseline runs and N runs with
the fix, alternated, full-speed steps pooled; see dsprof/apply/verify.py). The aim (issue 6):
measured change within 25 % of the predicted change, and no fix that makes the step slower.
Both are printed per finding, with the noise band of the two arms (the change of the median
their spread can resolve, dsprof/apply/verify.py): a change inside it is "no measurable change",
and a prediction outside the ranked list (severity info: inside the run's own noise) is marked.
For fixes that remove work from the training thread (fusion, the optimizer), the thread's CPU
time saved per step is printed too, with its error against the prediction: on a loaded machine
the wall time also holds the time the thread was descheduled, which no fix changes. Nothing is
asserted, this machine's load decides the noise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# (name, script path, args): small enough to run in a few seconds each on 2 CPU cores.
EXAMPLES = REPO / "examples"
CASES = [
    ("slow_loader", EXAMPLES / "slow_loader.py",
     ["--steps", "40", "--read-ms", "1.5", "--batch-size", "32"]),
    ("fusion_mlp", EXAMPLES / "fusion_mlp.py", ["--steps", "40"]),
    ("transformer_attention", EXAMPLES / "transformer_lm.py", ["--steps", "30"]),
]
# The corpus models run long enough to have full-speed steps after the profiler's window.
CORPUS_STEPS = "30"


def corpus_cases() -> list[tuple[str, Path, list[str]]]:
    """The corpus's single-process models (a multi-rank verify reruns the whole job; the corpus
    test covers ddp_gloo's findings)."""
    from tests.corpus.corpus import MODELS, MODELS_DIR

    return [(f"corpus:{m.name}", MODELS_DIR / m.script, [*m.args, "--steps", CORPUS_STEPS])
            for m in MODELS if m.ranks == 1]


def run_baseline(script: Path, args: list[str], out: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DS_", "DSPROF_"))}
    cmd = [sys.executable, "-m", "dsprof", "run", "-q", "-o", str(out), str(script), *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"baseline run of {script} failed ({proc.returncode})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2, help="verify rounds per finding")
    p.add_argument("--only", action="append", help="run only these cases (by name)")
    p.add_argument("--no-corpus", action="store_true", help="only the bundled examples")
    args = p.parse_args()

    from dsprof.apply.verify import verify

    cases = CASES + ([] if args.no_corpus else corpus_cases())
    rows: list[tuple] = []
    try:
        _run_cases(cases, args, rows, verify)
    except KeyboardInterrupt:  # Ctrl-C: the table of what was measured so far
        print("\ninterrupted: the findings measured so far", flush=True)
    _print_table(rows)


def _run_cases(cases: list, args: argparse.Namespace, rows: list[tuple], verify) -> None:
    with tempfile.TemporaryDirectory(prefix="dsprof-advice-") as tmp:
        for name, script, script_args in cases:
            if args.only and name not in args.only:
                continue
            base = Path(tmp) / name.replace(":", "-")
            try:
                run_baseline(script, script_args, base)
            except SystemExit as exc:  # one model failing leaves the others' rows
                print(f"{name}: {exc}", flush=True)
                continue
            findings = json.loads((base / "findings.json").read_text())["findings"]
            for f in findings:
                if not f["apply"] or f["saving_s"] <= 0:
                    continue
                out = Path(tmp) / f"{base.name}-{f['id']}"
                v = verify(base, [f["id"]], out=out, rounds=args.rounds, fresh_baseline=True)
                cpu = None
                if f["kind"].startswith(WORK_KINDS):
                    b_runs, f_runs = arms(out, args.rounds)
                    cpu = (thread_cpu_s(b_runs), thread_cpu_s(f_runs))
                rows.append((name, f, v, cpu))
                _print_row(name, f, v, cpu)


def _print_table(rows: list[tuple]) -> None:
    print()
    print(f"{'example':28} {'finding':24} {'base ms':>8} {'pred ms':>8} {'meas ms':>8} "
          f"{'pred -ms':>8} {'meas -ms':>8} {'sd b/f ms':>11} {'band ms':>8} {'error':>7} "
          f"{'cpu -ms':>8} {'cpu err':>7}  ranked  slower?")
    for name, f, v, cpu in rows:
        _print_row(name, f, v, cpu, table=True)
    ranked = [(f, v, cpu) for _, f, v, cpu in rows if f["severity"] != "info"]
    errors = [abs(v.error) for _, v, _ in ranked if v.error is not None]
    cpu_errors = [abs(e) for _, v, cpu in ranked if (e := _cpu_error(v, cpu)) is not None]
    if rows:
        within = sum(e <= 0.25 for e in errors)
        print(f"\n{within}/{len(errors)} ranked findings within 25 % of the predicted change "
              f"in step time ({len(rows) - len(ranked)} outside the ranked list); "
              f"{sum(e <= 0.25 for e in cpu_errors)}/{len(cpu_errors)} of those that remove "
              "work within 25 % in the thread's CPU time; "
              f"{sum(_slower(v) for _, _, v, _ in rows)} of {len(rows)} made the step slower")


def thread_cpu_s(runs: list[Path]) -> float | None:
    """Median CPU time of the training thread over the steps verify counts (rank 0), pooled
    over ``runs``. On a loaded machine a step's wall time also holds the time the thread was
    descheduled, which the fix does not change; its CPU time is the work the fix removes
    (for fixes that remove work: fusion, the optimizer; not for waits, like a DataLoader's)."""
    import statistics

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


def _slower(v) -> bool:
    """Measurably slower: beyond the band the two arms' spread can resolve."""
    if not (v.measured_step_s and v.baseline_step_s):
        return False
    return v.measured_step_s - v.baseline_step_s > (v.band_s or 0.0)


def _cpu_error(v, cpu: tuple[float | None, float | None] | None) -> float | None:
    """(measured - predicted) / predicted saving, in the thread's CPU time. The prediction is
    a share of the step (verify's rule: the saving over the profiled step time), applied here
    to the baseline's CPU time as verify applies it to its wall time."""
    if not cpu or cpu[0] is None or cpu[1] is None or not v.baseline_step_s \
            or v.predicted_step_s is None:
        return None
    share = 1 - v.predicted_step_s / v.baseline_step_s
    if share <= 0:
        return None
    predicted = cpu[0] * share
    return (cpu[0] - cpu[1] - predicted) / predicted


def _print_row(name: str, f: dict, v, cpu=None, table: bool = False) -> None:
    b, pr, m = (x * 1e3 if x is not None else float("nan")
                for x in (v.baseline_step_s, v.predicted_step_s, v.measured_step_s))
    err = f"{v.error:+.0%}" if v.error is not None else "-"
    band = v.band_s * 1e3 if v.band_s is not None else float("nan")
    sds = "/".join(f"{x * 1e3:.2f}" if x is not None else "-"
                   for x in (v.baseline_spread_s, v.measured_spread_s))
    cpu_saved = (f"{(cpu[0] - cpu[1]) * 1e3:8.2f}" if cpu and None not in cpu else f"{'-':>8}")
    cpu_err = _cpu_error(v, cpu)
    cpu_err_txt = f"{cpu_err:+.0%}" if cpu_err is not None else "-"
    cpu_base = f"{cpu[0] * 1e3:.2f}" if cpu and cpu[0] is not None else "-"
    ranked = "yes" if f["severity"] != "info" else "no"
    inside = " (no measurable change)" if v.measurable is False else ""
    if table:
        print(f"{name[:28]:28} {f['kind'][:24]:24} {b:8.2f} {pr:8.2f} {m:8.2f} {b - pr:8.2f} "
              f"{b - m:8.2f} {sds:>11} {band:8.2f} {err:>7} {cpu_saved} {cpu_err_txt:>7}  "
              f"{ranked:6}  {'YES' if _slower(v) else 'no'}{inside}")
    else:
        print(f"{name}: {f['id']} {f['title'][:70]}: baseline {b:.2f} ms, predicted {pr:.2f} ms, "
              f"measured {m:.2f} ms ({err}), spread (sd) baseline/fix {sds} ms, noise band {band:.2f} ms"
              f"{inside}; thread CPU time {cpu_base} ms, saved {cpu_saved.strip()} ms "
              f"({cpu_err_txt})",
              flush=True)


if __name__ == "__main__":
    main()
