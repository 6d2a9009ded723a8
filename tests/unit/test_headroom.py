"""Stack headroom for dsprof's work on the script's stack (dsprof.headroom): the limit is
raised inside the block, and the script's own value is back after it, whatever happened."""

from __future__ import annotations

import sys
import threading

import pytest

from dsprof import headroom
from dsprof.collectors import script_signals


@pytest.fixture
def low_limit():
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(250)
    yield 250
    sys.setrecursionlimit(before)


def _recurse(n: int) -> int:
    return 0 if n == 0 else 1 + _recurse(n - 1)


def test_the_block_gets_frames_beyond_the_scripts_limit(low_limit):
    # GIVEN a script's limit of 250 WHEN dsprof's work recurses 400 frames deep in a block
    with headroom.headroom():
        assert sys.getrecursionlimit() == low_limit + headroom.FRAMES
        depth = _recurse(400)
    # THEN it runs, and the script's limit is back after the block
    assert depth == 400
    assert sys.getrecursionlimit() == low_limit
    with pytest.raises(RecursionError):  # the script's own limit holds for its own code
        _recurse(400)


def test_the_scripts_limit_is_back_when_the_block_raises(low_limit):
    # GIVEN dsprof's work that fails inside the block
    with pytest.raises(ValueError, match="collector"), headroom.headroom():
        raise ValueError("collector failed")
    # THEN the script's limit is back all the same
    assert sys.getrecursionlimit() == low_limit


def test_blocks_open_on_two_threads_restore_once_the_last_ends(low_limit):
    # GIVEN a block on another thread that is still open when this thread's block ends
    entered, release, done = threading.Event(), threading.Event(), threading.Event()

    def other() -> None:
        with headroom.headroom():
            entered.set()
            release.wait(10)
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    entered.wait(10)
    with headroom.headroom():
        raised = sys.getrecursionlimit()
    # THEN the raise holds while the other is open, and the script's value is back (not the
    # raised one the other thread's block found) once both end
    assert raised == low_limit + headroom.FRAMES
    assert sys.getrecursionlimit() == raised
    release.set()
    thread.join(10)
    assert done.is_set()
    assert sys.getrecursionlimit() == low_limit


def test_a_limit_set_inside_the_block_by_someone_else_stays(low_limit):
    # GIVEN code inside the block that sets a limit of its own (inductor sets 2000 when it
    # compiles)
    with headroom.headroom():
        sys.setrecursionlimit(5000)
    # THEN that limit is left as it was set
    assert sys.getrecursionlimit() == 5000


def test_the_step_boundary_work_has_headroom_and_the_scripts_handlers_its_limit(low_limit):
    # GIVEN dsprof's step-boundary work (a deferring hook) and its session start (deferred)
    seen = []

    @script_signals.deferring
    def boundary_work() -> None:
        seen.append(sys.getrecursionlimit())

    boundary_work()
    with script_signals.deferred():
        seen.append(sys.getrecursionlimit())
    # THEN both ran with headroom, and the script's limit is back after each
    assert seen == [low_limit + headroom.FRAMES] * 2
    assert sys.getrecursionlimit() == low_limit


def test_a_shallow_stack_under_the_default_limit_sees_no_raise():
    # GIVEN the default limit and a stack far from it (a script's own threads read the limit,
    # which is the interpreter's: a raise would show to them and let them recurse deeper)
    assert sys.getrecursionlimit() >= 1000
    before = sys.getrecursionlimit()
    seen = []
    # WHEN dsprof's work runs in a block, and another thread reads the limit meanwhile
    with headroom.headroom():
        reader = threading.Thread(target=lambda: seen.append(sys.getrecursionlimit()))
        reader.start()
        reader.join(10)
        seen.append(sys.getrecursionlimit())
    # THEN nothing changed: there was room enough
    assert seen == [before, before]


def test_a_deep_stack_near_the_default_limit_gets_the_raise():
    # GIVEN a stack with fewer than NEEDED frames left under the limit
    limit = sys.getrecursionlimit()
    seen = []

    def deep(n: int) -> None:
        if n:
            deep(n - 1)
            return
        with headroom.headroom():
            seen.append(sys.getrecursionlimit())
            seen.append(_recurse(headroom.NEEDED))  # dsprof's work needs its frames

    deep(limit - headroom.NEEDED // 2)
    # THEN the block had the raise, and the limit is back after it
    assert seen == [limit + headroom.FRAMES, headroom.NEEDED]
    assert sys.getrecursionlimit() == limit
