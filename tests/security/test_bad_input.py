"""Bad and hostile input: one line naming the user's file, exit 2, no run left behind, bounded
memory. In-process through the CLI entry (click's runner) for speed; the decompression bomb
and one plain case also as a real ``python -m dsprof`` to measure its memory."""

from __future__ import annotations

import gzip
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from dsprof.cli import main
from dsprof.ingest.importer import import_traces
from tests.conftest import REPO, trace_dir


def run_cli(*args: str):
    return CliRunner().invoke(main, list(args))


def assert_one_line(res, *fragments: str) -> str:
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1, res.output
    assert lines[0].startswith("dsprof: error: ") and "Traceback" not in res.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


_EVENT = {"ph": "X", "name": "aten::mm", "cat": "cpu_op", "ts": 1, "dur": 5, "pid": 1, "tid": 1}


@pytest.mark.parametrize(("name", "content", "says"), [
    ("notes.txt", "remember the milk\n", "not a trace file"),
    ("notes.json", "remember the milk\n", "not JSON"),
    ("empty.json", '{"traceEvents": []}', "holds no events"),
    ("deep.json", '{"traceEvents": [' + json.dumps({**_EVENT, "args": {}})[:-2]
     + '"x": ' + '{"a": ' * 5000 + "1" + "}" * 5000 + "}}]}", "nested too deep"),
    ("deeplist.json", "[" * 100_000 + "]" * 100_000, "depth limit"),
    ("huge_rank.json", json.dumps({"traceEvents": [_EVENT],
                                   "distributedInfo": {"rank": 2**40}}), "out of range"),
    ("rank99999999999.json", json.dumps({"traceEvents": [_EVENT]}), "out of range"),
    ("object.json", '{"traceEvents": {"not": "a list"}}', "malformed trace event"),
    ("cut.json.gz", None, "truncated or corrupt"),
])
def test_import_refuses_with_one_line_and_leaves_no_run(tmp_path, name, content, says):
    src = tmp_path / "in" / name
    src.parent.mkdir()
    if content is None:
        src.write_bytes(gzip.compress(json.dumps({"traceEvents": [_EVENT] * 50}).encode())[:-30])
    else:
        src.write_text(content)
    out = tmp_path / "run"
    line = assert_one_line(run_cli("import", str(src), "-o", str(out)), says)
    assert str(src) in line and "raw/rank" not in line  # the user's file, not our copy
    assert not out.exists()
    assert os.stat(src).st_nlink == 1  # no hard link left anywhere


def test_etc_passwd_is_not_imported(tmp_path):
    out = tmp_path / "run"
    assert_one_line(run_cli("import", "/etc/passwd", "-o", str(out)), "/etc/passwd")
    assert not out.exists()


def _bomb(path: Path, expanded: int) -> None:
    """A valid gzip file of ``expanded`` bytes of JSON whitespace, made fast: one 16 MiB
    deflate block after a full flush does not depend on what came before, so its compressed
    bytes are written ``expanded / 16 MiB`` times; the trailer's CRC and size are exact."""
    head, tail, chunk = b'{"traceEvents": [', b"]}", b" " * (1 << 24)
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = z.compress(head) + z.flush(zlib.Z_FULL_FLUSH)
    block = z.compress(chunk) + z.flush(zlib.Z_FULL_FLUSH)
    last = z.compress(tail) + z.flush()
    n = expanded >> 24
    crc = zlib.crc32(head)
    for _ in range(n):
        crc = zlib.crc32(chunk, crc)
    crc = zlib.crc32(tail, crc)
    size = len(head) + n * len(chunk) + len(tail)
    with open(path, "wb") as fh:
        fh.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + first)
        for _ in range(n):
            fh.write(block)
        fh.write(last + struct.pack("<II", crc, size & 0xFFFFFFFF))


def test_bomb_helper_makes_valid_gzip(tmp_path):
    small = tmp_path / "small.json.gz"
    _bomb(small, 2 << 24)
    assert gzip.decompress(small.read_bytes()) == (b'{"traceEvents": [' + b" " * (2 << 24)
                                                   + b"]}")


