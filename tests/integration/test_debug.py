"""``dsprof run`` as a debugger: the live DEBUG trace and --detect-anomaly, end to end."""

from __future__ import annotations

import pytest

from dsprof.analyzers.registry import analyze
from dsprof.run import load
from tests.integration.helpers import dsprof, meta, write

NAN_SCRIPT = """
import torch
from torch import nn

class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x, step):
        y = self.fc(x)
        if step == 4:
            y = torch.log(y - 100.0)  # NaN here
        return y

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
head = Head()
opt = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.1)
for step in range(8):
    loss = head(model(torch.randn(4, 8)), step).pow(2).mean()
    loss.backward()
    opt.step()
    opt.zero_grad()
print("finished all steps")
"""


@pytest.mark.slow
def test_debug_level_traces_live_and_stops_at_the_first_nan(tmp_path):
    # GIVEN a script that makes a NaN in step 4, run at DEBUG with a filter on one module
    script = write(tmp_path / "nan_train.py", NAN_SCRIPT)
    out = tmp_path / "run"
    res = dsprof("run", "-o", str(out), "--wait", "1", "--active", "1", str(script),
                 env={"DS_LOG_LEVEL": "debug", "DSPROF_TRACE_FILTER": "module:Head.fc step:2"})
    # THEN the script stopped there, with the error status of an uncaught exception
    assert res.code == 1 and "finished all steps" not in res.stdout
    # AND the trace printed only the selected ops, live, outside the profiler window (step 2)
    ops = [line for line in res.stderr.splitlines() if line.startswith("[dsprof DEBUG] op ")]
    assert ops and all("module=Head.fc" in line and "step=2" in line for line in ops)
    assert any("aten.addmm.default" in line and "phase=forward" in line for line in ops)
    assert any("phase=backward" in line for line in ops)
    # AND the first NaN is named with its op, module, phase, step and line
    assert ("first NaN in step 4: output 0 of aten.log.default (forward, module Head)"
            in res.stderr)
    assert f"at {script}:13 in forward: y = torch.log(y - 100.0)  # NaN here" in res.stderr
    log = (out / "dsprof.log").read_text()
    assert "first NaN in step 4" in log and "op aten.addmm.default" in log
    assert meta(out)["exit_reason"] == "exception"
    # AND the run keeps it as a finding
    with load(out) as run:
        assert run.sql("SELECT op, module, phase, step, site FROM anomalies") == [
            ("aten.log.default", "Head", "forward", 4, f"{script}:13")]
        (finding,) = analyze(run, only=("anomaly",)).findings
    assert finding.title == (f"First NaN in step 4: aten.log.default in Head (forward) at "
                             f"{script}:13 (`y = torch.log(y - 100.0)  # NaN here`)")
    assert "clamp" in finding.fix


def test_detect_anomaly_checks_without_tracing(tmp_path):
    script = write(tmp_path / "nan.py", "import torch\nprint(torch.tensor([-1.0]).sqrt())\n")
    res = dsprof("run", "-o", str(tmp_path / "run"), "--detect-anomaly", "--no-analyze",
                 str(script))
    assert res.code == 1
    assert "first NaN in step 0: output 0 of aten.sqrt.default (other, no module)" in res.stderr
    assert f"at {script}:2 in <module>" in res.stderr
    assert "[dsprof DEBUG]" not in res.stderr
    assert (tmp_path / "run" / "raw" / "rank0" / "anomaly.json").is_file()


def test_bad_trace_filter_is_one_line_and_status_2(tmp_path):
    script = write(tmp_path / "s.py", "print('never')\n")
    res = dsprof("run", "--trace-filter", "layer:3", str(script))
    assert res.code == 2 and "never" not in res.stdout
    assert res.stderr.startswith("dsprof: error: DSPROF_TRACE_FILTER term 'layer:3'")
