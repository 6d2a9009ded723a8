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


def _as_dsprof(name, *args):
    """``signal.<name>(*args)`` called from a frame whose module is dsprof's (dsprof's own
    code reads and sets the real handlers)."""
    scope = {"__name__": "dsprof.collectors.fake", "signal": signal}
    exec(f"def from_dsprof(*args):\n    return signal.{name}(*args)\n", scope)  # noqa: S102
    return scope["from_dsprof"](*args)


def test_the_script_reads_the_default_where_dsprofs_own_handler_stands(installed):
    from dsprof.terminate import _raise_exit

    # GIVEN dsprof's own handler, installed over the default (as its SIGTERM handler is)
    script_signals._real_signal(signal.SIGUSR1, _raise_exit)
    # THEN the script reads the default, as without dsprof (Lightning chains what it finds),
    # and dsprof's own code the real handler
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    assert _as_dsprof("getsignal", signal.SIGUSR1) is _raise_exit


def test_a_handler_of_dsprofs_the_script_replaced_is_back_when_it_sets_the_default(installed):
    from dsprof.terminate import _raise_exit

    script_signals._real_signal(signal.SIGUSR1, _raise_exit)

    def own(signum, frame):
        pass

    # WHEN the script sets its own handler THEN the previous one it is given is the default
    assert signal.signal(signal.SIGUSR1, own) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGUSR1) is own
    # WHEN it puts back what it was given (a framework's teardown) THEN dsprof's own handler
    # stands again (a later signal still saves the run), which the script reads as the default
    assert signal.signal(signal.SIGUSR1, signal.SIG_DFL) is own
    assert script_signals._real_getsignal(signal.SIGUSR1) is _raise_exit
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    # AND where dsprof's own code sets the default, the default it is
    _as_dsprof("signal", signal.SIGUSR1, signal.SIG_DFL)
    assert script_signals._real_getsignal(signal.SIGUSR1) is signal.SIG_DFL
