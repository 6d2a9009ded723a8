"""The switches of ``comm_bound``'s DDP advice, in the words of the loop that built the DDP
model: the script's own ``DistributedDataParallel`` (``ddp_model.register_comm_hook``,
``no_sync()``), or the Lightning Trainer's ``DDPStrategy``, which wraps the model itself (a
Lightning script has no ``ddp_model`` to call: /tmp/compat9's Trainer(strategy="ddp") runs
were told ``ddp_model.register_comm_hook(...)``).

Which hook: the bf16 one on a GPU run; fp16 on a CPU run, whose gloo backend DDP refuses the
bf16 hook for (``register_comm_hook`` raised "BF16 all reduce communication hook required
CUDA 11+ and NCCL 2.10+" on torch 2.13 over gloo; ``fp16_compress_hook`` ran). Lightning's
``DDPStrategy`` registers its ``ddp_comm_hook`` on CUDA devices only (lightning 2.6,
``DDPStrategy._register_ddp_hooks``): on a CPU run the hook is registered on the DDP model the
strategy built, from the LightningModule's ``on_fit_start`` (called after the strategy's
setup wrapped the model).
"""

from __future__ import annotations

from dsprof.analyzers.frameworks import frameworks
from dsprof.analyzers.registry import Context

POWERSGD_RANK = 4


def compress_hook(ctx: Context) -> str:
    """The ``default_hooks`` hook that halves fp32 all-reduces on this run's backend."""
    return "bf16_compress_hook" if ctx.on_gpu else "fp16_compress_hook"


def half_dtype(ctx: Context) -> str:
    """The dtype :func:`compress_hook` sends: ``bf16`` or ``fp16``."""
    return "bf16" if ctx.on_gpu else "fp16"


def lightning_trainer(ctx: Context) -> bool:
    """The Lightning Trainer built the DDP model (not a Fabric loop, whose model the script
    wraps with ``fabric.setup``)."""
    return "lightning" in frameworks(ctx)


def _strategy_module(ctx: Context) -> str:
    """``lightning.pytorch.strategies``, or ``pytorch_lightning.strategies`` for a script that
    imported only the older package name."""
    names = {str(f) for f in ctx.meta.get("frameworks") or []}
    return ("pytorch_lightning.strategies" if "pytorch_lightning" in names
            and "lightning" not in names else "lightning.pytorch.strategies")


def _start_method(ctx: Context) -> str:
    """``start_method="spawn", `` when the Trainer started its ranks with torch.multiprocessing
    (``strategy="ddp_spawn"`` is ``DDPStrategy(start_method="spawn")``), else ""."""
    spawned = ctx.meta.get("spawned")
    method = spawned.get("start_method") if isinstance(spawned, dict) else None
    return f'start_method="{method}", ' if method in ("spawn", "fork", "forkserver") else ""


def compress_fix(ctx: Context) -> str:
    """Compress the gradients' all-reduces (and PowerSGD, commented), as the script calls it."""
    hook = compress_hook(ctx)
    powersgd_state = (f"psgd.PowerSGDState(process_group=None, "
                      f"matrix_approximation_rank={POWERSGD_RANK}, start_powerSGD_iter=10)")
    if not lightning_trainer(ctx):
        return ("from torch.distributed.algorithms.ddp_comm_hooks import default_hooks\n"
                f"ddp_model.register_comm_hook(state=None, hook=default_hooks.{hook})\n"
                "# or PowerSGD (low-rank gradients, larger saving, approximate):\n"
                "# from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd\n"
                f"# state = {powersgd_state}\n"
                "# ddp_model.register_comm_hook(state, psgd.powerSGD_hook)")
    strategy = f"from {_strategy_module(ctx)} import DDPStrategy"
    start = _start_method(ctx)
    if ctx.on_gpu:
        return ("# Lightning: the Trainer's DDP strategy registers the hook\n"
                f"{strategy}\n"
                "from torch.distributed.algorithms.ddp_comm_hooks import default_hooks\n"
                f"Trainer(..., strategy=DDPStrategy({start}ddp_comm_hook=default_hooks.{hook}))\n"
                "# or PowerSGD (low-rank gradients, larger saving, approximate):\n"
                "# from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd\n"
                f"# Trainer(..., strategy=DDPStrategy({start}ddp_comm_state={powersgd_state},\n"
                "#                                    ddp_comm_hook=psgd.powerSGD_hook))")
    return ("# Lightning: DDPStrategy(ddp_comm_hook=...) registers its hook on CUDA devices "
            "only; on CPU,\n# register it on the DDP model the strategy built, in the "
            "LightningModule:\n"
            "from torch.distributed.algorithms.ddp_comm_hooks import default_hooks\n\n"
            "    def on_fit_start(self):\n"
            "        self.trainer.strategy.model.register_comm_hook(None, "
            f"default_hooks.{hook})\n\n"
            "# on GPUs (NCCL), the strategy's own switch, with the bf16 hook:\n"
            f"# {strategy}\n"
            f"# Trainer(..., strategy=DDPStrategy({start}"
            "ddp_comm_hook=default_hooks.bf16_compress_hook))")


def bucket_line(ctx: Context) -> str:
    """A smaller first bucket, as the script sets DDP's ``bucket_cap_mb``."""
    where = ("DDPStrategy(..., bucket_cap_mb=...)" if lightning_trainer(ctx)
             else "DistributedDataParallel(..., bucket_cap_mb=...)")
    return f"\n# and a smaller {where} starts the first all-reduce earlier in backward"


_SYNC_LESS_OFTEN = (
    "# The all-reduces are latency, not bytes: all-reduce every k micro-batches\n"
    "import contextlib\n"
    "for i, batch in enumerate(loader):\n"
    "    sync = (i + 1) % k == 0\n"
    "    with contextlib.nullcontext() if sync else ddp_model.no_sync():\n"
    "        (loss_fn(ddp_model(batch)) / k).backward()\n"
    "    if sync:\n"
    "        optimizer.step()\n"
    "        optimizer.zero_grad()\n"
    "# or a larger batch per rank: more compute for each all-reduce")

# the Trainer skips DDP's gradient sync on the micro-batches it accumulates (no_sync inside)
_LIGHTNING_SYNC_LESS_OFTEN = (
    "# The all-reduces are latency, not bytes: all-reduce every k micro-batches. The Trainer\n"
    "# accumulates k batches and syncs the gradients once, at the optimizer step:\n"
    "Trainer(..., accumulate_grad_batches=k)\n"
    "# or a larger batch per rank (the DataLoader's batch_size): more compute for each "
    "all-reduce")


def sync_less_fix(ctx: Context, micro: int) -> str:
    """All-reduce less often: accumulate ``k`` micro-batches under ``no_sync`` (the Trainer's
    ``accumulate_grad_batches``); ``micro`` is what a step accumulates now."""
    lightning = lightning_trainer(ctx)
    if micro < 2:
        return _LIGHTNING_SYNC_LESS_OFTEN if lightning else _SYNC_LESS_OFTEN
    more = ("Trainer(..., accumulate_grad_batches=...) with a larger value"
            if lightning else "Accumulate more of them under ddp_model.no_sync() (a larger k)")
    return (f"# The script already accumulates {micro} micro-batches a step: the all-reduces "
            f"are latency,\n# not bytes. {more}, or\n# give each rank a larger batch: more "
            "compute for each all-reduce.")
