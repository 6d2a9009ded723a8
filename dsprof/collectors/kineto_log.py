"""Kineto's log level, set for dsprof's first profiler session only.

Kineto prints ``USDT: ... profiler_start`` / ``profiler_stop`` on stderr at every window
(below ``KINETO_LOG_LEVEL=6``); below DEBUG that is dsprof's noise in the script's terminal.
libkineto reads the variable once, in ``libkineto_init``, which torch calls at the process's
first ``prepare_trace`` (kineto's ``init.cpp``, torch's ``kineto_shim.cpp``; seen here: set
around the first ``prepare_trace`` and removed, the later windows printed nothing). dsprof
set it in ``os.environ`` for the whole run instead: the script's environment and every
process it started held ``KINETO_LOG_LEVEL=6``, where plain python has none. Now it is set
around dsprof's profiler preparation only and removed after; a value the user set is theirs
and stays as it is (then it decides, as it did).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from dsprof.log import logger

NAME = "KINETO_LOG_LEVEL"
QUIET = "6"  # above every level kineto logs at, its USDT lines included


@contextlib.contextmanager
def quiet_kineto() -> Iterator[None]:
    """Kineto initialised in the block (the process's first profiler session) logs nothing,
    unless dsprof logs at DEBUG or the user set the variable; the environment is as it was
    after the block."""
    if NAME in os.environ or logger.getEffectiveLevel() <= logging.DEBUG:
        yield
        return
    os.environ[NAME] = QUIET
    try:
        yield
    finally:
        if os.environ.get(NAME) == QUIET:
            del os.environ[NAME]
