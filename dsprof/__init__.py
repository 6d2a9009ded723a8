"""dsprof: profile and debug PyTorch training and inference.

The public Python API. Importing dsprof is cheap: it imports neither torch, Dash nor any GPU
library until a function needs them.

    import dsprof
    for batch in loader:
        ...
        dsprof.step()                 # mark a step by hand (inference, custom loops)
    run = dsprof.load("dsprof-runs/train-20261129-101500")
    run.sql("SELECT name, sum(self_ns) FROM ops GROUP BY name ORDER BY 2 DESC LIMIT 5")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dsprof._version import __version__

if TYPE_CHECKING:
    from dsprof.run import Run

__all__ = ["__version__", "load", "memory_summary", "step"]


def step() -> None:
    """Mark a step boundary in the running dsprof session (no-op when none is running).

    Use it where no optimizer steps (inference, evaluation, custom update rules); once called,
    it replaces the optimizer hook as the source of step boundaries.
    """
    from dsprof.collectors.session import current

    session = current()
    if session is not None:
        session.step()


def load(path: Any, *, ingest: bool = True) -> Run:
    """Open a run directory: ``run.meta``, ``run.tables``, ``run.sql(...)``, ``run.table(name)``."""
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
