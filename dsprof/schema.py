"""The one place where the run directory's tables are defined.

Every table dsprof writes is declared here as a :class:`Table`: its name, its columns (name,
Arrow type, one line of meaning) and the order they are written in. Ingest builds Arrow tables
through :func:`Table.build`, so a column that is missing, misspelt or of the wrong type fails at
write time, not in an analyzer three stages later. ``docs/format.md`` documents the same columns
and a test checks the two agree.

``SCHEMA_VERSION`` (defined in ``dsprof/schema_version.py``) is stored in ``meta.json``. Bump it whenever a column changes meaning or
type, or a table is added; a reader refuses a run written with a newer version than its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from dsprof.schema_version import SCHEMA_VERSION  # noqa: F401 - stored in meta.json; readers import it here


@dataclass(frozen=True)
class Column:
    """One column of a table.

    Args:
        name: column name in Parquet and in SQL.
        type: its Arrow type.
        doc: what it holds, with units.
    """

    name: str
    type: pa.DataType
    doc: str


@dataclass(frozen=True)
class Table:
    """A table of the run directory, stored as ``tables/<name>/rank<R>.parquet``."""

    name: str
    doc: str
    columns: tuple[Column, ...]

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type) for c in self.columns])

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def build(self, data: Mapping[str, Any]) -> pa.Table:
        """Build an Arrow table from column arrays (lists or numpy arrays) keyed by name.

        Raises:
            KeyError: a column of the schema is missing from ``data`` or ``data`` has extra keys.
        """
        extra = set(data) - set(self.column_names)
        if extra:
            raise KeyError(f"table {self.name!r} has no column(s) {sorted(extra)}")
        arrays = [pa.array(data[c.name], type=c.type) for c in self.columns]
        return pa.Table.from_arrays(arrays, schema=self.schema)


_I64 = pa.int64()
_I32 = pa.int32()
_STR = pa.string()
_F64 = pa.float64()
_BOOL = pa.bool_()

STEPS = Table(
    "steps",
    "One row per training step (the time between two step boundaries) for the whole run; "
    "for imported traces, one row per ProfilerStep annotation.",
    (
        Column("rank", _I32, "process rank (0 when not distributed)"),
        Column("step", _I64, "step number; step 0 includes the script's setup"),
        Column("start_ns", _I64, "step start, ns on the run clock"),
        Column("end_ns", _I64, "step end, ns on the run clock"),
        Column("dur_ns", _I64, "end_ns - start_ns"),
        Column("profiled", _BOOL, "true when the step lies in an active profiler window"),
        Column("window", _I32, "index of the profiler window holding the step, null if none"),
        Column("device_peak_bytes", _I64,
               "peak bytes allocated on the accelerator during the step (null on CPU)"),
        Column("rss_bytes", _I64, "process resident set size at the end of the step (null if not sampled)"),
        Column("cpu_ns", _I64,
               "CPU time of the thread that marked the step, during the step (dur_ns minus this "
               "is time that thread waited: GPU syncs, I/O, data workers); null for imports"),
        Column("gc_ns", _I64,
               "wall time Python's cyclic garbage collector ran during the step (any thread); "
               "null for imports, runs recorded before this column, and boundaries found after "
               "the fact"),
        Column("gc_generation", _I32,
               "oldest generation (0-2) the garbage collector collected during the step; null "
               "when it did not run, and where gc_ns is null"),
        Column("optimizer_faults", _I64,
               "minor page faults the stepping thread took inside optimizer.step() calls "
               "during the step (pages its update's temporaries got back from the kernel); "
               "null for imports, runs recorded before this column, and boundaries found "
               "after the fact"),
        Column("step_faults", _I64,
               "minor page faults the stepping thread took during the whole step, boundary to "
               "boundary (optimizer_faults included); null for imports, runs recorded before "
               "this column, boundaries found after the fact and the step after one, and steps "
               "whose boundaries two threads marked"),
        Column("optimizer_cpu_ns", _I64,
               "CPU time the stepping thread spent inside optimizer.step() calls during the "
               "step; null for imports, runs recorded before this column, boundaries found "
               "after the fact, steps with no call, and steps whose call was given a closure "
               "(forward and backward ran inside it)"),
        Column("save_ns", _I64,
               "wall time torch.save (or DCP save/async_save) calls on the stepping thread "
               "took during the step (checkpoints; 0 when none "
               "ran); null for imports, runs recorded before this column, and boundaries "
               "found after the fact"),
        Column("save_site", _STR,
               "file:line that called the step's first torch.save (the nearest frame outside "
               "torch and dsprof; an installed package's path from the package, e.g. "
               "lightning/fabric/utilities/cloud_io.py:77); null when the step saved nothing"),
        Column("save_call", _STR,
               "the save the step's first save_site called: torch.save, or "
               "torch.distributed.checkpoint.save / async_save (DCP, whose own torch.save "
               "calls are not counted apart); null when the step saved nothing"),
        Column("source", _STR,
               "what marked the boundary: optimizer (step hook), manual (dsprof.step()), "
               "backward (end of a backward() call, when no optimizer steps), forward (end of "
               "an outermost module call, when no optimizer step and no backward() came: "
               "inference; under HF generate() one token's forward), trace (ProfilerStep "
               "annotation of an imported trace)"),
        Column("data_wait_ns", _I64,
               "time the stepping thread spent inside DataLoader iterators' __next__ during the "
               "step (waiting for or loading the batch); null for imports"),
        Column("batch_size", _I64,
               "leading dimension of the last batch a DataLoader returned in the step (null when "
               "no DataLoader ran or the batch has no tensor)"),
        Column("loader_batches", _I64,
               "batches DataLoaders returned to the stepping thread during the step, every "
               "loader's (an evaluation's pass over its own loader included); null for "
               "imports, runs recorded before this column, runs with no DataLoader, and "
               "boundaries found after the fact"),
        Column("loss_scale", _F64,
               "GradScaler loss scale after the step's update() (null without a GradScaler)"),
        Column("skipped", _BOOL,
               "GradScaler skipped the optimizer step (inf/NaN gradients); null without a "
               "GradScaler"),
        Column("compile_ns", _I64,
               "time torch.compile spent compiling during the step (such a step is compile "
               "time, never an outlier); null when the run never compiled, and for imports"),
        Column("disturbed_by", _STR,
               "why dsprof slowed this step, so it is never evidence of the program's speed: "
               "setup (step 0), first_call (step 1: first calls, compiling), window (recorded "
               "by the profiler), warmup (the profiler's warm-up), trace_write (the step after "
               "a window, which writes its trace), trace_aftermath (a step after that one "
               "measured still paying for the window: more fresh pages than 9 in 10 steady "
               "steps, 1,000 over their median, and slower than their median), capture (no "
               "optimizer: recorded by the "
               "whole-run capture before backward() became the step source), split_iteration "
               "(one step of the first optimizer each, before the optimizer that steps last "
               "in an iteration marked the boundaries: a WGAN's first critic steps), debug_trace / "
               "anomaly_check (every step of a DS_LOG_LEVEL=DEBUG or --detect-anomaly run), "
               "autograd_anomaly (the script's own set_detect_anomaly(True) was on), "
               "user_profiler (the script's own torch.profiler session was open); "
               "null: a steady step"),
    ),
)

OPS = Table(
    "ops",
    "Host-side spans of the timeline: aten ops, record_function annotations, module forward "
    "spans, CUDA/HIP runtime and driver calls.",
    (
        Column("rank", _I32, "process rank"),
        Column("step", _I64, "step the op started in (null outside steps)"),
        Column("id", _I64, "op id, unique within a rank"),
        Column("parent_id", _I64, "id of the innermost enclosing span on the same thread (null at top level)"),
        Column("depth", _I32, "nesting depth on its thread (0 = top level)"),
        Column("thread", _I64, "thread id (stringly thread ids of old traces are hashed)"),
        Column("cat", _STR,
               "cpu_op | user_annotation | module | cuda_runtime | cuda_driver | xpu_runtime | "
               "privateuse1_runtime (legacy Operator and Runtime are read as cpu_op and "
               "cuda_runtime)"),
        Column("name", _STR, "op or annotation name (module spans: the module path)"),
        Column("start_ns", _I64, "start, ns on the run clock"),
        Column("dur_ns", _I64, "duration, ns"),
        Column("self_ns", _I64, "duration minus the time covered by direct children on the same thread"),
        Column("module", _STR, "path of the innermost module the op ran under (forward) or for (backward)"),
        Column("phase", _STR, "forward | backward | optimizer | data | other"),
        Column("input_shapes", _STR, "input dims as recorded (JSON text), null without record_shapes"),
        Column("dtypes", _STR, "input types as recorded (JSON text), null without record_shapes"),
        Column("flops", _I64, "floating point operations computed from shapes (matmul, conv, attention), else null"),
        Column("correlation", _I64, "External id (cpu ops) or CUDA correlation id (runtime calls)"),
        Column("seq", _I64, "autograd sequence number (links a forward op to its backward)"),
    ),
)

KERNELS = Table(
    "kernels",
    "Device-side activity: kernels, memcpy, memset and synchronization, one row each.",
    (
        Column("rank", _I32, "process rank"),
        Column("step", _I64, "step of the launching op (by start time when unlinked)"),
        Column("device", _I32, "device index"),
        Column("stream", _I64, "stream id"),
        Column("name", _STR, "kernel name, or the memcpy/memset description"),
        Column("kind", _STR, "compute | communication | memcpy | memset | sync"),
        Column("category", _STR,
               "what the kernel does, from its name: gemm | conv | attention | elementwise | "
               "reduction | norm | memcpy | memset | communication | sync | other"),
        Column("tensor_core", _BOOL,
               "true when the kernel ran on Tensor Cores (AMD: matrix cores), from its name; "
               "null when the name cannot tell (Triton templates)"),
        Column("start_ns", _I64, "start, ns on the run clock"),
        Column("dur_ns", _I64, "duration, ns"),
        Column("correlation", _I64, "CUDA correlation id shared with the launching runtime call"),
        Column("launch_id", _I64, "ops.id of the runtime call that launched it"),
        Column("op_id", _I64, "ops.id of the op that issued the launch (the launch's parent)"),
        Column("grid", _STR, "grid dims as JSON text, e.g. [512,1,1]"),
        Column("block", _STR, "block dims as JSON text"),
        Column("registers", _I32, "registers per thread"),
        Column("shared_mem", _I64, "shared memory per block, bytes"),
        Column("blocks_per_sm", _F64, "blocks per SM as reported by Kineto"),
        Column("occupancy", _F64, "estimated achieved occupancy, percent"),
        Column("bytes", _I64, "bytes moved (memcpy/memset), else null"),
    ),
)

MEMORY = Table(
    "memory",
    "Allocator events: every allocation and free the profiler saw, with running totals.",
    (
        Column("rank", _I32, "process rank"),
        Column("device", _STR, "cpu, cuda:N, ..."),
        Column("ts_ns", _I64, "time, ns on the run clock (null for tensors that pre-existed the capture)"),
        Column("action", _STR,
               "alloc | free | segment_alloc | segment_free | oom (segment and oom rows come "
               "from CUDA snapshots and do not change allocated)"),
        Column("addr", _I64, "address (null when unknown)"),
        Column("bytes", _I64, "signed change in bytes: positive for alloc, negative for free"),
        Column("allocated", _I64, "total allocated after the event as the profiler reported it (null if absent)"),
        Column("reserved", _I64, "total reserved after the event (null if absent)"),
        Column("category", _STR,
               "parameter | gradient | optimizer_state | activation | input | temporary | other "
               "(dsprof runs and CUDA snapshots); export_memory_timeline files add "
               "autograd_detail and unknown; null when the source has no categories"),
        Column("op_id", _I64, "ops.id of the innermost op running on the same thread"),
        Column("step", _I64, "step the event falls in"),
        Column("free_ns", _I64,
               "alloc rows: when the block was freed (null if still live when the capture "
               "ended); null on other rows"),
        Column("module", _STR,
               "module path the allocation is charged to: the module whose forward saved it "
               "(activations), else the module of the op that allocated it"),
        Column("stack_id", _I64, "stacks.stack_id of the allocation's Python stack, null if none"),
        Column("source", _STR,
               "profiler ([memory] events), baseline (tensors alive when a dsprof window "
               "began), snapshot (CUDA _record_memory_history), timeline (export_memory_timeline)"),
        Column("capture", _I32,
               "which capture of the rank the row belongs to (a window, a snapshot, an imported "
               "file); the rows of one capture form one timeline"),
    ),
)

MEMORY_SERIES = Table(
    "memory_series",
    "Live bytes over time by category, per rank and device, precomputed for plotting: at most "
    "a few thousand points per capture, each the state after an event (the peak is kept).",
    (
        Column("rank", _I32, "process rank"),
        Column("device", _STR, "cpu, cuda:N, ..."),
        Column("ts_ns", _I64, "time, ns on the run clock"),
        Column("step", _I64, "step the point falls in"),
        Column("capture", _I32, "memory.capture the point comes from"),
        Column("total", _I64, "live bytes (all categories)"),
        Column("parameter", _I64, "live bytes of parameters and buffers"),
        Column("gradient", _I64, "live bytes of .grad tensors"),
        Column("optimizer_state", _I64, "live bytes of optimizer state"),
        Column("activation", _I64, "live bytes saved for backward"),
        Column("input", _I64, "live bytes of the model's inputs"),
        Column("temporary", _I64, "live bytes freed within the step that made them"),
        Column("other", _I64, "live bytes of everything else (uncategorized included)"),
    ),
)

MODULES = Table(
    "modules",
    "One row per module of the profiled model(s) and rank: size, what its forward saves for "
    "backward, its time.",
    (
        Column("rank", _I32, "process rank"),
        Column("name", _STR, "qualified module path, e.g. TransformerLM.blocks.0.attn"),
        Column("type", _STR, "module class name"),
        Column("depth", _I32, "nesting depth (0 = root)"),
        Column("params", _I64, "parameters owned by the module and its children (count)"),
        Column("param_bytes", _I64, "bytes of those parameters (and buffers)"),
        Column("activation_bytes", _I64,
               "bytes saved for backward during one forward of the module and its children "
               "that were created inside that forward (what checkpointing it would free); "
               "largest over the profiled steps and windows"),
        Column("self_activation_bytes", _I64,
               "the part of activation_bytes not charged to a child module"),
        Column("calls", _I64, "forward calls per step (recomputation under checkpointing "
               "included)"),
        Column("fwd_ns", _I64, "forward time per step (module spans, children included)"),
        Column("bwd_ns", _I64, "backward time per step of the ops charged to the module or its "
               "children"),
        Column("flops", _I64, "forward FLOPs per step of ops under the module (null if none)"),
    ),
)

STACKS = Table(
    "stacks",
    "Python stacks of allocations, referred to by memory.stack_id (one row per distinct "
    "stack per rank).",
    (
        Column("rank", _I32, "process rank"),
        Column("stack_id", _I64, "id, unique within a rank"),
        Column("site", _STR, "the innermost user frame, file:line in function"),
        Column("frames", _STR, "JSON list of [filename, line, function], innermost first"),
    ),
)

ALLOCATOR = Table(
    "allocator",
    "Allocator state at points in time: torch.cuda.memory_stats() at every step boundary, "
    "the segments of each CUDA snapshot, and (CPU) the live total at each profiled boundary.",
    (
        Column("rank", _I32, "process rank"),
        Column("device", _STR, "cpu, cuda:N, ..."),
        Column("step", _I64, "the step that just ended (null for snapshots)"),
        Column("ts_ns", _I64, "time, ns on the run clock"),
        Column("source", _STR, "memory_stats | snapshot | timeline"),
        Column("allocated", _I64, "bytes in live tensors"),
        Column("reserved", _I64, "bytes the caching allocator holds from the device (null on CPU)"),
        Column("inactive_split", _I64,
               "free bytes inside split blocks that cannot be returned (fragmentation)"),
        Column("largest_free", _I64, "largest free block inside reserved memory (snapshots)"),
        Column("alloc_retries", _I64, "cudaMalloc retries so far (cache flushed to satisfy one)"),
        Column("ooms", _I64, "out-of-memory errors so far"),
        Column("device_allocs", _I64, "cudaMalloc calls so far"),
        Column("device_frees", _I64, "cudaFree calls so far"),
    ),
)

GRAD_HOLDERS = Table(
    "grad_holders",
    "Python variables that hold a tensor with an autograd graph at a profiled step boundary "
    "(a graph that grows across steps is kept alive by mistake).",
    (
        Column("rank", _I32, "process rank"),
        Column("step", _I64, "the step that just ended"),
        Column("name", _STR, "variable name"),
        Column("function", _STR, "function whose frame holds it (<module> for globals)"),
        Column("site", _STR, "file:line of the statement that builds it up (an augmented "
               "assignment, or an assignment that reads it), else of the function"),
        Column("statement", _STR, "that statement's source text, null if none was found"),
        Column("graph_nodes", _I64, "autograd nodes reachable from its grad_fn (capped)"),
    ),
)

DATALOADERS = Table(
    "dataloaders",
    "One row per DataLoader the script iterated: its settings and the time the training thread "
    "waited for its batches (recorded for the whole run, not only profiled steps).",
    (
        Column("rank", _I32, "process rank"),
        Column("loader", _I32, "index of the DataLoader in the order it was first iterated"),
        Column("site", _STR, "file:line of the user code that iterated it (the loop)"),
        Column("dataset", _STR, "dataset class name"),
        Column("batch_size", _I64, "DataLoader batch_size (null with a batch_sampler)"),
        Column("num_workers", _I32, "worker processes (0: batches load on the training thread)"),
        Column("pin_memory", _BOOL, "pin_memory setting"),
        Column("persistent_workers", _BOOL, "persistent_workers setting"),
        Column("prefetch_factor", _I32, "batches prefetched per worker (null with 0 workers)"),
        Column("iterators", _I32, "passes started over it (iter() calls: one per epoch)"),
        Column("batches", _I64, "batches returned"),
        Column("wait_ns", _I64, "total time inside __next__, ns"),
        Column("wait_cpu_ns", _I64,
               "CPU time of the training thread inside __next__, ns (close to wait_ns: loading "
               "is compute on that thread; far below: it waited for workers, disk or network)"),
        Column("first_wait_ns", _I64,
               "total time of the first __next__ of each pass (worker start-up unless "
               "persistent), ns"),
        Column("batch_tensors", _I32,
               "tensors in the loader's first batch (nested tuples, lists, dicts): what a worker "
               "hands over per batch; null when it held none, and for runs recorded before this "
               "column"),
        Column("batch_bytes", _I64, "bytes of those tensors; null where batch_tensors is"),
        Column("cpu_count", _I32, "CPUs usable by the process (os.sched_getaffinity)"),
        Column("torch_threads", _I32, "torch.get_num_threads() at the end of the run"),
    ),
)

HOST_SYNCS = Table(
    "host_syncs",
    "Calls that make the host wait for the device or copy a result to the host "
    "(Tensor.item/tolist/cpu/numpy, nonzero, torch.cuda.synchronize), per source line and step.",
    (
        Column("rank", _I32, "process rank"),
        Column("step", _I64, "step the calls happened in"),
        Column("call", _STR, "item | tolist | cpu | numpy | nonzero | synchronize | to_cpu"),
        Column("site", _STR, "file:line of the user code that made the call"),
        Column("function", _STR, "the user function around that line"),
        Column("device", _STR, "device of the tensor (cpu, cuda:0, ...)"),
        Column("count", _I64, "calls in the step"),
        Column("total_ns", _I64, "time inside those calls, ns (on a GPU: mostly waiting)"),
        Column("max_ns", _I64, "longest single call, ns"),
    ),
)
COMMS = Table(
    "comms",
    "Collective communication calls, one row per collective a rank took part in: from NCCL/RCCL "
    "kernels and ``record_param_comms`` events (GPU backends), or from gloo's worker-thread "
    "spans paired with the ``c10d::`` op that issued them (CPU).",
    (
        Column("rank", _I32, "process rank"),
        Column("step", _I64, "step of the call that issued the collective (null outside steps)"),
        Column("collective", _STR,
               "all_reduce | all_gather | reduce_scatter | broadcast | reduce | all_to_all | "
               "send | recv | barrier | gather | scatter | ... (normalized name)"),
        Column("group", _STR, "process group name (pg_name), null when the trace does not say"),
        Column("group_desc", _STR, "process group description (default_pg, ...), null if unknown"),
        Column("group_size", _I32, "ranks in the process group, null if unknown"),
        Column("dtype", _STR, "element type as recorded (Float, float, c10::BFloat16, ...)"),
        Column("in_bytes", _I64, "input message size, bytes (elements x element size)"),
        Column("out_bytes", _I64, "output message size, bytes"),
        Column("start_ns", _I64,
               "start of the transfer: the NCCL kernel on the device, the gloo worker span, or "
               "the host record_param_comms span when there is no kernel"),
        Column("dur_ns", _I64, "duration of the transfer (waiting for peers included), ns"),
        Column("call_ns", _I64, "start of the host op that issued the collective, ns"),
        Column("algbw_gbps", _F64,
               "algorithm bandwidth, GB/s (1e9 B/s): data size / dur as nccl-tests defines it"),
        Column("busbw_gbps", _F64,
               "bus bandwidth, GB/s: algbw times nccl-tests' factor for the collective "
               "(all_reduce 2(n-1)/n, all_gather/reduce_scatter/all_to_all (n-1)/n, else 1)"),
        Column("op_id", _I64, "ops.id of the host op that issued it (c10d:: op, record_param_comms)"),
        Column("source", _STR, "nccl_kernel | record_param_comms | gloo"),
    ),
)

DEVICE_SAMPLES = Table(
    "device_samples",
    "Host and GPU metrics sampled by a background thread for the whole run (every "
    "DSPROF_SAMPLE_MS); GPU columns are null without an NVIDIA GPU and NVML.",
    (
        Column("rank", _I32, "process rank"),
        Column("ts_ns", _I64, "sample time, ns on the run clock"),
        Column("step", _I64, "step the sample falls in (null outside steps)"),
        Column("device", _I32, "GPU index sampled (null when only the host is sampled)"),
        Column("cpu_util", _F64, "CPU utilization of the process since the previous sample, "
               "percent of one core (can exceed 100)"),
        Column("rss_bytes", _I64, "resident set size of the process, bytes"),
        Column("gpu_util", _F64, "NVML GPU utilization: percent of the last sample period a "
               "kernel was running"),
        Column("mem_util", _F64, "NVML memory utilization: percent of the period device memory "
               "was read or written"),
        Column("mem_used", _I64, "device memory in use (all processes), bytes"),
        Column("power_w", _F64, "board power draw, watts"),
        Column("sm_clock_mhz", _I64, "SM clock, MHz"),
        Column("temp_c", _I64, "GPU temperature, degrees Celsius"),
        Column("tensor_util", _F64, "Hopper GPM: percent of SM time doing any Tensor Core work "
               "over the last GPM interval (at least 100 ms; null before Hopper)"),
        Column("sm_util", _F64, "Hopper GPM: percent of SMs busy over the last GPM interval "
               "(at least 100 ms; null before Hopper)"),
    ),
)

CUPTI_KERNELS = Table(
    "cupti_kernels",
    "Kernels of the whole run outside the profiler windows, recorded by the cupti kernel mode "
    "(DSPROF_CUPTI_KERNELS=1): name and times only, no launching op.",
    (
        Column("rank", _I32, "process rank"),
        Column("step", _I64, "step the kernel started in (by start time)"),
        Column("device", _I32, "device index"),
        Column("stream", _I64, "stream id"),
        Column("name", _STR, "kernel name"),
        Column("category", _STR, "what the kernel does, as kernels.category"),
        Column("tensor_core", _BOOL, "ran on Tensor Cores, as kernels.tensor_core"),
        Column("start_ns", _I64, "start, ns on the run clock"),
        Column("dur_ns", _I64, "duration, ns"),
        Column("correlation", _I64, "CUDA correlation id"),
    ),
)

ANOMALIES = Table(
    "anomalies",
    "The first op whose floating output held a NaN or Inf (dsprof run --detect-anomaly, or "
    "DS_LOG_LEVEL=DEBUG): one row per rank that stopped.",
    (
        Column("rank", _I32, "process rank"),
        Column("step", _I64, "step the op ran in"),
        Column("ts_ns", _I64, "when it was found, ns on the run clock"),
        Column("op", _STR, "the op, as the dispatcher names it (aten.div.Tensor)"),
        Column("module", _STR, "module path it ran in (forward) or for (backward), null if none"),
        Column("phase", _STR, "forward | backward | optimizer | other"),
        Column("autograd_node", _STR, "the autograd node running it in backward (DivBackward0)"),
        Column("site", _STR, "file:line of the innermost script frame that led to it"),
        Column("code", _STR, "the source text of that line"),
        Column("kind", _STR, "nan | inf | nan+inf: what the output held"),
        Column("output_index", _I32, "which output of the op (flattened)"),
        Column("shape", _STR, "the output's shape (JSON text)"),
        Column("dtype", _STR, "the output's dtype"),
        Column("numel", _I64, "elements in the output"),
        Column("nan_count", _I64, "NaN elements in the output"),
        Column("inf_count", _I64, "Inf elements in the output"),
        Column("inputs", _STR,
               "per tensor input: shape, dtype, NaN/Inf counts, finite min/max/mean (JSON text)"),
        Column("frames", _STR, "the script frames leading to the op, innermost first (JSON text)"),
    ),
)

# -- per-rank aggregates, written at ingest with the rank's tables (dsprof/ingest/aggregates.py):
# what ``dsprof summary`` reads instead of rescanning ops and kernels. A run without them (one
# ingested by an older dsprof) gets the same rows computed on first use (Run.aggregate).
RANK_TOTALS = Table(
    "rank_totals",
    "One row per ingested rank: counts of its big tables and the ProfilerStep names it has. Its "
    "presence marks a run whose aggregates were written at ingest.",
    (
        Column("rank", _I32, "process rank"),
        Column("ops", _I64, "rows of ops"),
        Column("ops_in_steps", _I64, "rows of ops with a step"),
        Column("profiler_step_names", _I64, "distinct ProfilerStep#N op names"),
        Column("first_profiler_step", _STR, "the smallest ProfilerStep#N name (text order), "
               "null without one"),
        Column("kernels", _I64, "rows of kernels"),
    ),
)
KERNEL_TIME = Table(
    "kernel_time",
    "Per rank, device time by the set of kernel types running at once (HTA's kernel-type and "
    "temporal breakdowns add these up): the union of kernel intervals, split by type.",
    (
        Column("rank", _I32, "process rank"),
        Column("last_step_dropped", _BOOL,
               "false: every kernel; true: HTA's default convention applied to this rank "
               "(kernels launched in its last ProfilerStep, and unlinked kernels, left out)"),
        Column("types", _I32, "bit set of the types running: 1 COMPUTATION (kind compute), 2 "
               "COMMUNICATION, 4 MEMORY (memcpy, memset), 8 OTHER; 0 is idle within the span "
               "from the rank's first kernel start to its last kernel end"),
        Column("ns", _I64, "time with exactly these types running, ns"),
    ),
)
OP_TIME = Table(
    "op_time",
    "Per rank and cpu_op name: calls and time, inside and outside steps.",
    (
        Column("rank", _I32, "process rank"),
        Column("name", _STR, "op name (ops.name of cat cpu_op)"),
        Column("in_step", _BOOL, "the calls have a step (ops.step not null)"),
        Column("calls", _I64, "rows of ops"),
        Column("self_ns", _I64, "sum of ops.self_ns, ns"),
        Column("dur_ns", _I64, "sum of ops.dur_ns, ns"),
    ),
)
PHASE_TIME = Table(
    "phase_time",
    "Per rank, the wall time of its profiled steps owned by each phase: spans where a phase "
    "begins, clipped to their step, swept over all threads; an instant where several phases "
    "run goes to the first of backward, forward, optimizer, data, other.",
    (
        Column("rank", _I32, "process rank"),
        Column("phase", _STR, "forward | backward | optimizer | data | other"),
        Column("ns", _I64, "time owned by the phase, ns"),
    ),
)

TABLES: dict[str, Table] = {t.name: t for t in (
    STEPS, OPS, KERNELS, MEMORY, DATALOADERS, HOST_SYNCS, DEVICE_SAMPLES, CUPTI_KERNELS, COMMS,
    MEMORY_SERIES, MODULES, STACKS, ALLOCATOR, GRAD_HOLDERS, ANOMALIES,
    RANK_TOTALS, KERNEL_TIME, OP_TIME, PHASE_TIME)}


def table(name: str) -> Table:
    return TABLES[name]


# Columns the run layer adds to a table's view (dsprof/run.py), derived from the run's
# manifest rather than stored in Parquet: {table: ((name, Arrow type, meaning), ...)}.
VIEW_COLUMNS: dict[str, tuple[Column, ...]] = {
    "steps": (
        Column("disturbed", _BOOL,
               "dsprof itself slowed the step: a profiler window's step, its warm-up, or the "
               "step after it (the trace is written then), or any step of a DEBUG-trace or "
               "anomaly-check run (disturbed_by says which); false for imports. Never "
               "evidence of the script's speed (see dsprof/facts.py)"),
    ),
}
