"""What a script sets in os.environ for CUDA, under dsprof as without it. dsprof starts when
the script imports torch (collectors/torch_arrival.py), so a setting made before that line
holds; its device check initialises CUDA there, so one made after it, before the script's
first CUDA call, comes too late under dsprof and the run names it
(collectors/late_environment.py)."""

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


def test_cuda_visible_devices_set_after_import_torch_is_named(tmp_path, record_property):
    """CUDA_VISIBLE_DEVICES: set after import torch, before the first CUDA call: named as used too late"""
    bare, res, meta = _plain_and_profiled(tmp_path, "hide_after", HIDE_AFTER, record_property)
    assert bare == "cuda available: False\n"
    # dsprof's device check initialised CUDA as torch loaded: the script's setting came late
    # (when the check waits for the script's first CUDA call, this becomes the same program)
    assert {"variable": "CUDA_VISIBLE_DEVICES", "set_to": "", "read_as": None,
            "used": "CUDA_VISIBLE_DEVICES unset"} in meta.get("late_environment", []), meta
    assert "the script set CUDA_VISIBLE_DEVICES= after its import torch" in res.stderr
