"""A window's torch.profiler session is freed when dsprof is done with it, also where the
script turned the cyclic collector off (``gc.disable()``): torch's ``profile`` sits in a
reference cycle of its own bound methods, which only a collection would free."""

from __future__ import annotations

import gc
import importlib
import weakref

import torch

from dsprof.collectors.device import Device
from dsprof.collectors.timeline import TimelineCollector
from dsprof.settings import Settings

CPU = Device("cpu", None, "cpu", 1 << 30, None, 1)


def _profiles() -> list[object]:
    """Every torch.profiler session the cyclic collector tracks: live or not yet collected."""
    return [o for o in gc.get_objects() if type(o) is torch.profiler.profile]


def test_each_windows_profile_is_freed_right_after_the_window_with_gc_disabled(tmp_path):
    # GIVEN the timeline collector with a window every 3 steps (repeat 0: windows all run
    # long), in a process whose script disabled the cyclic collector
    tl = TimelineCollector(Settings.load(env={}, wait=0, warmup=1, active=2, repeat=0), CPU,
                           tmp_path)
    # (a process's first prepare_trace imports torch._inductor, and that import leaves a cycle
    # of its frames, the prepare_trace frame among them: once per process, torch's own. The
    # test imports it first, so what is left is dsprof's)
    importlib.import_module("torch._inductor")
    gc.collect()
    gc.disable()
    try:
        tl.start()
        sessions = [weakref.ref(p) for p in _profiles()]  # the bootstrap capture's
        for step in range(12):
            (torch.randn(8, 8) @ torch.randn(8, 8)).sum()
            sessions += [weakref.ref(p) for p in _profiles()
                         if not any(r() is p for r in sessions)]
            tl.on_boundary(step)
            # THEN after each boundary at most the one session in use is left
            assert len(_profiles()) <= 1, step
        tl.finish()
        # AND once the run ends none is, and none of the sessions seen is alive
        assert _profiles() == []
        assert len(sessions) >= 4 and all(r() is None for r in sessions)
        assert len(tl.windows) >= 3
    finally:
        gc.enable()
