"""Steps slowed by Python's garbage collector: recorded per step by a real ``dsprof run``
(``steps.gc_ns`` / ``gc_generation``), and named as the runtime's work by step_outliers, never
as a saving or as "the slow steps did more work"."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from dsprof.analyzers.registry import analyze
from dsprof.run import load
from tests.unit.test_noise import make_run

STEADY = [200, 40] + [10] * 6 + [10] * 4 + [10] * 16  # setup, first call, window 7-9, steady


def test_an_outlier_that_was_a_collection_is_named_gc_with_no_saving(tmp_path):
    # GIVEN steady 10 ms steps; step 24 took 16 ms, 5.5 of them in a generation-1 collection
    durs = list(STEADY)
    durs[24] = 16
    gc = {5: (0.1, 0), 24: (5.5, 1)}
    with load(make_run(tmp_path / "r", durs, cpu_ms=durs, gc_ms=gc)) as run:
        (f,) = analyze(run, only=("step_outliers",), write=False).findings
    # THEN it is the garbage collector's, with the generation, and no saving
    assert f.kind == "steps.gc" and f.saving_s == 0 and f.severity == "info"
    assert "garbage collector" in f.title and "generation 1" in f.title
    assert "gc.freeze()" in f.fix
    assert "Python garbage collection 5.5 ms (generation 1)" in f.evidence[0].text


def test_a_collection_is_set_aside_from_the_verdict_on_other_outliers(tmp_path):
    # GIVEN one step slowed by a collection (3.2x the median) and another, sporadic, 1.3x
    # step with no wait: alone, the latter is step-to-step noise
    durs = list(STEADY)
    durs[14], durs[24] = 13, 32
    with load(make_run(tmp_path / "r", durs, cpu_ms=durs, gc_ms={24: (21.0, 2)})) as run:
        (f,) = analyze(run, only=("step_outliers",), write=False).findings
    # THEN the collection neither lends its 3.2x slowdown nor its time to the verdict
    assert f.kind == "steps.noise" and f.saving_s == 0
    assert f.data["steps"] == [14]
    assert "Left out: step 24 (21.0 ms, generation 2)" in f.explanation


def test_the_same_outliers_without_a_collection_are_still_a_finding(tmp_path):
    # GIVEN the 16 ms step of the first test, twice and at no stride, with no collection
    durs = list(STEADY)
    durs[17] = durs[24] = 16
    with load(make_run(tmp_path / "r", durs, cpu_ms=durs, gc_ms={5: (0.1, 0)})) as run:
        (f,) = analyze(run, only=("step_outliers",), write=False).findings
    # THEN they are outliers that did more work, a saving to look for
    assert f.kind == "steps.outliers" and f.saving_s > 0


def test_a_lone_outlier_with_nothing_seen_to_differ_is_one_sample_not_a_saving(tmp_path):
    # GIVEN the same 16 ms step once, on the CPU all the while (what a VM's stolen time, page
    # reclaim or a lower clock look like from the thread's CPU time too)
    durs = list(STEADY)
    durs[24] = 16
    with load(make_run(tmp_path / "r", durs, cpu_ms=durs, gc_ms={5: (0.1, 0)})) as run:
        (f,) = analyze(run, only=("step_outliers",), write=False).findings
    # THEN it is noise, said as one sample, with no saving and no rank
    assert f.kind == "steps.noise" and f.saving_s == 0 and f.severity == "info"
    assert f.data["steps"] == [24] and "once" in f.title and "Run more steps" in f.fix


SCRIPT = textwrap.dedent("""
    import gc
    import torch

    model = torch.nn.Linear(32, 32)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    keep = []
    for step in range(16):
        if step == 12:
            keep = [[i] for i in range(200_000)]  # objects the collector must walk
            gc.collect(2)
        model(torch.randn(8, 32)).sum().backward()
        opt.step()
        opt.zero_grad()
    print("trained", len(keep))
""")


def test_a_real_run_records_each_steps_collections(tmp_path):
    # GIVEN a script that runs a full collection over 200k objects in step 12
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "dsprof", "run", "-o", str(run_dir),
                           str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "trained 200000" in done.stdout
    with load(run_dir) as run:
        rows = {s: (ns, gen) for s, ns, gen in run.sql(
            "SELECT step, gc_ns, gc_generation FROM steps WHERE rank = 0")}
    # THEN step 12 holds a generation-2 collection of at least a millisecond; the steps
    # after setup that ran none record 0 ns and no generation
    ns, gen = rows[12]
    assert gen == 2 and ns > 1_000_000
    assert any(v == (0, None) for s, v in rows.items() if 2 <= s < 12)


def test_inference_forwards_that_computed_more_are_no_saving_and_no_periodic_work(tmp_path):
    # GIVEN a generate() loop's steps: one forward each, the prefill every 8th step (12, 20,
    # 28) computing 2.5x a decode step, on the CPU all the while
    durs = list(STEADY) + [10] * 4
    for s in (12, 20, 28):
        durs[s] = 25
    verdicts = {}
    for source in ("forward", "optimizer"):
        with load(make_run(tmp_path / source, durs, cpu_ms=durs, source=source)) as run:
            (f,) = analyze(run, only=("step_outliers",), write=False).findings
        verdicts[source] = f
    # THEN in an inference run they are calls on more input, with no saving
    f = verdicts["forward"]
    assert f.kind == "steps.more_input" and f.saving_s == 0 and f.severity == "info"
    assert "prefill" in f.title and f.data["steps"] == [12, 20, 28]
    # AND the same steps of a training run are still outliers to look into
    assert verdicts["optimizer"].kind == "steps.outliers" and verdicts["optimizer"].saving_s > 0
