"""What else the process did: its DataLoaders, torch.compile's compilations, the device's
sampled metrics (NVML), and the NaN/Inf anomalies an anomaly-check run found."""

from __future__ import annotations

from dsprof.schema.spec import BOOL, F64, I32, I64, STR, Column, Table

DATALOADERS = Table(
    "dataloaders",
    "One row per DataLoader the script iterated: its settings and the time the training thread "
    "waited for its batches (recorded for the whole run, not only profiled steps).",
    (
        Column("rank", I32, "process rank"),
        Column("loader", I32, "index of the DataLoader in the order it was first iterated"),
        Column("site", STR, "file:line of the user code that iterated it (the loop)"),
        Column("dataset", STR, "dataset class name"),
        Column("batch_size", I64, "DataLoader batch_size (null with a batch_sampler)"),
        Column("num_workers", I32, "worker processes (0: batches load on the training thread)"),
        Column("pin_memory", BOOL, "pin_memory setting"),
        Column("persistent_workers", BOOL, "persistent_workers setting"),
        Column("prefetch_factor", I32, "batches prefetched per worker (null with 0 workers)"),
        Column("iterators", I32, "passes started over it (iter() calls: one per epoch)"),
        Column("batches", I64, "batches returned"),
        Column("wait_ns", I64, "total time the training thread spent in the loader: iter() "
               "(workers started), each __next__, and the __next__ that ended a pass (workers "
               "stopped), ns"),
        Column("wait_cpu_ns", I64,
               "CPU time of the training thread in that time, ns (close to wait_ns: loading "
               "is compute on that thread; far below: it waited for workers, disk or network)"),
        Column("first_wait_ns", I64,
               "total time of each pass's iter(), first __next__ and end: the workers' start-up "
               "and shut-down unless they persist, ns"),
        Column("batch_tensors", I32,
               "tensors in the loader's first batch (nested tuples, lists, dicts): what a worker "
               "hands over per batch; null when it held none, and for runs recorded before this "
               "column"),
        Column("batch_bytes", I64, "bytes of those tensors; null where batch_tensors is"),
        Column("cpu_count", I32, "CPUs usable by the process (os.sched_getaffinity)"),
        Column("torch_threads", I32, "torch.get_num_threads() at the end of the run"),
        Column("worker_waits", I32,
               "waits sampled to see what the workers did meanwhile (at most one every 0.25 s, "
               "not a pass's first batch); null with 0 workers, where /proc/<pid>/schedstat "
               "cannot be read, and for runs recorded before this column"),
        Column("worker_cpu_ns", I64,
               "over the sampled waits, ns the workers ran on a CPU (summed over workers)"),
        Column("worker_runq_ns", I64,
               "over the sampled waits, ns the workers were runnable but waited for a CPU"),
        Column("worker_wall_ns", I64,
               "over the sampled waits, their wall time once per worker read: the rest of it "
               "past cpu and runq the workers slept (disk, network, a lock)"),
        Column("host_cpus", I32,
               "CPUs of the machine (os.cpu_count): what the ranks that ran on this host "
               "(meta.json clock.ranks[*].host) share; null for runs recorded before this "
               "column"),
    ),
)

