"""Windows of a loop that ran before the run's latest one, set aside once that loop has a
window of its own.

A run can hold several loops one after another (collectors/steps.py ``loop_starts``): a
frozen encoder's feature extraction (forward calls) before the head is trained, an LR range
test before the training, one configuration of a sweep after another, fine-tuning after
pre-training. The schedule's first window falls in the first loop; the timeline starts its
schedule over at each new loop, and when the new loop's window is saved, the earlier loops'
windows move to ``raw/<rank>/earlier_loops/``. Ingest reads only the files of the rank's folder
itself, so the op tables, and every finding made from them, are of that one loop, as the step
times are (ingest/disturbed.py). The files stay whole: ``dsprof import`` of that folder
analyses the earlier loops on their own.

A run whose latest loop never got a window (too few steps, or a crash first) keeps the earlier
window where it is: it is the only op-level record of the run.
"""

from __future__ import annotations

import os
from pathlib import Path

from dsprof.collectors.window_schedule import Window
from dsprof.log import logger
from dsprof.vocabulary import EARLIER_LOOP, EARLIER_LOOPS_DIR, SETUP, SETUP_DIR


def set_aside_earlier_windows(raw_dir: Path, windows: list[Window], first: int) -> None:
    """The last of ``windows`` was just saved; if it is a window of the loop that starts at
    step ``first``, the windows of the loops before it are set aside."""
    saved = windows[-1]
    if saved.kind != "window" or not saved.steps or saved.steps[0] < first:
        return
    for w in windows:
        if w.kind == "window" and w.steps and w.steps[-1] < first:
            try:
                set_aside(raw_dir, w)
            except OSError:  # (the run keeps both: the summary still tells the loops apart)
                logger.warning("could not set window %d of an earlier loop aside", w.index,
                               exc_info=True)


def set_aside_setup_capture(raw_dir: Path, windows: list[Window],
                            keep: Window | None = None) -> None:
    """Once a window of steps is saved: the capture of step 0 that a cap stopped before the first
    step boundary (``--max-capture``, ``--max-capture-mb``: a long setup of bare tensor ops)
    is set aside in :data:`SETUP_DIR`, as an earlier loop's windows are. In the tables it was
    a profiled step 0 of setup ops, and the summary's top ops and phases, and analyzers that
    read every profiled step, spoke of the setup as of the training (the top ops of a
    preprocessing loop then 30 training steps: ``aten::normal_`` 59 %, ``aten::tanh`` 35 %).
    ``keep``: a capture whose spans may yet be steps (``backward()`` or forward ends)."""
    if not any(w.kind == "window" and w.steps for w in windows):
        return
    for w in windows:
        if w is not keep and w.kind == "unstepped" and w.capped and w.steps == [0] and w.file:
            try:
                set_aside(raw_dir, w, SETUP_DIR, SETUP)
            except OSError:  # (ingest then reads it as before: step 0's profile)
                logger.warning("could not set the capped capture of step 0 aside",
                               exc_info=True)


def set_aside(raw_dir: Path, window: Window, folder_name: str = EARLIER_LOOPS_DIR,
              kind: str = EARLIER_LOOP) -> None:
    """Move ``window``'s files (its trace, and the memory collector's census and snapshot,
    all named ``window-<index>.*``) into ``folder_name`` and mark it ``kind``."""
    folder = raw_dir / folder_name
    folder.mkdir(exist_ok=True)
    prefix = f"window-{window.index}."
    moved = 0
    for path in raw_dir.iterdir():
        if path.name.startswith(prefix) and path.is_file():
            os.replace(path, folder / path.name)
            moved += 1
    if window.file:
        window.file = f"{folder_name}/{window.file}"
    window.kind = kind
    logger.info("timeline: window %d (steps %s, %s) set aside in %s: the run has a window of "
                "its steps", window.index, _steps_text(window.steps),
                "an earlier loop" if kind == EARLIER_LOOP else "the capped capture of setup",
                folder)
    logger.debug("timeline: %d file(s) of window %d moved", moved, window.index)


def _steps_text(steps: list[int]) -> str:
    return f"{steps[0]}-{steps[-1]}" if len(steps) > 1 else str(steps[0]) if steps else "-"
