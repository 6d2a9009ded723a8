"""Input pipeline: steps waiting on the DataLoader, and host copies from pageable memory.

**DataLoader wait** (``steps.data_wait_ns``, ``dataloaders``; dsprof runs): the mean wait per
step W over the steps that count (``run.facts``: not the steps dsprof disturbed), against the
mean step time S; reported when W is above 5 % of the step (the TensorBoard plugin's threshold)
by more than the run's step-time noise band (:func:`noise_margin_s`: a wait the step-to-step
noise could make is not evidence that loading holds the step back). The rest of the step,
C = S - W, is compute that prefetching workers can hide loading behind. Model for n workers
(each loads a whole batch, as DataLoader workers do): with 0 workers the load time per batch is
L = W; with n workers the steady-state wait is max(0, L / n - C), plus, for non-persistent
workers, one worker start-up and one unhidden load per pass over the data, spread over the
batches of a pass. The advice is the
smallest n whose steady wait is zero, capped by the cores: when the training thread's CPU time
inside ``__next__`` is close to its wall time, loading is compute and needs free cores
(``cpu_count - torch_threads``; on a GPU run all but the training thread's one, since torch's
CPU threads wait on the device: :func:`gpu_worker_cores`); when it is far below, loading waits on I/O and more workers
than cores still help. The saving is W minus the predicted wait.

A batch from a worker is not free: the worker moves each of its tensors into shared memory and
sends the handles (send, per batch), the training thread maps them back (receive), neither of
which loading in-process pays (:func:`handoff_ns`, calibrated by
benchmarks/dataloader_handoff_cpu.py; the tensors per batch are counted on the loader's first
batch, ``dataloaders.batch_tensors``). So from 0 workers the load per batch is L = W + send, the
training thread's work C + receive, and the saving W - receive - the predicted wait; a saving
under the threshold or the noise band is no finding (an accelerate loop over a TensorDataset
waited 0.29 ms of its 1.72 ms steps; 1 worker, verified, made them 3.79 ms).

With workers already on and still waiting, the advice is more workers (same model with L =
n_current (W + C), the time a worker takes per batch: together they deliver one batch a step),
up to what the workers did while the training thread waited on their queue (its own CPU time
there says nothing of theirs; analyzers/loader_workers.py): the cores the training process
and they left idle where they computed, 2 per CPU where they and the training thread slept
(I/O), none where they slept while the training thread worked through the wait (the
hand-off). No count: the analyzer says why. When the per-pass start-up dominates, the advice
is keeping the workers instead (analyzers/loader_startup.py).

**Pageable host-to-device copies** (``kernels``; GPU traces): analyzers/pageable_copies.py.
"""

from __future__ import annotations

import math

from dsprof.analyzers.claims import DATA_WAIT, GPU_IDLE
from dsprof.analyzers.frameworks import framework_fix
from dsprof.analyzers.loader_startup import startup_finding
from dsprof.analyzers.loader_workers import (
    MAX_IO_WORKERS,
    gpu_worker_cores,
    more_workers,
    process_cores,
    rank_cpus,
    worker_state,
)
from dsprof.analyzers.pageable_copies import pageable_copies
from dsprof.analyzers.registry import Analyzer, Context
from dsprof.findings import Evidence, Finding
from dsprof.metrics.noise import has_column, rank_step_spread
from dsprof.units import fmt_bytes
from dsprof.vocabulary import MAX_BATCH_TENSORS

THRESHOLD = 0.05  # DataLoader share of the step worth a finding (tb_plugin's rule)
# Handing a batch from a worker process over (torch 2.13, CPU, shared-memory file descriptors;
# benchmarks/dataloader_handoff_cpu.py, batches of 1-8 tensors of 8 KiB-8 MiB, each shape's fit
# within 18 %): the worker moves every tensor into shared memory and sends its handle, the
# training thread maps it back. Neither is paid when the training thread loads the batch.
RECEIVE_NS = (130_000, 176_000, 0.037)  # training thread: a batch, a tensor, a byte
SEND_NS = (433_000, 366_000, 0.294)  # worker: a batch, a tensor, a byte
DEFAULT_BATCH_TENSORS = 2  # (input, target), for runs that did not count them
WORKER_START_NS = 60_000_000  # forking a worker with torch imported, measured here: 40-80 ms


