"""``DS_DATALOADER_WORKERS=N``: load batches in N worker processes.

The input-pipeline analyzer advises a worker count for a DataLoader that loads on the training
thread, or more workers for one whose workers cannot keep up. This knob applies the pasted
``num_workers=N, persistent_workers=True`` without a code change: ``DataLoader.__init__`` is
wrapped so that a loader created with fewer than N workers gets ``num_workers=N`` and
``persistent_workers=True`` (no worker start-up per epoch, which the advice assumes). A loader
the script already gave N or more workers keeps its own setting: the advice never lowers it.
"""

from __future__ import annotations

import inspect
from typing import Any

from dsprof.apply import Knob
from dsprof.errors import ConfigError


class DataLoaderWorkersKnob(Knob):
    env = "DS_DATALOADER_WORKERS"
    doc = "N: DataLoaders created with fewer than N workers get N persistent worker processes"

    def parse(self) -> None:
        if not self.value.isdigit() or int(self.value) < 1:
            raise ConfigError(f"{self.env}={self.value!r}: expected a worker count >= 1")
        self.workers = int(self.value)
        self.changed: list[str] = []
        self._original: Any = None

    def install(self) -> None:
        from torch.utils.data import DataLoader

        original = DataLoader.__init__
        signature = inspect.signature(original)
        knob = self

        def __init__(loader: Any, *args: Any, **kwargs: Any) -> None:
            try:
                bound = signature.bind(loader, *args, **kwargs)
                if (bound.arguments.get("num_workers", 0) or 0) < knob.workers:
                    bound.arguments["num_workers"] = knob.workers
                    bound.arguments["persistent_workers"] = True
                    knob.changed.append(type(bound.arguments["dataset"]).__name__)
                    args, kwargs = bound.args[1:], bound.kwargs
            except TypeError:
                pass  # let DataLoader report the bad call itself
            original(loader, *args, **kwargs)

        __init__.__wrapped__ = original  # type: ignore[attr-defined]
        DataLoader.__init__ = __init__  # type: ignore[method-assign]
        self._original = original

    def uninstall(self) -> None:
        if self._original is not None:
            from torch.utils.data import DataLoader

            DataLoader.__init__ = self._original  # type: ignore[method-assign]
            self._original = None

    def report(self) -> dict[str, Any]:
        return {"workers": self.workers, "loaders_changed": self.changed}
