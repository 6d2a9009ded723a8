"""The DataLoader wait's noise margin (issue 19): a wait fires only when it is above 5 % of the
step by more than the run's step-time noise band, and only the steps that count (not those
dsprof disturbed) are evidence. Synthetic runs (Run.from_tables) of a ``dsprof run``."""

from __future__ import annotations

import pytest

from dsprof.analyzers.input_pipeline import THRESHOLD, handoff_ns
from dsprof.analyzers.registry import analyze
from dsprof.run import Run
from tests.unit.test_analyzers_synthetic import MS, steps, table

RUN = {"source": "run", "target": {"kind": "script", "name": "train.py", "argv": ["train.py"]}}


def _run(durs_ms: list[float], waits_ms: list[float],
         disturbed_by: list[str | None] | None = None, workers: int = 0, cpus: int = 8,
         threads: int = 4, main_cpu: float | None = None,
         sampled: tuple[float, float] | None = None,
         process_cores: float | list[float] | None = None, gpu: bool = False,
         hosts: list[str] | None = None, host_cpus: int | None = None) -> Run:
    """``main_cpu``: the training thread's CPU share of the wait (default: all of it without
    workers, a third with them). ``sampled``: the workers' (CPU, run-queue) shares of 20
    sampled waits of 4 ms each, per worker; None: not sampled (a run before those columns).
    ``process_cores``: the training process's sampled CPU use in each step (device_samples).
    ``gpu``: the rank trained on a GPU (meta.json's device). ``hosts``: the host of each rank
    of the job (meta.json's clock; this run's tables are rank 0's); ``host_cpus``: the
    machine's CPUs (None: a run recorded before that column)."""
    n = len(durs_ms)
    cols = {"data_wait_ns": [int(w * MS) for w in waits_ms], "cpu_ns": [int(d * MS)
                                                                        for d in durs_ms]}
    if disturbed_by is not None:
        cols["disturbed_by"] = disturbed_by
    total = int(sum(waits_ms) * MS)
    samples = {} if process_cores is None else {"device_samples": table(
        *({"rank": 0, "ts_ns": i * 1000, "step": i, "cpu_util": 100 * (
            process_cores[i] if isinstance(process_cores, list) else process_cores),
           "rss_bytes": 1 << 30} for i in range(n)))}
    device = {"kind": "cuda", "index": 0, "name": "NVIDIA H100 80GB HBM3",
              "total_memory": 80 << 30, "capability": "9.0", "count": 1}
    meta = {**RUN, "devices": {"0": device}} if gpu else dict(RUN)
    if hosts is not None:
        meta["clock"] = {"ranks": {str(r): {"host": h} for r, h in enumerate(hosts)}}
    return Run.from_tables(
        meta=meta, **samples,
        steps={**steps(durs_ms, **cols), "profiled": [False] * n},
        dataloaders=table({"loader": 0, "site": "train.py:12", "dataset": "Synthetic",
                           "batch_size": 32, "num_workers": workers, "pin_memory": False,
                           "persistent_workers": workers > 0,
                           "prefetch_factor": 2 if workers else None,
                           "iterators": 1, "batches": n, "wait_ns": total,
                           "wait_cpu_ns": int(total * (main_cpu if main_cpu is not None
                                                       else 1.0 if not workers else 1 / 3)),
                           "first_wait_ns": int(waits_ms[0] * MS),
                           "cpu_count": cpus, "torch_threads": threads,
                           **({"host_cpus": host_cpus} if host_cpus is not None else {}),
                           **_sampled(workers, sampled)}))


def _sampled(workers: int, shares: tuple[float, float] | None) -> dict:
    if shares is None:
        return {}
    wall = 20 * 4 * MS * workers
    return {"worker_waits": 20, "worker_cpu_ns": int(wall * shares[0]),
            "worker_runq_ns": int(wall * shares[1]), "worker_wall_ns": int(wall)}


def _waits(run: Run) -> list:
    out = analyze(run, only=("input_pipeline",), write=False)
    assert not out.failed, out.failed
    return [f for f in out.findings if f.kind == "input.dataloader_wait"]


