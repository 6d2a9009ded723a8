"""What dsprof's capture of step 0 costs in memory when a script's setup is a long loop of bare
tensor ops (no module, no backward(), no optimizer before the training): plain vs `dsprof run`
with the default caps vs `dsprof run` with the memory cap out of the way, side by side.

The profiler keeps every op it records until the capture stops, and stopping it builds the
results of them all at once: without a memory cap the peak grows with the length of the setup,
up to ``--max-capture`` (60 s). The script prints its own peak resident size (``VmHWM``), read
in the process `dsprof run` runs it in; the ratios are against the plain run.

Usage: python benchmarks/setup_capture_memory.py [--setup-s 12] [--rounds 1]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys, time, torch
from torch import nn

t = time.perf_counter()
acc, n = torch.zeros(64), 0
while time.perf_counter() - t < float(sys.argv[1]):  # preprocessing in bare tensor ops
    acc += torch.randn(256, 64).tanh().sum(0)
    n += 1
model = nn.Linear(64, 4)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(12):
    model(torch.randn(8, 64)).sum().backward()
    opt.step()
    opt.zero_grad()
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
print("setup_iterations", n, "peak_kib", peak)
"""

VARIANTS = {
    "plain": [],
    "dsprof run (caps: 60 s, 128 MiB)": ["run", "-q"],
    "dsprof run --max-capture-mb 1000000 (no memory cap)": ["run", "-q",
                                                             "--max-capture-mb", "1000000"],
}


def _peak(cmd: list[str]) -> tuple[int, int]:
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("setup_iterations")),
                None)
    if res.returncode != 0 or line is None:
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-2000:]}")
    parts = line.split()
    return int(parts[1]), int(parts[3])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setup-s", type=float, default=12.0, help="seconds of bare-op setup")
    ap.add_argument("--rounds", type=int, default=1, help="rounds of the three runs, alternated")
    args = ap.parse_args()
    peaks: dict[str, list[int]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "setup_then_train.py"
        script.write_text(SCRIPT)
        for r in range(args.rounds):
            for i, (name, dsprof_args) in enumerate(VARIANTS.items()):
                if dsprof_args:
                    cmd = [sys.executable, "-m", "dsprof", *dsprof_args, "-o",
                           str(Path(tmp) / f"run{r}-{i}"), str(script), str(args.setup_s)]
                else:
                    cmd = [sys.executable, str(script), str(args.setup_s)]
                iterations, peak = _peak(cmd)
                peaks[name].append(peak)
                print(f"round {r + 1}: {name}: peak {peak / 2**20:.2f} GiB "
                      f"({iterations} setup iterations)", flush=True)
    plain = statistics.median(peaks["plain"])
    print(f"\n{args.setup_s:g} s of bare-op setup, median peak resident size of "
          f"{args.rounds} round(s):")
    for name, values in peaks.items():
        med = statistics.median(values)
        print(f"  {name:52s} {med / 2**20:6.2f} GiB  {med / plain:5.2f}x plain")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
