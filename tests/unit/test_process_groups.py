"""dsprof/collectors/process_groups.py on a real gloo process group (world size 1, a file
store) and real threads: the group is held past ``destroy_process_group``, a thread waiting
for the GIL is told apart from a parked one (read from another process's /proc), and the
release waits for the workers before it lets the group go."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from dsprof.collectors import process_groups

# timing: which thread waits for the GIL is read from the scheduler, which a busy neighbour moves
pytestmark = [pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64")
                                 or not os.path.isdir("/proc/self/task"),
                                 reason="reads Linux /proc on x86-64 or aarch64"),
              pytest.mark.timing]


@pytest.fixture
def gloo_group(tmp_path):
    import torch.distributed as dist

    # a group an earlier test of this process left held (an in-process session's DDP) is not
    # this test's: each test counts its own group only
    process_groups._kept.clear()
    dist.init_process_group("gloo", rank=0, world_size=1,
                            init_method=f"file://{tmp_path / 'store'}")
    try:
        yield dist.group.WORLD
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        process_groups._kept.clear()


def test_groups_are_held_past_destroy_and_released_once_the_workers_are_idle(gloo_group):
    import torch
    import torch.distributed as dist
    from torch import nn

    # GIVEN DDP over gloo after a step (its all-reduce ran on a gloo worker thread)
    model = nn.parallel.DistributedDataParallel(nn.Linear(8, 8))
    model(torch.randn(4, 8)).sum().backward()
    # WHEN dsprof takes its references at a step boundary
    assert process_groups.keep_alive() == 1
    assert process_groups.keep_alive() == 1  # once per group, however many steps
    held = next(iter(process_groups._kept.values()))
    assert held is gloo_group
    # THEN the script's destroy_process_group and its model going do not free the group
    dist.destroy_process_group()
    del model
    assert process_groups.kept() == 1 and len(process_groups._gloo_workers()) == 2
    # and at exit the workers are parked on their empty queues before the group goes
    assert process_groups.wait_idle(timeout_s=30)
    assert process_groups.workers_idle()
    process_groups.release()
    assert process_groups.kept() == 0


def test_a_forked_child_does_not_release_its_copies(gloo_group):
    # GIVEN a held group, and a child forked from this process (a DataLoader worker)
    assert process_groups.keep_alive() == 1
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its exit handlers call release(); the group must stay held
        process_groups.release()
        os.write(write, str(process_groups.kept()).encode())
        os._exit(0)
    os.close(write)
    # THEN the child kept its copy (destroying it would join threads the child does not have)
    assert os.read(read, 16) == b"1"
    assert os.waitpid(pid, 0)[1] == 0
    assert process_groups.kept() == 1


def test_nothing_is_held_without_a_process_group():
    assert process_groups.keep_alive() == 0
    process_groups.release()  # nothing to wait for: returns at once


# a child whose "waiter" thread waits for the GIL (the main thread keeps it in one long C
# call) and whose "parked" thread waits on a lock without a timeout, as an idle gloo worker
# waits on its queue
_CHILD = textwrap.dedent("""
    import threading, time
    lock = threading.Lock()
    lock.acquire()
    parked = threading.Thread(target=lock.acquire, daemon=True)
    parked.start()
    def spin():
        while True:
            pass
    waiter = threading.Thread(target=spin, daemon=True)
    waiter.start()
    time.sleep(0.05)
    print(parked.native_id, waiter.native_id, flush=True)
    sum(range(10 ** 10))  # one C call that keeps the GIL: the waiter thread waits for it
""")


def test_a_thread_waiting_for_the_gil_is_not_parked():
    child = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, text=True)
    try:
        parked_tid, waiter_tid = map(int, child.stdout.readline().split())
        futex = process_groups._FUTEX_SYSCALL[os.uname().machine]
        tasks = {tid: f"/proc/{child.pid}/task/{tid}" for tid in (parked_tid, waiter_tid)}
        time.sleep(0.1)  # the parked thread has reached its wait
        assert process_groups._parked(tasks[parked_tid], futex)
        # the GIL waiter re-checks every 5 ms: between two waits it may be seen running,
        # never parked
        seen = [process_groups._parked(tasks[waiter_tid], futex) for _ in range(20)
                if time.sleep(0.01) is None]
        assert not any(seen)
        # a thread that ended counts as idle
        assert process_groups._parked(f"/proc/{child.pid}/task/999999999", futex)
    finally:
        child.kill()
        child.wait()

