"""``dsprof summary`` on imported real traces: golden text, JSON, and docs/format.md vs schema."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from dsprof.ingest.importer import import_traces
from dsprof.render.summary import render_full
from dsprof.reports.summary import summarize
from dsprof.run import load
from dsprof.schema import TABLES
from tests.conftest import REPO, trace_dir


def render(run_path):
    with load(run_path) as run:
        summary = summarize(run)
    # paths differ between machines: replace them before rendering (they set column widths)
    summary.facts["run"] = "RUN"
    summary.facts["inputs"] = [re.sub(r"^.*/shared/traces/", "TRACES/", p)
                               for p in summary.facts.get("inputs", [])]
    buf = io.StringIO()
    render_full(summary, Console(file=buf, width=110, color_system=None, highlight=False))
    return buf.getvalue(), summary


@pytest.mark.parametrize("trace", ["hta_a100_2rank_nccl_r0", "hta_sampled_2rank_nccl",
                                   "hta_memory_timeline", "kineto_resnet50_v100_mem"])
def test_summary_golden(tmp_path, golden, trace):
    # GIVEN a real trace folder imported (of tb_plugin's two unrelated ResNet samples, which
    # the import refuses together, the num_workers=0 one)
    path = trace_dir(trace)
    if trace == "kineto_resnet50_v100_mem":
        path = path / "worker0.1623143089861.pt.trace.json.gz"
    run_dir, _ = import_traces([path], tmp_path / "run")
    # WHEN summarized THEN the report is the reviewed one
    text, _ = render(run_dir.path)
    golden(f"summary_{trace}.txt", text)


def test_kernel_breakdown_in_summary_matches_hta(tmp_path):
    # GIVEN the 2-rank NCCL trace, whose HTA kernel-type breakdown was measured with HTA 0.5.0
    run_dir, _ = import_traces([trace_dir("hta_sampled_2rank_nccl")], tmp_path / "run")
    _, summary = render(run_dir.path)
    hta = {k["kernel_type"]: k["percent"] for k in summary.kernel_types_hta}
    # THEN the HTA-convention column matches HTA's numbers within 0.5 pp
    for label, ref in [("COMMUNICATION", 55.5), ("COMPUTATION", 33.6),
                       ("COMPUTATION overlapping COMMUNICATION", 10.3), ("MEMORY", 0.4)]:
        assert abs(hta[label] - ref) < 0.5


def test_summary_json_is_the_same_facts(tmp_path):
    from click.testing import CliRunner

    from dsprof.cli import main

    run_dir, _ = import_traces([trace_dir("hta_a100_2rank_nccl_r0")], tmp_path / "run")
    res = CliRunner().invoke(main, ["summary", "--json", str(run_dir.path)])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["steps"]["count"] == 3
    assert next(k["kernel_type"] for k in doc["kernel_types"]) == "COMPUTATION"
    assert doc["facts"]["devices"] == ["NVIDIA A100-PG509-200"]


def test_format_doc_lists_every_column():
    doc = (REPO / "docs" / "format.md").read_text()
    for table in TABLES.values():
        section = doc.split(f"### `{table.name}`", 1)
        assert len(section) == 2, f"docs/format.md has no section for {table.name}"
        body = section[1].split("\n### ", 1)[0]
        for column in table.columns:
            assert f"| `{column.name}` |" in body, f"{table.name}.{column.name} undocumented"


def _next_lines(findings: list) -> list[str]:
    from dsprof.findings import Finding
    from dsprof.findings_file import Analysis
    from dsprof.render.summary import _next_steps

    out = io.StringIO()
    _next_steps("RUN", Analysis([Finding(**f) for f in findings]),
                Console(file=out, width=200, color_system=None))
    return [line for line in out.getvalue().splitlines() if "dsprof verify" in line]


def test_the_verify_hint_names_a_ranked_finding_and_says_when_it_is_not_the_top_one():
    fp64 = {"analyzer": "tensor_cores", "kind": "tensor_core.fp64", "key": "fp64",
            "title": "Train in fp32", "saving_s": 5e-3, "severity": "high"}
    fused = {"analyzer": "fusion", "kind": "fusion.optimizer", "key": "sgd",
             "title": "fused SGD", "saving_s": 1e-3, "severity": "low",
             "apply": {"DS_FUSED_OPTIMIZER": "1"}}
    # GIVEN a top finding with no knob above one with a knob
    (line,) = _next_lines([fp64, fused])
    # THEN the hint names the finding with the knob, and does not call its fix the top one
    assert "fusion-" in line and "top fix" not in line and "have no knob" in line
    # AND where the top finding has the knob, it is "the top fix"
    (line,) = _next_lines([fused, fp64])
    assert "rerun with the top fix, measured" in line
    # AND an unranked (info) finding is no next step
    assert _next_lines([fp64, {**fused, "severity": "info"}]) == []
