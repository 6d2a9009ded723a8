"""A script's logging configuration leaves dsprof's log on: ``dictConfig`` and ``fileConfig``
disable every existing logger they do not name (``disable_existing_loggers``), and took
dsprof's whole log with them (dsprof/log.py)."""

from __future__ import annotations

import logging
import logging.config

from dsprof.log import logger


def test_dictconfig_does_not_silence_dsprofs_log():
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    other = logging.getLogger("some_library")
    # (the configuration is the test process's: every logger's state is put back after)
    root = logging.getLogger()
    root_state = (root.level, list(root.handlers), list(root.filters))
    states = {name: lg.disabled for name, lg in logging.Logger.manager.loggerDict.items()
              if isinstance(lg, logging.Logger)}
    try:
        # GIVEN a script that configures logging as most do, after dsprof's logger exists
        logging.config.dictConfig({"version": 1, "root": {"level": "INFO"}})
        # THEN the libraries' loggers it did not name are off, dsprof's is not
        assert other.disabled
        logger.info("a new loop starts at step 20")
        assert seen == ["a new loop starts at step 20"] and not logger.disabled
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        other.disabled = False
        for name, disabled in states.items():
            logging.getLogger(name).disabled = disabled
        root.setLevel(root_state[0])
        root.handlers[:] = root_state[1]
        root.filters[:] = root_state[2]
