"""dsprof: profile and debug PyTorch training and inference.

The public Python API. Importing dsprof is cheap: it imports neither torch, Dash nor any GPU
library until a function needs them.

    import dsprof
    with dsprof.profile(schedule=dsprof.schedule(wait=1, active=2)) as prof:
        for batch in loader:
            ...
            prof.step()               # or dsprof.step(): mark a step by hand
    prof.run.sql("SELECT step, dur_ns FROM steps")
    run = dsprof.load("dsprof-runs/train-20261129-101500")
    run.sql("SELECT name, sum(self_ns) FROM ops GROUP BY name ORDER BY 2 DESC LIMIT 5")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dsprof._version import __version__

if TYPE_CHECKING:
    from dsprof.profiler import Profile
    from dsprof.run import Run
    from dsprof.settings import Schedule

__all__ = ["__version__", "load", "memory_summary", "profile", "schedule", "step"]


def profile(output: Any = None, *, schedule: Any = None, name: str = "profile",
            analyze: bool = True, **knobs: Any) -> Profile:
    """Profile the code in a ``with`` block, like ``dsprof run`` profiles a script.

    Args:
        output: the run directory to write (default ``dsprof-runs/<name>-<stamp>``).
        schedule: ``dsprof.schedule(wait=, warmup=, active=, repeat=)`` or a dict of those.
        name: names the default run directory.
        analyze: ingest and analyze at the end of the block (``prof.run`` is then the run).
        knobs: any other setting by name (``detect_anomaly=True``, ``max_capture_s=30``).

    Raises:
        ConfigError: a bad knob, or a session is already running.
    """
    from dsprof.profiler import Profile

    return Profile(output, schedule=schedule, name=name, analyze=analyze, **knobs)


def schedule(wait: int | None = None, warmup: int | None = None, active: int | None = None,
             repeat: int | None = None) -> Schedule:
    """Which steps :func:`profile` records op by op (see ``dsprof run --wait ...``)."""
    from dsprof.settings import Schedule

    return Schedule(wait, warmup, active, repeat)


def step() -> None:
    """Mark a step boundary in the running dsprof session (no-op when none is running).

    Use it where no optimizer steps (inference, evaluation, custom update rules); once called,
    it replaces the optimizer hook as the source of step boundaries.
    """
    import sys

    # no session module loaded, no session: and importing it would load torch, which a plain
    # ``python script.py`` that calls this before its ``import torch`` never loads here
    sessions = sys.modules.get("dsprof.collectors.session")
    session = sessions.current() if sessions is not None else None
    if session is not None:
        session.step()


def load(path: Any, *, ingest: bool = True) -> Run:
    """Open a run directory: ``run.meta``, ``run.tables``, ``run.sql(...)``, ``run.table(name)``.

    A run still being written raises :class:`dsprof.errors.RunStillRunning` ("still running, N
    steps so far"): it is read-only until it ends, and ingested once, by its own process."""
    from dsprof.run import load as _load

    return _load(path, ingest=ingest)


def memory_summary(device: Any = None) -> str:
    """Memory of ``device`` (default: this process's device) by category: parameters,
    gradients, optimizer state, inputs, activations, temporaries, other. Live now, the peak,
    and what held memory at the peak, like ``torch.cuda.memory_summary()`` for any device.

        print(dsprof.memory_summary())
    """
    from dsprof.collectors.memory_summary import memory_summary as _summary

    return _summary(device)