def test_a_wait_just_over_the_threshold_fires_on_steady_steps():
    # GIVEN 12 steps of 20 ms (+-0.05 ms), 1.6 ms of each waiting for data (8 %)
    durs = [200.0] + [20.0 + (0.05 if i % 2 else -0.05) for i in range(11)]
    (f,) = _waits(_run(durs, [1.6] * 12))
    # THEN the finding fires, and says the margin it cleared (the run's noise band)
    assert f.data["noise_margin_ms"] < 0.2
    assert f.data["wait_ms"] == pytest.approx(1.6, rel=0.01)
    assert "noise band" in f.explanation


def test_the_same_wait_inside_the_step_time_noise_does_not_fire():
    # GIVEN the same 8 % wait, but steps that swing 14-26 ms from one to the next (a loaded
    # machine): the run's noise band is several ms, more than the wait's 1.6 ms
    durs = [200.0] + [20.0 + (6.0 if i % 2 else -6.0) for i in range(11)]
    run = _run(durs, [1.6] * 12)
    assert 1.6 > THRESHOLD * 20.0
    # THEN no finding: the wait is over 5 % of the step, but not by more than the noise
    assert _waits(run) == []


def test_a_wait_far_above_the_noise_still_fires_on_noisy_steps():
    # GIVEN the swinging steps, with 12 ms of each waiting for data
    durs = [200.0] + [30.0 + (6.0 if i % 2 else -6.0) for i in range(11)]
    (f,) = _waits(_run(durs, [12.0] * 12))
    assert f.data["noise_margin_ms"] > 1.0 and f.saving_s > 0.005


def test_a_short_run_uses_the_spread_of_its_few_steps():
    # GIVEN a run too short for five steady steps (the corpus' 6-step schedule): setup, first
    # call, warm-up, a 2-step window and the trace write; the steps vary by ~4 ms
    durs = [2000.0, 9.0, 4.0, 5.0, 6.0, 14.0]
    marks = ["setup", "first_call", "warmup", "window", "window", "trace_write"]
    run = _run(durs, [0.3, 0.3, 0.5, 0.6, 0.5, 0.4], marks)
    # THEN the few steps' spread is the margin, and a 7 % wait inside it is no finding
    assert _waits(run) == []
    # while a wait well above it is
    (f,) = _waits(_run(durs, [0.3, 0.3, 5.0, 5.0, 5.0, 5.0], marks))
    assert f.data["noise_margin_ms"] > 0.5


def test_disturbed_steps_are_not_evidence_of_a_wait():
    # GIVEN 12 steady steps with no wait, and the step that wrote the profiler's trace waiting
    # 60 ms (dsprof's own cost, not the loader's)
    durs = [200.0] + [20.0] * 4 + [80.0] + [20.0] * 6
    marks = ["setup", "first_call", "warmup", "window", "window", "trace_write", *[None] * 6]
    waits = [0.0] * 5 + [60.0] + [0.0] * 6
    # THEN no finding: the mean over every step after setup would have been 5.5 ms (22 %)
    assert _waits(_run(durs, waits, marks)) == []


def _loader_run(durs_ms: list[float], waits_ms: list[float], tensors: int,
                nbytes: int) -> Run:
    """``_run`` with the loader's batch make-up recorded (``batch_tensors``/``batch_bytes``)."""
    run = _run(durs_ms, waits_ms)
    row = {c: run.table("dataloaders").column(c)[0].as_py()
           for c in run.table("dataloaders").column_names if c != "rank"}
    n = len(durs_ms)
    return Run.from_tables(
        meta=RUN, steps={**steps(durs_ms, data_wait_ns=[int(w * MS) for w in waits_ms],
                                 cpu_ns=[int(d * MS) for d in durs_ms]),
                         "profiled": [False] * n},
        dataloaders=table({**row, "batch_tensors": tensors, "batch_bytes": nbytes}))


def test_a_wait_shorter_than_a_workers_handoff_is_no_finding():
    # GIVEN an accelerate loop over a TensorDataset: 1.72 ms steps, 0.29 ms of each in the
    # loader (17 %, far over the threshold and the noise), batches of 2 tensors, 8.3 KiB;
    # dsprof verify measured 3.79 ms steps with 1 worker
    durs = [200.0] + [1.72 + (0.01 if i % 2 else -0.01) for i in range(23)]
    run = _loader_run(durs, [0.29] * 24, tensors=2, nbytes=8448)
    # THEN no finding: receiving a batch from a worker costs the training thread more than
    # loading it (handoff_ns)
    assert _waits(run) == []


