"""A script that sets TF32 through torch's new ``fp32_precision`` API (torch >= 2.9): reading
the legacy flags afterwards raises in torch, and dsprof reads them when the script ends."""

from __future__ import annotations

import pytest

from tests.integration.helpers import dsprof, meta, write

NEW_API = """
import torch
torch.backends.cuda.matmul.fp32_precision = "tf32"
torch.backends.cudnn.conv.fp32_precision = "ieee"
model = torch.nn.Linear(16, 16)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(6):
    opt.zero_grad()
    model(torch.randn(8, 16)).sum().backward()
    opt.step()
print("trained")
"""


@pytest.mark.slow
def test_script_on_the_new_tf32_api_keeps_its_status_and_its_settings(tmp_path):
    # GIVEN a script that turns TF32 on for matmuls and off for convolutions, the new way
    script = write(tmp_path / "new_api.py", NEW_API)
    # WHEN it runs under dsprof
    res = dsprof("run", "-o", str(tmp_path / "run"), "--wait", "1", "--warmup", "1",
                 "--active", "2", str(script))
    # THEN it exits as the script did, with no traceback from reading the legacy flags
    assert res.code == 0, res.stderr
    assert "trained" in res.stdout and "Traceback" not in res.stderr
    # AND the run records the settings the script left in force
    precision = meta(tmp_path / "run")["precision"]
    # the CPU's bf16 and fp16 support (cpu_autocast), not settings
    assert precision.pop("cpu_bf16") in ("amx", "avx512_bf16", "none")
    assert precision.pop("cpu_fp16") in ("amx", "avx512_fp16", "none")
    assert precision == {"matmul_allow_tf32": True, "cudnn_allow_tf32": False,
                         "float32_matmul_precision": "high", "default_dtype": "float32"}
