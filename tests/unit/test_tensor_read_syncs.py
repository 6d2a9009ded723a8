"""A tensor's value read by Python itself (``if loss < best:``, ``float(loss)``, ``int(n)``) is
a host sync like ``loss.item()``: the collector sees it at the script's line, the analyzer
names it as the script wrote it and pastes a fix that keeps the decision on the device."""

from __future__ import annotations

import io
import logging

import torch
from torch import nn

from dsprof.analyzers.registry import analyze
from dsprof.collectors.host_sync import HostSyncCollector
from dsprof.run import Run
from tests.source_lines import line_of
from tests.unit.test_analyzers_synthetic import SCRIPT, steps, table

MS = 1_000_000
SLOTS = ("__bool__", "__float__", "__int__")


def _line_of(marker: str) -> str:
    return line_of(__file__, marker)


def test_conditions_and_conversions_on_a_tensor_are_counted_at_the_users_line():
    # GIVEN a loop that keeps the best loss with `if loss < best`, sums float(loss), counts
    # with int(), and clips gradients with torch's own nonfinite check (torch's bool())
    step = [0]
    col = HostSyncCollector(lambda: step[0])
    model = nn.Linear(4, 1)
    best, total, seen = torch.tensor(float("inf")), 0.0, 0
    col.install()
    try:
        for s in range(3):
            step[0] = s
            loss = model(torch.randn(8, 4)).pow(2).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, error_if_nonfinite=True)
            if loss < best:  # the condition
                best = loss.detach()
            total += float(loss)  # the float
            seen += int((loss > 0).sum())  # the int
    finally:
        col.uninstall()
    # THEN each read is counted once a step at its line, as bool, float and int
    rows = col.rows()
    sites = {(r[1], r[2].rsplit("/", 1)[-1]) for r in rows}
    assert sites == {("bool", _line_of("the condition")), ("float", _line_of("the float")),
                     ("int", _line_of("the int"))}, sites
    assert sorted(r[0] for r in rows if r[1] == "bool") == [0, 1, 2]
    # AND clip_grad_norm_'s own check of the norm (torch's file) is not the script's sync
    assert all(r[3] == "test_conditions_and_conversions_on_a_tensor_are_counted_at_the_users_line"
               for r in rows)
    # AND the values are the ones the plain calls give
    assert seen == 3 and total > 0 and best.dim() == 0


def test_uninstall_gives_back_torchs_own_slots():
    # GIVEN the collector installed, then removed
    before = {name: getattr(torch.Tensor, name) for name in SLOTS}
    col = HostSyncCollector(lambda: 0)
    col.install()
    assert all(name in vars(torch.Tensor) for name in SLOTS)
    col.uninstall()
    # THEN no Python function is left on the class: the C slots of torch's type answer again
    assert not [name for name in SLOTS if name in vars(torch.Tensor)]
    assert {name: getattr(torch.Tensor, name) for name in SLOTS} == before
    assert "item" not in vars(torch.Tensor)  # a method it wrapped is torch's own again too
    # AND a parameter (a subclass) reads as before, with nothing recorded
    p = nn.Parameter(torch.tensor(2.5))
    assert bool(p) and float(p) == 2.5 and int(p) == 2
    assert col.rows() == []


def test_a_many_valued_condition_raises_the_same_error_under_the_collector():
    col = HostSyncCollector(lambda: 0)
    col.install()
    try:
        try:
            bool(torch.ones(3))
        except RuntimeError as e:
            message = str(e)
    finally:
        col.uninstall()
    assert message == "Boolean value of Tensor with more than one value is ambiguous"
    assert col.rows() == []  # no value was read


def _run(call: str, device: str) -> Run:
    rows = [{"step": s, "call": call, "site": "train.py:40", "function": "train",
             "device": device, "count": 1, "total_ns": 2 * MS, "max_ns": 2 * MS}
            for s in range(1, 6)]
    return Run.from_tables(meta=SCRIPT, steps=steps([10] * 6), host_syncs=table(*rows))


