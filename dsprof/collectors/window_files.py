"""Windows of an inference loop that ran before the script trained, set aside once the
training has a window of its own.

A script that extracts features with a frozen encoder (or evaluates before it builds its
optimizer) runs a loop of forward calls first, and those become the run's steps until training
takes over (collectors/steps.py): the schedule's first window records that loop. The
timeline then starts its schedule over for the training loop; when a training window is saved,
the forward loop's windows move to ``raw/<rank>/before_training/``. Ingest reads only the files
of the rank's folder itself, so the op tables, and every finding made from them, are of the
training steps alone, as the step times are (``disturbed_by = before_training``). The files
stay whole: ``dsprof import`` of that folder analyses the forward loop on its own.

A run whose training never got a window (too few steps, or a crash first) keeps the forward
loop's window where it is: it is the only op-level record of the run.
"""

from __future__ import annotations

import os
from pathlib import Path

from dsprof.collectors.window_schedule import Window
from dsprof.log import logger

BEFORE_TRAINING_DIR = "before_training"
BEFORE_TRAINING = "before_training"  # the window's kind once set aside


def set_aside_forward_windows(raw_dir: Path, windows: list[Window], first: int) -> None:
    """The last of ``windows`` was just saved; if it is a training window (training marked
    the steps from ``first`` on), the forward loop's windows before it are set aside."""
    saved = windows[-1]
    if saved.kind != "window" or not saved.steps or saved.steps[0] < first:
        return
    for w in windows:
        if w.kind == "window" and w.steps and w.steps[-1] < first:
            try:
                set_aside(raw_dir, w)
            except OSError:  # (the run keeps both: the summary still tells the loops apart)
                logger.warning("could not set the forward loop's window %d aside", w.index,
                               exc_info=True)


def set_aside(raw_dir: Path, window: Window) -> None:
    """Move ``window``'s files (its trace, and the memory collector's census and snapshot,
    all named ``window-<index>.*``) into :data:`BEFORE_TRAINING_DIR` and mark it so."""
    folder = raw_dir / BEFORE_TRAINING_DIR
    folder.mkdir(exist_ok=True)
    prefix = f"window-{window.index}."
    moved = 0
    for path in raw_dir.iterdir():
        if path.name.startswith(prefix) and path.is_file():
            os.replace(path, folder / path.name)
            moved += 1
    if window.file:
        window.file = f"{BEFORE_TRAINING_DIR}/{window.file}"
    window.kind = BEFORE_TRAINING
    logger.info("timeline: window %d (steps %s, forward calls before training) set aside in "
                "%s: the training loop has a window of its own", window.index,
                _steps_text(window.steps), folder)
    logger.debug("timeline: %d file(s) of window %d moved", moved, window.index)


def _steps_text(steps: list[int]) -> str:
    return f"{steps[0]}-{steps[-1]}" if len(steps) > 1 else str(steps[0]) if steps else "-"
