"""Keeping torch's "Memory block of unknown size" warning, which dsprof's window causes, out of
the script's stderr.

With ``profile_memory=True``, c10's CPU allocator records the size of every block allocated
while the profiler runs. Freeing a block allocated *before* it started is an "unknown" free,
and the allocator logs, on the 1st, 1001st, 2001st ... such free of the process
(``ProfiledCPUMemoryReporter::Delete``, c10/core/CPUAllocator.cpp)::

    [W1205 01:08:16.087787863 CPUAllocator.cpp:245] Memory block of unknown size was
    allocated before the profiling started, profiler results will not include the
    deallocation event

straight to file descriptor 2. Every script freed such a block in dsprof's first window (its
last step's activations, a loader's batch), so every run under dsprof printed a line of
torch's that the plain script never prints.

So the first unknown free of the process is dsprof's own: right after the first window
starts, a block allocated before it is freed while descriptor 2 points at a pipe; the warning
lands there, and anything else that another thread wrote in those microseconds is passed on to
the real stderr unchanged. A script whose windows free over 999 older blocks still sees the
1001st's warning: the allocator's counter cannot be read or reset from Python.
"""

from __future__ import annotations

import os
import re
from typing import Any

from dsprof.log import logger

# one line of c10's logging: "[W<date> <time> CPUAllocator.cpp:<line>] Memory block of unknown
# size was allocated before the profiling started, ...", with "[rank1]:" in front once
# torch.distributed has set its rank prefix
_WARNING = re.compile(
    rb"(?:\[rank\d+\]:)?\[W[^\]\n]*CPUAllocator\.cpp:\d+\] Memory block of unknown size"
    rb"[^\n]*\n?")


class UnknownFreeProbe:
    """A block allocated before the profiler starts, freed with the warning absorbed once it
    runs (``absorb``); ``absorb`` is a no-op after the first time in a process."""

    _done = False

    def __init__(self) -> None:
        self._block: Any = None
        if not UnknownFreeProbe._done:
            import torch

            self._block = torch.empty(16, dtype=torch.uint8)  # a real 16-byte CPU allocation

    def absorb(self) -> None:
        """Free the block now (the profiler is recording memory) with descriptor 2 on a pipe."""
        holder, self._block = [self._block], None
        if holder[0] is None or UnknownFreeProbe._done:
            return
        UnknownFreeProbe._done = True
        # the list holds the only reference: clearing it frees the block, inside the capture
        captured = _with_stderr_captured(holder.clear)
        if captured is None:
            return
        rest = _WARNING.sub(b"", captured)
        if len(rest) != len(captured):
            logger.debug("absorbed torch's 'Memory block of unknown size' warning")
        if rest:
            _write_all(2, rest)


def _with_stderr_captured(action: Any) -> bytes | None:
    """Run ``action`` with descriptor 2 on a pipe; return what was written to it, or None
    (after running ``action`` plainly) when descriptor 2 cannot be redirected (closed)."""
    try:
        saved = os.dup(2)
    except OSError:
        action()
        return None
    try:
        read_end, write_end = os.pipe()
    except OSError:
        os.close(saved)
        action()
        return None
    try:
        os.dup2(write_end, 2)
        try:
            action()
        finally:
            os.dup2(saved, 2)
            os.close(write_end)
        chunks = []
        while True:  # the writers are gone: read to the end (a warning is ~190 bytes)
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(read_end)
        os.close(saved)


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass
