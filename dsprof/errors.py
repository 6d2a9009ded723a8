"""dsprof's exceptions. Only the CLI entry point turns them into messages and exit codes."""

from __future__ import annotations


class DsprofError(Exception):
    """A problem the user can fix; its message says what is wrong and what to do.

    Attributes:
        exit_code: the status the CLI exits with (2: bad input or usage).
    """

    exit_code = 2

    def __str__(self) -> str:
        # One line is the promise; a message that quotes a library's own multi-line error (a
        # pickle's, a decoder's) is joined into one.
        return " ".join(part.strip() for part in super().__str__().splitlines() if part.strip())


class RunDirError(DsprofError):
    """A run directory that is missing, unreadable, empty or from a newer dsprof."""


class TraceFormatError(DsprofError):
    """An input file that is not a trace dsprof can read (or is truncated)."""


class ScriptError(DsprofError):
    """The target script or module cannot be started (missing, syntax error)."""


class ConfigError(DsprofError):
    """A bad option or environment variable value."""


class MemoryBudgetExceeded(MemoryError):
    """Raised into the profiled script when ``--memory-budget`` is exceeded, as an
    out-of-memory error would be (it is not a :class:`DsprofError`: the script dies of it).

    Args:
        peak: the live bytes the window reached.
        budget: the budget in bytes.
        steps: the profiled steps where it was measured.
    """

    def __init__(self, peak: int, budget: int, steps: list[int]):
        super().__init__(f"dsprof memory budget exceeded: {peak:,} bytes live at the peak of "
                         f"steps {steps}, budget {budget:,} bytes (--memory-budget)")
        self.peak, self.budget, self.steps = peak, budget, steps
class NumericalAnomalyError(ArithmeticError):
    """Raised into the profiled script at the first op that produced a NaN or Inf
    (``dsprof run --detect-anomaly`` or ``DS_LOG_LEVEL=DEBUG``). Not a :class:`DsprofError`:
    it is the script's failure, so the run ends like any uncaught exception (status 1)."""
