"""The timeline's tables: steps, host ops, device kernels (from the trace and from CUPTI), collectives
and the host syncs the stepping thread made."""

from __future__ import annotations

from dsprof.schema.spec import BOOL, F64, I32, I64, STR, Column, Table

STEPS = Table(
    "steps",
    "One row per training step (the time between two step boundaries) for the whole run; "
    "for imported traces, one row per ProfilerStep annotation.",
    (
        Column("rank", I32, "process rank (0 when not distributed)"),
        Column("step", I64, "step number; step 0 includes the script's setup"),
        Column("start_ns", I64, "step start, ns on the run clock"),
        Column("end_ns", I64, "step end, ns on the run clock"),
        Column("dur_ns", I64, "end_ns - start_ns"),
        Column("profiled", BOOL, "true when the step lies in an active profiler window"),
        Column("window", I32, "index of the profiler window holding the step, null if none"),
        Column("device_peak_bytes", I64,
               "peak bytes allocated on the accelerator during the step (null on CPU)"),
        Column("rss_bytes", I64, "process resident set size at the end of the step (null if not sampled)"),
        Column("cpu_ns", I64,
               "CPU time of the thread that marked the step, during the step (dur_ns minus this "
               "is time that thread waited: GPU syncs, I/O, data workers); null for imports"),
        Column("gc_ns", I64,
               "wall time Python's cyclic garbage collector ran during the step (any thread); "
               "null for imports, runs recorded before this column, and boundaries found after "
               "the fact"),
        Column("gc_generation", I32,
               "oldest generation (0-2) the garbage collector collected during the step; null "
               "when it did not run, and where gc_ns is null"),
        Column("optimizer_faults", I64,
               "minor page faults the stepping thread took inside optimizer.step() calls "
               "during the step (pages its update's temporaries got back from the kernel); "
               "null for imports, runs recorded before this column, and boundaries found "
               "after the fact"),
        Column("step_faults", I64,
               "minor page faults the stepping thread took during the whole step, boundary to "
               "boundary (optimizer_faults included); null for imports, runs recorded before "
               "this column, boundaries found after the fact and the step after one, and steps "
               "whose boundaries two threads marked"),
        Column("optimizer_cpu_ns", I64,
               "CPU time the stepping thread spent inside optimizer.step() calls during the "
               "step; null for imports, runs recorded before this column, boundaries found "
               "after the fact, steps with no call, and steps whose call was given a closure "
               "(forward and backward ran inside it)"),
        Column("optimizer_ns", I64,
               "wall ns inside optimizer.step() in this step, less the closures it ran "
               "(forward and backward inside step(closure): LBFGS, Lightning); not the time "
               "of an optimizer stepped inside backward() (in backward_ns); null: a boundary "
               "found after the fact, and runs recorded before this column"),
        Column("backward_ns", I64,
               "wall ns inside backward() and torch.autograd.grad in this step (the outermost "
               "calls; null where optimizer_ns is for a found boundary, and for runs recorded "
               "before this column)"),
        Column("runq_ns", I64,
               "ns the stepping thread was runnable but waited for a CPU during the step (its "
               "Linux schedstat run delay): the part of its time off the CPU that was the "
               "machine's, not a sleep of its own; null off Linux, for boundaries found after "
               "the fact, steps whose boundaries two threads marked, and runs recorded before "
               "this column"),
        Column("save_ns", I64,
               "wall time torch.save (or DCP save/async_save) calls on the stepping thread "
               "took during the step (checkpoints; 0 when none "
               "ran); null for imports, runs recorded before this column, and boundaries "
               "found after the fact"),
        Column("save_site", STR,
               "file:line that called the step's first torch.save (the nearest frame outside "
               "torch and dsprof; an installed package's path from the package, e.g. "
               "lightning/fabric/utilities/cloud_io.py:77); null when the step saved nothing"),
        Column("save_call", STR,
               "the save the step's first save_site called: torch.save, or "
               "torch.distributed.checkpoint.save / async_save (DCP, whose own torch.save "
               "calls are not counted apart); null when the step saved nothing"),
        Column("source", STR,
               "what marked the boundary: optimizer (step hook), manual (dsprof.step()), "
               "backward (end of a backward() call, when no optimizer steps), forward (end of "
               "an outermost module call, when no optimizer step and no backward() came: "
               "inference; under HF generate() one token's forward), trace (ProfilerStep "
               "annotation of an imported trace)"),
        Column("data_wait_ns", I64,
               "time the stepping thread spent in DataLoaders during the step: __next__ "
               "(waiting for or loading the batch), iter() and a pass's end (starting and "
               "stopping workers); null for imports"),
        Column("batch_size", I64,
               "leading dimension of the last batch a DataLoader returned in the step (null when "
               "no DataLoader ran or the batch has no tensor)"),
        Column("loader_batches", I64,
               "batches DataLoaders returned to the stepping thread during the step, every "
               "loader's (an evaluation's pass over its own loader included); null for "
               "imports, runs recorded before this column, runs with no DataLoader, and "
               "boundaries found after the fact"),
        Column("loss_scale", F64,
               "GradScaler loss scale after the step's update() (null without a GradScaler)"),
        Column("skipped", BOOL,
               "GradScaler skipped the optimizer step (inf/NaN gradients); null without a "
               "GradScaler"),
        Column("compile_ns", I64,
               "time torch.compile spent compiling during the step (such a step is compile "
               "time, never an outlier); null when the run never compiled, and for imports"),
        Column("disturbed_by", STR,
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
        Column("loop", I32,
               "which loop the step is of, 0 for the first: each entry of meta.json "
               "loop_starts begins the next (a new optimizer took the boundaries over: an LR "
               "range test, a sweep's next configuration; training after inference forwards); "
               "0 for imports"),
        Column("loop_disturbed_by", STR,
               "disturbed_by as if the step's loop were the one the run's step times are of: "
               "its own first two steps are setup / first_call (the first loop) or loop_start, "
               "its windows window / warmup / trace_write; of its own steps only the last "
               "of a forward loop that training follows is later_loop (it holds the "
               "training's first forward). What each loop's step time is taken by "
               "(dsprof.facts loops); equal to disturbed_by with one loop"),
    ),
)

OPS = Table(
    "ops",
    "Host-side spans of the timeline: aten ops, record_function annotations, module forward "
    "spans, CUDA/HIP runtime and driver calls.",
    (
        Column("rank", I32, "process rank"),
        Column("step", I64, "step the op started in (null outside steps)"),
        Column("id", I64, "op id, unique within a rank"),
        Column("parent_id", I64, "id of the innermost enclosing span on the same thread (null at top level)"),
        Column("depth", I32, "nesting depth on its thread (0 = top level)"),
        Column("thread", I64, "thread id (stringly thread ids of old traces are hashed)"),
        Column("cat", STR,
               "cpu_op | user_annotation | module | cuda_runtime | cuda_driver | xpu_runtime | "
               "privateuse1_runtime (legacy Operator and Runtime are read as cpu_op and "
               "cuda_runtime)"),
        Column("name", STR, "op or annotation name (module spans: the module path)"),
        Column("start_ns", I64, "start, ns on the run clock"),
        Column("dur_ns", I64, "duration, ns"),
        Column("self_ns", I64, "duration minus the time covered by direct children on the same thread"),
        Column("module", STR, "path of the innermost module the op ran under (forward) or for (backward)"),
        Column("phase", STR, "forward | backward | optimizer | data | other"),
        Column("input_shapes", STR, "input dims as recorded (JSON text), null without record_shapes"),
        Column("dtypes", STR, "input types as recorded (JSON text), null without record_shapes"),
        Column("flops", I64, "floating point operations computed from shapes (matmul, conv, attention), else null"),
        Column("correlation", I64, "External id (cpu ops) or CUDA correlation id (runtime calls)"),
        Column("seq", I64, "autograd sequence number (links a forward op to its backward)"),
    ),
)

KERNELS = Table(
    "kernels",
    "Device-side activity: kernels, memcpy, memset and synchronization, one row each.",
    (
        Column("rank", I32, "process rank"),
        Column("step", I64, "step of the launching op (by start time when unlinked)"),
        Column("device", I32, "device index"),
        Column("stream", I64, "stream id"),
        Column("name", STR, "kernel name, or the memcpy/memset description"),
        Column("kind", STR, "compute | communication | memcpy | memset | sync"),
        Column("category", STR,
               "what the kernel does, from its name: gemm | conv | attention | elementwise | "
               "reduction | norm | memcpy | memset | communication | sync | other"),
        Column("tensor_core", BOOL,
               "true when the kernel ran on Tensor Cores (AMD: matrix cores), from its name; "
               "null when the name cannot tell (Triton templates)"),
        Column("start_ns", I64, "start, ns on the run clock"),
        Column("dur_ns", I64, "duration, ns"),
        Column("correlation", I64, "CUDA correlation id shared with the launching runtime call"),
        Column("launch_id", I64, "ops.id of the runtime call that launched it"),
        Column("op_id", I64, "ops.id of the op that issued the launch (the launch's parent)"),
        Column("grid", STR, "grid dims as JSON text, e.g. [512,1,1]"),
        Column("block", STR, "block dims as JSON text"),
        Column("registers", I32, "registers per thread"),
        Column("shared_mem", I64, "shared memory per block, bytes"),
        Column("blocks_per_sm", F64, "blocks per SM as reported by Kineto"),
        Column("occupancy", F64, "estimated achieved occupancy, percent"),
        Column("bytes", I64, "bytes moved (memcpy/memset), else null"),
    ),
)

CUPTI_KERNELS = Table(
    "cupti_kernels",
    "Kernels of the whole run outside the profiler windows, recorded by the cupti kernel mode "
    "(DSPROF_CUPTI_KERNELS=1): name and times only, no launching op.",
    (
        Column("rank", I32, "process rank"),
        Column("step", I64, "step the kernel started in (by start time)"),
        Column("device", I32, "device index"),
        Column("stream", I64, "stream id"),
        Column("name", STR, "kernel name"),
        Column("category", STR, "what the kernel does, as kernels.category"),
        Column("tensor_core", BOOL, "ran on Tensor Cores, as kernels.tensor_core"),
        Column("start_ns", I64, "start, ns on the run clock"),
        Column("dur_ns", I64, "duration, ns"),
        Column("correlation", I64, "CUDA correlation id"),
    ),
)

COMMS = Table(
    "comms",
    "Collective communication calls, one row per collective a rank took part in: from NCCL/RCCL "
    "kernels and ``record_param_comms`` events (GPU backends), or from gloo's worker-thread "
    "spans paired with the ``c10d::`` op that issued them (CPU).",
    (
        Column("rank", I32, "process rank"),
        Column("step", I64, "step of the call that issued the collective (null outside steps)"),
        Column("collective", STR,
               "all_reduce | all_gather | reduce_scatter | broadcast | reduce | all_to_all | "
               "send | recv | barrier | gather | scatter | ... (normalized name)"),
        Column("group", STR, "process group name (pg_name), null when the trace does not say"),
        Column("group_desc", STR, "process group description (default_pg, ...), null if unknown"),
        Column("group_size", I32, "ranks in the process group, null if unknown"),
        Column("dtype", STR, "element type as recorded (Float, float, c10::BFloat16, ...)"),
        Column("in_bytes", I64, "input message size, bytes (elements x element size)"),
        Column("out_bytes", I64, "output message size, bytes"),
        Column("start_ns", I64,
               "start of the transfer: the NCCL kernel on the device, the gloo worker span, or "
               "the host record_param_comms span when there is no kernel"),
        Column("dur_ns", I64, "duration of the transfer (waiting for peers included), ns"),
        Column("call_ns", I64, "start of the host op that issued the collective, ns"),
        Column("algbw_gbps", F64,
               "algorithm bandwidth, GB/s (1e9 B/s): data size / dur as nccl-tests defines it"),
        Column("busbw_gbps", F64,
               "bus bandwidth, GB/s: algbw times nccl-tests' factor for the collective "
               "(all_reduce 2(n-1)/n, all_gather/reduce_scatter/all_to_all (n-1)/n, else 1)"),
        Column("op_id", I64, "ops.id of the host op that issued it (c10d:: op, record_param_comms)"),
        Column("source", STR, "nccl_kernel | record_param_comms | gloo"),
    ),
)

HOST_SYNCS = Table(
    "host_syncs",
    "Calls that make the host wait for the device or copy a result to the host "
    "(Tensor.item/tolist/cpu/numpy, nonzero, torch.cuda.synchronize, a tensor used as a "
    "condition, converted by float()/int() or printed), per source line and step.",
    (
        Column("rank", I32, "process rank"),
        Column("step", I64, "step the calls happened in"),
        Column("call", STR, "item | tolist | cpu | numpy | nonzero | synchronize | to_cpu | "
               "bool (a tensor as a condition: if, while, and/or, assert) | float | int | "
               "repr (a tensor printed: print(t), str(t))"),
        Column("site", STR, "file:line of the user code that made the call"),
        Column("function", STR, "the user function around that line"),
        Column("device", STR, "device of the tensor (cpu, cuda:0, ...)"),
        Column("count", I64, "calls in the step"),
        Column("total_ns", I64, "time inside those calls, ns (on a GPU: mostly waiting)"),
        Column("max_ns", I64, "longest single call, ns"),
        Column("caller", STR,
               "where site lies in an installed package (a library's own read of a value), "
               "the file:line of the script's code that led there; null otherwise"),
    ),
)
