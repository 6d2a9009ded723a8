"""The rank clock exchange's thread (dsprof/collectors/clock.py) on a real TCPStore that the
test hosts, as torchrun's agent does."""

from __future__ import annotations

import datetime
import socket
import threading
import time

import pytest
from torch.distributed import TCPStore

from dsprof.collectors.clock import ClockExchange


@pytest.fixture
def agent_store(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = TCPStore("127.0.0.1", port, is_master=True,
                     timeout=datetime.timedelta(seconds=30))
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    yield store


def exchange(rank: int) -> ClockExchange:
    return ClockExchange(rank, 2, time.time_ns, 0)


@pytest.mark.parametrize("rank", [0, 1])
def test_a_rank_whose_peer_never_comes_ends_its_exchange_at_the_sessions_end(agent_store, rank):
    # GIVEN one rank's exchange, its peer (rank 0's answers, rank 1's pings) never there
    ex = exchange(rank)
    ex.start()
    time.sleep(0.2)
    assert ex._thread is not None and ex._thread.is_alive()
    # WHEN its session ends
    t0 = time.monotonic()
    rec = ex.finish(wait_s=0.1)
    # THEN the thread is woken from its wait and gone, the clock unmeasured (rank 0: the
    # reference), long before the store's timeouts
    assert not ex._thread.is_alive() and time.monotonic() - t0 < 5
    assert rec["method"] == ("reference" if rank == 0 else "unmeasured")
    assert rec["offset_ns"] == 0 and rec["rtt_ns"] is None


def test_two_ranks_that_start_apart_measure_the_offset(agent_store):
    # GIVEN rank 1 starting its exchange a second after rank 0 (which does not wait for it)
    zero, one = exchange(0), exchange(1)
    zero.start()
    late = threading.Timer(1.0, one.start)
    late.start()
    late.join()
    # WHEN both sessions end
    rec = one.finish(wait_s=10)
    zero.finish(wait_s=10)
    # THEN rank 1's offset is measured: one clock here, so it is within the round trip
    assert rec["method"] == "store-exchange"
    assert abs(rec["offset_ns"]) <= rec["rtt_ns"] + 1_000_000
    assert zero.record()["method"] == "reference"


def test_without_the_launchers_store_there_is_no_thread(monkeypatch):
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    ex = exchange(1)
    ex.start()
    assert ex._thread is None and ex.finish()["method"] == "unmeasured"
