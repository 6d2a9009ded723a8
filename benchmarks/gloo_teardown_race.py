"""How often a 2-rank DDP/gloo script hangs at exit, plain vs after one torch.profiler session.

Under torch 2.13 a DDP script over gloo can hang when ``main()`` returns: the Reducer's
``~ProcessGroupGloo`` joins the gloo worker thread with the GIL held, while the worker waits for
the GIL to free the last reference to the ``contextvars.Context`` that autograd stashed in the
thread-local state its last all-reduce captured. Plain, the race is rare; in a process that has
used torch.profiler once (dsprof always does) it is not. This script measures both, side by side
in one run, without dsprof: the same training script under torchrun, each rank either plain or
preceded by a profiler session started and stopped before the script runs; and a third arm,
``mitigated``: the profiler session, then what dsprof does about the race
(dsprof/collectors/process_groups.py: the groups held at each step, let go at exit once the
gloo workers are idle).

    OMP_NUM_THREADS=1 python benchmarks/gloo_teardown_race.py --runs 10

Prints, per arm, the runs that hung (killed after --timeout seconds) out of those started. The
machine's load matters (the race needs the worker thread to miss the CPU): run it on a busy
machine, or beside two busy loops, to see it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]

SCRIPT = '''
import sys
import torch
import torch.distributed as dist
from torch import nn

ARM = sys.argv[1]
if ARM != "plain":  # one profiler session, before the training script even starts
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    prof.start()
    torch.ones(2).sum()
    prof.stop()
if ARM == "mitigated":  # what dsprof does: hold the groups at each step, let go at exit
    import atexit
    from dsprof.collectors import process_groups
    atexit.register(process_groups.release)


def main():
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(
        nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(16, 64), torch.randint(0, 10, (16,))
    for _ in range(12):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if ARM == "mitigated":
            process_groups.keep_alive()
    dist.destroy_process_group()


main()
'''


def one_run(script: Path, arm: str, timeout: float) -> bool:
    """True when the job hung (still running after ``timeout`` s; its process group is
    killed)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                             "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0",
                             str(script), arm], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(timeout=timeout)
        return False
    except subprocess.TimeoutExpired:
        # torchrun starts each rank in a session of its own: kill the ranks by pid, not only
        # torchrun's group, or every hung rank is left behind
        ranks = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, 9)
        for rank in ranks:
            with contextlib.suppress(psutil.NoSuchProcess):
                rank.kill()
        proc.wait()
        return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10, help="runs per arm (alternating)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds before a run hung")
    args = ap.parse_args()
    hung = {"plain": 0, "profiled": 0, "mitigated": 0}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "ddp_teardown.py"
        script.write_text(SCRIPT)
        t0 = time.monotonic()
        for _ in range(args.runs):
            for arm in hung:  # alternate, so that load hits both arms alike
                hung[arm] += one_run(script, arm, args.timeout)
    for arm, n in hung.items():
        print(f"{arm:9s} hung {n} of {args.runs}")
    print(f"({time.monotonic() - t0:.0f} s)")


if __name__ == "__main__":
    main()
