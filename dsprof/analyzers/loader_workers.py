"""Whether one more DataLoader worker can shorten the steps' wait, judged from what the
workers did while the training thread waited (``dataloaders.worker_*``, sampled by
collectors/worker_clock.py).

With workers, the training thread inside ``__next__`` waits on their queue, so its own CPU time
there says nothing of theirs. What they did meanwhile decides:

- on a CPU or waiting for one (``BUSY`` of the sampled time or more): they compute, and one more
  adds throughput only with a core of its own: the CPUs less what the training process used
  (``device_samples.cpu_util`` over its counted steps; where not sampled, torch's threads) and what the
  workers used;
- asleep, while the training thread slept too (its CPU time under ``MAIN_BUSY`` of the wait):
  they wait on disk or network, and more of them load more at once (up to 2 per CPU);
- asleep while the training thread worked through the wait: the batches were made, and the
  wait is their hand-off (unpickling, mapping shared memory), which more workers would not
  shorten. minGPT's adder (4 workers on 2 CPUs) waited 2.0 ms a batch that way, was told
  "4 -> 5", and 5 measured slower.

Runs without the sampled columns (before them, or no ``/proc/<pid>/schedstat``) are taken as
the busy case, each worker a core.
"""

from __future__ import annotations

from dataclasses import dataclass

from dsprof.analyzers.registry import Context

BUSY = 0.5
MAIN_BUSY = 0.25
MIN_SAMPLED_NS = 5_000_000  # under this much worker time sampled, their state is unknown
MAX_IO_WORKERS = 16
CONTENDED = 0.2  # the workers' share of the wait spent runnable but off a CPU


@dataclass(frozen=True)
class WorkerState:
    """Shares of the sampled waits' worker time."""

    waits: int
    cpu: float
    runq: float

    @property
    def asleep(self) -> float:
        return max(0.0, 1.0 - self.cpu - self.runq)

    def words(self) -> str:
        return (f"while the training thread waited ({self.waits} waits sampled), the workers "
                f"ran on a CPU {self.cpu:.0%} of the time, waited for one {self.runq:.0%} "
                f"and slept {self.asleep:.0%}")


def worker_state(waits: int | None, cpu_ns: int | None, runq_ns: int | None,
                 wall_ns: int | None) -> WorkerState | None:
    """The workers' shares, or None where the run did not sample enough of them."""
    if not waits or cpu_ns is None or runq_ns is None or not wall_ns:
        return None
    if wall_ns < MIN_SAMPLED_NS or waits < 1:
        return None
    # a run directory is data: shares outside 0-1 are clamped
    cpu = min(max(cpu_ns / wall_ns, 0.0), 1.0)
    runq = min(max(runq_ns / wall_ns, 0.0), 1.0 - cpu)
    return WorkerState(int(waits), cpu, runq)


def _sentence(words: str) -> str:
    return words[:1].upper() + words[1:]  # str.capitalize() would lower "CPU"


@dataclass(frozen=True)
class MoreWorkers:
    cap: int | None
    """The most workers to advise, or None: no count is advised (``why`` says why)."""
    why: str
    """A sentence for the finding's explanation, or the skip's reason."""
    contended: bool = False
    """The computing workers waited for a CPU ``CONTENDED`` of the time or more: the free
    cores counted from the training process's and the workers' use were not all free (other
    processes ran there), so a saving that gives the new worker a core is not sure."""


