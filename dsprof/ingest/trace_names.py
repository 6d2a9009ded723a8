"""Which files in a folder are traces: what ``dsprof import`` checks before it loads the
parser (pyarrow, numpy), so a bad input is refused without their start-up cost."""

from __future__ import annotations

from pathlib import Path

from dsprof.rundir import (
    ANOMALY_FILE,
    CUPTI_KERNELS_FILE,
    INGESTED_FILE,
    SAMPLES_FILE,
    SESSION_FILE,
)

TRACE_SUFFIXES = (".json", ".json.gz", ".raw.gz", ".raw.json", ".raw.json.gz", ".pickle")


def is_trace_file(path: Path) -> bool:
    return (path.is_file()
            and path.name not in (SESSION_FILE, SAMPLES_FILE, CUPTI_KERNELS_FILE, ANOMALY_FILE,
                                  INGESTED_FILE)
            and path.name.endswith(TRACE_SUFFIXES))
