"""The DataLoader and host-sync collectors, in this process, on real torch objects."""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data import dataloader as dl

from dsprof.collectors.dataloader import DataLoaderCollector, batch_size_of
from dsprof.collectors.host_sync import HostSyncCollector
from tests.source_lines import line_of


def _line_of(marker: str) -> str:
    return line_of(__file__, marker)


class _Sleepy(Dataset):
    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int):
        time.sleep(0.002)
        return torch.full((3,), float(i)), i


def test_dataloader_waits_go_to_the_step_and_the_loader():
    orig_iter, orig_next = dl.DataLoader.__iter__, dl._BaseDataLoaderIter.__next__
    col = DataLoaderCollector()
    col.install()
    try:
        assert col.take_step() == (None, None, None)  # no loader yet: nothing to say
        loader = DataLoader(_Sleepy(), batch_size=4)
        for _ in range(2):  # two epochs
            for _batch in loader:  # the line the collector must name
                pass
        wait, batch, batches = col.take_step()
    finally:
        col.uninstall()
    assert dl.DataLoader.__iter__ is orig_iter and dl._BaseDataLoaderIter.__next__ is orig_next
    assert batch == 4 and batches == 6  # 2 epochs of 3 batches, all in this step
    assert wait >= 6 * 4 * 2_000_000 * 0.9  # 6 batches x 4 samples x 2 ms of sleep
    (row,) = col.rows()
    assert row["site"].endswith(_line_of("must name")) and row["dataset"] == "_Sleepy"
    assert (row["batches"], row["iterators"], row["num_workers"]) == (6, 2, 0)
    assert row["wait_ns"] == wait and row["first_wait_ns"] < wait
    assert row["wait_cpu_ns"] < 0.5 * row["wait_ns"]  # sleeping is not compute
    assert col.take_step() == (0, None, 0)  # reset after each step


def test_batch_size_of_nested_batches():
    t = torch.zeros(5, 2)
    assert batch_size_of(t) == 5
    assert batch_size_of([t, t]) == 5
    assert batch_size_of({"x": (t,)}) == 5
    assert batch_size_of(torch.tensor(1.0)) is None
    assert batch_size_of("text") is None


def test_host_syncs_counted_at_the_user_line_not_in_torch():
    step = [0]
    col = HostSyncCollector(lambda: step[0])
    orig_item = torch.Tensor.item
    col.install()
    try:
        x = torch.arange(6.0)
        for s in range(3):
            step[0] = s
            x.sum().item()  # a user sync
            x.tolist()
        repr(x)  # printing: the user's sync, and torch's own reads inside it are not
        x.to("cpu")  # host to host: not a sync
        n = torch.nonzero(x)
    finally:
        col.uninstall()
    assert torch.Tensor.item is orig_item
    assert n.shape == (5, 1)
    rows = col.rows()
    calls = {(r[0], r[1]) for r in rows}
    assert calls == {(0, "item"), (0, "tolist"), (1, "item"), (1, "tolist"), (2, "item"),
                     (2, "tolist"), (2, "repr"), (2, "nonzero")}
    (printed,) = [r for r in rows if r[1] == "repr"]
    assert printed[2].endswith(_line_of("printing: the user")) and printed[5] == 1
    item = next(r for r in rows if r[1] == "item")
    assert item[2].endswith(_line_of("a user sync")) and item[3] == \
        "test_host_syncs_counted_at_the_user_line_not_in_torch"
    assert item[4] == "cpu" and item[5] == 1 and item[6] >= item[7] > 0
    assert item[8] is None  # the test's own line: no script line to name behind it


def test_formatting_a_one_value_tensor_is_a_sync_at_the_formatting_line():
    # GIVEN a loop that prints a gradient norm tensor with a format spec (llm.c's
    # f"norm {norm:.4f}"), and one that prints a whole tensor
    col = HostSyncCollector(lambda: 1)
    col.install()
    try:
        norm = torch.tensor(3.25)
        text = f"norm {norm:.4f}"  # the formatting line
        whole = f"{torch.arange(3.0)}"  # the whole tensor's line
    finally:
        col.uninstall()
    # THEN the format is the script's item() at its own line, and the whole tensor formatted
    # is one print at its line: the reads torch's printing makes inside are not counted
    assert text == "norm 3.2500" and whole == "tensor([0., 1., 2.])"
    rows = {(r[1], r[2].rsplit("/", 1)[-1], r[5]) for r in col.rows()}
    assert rows == {("item", _line_of("the formatting line"), 1),
                    ("repr", _line_of("the whole tensor"), 1)}, rows