def test_a_long_wait_still_fires_and_prices_the_handoff():
    # GIVEN 8 ms of a 12 ms step in the loader, batches of 3 tensors of 1 MiB in all
    durs = [200.0] + [12.0 + (0.02 if i % 2 else -0.02) for i in range(23)]
    (f,) = _waits(_loader_run(durs, [8.0] * 24, tensors=3, nbytes=1 << 20))
    receive, send = handoff_ns(3, 1 << 20)
    # THEN the saving is the wait less the receive (3 workers keep up with load + send)
    assert f.saving_s == pytest.approx((8.0 * MS - receive) / 1e9, rel=1e-6)
    assert "A batch of 3 tensors (1.00 MiB) costs a worker" in f.explanation
    assert send > receive > 0 and f.data["advised_workers"] == 3


def test_the_loader_collector_counts_a_batchs_tensors():
    import torch
    from torch.utils.data import DataLoader

    from dsprof.collectors.dataloader import DataLoaderCollector

    # GIVEN a real DataLoader whose batches are dicts of a tensor and a (tensor, tensor) pair
    data = [{"x": torch.ones(4), "pair": (torch.zeros(2, dtype=torch.int64), torch.ones(3))}
            for _ in range(8)]
    collector = DataLoaderCollector()
    collector.install()
    try:
        for _batch in DataLoader(data, batch_size=4):
            pass
    finally:
        collector.uninstall()
    (row,) = collector.rows()
    # THEN the first batch's three tensors and their bytes are recorded
    assert row["batch_tensors"] == 3
    assert row["batch_bytes"] == 4 * (4 * 4 + 2 * 8 + 3 * 4)


@pytest.mark.parametrize("tensors,nbytes", [(-5, -1), (10**9, 10**15)])
def test_a_batch_count_outside_what_the_collector_writes_is_clamped(tensors, nbytes):
    # GIVEN a run directory whose batch make-up no collector wrote (it is data, not trusted)
    durs = [200.0] + [12.0 + (0.02 if i % 2 else -0.02) for i in range(23)]
    found = _waits(_loader_run(durs, [8.0] * 24, tensors=tensors, nbytes=nbytes))
    # THEN the analyzer neither fails nor prices a negative hand-off
    assert all(0 <= f.saving_s <= 0.008 for f in found)


def _all_cores_taken(cpus: int, threads: int) -> Run:
    """8 ms of a 13 ms step loading on the training thread, torch on ``threads`` threads on
    ``cpus`` CPUs, batches of 2 tensors of 128 KiB."""
    durs, waits = [200.0] + [13.0 + (0.02 if i % 2 else -0.02) for i in range(23)], [8.0] * 24
    run = _loader_run(durs, waits, tensors=2, nbytes=128 << 10)
    row = {c: run.table("dataloaders").column(c)[0].as_py()
           for c in run.table("dataloaders").column_names if c != "rank"}
    return Run.from_tables(
        meta=RUN, steps={**steps(durs, data_wait_ns=[int(w * MS) for w in waits],
                                 cpu_ns=[int(d * MS) for d in durs]),
                         "profiled": [False] * len(durs)},
        dataloaders=table({**row, "cpu_count": cpus, "torch_threads": threads}))


def test_a_worker_with_no_core_of_its_own_comes_with_fewer_torch_threads():
    # GIVEN torch's 2 threads on the 2 CPUs and loading that is compute (on the AVX2 EPYC
    # the worker alone made a 14.65 ms step 25.35 ms: it stalled torch's threads)
    (f,) = _waits(_all_cores_taken(cpus=2, threads=2))
    receive, _ = handoff_ns(2, 128 << 10)
    # THEN the fix gives the worker a core: torch on 1 thread, applied by both knobs
    assert f.fix.startswith("torch.set_num_threads(1)")
    assert f.apply == {"DS_DATALOADER_WORKERS": "1", "DS_TORCH_THREADS": "1"}
    # AND the rest of the step (5 ms) is priced on 1 thread as if it scaled perfectly: 10 ms,
    # which hides the worker's 8 ms + send, so the saving is 13 - (10 + receive)
    assert f.data["torch_threads_to"] == 1
    assert f.data["compute_slower_ms"] == pytest.approx(5.0, rel=1e-3)
    assert f.saving_s == pytest.approx((8.0 * MS - receive - 5.0 * MS) / 1e9, rel=1e-3)
    assert "set_num_threads(1)" in f.explanation
    # AND with a core free (4 CPUs, 2 threads) the fix leaves torch's threads alone
    (free,) = _waits(_all_cores_taken(cpus=4, threads=2))
    assert "DS_TORCH_THREADS" not in free.apply and "set_num_threads" not in free.fix
    # AND on 1 CPU there is no core to give a worker: no finding
    assert _waits(_all_cores_taken(cpus=1, threads=1)) == []


