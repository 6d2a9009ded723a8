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
Nothing is asserted, this machine's load decides the noise.
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
    rows = []
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
                v = verify(base, [f["id"]], out=Path(tmp) / f"{base.name}-{f['id']}",
                           rounds=args.rounds)
                rows.append((name, f, v))
                _print_row(name, f, v)
    print()
    print(f"{'example':28} {'finding':24} {'base ms':>8} {'pred ms':>8} {'meas ms':>8} "
          f"{'pred -ms':>8} {'meas -ms':>8} {'sd b/f ms':>11} {'band ms':>8} {'error':>7}  "
          "ranked  slower?")
    for name, f, v in rows:
        _print_row(name, f, v, table=True)
    ranked = [(f, v) for _, f, v in rows if f["severity"] != "info"]
    errors = [abs(v.error) for _, v in ranked if v.error is not None]
    if rows:
        within = sum(e <= 0.25 for e in errors)
        print(f"\n{within}/{len(errors)} ranked findings within 25 % of the predicted change "
              f"({len(rows) - len(ranked)} outside the ranked list); "
              f"{sum(_slower(v) for _, _, v in rows)} of {len(rows)} made the step slower")


def _slower(v) -> bool:
    """Measurably slower: beyond the band the two arms' spread can resolve."""
    if not (v.measured_step_s and v.baseline_step_s):
        return False
    return v.measured_step_s - v.baseline_step_s > (v.band_s or 0.0)


def _print_row(name: str, f: dict, v, table: bool = False) -> None:
    b, pr, m = (x * 1e3 if x is not None else float("nan")
                for x in (v.baseline_step_s, v.predicted_step_s, v.measured_step_s))
    err = f"{v.error:+.0%}" if v.error is not None else "-"
    band = v.band_s * 1e3 if v.band_s is not None else float("nan")
    sds = "/".join(f"{x * 1e3:.2f}" if x is not None else "-"
                   for x in (v.baseline_spread_s, v.measured_spread_s))
    ranked = "yes" if f["severity"] != "info" else "no"
    inside = " (no measurable change)" if v.measurable is False else ""
    if table:
        print(f"{name[:28]:28} {f['kind'][:24]:24} {b:8.2f} {pr:8.2f} {m:8.2f} {b - pr:8.2f} "
              f"{b - m:8.2f} {sds:>11} {band:8.2f} {err:>7}  {ranked:6}  "
              f"{'YES' if _slower(v) else 'no'}{inside}")
    else:
        print(f"{name}: {f['id']} {f['title'][:70]}: baseline {b:.2f} ms, predicted {pr:.2f} ms, "
              f"measured {m:.2f} ms ({err}), spread (sd) baseline/fix {sds} ms, noise band {band:.2f} ms"
              f"{inside}", flush=True)


if __name__ == "__main__":
    main()
