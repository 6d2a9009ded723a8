"""``DS_LOG_LEVEL=DEBUG``: log every op of a just-saved profiler window, one line each."""

from __future__ import annotations

from pathlib import Path

from dsprof.ingest.events import split
from dsprof.ingest.host_ops import build_host_ops
from dsprof.ingest.trace_file import KinetoTrace, load
from dsprof.log import logger


def log_trace_ops(path: Path) -> int:
    """Log the ops of one trace file (cpu ops and annotations, in time order). Returns count."""
    trace = load(path)
    if not isinstance(trace, KinetoTrace):
        return 0
    ops = build_host_ops(split(trace.events).host, base_ns=trace.base_ns, rank=0, first_id=0)
    c = ops.columns
    order = sorted(range(ops.n), key=lambda i: int(c["start_ns"][i]))
    count = 0
    for i in order:
        if c["cat"][i] not in ("cpu_op", "user_annotation"):
            continue
        logger.debug("op %s shapes=%s dtypes=%s dur=%.1fus module=%s phase=%s", c["name"][i],
                     c["input_shapes"][i] or "-", c["dtypes"][i] or "-",
                     int(c["dur_ns"][i]) / 1e3, c["module"][i] or "-", c["phase"][i])
        count += 1
    return count
