"""The script's signal handlers wait for dsprof's step-boundary work and then run, raising into
the script (collectors/script_signals.py). Real signals, raised in this process."""

from __future__ import annotations

import signal
import traceback

import pytest

from dsprof.collectors import script_signals


class Late(Exception):
    pass


@pytest.fixture
def installed():
    script_signals.install()
    try:
        yield
    finally:
        script_signals.uninstall()
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)


def test_a_handler_that_fires_during_dsprofs_work_runs_as_it_ends(installed):
    calls = []

    def on_usr1(signum, frame):
        calls.append(signum)
        raise Late()

    # GIVEN the script's handler, set the usual way
    assert signal.signal(signal.SIGUSR1, on_usr1) is signal.SIG_DFL
    # THEN the script reads its own handler back, not dsprof's wrapper
    assert signal.getsignal(signal.SIGUSR1) is on_usr1
    # WHEN the signal comes in the middle of dsprof's boundary work
    with pytest.raises(Late), script_signals.deferred():
        signal.raise_signal(signal.SIGUSR1)
        assert calls == []  # dsprof's work goes on whole
        work_done = True
    # THEN the handler ran as the work ended, and its error reached the caller
    assert work_done and calls == [signal.SIGUSR1]
    # AND outside dsprof's work it runs at once, without the wrapper's frame in its traceback
    with pytest.raises(Late) as err:
        signal.raise_signal(signal.SIGUSR1)
    assert "collectors/script_signals.py" not in "".join(
        traceback.format_tb(err.value.__traceback__))


def test_handlers_set_before_are_wrapped_and_given_back():
    def before(signum, frame):
        raise Late()

    signal.signal(signal.SIGUSR1, before)
    script_signals.install()
    try:
        assert signal.getsignal(signal.SIGUSR1) is before
        with pytest.raises(Late), script_signals.deferred():
            signal.raise_signal(signal.SIGUSR1)
    finally:
        script_signals.uninstall()
    # THEN the script's own function is back in place, with signal's own functions
    assert signal.getsignal(signal.SIGUSR1) is before
    assert signal.signal is script_signals._real_signal
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)


def test_dsprofs_own_handlers_and_the_defaults_are_set_as_they_are(installed):
    from dsprof.terminate import _raise_exit

    previous = signal.signal(signal.SIGUSR1, _raise_exit)
    try:
        assert script_signals._real_getsignal(signal.SIGUSR1) is _raise_exit
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        assert script_signals._real_getsignal(signal.SIGUSR1) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR1, previous)
