"""Step spans renamed in a saved window's trace file: the bootstrap capture's forward spans,
and a window whose steps must read as one (``collectors/timeline.py``)."""

from __future__ import annotations

import re
from pathlib import Path

from dsprof.log import logger
from dsprof.rundir import atomic_write_bytes
from dsprof.vocabulary import FORWARD_STEP_SPAN

_STEP_SPAN = re.compile(rb'"ProfilerStep#\d+"')
_FORWARD_SPAN = re.compile(rb'"' + re.escape(FORWARD_STEP_SPAN.encode()) + rb'(\d+)"')


def rename_forward_spans(path: Path, as_steps: bool) -> None:
    """The bootstrap capture's ``dsprof.forward_step#k`` spans become ``ProfilerStep#k`` when
    forwards were the run's steps, else ``ProfilerStep#0``: they all precede its first
    ``backward()`` end (or its capture held no step at all)."""
    try:
        data = path.read_bytes()
        new = rb'"ProfilerStep#\1"' if as_steps else b'"ProfilerStep#0"'
        atomic_write_bytes(path, _FORWARD_SPAN.sub(new, data))
    except OSError as exc:
        logger.error("could not renumber the steps of %s: %s", path.name, exc)


def merge_step_spans(path: Path) -> None:
    """Rename every ``ProfilerStep#N`` span of a saved trace ``ProfilerStep#0``."""
    try:
        data = path.read_bytes()
        atomic_write_bytes(path, _STEP_SPAN.sub(b'"ProfilerStep#0"', data))
    except OSError as exc:
        logger.error("could not renumber the steps of %s: %s", path.name, exc)
