"""docs/analyzers.md gives every registered analyzer's preconditions and noise rule (issue 19),
and the thresholds it states are the ones in the code: the table under "Preconditions and
noise" is read here, and each analyzer's constants must appear, as written, in its row."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from dsprof.analyzers import (
    attention,
    batch_size,
    checkpointing,
    comm_bound,
    comm_overlap,
    cpu_autocast,
    fragmentation,
    fusion,
    fusion_optimizer,
    gpu_idle,
    grad_scaler,
    input_pipeline,
    launch_bound,
    memory_leak,
    pageable_readback,
    precision,
    recompiles,
    step_outliers,
    straggler,
    tensor_cores,
    unbucketed_comms,
    zero_broadcasts,
)
from dsprof.analyzers.registry import ANALYZERS, load_analyzer

DOC = Path(__file__).resolve().parents[2] / "docs" / "analyzers.md"
REGISTERED = [load_analyzer(entry).name for entry in ANALYZERS]


def pct(share: float) -> str:
    return f"{share * 100:g} %"


def table() -> dict[str, tuple[str, str]]:
    """analyzer name -> (preconditions, noise rule), from the doc's table."""
    text = DOC.read_text()
    start = text.index("| analyzer | preconditions | noise rule |")
    rows: dict[str, tuple[str, str]] = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        names, pre, noise = cells[0], cells[1], "|".join(cells[2:])
        for name in re.findall(r"`([a-z_]+)`", names):
            rows[name] = (pre, noise)
    return rows


# each analyzer's thresholds, written as the doc writes them
STATED = {
    "step_outliers": [f"{step_outliers.MIN_STEPS} steady steps",
                      f"under {step_outliers.MIN_SLOWDOWN:g}x",
                      f"under {step_outliers.MIN_EXCESS_NS / 1e6:g} ms over the median"],
    "input_pipeline": [f"over {pct(input_pipeline.THRESHOLD)} of the step"],
    "checkpointing": [f"at {pct(checkpointing.PRESSURE)} of it"],
    "batch_size": [f"up {pct(batch_size.MIN_GAIN)}"],
    "tensor_cores": [f"{tensor_cores.SPEEDUP:g}x"],
    "launch_bound": [f"at least {pct(launch_bound.MIN_SHARE)}",
                     f"under {launch_bound.SHORT_KERNEL_NS / 1000:g} us"],
    "comm_overlap": [f"at most {comm_overlap.MAX_OVERLAP_PCT:g} %"],
    "comm_bound": [f"at least {pct(comm_bound.THRESHOLD)}"],
    "straggler": [f"{straggler.MIN_GAP_S * 1e3:g} ms", f"{pct(straggler.MIN_STEP_SHARE)} of a step",
                  f"{straggler.NOISE_SDS:g} x"],
    "precision": [f"at least {pct(precision.MIN_FP32_SHARE)}"],
    "cpu_autocast": [f"at least {cpu_autocast.MIN_CAST_SHARE:g} per forward"],
    "fusion": [f"{fusion.MIN_SAVING_S * 1e6:g} us", f"{pct(fusion.MIN_STEP_SHARE)} of the step"],
    "fusion_optimizer": [f"optimizer: {fusion_optimizer.MIN_SAVING_S * 1e6:g} us"],
    "gpu_idle": [f"at least {pct(gpu_idle.MIN_SHARE)}", f"at least {pct(gpu_idle.MIN_OWN_SHARE)}"],
    "pageable_readback": [f"at least {pct(pageable_readback.MIN_SHARE)}"],
    "unbucketed_allreduce": [f"at least {unbucketed_comms.MIN_PER_STEP} all-reduces",
                             f"at most {unbucketed_comms.SMALL_BYTES >> 20} MiB"],
    "zero_broadcasts": [f"more than {zero_broadcasts.MIN_PER_RANK} broadcasts a step"],
    "fragmentation": [f"{pct(fragmentation.MIN_SHARE)} of the peak reserved",
                      f"{fragmentation.MIN_BYTES >> 20} MiB",
                      f"at least {pct(fragmentation.MIN_SLACK_SHARE)}"],
    "memory_leak": [f"{memory_leak.MIN_POINTS} or more step boundaries",
                    f"{memory_leak.MIN_GROWTH >> 10} KiB", f"{pct(memory_leak.MIN_SHARE)} of the level"],
    "attention": [f"at most {attention.WINDOW} ops"],
    "recompiles": [f"at least {recompiles.MIN_RECOMPILES} recompiles",
                   f"in the {'second half' if recompiles.LATE == 0.5 else recompiles.LATE}"],
    "grad_scaler": [f"at least {grad_scaler.REPEATED_SKIPS} after",
                    f"more than {grad_scaler.CALIBRATION_SKIPS} at the start",
                    f"the first of {grad_scaler.SETTLED_RUN} good steps in a row",
                    f"2**{int(math.log2(grad_scaler.COLLAPSE_FACTOR))} under"],
}


def test_every_registered_analyzer_has_its_preconditions_and_noise_rule():
    rows = table()
    missing = [name for name in REGISTERED if name not in rows]
    assert not missing, f"no row in docs/analyzers.md for {missing}"
    for name in REGISTERED:
        pre, noise = rows[name]
        assert pre and noise, name
    # and no row names an analyzer that is not registered
    assert set(rows) <= set(REGISTERED), set(rows) - set(REGISTERED)


@pytest.mark.parametrize("name", sorted(STATED))
def test_the_thresholds_the_doc_states_are_the_codes(name):
    pre, noise = table()[name]
    row = f"{pre} | {noise}"
    for said in STATED[name]:
        assert said in row, (name, said, row)


def test_every_analyzer_with_a_threshold_is_checked():
    # analyzers with no numeric threshold of their own: a row suffices
    no_threshold = {"data_parallel", "anomaly", "host_syncs"}
    assert set(REGISTERED) - set(STATED) - no_threshold == set()
