"""A small CUDA training loop that records its own reference figures for the GPU tests.

Run plainly or under ``dsprof run``; it never imports dsprof. Each iteration i (step i):

0. resets the allocator's peak (``torch.cuda.reset_peak_memory_stats()``), so that its reading
   in 3 is the step's own, whatever dsprof does with the counters;
1. allocates a ``--spike-mib`` scratch buffer and reads ``torch.cuda.memory_allocated()``
   while it is live: the step's known peak (the buffer dwarfs the model's own memory);
2. forward and backward of an MLP (fp32, or bf16 under ``--autocast``);
3. reads ``torch.cuda.max_memory_allocated()`` just before ``optimizer.step()``;
4. ``optimizer.step()``; a hook on this optimizer synchronizes the device before dsprof's
   global step hook marks the boundary, so every kernel of step i runs inside step i.

``--key-averages`` makes every ``torch.profiler`` trace export (dsprof's windows) also write
``<trace>.keyavg.json``: the profiler's own ``key_averages()`` for device-side events (kernels,
memcpy, memset; not annotations), name -> [count, self device time in us]. Figures go to
``--out``/probe.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn


def dump_key_averages(out: Path) -> None:
    from torch.autograd import DeviceType

    original = torch.profiler.profile.export_chrome_trace

    def export(self, path):
        result = original(self, path)
        rows: dict[str, list[float]] = {}
        for avg in self.key_averages():
            # device rows only; record_function ranges also appear on the GPU timeline
            # (gpu_user_annotation: ProfilerStep#, dsprof.module: ...), and are not kernels
            if avg.device_type == DeviceType.CUDA and not getattr(avg, "is_user_annotation",
                                                                  False):
                count, total = rows.get(avg.key, (0, 0.0))
                rows[avg.key] = [count + avg.count, total + avg.self_device_time_total]
        (out / (Path(path).name + ".keyavg.json")).write_text(json.dumps(rows))
        return result

    torch.profiler.profile.export_chrome_trace = export


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--width", type=int, default=2048)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--spike-mib", type=int, default=1024)
    p.add_argument("--autocast", action="store_true", help="bf16 autocast forward")
    p.add_argument("--key-averages", action="store_true")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.key_averages:
        dump_key_averages(args.out)
    torch.manual_seed(0)
    dev = torch.device("cuda")
    layers: list[nn.Module] = []
    for _ in range(args.layers):
        layers += [nn.Linear(args.width, args.width), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(args.width, 10)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    opt.register_step_post_hook(lambda *_: torch.cuda.synchronize())
    x = torch.randn(args.batch, args.width, device=dev)
    y = torch.randint(0, 10, (args.batch,), device=dev)
    steps = []
    for i in range(args.steps):
        torch.cuda.reset_peak_memory_stats()
        spike = torch.empty(args.spike_mib << 20, dtype=torch.uint8, device=dev)
        at_peak = torch.cuda.memory_allocated()
        del spike
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.autocast):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        steps.append({"step": i, "at_peak": at_peak,
                      "max_allocated": torch.cuda.max_memory_allocated()})
        opt.step()
    (args.out / "probe.json").write_text(json.dumps({
        "device": torch.cuda.get_device_name(), "steps": steps,
        "tf32": torch.backends.cuda.matmul.allow_tf32}))


if __name__ == "__main__":
    main()
