"""``dsprof summary RUN`` / ``dsprof gpu RUN`` rendered once by ``dsprof import``
(dsprof/reports/rendered.py, issue 16): typed next under the same conditions, each prints
exactly the text its renderer gives, without loading rich or the renderers; anything that
changes the text (the terminal's width, a pipe for a terminal, findings.json) renders again."""

from __future__ import annotations

import fcntl
import gc
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from click.testing import CliRunner

from dsprof.cli import main
from dsprof.reports import rendered, stored
from tests.conftest import trace_dir

REPO = Path(__file__).resolve().parents[2]
# prints the command's output, then on the last line whether rich was loaded
PROBE = ("import sys\nfrom dsprof.cli import main\n"
         "try: main(sys.argv[1:])\nexcept SystemExit: pass\n"
         "sys.stdout.flush()\nsys.stderr.write(str('rich' in sys.modules))\n")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DSPROF_", "DS_", "COLUMNS", "LINES", "FORCE_COLOR", "NO_COLOR",
                                "TTY_"))}
    env.update({"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra})
    return env


def _run(*args: str, **env: str) -> tuple[str, bool]:
    """(stdout, whether rich was loaded) of ``dsprof ARGS`` in a fresh interpreter, its stdout
    a pipe and its stdin not a terminal."""
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                         env=_env(**env), stdin=subprocess.DEVNULL, check=True, cwd=REPO)
    return out.stdout, out.stderr.strip().endswith("True")


def _imported(tmp_path: Path, **env: str) -> Path:
    run = tmp_path / "run"
    _run("import", "-o", str(run), "--no-progress", str(trace_dir("hta_sampled_2rank_nccl")),
         **env)
    return run


def _unrendered(run: Path, command: str) -> str:
    """What the command prints with no pre-rendered text (its renderer's own output)."""
    kept = rendered.rendered_path(run, command).read_bytes()
    rendered.rendered_path(run, command).unlink()
    try:
        text, rich_loaded = _run(command, str(run), COLUMNS="100")
    finally:
        rendered.rendered_path(run, command).write_bytes(kept)
    assert rich_loaded
    return text


@pytest.mark.parametrize("command", ["summary", "gpu"])
def test_import_renders_what_summary_and_gpu_print_into_a_pipe(command, tmp_path):
    # GIVEN a run imported with its output in a pipe, 100 columns
    run = _imported(tmp_path, COLUMNS="100")
    assert rendered.rendered_path(run, command).is_file()
    # WHEN the command runs the same way
    text, rich_loaded = _run(command, str(run), COLUMNS="100")
    # THEN it printed the stored text without loading rich, byte for byte what its renderer
    # prints (the run's path as typed included)
    assert not rich_loaded
    assert text == _unrendered(run, command)
    assert str(run) in text or command == "gpu"


def test_other_conditions_or_new_findings_render_again(tmp_path):
    # GIVEN a run imported in a pipe at 100 columns
    run = _imported(tmp_path, COLUMNS="100")
    at_100 = _unrendered(run, "summary")
    # WHEN summary runs at 80 columns, or with FORCE_COLOR (a terminal's colours)
    narrow, rich_narrow = _run("summary", str(run), COLUMNS="80")
    colour, rich_colour = _run("summary", str(run), COLUMNS="100", FORCE_COLOR="1")
    # THEN each rendered its own text (rich loaded), not the stored one
    assert rich_narrow and rich_colour
    assert narrow != at_100 and "\x1b[" in colour and "\x1b[" not in at_100
    # WHEN findings.json is rewritten (dsprof analyze) or the argument is another spelling
    # of the run (what summary shows as "run")
    st = (run / "findings.json").stat()
    os.utime(run / "findings.json", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _, rich_after_analyze = _run("summary", str(run), COLUMNS="100")
    # THEN the stored text is not used either
    assert rich_after_analyze
    assert rendered.current_text(["summary", str(run)]) is None
    assert rendered.current_text(["summary", "--top", "3", str(run)]) is None


def _in_terminal(args: list[str], columns: int) -> tuple[str, bool]:
    """(everything ``dsprof ARGS`` writes to a terminal ``columns`` wide (a pseudo-terminal for
    its stdin, stdout and stderr), whether rich was loaded)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen([sys.executable, "-c", PROBE, *args], stdin=follower,
                            stdout=follower, stderr=follower, cwd=REPO,
                            env=_env(TERM="xterm-256color"))
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        if not ready:
            break
        try:
            data = os.read(leader, 1 << 16)
        except OSError:  # the terminal closed: the command has exited
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    text = b"".join(chunks).decode()
    for flag in ("True", "False"):
        if text.endswith(flag):
            return text.removesuffix(flag), flag == "True"
    raise AssertionError(f"no probe flag at the end of {text[-200:]!r}")


def test_in_a_terminal_the_stored_text_is_what_the_renderer_writes(tmp_path):
    # GIVEN a run imported in a 96-column terminal (colours: xterm-256color)
    run = tmp_path / "run"
    _in_terminal(["import", "-o", str(run), "--no-progress",
                  str(trace_dir("hta_sampled_2rank_nccl"))], 96)
    assert rendered.rendered_path(run, "gpu").is_file()
    # WHEN gpu is typed in the same terminal, with the stored text and without it
    stored_text, rich_loaded = _in_terminal(["gpu", str(run)], 96)
    rendered.rendered_path(run, "gpu").unlink()
    rendered_now, rich_rendering = _in_terminal(["gpu", str(run)], 96)
    # THEN the stored text was printed without rich, and the terminal received the same
    # bytes as from the renderer, colours included
    assert not rich_loaded and rich_rendering
    assert "\x1b[" in rendered_now
    assert stored_text == rendered_now


def test_an_empty_cache_file_is_absent(tmp_path):
    # GIVEN an imported run whose cache files are then emptied (what a crash may leave of a
    # file written without fsync: they are written so, being caches)
    run = _imported(tmp_path, COLUMNS="100")
    expected = _unrendered(run, "summary")
    for path in (rendered.rendered_path(run, "summary"),
                 stored.report_path(run, "summary")):
        path.write_bytes(b"")
    # THEN neither is used, and the command computes and prints the same summary again
    assert rendered.current_text(["summary", str(run)]) is None
    assert stored.load_report(run, "summary", stored.summary_params()) is None
    text, rich_loaded = _run("summary", str(run), COLUMNS="100")
    assert rich_loaded and text == expected


def test_import_ends_its_process_without_the_teardown(tmp_path):
    # GIVEN `dsprof import` as the process's command line, with an atexit handler and an
    # object that is freed only by the interpreter's teardown
    run = tmp_path / "run"
    code = ("import atexit, gc, sys\n"
            "atexit.register(lambda: print('atexit ran', gc.get_threshold()[0],\n"
            "                              gc.get_freeze_count() > 0, flush=True))\n"
            "class Probe:\n"
            "    def __del__(self): print('teardown ran', flush=True)\n"
            "probe = Probe()\n"
            "sys.argv[0] = 'dsprof'\n"
            "from dsprof.cli import main\n"
            "main()\n")
    out = subprocess.run([sys.executable, "-c", code, "import", "-o", str(run), "--no-progress",
                          str(trace_dir("hta_sampled_2rank_nccl"))], capture_output=True,
                         text=True, env=_env(), stdin=subprocess.DEVNULL, cwd=REPO, check=False)
    # THEN it exits 0 with its output and its run complete, its atexit handlers run, and the
    # teardown skipped; its collector ran with the imports frozen and a 50,000 threshold
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [str(run), "atexit ran 50000 True"]
    assert "imported" in out.stderr
    assert (run / "findings.json").is_file()
    assert rendered.rendered_path(run, "summary").is_file()
    # (the same command called by a test, not as the command line, returns as before and
    # leaves the collector alone: this test process is still here, thresholds as they were)
    before = gc.get_threshold(), gc.get_freeze_count()
    res = CliRunner().invoke(main, ["import", "-o", str(tmp_path / "again"), "--no-progress",
                                    str(trace_dir("hta_sampled_2rank_nccl"))])
    assert res.exit_code == 0, res.output
    assert (gc.get_threshold(), gc.get_freeze_count()) == before
