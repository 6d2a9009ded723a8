"""How a finding words a figure of one step, on a run that marks steps and on one that does not.

An analyzer sums its figure over the steps and divides by their count. On a run or imported
trace that marks no steps it divides by one: the figure is the whole capture's, so "3.1 ms per
step" there reads "3.1 ms in the trace" (an import) or "3.1 ms in the run" (a ``dsprof run``).
Every finding text that states a figure of a step takes its phrase from here
(``Context.words``), so the wording is decided in one place; on a run with steps each phrase is
the one the analyzers printed before (their findings stay byte-identical).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepWords:
    """The phrases of a figure of one step (``has_steps``) or of the whole ``capture``."""

    has_steps: bool
    capture: str
    """What was measured when there are no steps: "the trace" (an import) or "the run"."""

    @classmethod
    def of(cls, has_steps: bool, is_run: bool) -> StepWords:
        return cls(has_steps, "the run" if is_run else "the trace")

    def _either(self, with_steps: str, without: str) -> str:
        return with_steps if self.has_steps else without

    @property
    def in_capture(self) -> str:
        """ "in the trace" / "in the run", steps or not: a total over the capture."""
        return f"in {self.capture}"

    @property
    def per_step(self) -> str:
        """ "3.1 ms per step" / "3.1 ms in the trace"."""
        return self._either("per step", self.in_capture)

    @property
    def a_step(self) -> str:
        """ "+41 ms a step" / "+41 ms in the trace"."""
        return self._either("a step", self.in_capture)

    @property
    def each_step(self) -> str:
        """ "two optimizers step each step" / "two optimizers step in the trace"."""
        return self._either("each step", self.in_capture)

    @property
    def slash_step(self) -> str:
        """ "2.0 MiB/step" / "2.0 MiB in the trace"."""
        return self._either("/step", f" {self.in_capture}")

    @property
    def of_the_step(self) -> str:
        """ "(12% of the step)" / "(12% of the trace)"."""
        return self._either("of the step", f"of {self.capture}")

    @property
    def of_each_step(self) -> str:
        """ "waits 40% of each step" / "waits 40% of the trace"."""
        return self._either("of each step", f"of {self.capture}")

    @property
    def each_steps(self) -> str:
        """ "of each step's wait" / "of the trace's wait"."""
        return self._either("each step's", f"{self.capture}'s")

    @property
    def every_steps(self) -> str:
        """ "keeps every step's graph alive" / "keeps the trace's graph alive"."""
        return self._either("every step's", f"{self.capture}'s")
