"""dsprof keeps no tensor alive: live bytes at every step boundary are the same with and
without a profiling session (census, saved-tensor hooks, snapshots included)."""

from __future__ import annotations

import gc
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from dsprof.collectors.session import Session
from dsprof.rundir import RunDir
from dsprof.settings import Settings


class LiveStorages(TorchDispatchMode):
    """Weak references to the storage of every tensor an op returns (an independent count)."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: dict[int, tuple[weakref.ref, int]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                st = t.untyped_storage()
                if st.nbytes():
                    self.refs[id(st)] = (weakref.ref(st), st.nbytes())
        return out

    def live_bytes(self) -> int:
        return sum(n for r, n in self.refs.values() if r() is not None)


def train(steps: int, session: Session | None) -> list[int]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(),
                                torch.nn.Linear(128, 128), torch.nn.Sigmoid(),
                                torch.nn.Linear(128, 8))
    opt = torch.optim.Adam(model.parameters())
    live = []
    tracker = LiveStorages()
    with tracker:
        for _ in range(steps):
            x, y = torch.randn(32, 64), torch.randint(0, 8, (32,))
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()  # a session's boundary (census, window start/stop) runs in here
            model(x).sum()  # a graph never backwarded (a metric without no_grad): freed at once
            live.append(tracker.live_bytes())
    return live


def test_live_bytes_are_the_same_with_and_without_dsprof(tmp_path):
    # GIVEN the cyclic collector off, so that a reference cycle made by dsprof would show
    gc.collect()
    gc.disable()
    try:
        # WHEN the same loop runs bare, then under a session that profiles steps 2..4
        bare = train(7, None)
        settings = Settings.load(env={}, wait=1, warmup=1, active=3, analyze=False)
        session = Session(settings, RunDir.create(tmp_path / "run"), {"kind": "script",
                                                                       "name": "t", "argv": []})
        session.start()
        try:
            profiled = train(7, session)
        finally:
            session.finish(0, "exit")
    finally:
        gc.enable()
    # THEN every step boundary has exactly the same bytes alive
    assert profiled == bare
    # and the session did record the window it was asked for
    assert (tmp_path / "run" / "raw" / "rank0" / "window-0.census").is_file()