def _skip_reason(run: Run) -> str:
    out = analyze(run, only=("input_pipeline",), write=False)
    assert [f for f in out.findings if f.kind == "input.dataloader_wait"] == []
    (why,) = [s["reason"] for s in out.skipped if s["analyzer"] == "input_pipeline"]
    return why


ADDER_STEPS = [900.0] + [14.8 + (0.05 if i % 2 else -0.05) for i in range(40)]


def test_workers_that_slept_while_the_training_thread_received_get_no_worker_count():
    # GIVEN minGPT's adder under dsprof: 4 DataLoader workers beside 2 torch threads on 2 CPUs,
    # steps of 14.8 ms waiting 2.0 ms for data (13 %); over the sampled waits its workers ran
    # 5 % of the time and slept 94 %, while the training thread was on its CPU 38 % of the wait
    run = _run(ADDER_STEPS, [2.0] * 41, workers=4, cpus=2, threads=2, main_cpu=0.38,
               sampled=(0.05, 0.01))
    # THEN no "raise workers 4 -> 5" (verify measured it slower): the batches were made, and
    # the wait is their hand-off; the skip says so, with the shares
    why = _skip_reason(run)
    assert "the wait is their hand-off" in why and "slept 94%" in why and "38%" in why


def test_workers_that_compute_with_no_core_free_get_no_worker_count():
    # GIVEN the same loader whose workers were on a CPU or waiting for one through the waits
    run = _run(ADDER_STEPS, [2.0] * 41, workers=4, cpus=2, threads=2, sampled=(0.45, 0.40))
    # THEN no count either: a fifth worker would contend for the same two cores
    why = _skip_reason(run)
    assert "they compute" in why and "no core is free for another" in why


def test_workers_asleep_with_the_training_thread_asleep_too_get_more_than_the_cores():
    # GIVEN 2 workers on 2 CPUs beside 2 torch threads that slept through the waits (a sleep
    # standing in for disk or network), the training thread asleep on their queue too
    durs = [900.0] + [20.0 + (0.05 if i % 2 else -0.05) for i in range(40)]
    run = _run(durs, [12.0] * 41, workers=2, cpus=2, threads=2, main_cpu=0.02,
               sampled=(0.03, 0.0))
    # THEN more workers are advised although no core is free: they wait on I/O, and the
    # explanation says what the workers did
    (f,) = _waits(run)
    assert f.data["advised_workers"] == 4 and "workers 2 -> 4" in f.title
    assert "slept 97%" in f.explanation and "disk or network" in f.explanation
    assert "While the training thread waited" in f.explanation and "on a CPU" in f.explanation


def test_workers_unsampled_with_no_core_free_for_one_more_get_no_worker_count():
    # GIVEN the adder's loader in a run that did not sample its workers (recorded before the
    # columns, or no /proc/<pid>/schedstat)
    run = _run(ADDER_STEPS, [2.0] * 41, workers=4, cpus=2, threads=2)
    # THEN only the free cores could be advised, and there are none
    why = _skip_reason(run)
    assert "no core is free for another" in why and "did not see" in why


def test_more_workers_are_advised_up_to_the_free_cores_only():
    # GIVEN 2 workers beside 4 torch threads on 8 CPUs (4 cores free), steps of 20 ms that
    # wait 12 ms: the model asks 2 x (12 + 8) / 8 = 5 workers; the workers computed
    durs = [900.0] + [20.0 + (0.05 if i % 2 else -0.05) for i in range(40)]
    (f,) = _waits(_run(durs, [12.0] * 41, workers=2, cpus=8, threads=4, sampled=(0.9, 0.05)))
    # THEN the advice is the 4 workers the free cores allow, not 5, and its explanation does
    # not read the training thread's sleep on the queue as the workers' I/O
    assert f.data["advised_workers"] == 4 and "workers 2 -> 4" in f.title
    assert "they compute" in f.explanation and "I/O or sleep" not in f.explanation


