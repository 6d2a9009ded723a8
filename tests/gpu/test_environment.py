"""What a script sets in os.environ for CUDA, and what it forks, under dsprof as without it.
dsprof starts when the script imports torch (collectors/torch_arrival.py), so a setting made
before that line holds; dsprof's own CUDA calls wait for the script's first one
(collectors/cuda_start.py), so one made after it holds too, unless the profiler's CUDA tracing
initialised the driver as the session started: the run then says so (meta
``cuda_driver_at_start``) and names the setting (collectors/late_environment.py)."""

from __future__ import annotations

import json

import pytest

from tests.integration.helpers import dsprof, plain, write

pytestmark = pytest.mark.gpu

TRAIN_ON_ANY = """
device = "cuda" if torch.cuda.is_available() else "cpu"
model = torch.nn.Linear(64, 64).to(device)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(8):
    model(torch.randn(32, 64, device=device)).sum().backward()
    opt.step()
    opt.zero_grad()
"""

HIDE_BEFORE = """
import os
os.environ["CUDA_VISIBLE_DEVICES"] = ""
import torch
print("cuda available:", torch.cuda.is_available())
""" + TRAIN_ON_ANY

HIDE_AFTER = """
import os
import torch
os.environ["CUDA_VISIBLE_DEVICES"] = ""
print("cuda available:", torch.cuda.is_available())
""" + TRAIN_ON_ANY


def _plain_and_profiled(tmp_path, name: str, source: str, record_property):
    """The script run plainly and under ``dsprof run``: (plain stdout, dsprof's, meta.json)."""
    script = write(tmp_path / f"{name}.py", source)
    bare = plain(script)
    out = tmp_path / "run"
    res = dsprof("run", "-q", "-o", str(out), str(script))
    record_property("figure", f"plain: {bare.stdout.strip()}; dsprof: {res.stdout.strip()}")
    assert bare.returncode == 0 and res.code == 0, res.stderr[-2000:]
    return bare.stdout, res, json.loads((out / "meta.json").read_text())


def test_cuda_visible_devices_set_before_import_torch_holds(tmp_path, record_property):
    """CUDA_VISIBLE_DEVICES: set by the script before import torch, used as without dsprof"""
    bare, res, meta = _plain_and_profiled(tmp_path, "hide_before", HIDE_BEFORE,
                                          record_property)
    assert res.stdout == bare == "cuda available: False\n"
    assert meta["devices"]["0"]["kind"] == "cpu" and "late_environment" not in meta


def test_cuda_visible_devices_set_after_import_torch_holds_or_is_named(tmp_path,
                                                                     record_property):
    """CUDA_VISIBLE_DEVICES: set after import torch, before the first CUDA call: the same program, or named"""
    bare, res, meta = _plain_and_profiled(tmp_path, "hide_after", HIDE_AFTER, record_property)
    assert bare == "cuda available: False\n"
    record_property("figure", f"cuda_driver_at_start: {meta.get('cuda_driver_at_start')}")
    if res.stdout == bare:
        # dsprof left CUDA to the script: it read the setting, and the run trained on the CPU
        assert meta["devices"]["0"]["kind"] == "cpu" and "late_environment" not in meta
    else:
        # the driver was initialised as the session started (the profiler's tracing): named
        assert meta.get("cuda_driver_at_start") is True, meta
        assert {"variable": "CUDA_VISIBLE_DEVICES", "set_to": "", "read_as": None,
                "used": "CUDA_VISIBLE_DEVICES unset"} in meta.get("late_environment", []), meta
        assert "the script set CUDA_VISIBLE_DEVICES= after its import torch" in res.stderr


FORK_THEN_CUDA = """
import multiprocessing as mp
import torch

def child(queue):
    x = torch.ones(4, device="cuda")
    queue.put(float(x.sum()))

if __name__ == "__main__":
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    p = ctx.Process(target=child, args=(queue,))
    p.start()
    print("child read", queue.get(timeout=120))
    p.join()
    print("child exit", p.exitcode)
""" + TRAIN_ON_ANY


def test_a_forked_child_that_uses_cuda_runs_as_without_dsprof(tmp_path, record_property):
    """fork after import torch, CUDA in the child: as without dsprof (CUDA left to the script)"""
    bare, res, meta = _plain_and_profiled(tmp_path, "fork_then_cuda", FORK_THEN_CUDA,
                                          record_property)
    assert bare == "child read 4.0\nchild exit 0\n"
    assert res.stdout == bare, (meta.get("cuda_driver_at_start"), res.stderr[-2000:])
    # the parent trained on the GPU after the fork: its device is settled from torch
    device = meta["devices"]["0"]
    assert device["kind"] == "cuda" and device["index"] == 0 and device["total_memory"] > 0
