"""dsprof's profiler preparation imports no torch._inductor (and so no torch._dynamo) into a
process that has not loaded it (collectors/inductor_untouched.py). A fresh process each: the
suite's own process has them loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.integration.helpers import REPO

PREPARE = textwrap.dedent("""
    import json, sys, threading
    import torch
    from torch.profiler import profile
    from dsprof.collectors.inductor_untouched import inductor_not_imported

    lazy = torch.__getattr__
    prof = profile(activities=[torch.profiler.ProfilerActivity.CPU])
    seen = {}
    with inductor_not_imported(prof):
        prof.prepare_trace()
        seen["here"] = hasattr(torch, "_inductor")
        seen["loaded in the block"] = "torch._inductor" in sys.modules
        if sys.argv[1] == "thread":  # the script's own thread reaches for it meanwhile
            other = threading.Thread(target=lambda: seen.update(thread=hasattr(torch, "_inductor")))
            other.start()
            other.join()
    prof.start_trace()
    torch.ones(3).sum()
    prof.stop_trace()
    seen["cudagraphs"] = prof.has_cudagraphs
    seen["lazy lookup back"] = torch.__getattr__ is lazy
    seen["dynamo loaded"] = "torch._dynamo" in sys.modules
    print(json.dumps(seen))
""")


def _prepare(how: str, **env: str) -> dict:
    res = subprocess.run([sys.executable, "-c", PREPARE, how], capture_output=True, text=True,
                         timeout=120, check=False, cwd=REPO,
                         env={**os.environ, "KINETO_LOG_LEVEL": "6", "PYTHONPATH": str(REPO),
                              **env})
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.splitlines()[-1])


def test_preparing_the_profiler_leaves_inductor_and_dynamo_unloaded():
    seen = _prepare("alone")
    assert seen == {"here": False, "loaded in the block": False, "cudagraphs": False,
                    "lazy lookup back": True, "dynamo loaded": False}


def test_inductors_cudagraphs_default_is_read_from_the_environment_as_inductor_reads_it():
    assert _prepare("alone", TORCHINDUCTOR_CUDAGRAPHS="1")["cudagraphs"] is True


def test_another_thread_that_reaches_for_inductor_meanwhile_gets_it():
    seen = _prepare("thread")
    assert seen["thread"] is True and seen["dynamo loaded"] is True
    assert seen["here"] is False and seen["lazy lookup back"] is True
