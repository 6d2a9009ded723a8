"""``DS_TORCH_THREADS=N``: torch's intra-op thread pool runs N threads.

The input-pipeline analyzer advises DataLoader workers for loading that is compute on the
training thread. Where torch's threads already take every core, a worker has none of its own:
OpenMP's threads wait for each other at the end of each parallel op, so one of them descheduled
for the worker stalls the op (on 2 cores, 1 worker beside 2 threads took a 14.65 ms step to
25.35 ms). Its fix then pastes ``torch.set_num_threads(N)`` at the start of the script with the
workers; this knob makes the same call as the script's ``import torch`` ends (dsprof's session
starts there). A ``torch.set_num_threads``
the script makes itself still wins, as it would over the pasted line. DataLoader workers run
one thread each whatever this says (torch sets that in each worker).
"""

from __future__ import annotations

from typing import Any

from dsprof.apply import Knob
from dsprof.errors import ConfigError


class TorchThreadsKnob(Knob):
    env = "DS_TORCH_THREADS"
    doc = "N: torch.set_num_threads(N) as the script's import torch ends (intra-op threads)"

    def parse(self) -> None:
        if not self.value.isdigit() or int(self.value) < 1:
            raise ConfigError(f"{self.env}={self.value!r}: expected a thread count >= 1")
        self.threads = int(self.value)

    def install(self) -> None:
        import torch

        torch.set_num_threads(self.threads)

    def uninstall(self) -> None:
        # The count stays: it is the state the script ran in (as the pasted line's would be),
        # and what the session records at its end (dataloaders.torch_threads) must read it.
        pass

    def report(self) -> dict[str, Any]:
        return {"threads": self.threads}