def test_workers_that_compute_get_the_cores_the_training_process_left_idle():
    # GIVEN a GPU-style loop on 8 CPUs: torch keeps 4 threads, but the training process used
    # 1.2 cores; 4 workers computed (90 % on a CPU) and the steps still waited
    durs = [900.0] + [20.0 + (0.05 if i % 2 else -0.05) for i in range(40)]
    run = _run(durs, [12.0] * 41, workers=4, cpus=8, threads=4, sampled=(0.9, 0.02),
               process_cores=1.2)
    # THEN more workers are advised up to the idle cores: 8 - 1.2 - 3.6 leaves 3 whole cores,
    # though torch's 4 threads would have left none for a fifth worker
    (f,) = _waits(run)
    assert f.data["advised_workers"] == 7 and "workers 4 -> 7" in f.title
    assert "the training process used 1.2 of the 8 CPUs and the workers 3.6" in f.explanation
    # AND where the training process kept every core busy, none
    busy = _run(durs, [12.0] * 41, workers=4, cpus=8, threads=4, sampled=(0.9, 0.02),
                process_cores=4.9)
    assert "no core is free for another" in _skip_reason(busy)


def test_workers_that_waited_for_a_cpu_beside_free_cores_get_a_medium_claim():
    # GIVEN a 1-worker loader on 2 CPUs whose worker was runnable through the waits but on a
    # CPU 72 % of them, beside a training process using 0.1 cores (other jobs held the CPUs:
    # 2 workers, priced 200.5 -> 100 ms a step, measured 127.6)
    durs = [900.0] + [200.0 + (0.5 if i % 2 else -0.5) for i in range(40)]
    run = _run(durs, [156.0] * 41, workers=1, cpus=2, threads=1, sampled=(0.72, 0.28),
               process_cores=0.1)
    (f,) = _waits(run)
    # THEN the advice stands, with a medium confidence that says why
    assert f.data["advised_workers"] == 2 and f.confidence == "medium"
    assert "waited for a CPU 28% of the time" in f.explanation
    assert "upper bound" in f.explanation
    # AND workers that waited little for a CPU keep the high one
    quiet = _run(durs, [156.0] * 41, workers=1, cpus=2, threads=1, sampled=(0.8, 0.05),
                 process_cores=0.1)
    (q,) = _waits(quiet)
    assert q.confidence == "high" and "upper bound" not in q.explanation


def test_the_process_cores_are_read_over_the_counted_steps_only():
    from dsprof.analyzers.loader_workers import process_cores
    from dsprof.analyzers.registry import Context

    # GIVEN a run whose process used 1.2 cores in every step, and 7.9 in the steps dsprof
    # disturbed (setup, first call, the profiler's window: most steps of a short run): the
    # samples of the latter are the profiler's work as much as the script's
    durs = [900.0] + [20.0] * 15
    marks = ["setup", "first_call"] + ["window"] * 8 + [None] * 6
    run = _run(durs, [12.0] * 16, marks, workers=2,
               process_cores=[7.9 if m else 1.2 for m in marks])
    # THEN the cores read are the counted steps' 1.2
    assert process_cores(Context(run), 0) == pytest.approx(1.2)


def test_on_a_gpu_workers_are_advised_for_the_cores_torchs_threads_leave_waiting():
    # GIVEN a single-process loader that computes on the training thread (30 of 40 ms), on a
    # machine whose 8 CPUs all run torch's 8 threads
    durs, waits = [40.0] * 12, [30.0] * 12
    (cpu,) = _waits(_run(durs, waits, cpus=8, threads=8))
    (gpu,) = _waits(_run(durs, waits, cpus=8, threads=8, gpu=True))
    # THEN on a CPU run one worker, with torch's threads cut to leave it a core, priced slower
    assert cpu.data["advised_workers"] == 1 and cpu.apply["DS_TORCH_THREADS"] == "7"
    # AND on a GPU, where those threads wait on the device, as many workers as the load needs
    # beside the 10 ms the step does besides loading, none of torch's threads taken away
    assert gpu.data["advised_workers"] == 3 and "DS_TORCH_THREADS" not in gpu.apply
    assert gpu.data["torch_threads_to"] is None and gpu.confidence == "medium"
    assert "set_num_threads" not in gpu.fix and "num_workers=3" in gpu.fix
    assert "The model runs on the GPU" in gpu.explanation
    assert gpu.saving_s > cpu.saving_s


