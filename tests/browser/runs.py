"""Real runs for the dashboard tests: a CPU `dsprof run` of the MLP example and an imported
2-rank GPU trace, each with a findings.json whose evidence points at real ops."""

from __future__ import annotations

from pathlib import Path

import orjson

from dsprof.analyzers.registry import Analysis
from dsprof.findings import Evidence, Finding
from dsprof.run import load
from tests.integration.helpers import REPO, dsprof

# Untrusted text as a trace or an analyzer could carry it: must show literally, never run.
HOSTILE = '<img src=x onerror="window.__pwned=1"><b>bold</b>'


def cpu_run(root: Path) -> Path:
    out = root / "mlp"
    res = dsprof("run", "-o", str(out), "--wait", "1", "--active", "2",
                 str(REPO / "examples" / "mlp.py"), "--steps", "6", "--hidden", "256")
    assert res.code == 0, res.stderr
    return out


def write_findings(run_path: Path, op_name: str, with_pareto: bool) -> Finding:
    """A findings.json with one finding about the longest ``op_name`` op of the run."""
    with load(run_path) as run:
        rank, op_id, start, dur = run.sql(
            "SELECT rank, id, start_ns, dur_ns FROM ops WHERE name = ? AND step IS NOT NULL "
            "ORDER BY dur_ns DESC LIMIT 1", [op_name])[0]
    data: dict = {}
    if with_pareto:  # as the checkpointing analyzer writes it
        data = {"peak": 900 << 20, "target": 700 << 20, "front": [
            {"peak": 900 << 20, "cost_s": 0.0, "freed": 0, "modules": []},
            {"peak": 600 << 20, "cost_s": 0.002, "freed": 300 << 20, "modules": ["0"]},
            {"peak": 400 << 20, "cost_s": 0.005, "freed": 500 << 20, "modules": ["0", "2"]}],
            "advised": {"peak": 600 << 20, "cost_s": 0.002, "modules": ["0"]}}
    finding = Finding(
        analyzer="test", kind="fusion.test_chain", key=op_name,
        title=f"Fuse the ops around {op_name} {HOSTILE}", saving_s=0.0015,
        saving_bytes=1 << 20, confidence="medium", explanation="measured on the test run",
        evidence=(Evidence(text=f"{op_name} in step {HOSTILE}", rank=rank, op_ids=(op_id,)),
                  Evidence(text="the window around it", rank=rank, start_ns=start,
                           end_ns=start + dur)),
        fix="model = torch.compile(model)", apply={"DS_TEST_KNOB": "1"},
        verify="dsprof run --apply fusion-x train.py", data=data).rated(0.02, 1 << 30)
    doc = Analysis([finding], [{"analyzer": "other", "reason": "needs the comms table"}]).to_json()
    (run_path / "findings.json").write_bytes(orjson.dumps(doc))
    return finding
