"""``export_memory_timeline`` raw output -> the ``memory`` table.

torch's ``MemoryProfileTimeline.export_memory_timeline_raw`` writes ``[t_ns, action, bytes,
category]`` records: ``t`` is epoch ns or -1 for tensors that existed before profiling, action is
``torch.profiler._memory_profiler.Action`` (1 PREEXISTING, 2 CREATE, 3 INCREMENT_VERSION, 4
DESTROY; a version bump is written as a free in the old category and an alloc in the new one),
and category indexes ``_CATEGORY_TO_INDEX``. Bytes are already signed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# torch.profiler._memory_profiler._CATEGORY_TO_INDEX order; index 7 is "no category"
CATEGORIES = ("parameter", "optimizer_state", "input", "temporary", "activation", "gradient",
              "autograd_detail", "unknown")


def build_memory(records: list[list[int]], *, rank: int, device: str = "unknown") -> dict[str, Any]:
    n = len(records)
    arr = np.asarray(records, dtype=np.int64).reshape(n, 4) if n else np.zeros((0, 4), np.int64)
    ts = arr[:, 0]
    nbytes = arr[:, 2]
    cat_idx = np.clip(arr[:, 3], 0, len(CATEGORIES) - 1)
    # Sort by time, pre-existing (-1) first, keeping file order among equal times.
    order = np.argsort(np.where(ts < 0, np.iinfo(np.int64).min, ts), kind="stable")
    ts, nbytes, cat_idx = ts[order], nbytes[order], cat_idx[order]
    allocated = np.cumsum(nbytes)
    return {
        "rank": np.full(n, rank, np.int32),
        "device": [device] * n,
        "ts_ns": [int(t) if t >= 0 else None for t in ts.tolist()],
        "action": ["alloc" if b >= 0 else "free" for b in nbytes.tolist()],
        "addr": [None] * n,
        "bytes": nbytes,
        "allocated": allocated,
        "reserved": [None] * n,
        "category": [CATEGORIES[i] for i in cat_idx.tolist()],
        "op_id": [None] * n,
        "step": [None] * n,
        "free_ns": [None] * n,
        "module": [None] * n,
        "stack_id": [None] * n,
        "source": ["timeline"] * n,
    }
