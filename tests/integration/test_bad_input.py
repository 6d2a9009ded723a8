"""Bad input: one line saying what is wrong and what to do, exit status 2, no traceback."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest

from tests.conftest import trace_dir
from tests.integration.helpers import dsprof, write


def assert_one_line_error(res, *fragments):
    assert res.code == 2, (res.code, res.stdout, res.stderr)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("dsprof: error: ")
    assert "Traceback" not in res.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_script(tmp_path):
    res = dsprof("run", "-o", str(tmp_path / "run"), str(tmp_path / "nope.py"))
    assert_one_line_error(res, "nope.py not found")
    assert not (tmp_path / "run").exists()


def test_script_with_a_syntax_error(tmp_path):
    script = write(tmp_path / "broken.py", "x = 1\ndef f(:\n    pass\n")
    res = dsprof("run", "-o", str(tmp_path / "run"), str(script))
    assert_one_line_error(res, "broken.py:2", "SyntaxError")


def test_a_zip_application_is_named_as_no_script(tmp_path):
    # GIVEN a zipapp (a binary file python runs through its __main__.py) given as the script
    import zipapp

    (tmp_path / "app").mkdir()
    write(tmp_path / "app" / "__main__.py", "print('hi')\n")
    zipapp.create_archive(tmp_path / "app", tmp_path / "app.pyz")
    res = dsprof("run", "-o", str(tmp_path / "run"), str(tmp_path / "app.pyz"))
    # THEN one line names it (it read "None:None: SyntaxError: source code string cannot
    # contain null bytes; fix the script")
    assert_one_line_error(res, "app.pyz is not a Python script", "-m MODULE")
    assert "None:None" not in res.stderr


def test_missing_module(tmp_path):
    res = dsprof("run", "-m", "no_such_module_xyz", cwd=tmp_path)
    assert_one_line_error(res, "no_such_module_xyz")


def test_unwritable_output_directory(tmp_path):
    script = write(tmp_path / "ok.py", "print('hi')\n")
    blocker = write(tmp_path / "a-file", "")
    res = dsprof("run", "-o", str(blocker / "run"), str(script))
    assert_one_line_error(res, "cannot write the run directory")


def test_existing_output_directory_is_not_overwritten(tmp_path):
    script = write(tmp_path / "ok.py", "print('hi')\n")
    out = tmp_path / "run"
    out.mkdir()
    write(out / "keep.txt", "mine")
    res = dsprof("run", "-o", str(out), str(script))
    assert_one_line_error(res, "already exists")
    assert (out / "keep.txt").read_text() == "mine"


def test_non_trace_json(tmp_path):
    path = write(tmp_path / "config.json", json.dumps({"lr": 0.1}))
    res = dsprof("import", str(path), "-o", str(tmp_path / "run"))
    assert_one_line_error(res, "config.json", "not a torch.profiler/Kineto trace")
    assert not (tmp_path / "run").exists()


def test_truncated_gz(tmp_path):
    src = trace_dir("hta_a100_alexnet_small") / "benchmark_result_2869224_1695835535_trace.json.gz"
    data = src.read_bytes()
    path = tmp_path / "cut.json.gz"
    path.write_bytes(data[: len(data) // 2])
    res = dsprof("import", str(path), "-o", str(tmp_path / "run"))
    assert_one_line_error(res, "cut.json.gz", "truncated or corrupt")
    assert not (tmp_path / "run").exists()


def test_truncated_plain_json(tmp_path):
    src = trace_dir("hta_inference_tiny") / "inference_rank_1.json.gz"
    text = gzip.decompress(src.read_bytes())
    path = tmp_path / "cut.json"
    path.write_bytes(text[: len(text) // 2])
    res = dsprof("import", str(path), "-o", str(tmp_path / "run"))
    assert_one_line_error(res, "cut.json", "not valid JSON")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    res = dsprof("import", str(tmp_path / "empty"), "-o", str(tmp_path / "run"))
    assert_one_line_error(res, "no trace files")


def test_empty_file(tmp_path):
    path = write(tmp_path / "trace.json", "")
    res = dsprof("import", str(path), "-o", str(tmp_path / "run"))
    assert_one_line_error(res, "empty")


def test_summary_of_a_folder_that_is_not_a_run(tmp_path):
    res = dsprof("summary", str(tmp_path))
    assert_one_line_error(res, "not a run directory")


def test_summary_of_a_run_from_a_newer_schema(tmp_path):
    # GIVEN a real imported run whose meta.json says it was written by a newer dsprof
    run = tmp_path / "run"
    res = dsprof("import", str(trace_dir("hta_inference_tiny")), "-o", str(run))
    assert res.code == 0, res.stderr
    meta = json.loads((run / "meta.json").read_text())
    meta["schema_version"] = 999
    (run / "meta.json").write_text(json.dumps(meta))
    # WHEN summarized
    res = dsprof("summary", str(run))
    # THEN dsprof refuses with the fix
    assert_one_line_error(res, "newer dsprof", "upgrade")


def test_run_directory_with_no_data(tmp_path):
    # GIVEN a run whose raw data is gone (say, the copy was interrupted)
    run = tmp_path / "run"
    res = dsprof("import", str(trace_dir("hta_inference_tiny")), "-o", str(run))
    assert res.code == 0
    shutil.rmtree(run / "raw")
    shutil.rmtree(run / "tables")
    meta = json.loads((run / "meta.json").read_text())
    meta["ingested"] = False
    (run / "meta.json").write_text(json.dumps(meta))
    # WHEN summarized THEN it says the run is empty instead of printing an empty report
    res = dsprof("summary", str(run))
    assert_one_line_error(res, "holds no data")


@pytest.mark.parametrize("args", [["run"], ["run", "--active", "0", "x.py"]])
def test_usage_errors_exit_2(tmp_path, args):
    res = dsprof(*args, cwd=tmp_path)
    assert res.code == 2
    assert "Traceback" not in res.stderr


def test_bad_env_value(tmp_path):
    script = write(tmp_path / "ok.py", "print('hi')\n")
    res = dsprof("run", str(script), cwd=tmp_path, env={"DSPROF_ACTIVE": "lots"})
    assert_one_line_error(res, "DSPROF_ACTIVE='lots' is not valid")


@pytest.mark.parametrize(("value", "said"), [("lots", "DS_AUTOCAST='lots': expected bf16"),
                                             ("fp16", "DS_AUTOCAST=fp16 on a CPU run")])
def test_a_knob_that_does_not_parse_stops_dsprof_before_the_script_runs(tmp_path, value, said):
    # GIVEN a knob with a bad value (the session, which parses knobs, starts only when the
    # script imports torch; the value is checked before the script all the same)
    marker = tmp_path / "ran"
    script = write(tmp_path / "ok.py", f"open({str(marker)!r}, 'w').close()\nimport torch\n")
    res = dsprof("run", str(script), cwd=tmp_path, env={"DS_AUTOCAST": value})
    # THEN one line, exit 2, and the script never ran
    assert_one_line_error(res, said)
    assert not marker.exists()


def test_a_value_no_table_can_hold_names_the_users_file(tmp_path):
    # GIVEN a real trace whose first kernel says it ran on device 2**40 (no int32 holds it)
    src = trace_dir("hta_inference_tiny") / "inference_rank_1.json.gz"
    doc = json.loads(gzip.decompress(src.read_bytes()))
    kernel = next(e for e in doc["traceEvents"] if str(e.get("cat")).lower() == "kernel")
    kernel["args"]["device"] = 2 ** 40
    trace = tmp_path / "mine.json"
    trace.write_text(json.dumps(doc))
    res = dsprof("import", str(trace), "-o", str(tmp_path / "run"))
    # THEN one line names the user's file (it named dsprof's copy, .../run/raw/rank1)
    if res.code == 0:
        return  # a dsprof that reads such a value is not refusing it
    assert_one_line_error(res, str(trace), "cannot read this trace")
    assert "/raw/" not in res.stderr


def test_messages_say_what_the_path_is(tmp_path):
    # GIVEN a file where a run directory goes, a FIFO given to import, a meta.json whose
    # schema_version is no version (each message said something else: "it does not exist",
    # "no such file or folder", "has no schema_version")
    import os

    afile = write(tmp_path / "afile", "x")
    assert_one_line_error(dsprof("summary", str(afile)), "it is a file, not a folder")
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    assert_one_line_error(dsprof("import", str(fifo), "-o", str(tmp_path / "r")),
                          "not a regular file or folder")
    run = tmp_path / "run"
    assert dsprof("import", str(trace_dir("hta_inference_tiny")), "-o", str(run)).code == 0
    meta = json.loads((run / "meta.json").read_text())
    meta["schema_version"] = "4"
    (run / "meta.json").write_text(json.dumps(meta))
    assert_one_line_error(dsprof("summary", str(run)), "schema_version is '4', not a version")