COMPILES = Table(
    "compiles",
    "One row per compilation torch.compile's Dynamo recorded in a dsprof run (its "
    "get_compilation_metrics(), what TORCH_LOGS=recompiles prints): the code, why it compiled "
    "again, and whether it gave up; empty when the run never compiled.",
    (
        Column("rank", I32, "process rank"),
        Column("compile_id", STR, "Dynamo's id, frame/attempt ('0/3': the frame's fourth "
               "compilation)"),
        Column("frame", I32, "Dynamo's number of the compiled code (the id's first part)"),
        Column("attempt", I32, "which compilation of that code (0: the first; 1 and up: "
               "recompilations)"),
        Column("code", STR, "the compiled code's name (a module's forward, a function)"),
        Column("site", STR, "file:line where that code starts"),
        Column("step", I64, "step the compilation began in (null outside steps)"),
        Column("start_ns", I64, "when it began, ns on the run clock (Dynamo's wall-clock "
               "stamp moved onto it)"),
        Column("dur_ns", I64, "how long it took, ns (null where Dynamo did not say)"),
        Column("backward", BOOL, "the backward graph's compilation (AOTAutograd's, at the "
               "first backward)"),
        Column("recompile_reason", STR, "the guard that failed and made it compile again "
               "('0/2: G[\'STEP\'] == 2'); null for a first compilation"),
        Column("fail_type", STR, "what Dynamo raised when it gave up (null: it compiled)"),
        Column("fail_reason", STR, "the first line of why ('Dynamo recompile limit exceeded': "
               "the code runs uncompiled from then on)"),
    ),
)

DEVICE_SAMPLES = Table(
    "device_samples",
    "Host and GPU metrics sampled by a background thread for the whole run (every "
    "DSPROF_SAMPLE_MS); GPU columns are null without an NVIDIA GPU and NVML.",
    (
        Column("rank", I32, "process rank"),
        Column("ts_ns", I64, "sample time, ns on the run clock"),
        Column("step", I64, "step the sample falls in (null outside steps)"),
        Column("device", I32, "GPU index sampled (null when only the host is sampled)"),
        Column("cpu_util", F64, "CPU utilization of the process since the previous sample, "
               "percent of one core (can exceed 100)"),
        Column("rss_bytes", I64, "resident set size of the process, bytes"),
        Column("gpu_util", F64, "NVML GPU utilization: percent of the last sample period a "
               "kernel was running"),
        Column("mem_util", F64, "NVML memory utilization: percent of the period device memory "
               "was read or written"),
        Column("mem_used", I64, "device memory in use (all processes), bytes"),
        Column("power_w", F64, "board power draw, watts"),
        Column("sm_clock_mhz", I64, "SM clock, MHz"),
        Column("temp_c", I64, "GPU temperature, degrees Celsius"),
        Column("tensor_util", F64, "Hopper GPM: percent of SM time doing any Tensor Core work "
               "over the last GPM interval (at least 100 ms; null before Hopper)"),
        Column("sm_util", F64, "Hopper GPM: percent of SMs busy over the last GPM interval "
               "(at least 100 ms; null before Hopper)"),
    ),
)

ANOMALIES = Table(
    "anomalies",
    "The first op whose floating output held a NaN or Inf (dsprof run --detect-anomaly, or "
    "DS_LOG_LEVEL=DEBUG): one row per rank that stopped.",
    (
        Column("rank", I32, "process rank"),
        Column("step", I64, "step the op ran in"),
        Column("ts_ns", I64, "when it was found, ns on the run clock"),
        Column("op", STR, "the op, as the dispatcher names it (aten.div.Tensor)"),
        Column("module", STR, "module path it ran in (forward) or for (backward), null if none"),
        Column("phase", STR, "forward | backward | optimizer | other"),
        Column("autograd_node", STR, "the autograd node running it in backward (DivBackward0)"),
        Column("site", STR, "file:line of the innermost script frame that led to it"),
        Column("code", STR, "the source text of that line"),
        Column("kind", STR, "nan | inf | nan+inf: what the output held"),
        Column("output_index", I32, "which output of the op (flattened)"),
        Column("shape", STR, "the output's shape (JSON text)"),
        Column("dtype", STR, "the output's dtype"),
        Column("numel", I64, "elements in the output"),
        Column("nan_count", I64, "NaN elements in the output"),
        Column("inf_count", I64, "Inf elements in the output"),
        Column("inputs", STR,
               "per tensor input: shape, dtype, NaN/Inf counts, finite min/max/mean (JSON text)"),
        Column("frames", STR, "the script frames leading to the op, innermost first (JSON text)"),
    ),
)
