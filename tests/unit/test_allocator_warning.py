"""dsprof's first window frees a block of its own allocated before the profiler started, with
descriptor 2 on a pipe, so that torch's "Memory block of unknown size" warning (logged at a
process's first such free) is not the script's (collectors/allocator_warning.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from dsprof.collectors.allocator_warning import _WARNING, _with_stderr_captured

LINE = (b"[W1205 01:08:16.087787863 CPUAllocator.cpp:245] Memory block of unknown size was "
        b"allocated before the profiling started, profiler results will not include the "
        b"deallocation event\n")


def test_the_pattern_takes_torchs_line_and_nothing_else():
    text = b"its own line\n" + LINE + b"another\n"
    assert _WARNING.sub(b"", text) == b"its own line\nanother\n"
    assert _WARNING.sub(b"", b"Memory block of unknown size\n") == b"Memory block of unknown size\n"
    # a rank's line, as torch.distributed prefixes it
    assert _WARNING.sub(b"", b"[rank1]:" + LINE + b"next\n") == b"next\n"


def test_what_is_written_to_descriptor_2_meanwhile_is_captured_and_then_restored(capfd):
    def action():
        os.write(2, b"during\n")

    assert _with_stderr_captured(action) == b"during\n"
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def test_a_real_profiler_window_logs_the_warning_into_the_probe_not_stderr():
    # a fresh process: the allocator's counter is per process
    code = textwrap.dedent("""
        import sys, torch
        from torch.profiler import profile
        from dsprof.collectors.allocator_warning import UnknownFreeProbe
        older = [torch.randn(64) for _ in range(10)]
        probe = UnknownFreeProbe()
        with profile(profile_memory=True):
            probe.absorb()
            sys.stderr.write("own line\\n"); sys.stderr.flush()
            del older[:]
        print("done")
    """)
    env = {**os.environ, "KINETO_LOG_LEVEL": "6"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "done\n"
    assert proc.stderr == "own line\n"
    # AND without the probe the same program prints torch's line (the test would catch a torch
    # that stopped logging it, and so the probe no longer being needed)
    plain = subprocess.run([sys.executable, "-c", code.replace("probe.absorb()", "pass")],
                           capture_output=True, text=True, timeout=120, env=env, check=False)
    assert "Memory block of unknown size" in plain.stderr