def test_printing_a_parameter_is_one_read_at_the_printing_line():
    # GIVEN a loop that prints a parameter (Parameter.__repr__ is torch's own Python, which
    # prints through Tensor.__repr__)
    col = HostSyncCollector(lambda: 1)
    original = torch.nn.Parameter.__repr__
    col.install()
    try:
        weight = torch.nn.Parameter(torch.arange(3.0))
        text = repr(weight)  # the parameter's line
    finally:
        col.uninstall()
    # THEN one print at the script's line, the output as torch's; torch's method is back
    assert text == "Parameter containing:\ntensor([0., 1., 2.], requires_grad=True)"
    rows = {(r[1], r[2].rsplit("/", 1)[-1], r[5]) for r in col.rows()}
    assert rows == {("repr", _line_of("the parameter's line"), 1)}, rows
    assert torch.nn.Parameter.__repr__ is original


class _PoissonSampler(torch.utils.data.Sampler):
    """Batches drawn as Opacus' uniform sampler draws them: a random mask, then nonzero()
    and tolist() on the CPU."""

    def __len__(self) -> int:
        return 3

    def __iter__(self):
        for _ in range(3):
            mask = torch.rand(12) < 0.5
            yield mask.nonzero().reshape(-1).tolist()  # the sampler's


class _Counted(Dataset):
    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int):
        return torch.full((2,), float(torch.tensor(i).item()))  # the dataset's


def test_data_loading_on_the_cpu_is_no_sync_but_the_loops_own_call_is():
    # GIVEN a loop over a DataLoader whose sampler and dataset call nonzero(), tolist() and
    # item() on CPU tensors, and whose body reads the batch's sum with item()
    col = HostSyncCollector(lambda: 1)
    col.install()
    try:
        for batch in DataLoader(_Counted(), batch_sampler=_PoissonSampler()):
            batch.sum().item()  # the loop's
    finally:
        col.uninstall()
    # THEN only the loop's own call is counted: data is loaded on the CPU on a GPU run too, so
    # the sampler's and the dataset's calls wait for no device there
    assert {(r[1], r[2].rsplit("/", 1)[-1]) for r in col.rows()} == {
        ("item", _line_of("the loop's"))}


@contextlib.contextmanager
def _installed_package(tmp_path: Path, name: str) -> Iterator[Any]:
    """A package under a site-packages folder whose ``infer.step(loss)`` reads the loss with
    .item() (as Pyro's torch_item does inside svi.step); yields ``step``."""
    pkg = tmp_path / "site-packages" / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "infer.py").write_text("def step(loss):\n    return loss.item()  # the library's\n")
    sys.path.insert(0, str(tmp_path / "site-packages"))
    try:
        yield importlib.import_module(f"{name}.infer").step
    finally:
        sys.path.remove(str(tmp_path / "site-packages"))
        sys.modules.pop(f"{name}.infer", None)
        sys.modules.pop(name, None)


def test_a_sync_inside_an_installed_package_names_the_scripts_line_that_led_there(tmp_path):
    # GIVEN an installed package's function that reads a loss, called from this test's code
    col = HostSyncCollector(lambda: 1)
    with _installed_package(tmp_path, "fakepkg") as step:
        col.install()
        try:
            step(torch.tensor(2.0))  # the script's call
        finally:
            col.uninstall()
    # THEN the sync is at the package's line, and the script's line that called it is kept
    (row,) = col.rows()
    assert row[1] == "item" and row[2] == "fakepkg/infer.py:2" and row[3] == "step"
    assert row[8].endswith(_line_of('the script' + chr(39) + 's call'))


def test_a_packages_line_names_each_script_line_that_reaches_it(tmp_path):
    # GIVEN an installed package's function that reads a loss, first run by a thread started
    # on it directly (no script frame on that stack), then called from the script's own line
    col = HostSyncCollector(lambda: 1)
    with _installed_package(tmp_path, "fakepkg2") as step:
        col.install()
        try:
            worker = threading.Thread(target=step, args=(torch.tensor(1.0),))
            worker.start()
            worker.join()
            step(torch.tensor(2.0))  # the script reaches it here
        finally:
            col.uninstall()
    # THEN the script's call names its own line: the package's line is not kept with the
    # first call's (empty) caller
    callers = sorted((r[8] or "").rsplit("/", 1)[-1] for r in col.rows())
    assert callers == ["", _line_of("the script reaches it here")], callers
