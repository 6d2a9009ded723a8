"""The window schedule: which steps are recorded."""

from __future__ import annotations

from dsprof.collectors.window_schedule import (
    BOOTSTRAP,
    NONE,
    RECORD,
    RECORD_AND_SAVE,
    WARMUP,
    planned_action,
)
from dsprof.settings import Settings


def plan(n, **kw):
    s = Settings.load(env={}, **kw)
    return [planned_action(k, s) for k in range(n)]


def test_default_schedule_records_steps_7_to_9_once():
    p = plan(14)
    assert p[0] == BOOTSTRAP
    assert p[1:6] == [NONE] * 5
    assert p[6] == WARMUP
    assert p[7:10] == [RECORD, RECORD, RECORD_AND_SAVE]
    assert p[10:] == [NONE] * 4


def test_repeat_zero_records_until_the_end():
    p = plan(12, wait=1, warmup=1, active=2, repeat=0)
    assert p[1:] == [NONE, WARMUP, RECORD, RECORD_AND_SAVE] * 2 + [NONE, WARMUP, RECORD]


def test_no_wait_keeps_one_step_between_sessions():
    # wait 0 and warmup 0 would start a session right where the previous one stopped
    p = plan(7, wait=0, warmup=0, active=1, repeat=3)
    assert p[1:] == [WARMUP, RECORD_AND_SAVE] * 3
