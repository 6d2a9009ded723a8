"""How long the stepping thread waited for a CPU in each step: the run-queue delay Linux keeps
per thread (``/proc/thread-self/schedstat``, second field, ns), read at every boundary
(``steps.runq_ns``).

A step's wall time less the thread's CPU time is time off the CPU, which is two things a fix
treats apart: waiting for a CPU (other processes, ranks sharing the host's cores: the
machine's noise) and sleeping (a lock, I/O, a ``time.sleep``: the program's own wait). A 2-rank
gloo job on the 2-core machine beside other jobs got "Rank 1 is a straggler" (high) where
rank 1 only waited for a CPU; a rank that sleeps 20 ms a step is one. Only the run-queue
delay tells them apart.

A kept file descriptor per thread, read with ``pread``: 0.4 us a boundary (a fresh open and
read is 4.3 us). None where there is no such file (not Linux, a kernel without sched_info).
"""

from __future__ import annotations

import os
import threading


class ThreadRunq:
    """The calling thread's run-queue delay, ns since it started."""

    def __init__(self) -> None:
        self._fds: dict[int, int | None] = {}
        self._pid = os.getpid()

    def read(self) -> int | None:
        if os.getpid() != self._pid:  # a forked child: the kept files are the parent's threads'
            self.close()
            self._pid = os.getpid()
        me = threading.get_ident()
        fd = self._fds.get(me, -1)
        if fd == -1:
            try:
                fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
            except OSError:
                fd = None
            self._fds[me] = fd
        if fd is None:
            return None
        try:
            fields = os.pread(fd, 128, 0).split()
            return int(fields[1])
        except (OSError, IndexError, ValueError):
            return None

    def close(self) -> None:
        for fd in self._fds.values():
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._fds.clear()