def more_workers(workers: int, cpus: int, threads: int, state: WorkerState | None,
                 main_cpu_share: float, main_cores: float | None = None) -> MoreWorkers:
    """``main_cpu_share``: the training thread's CPU time over its wait; ``main_cores``: the
    training process's CPU use in cores (median of ``device_samples.cpu_util`` over its steps;
    None: not sampled, and torch's threads stand for it)."""
    setting = (f"{workers} worker{'s' if workers > 1 else ''} on {cpus} "
               f"CPU{'s' if cpus > 1 else ''}")
    if state is not None and state.cpu + state.runq < BUSY:
        if main_cpu_share >= MAIN_BUSY:
            return MoreWorkers(None, (
                f"{state.words()}, and the training thread spent {main_cpu_share:.0%} of the "
                "wait on its CPU: the batches were made, and the wait is their hand-off to the "
                "training thread, which more workers would not shorten"))
        return MoreWorkers(min(MAX_IO_WORKERS, max(2, 2 * cpus)), (
            f"{_sentence(state.words())}, and the training thread slept through the wait too: "
            "they wait on disk or network, so more of them load more at once (up to 2 per "
            "CPU)."))
    # they compute (or were not seen: taken as computing): one more needs a core of its own
    worker_cores = workers * (state.cpu if state is not None else 1.0)
    if main_cores is not None:
        room = int(cpus - main_cores - worker_cores + 1e-9)
        basis = (f"the training process used {main_cores:.1f} of the {cpus} CPUs and the "
                 f"workers {worker_cores:.1f}")
    else:
        room = cpus - threads - workers
        basis = f"{setting} beside {threads} torch thread{'s' if threads > 1 else ''}"
    seen = (f"{state.words()}: they compute" if state is not None else
            "the run did not see whether the workers compute (more would contend for the "
            "same cores) or wait on disk or network (more would help)")
    if room < 1:
        return MoreWorkers(None, f"{seen}, and with {basis} no core is free for another")
    contended = state is not None and state.runq >= CONTENDED
    # a worker that waited for a CPU beside cores counted free: something else held them (a
    # 1-worker loader on 2 CPUs, runnable all the wait and on a CPU 72 % of it, beside other
    # jobs: 2 workers were priced 200.5 -> 100 ms a step and measured 127.6)
    return MoreWorkers(workers + room, (
        f"{_sentence(seen)}, and with {basis}, {room} core{'s are' if room > 1 else ' is'} "
        "free: at most that many more are advised."
        + (f" But the workers waited for a CPU {state.runq:.0%} of the time: other processes "
           "held these cores too, so the new worker may not get one to itself, and the saving "
           "is an upper bound (confidence medium)." if contended and state is not None else "")),
        contended)


@dataclass(frozen=True)
class RankCpus:
    cpus: int
    """The CPUs this rank's loading may count on."""
    why: str
    """A sentence for the explanation where that is a share of its host, else ""."""


def rank_cpus(ctx: Context, rank: int, affinity: int, host_cpus: int | None) -> RankCpus:
    """The CPUs a rank's DataLoader workers may count on: the rank's affinity
    (``dataloaders.cpu_count``), which is the whole machine unless the launcher bound the rank
    to some of it. The ranks that ran on one host (``meta.json`` ``clock.ranks[*].host``) share
    its ``host_cpus``: each gets at most ``host_cpus // k`` of k (torchrun's 8 ranks on a
    96-CPU host each see 96, and each could be told up to 95 workers, 760 on 96 CPUs). A
    rank bound to fewer CPUs than that keeps its affinity (8 ranks over 2 NUMA nodes of 48:
    12 each). Only the job's ranks that dsprof recorded are counted."""
    clock = ctx.meta.get("clock")
    ranks = clock.get("ranks") if isinstance(clock, dict) else None
    hosts = ({str(r): rec.get("host") for r, rec in ranks.items() if isinstance(rec, dict)}
             if isinstance(ranks, dict) else {})
    host = hosts.get(str(rank))
    sharing = sum(h == host for h in hosts.values()) if isinstance(host, str) and host else 1
    # a run directory is data: a count outside what the collector writes is not a machine
    if sharing <= 1 or not isinstance(host_cpus, int) or host_cpus < 1:
        return RankCpus(affinity, "")
    share = max(1, min(affinity, host_cpus // sharing))
    if share >= affinity:  # bound to its own CPUs already
        return RankCpus(affinity, "")
    return RankCpus(share, (
        f" {sharing} ranks ran on this host and share its {host_cpus} CPUs, so this rank's "
        f"loading is advised for {share} of them (it could run on {affinity})."))


def process_cores(ctx: Context, rank: int) -> float | None:
    """The training process's CPU use in cores over its counted steps (the median of its
    sampled utilization: all its threads, not its DataLoader workers), or None where not
    sampled."""
    # the steps that count (run.facts): in a profiled or setup step the profiler's own work
    # is in the process's CPU use
    counted = [int(s) for r, s, _ in ctx.run.facts.step.counted if int(r) == rank]
    if not counted or not ctx.nonempty("device_samples"):
        return None
    (median,) = ctx.run.sql("""SELECT median(cpu_util) FROM device_samples
                               WHERE rank = ? AND step IN (SELECT unnest(?::BIGINT[]))
                                 AND cpu_util >= 0""", [rank, counted])[0]
    return None if median is None else float(median) / 100


def gpu_worker_cores(ctx: Context, cpus: int) -> int | None:
    """On a GPU run, the cores a rank's DataLoader workers may take when loading is compute
    on the training thread: all but the one the training thread keeps (it launches the
    kernels). torch's CPU threads wait on the device while its kernels run, so a worker takes
    no core from the step's compute, unlike on a CPU run (``cpu_count - torch_threads`` there,
    and torch's threads reduced to make room). None on a CPU run."""
    return max(1, cpus - 1) if ctx.on_gpu else None