def noise_margin_s(ctx: Context, rank: int) -> float:
    """How far above the 5 % threshold the wait must be: the run's noise band (two standard
    errors of a difference of medians, ``metrics.noise``) over rank 0's steady steps, or, with
    fewer than five of them (a short run), over the rank's steps that ran the program's work
    (``rank_step_spread``), whichever is larger; 0 when neither can be measured."""
    bands = [n.band_s() for n in (ctx.noise if rank == 0 else None,
                                  rank_step_spread(ctx.run).get(rank)) if n is not None]
    return max(bands, default=0.0)


def handoff_ns(tensors: int, nbytes: int) -> tuple[float, float]:
    """(receive on the training thread, send in the worker), ns per batch of ``tensors``
    tensors of ``nbytes`` in all."""
    receive = RECEIVE_NS[0] + RECEIVE_NS[1] * tensors + RECEIVE_NS[2] * nbytes
    send = SEND_NS[0] + SEND_NS[1] * tensors + SEND_NS[2] * nbytes
    return receive, send


def predicted_wait_ns(load_ns: float, compute_ns: float, workers: int, persistent: bool,
                      batches_per_pass: float) -> float:
    """Mean wait per step with ``workers`` loader processes (the model in the module doc)."""
    if workers <= 0:
        return load_ns
    steady = max(0.0, load_ns / workers - compute_ns)
    if persistent or batches_per_pass <= 0:
        return steady
    return steady + (WORKER_START_NS + load_ns) / batches_per_pass


