"""Run a script as `python SCRIPT ARGS` would, recording optimizer-step times (for overhead.py).

The same kind of hook dsprof uses (a global optimizer step post-hook, one clock read and an
append), so the plain run's step times are measured the way dsprof measures its own.
"""

import json
import os
import runpy
import sys
import time

from torch.optim.optimizer import register_optimizer_step_post_hook

start = time.time_ns()
bounds: list[int] = []
cpu: list[int] = []
register_optimizer_step_post_hook(
    lambda *a: (bounds.append(time.time_ns()), cpu.append(time.thread_time_ns())))
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path[0] = os.path.dirname(os.path.abspath(script))
try:
    runpy.run_path(script, run_name="__main__")
finally:
    with open(os.environ["PLAIN_STEPS_OUT"], "w") as fh:
        json.dump({"start_ns": start, "boundaries_ns": bounds, "cpu_ns": cpu}, fh)
