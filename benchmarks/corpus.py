"""Per corpus model: FLOPs error against FlopCounterMode and steps found vs taken.

Runs each model of tests/corpus/ under ``dsprof run`` (as the corpus tests do) and prints one
line per model. Usage, from the repository root:

    OMP_NUM_THREADS=1 python benchmarks/corpus.py [NAME ...] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.corpus.corpus import (
    BY_NAME,
    MODELS,
    flops_error,
    measure,
    reference_flops,
    run_model,
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help=f"models (default: all): {', '.join(BY_NAME)}")
    ap.add_argument("--out", type=Path, help="keep the run directories here")
    args = ap.parse_args()
    unknown = [n for n in args.names if n not in BY_NAME]
    if unknown:
        print(f"unknown model(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    models = [BY_NAME[n] for n in args.names] if args.names else MODELS
    out = args.out or Path(tempfile.mkdtemp(prefix="dsprof-corpus-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"{'model':22} {'steps found/taken':>17} {'FLOPs/step dsprof':>18} "
          f"{'FlopCounterMode':>16} {'error':>7} {'in modules':>10} {'run s':>6}  findings")
    bad = 0
    for model in models:
        outcome = run_model(model, out)
        if outcome.code != 0:
            bad += 1
            print(f"{model.name:22} dsprof run exit status {outcome.code}: "
                  f"{outcome.stderr.strip().splitlines()[-1:]}")
            continue
        m = measure(outcome)
        ref = reference_flops(model)
        found = "/".join(str(n) for _, n in sorted(m.steps_found.items()))
        errors = [flops_error(v, ref) for v in m.step_flops.values()]
        worst = max((e for e in errors if e is not None), default=None)
        got = next(iter(m.step_flops.values()), None)
        err = "n/a" if worst is None or len(errors) != 2 * model.ranks else f"{worst:.2%}"
        names = sorted({f["analyzer"] for f in m.findings})
        print(f"{model.name:22} {found + ' / ' + str(model.steps):>17} {got or 0:>18,} "
              f"{ref:>16,} {err:>7} {m.flops_in_modules:>10.1%} {outcome.seconds:>6.1f}  "
              f"{', '.join(names)}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
