"""Where memory went: allocator events and their series over time, per module, per allocation site,
the CUDA allocator's own state, and who held the gradients."""

from __future__ import annotations

from dsprof.schema.spec import I32, I64, STR, Column, Table

MEMORY = Table(
    "memory",
    "Allocator events: every allocation and free the profiler saw, with running totals.",
    (
        Column("rank", I32, "process rank"),
        Column("device", STR, "cpu, cuda:N, ..."),
        Column("ts_ns", I64, "time, ns on the run clock (null for tensors that pre-existed the capture)"),
        Column("action", STR,
               "alloc | free | segment_alloc | segment_free | oom (segment and oom rows come "
               "from CUDA snapshots and do not change allocated)"),
        Column("addr", I64, "address (null when unknown)"),
        Column("bytes", I64, "signed change in bytes: positive for alloc, negative for free"),
        Column("allocated", I64, "total allocated after the event as the profiler reported it (null if absent)"),
        Column("reserved", I64, "total reserved after the event (null if absent)"),
        Column("category", STR,
               "parameter | gradient | optimizer_state | activation | input | temporary | other "
               "(dsprof runs and CUDA snapshots); export_memory_timeline files add "
               "autograd_detail and unknown; null when the source has no categories"),
        Column("op_id", I64, "ops.id of the innermost op running on the same thread"),
        Column("step", I64, "step the event falls in"),
        Column("free_ns", I64,
               "alloc rows: when the block was freed (null if still live when the capture "
               "ended); null on other rows"),
        Column("module", STR,
               "module path the allocation is charged to: the module whose forward saved it "
               "(activations), else the module of the op that allocated it"),
        Column("stack_id", I64, "stacks.stack_id of the allocation's Python stack, null if none"),
        Column("source", STR,
               "profiler ([memory] events), baseline (tensors alive when a dsprof window "
               "began), snapshot (CUDA _record_memory_history), timeline (export_memory_timeline)"),
        Column("capture", I32,
               "which capture of the rank the row belongs to (a window, a snapshot, an imported "
               "file); the rows of one capture form one timeline"),
    ),
)

MEMORY_SERIES = Table(
    "memory_series",
    "Live bytes over time by category, per rank and device, precomputed for plotting: at most "
    "a few thousand points per capture, each the state after an event (the peak is kept).",
    (
        Column("rank", I32, "process rank"),
        Column("device", STR, "cpu, cuda:N, ..."),
        Column("ts_ns", I64, "time, ns on the run clock"),
        Column("step", I64, "step the point falls in"),
        Column("capture", I32, "memory.capture the point comes from"),
        Column("total", I64, "live bytes (all categories)"),
        Column("parameter", I64, "live bytes of parameters and buffers"),
        Column("gradient", I64, "live bytes of .grad tensors"),
        Column("optimizer_state", I64, "live bytes of optimizer state"),
        Column("activation", I64, "live bytes saved for backward"),
        Column("input", I64, "live bytes of the model's inputs"),
        Column("temporary", I64, "live bytes freed within the step that made them"),
        Column("other", I64, "live bytes of everything else (uncategorized included)"),
    ),
)

MODULES = Table(
    "modules",
    "One row per module of the profiled model(s) and rank: size, what its forward saves for "
    "backward, its time.",
    (
        Column("rank", I32, "process rank"),
        Column("name", STR, "qualified module path, e.g. TransformerLM.blocks.0.attn"),
        Column("type", STR, "module class name"),
        Column("depth", I32, "nesting depth (0 = root)"),
        Column("params", I64, "parameters owned by the module and its children (count)"),
        Column("param_bytes", I64, "bytes of those parameters (and buffers)"),
        Column("activation_bytes", I64,
               "bytes saved for backward during one forward of the module and its children "
               "that were created inside that forward (what checkpointing it would free); "
               "largest over the profiled steps and windows"),
        Column("self_activation_bytes", I64,
               "the part of activation_bytes not charged to a child module"),
        Column("calls", I64, "forward calls per step (recomputation under checkpointing "
               "included)"),
        Column("fwd_ns", I64, "forward time per step (module spans, children included)"),
        Column("bwd_ns", I64, "backward time per step of the ops charged to the module or its "
               "children"),
        Column("flops", I64, "forward FLOPs per step of ops under the module (null if none)"),
    ),
)

STACKS = Table(
    "stacks",
    "Python stacks of allocations, referred to by memory.stack_id (one row per distinct "
    "stack per rank).",
    (
        Column("rank", I32, "process rank"),
        Column("stack_id", I64, "id, unique within a rank"),
        Column("site", STR, "the innermost user frame, file:line in function"),
        Column("frames", STR, "JSON list of [filename, line, function], innermost first"),
    ),
)

ALLOCATOR = Table(
    "allocator",
    "Allocator state at points in time: torch.cuda.memory_stats() at every step boundary, "
    "the segments of each CUDA snapshot, and (CPU) the live total at each profiled boundary.",
    (
        Column("rank", I32, "process rank"),
        Column("device", STR, "cpu, cuda:N, ..."),
        Column("step", I64, "the step that just ended (null for snapshots)"),
        Column("ts_ns", I64, "time, ns on the run clock"),
        Column("source", STR, "memory_stats | snapshot | timeline"),
        Column("allocated", I64, "bytes in live tensors"),
        Column("reserved", I64, "bytes the caching allocator holds from the device (null on CPU)"),
        Column("inactive_split", I64,
               "free bytes inside split blocks that cannot be returned (fragmentation)"),
        Column("largest_free", I64, "largest free block inside reserved memory (snapshots)"),
        Column("alloc_retries", I64, "cudaMalloc retries so far (cache flushed to satisfy one)"),
        Column("ooms", I64, "out-of-memory errors so far"),
        Column("device_allocs", I64, "cudaMalloc calls so far"),
        Column("device_frees", I64, "cudaFree calls so far"),
    ),
)

GRAD_HOLDERS = Table(
    "grad_holders",
    "Python variables that hold a tensor with an autograd graph at a profiled step boundary "
    "(a graph that grows across steps is kept alive by mistake).",
    (
        Column("rank", I32, "process rank"),
        Column("step", I64, "the step that just ended"),
        Column("name", STR, "variable name"),
        Column("function", STR, "function whose frame holds it (<module> for globals)"),
        Column("site", STR, "file:line of the statement that builds it up (an augmented "
               "assignment, or an assignment that reads it), else of the function"),
        Column("statement", STR, "that statement's source text, null if none was found"),
        Column("graph_nodes", I64, "autograd nodes reachable from its grad_fn (capped)"),
    ),
)