def test_the_finding_names_the_read_as_the_script_writes_it_and_fixes_it_on_the_device():
    # GIVEN a GPU run whose `if loss < best:` runs every step
    (f,) = analyze(_run("bool", "cuda:0"), only=("host_syncs",), write=False).findings
    # THEN it is named as a tensor used as a condition, not as a method the script never calls
    assert f.title.startswith("Remove the per-step bool(tensor) at train.py:40"), f.title
    assert f.explanation.startswith("A tensor used as a condition (if, while, and/or")
    assert f.evidence[0].text.startswith("bool(tensor) in train at train.py:40")
    # AND the fix decides on the device rather than reading the value
    assert "torch.minimum(best, loss.detach())" in f.fix and "torch.where" in f.fix
    assert "running_loss" not in f.fix
    # AND float() and int() get their own fixes, on a CPU run as information
    (fl,) = analyze(_run("float", "cpu"), only=("host_syncs",), write=False).findings
    assert fl.severity == "info" and fl.title.startswith("float(tensor) at train.py:40 runs")
    assert "print(float(running_loss) / log_every)" in fl.fix
    (it,) = analyze(_run("int", "cuda:0"), only=("host_syncs",), write=False).findings
    assert "correct += (pred == y).sum()" in it.fix and "int(tensor)" in it.title
    # AND a tensor printed every step is named as printed, with a number read every N steps
    (pr,) = analyze(_run("repr", "cuda:0"), only=("host_syncs",), write=False).findings
    assert pr.title.startswith("Remove the per-step print(tensor) at train.py:40")
    assert 'print(f"loss {loss.item():.4f}")' in pr.fix and "if step % log_every == 0:" in pr.fix


def test_the_hf_trainers_nan_check_gets_its_switch_and_other_trainer_lines_do_not():
    # GIVEN a GPU run of the HF Trainer whose loop tests each step's loss with
    # torch.isnan(loss) or torch.isinf(loss) (transformers 5's _run_epoch), and a run whose
    # bool(tensor) sits in another function of trainer.py
    def run(function: str) -> Run:
        rows = [{"step": s, "call": "bool", "site": "transformers/trainer.py:1956",
                 "function": function, "device": "cuda:0", "count": 2, "total_ns": MS,
                 "max_ns": MS, "caller": "train.py:12"} for s in range(1, 6)]
        return Run.from_tables(meta=SCRIPT, steps=steps([10] * 6), host_syncs=table(*rows))

    (f,) = analyze(run("_run_epoch"), only=("host_syncs",), write=False).findings
    # THEN the fix is the Trainer's switch
    assert "args = TrainingArguments(..., logging_nan_inf_filter=False)" in f.fix
    assert f.title.startswith("Remove the per-step bool(tensor) at transformers/trainer.py:1956")
    # AND another function's sync gets the library's words, not a switch that does not move it
    (other,) = analyze(run("evaluate"), only=("host_syncs",), write=False).findings
    assert "logging_nan_inf_filter" not in other.fix
    assert "in transformers's own code (transformers/trainer.py:1956)" in other.fix


def test_a_cpu_tensor_read_on_a_gpu_run_is_no_finding():
    # GIVEN a GPU run that reads its loss with item() on the GPU every step and compares a
    # loss it keeps on the CPU (`if val_loss < best:`) every step too
    rows = [{"step": s, "call": call, "site": site, "function": "train", "device": device,
             "count": 1, "total_ns": MS, "max_ns": MS}
            for s in range(1, 6)
            for call, site, device in (("item", "train.py:40", "cuda:0"),
                                       ("bool", "train.py:52", "cpu"))]
    run = Run.from_tables(meta=SCRIPT, steps=steps([10] * 6), host_syncs=table(*rows))
    # THEN only the GPU tensor's read is a sync: the CPU tensor waits for no device here
    (f,) = analyze(run, only=("host_syncs",), write=False).findings
    assert f.key == "item|train.py:40"
    # AND on a CPU-only run the same comparison stands for what a GPU run would pay
    (info,) = analyze(_run("bool", "cpu"), only=("host_syncs",), write=False).findings
    assert info.severity == "info" and "a host-device sync on a GPU" in info.title


