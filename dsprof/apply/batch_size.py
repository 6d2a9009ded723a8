"""``DS_BATCH_SIZE=N``: every DataLoader the script builds with a ``batch_size`` uses N instead.

The batch-size analyzer predicts the largest batch that fits; ``dsprof tune batch-size`` and
``dsprof run --apply ID`` try it through this knob, with no change to the script. The knob
wraps ``DataLoader.__init__`` and replaces the ``batch_size`` argument (positional or keyword,
or the default 1); a loader built with a ``batch_sampler`` (which fixes its own batches) is
left alone and the knob says so. A script that makes its batches without a DataLoader cannot be
changed this way.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from dsprof.apply import Knob
from dsprof.errors import ConfigError
from dsprof.log import logger


class BatchSizeKnob(Knob):
    env = "DS_BATCH_SIZE"
    doc = "batch size every DataLoader of the script uses"

    def parse(self) -> None:
        try:
            self.batch_size = int(self.value)
        except ValueError:
            self.batch_size = 0
        if self.batch_size < 1:
            raise ConfigError(f"{self.env}={self.value!r}: give a batch size >= 1")
        self.changed: list[int] = []
        self._original: Any = None

    def install(self) -> None:
        from torch.utils.data import DataLoader

        original = self._original = DataLoader.__init__
        signature = inspect.signature(original)
        knob = self

        @functools.wraps(original)
        def init(loader: Any, *args: Any, **kwargs: Any) -> None:
            bound = signature.bind(loader, *args, **kwargs)
            if bound.arguments.get("batch_sampler") is not None:
                logger.warning("%s: a DataLoader with a batch_sampler keeps its batches",
                               knob.env)
            elif bound.arguments.get("batch_size", 1) is not None:
                knob.changed.append(int(bound.arguments.get("batch_size", 1)))
                bound.arguments["batch_size"] = knob.batch_size
            original(*bound.args, **bound.kwargs)

        DataLoader.__init__ = init  # type: ignore[method-assign]

    def uninstall(self) -> None:
        if self._original is not None:
            from torch.utils.data import DataLoader

            DataLoader.__init__ = self._original  # type: ignore[method-assign]
            self._original = None
        if not self.changed:
            logger.warning("%s: the script built no DataLoader with a batch_size; its batches "
                           "are unchanged", self.env)

    def report(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "replaced": self.changed}
