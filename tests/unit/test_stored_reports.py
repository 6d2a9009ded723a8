"""Reports computed once and read by all (dsprof/reports/stored.py, issue 16): ``dsprof import``
stores the findings and the default summary and gpu reports; ``summary`` and ``gpu`` then print
exactly what they would compute, without pyarrow, DuckDB or numpy, and compute again whenever
the run changed or other options are asked for."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from dsprof.cli import main
from dsprof.reports import stored
from tests.conftest import trace_dir
from tests.unit.test_cli_startup import _modules_after

COMMANDS = (["summary"], ["summary", "--json"], ["gpu"], ["gpu", "--json"])


def _cli(*args: str) -> str:
    res = CliRunner().invoke(main, list(args), env={"COLUMNS": "120"})
    assert res.exit_code == 0, res.output
    return res.output


def _same(a: object, b: object) -> bool:
    """Equal JSON values, floats to 1e-12 relative."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _imported(tmp_path: Path, trace: str, *flags: str) -> Path:
    run = tmp_path / "run"
    _cli("import", "-o", str(run), "--no-progress", *flags, str(trace_dir(trace)))
    return run


@pytest.mark.parametrize("trace", ["hta_sampled_2rank_nccl", "hta_v100_1rank"])
def test_stored_reports_print_what_the_tables_give(trace, tmp_path):
    # GIVEN a run imported by the CLI (two ranks with collectives; one V100 rank)
    run = _imported(tmp_path, trace)
    assert stored.load_report(run, "summary", stored.summary_params()) is not None
    assert stored.load_report(run, "gpu", stored.gpu_params()) is not None
    assert (run / "findings.json").is_file()
    # WHEN each command prints from the stored reports, then from the tables (reports removed)
    from_store = [_cli(*cmd, str(run)) for cmd in COMMANDS]
    shutil.rmtree(run / stored.REPORTS_DIR)
    from_tables = [_cli(*cmd, str(run)) for cmd in COMMANDS]
    # THEN the outputs are the same: the terminal text byte for byte, the JSON to the last
    # float digit or two (DuckDB's parallel aggregates, e.g. a queue length's std, may differ
    # there between two computations from the same tables)
    for cmd, a, b in zip(COMMANDS, from_store, from_tables):
        if "--json" in cmd:
            assert _same(orjson.loads(a), orjson.loads(b)), cmd
        else:
            assert a == b, cmd
    assert "GPU time by kernel category" in from_store[2]


def test_reading_a_stored_report_imports_no_heavy_library(tmp_path):
    # GIVEN an imported run (its reports stored by import)
    run = _imported(tmp_path, "hta_a100_2rank_nccl_r0")
    for command in ("summary", "gpu"):
        code = ("from dsprof.cli import main\n"
                f"try: main([{command!r}, sys.argv[1]], standalone_mode=False)\n"
                "except SystemExit: pass")
        # WHEN the command runs in a fresh interpreter
        loaded = _modules_after(code, str(run))
        # THEN it read no table: none of pyarrow, DuckDB, numpy or torch was imported
        assert not loaded & {"pyarrow", "duckdb", "numpy", "torch"}, (command, loaded)


def test_summary_json_stores_the_step_breakdown_it_computed(tmp_path):
    # GIVEN an imported run whose step breakdown was never asked for
    run = _imported(tmp_path, "hta_a100_2rank_nccl_r0")
    assert stored.load_report(run, "step_breakdown", {}) is None
    # WHEN `summary --json` prints it once (computed from the tables), then again
    first = orjson.loads(_cli("summary", "--json", str(run)))
    assert stored.load_report(run, "step_breakdown", {}) == first["step_breakdown"]
    code = ("from dsprof.cli import main\n"
            "try: main(['summary', '--json', sys.argv[1]], standalone_mode=False)\n"
            "except SystemExit: pass")
    loaded = _modules_after(code, str(run))
    # THEN the second reads the stored breakdown: no table opened, the same document printed
    assert not loaded & {"pyarrow", "duckdb", "numpy", "torch"}, loaded
    assert first["step_breakdown"]["steps"], first["step_breakdown"]
    assert _same(orjson.loads(_cli("summary", "--json", str(run))), first)


