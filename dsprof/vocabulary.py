"""The values the run directory's columns take, and the names dsprof's own spans carry.

The tables themselves are declared in ``dsprof/schema/``; this module holds what their
columns are filled with, defined once: the phases of a step, kernel kinds and categories, memory
categories in priority order, the span names dsprof writes into a trace, and the bytes per
element of every dtype spelling traces use. Times are int64 nanoseconds on the run clock and
sizes are bytes, in every table.
"""

from __future__ import annotations

# Units: every time is int64 nanoseconds on the run clock, every size is bytes.
# ops.phase: what part of a training step an op belongs to
PHASES = ("forward", "backward", "optimizer", "data", "other")
# kernels.kind: the device work class; kernels.category: what the kernel does (from its name)
KERNEL_KINDS = ("compute", "communication", "memcpy", "memset", "sync")
KERNEL_CATEGORIES = ("gemm", "conv", "attention", "elementwise", "reduction", "norm", "memcpy",
                     "memset", "communication", "sync", "other")
# memory.category: who owns a block. In priority order: a storage that is several things at
# once (a parameter that an op saved for backward) is the first of them.
MEMORY_CATEGORIES = ("parameter", "gradient", "optimizer_state", "input", "activation",
                     "temporary", "other")
# ops.name prefix of the record_function spans the modules collector opens around each module
DSPROF_MODULE_PREFIX = "dsprof.module: "
# the annotation dsprof puts around an optimizer's closure (collectors/step_sources.py writes
# it, ingest/phases.py reads it): the forward and backward run inside torch's Optimizer.step#
# span, and are not the optimizer's
CLOSURE_SPAN = "## closure ##"
# the spans the whole-run capture starts at each outermost forward's end before a run has any
# step source (collectors/timeline.py): renamed ProfilerStep#<k> at exit if forwards became the
# steps, so no trace dsprof saves carries this name
FORWARD_STEP_SPAN = "dsprof.forward_step#"
# dataloaders.batch_tensors: the collector stops counting a batch's tensors here (a batch's
# structure is walked once per loader, never deeper); readers clamp to it
MAX_BATCH_TENSORS = 1024
MEMORY_PRIORITY = {c: i for i, c in enumerate(MEMORY_CATEGORIES)}
# Bytes per element of the dtype spellings traces use (the profiler's "Input type": "float",
# "c10::BFloat16"; NCCL's "Float"; torch's "float32"), lower-cased: the one such table.
_ELEMENT_BYTES = {
    "float": 4, "float32": 4, "double": 8, "float64": 8, "half": 2, "c10::half": 2,
    "float16": 2, "bfloat16": 2, "c10::bfloat16": 2, "long": 8, "long int": 8, "int64": 8,
    "int": 4, "int32": 4, "short": 2, "short int": 2, "int16": 2, "char": 1, "signed char": 1,
    "byte": 1, "unsigned char": 1, "uint8": 1, "int8": 1, "bool": 1,
    "c10::float8_e4m3fn": 1, "c10::float8_e5m2": 1, "float8_e4m3fn": 1, "float8_e5m2": 1,
    "c10::complex<float>": 8, "c10::complex<double>": 16, "complex64": 8, "complex128": 16,
}


def element_bytes(dtype: object) -> int | None:
    """Bytes per element of a dtype as a trace spells it (any case), None when unknown."""
    return None if dtype is None else _ELEMENT_BYTES.get(str(dtype).strip().lower())
# meta.json windows[].kind of a window set aside, and the folder under raw/<rank>/ it moves to
# (collectors/window_files.py moves them; the summary and its loop notes read them)
EARLIER_LOOPS_DIR = "earlier_loops"
EARLIER_LOOP = "earlier_loop"  # a window of a loop before the run's latest one
SETUP_DIR = "setup"
SETUP = "setup"  # a capped capture of step 0, set aside once a window of steps is saved