class InputPipeline(Analyzer):
    name = "input_pipeline"
    requires = ()
    claims = ((GPU_IDLE, ("input.",)), (DATA_WAIT, ("input.",)))

    def skip_reason(self, ctx: Context) -> str | None:
        if ctx.nonempty("dataloaders") or ctx.nonempty("kernels"):
            return None
        return ("needs the dataloaders table (a dsprof run whose script iterates a DataLoader) "
                "or GPU kernels (pageable copies)")

    def run(self, ctx: Context) -> list[Finding]:
        out = []
        self.no_finding_reason = None
        if ctx.nonempty("dataloaders") and ctx.steps_missing:
            # the loader's wait is measured per step, in the steps table
            self.no_finding_reason = ctx.steps_missing
        elif ctx.nonempty("dataloaders"):
            out.extend(self._loader_waits(ctx))
        elif ctx.nonempty("ops"):
            out.extend(self._traced_loader_waits(ctx))
        if ctx.nonempty("kernels"):
            out.extend(pageable_copies(ctx, self.name, _verify(ctx)))
        return out

    def _traced_loader_waits(self, ctx: Context) -> list[Finding]:
        """An imported trace's DataLoader: torch.profiler records each batch fetch as an
        ``enumerate(DataLoader)#_SingleProcessDataLoaderIter.__next__`` span (the TensorBoard
        plugin's source). Above 5 % of the step it is a finding: with a single-process loader
        the GPU idles while the training process loads each batch; workers prefetch it."""
        rows = ctx.run.sql("""
            SELECT rank, name, count(*), sum(dur_ns), count(DISTINCT step), min(id),
                   min(start_ns)
            FROM ops WHERE name LIKE 'enumerate(DataLoader)#%__next__'
            GROUP BY rank, name ORDER BY rank, name""")
        out = []
        step_s = ctx.step_s
        for rank, name, n, wait_ns, n_steps, first_id, first_ns in rows:
            per_step = float(wait_ns) / max(int(n_steps or 0), 1) / 1e9
            idle = _gpu_idle_during(ctx, int(rank), str(name))
            idle_per_step = (None if idle is None
                             else idle / max(int(n_steps or 0), 1) / 1e9)
            saving = per_step if idle_per_step is None else min(per_step, idle_per_step)
            words = ctx.words
            unit = words.per_step if n_steps else f"{words.in_capture} (it marks no steps)"
            margin = noise_margin_s(ctx, int(rank)) if n_steps else 0.0
            if n_steps and step_s and per_step < THRESHOLD * step_s + margin:
                continue
            single = "SingleProcess" in str(name)
            share = (f" ({per_step / step_s:.0%} {words.of_the_step})" if n_steps and step_s
                     else "")
            out.append(Finding(
                analyzer=self.name, kind="input.dataloader_wait", key=f"trace|rank{rank}",
                title=(f"{'Load batches in DataLoader workers' if single else 'Add DataLoader workers'}"
                       f": the training process waits {per_step * 1e3:.1f} ms {unit} for its "
                       f"batches{share}"),
                saving_s=saving if n_steps else 0.0, confidence="low",
                explanation=(f"{n} batch fetches ({str(name).split('#')[-1]}) took "
                             f"{float(wait_ns) / 1e6:.1f} ms on rank {rank}. "
                             + ("The loader runs in the training process (num_workers=0): the "
                                "GPU waits while each batch is read and transformed. Workers "
                                "load the next batches while the GPU computes. " if single else
                                "The workers do not keep up: the training process still waits "
                                "for them. ")
                             + ("The saving is the wait, at most." if idle_per_step is None else
                                f"The GPU had nothing to run for {idle_per_step * 1e3:.1f} ms of "
                                f"{words.each_steps} wait (it finished queued kernels in the "
                                "rest): "
                                "that is the saving." if n_steps else
                                f"The GPU had nothing to run for {idle_per_step * 1e3:.1f} ms of "
                                "that wait (it finished queued kernels in the rest). "
                                f"{words.capture.capitalize()} marks no steps: no saving is "
                                "rated.")),
                evidence=(Evidence(f"{name} x {n}: {float(wait_ns) / 1e6:.1f} ms",
                                   rank=int(rank), start_ns=int(first_ns),
                                   op_ids=(int(first_id),)),),
                fix=(framework_fix(ctx, "dataloader") +
                     "loader = DataLoader(dataset, batch_size=..., num_workers=4,\n"
                     "                    persistent_workers=True, pin_memory=True)"),
                verify=_verify(ctx),
                data={"wait_ms_per_step": per_step * 1e3, "single_process": single,
                      "gpu_idle_ms_per_step": (None if idle_per_step is None
                                               else idle_per_step * 1e3),
                      "fetches": int(n), "noise_margin_ms": margin * 1e3}))
        return out

    def _loader_waits(self, ctx: Context) -> list[Finding]:
        # the steps that count (run.facts: full-speed steps of a dsprof run; setup, the
        # profiler's window and the trace write are never evidence), else every step but setup
        counted = {(r, s) for r, s, _ in ctx.run.facts.step.counted}
        waits: dict[int, list[tuple[int, int]]] = {}
        for rank, step, wait, dur in ctx.run.sql(
                "SELECT rank, step, data_wait_ns, dur_ns FROM steps "
                "WHERE data_wait_ns IS NOT NULL AND dur_ns > 0 ORDER BY rank, step"):
            if (rank, step) in counted or (not counted and step > 0):
                waits.setdefault(int(rank), []).append((int(wait), int(dur)))
        out = []
        for rank, rows in waits.items():
            steps = len(rows)
            wait = sum(w for w, _ in rows) / steps
            dur = sum(d for _, d in rows) / steps
            margin = noise_margin_s(ctx, rank)
            if wait < THRESHOLD * dur + margin * 1e9:
                continue
            # runs recorded before these columns read them as nulls
            made_up = ", ".join(c if has_column(ctx.run, "dataloaders", c) else "NULL"
                                for c in ("batch_tensors", "batch_bytes", "worker_waits",
                                          "worker_cpu_ns", "worker_runq_ns", "worker_wall_ns",
                                          "host_cpus"))
            loaders = ctx.run.sql(f"""
                SELECT loader, site, dataset, batch_size, num_workers, persistent_workers,
                       prefetch_factor, iterators, batches, wait_ns, wait_cpu_ns, first_wait_ns,
                       cpu_count, torch_threads, {made_up}
                FROM dataloaders WHERE rank = ? ORDER BY wait_ns DESC""", [rank])
            startup = startup_finding(ctx, rank, float(wait), float(dur), _verify(ctx),
                                      self.name)
            if startup is not None:
                out.append(startup)  # more workers would only start more processes
            elif loaders:
                finding = self._advise(rank, steps, float(wait), float(dur), margin,
                                       loaders[0], ctx)
                if finding is not None:
                    out.append(finding)
        return out

    def _advise(self, rank: int, steps: int, wait: float, dur: float, margin_s: float,
                loader: tuple, ctx: Context) -> Finding | None:
        (_, site, dataset, batch_size, workers, _, _, passes, batches,
         total_wait, wait_cpu, first_wait, cpus, threads, tensors, nbytes, *sampled,
         host_cpus) = loader
        shared = rank_cpus(ctx, rank, int(cpus or 1), host_cpus)
        cpus = shared.cpus
        compute = max(dur - wait, 0.0)
        counted = tensors is not None
        # a run directory is data: a count outside what the collector can write is clamped
        tensors, nbytes = ((min(max(int(tensors), 1), MAX_BATCH_TENSORS), max(int(nbytes or 0), 0))
                           if counted else (DEFAULT_BATCH_TENSORS, 0))
        receive, send = handoff_ns(tensors, nbytes)
        per_pass = batches / max(passes, 1)
        cpu_bound = total_wait > 0 and wait_cpu / total_wait > 0.5
        gpu_cores = gpu_worker_cores(ctx, cpus)  # None on a CPU run
        free_cores = (gpu_cores if gpu_cores is not None
                      else max(1, cpus - threads) if cpu_bound else max(1, cpus))
        cap = free_cores if cpu_bound else min(MAX_IO_WORKERS, max(2, 2 * cpus))
        workers_said, contended = "", False
        if workers > 0:
            # the training thread waits on the workers' queue: what they did meanwhile decides
            # (analyzers/loader_workers.py), not its own CPU time there
            cpu_bound = False
            judged = more_workers(workers, cpus, threads, worker_state(*sampled),
                                  wait_cpu / max(total_wait, 1), process_cores(ctx, rank))
            if judged.cap is None:
                self.no_finding_reason = (f"steps wait {wait / 1e6:.1f} ms for data: "
                                          f"{judged.why}; no worker count is advised."
                                          f"{shared.why}")
                return None
            cap, workers_said, contended = judged.cap, f" {judged.why}", judged.contended
        if workers == 0:
            # from a worker, a batch costs the worker its load and the send, and the
            # training thread the receive, which it did not pay loading in-process
            load = wait + send
            busy = compute + receive  # the training thread's work per step, batch received
        else:
            # the wait already holds the receive, and a worker's time per batch its send. The
            # workers keep the steps waiting W: together they deliver one batch per step, so
            # each one takes n steps' time per batch
            load = workers * (wait + compute)
            busy = compute
        need = max(1, math.ceil(load / max(busy, 1.0)))
        n = max(workers + 1, min(need, cap)) if workers else min(need, cap)
        if n > cap:  # more workers than the cores (or, waiting on I/O, 2 per CPU) allow
            self.no_finding_reason = (f"steps wait {wait / 1e6:.1f} ms for data from {workers} "
                                      f"DataLoader workers, already the most advised here "
                                      f"({cap} on {cpus} CPUs).{shared.why}")
            return None
        threads_to, slower = None, 0.0
        if cpu_bound and gpu_cores is None and cpus - threads < n:
            # no core is free for a worker: beside torch's threads it would stall them (OpenMP's
            # threads wait for each other after each op; 1 worker beside 2 threads on 2 cores
            # took a 14.65 ms step to 25.35 ms, verified), so the fix gives the workers their
            # cores, and the rest of the step runs on fewer threads: priced as if it scaled
            # perfectly with threads, the worst case for this fix
            if cpus - n < 1:  # not a core to give a worker
                self.no_finding_reason = (
                    f"steps wait {wait / 1e6:.1f} ms for data loaded on the training thread, "
                    f"but with {cpus} CPU{'s' if cpus > 1 else ''} no core is free for a "
                    f"worker beside it.{shared.why}")
                return None
            threads_to = cpus - n
            slower = compute * (threads / threads_to - 1)
            busy += slower
        after = predicted_wait_ns(load, busy, n, True, per_pass)
        saving = wait - after - (receive if workers == 0 else 0.0) - slower
        if saving <= max(margin_s * 1e9, THRESHOLD * dur):
            # a wait shorter than a worker's hand-off: workers would not pay (an accelerate
            # loop over a TensorDataset waited 0.29 ms of 1.72 ms steps, and 1 worker made its
            # steps 3.79 ms)
            return None
        share = wait / dur
        where = f"DataLoader({dataset}, batch_size={batch_size}) iterated at {site}"
        kind_txt = ("it waits on the workers' queue" if workers > 0
                    else "loading is compute on the training thread" if cpu_bound
                    else "loading waits (I/O or sleep), not compute")
        words = ctx.words
        if workers == 0:
            title = (f"Load batches in {n} DataLoader worker process{'es' if n > 1 else ''}: "
                     "the training thread "
                     f"loads them itself and waits {wait / 1e6:.1f} ms {words.per_step} "
                     f"({share:.0%} {words.of_the_step})")
        else:
            title = (f"Raise DataLoader workers {workers} -> {n}: steps still wait "
                     f"{wait / 1e6:.1f} ms for data ({share:.0%} {words.of_the_step})")
        confidence = "medium" if contended else "high" if not cpu_bound else (
            "medium" if gpu_cores is not None or cpus - threads >= n else "low")
        explanation = (
            f"Mean over {steps} steps on rank {rank}: step {dur / 1e6:.1f} ms, of which "
            f"{wait / 1e6:.1f} ms inside the DataLoader's __next__ and {compute / 1e6:.1f} ms "
            f"of other work. The training thread's CPU time while loading is "
            f"{wait_cpu / max(total_wait, 1):.0%} of that wait, so {kind_txt}. "
            + (f"A single-process loader on a machine with {cpus} CPUs. "
               if workers == 0 and not shared.why else "A single-process loader. "
               if workers == 0 else "")
            + ("The model runs on the GPU: torch's CPU threads wait on it while its kernels "
               "run, so workers take no core from the step (the training thread keeps one). "
               if gpu_cores is not None and workers == 0 else "")
            + (f"A batch of {tensors} tensor{'s' if tensors != 1 else ''} "
               f"{'(' + fmt_bytes(nbytes) + ') ' if counted else '(assumed: the run did not count them) '}"
               f"costs a worker {send / 1e6:.2f} ms to hand over and the training thread "
               f"{receive / 1e6:.2f} ms to receive (benchmarks/dataloader_handoff_cpu.py). "
               if workers == 0 else "")
            + f"Each batch takes one worker about {load / 1e6:.1f} ms; {n} worker(s) prefetching "
            f"behind {busy / 1e6:.1f} ms of compute leave a predicted wait of "
            f"{after / 1e6:.1f} ms {words.per_step} (persistent workers, so no start-up per "
            "epoch). "
            f"The wait is over the {THRESHOLD:.0%} threshold by more than the run's step-time "
            f"noise band ({margin_s * 1e3:.2f} ms).{shared.why}{workers_said}")
        if threads_to is not None:
            explanation += (
                f" torch uses {threads} threads on {cpus} CPUs, so no core is free for a "
                f"worker: beside them it would stall them (OpenMP's threads wait for each other "
                f"after each op), so the fix also sets torch.set_num_threads({threads_to}); the "
                f"step's {compute / 1e6:.1f} ms of other work is priced on {threads_to} "
                f"thread{'s' if threads_to > 1 else ''} as if it scaled perfectly with threads "
                f"({(compute + slower) / 1e6:.1f} ms), the worst case for this fix.")
        fix = ((f"torch.set_num_threads({threads_to})  # at the start: leave the workers "
                "their cores\n" if threads_to is not None else "")
               + "loader = DataLoader(\n    dataset, batch_size=..., shuffle=...,\n"
               f"    num_workers={n},\n    persistent_workers=True,  # no worker start-up "
               "per epoch\n)")  # prefetch_factor as it is: DS_DATALOADER_WORKERS keeps it too
        evidence = (
            Evidence(f"{where}: {batches} batches, {total_wait / 1e6:.1f} ms waiting in all, "
                     f"{workers} workers", rank=rank, site=site, value=total_wait / 1e6),
            Evidence(f"first batch of each of {passes} passes: {first_wait / 1e6:.1f} ms in all",
                     rank=rank, site=site, value=first_wait / 1e6),
        )
        return Finding(
            analyzer=self.name, kind="input.dataloader_wait", key=f"{site}|{dataset}",
            title=title, saving_s=saving / 1e9, confidence=confidence,
            explanation=explanation, evidence=evidence,
            fix=framework_fix(ctx, "dataloader") + fix,
            apply={"DS_DATALOADER_WORKERS": str(n),
                   **({"DS_TORCH_THREADS": str(threads_to)} if threads_to is not None else {})},
            verify=_verify(ctx),
            data={"workers": workers, "advised_workers": n, "wait_ms": wait / 1e6,
                  "predicted_wait_ms": after / 1e6, "compute_ms": compute / 1e6,
                  "cpu_bound": cpu_bound, "noise_margin_ms": margin_s * 1e3,
                  "torch_threads_to": threads_to, "compute_slower_ms": slower / 1e6})