def test_a_changed_table_or_header_makes_the_report_stale(tmp_path):
    run = _imported(tmp_path, "hta_sampled_2rank_nccl")
    params = stored.summary_params()
    assert stored.load_report(run, "summary", params) is not None
    # a table rewritten (same bytes, a new mtime): stale, and the command stores it afresh
    part = next(p for p in (run / "tables" / "kernels").rglob("*.parquet"))
    st = part.stat()
    os.utime(part, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert stored.load_report(run, "summary", params) is None
    _cli("summary", str(run))
    assert stored.load_report(run, "summary", params) is not None
    # the header rewritten: stale too
    meta = run / "meta.json"
    meta.write_bytes(meta.read_bytes() + b"\n")
    assert stored.load_report(run, "summary", params) is None


def test_other_options_are_computed_not_read_from_the_default(tmp_path):
    run = _imported(tmp_path, "hta_sampled_2rank_nccl")
    assert stored.load_report(run, "summary", stored.summary_params(top=3)) is None
    assert stored.load_report(run, "gpu", stored.gpu_params(hta_rounding=True)) is None
    # --top 3 lists three ops, not the stored fifteen
    doc = orjson.loads(_cli("summary", "--json", "--top", "3", str(run)))
    assert len(doc["top_ops"]) == 3
    doc = orjson.loads(_cli("gpu", "--json", "--hta", str(run)))
    assert "microsecond" in doc["convention"]


def test_a_corrupt_or_foreign_report_is_ignored(tmp_path):
    run = _imported(tmp_path, "hta_sampled_2rank_nccl")
    expected = orjson.loads(_cli("summary", "--json", str(run)))
    path = stored.report_path(run, "summary")
    for junk in (b"{not json", b"[]", orjson.dumps({"key": 1, "report": {"facts": {}}})):
        path.write_bytes(junk)
        assert stored.load_report(run, "summary", stored.summary_params()) is None
        assert _same(orjson.loads(_cli("summary", "--json", str(run))), expected)


def test_a_stored_report_with_a_current_key_but_wrong_fields_is_computed_again(tmp_path):
    # a report whose key is current but whose body is not this version's layout (a bug, or a
    # hand edit) must not reach a renderer
    run = _imported(tmp_path, "hta_sampled_2rank_nccl")
    expected = _cli("summary", str(run))
    stored.save_report(run, "summary", stored.summary_params(), {"facts": {}})
    assert stored.load_report(run, "summary", stored.summary_params()) == {"facts": {}}
    assert _cli("summary", str(run)) == expected


def test_import_without_analysis_stores_nothing_and_summary_still_works(tmp_path):
    run = _imported(tmp_path, "hta_sampled_2rank_nccl", "--no-analyze")
    assert not (run / stored.REPORTS_DIR).exists()
    assert not (run / "findings.json").exists()
    out = _cli("summary", str(run))  # computes, runs the analyzers, stores
    assert "Findings" in out
    assert (run / "findings.json").is_file()
    assert stored.load_report(run, "summary", stored.summary_params()) is not None


def test_a_run_where_reports_cannot_be_written_is_still_summarised(tmp_path):
    # GIVEN an analyzed run whose reports/ cannot be created (a file is in the way: as a
    # read-only run directory would, but also when the tests run as root)
    run = _imported(tmp_path, "hta_sampled_2rank_nccl", "--no-analyze")
    _cli("analyze", str(run))
    (run / stored.REPORTS_DIR).write_bytes(b"")
    # WHEN summary and gpu compute their reports THEN they print them and store nothing
    assert "Top ops by self time" in _cli("summary", str(run))
    assert "GPU time by kernel category" in _cli("gpu", str(run))
    assert not stored.save_report(run, "gpu", stored.gpu_params(), {})
    assert (run / stored.REPORTS_DIR).is_file()


@pytest.mark.slow
def test_dsprof_run_stores_the_summary_it_printed(tmp_path):
    from tests.integration.helpers import dsprof, write
    from tests.integration.test_run import SCHEDULE, TINY_TRAIN

    # GIVEN a script profiled by `dsprof run` (which summarizes the run as it ends)
    out = tmp_path / "run"
    script = write(tmp_path / "tiny_train.py", TINY_TRAIN)
    res = dsprof("run", "-o", str(out), *SCHEDULE, str(script), env={"TINY_STEPS": "6"})
    assert res.code == 0, res.stderr
    # THEN that summary is stored, current, and what the tables give
    assert stored.load_report(out, "summary", stored.summary_params()) is not None
    from_store = _cli("summary", "--json", str(out))
    shutil.rmtree(out / stored.REPORTS_DIR)
    assert _same(orjson.loads(_cli("summary", "--json", str(out))), orjson.loads(from_store))


def test_a_current_report_with_values_of_the_wrong_type_is_one_line_and_exit_2(tmp_path):
    # GIVEN a stored gpu report whose key is current but whose numbers are strings (data on
    # disk, e.g. edited by hand)
    run = _imported(tmp_path, "hta_sampled_2rank_nccl")
    doc = stored.load_report(run, "gpu", stored.gpu_params())
    doc["categories"][0]["gpu_ms"] = "lots"
    stored.save_report(run, "gpu", stored.gpu_params(), doc)
    # WHEN gpu renders it
    res = CliRunner().invoke(main, ["gpu", str(run)], env={"COLUMNS": "120"})
    # THEN one line names the file and the fix, exit 2, no traceback
    assert res.exit_code == 2, res.output
    assert "reports/gpu.json is not a report dsprof wrote" in res.output
    assert "delete it" in res.output and "Traceback" not in res.output


def test_an_analysis_that_fails_at_import_leaves_the_import_whole(tmp_path, monkeypatch,
                                                                   caplog):
    # GIVEN an analysis that fails after the tables were written (stands for an analyzer bug
    # or a full disk, which real data cannot produce on demand)
    from dsprof.reports import precompute

    def broken(run):
        raise OSError("No space left on device")

    monkeypatch.setattr(precompute, "precompute", broken)
    run = tmp_path / "run"
    # WHEN imported THEN the import still succeeds, says so, and summary computes later
    res = CliRunner().invoke(main, ["import", "-o", str(run), "--no-progress",
                                    str(trace_dir("hta_sampled_2rank_nccl"))])
    assert res.exit_code == 0, res.output
    assert "dsprof analyze" in caplog.text and "No space left" in caplog.text
    assert not (run / stored.REPORTS_DIR).exists()
    assert "Top ops by self time" in _cli("summary", str(run))
