"""Whether one more DataLoader worker can shorten the steps' wait, judged from what the
workers did while the training thread waited (``dataloaders.worker_*``, sampled by
collectors/worker_clock.py).

With workers, the training thread inside ``__next__`` waits on their queue, so its own CPU time
there says nothing of theirs. What they did meanwhile decides:

- on a CPU or waiting for one (``BUSY`` of the sampled time or more): they compute, and one more
  adds throughput only with a core of its own (``cpu_count - torch_threads``);
- asleep, while the training thread slept too (its CPU time under ``MAIN_BUSY`` of the wait):
  they wait on disk or network, and more of them load more at once (up to 2 per CPU);
- asleep while the training thread worked through the wait: the batches were made, and the
  wait is their hand-off (unpickling, mapping shared memory), which more workers would not
  shorten. minGPT's adder (4 workers on 2 CPUs) waited 2.0 ms a batch that way, was told
  "4 -> 5", and 5 measured slower.

Runs without the sampled columns (before them, or no ``/proc/<pid>/schedstat``) get the free
cores only, as the busy case.
"""

from __future__ import annotations

from dataclasses import dataclass

BUSY = 0.5
MAIN_BUSY = 0.25
MIN_SAMPLED_NS = 5_000_000  # under this much worker time sampled, their state is unknown
MAX_IO_WORKERS = 16


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


def more_workers(workers: int, cpus: int, threads: int, state: WorkerState | None,
                 main_cpu_share: float) -> MoreWorkers:
    free = cpus - threads
    setting = (f"{workers} worker{'s' if workers > 1 else ''} beside {threads} torch "
               f"thread{'s' if threads > 1 else ''} on {cpus} CPU{'s' if cpus > 1 else ''}")
    if state is None:
        if workers >= free:
            return MoreWorkers(None, (
                f"{setting}: no core is free for another worker, and the run did not see "
                "whether the workers compute (more would contend for the same cores) or wait "
                "on disk or network (more would help)"))
        return MoreWorkers(free, (
            "The run did not see what the workers did, so at most the "
            f"{free} cores torch's threads leave free are advised."))
    if state.cpu + state.runq >= BUSY:
        if workers >= free:
            return MoreWorkers(None, (
                f"{state.words()}: they compute, and with {setting} no core is free for "
                "another, which would contend for the same cores"))
        return MoreWorkers(free, (
            f"{_sentence(state.words())}: they compute, so at most the {free} cores "
            "torch's threads leave free are advised."))
    if main_cpu_share >= MAIN_BUSY:
        return MoreWorkers(None, (
            f"{state.words()}, and the training thread spent {main_cpu_share:.0%} of the wait "
            "on its CPU: the batches were made, and the wait is their hand-off to the training "
            "thread, which more workers would not shorten"))
    return MoreWorkers(min(MAX_IO_WORKERS, max(2, 2 * cpus)), (
        f"{_sentence(state.words())}, and the training thread slept through the wait too: "
        "they wait on disk or network, so more of them load more at once (up to 2 per CPU)."))