def test_a_tensor_logging_formats_is_read_at_the_scripts_line():
    # GIVEN a loop that logs its loss with logging's %-formatting, which reads the tensor with
    # float() inside the standard library (logging's getMessage), from two lines of its own
    out = io.StringIO()
    log = logging.getLogger("dsprof-test-loop")
    log.addHandler(logging.StreamHandler(out))
    log.setLevel(logging.INFO)
    log.propagate = False
    col = HostSyncCollector(lambda: 1)
    loss = torch.tensor(0.25)
    col.install()
    try:
        log.info("loss %.4f", loss)  # the first log line
        log.info("again %.2f", loss)  # the second log line
    finally:
        col.uninstall()
    # THEN each read is the script's, at its own line, not logging's
    assert out.getvalue() == "loss 0.2500\nagain 0.25\n"
    assert sorted(r[2].rsplit("/", 1)[-1] for r in col.rows()) == sorted(
        [_line_of("the first log line"), _line_of("the second log line")])


def test_an_occasional_read_on_a_gpu_is_the_advice_already():
    # GIVEN a GPU run that reads its loss with item() in one step of five (a logging interval)
    rows = [{"step": 3, "call": "item", "site": "train.py:40", "function": "train",
             "device": "cuda:0", "count": 1, "total_ns": MS, "max_ns": MS}]
    run = Run.from_tables(meta=SCRIPT, steps=steps([10] * 6), host_syncs=table(*rows))
    # THEN no finding asks to remove a "per-step" read that is not per step
    assert analyze(run, only=("host_syncs",), write=False).findings == []


def test_pyros_validation_and_torchmetrics_nan_checks_get_their_switches():
    # GIVEN a GPU run whose syncs are Pyro's validation of each site's log-prob (warn_if_nan)
    # and a torchmetrics MeanMetric's nan check of its inputs
    def run(site: str, function: str) -> Run:
        rows = [{"step": s, "call": "bool", "site": site, "function": function,
                 "device": "cuda:0", "count": 10, "total_ns": MS, "max_ns": MS,
                 "caller": "train.py:35"} for s in range(1, 6)]
        return Run.from_tables(meta=SCRIPT, steps=steps([10] * 6), host_syncs=table(*rows))

    (pyro,) = analyze(run("pyro/util.py:135", "warn_if_nan"), only=("host_syncs",),
                      write=False).findings
    (tm,) = analyze(run("torchmetrics/aggregation.py:93", "_cast_and_nan_check_input"),
                    only=("host_syncs",), write=False).findings
    # THEN each gets its library's switch, not "look for pyro's option"
    assert "pyro.enable_validation(False)" in pyro.fix and "look" not in pyro.fix
    assert 'MeanMetric(nan_strategy="disable")' in tm.fix
    # AND another of pyro's lines keeps the library's words
    (other,) = analyze(run("pyro/infer/util.py:52", "torch_item"), only=("host_syncs",),
                       write=False).findings
    assert "enable_validation" not in other.fix


def test_a_ranks_reads_are_counted_against_its_own_steps():
    # GIVEN 3 ranks that each read the loss once in each of their 5 steps (DDP's ranks: one
    # site, one row per rank and step)
    one = steps([10] * 6)
    three = {k: v * 3 for k, v in one.items()}
    three["rank"] = [r for r in range(3) for _ in range(6)]
    rows = [{"rank": r, "step": s, "call": "item", "site": "train.py:40", "function": "train",
             "device": "cuda:0", "count": 1, "total_ns": MS, "max_ns": MS}
            for r in range(3) for s in range(1, 6)]
    run = Run.from_tables(meta=SCRIPT, steps=three, host_syncs=table(*rows))
    found = analyze(run, only=("host_syncs",), write=False).findings
    # THEN the read is once a step on each rank (it read "0.3x per step" of all ranks' steps,
    # and 3 ranks dropped it as occasional)
    assert found, "a once-a-step read on 3 ranks was dropped"
    assert all("1.0 host-device syncs" in f.title for f in found), [f.title for f in found]
