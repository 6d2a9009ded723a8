"""Rank clocks: how each rank's timestamps relate to rank 0's.

Every rank stamps events with the epoch clock (``perf_counter_ns`` shifted once to
``time_ns``, the clock Kineto uses). Ranks on one host read the same system clock, so their
offset is exactly 0 and needs no measuring. Ranks on other hosts differ by their NTP error.

When torch's elastic launcher started the job (``TORCHELASTIC_USE_AGENT_STORE=True``: the
agent hosts the rendezvous key-value store at MASTER_ADDR:MASTER_PORT before any user code
runs), each rank measures its offset against rank 0 with a Cristian-style exchange over that
store: rank r stamps ``t0``, sets a ping key, reads rank 0's reply stamp ``T`` and stamps
``t1``; offset = (t0 + t1) / 2 - T, keeping the round with the smallest round trip (the
offset's error is at most half of it).

The exchange runs in a thread of its own, started with the session (the script's
``import torch``): the ranks reach their imports at different times, and rank 0, which
answers each rank in turn, would otherwise hold its script inside ``import torch`` until the
last rank had arrived (up to the store's timeout per rank). The thread spends its life in
the store's blocking calls, which release the GIL. It is over in milliseconds once every
rank has started; at the session's end a rank still waiting is woken by a key it sets
itself, and its clock is recorded as unmeasured.

The record per rank: ``{host, epoch_minus_monotonic_ns, offset_ns, rtt_ns, method}``.
Analyses align a rank with rank 0 by subtracting ``offset_ns`` only when the rank is on
another host than rank 0 (on the same host the measured value is noise around 0).
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from dsprof.hidden_threads import HiddenThread
from dsprof.log import logger

ROUNDS = 5
# how long rank 0 waits for one rank's ping before it answers the next ranks
PING_WAIT_S = 60.0
# how long a finishing rank waits for an exchange still under way before it gives up on it
FINISH_WAIT_S = 1.0
# a woken waiter reads this instead of a time stamp
CANCELLED = b"cancelled"


class ClockExchange:
    """This rank's clock record, measured against rank 0's in a background thread.

    Args:
        rank, world_size: the rank's place in the job.
        now_ns: the session's clock (epoch ns).
        epoch_minus_monotonic_ns: the shift from the monotonic clock to the epoch clock.
    """

    def __init__(self, rank: int, world_size: int, now_ns: Callable[[], int],
                 epoch_minus_monotonic_ns: int):
        self.rank, self.world_size, self.now_ns = rank, world_size, now_ns
        self._record: dict[str, Any] = {
            "host": socket.gethostname(), "epoch_minus_monotonic_ns": epoch_minus_monotonic_ns,
            "offset_ns": 0, "rtt_ns": None,
            "method": "reference" if rank == 0 else "unmeasured"}
        self._thread: HiddenThread | None = None
        self._done = threading.Event()
        self._cancelled = False
        self._prefix = f"dsprof/clock/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        self._waiting_on: str | None = None  # the key the thread blocks on now

    def start(self) -> None:
        """Start measuring where the launcher's store exists (nothing to do elsewhere)."""
        if self.world_size < 2 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
            self._done.set()
            return
        self._thread = HiddenThread(self._run, "dsprof-clock")  # dsprof/hidden_threads.py
        self._thread.start()

    def record(self) -> dict[str, Any]:
        """The record as it stands (unmeasured until the exchange is over)."""
        return dict(self._record)

    def finish(self, wait_s: float = FINISH_WAIT_S) -> dict[str, Any]:
        """The session ends: give an exchange under way ``wait_s`` more, then wake the
        thread from its wait (a key this rank sets itself) and return the record."""
        if self._thread is None or not self._thread.is_alive():
            return self.record()
        if not self._done.wait(wait_s):
            # flag first, key second; the thread names its key first, reads the flag second:
            # either it sees the flag or this wakes the key it waits on
            self._cancelled = True
            key = self._waiting_on
            if key is not None:
                try:
                    self._store(timeout_s=5.0).set(key, CANCELLED)
                except Exception as exc:  # noqa: BLE001 - the thread is a daemon: it may stay
                    logger.debug("clock exchange: could not wake its thread: %s: %s",
                                 type(exc).__name__, exc)
            self._thread.join(timeout=2.0)
            if self._record["method"] == "unmeasured" and self.rank != 0:
                logger.debug("clock exchange: rank 0 had not answered by the end of the "
                             "session; this rank's clock offset is unmeasured")
        return self.record()

    # -- the thread --------------------------------------------------------------------------
    def _store(self, timeout_s: float) -> Any:
        from torch.distributed import TCPStore

        return TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                        is_master=False, timeout=_dt.timedelta(seconds=timeout_s))

    def _run(self) -> None:
        try:
            if self.rank == 0:
                self._answer()
            else:
                measured = self._measure()
                if measured is not None:
                    self._record.update(offset_ns=measured[0], rtt_ns=measured[1],
                                        method="store-exchange")
        except Exception as exc:  # noqa: BLE001 - a clock we cannot measure is recorded as such
            if not self._cancelled:
                logger.debug("clock exchange with rank 0 failed: %s: %s",
                             type(exc).__name__, exc)
        finally:
            self._done.set()

    def _answer(self) -> None:
        """Rank 0: answer each rank's pings in turn; a rank that does not ping within
        ``PING_WAIT_S`` is skipped (it has no dsprof session, or it died)."""
        store = self._store(timeout_s=PING_WAIT_S)
        for r in range(1, self.world_size):
            for i in range(ROUNDS):
                self._waiting_on = f"{self._prefix}/ping/{r}/{i}"
                if self._cancelled:  # read after the key is named: finish() wakes that key
                    return
                try:
                    store.wait([self._waiting_on])
                except Exception as exc:  # noqa: BLE001 - a timeout: on to the next rank
                    logger.debug("clock exchange: rank %d did not ping: %s", r, exc)
                    break
                if self._cancelled:
                    return
                store.set(f"{self._prefix}/pong/{r}/{i}", str(self.now_ns()))
        self._waiting_on = None

    def _measure(self) -> tuple[int, int] | None:
        """A rank > 0: the best of ``ROUNDS`` round trips; None when cancelled first."""
        # rank 0 may be answering ranks that arrived before this one: the wait is the
        # session's, until finish() wakes it
        store = self._store(timeout_s=24 * 3600.0)
        best: tuple[int, int] | None = None
        for i in range(ROUNDS):
            self._waiting_on = f"{self._prefix}/pong/{self.rank}/{i}"
            if self._cancelled:  # read after the key is named: finish() wakes that key
                return None
            t0 = self.now_ns()
            store.set(f"{self._prefix}/ping/{self.rank}/{i}", "1")
            reply = store.get(self._waiting_on)
            t1 = self.now_ns()
            if self._cancelled or reply == CANCELLED:
                return None
            rtt = t1 - t0
            if best is None or rtt < best[1]:
                best = ((t0 + t1) // 2 - int(reply), rtt)
        self._waiting_on = None
        return best
