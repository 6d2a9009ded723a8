"""The module annotator's outermost-call watch (collectors/modules.py): what an inference run's
steps are made of. One report per call with no module call above it on the watching thread,
whatever the nesting, an exception inside, or a window's annotations starting and stopping."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.modules import module as torch_module

from dsprof.collectors.modules import ModuleAnnotator
from dsprof.vocabulary import DSPROF_MODULE_PREFIX

REPO = Path(__file__).resolve().parents[2]


class Boom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("boom")


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
        self.boom = Boom()

    def forward(self, x: torch.Tensor, fail: bool = False) -> torch.Tensor:
        x = self.body(x)
        if fail:
            self.boom(x)
        return x


@pytest.fixture
def watched():
    annotator, seen = ModuleAnnotator(), []
    annotator.watch_outermost(lambda m: seen.append(type(m).__name__))
    try:
        yield annotator, seen
    finally:
        annotator.remove()


def test_each_outermost_call_is_reported_once(watched):
    _, seen = watched
    net, x = Net(), torch.randn(2, 4)
    with torch.inference_mode():
        for _ in range(3):
            net(x)
        net.body(x)  # a child called on its own is outermost too
    assert seen == ["Net", "Net", "Net", "Sequential"]


def test_a_forward_that_raises_still_ends_its_call(watched):
    _, seen = watched
    net, x = Net(), torch.randn(2, 4)
    with pytest.raises(ValueError):
        net(x, fail=True)
    net(x)
    # the failed call ended (the depth went back to 0), and the next one is outermost
    assert seen == ["Net", "Net"]


def test_calls_on_other_threads_are_not_reported(watched):
    _, seen = watched
    net, x = Net(), torch.randn(2, 4)
    t = threading.Thread(target=lambda: net(x))
    t.start()
    t.join()
    assert seen == []
    net(x)
    assert seen == ["Net"]


def test_a_window_starting_and_stopping_keeps_the_count_and_annotates_only_inside(watched):
    annotator, seen = watched
    net, x = Net(), torch.randn(2, 4)
    net(x)
    with torch.profiler.profile() as prof:
        annotator.install()
        net(x)
        annotator.uninstall()
    net(x)
    assert seen == ["Net", "Net", "Net"]
    spans = [e.name for e in prof.events() if e.name.startswith(DSPROF_MODULE_PREFIX)]
    assert DSPROF_MODULE_PREFIX + "Net.body.0" in spans and len(spans) == 5  # one forward's
    # the watch still holds the hooks after the window; stopping it removes them
    assert torch_module._global_forward_pre_hooks
    annotator.stop_watching()
    assert not torch_module._global_forward_pre_hooks and not torch_module._global_forward_hooks
    net(x)
    assert len(seen) == 3



def test_an_optimizer_built_is_seen_whatever_its_class():
    # GIVEN a fresh process, which has built no optimizer: WHEN it builds one of a subclass of
    # a subclass (as libraries' optimizers are), never stepped
    code = textwrap.dedent("""
        import torch
        from dsprof.collectors.step_sources import optimizer_made
        before = optimizer_made()
        class Custom(torch.optim.SGD):
            pass
        Custom(torch.nn.Linear(2, 2).parameters(), lr=0.1)
        print(before, optimizer_made())
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    # THEN it was not seen before and is after
    assert out == ["False", "True"]
