"""The step collector on an accelerator, with a fake device (no GPU here), and its record as
the steps table."""

from __future__ import annotations

from dataclasses import dataclass, field

from dsprof.collectors.device import Device
from dsprof.collectors.steps import StepCollector
from dsprof.ingest.steps import steps_from_record
from dsprof.schema import STEPS


@dataclass
class FakeCuda(Device):
    """A CUDA device whose allocator peaks are scripted; records every reset."""

    peaks: list[int] = field(default_factory=list)
    resets: list[int] = field(default_factory=list)

    def reset_peak(self) -> None:
        self.resets.append(len(self.resets))

    def peak_allocated(self) -> int | None:
        return self.peaks[len(self.resets) - 1]


def test_every_boundary_records_the_steps_allocator_peak_and_resets_it():
    # GIVEN a collector on a (fake) GPU whose peak differs per step
    device = FakeCuda("cuda", 0, "NVIDIA H200", 141 << 30, "9.0", 1, peaks=[10, 30, 20])
    seen: list[int] = []
    steps = StepCollector(device, seen.append)
    device.reset_peak()  # what install() does
    # WHEN three steps end
    for _ in range(3):
        steps.boundary("optimizer")
    # THEN each step has its own peak, the counter was reset after each, listeners were told
    rec = steps.record()
    assert rec["device_peak_bytes"] == [10, 30, 20]
    assert len(device.resets) == 4
    assert seen == [0, 1, 2]
    assert len(rec["boundaries_ns"]) == 3 and all(r > 0 for r in rec["rss_bytes"])
    # and the record becomes steps rows
    table = STEPS.build(steps_from_record({**rec, "windows": [{"index": 0, "steps": [1]}]}, 0))
    assert table.column("device_peak_bytes").to_pylist() == [10, 30, 20]
    assert table.column("profiled").to_pylist() == [False, True, False]
    assert table.column("window").to_pylist() == [None, 0, None]


def test_manual_steps_take_over_from_the_optimizer():
    device = Device("cpu", None, "cpu", 1 << 30, None, 2)
    steps = StepCollector(device, lambda step: None)
    class Opt:  # an optimizer stand-in (the hook only needs identity and a weak reference)
        pass

    opt_a, opt_b = Opt(), Opt()
    steps._optimizer_stepped(opt_a, (), {})   # leader
    steps._optimizer_stepped(opt_b, (), {})   # a second optimizer: not a boundary
    assert steps.steps_done == 1 and steps.source == "optimizer"
    steps.manual_step()
    steps._optimizer_stepped(opt_a, (), {})   # ignored once dsprof.step() is in use
    assert steps.steps_done == 2 and steps.source == "manual"
    assert steps.record()["device_peak_bytes"] == [None, None]
