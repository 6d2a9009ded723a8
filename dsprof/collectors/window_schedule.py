"""The profiler window schedule: what each step does (torch's ``schedule(wait, warmup, active,
repeat)`` arithmetic, step 0 the bootstrap capture), and the windows it yields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from dsprof.settings import Settings

NONE, WARMUP, RECORD, RECORD_AND_SAVE, BOOTSTRAP = ("none", "warmup", "record", "record_and_save",
                                                    "bootstrap")


def effective_warmup(s: Settings) -> int:
    """At least one step separates two profiler sessions.

    A boundary marked by the optimizer hook lies inside torch's ``Optimizer.step#`` span. When
    one session stops there and the next starts at once, that span, entered under the first
    session, ends under the second, and torch 2.13 corrupts memory (a crash at exit). So with
    ``wait == 0`` the warmup is at least one step.
    """
    return max(s.warmup, 1) if s.wait == 0 else s.warmup


def planned_action(step: int, s: Settings) -> str:
    """What the schedule does during ``step`` (step 0 is the bootstrap)."""
    if step == 0:
        return BOOTSTRAP
    k = step - 1
    warmup = effective_warmup(s)
    cycle = s.wait + warmup + s.active
    if s.repeat > 0 and k >= cycle * s.repeat:
        return NONE
    pos = k % cycle
    if pos < s.wait:
        return NONE
    if pos < s.wait + warmup:
        return WARMUP
    return RECORD_AND_SAVE if pos == cycle - 1 else RECORD


@dataclass
class Window:
    index: int
    kind: str  # "window" | "unstepped" | "earlier_loop" (set aside: window_files.py)
    steps: list[int] = field(default_factory=list)
    file: str | None = None
    capped: bool = False
    capped_by: str | None = None  # "time" | "memory" (collectors/capture_cap.py)

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "kind": self.kind, "steps": self.steps, "file": self.file,
                "capped": self.capped, "capped_by": self.capped_by}


class WindowListener(Protocol):
    """Told when a window starts, when one of its steps ends, and when it stops (the memory
    collector follows the windows this way)."""

    def window_started(self, window: int, step: int) -> None: ...
    def window_step_ended(self, step: int, continues: bool) -> None: ...
    def window_stopped(self, trace_file: str | None) -> None: ...
