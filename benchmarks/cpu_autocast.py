"""bf16 autocast vs fp32 on this CPU, and how well the cpu_autocast finding predicts the change.

    OMP_NUM_THREADS=1 python benchmarks/cpu_autocast.py [--steps 60] [--only mlp-32x256 ...]
    OMP_NUM_THREADS=1 python benchmarks/cpu_autocast.py --calibrate

For each model and size (MLPs 64 -> width -> width -> 10 of examples/autocast_mlp.py at batch x
width, its CNN of ``--conv`` at batch x channels, and the corpus's conv + MLP
bf16_autocast.py), two copies of the same training, one
under ``torch.autocast("cpu", dtype=torch.bfloat16)`` and one in fp32, run in alternating
blocks of steps in one process; each arm's median thread CPU time per step is printed, with
the casts autocast adds (their count and time per step in a torch.profiler trace of the bf16
arm: ``aten::_to_copy`` of floating tensors in forward and backward). Then one ``dsprof run``
of the bf16 script at that size (``--active 4``) and ``dsprof analyze --only cpu_autocast``:
the saving the finding predicts (or why there is none), next to the measured difference.

``--calibrate`` prints the per-op figures behind ``dsprof/metrics/ops/autocast_cost.py``:
fp32, bf16 and fp16 addmm and convolution (forward, and forward + backward) per call, by size,
with the prices the module gives each, and the casts to bf16 and fp16. Nothing is asserted:
the figures are this machine's (fp16's prices are AVX512-FP16's; on a CPU that emulates fp16
its convolution backward takes seconds at the largest size).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from dsprof.apply.autocast import AutocastKnob
from dsprof.metrics.ops.autocast_cost import bf16_seconds, fp16_seconds, fp32_seconds

MLP_SIZES = ((32, 256), (32, 64), (128, 256), (32, 1024), (128, 512), (256, 1024))
CONV_SIZES = ((4, 16), (32, 32), (32, 64))  # batch x channels, 16x16 images


def _mlp(batch: int, width: int, bf16: bool) -> Callable[[], None]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                          nn.Linear(width, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(batch, 64), torch.randint(0, 10, (batch,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        nn.functional.cross_entropy(logits.float(), y).backward()
        opt.step()
    return step


def _cnn(batch: int, width: int, bf16: bool) -> Callable[[], None]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(batch, 3, 16, 16), torch.randint(0, 10, (batch,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        nn.functional.cross_entropy(logits.float(), y).backward()
        opt.step()
    return step


def _corpus(bf16: bool) -> Callable[[], None]:
    sys.path.insert(0, str(REPO / "tests" / "corpus" / "models"))
    import bf16_autocast

    step = bf16_autocast.make()
    if bf16:
        return step
    # the script enters its own autocast: DS_AUTOCAST=off's knob disables it, around each step
    # only (the bf16 arm alternates with this one in the same process)
    knob = AutocastKnob("off", "cpu")

    def fp32_step() -> None:
        knob.install()
        try:
            step()
        finally:
            knob.uninstall()
    return fp32_step


# name -> (maker of one arm's step, the dsprof run's script and arguments)
def cases() -> dict[str, tuple[Callable[[bool], Callable[[], None]], list[str]]]:
    out: dict[str, tuple[Callable[[bool], Callable[[], None]], list[str]]] = {}
    for b, w in MLP_SIZES:
        out[f"mlp-{b}x{w}"] = (lambda bf16, b=b, w=w: _mlp(b, w, bf16),
                               ["examples/autocast_mlp.py", "--batch", str(b), "--width", str(w)])
    for b, c in CONV_SIZES:
        out[f"cnn-{b}x{c}"] = (lambda bf16, b=b, c=c: _cnn(b, c, bf16),
                               ["examples/autocast_mlp.py", "--conv", "--batch", str(b),
                                "--width", str(c)])
    out["corpus-bf16_autocast"] = (_corpus, ["tests/corpus/models/bf16_autocast.py"])
    return out


def measure(make: Callable[[bool], Callable[[], None]], steps: int) -> tuple[float, float]:
    """Median thread CPU seconds per step of the fp32 and the bf16 arm, in blocks of 5 steps
    alternated (so a change in the machine's load falls on both)."""
    arms = {False: make(False), True: make(True)}
    times: dict[bool, list[float]] = {False: [], True: []}
    for arm in arms.values():
        for _ in range(5):
            arm()
    for block in range(2 * (steps // 5)):
        arm = block % 2 == 1
        for _ in range(5):
            t0 = time.thread_time_ns()
            arms[arm]()
            times[arm].append((time.thread_time_ns() - t0) / 1e9)
    return statistics.median(times[False]), statistics.median(times[True])


def casts(make: Callable[[bool], Callable[[], None]]) -> tuple[float, float]:
    """Casts autocast adds per step in a profiler trace of the bf16 arm: count and seconds
    (each as its outermost ``aten::to``)."""
    step = make(True)
    for _ in range(3):
        step()
    with torch.profiler.profile(record_shapes=True) as prof:
        for _ in range(5):
            step()
    n = t = 0.0
    for e in prof.events():
        if e.name == "aten::to" and e.input_shapes and e.input_shapes[0] \
                and (e.cpu_parent is None or e.cpu_parent.name != "aten::to"):
            kids = [c for c in e.cpu_children if c.name == "aten::_to_copy"]
            if kids:
                n += 1
                t += e.time_range.elapsed_us() / 1e6
    return n / 5, t / 5


def predicted(script: list[str], steps: int) -> tuple[float | None, str]:
    """The cpu_autocast finding's saving per step on a dsprof run of the bf16 script, or its
    reason for none."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        subprocess.run([sys.executable, "-m", "dsprof", "run", "-q", "-o", str(run), "--wait",
                        "1", "--warmup", "1", "--active", "4", *script, "--steps", str(steps)],
                       cwd=REPO, env=env, check=True, capture_output=True)
        subprocess.run([sys.executable, "-m", "dsprof", "analyze", str(run), "--only",
                        "cpu_autocast"], cwd=REPO, env=env, check=True, capture_output=True)
        found = json.loads((run / "findings.json").read_text())
    for f in found["findings"]:
        if f["analyzer"] == "cpu_autocast":
            return f["saving_s"], ""
    why = [s["reason"] for s in found["skipped"] if s["analyzer"] == "cpu_autocast"]
    return None, why[0] if why else "no finding"


def calibrate() -> None:
    def med(f: Callable[[], object], n: int = 15) -> float:
        for _ in range(3):
            f()
        ts = []
        for _ in range(n):
            t0 = time.thread_time_ns()
            f()
            ts.append(time.thread_time_ns() - t0)
        return statistics.median(ts) / 1e9

    dts = (torch.float32, torch.bfloat16, torch.float16)
    print("addmm (M x K @ K x N), us per call: fp32, bf16, fp16, fp32 priced, bf16 priced, "
          "fp16 priced")
    for m, k, n in ((4, 64, 10), (32, 64, 256), (32, 256, 256), (32, 256, 10), (64, 512, 512),
                    (128, 512, 512), (32, 1024, 1024), (256, 1024, 1024), (512, 2048, 2048)):
        row = []
        for dt in dts:
            a, b, c = torch.randn(m, k, dtype=dt), torch.randn(k, n, dtype=dt), torch.randn(
                n, dtype=dt)
            row.append(med(lambda a=a, b=b, c=c: torch.addmm(c, a, b)))
        shapes = json.dumps([[n], [m, k], [k, n]])
        prices = [fn("aten::addmm", 2 * m * k * n, shapes) or 0
                  for fn in (fp32_seconds, bf16_seconds, fp16_seconds)]
        print(f"  {m}x{k} @ {k}x{n}: " + " ".join(f"{t * 1e6:9.1f}" for t in row + prices))
    print("conv2d 3x3 pad 1 (batch, C_in, C_out, H=W), us per call: fwd fp32, bf16, fp16; "
          "fwd+bwd fp32, bf16, fp16; priced fwd fp32, bf16, fp16; priced fwd+bwd fp32, bf16, "
          "fp16")
    for bsz, ci, co, h in ((4, 3, 16, 16), (4, 16, 32, 16), (32, 16, 32, 32), (32, 64, 64, 32)):
        fwd, both = [], []
        for dt in dts:
            x = torch.randn(bsz, ci, h, h, dtype=dt, requires_grad=True)
            w = torch.randn(co, ci, 3, 3, dtype=dt, requires_grad=True)
            g = torch.randn(bsz, co, h, h, dtype=dt)
            fwd.append(med(lambda x=x, w=w: nn.functional.conv2d(x, w, padding=1), 7))
            both.append(med(lambda x=x, w=w, g=g: nn.functional.conv2d(
                x, w, padding=1).backward(g), 7))
        flops = 2 * bsz * co * h * h * ci * 9
        pf = [fn("aten::convolution", flops, None) or 0
              for fn in (fp32_seconds, bf16_seconds, fp16_seconds)]
        pb = [fn("aten::convolution_backward", 2 * flops, None) or 0
              for fn in (fp32_seconds, bf16_seconds, fp16_seconds)]
        print(f"  {bsz}x{ci}->{co}x{h}: " + " ".join(
            f"{t * 1e6:9.1f}" for t in fwd + both + pf + [f + b for f, b in zip(pf, pb)]))
    print("cast fp32 -> low precision (elements), us per call: bf16, fp16")
    for n_el in (2560, 65536, 1048576):
        x = torch.randn(n_el)
        print(f"  {n_el}: " + " ".join(
            f"{med(lambda x=x, dt=dt: x.to(dt)) * 1e6:9.1f}" for dt in dts[1:]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--calibrate", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.calibrate:
        calibrate()
        return
    print(f"{'case':22} {'fp32 ms':>8} {'bf16 ms':>8} {'casts':>6} {'cast ms':>8} "
          f"{'measured':>9} {'predicted':>9} {'error':>7}")
    for name, (make, script) in cases().items():
        if args.only and name not in args.only:
            continue
        fp32, bf16 = measure(make, args.steps)
        n_casts, cast_s = casts(make)
        saving, why = predicted(script, 30)
        measured = bf16 - fp32
        pred = f"{saving * 1e3:9.3f}" if saving is not None else f"{'none':>9}"
        err = (f"{(saving - measured) / measured:+7.0%}" if saving is not None and measured > 0
               else "")
        print(f"{name:22} {fp32 * 1e3:8.3f} {bf16 * 1e3:8.3f} {n_casts:6.0f} {cast_s * 1e3:8.3f} "
              f"{measured * 1e3:9.3f} {pred} {err:>7}" + (f"  ({why})" if why else ""),
              flush=True)


if __name__ == "__main__":
    main()
