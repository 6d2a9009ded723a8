"""What each command prints, at 80 and at 160 columns: golden files from real shared traces.

The goldens live in tests/golden/<command>_<trace>_<width>.txt. After a deliberate change to
the terminal output, regenerate them and review the diff before committing:

    /work/venv/bin/python -m pytest tests/unit/test_terminal_width.py --update-golden
    git diff tests/golden

Paths that differ between machines (the run directory, the traces folder) are replaced by
RUN and TRACES after rendering; they are only printed on lines that are never re-wrapped, so
the replacement does not change the layout.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import orjson
import pytest

from dsprof.analyzers.registry import analyze
from dsprof.ingest.importer import import_traces
from dsprof.render.findings import render_findings
from dsprof.render.gpu import render_gpu
from dsprof.render.layout import shorten_module, shorten_path, shorten_site
from dsprof.render.memory import render_report
from dsprof.render.safe_text import make_console
from dsprof.render.summary import render_full
from dsprof.render.verification import render_verification, verdict
from dsprof.reports.gpu import gpu_report
from dsprof.reports.memory import memory_report
from dsprof.reports.summary import summarize
from dsprof.reports.verification import Verification
from dsprof.run import load
from tests.conftest import trace_dir

WIDTHS = (80, 160)


def _console(width: int):
    buf = io.StringIO()
    return buf, make_console(file=buf, width=width, color_system=None, highlight=False)


def _scrub(text: str, run_path: Path) -> str:
    text = text.replace(str(run_path), "RUN")
    text = re.sub(r"\S*/shared/traces/", "TRACES/", text)
    # a column as wide as the run's own path pads the other rows of that table with spaces at
    # their ends: leave them out, or the golden would depend on where the test runs
    return "\n".join(line.rstrip() for line in text.split("\n"))


@pytest.fixture(scope="module")
def nccl_run(tmp_path_factory):
    run_dir, _ = import_traces([trace_dir("hta_a100_2rank_nccl_r0")],
                               tmp_path_factory.mktemp("nccl") / "run")
    with load(run_dir.path) as run:
        analysis = analyze(run)
    return run_dir.path, analysis


@pytest.fixture(scope="module")
def mem_run(tmp_path_factory):
    # one file of tb_plugin's ResNet50 sample: [memory] events with call stacks
    trace = trace_dir("kineto_resnet50_v100_mem") / "worker0.1623143089861.pt.trace.json.gz"
    run_dir, _ = import_traces([trace], tmp_path_factory.mktemp("mem") / "run")
    return run_dir.path


def _no_line_longer(text: str, width: int, allowed: tuple[str, ...] = ()) -> None:
    """Every line fits, except lines never re-wrapped on purpose (commands, code to paste)."""
    for line in text.splitlines():
        if len(line.rstrip()) > width:
            assert any(a in line for a in allowed), f"{len(line)} > {width}: {line!r}"


@pytest.mark.parametrize("width", WIDTHS)
def test_summary_golden(nccl_run, golden, width):
    path, _ = nccl_run
    with load(path) as run:
        summary = summarize(run)
    buf, console = _console(width)
    render_full(summary, console)
    text = _scrub(buf.getvalue(), path)
    # THEN the comms section is there, per step
    assert "Collectives (1 rank, 3 steps)" in text and "all_reduce" in text
    assert "rank 0: comm" in text and "exposed" in text
    golden(f"terminal_summary_nccl_{width}.txt", text)


@pytest.mark.parametrize("width", WIDTHS)
def test_analyze_golden(nccl_run, golden, width):
    path, analysis = nccl_run
    buf, console = _console(width)
    render_findings(analysis, console)
    text = _scrub(buf.getvalue(), path)
    first = analysis.findings[0]
    if width < 120:
        # THEN at 80 columns a finding's title wraps under its header line at nearly the
        # full width, not in a ~17-character column
        header = next(i for i, line in enumerate(text.splitlines()) if first.id in line)
        title_line = text.splitlines()[header + 1]
        assert title_line.startswith("    ") and len(title_line.strip()) > 50
    else:
        assert "┃ id" in text  # a table at 160
    _no_line_longer(text, width, allowed=("    ", "verify:"))
    golden(f"terminal_analyze_nccl_{width}.txt", text)


@pytest.mark.parametrize("width", WIDTHS)
def test_gpu_golden(nccl_run, golden, width):
    path, _ = nccl_run
    with load(path) as run:
        report = gpu_report(run)
    buf, console = _console(width)
    render_gpu(report, console)
    text = _scrub(buf.getvalue(), path)
    _no_line_longer(text, width)
    golden(f"terminal_gpu_nccl_{width}.txt", text)


@pytest.mark.parametrize("width", WIDTHS)
def test_memory_golden(mem_run, golden, width):
    with load(mem_run) as run:
        report = memory_report(run, top=8)
    buf, console = _console(width)
    render_report(report, console, top=8)
    text = _scrub(buf.getvalue(), mem_run)
    _no_line_longer(text, width)
    # THEN no name is cut at its end with an ellipsis (rich's overflow): names are shortened
    # from the left, so what is left is the part that tells rows apart
    assert not re.search(r"\w…\s", text)
    # AND no row with net frees (the DataLoader's -64.31 MiB) is listed: the trace has no
    # addresses, so sites are what each allocated up to the peak, and say so
    assert "-64.31 MiB" not in text and "allocated up to the peak" in text
    golden(f"terminal_memory_resnet_{width}.txt", text)


def _verification(measured_s: float) -> Verification:
    """Three paired rounds of quiet runs, baseline 50 ms, each fix run ``measured_s`` (+-0.1
    ms between rounds), against a 5.30 ms saving predicted."""
    from tests.unit.test_verify_verdict import paired

    fixed_ms = measured_s * 1e3
    j = paired([50.0] * 3, [fixed_ms, fixed_ms + 0.1, fixed_ms - 0.1], 5.3)
    return Verification(
        baseline=Path("/runs/base"), applied=Path("/runs/base-verify"),
        findings=[{"id": "fusion-4a7b5d6a", "title": "Fuse the optimizer step",
                   "apply": {"DS_OPTIMIZER_FUSED": "1"}}],
        baseline_step_s=0.0500, predicted_step_s=0.0447, measured_step_s=measured_s,
        steps_used=(60, 60), baseline_peak=300 << 20, predicted_peak=280 << 20,
        measured_peak=281 << 20, baseline_spread_s=0.0010, measured_spread_s=0.0012,
        judgement=j)


@pytest.mark.parametrize("width", WIDTHS)
def test_verify_golden(golden, width):
    buf, console = _console(width)
    render_verification(_verification(0.0521), console)
    text = buf.getvalue()
    assert ("predicted -5.30 ms/step, measured +2.10 ms/step (95 % interval +1.85 to "
            "+2.35 ms/step, 3 paired rounds): OFF -140%; the fix made the step slower") \
        in " ".join(text.split())
    assert "step noise band ±0.51 ms" in text and "speedup" not in text
    golden(f"terminal_verify_slower_{width}.txt", text)


def test_verify_verdicts():
    # faster as predicted, faster by less than predicted, and no change the rounds can see
    assert verdict(_verification(0.0449)).endswith(": within 25 %, confirmed")
    assert verdict(_verification(0.0480)).endswith(": OFF -62%")
    assert "no measurable change" in verdict(_verification(0.0500))


def test_shorten_keeps_what_tells_names_apart():
    long = "/very/long/checkout/path/that/goes/on/examples/transformer_lm.py:142 in forward"
    assert shorten_path(long, 40).endswith("transformer_lm.py:142 in forward")
    assert shorten_path(long, 40).startswith("…/") and len(shorten_path(long, 40)) <= 40
    names = [f"TransformerLM.blocks.{i}.attn.qkv" for i in range(8)]
    short = [shorten_module(n, 18) for n in names]
    assert len(set(short)) == 8 and short[3] == "…blocks.3.attn.qkv"
    assert shorten_site("aten::mm in TransformerLM.blocks.3.attn", 24) == "aten::mm in …3.attn"
    assert shorten_module("short.name", 40) == "short.name"


def test_analyze_only_filters_by_prefix_and_keeps_findings_json(nccl_run, tmp_path):
    from click.testing import CliRunner

    from dsprof.cli import main

    path, analysis = nccl_run
    before = orjson.loads((path / "findings.json").read_bytes())
    prefix = analysis.findings[0].id.split("-")[0]  # e.g. "precision": a finding-id prefix
    res = CliRunner().invoke(main, ["analyze", str(path), "--json", "--only", prefix])
    assert res.exit_code == 0, res.output
    shown = [f["id"] for f in orjson.loads(res.output)["findings"]]
    assert shown and all(i.startswith(prefix) for i in shown)
    # THEN findings.json still holds every finding
    after = orjson.loads((path / "findings.json").read_bytes())
    assert [f["kind"] for f in after["findings"]] == [f["kind"] for f in before["findings"]]
    assert len(after["findings"]) > len(shown)
    # AND a term that names nothing is one clear error
    bad = CliRunner().invoke(main, ["analyze", str(path), "--only", "nope"])
    assert bad.exit_code == 2 and "no analyzer named nope" in bad.output


def test_command_progress_prints_one_line_per_stage_when_not_a_terminal(capsys):
    from dsprof.render.progress import CommandProgress

    with CommandProgress("verify", live=False) as progress:
        progress.stage("run 1/2: the script without the fix (fresh baseline)")
        progress.stage("run 2/2: the script with fusion-4a7b applied")
    err = capsys.readouterr().err.splitlines()
    assert err == ["dsprof verify: run 1/2: the script without the fix (fresh baseline)",
                   "dsprof verify: run 2/2: the script with fusion-4a7b applied"]


def test_multi_rank_lines_are_labelled_and_steps_counted_per_rank(tmp_path):
    from dataclasses import replace

    from dsprof.render.summary import render_short
    from dsprof.reports.summary import MemoryPeak

    # GIVEN both ranks of a real 2-rank NCCL job, each with 2 ProfilerSteps
    run_dir, _ = import_traces([trace_dir("hta_sampled_2rank_nccl")], tmp_path / "run")
    with load(run_dir.path) as run:
        summary = summarize(run)
    # (with a device peak per rank, as a dsprof run records)
    summary = replace(summary, memory=[MemoryPeak(r, "cuda:0", (8 + r) << 20, "device_peak")
                                       for r in (0, 1)])
    buf, console = _console(100)
    render_short(summary, console, "RUN")
    text = buf.getvalue()
    # THEN steps are counted per rank, not summed, and per-rank lines say their rank
    assert "steps: 2 timed per rank (2 ranks)" in text
    assert "peak memory (rank 0, cuda:0): 8.00 MiB" in text
    assert "peak memory (rank 1, cuda:0): 9.00 MiB" in text
    assert "next: dsprof summary RUN" in text and "dsprof analyze RUN" in text
