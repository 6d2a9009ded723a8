"""Rank clocks: how each rank's timestamps relate to rank 0's.

Every rank stamps events with the epoch clock (``perf_counter_ns`` shifted once to
``time_ns``, the clock Kineto uses). Ranks on one host read the same system clock, so their
offset is exactly 0 and needs no measuring. Ranks on other hosts differ by their NTP error.

When torch's elastic launcher started the job (``TORCHELASTIC_USE_AGENT_STORE=True``: the
agent hosts the rendezvous key-value store at MASTER_ADDR:MASTER_PORT before any user code
runs), each rank measures its offset against rank 0 at session start with a Cristian-style
exchange over that store: rank r stamps ``t0``, sets a ping key, reads rank 0's reply stamp
``T`` and stamps ``t1``; offset = (t0 + t1) / 2 - T, keeping the round with the smallest
round trip (the offset's error is at most half of it). This happens once, at session start
(the end of the script's ``import torch``), never in the training loop; rank 0 answers each rank in turn.

The record per rank: ``{host, epoch_minus_monotonic_ns, offset_ns, rtt_ns, method}``.
Analyses align a rank with rank 0 by subtracting ``offset_ns`` only when the rank is on
another host than rank 0 (on the same host the measured value is noise around 0).
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
from collections.abc import Callable
from typing import Any

from dsprof.log import logger

ROUNDS = 5
TIMEOUT_S = 10.0


def record(rank: int, world_size: int, now_ns: Callable[[], int],
           epoch_minus_monotonic_ns: int) -> dict[str, Any]:
    out: dict[str, Any] = {"host": socket.gethostname(),
                           "epoch_minus_monotonic_ns": epoch_minus_monotonic_ns,
                           "offset_ns": 0, "rtt_ns": None, "method": "reference" if rank == 0
                           else "unmeasured"}
    if world_size < 2 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return out
    try:
        measured = _exchange(rank, world_size, now_ns)
    except Exception as exc:  # noqa: BLE001 - a clock we cannot measure is recorded as such
        logger.debug("clock exchange with rank 0 failed: %s: %s", type(exc).__name__, exc)
        return out
    if measured is not None:
        out.update(offset_ns=measured[0], rtt_ns=measured[1], method="store-exchange")
    return out


def _exchange(rank: int, world_size: int, now_ns: Callable[[], int]) -> tuple[int, int] | None:
    from torch.distributed import TCPStore

    store = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                     is_master=False, timeout=_dt.timedelta(seconds=TIMEOUT_S))
    prefix = f"dsprof/clock/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    if rank == 0:
        for r in range(1, world_size):
            for i in range(ROUNDS):
                store.wait([f"{prefix}/ping/{r}/{i}"])
                store.set(f"{prefix}/pong/{r}/{i}", str(now_ns()))
        return None
    best: tuple[int, int] | None = None
    for i in range(ROUNDS):
        t0 = now_ns()
        store.set(f"{prefix}/ping/{rank}/{i}", "1")
        ref = int(store.get(f"{prefix}/pong/{rank}/{i}"))
        t1 = now_ns()
        rtt = t1 - t0
        if best is None or rtt < best[1]:
            best = ((t0 + t1) // 2 - ref, rtt)
    return best
