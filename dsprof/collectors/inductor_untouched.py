"""dsprof's profiler preparation without importing torch._inductor into the script's process.

``torch.profiler.profile.prepare_trace()`` asks ``hasattr(torch, "_inductor")`` to read
Inductor's ``triton.cudagraphs`` setting; torch's lazy module ``__getattr__`` answers by
importing ``torch._inductor``, and with it ``torch._dynamo``: about 850 modules and 1.0 s on
this 2-core machine (torch 2.13), at the script's ``import torch`` line, where dsprof's session
starts. A script that never loads them (inference without an optimizer: torch 2.13's optimizer
constructor loads Dynamo) then ran another program under dsprof: Dynamo's atexit handlers ran
at its exit and cleared the interpreter's Ctrl-C mark, so a script a KeyboardInterrupt ended
exited 1 where plain Python dies of SIGINT (-2), and ``sys.modules`` held modules it never
imported.

Where ``torch._inductor`` is not loaded, its setting is its default, read from the
environment the way Inductor's ``config.py`` reads it (``TORCHINDUCTOR_CUDAGRAPHS``); the
preparation runs with the lazy lookup of ``_inductor`` refused to this thread only (another
thread of the script that reaches for ``torch._inductor`` meanwhile imports it as always).
Where it is loaded, torch reads its config as it does without dsprof.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

_MODULE = "torch._inductor"


@contextlib.contextmanager
def inductor_not_imported(prof: Any) -> Iterator[None]:
    """Around ``prof.prepare_trace()``: it imports no ``torch._inductor`` that is not loaded,
    and ``prof.has_cudagraphs`` says what Inductor's default config would."""
    import torch

    lazy = torch.__dict__.get("__getattr__")
    if _MODULE in sys.modules or lazy is None:
        yield
        return
    preparing = threading.get_ident()
    refused: list[bool] = []

    def __getattr__(name: str) -> Any:
        if name == "_inductor" and threading.get_ident() == preparing:
            refused.append(True)
            raise AttributeError(f"module 'torch' has no attribute {name!r}")
        return lazy(name)

    torch.__getattr__ = __getattr__  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if torch.__dict__.get("__getattr__") is __getattr__:
            torch.__getattr__ = lazy  # type: ignore[attr-defined]
        if refused and hasattr(prof, "has_cudagraphs"):
            prof.has_cudagraphs = _cudagraphs()


def _cudagraphs() -> bool:
    """Inductor's ``triton.cudagraphs``: its config's where another thread loaded it meanwhile,
    else the default its ``config.py`` reads from the environment."""
    config = sys.modules.get(f"{_MODULE}.config")
    if config is not None:
        return bool(getattr(getattr(config, "triton", None), "cudagraphs", False))
    return os.environ.get("TORCHINDUCTOR_CUDAGRAPHS") == "1"