def _gpu_idle_during(ctx: Context, rank: int, name: str) -> float | None:
    """Nanoseconds of the batch fetches ``name`` on ``rank`` during which no kernel, copy or
    set ran on the device (None without device activity): only that part of the wait is GPU
    time lost, and it is what the GPU-idle findings share (``claims.py``)."""
    if not ctx.nonempty("kernels"):
        return None
    busy = ctx.run.sql("""SELECT start_ns, start_ns + greatest(dur_ns, 0) FROM kernels
                          WHERE rank = ? AND kind <> 'sync' ORDER BY 1""", [rank])
    if not busy:
        return None
    merged: list[list[int]] = []
    for a, b in busy:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    idle = 0
    # inside the steps, or over the whole capture of a trace that marks none
    in_steps = "AND step IS NOT NULL" if ctx.step_s is not None else ""
    fetches = ctx.run.sql("SELECT start_ns, start_ns + dur_ns FROM ops WHERE rank = ? "
                          f"AND name = ? {in_steps}", [rank, name])
    for a, b in fetches:
        covered = sum(max(0, min(b, y) - max(a, x)) for x, y in merged if x < b and y > a)
        idle += (b - a) - covered
    return float(idle)


def _verify(ctx: Context) -> str:
    return ("dsprof verify {run} {id}" if ctx.target_command
            else "re-run the job with the fix, import its trace, compare with dsprof diff")
