"""comm_bound's switches in the words of the loop that built the DDP model (the script's own
``ddp_model``, or the Lightning Trainer's ``DDPStrategy``), with the hook the backend accepts
(analyzers/comm_switches.py)."""

from __future__ import annotations

import subprocess
import sys

from dsprof.analyzers.registry import analyze
from tests.unit.test_comm_claims import _late_all_reduce

GPU = {"devices": {"0": {"kind": "cuda", "name": "NVIDIA H100"}}}


def _bound(nbytes: int = 64 << 20, micro_batches: int = 0, **meta):
    (f,) = analyze(_late_all_reduce(nbytes, micro_batches=micro_batches, meta=meta),
                   write=False, only=("comm_bound",)).findings
    return f


def test_a_lightning_trainer_gets_ddpstrategys_comm_hook_not_a_ddp_model_it_lacks():
    # GIVEN a GPU run whose script imported lightning (the Trainer wraps the model in DDP)
    f = _bound(frameworks=["transformers", "lightning"], **GPU)
    # THEN the hook is the Trainer's strategy argument, from lightning 2.6's DDPStrategy
    assert "from lightning.pytorch.strategies import DDPStrategy" in f.fix, f.fix
    assert ("Trainer(..., strategy=DDPStrategy(ddp_comm_hook=default_hooks.bf16_compress_hook))"
            in f.fix), f.fix
    assert "ddp_comm_state=psgd.PowerSGDState(" in f.fix
    # AND there is no ddp_model in a Lightning script to call register_comm_hook on
    assert "ddp_model" not in f.fix
    # AND the smaller first bucket is the strategy's argument too (DDP's kwargs pass through)
    assert "DDPStrategy(..., bucket_cap_mb=...)" in f.fix
    assert "DistributedDataParallel(" not in f.fix


def test_a_spawned_or_pytorch_lightning_trainer_keeps_its_start_method_and_package():
    # GIVEN Trainer(strategy="ddp_spawn") from the pytorch_lightning package
    f = _bound(frameworks=["pytorch_lightning"], spawned={"nprocs": 2, "start_method": "spawn"},
               **GPU)
    # THEN the strategy keeps its start method, imported from the package the script uses
    assert "from pytorch_lightning.strategies import DDPStrategy" in f.fix, f.fix
    assert 'DDPStrategy(start_method="spawn", ddp_comm_hook=' in f.fix


def test_a_lightning_cpu_run_registers_the_hook_itself_since_the_strategy_skips_it_there():
    # GIVEN a Lightning Trainer on CPU ranks (gloo): DDPStrategy registers ddp_comm_hook on
    # CUDA devices only, and gloo refuses the bf16 hook
    f = _bound(frameworks=["lightning"])
    # THEN the fix registers the fp16 hook on the DDP model the strategy built, at fit start
    assert "self.trainer.strategy.model.register_comm_hook(None, " \
           "default_hooks.fp16_compress_hook)" in f.fix, f.fix
    assert "def on_fit_start(self):" in f.fix
    assert "compress gradients to fp16" in f.title and "fp16 compression" in f.explanation
    assert "ddp_model" not in f.fix


def test_a_lightning_latency_bound_sync_is_the_trainers_accumulate_grad_batches():
    # GIVEN latency-bound all-reduces (12 KiB a step) under the Lightning Trainer
    f = _bound(12 << 10, frameworks=["lightning"])
    assert f.data["latency_bound"]
    # THEN fewer syncs is the Trainer's accumulation (it skips DDP's sync on the other
    # micro-batches), not a no_sync() loop over a ddp_model
    assert "Trainer(..., accumulate_grad_batches=k)" in f.fix, f.fix
    assert "no_sync" not in f.fix and "ddp_model" not in f.fix
    # AND a Trainer that already accumulates is told to raise it
    more = _bound(12 << 10, micro_batches=2, frameworks=["lightning"])
    assert "already accumulates 2" in more.fix and "accumulate_grad_batches" in more.fix


def test_a_script_of_its_own_keeps_ddp_model_and_a_fabric_loop_is_not_the_trainer():
    # GIVEN a hand-written DDP loop on a GPU, and a Fabric loop (fabric.setup wrapped the model)
    plain = _bound(**GPU)
    fabric = _bound(frameworks=["lightning", "lightning.fabric.setup"], **GPU)
    # THEN both name the DDP model's own register_comm_hook, with the bf16 hook on a GPU
    for f in (plain, fabric):
        assert "ddp_model.register_comm_hook(state=None, " \
               "hook=default_hooks.bf16_compress_hook)" in f.fix, f.fix
        assert "DDPStrategy" not in f.fix


GLOO_HOOKS = """
import torch, torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
for hook in (default_hooks.bf16_compress_hook, default_hooks.fp16_compress_hook):
    ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 4))
    try:
        ddp.register_comm_hook(None, hook)
        ddp(torch.randn(2, 4)).sum().backward()
        print(hook.__name__, "ok")
    except TypeError as exc:
        print(hook.__name__, "refused:", exc)
"""


def test_gloo_refuses_the_bf16_hook_and_takes_the_fp16_one():
    # GIVEN torch's DDP over gloo (a CPU run's backend), in a process of its own
    out = subprocess.run([sys.executable, "-c", GLOO_HOOKS], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    # THEN the bf16 hook is refused and the fp16 one runs: the CPU fix names fp16
    assert "bf16_compress_hook refused" in out, out
    assert "fp16_compress_hook ok" in out, out