def test_ranks_on_one_host_are_advised_workers_for_their_share_of_its_cpus():
    # GIVEN rank 0 of 4 GPU ranks on one 16-CPU host, each free to run on all 16 CPUs, whose
    # single-process loader computes 36 of its 40 ms steps
    durs, waits = [40.0] * 12, [36.0] * 12
    alone = _run(durs, waits, cpus=16, threads=4, gpu=True, hosts=["a"], host_cpus=16)
    (one,) = _waits(alone)
    shared = _run(durs, waits, cpus=16, threads=4, gpu=True, hosts=["a"] * 4, host_cpus=16)
    (f,) = _waits(shared)
    # THEN alone the rank may take all but its training thread's core; beside 3 other ranks
    # its share is 4 CPUs, and the advice is the 3 workers they leave (not one of 4 ranks x 9)
    assert one.data["advised_workers"] == 9
    assert f.data["advised_workers"] == 3 and "num_workers=3" in f.fix
    assert "4 ranks ran on this host and share its 16 CPUs" in f.explanation
    assert "advised for 4 of them (it could run on 16)" in f.explanation
    assert f.saving_s < one.saving_s
    # AND ranks on hosts of their own, ranks the launcher bound to 4 CPUs each, and a run
    # recorded before the machine's CPUs were (no column) are advised as before
    apart = _run(durs, waits, cpus=16, threads=4, gpu=True, hosts=["a", "b", "c", "d"],
                 host_cpus=16)
    bound = _run(durs, waits, cpus=4, threads=4, gpu=True, hosts=["a"] * 4, host_cpus=16)
    older = _run(durs, waits, cpus=16, threads=4, gpu=True, hosts=["a"] * 4)
    assert [g.data["advised_workers"] for run in (apart, bound, older)
            for g in _waits(run)] == [9, 3, 9]
    assert all("ranks ran on this host" not in g.explanation
               for run in (apart, bound, older) for g in _waits(run))


def test_ranks_whose_torch_threads_take_their_share_get_no_worker_on_a_cpu_run():
    # GIVEN rank 0 of 2 CPU ranks on a 2-CPU host, 1 torch thread each, loading on the
    # training thread (the run `dsprof verify` measured 4.38 -> 9.82 ms a step with a worker
    # per rank: tests/integration/test_ranks_sharing_a_host.py)
    durs, waits = [4.4 + (0.02 if i % 2 else -0.02) for i in range(30)], [2.8] * 30
    assert _waits(_run(durs, waits, cpus=2, threads=1, hosts=["a"], host_cpus=2))
    run = _run(durs, waits, cpus=2, threads=1, hosts=["a", "a"], host_cpus=2)
    # THEN no worker is advised, and the reason names the share
    assert not _waits(run)
    reason = _skip_reason(run)
    assert "no core is free for a worker" in reason
    assert "2 ranks ran on this host and share its 2 CPUs" in reason


@pytest.mark.parametrize("clock", [None, "x", {"ranks": "x"}, {"ranks": {"0": "x"}},
                                   {"ranks": {"0": {"host": 7}, "1": {"host": 7}}}])
def test_a_clock_record_that_is_not_one_reads_as_a_host_of_its_own(clock):
    from dsprof.analyzers.loader_workers import rank_cpus
    from dsprof.analyzers.registry import Context

    # GIVEN a meta.json whose clock is not what dsprof writes (a run directory is data)
    run = Run.from_tables(meta={**RUN, "clock": clock}, steps=steps([1.0]))
    # THEN the rank's CPUs are its own
    assert rank_cpus(Context(run), 0, 16, 16).cpus == 16


def test_the_fix_pastes_what_the_knob_applies_and_leaves_the_prefetch_as_it_is():
    # GIVEN more workers advised for a loader (the knob sets num_workers and
    # persistent_workers, and leaves prefetch_factor as the script set it)
    durs = [900.0] + [20.0 + (0.05 if i % 2 else -0.05) for i in range(40)]
    (f,) = _waits(_run(durs, [12.0] * 41, workers=2, cpus=8, threads=4, sampled=(0.9, 0.05)))
    # THEN the fix to paste is the same change: a loader with prefetch_factor=4 pasting it
    # kept 4 (the fix said prefetch_factor=2, which verify never measured)
    assert "num_workers=4" in f.fix and "persistent_workers=True" in f.fix
    assert "prefetch_factor" not in f.fix.split("#")[0] and "prefetch_factor=2" not in f.fix
    assert set(f.apply) == {"DS_DATALOADER_WORKERS"}
