"""How right dsprof's memory numbers are, side by side with independent counts.

1. Peak live bytes of a training step: dsprof (`dsprof run`, the memory table's live total,
   CPU) against torch.distributed._tools.mem_tracker.MemTracker, which counts tensors through
   a dispatch mode, on the same loop as the example with the same seed and shapes (the
   previous step's tensors tracked as external, as they are alive when the step starts).
   Target: within 1 %.
2. The V100 ResNet50 traces (../shared/traces/kineto_resnet50_v100_mem): dsprof's live total
   at every [memory] event, per device, against the trace read independently: its own
   `Total Allocated` where the trace has it; these 2021 traces have only `Bytes` (no Addr, no
   Total Allocated), so against the running sum of `Bytes`, the curve tb_plugin draws; and the
   precomputed series against the event-level timeline.
3. Activation checkpointing of every block of examples/transformer_lm.py: the drop in
   activation bytes dsprof reports (modules table, and the activation category at the peak)
   against the drop MemTracker measures (ACT at its peak), both runs measured.

Usage: python benchmarks/memory_accuracy.py [--only peak|v100|checkpoint]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
V100 = REPO.parent / "shared" / "traces" / "kineto_resnet50_v100_mem"
SCHEDULE = ["--wait", "1", "--warmup", "1", "--active", "2"]
LM_ARGS = {"steps": 5, "batch_size": 4, "seq_len": 64, "d_model": 128, "vocab": 2048,
           "heads": 4, "layers": 2}
MLP_ARGS = {"steps": 5, "batch_size": 256, "in_features": 512, "hidden": 1024, "classes": 10}


def _cli(args: dict) -> list[str]:
    return [f"--{k.replace('_', '-')}={v}" for k, v in args.items()]


def dsprof_run(example: str, args: list[str], out: Path) -> Path:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "dsprof", "run", "-q", "-o", str(out), *SCHEDULE,
                    str(REPO / "examples" / example), *args], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return out


def dsprof_peak(run_path: Path) -> tuple[int, dict[str, int], int]:
    """(peak live bytes, by category at the peak, model activation_bytes)."""
    import dsprof
    from dsprof.reports.memory import memory_report

    with dsprof.load(run_path) as run:
        (peak,) = memory_report(run).peaks
        root = run.sql("SELECT activation_bytes FROM modules WHERE depth = 0 "
                       "ORDER BY activation_bytes DESC LIMIT 1")
    return peak.peak_bytes, {h.key: h.bytes for h in peak.by_category}, root[0][0] if root else 0


# -- MemTracker on the examples' own loops -------------------------------------------------
def memtracker_mlp() -> dict:
    import torch
    from torch import nn

    sys.path.insert(0, str(REPO / "examples"))
    import mlp

    a = MLP_ARGS
    torch.manual_seed(0)
    model = mlp.build_model(a["in_features"], a["hidden"], a["classes"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    teacher = torch.randn(a["in_features"], a["classes"])
    s: dict = {}

    def step() -> None:
        s["x"] = torch.randn(a["batch_size"], a["in_features"])
        s["y"] = (s["x"] @ teacher).argmax(dim=1)
        opt.zero_grad(set_to_none=True)
        s["logits"] = model(s["x"])
        s["loss"] = loss_fn(s["logits"], s["y"])
        s["loss"].backward()
        opt.step()

    return _track(step, 3, model, opt, [teacher], s)


def memtracker_lm(checkpoint: bool) -> dict:
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(REPO / "examples"))
    import transformer_lm as lm

    a = LM_ARGS
    torch.manual_seed(0)
    model = lm.TransformerLM(a["vocab"], a["d_model"], a["heads"], a["layers"], a["seq_len"],
                             checkpoint=checkpoint)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    model.train()
    s: dict = {}

    def step() -> None:
        s["tokens"] = torch.randint(0, a["vocab"], (a["batch_size"], a["seq_len"] + 1))
        s["inputs"], s["targets"] = s["tokens"][:, :-1], s["tokens"][:, 1:]
        opt.zero_grad(set_to_none=True)
        s["logits"] = model(s["inputs"])
        s["loss"] = F.cross_entropy(s["logits"].reshape(-1, a["vocab"]), s["targets"].reshape(-1))
        s["loss"].backward()
        opt.step()

    return _track(step, 3, model, opt, [], s)


def _track(step, warm: int, model, opt, extra: list, state: dict) -> dict:
    from torch.distributed._tools.mem_tracker import MemTracker

    for _ in range(warm):
        step()
    mt = MemTracker()
    mt.track_external(model, opt, *extra, *[v for v in state.values() if hasattr(v, "shape")])
    with mt:
        step()
    snap = mt.get_tracker_snapshot("peak")
    (dev,) = [d for d in snap if str(d) == "cpu"]
    return {str(k).split(".")[-1]: v for k, v in snap[dev].items()}


# -- the three checks ------------------------------------------------------------------------
def check_peaks(tmp: Path) -> None:
    print("1. peak live bytes per training step: dsprof vs MemTracker (CPU)")
    print(f"   {'example':<26}{'dsprof':>14}{'MemTracker':>14}{'ratio':>9}")
    cases = [("mlp.py", _cli(MLP_ARGS), memtracker_mlp),
             ("transformer_lm.py", _cli(LM_ARGS), lambda: memtracker_lm(False))]
    for example, args, tracker in cases:
        peak, _, _ = dsprof_peak(dsprof_run(example, args, tmp / example))
        ref = tracker()["Total"]
        print(f"   {example:<26}{peak:>14,}{ref:>14,}{peak / ref:>9.4f}")


def check_v100(tmp: Path) -> None:
    import gzip
    import json

    import numpy as np
    import pyarrow.parquet as pq

    from dsprof.ingest.importer import import_traces

    print("2. V100 ResNet50 traces: dsprof's memory timeline vs the trace's own numbers, "
          "at every [memory] event")
    files = sorted(V100.glob("*.json.gz"))
    if not files:
        print(f"   skipped: {V100} not found")
        return
    for f in files:
        # the trace read independently: its [memory] events per device, in time order
        with gzip.open(f) as fh:
            events = [e for e in json.load(fh)["traceEvents"] if e.get("name") == "[memory]"]
        has_total = any("Total Allocated" in e["args"] for e in events)
        run, _ = import_traces([f], tmp / f.name.split(".")[1])
        table = pq.read_table(next((run.path / "tables" / "memory").glob("*.parquet")))
        series = pq.read_table(next((run.path / "tables" / "memory_series").glob("*.parquet")))
        dev = np.array(table["device"].to_pylist(), dtype=object)
        for device in sorted(set(dev)):
            kind, _, idx = device.partition(":")
            mine = sorted((e for e in events if (e["args"]["Device Type"] == 0) == (kind == "cpu")
                           and (kind == "cpu" or str(e["args"]["Device Id"]) == idx)),
                          key=lambda e: e["ts"])
            if has_total:
                expect = np.array([e["args"]["Total Allocated"] for e in mine])
                what = "Total Allocated"
            else:  # 2021 format: Bytes only; the curve is the running sum, as tb_plugin draws
                run_sum = np.cumsum([e["args"]["Bytes"] for e in mine])
                expect = run_sum - min(0, int(run_sum.min()))
                what = "running sum of Bytes (no Total Allocated in this trace)"
            got = table["allocated"].to_numpy()[dev == device]
            same = int((got == expect).sum()) if len(got) == len(expect) else 0
            ts = table["ts_ns"].to_numpy()[dev == device].tolist()
            last = dict(zip(ts, got.tolist()))
            sdev = np.array(series["device"].to_pylist(), dtype=object) == device
            pts = list(zip(series["ts_ns"].to_numpy()[sdev].tolist(),
                           series["total"].to_numpy()[sdev].tolist()))
            equal = sum(last[t] == v for t, v in pts)
            print(f"   {f.name[:30]:<31}{device:<7} vs {what}: {same:,}/{len(expect):,} events "
                  f"equal ({100 * same / max(len(expect), 1):.2f} %), peak {int(got.max()):,} B;"
                  f" series {equal:,}/{len(pts):,} points equal")


def check_checkpoint(tmp: Path) -> None:
    print("3. checkpointing every block of transformer_lm.py: activation bytes")
    plain = dsprof_peak(dsprof_run("transformer_lm.py", _cli(LM_ARGS), tmp / "lm-plain"))
    ckpt = dsprof_peak(dsprof_run("transformer_lm.py", [*_cli(LM_ARGS), "--checkpoint"],
                                  tmp / "lm-ckpt"))
    mt_plain, mt_ckpt = memtracker_lm(False), memtracker_lm(True)
    rows = [("model activation_bytes (modules)", plain[2], ckpt[2]),
            ("activation at the peak (memory)", plain[1].get("activation", 0),
             ckpt[1].get("activation", 0)),
            ("peak (memory)", plain[0], ckpt[0]),
            ("MemTracker ACT at its peak", mt_plain["ACT"], mt_ckpt["ACT"]),
            ("MemTracker peak", mt_plain["Total"], mt_ckpt["Total"])]
    print(f"   {'':<34}{'plain':>12}{'checkpoint':>12}{'drop':>12}{'kept':>8}")
    for name, a, b in rows:
        print(f"   {name:<34}{a:>12,}{b:>12,}{a - b:>12,}{b / a if a else 0:>8.3f}")
    print(f"   drop in peak, dsprof / MemTracker: "
          f"{(plain[0] - ckpt[0]) / (mt_plain['Total'] - mt_ckpt['Total']):.4f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=("peak", "v100", "checkpoint"), default=None)
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name, fn in (("peak", check_peaks), ("v100", check_v100),
                         ("checkpoint", check_checkpoint)):
            if args.only in (None, name):
                fn(tmp)


if __name__ == "__main__":
    main()
