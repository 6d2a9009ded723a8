"""Predicted vs measured: run each bottleneck example, apply every fix dsprof proposes through
its knob, and print the predicted and the measured step time side by side.

    python benchmarks/advice.py [--rounds 2] [--only slow_loader]

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

# (name, script, args): small enough to run in a few seconds each on 2 CPU cores.
CASES = [
    ("slow_loader", "slow_loader.py", ["--steps", "40", "--read-ms", "1.5", "--batch-size", "32"]),
    ("fusion_mlp", "fusion_mlp.py", ["--steps", "40"]),
    ("transformer_attention", "transformer_lm.py", ["--steps", "30"]),
]


def run_baseline(script: str, args: list[str], out: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DS_", "DSPROF_"))}
    cmd = [sys.executable, "-m", "dsprof", "run", "-q", "-o", str(out),
           str(REPO / "examples" / script), *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"baseline run of {script} failed ({proc.returncode})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2, help="verify rounds per finding")
    p.add_argument("--only", action="append", help="run only these cases (by name)")
    args = p.parse_args()

    from dsprof.apply.verify import verify

    rows = []
    with tempfile.TemporaryDirectory(prefix="dsprof-advice-") as tmp:
        for name, script, script_args in CASES:
            if args.only and name not in args.only:
                continue
            base = Path(tmp) / name
            run_baseline(script, script_args, base)
            findings = json.loads((base / "findings.json").read_text())["findings"]
            for f in findings:
                if not f["apply"] or f["saving_s"] <= 0:
                    continue
                v = verify(base, [f["id"]], out=Path(tmp) / f"{name}-{f['id']}",
                           rounds=args.rounds)
                rows.append((name, f, v))
                _print_row(name, f, v)
    print()
    print(f"{'example':22} {'finding':28} {'base ms':>8} {'pred ms':>8} {'meas ms':>8} "
          f"{'pred -ms':>8} {'meas -ms':>8} {'band ms':>8} {'error':>7}  ranked  slower?")
    for name, f, v in rows:
        _print_row(name, f, v, table=True)
    errors = [abs(v.error) for _, _, v in rows if v.error is not None]
    if errors:
        within = sum(e <= 0.25 for e in errors)
        print(f"\n{within}/{len(errors)} findings within 25 % of the predicted change; "
              f"{sum(_slower(v) for _, _, v in rows)} made the step slower")


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
    ranked = "yes" if f["severity"] != "info" else "no"
    inside = " (no measurable change)" if v.measurable is False else ""
    if table:
        print(f"{name:22} {f['kind'][:28]:28} {b:8.2f} {pr:8.2f} {m:8.2f} {b - pr:8.2f} "
              f"{b - m:8.2f} {band:8.2f} {err:>7}  {ranked:6}  {'YES' if _slower(v) else 'no'}"
              f"{inside}")
    else:
        print(f"{name}: {f['id']} {f['title'][:70]}: baseline {b:.2f} ms, predicted {pr:.2f} ms, "
              f"measured {m:.2f} ms ({err}), noise band {band:.2f} ms{inside}", flush=True)


if __name__ == "__main__":
    main()