def test_decompression_bomb_is_refused_while_streaming(tmp_path):
    # GIVEN 2 GiB of trace that gzip packs into about 2 MB
    bomb = tmp_path / "bomb.json.gz"
    _bomb(bomb, 2 << 30)
    assert bomb.stat().st_size < 4 << 20
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSPROF_", "DS_"))}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # WHEN it is imported by the real command
    proc = subprocess.run([sys.executable, "-m", "dsprof", "import", str(bomb), "-o",
                           str(tmp_path / "run")], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    # THEN one line, exit 2, and it never held the expanded file
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "expands past" in proc.stderr
    assert not (tmp_path / "run").exists()
    if before < 512 * 1024:  # an earlier child may have set the high-water mark already
        assert peak_mib < 512, peak_mib  # measured 390 MiB: the 256 MiB cap plus the program


def test_every_shared_trace_is_within_the_limits(tmp_path):
    """The limits are set so that no real input reaches them."""
    from dsprof.ingest.trace_file import read_bytes
    from tests.conftest import all_trace_files

    files = all_trace_files()
    if not files:
        pytest.skip("../shared/traces is absent")
    for f in files:
        assert read_bytes(f)  # raises TraceFormatError past a limit
    run, _ = import_traces([trace_dir("hta_memory_timeline")], tmp_path / "mem")
    assert run.tables()


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("good")
    run, _ = import_traces([trace_dir("hta_amd_mi250")], base / "run")
    assert CliRunner().invoke(main, ["analyze", str(run.path)]).exit_code == 0
    return run.path


@pytest.fixture(scope="module")
def memory_run(tmp_path_factory) -> Path:
    run, _ = import_traces([trace_dir("hta_memory_timeline")],
                           tmp_path_factory.mktemp("mem") / "run")
    return run.path


@pytest.mark.parametrize(("command", "table"), [
    ("summary", "ops"), ("analyze", "ops"), ("gpu", "kernels"), ("memory", "memory"),
    ("export", "steps")])
def test_truncated_parquet_table_is_one_line(good_run, memory_run, tmp_path, command, table):
    run = tmp_path / "run"
    shutil.copytree(memory_run if table == "memory" else good_run, run)
    part = next((run / "tables" / table).glob("*.parquet"))
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    extra = ["-f", "chrome", "-o", str(tmp_path / "t.json")] if command == "export" else []
    assert_one_line(run_cli(command, str(run), *extra), "rank0.parquet", "truncated")


@pytest.mark.parametrize("findings", [
    '{"findings": [', "[1, 2]", '{"findings": [{"x": 1}]}',
    ('{"findings": [{"analyzer": "a", "kind": "k", "key": "x", "title": "t",'
     ' "saving_s": "lots"}]}')])
def test_broken_findings_json_is_one_line(good_run, tmp_path, findings):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    (run / "findings.json").write_text(findings)
    assert_one_line(run_cli("summary", str(run)), "findings.json", "dsprof analyze")


def test_broken_findings_json_is_a_panel_in_the_dashboard(good_run, tmp_path):
    import http.client

    from dsprof.dashboard.app import create_app
    from dsprof.dashboard.server import DashboardServer

    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    (run / "findings.json").write_text('{"findings": [')
    server = DashboardServer(create_app(run)).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("POST", "/_dash-update-component", body=json.dumps({
            "output": "page.children", "outputs": {"id": "page", "property": "children"},
            "inputs": [{"id": "url", "property": "pathname", "value": "/findings"},
                       {"id": "url", "property": "search", "value": ""}],
            "changedPropIds": ["url.pathname"], "state": []}),
            headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = resp.read().decode()
    finally:
        server.stop()
    assert resp.status == 200
    assert "findings.json cannot be read" in body and "missing-findings" in body


def _read_only(path: Path) -> list[str] | None:
    """A command prefix that sees ``path`` read-only: chmod for a normal user; for root (who
    writes through modes) a private read-only bind mount. None when neither is possible."""
    if os.geteuid() != 0:
        for p in [path, *path.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
        return []
    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return None
    return ["unshare", "-m", "sh", "-c",
            'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && exec "$@"', str(path)]


def test_read_only_run_without_findings_still_summarizes(good_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    (run / "findings.json").unlink()
    prefix = _read_only(run)
    if prefix is None:
        pytest.skip("cannot make a read-only directory here (root without mount namespaces)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSPROF_", "DS_"))}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([*prefix, sys.executable, "-m", "dsprof", "summary", str(run)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Findings" in proc.stdout and "Traceback" not in proc.stderr
    assert "findings not saved" in proc.stderr
    assert not (run / "findings.json").exists()


def test_raw_rank_folder_past_int32_is_one_line(tmp_path):
    from dsprof.rundir import RunDir

    run = RunDir.create(tmp_path / "run")
    run.write_meta({"source": "run", "status": "finished", "ingested": False})
    folder = run.path / "raw" / f"rank{2**40}"
    folder.mkdir(parents=True)
    (folder / "window-0.trace.json").write_text(json.dumps({"traceEvents": [_EVENT]}))
    assert_one_line(run_cli("summary", str(run.path)), f"rank{2**40}", "out of range")


def test_multi_member_gzip_still_imports(tmp_path):
    """The bounded inflater reads every gzip member (``cat a.gz b.gz`` is one valid file)."""
    real = trace_dir("hta_amd_mi250") / "mi250_minitoy_train_ROCm6_2_kineto.json.gz"
    text = gzip.decompress(real.read_bytes())
    split = tmp_path / "two.json.gz"
    split.write_bytes(gzip.compress(text[:1000]) + gzip.compress(text[1000:]))
    one, _ = import_traces([real], tmp_path / "one")
    two, _ = import_traces([split], tmp_path / "two")
    assert one.read_meta()["events"] == two.read_meta()["events"] > 0
