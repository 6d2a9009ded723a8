"""The launchers that start a training's Python processes, by the name a command line calls
them: read by the collector that watches the script's children
(:mod:`dsprof.collectors.python_commands`) and by the summary's note on a training that went to
a child (:mod:`dsprof.reports.python_child_note`). A vocabulary both stages share, so that the
report reads no collector's code."""

from __future__ import annotations

# console scripts that run Python and start the training's processes themselves
LAUNCHER_SCRIPTS = {"torchrun": "torchrun", "accelerate": "accelerate",
                    "accelerate-launch": "accelerate", "deepspeed": "deepspeed",
                    "lightning": "lightning", "fabric": "lightning"}
# the same launchers run as `python -m MODULE`
LAUNCHER_MODULES = {"torch.distributed.run": "torchrun", "torch.distributed.launch": "torchrun",
                    "accelerate.commands.launch": "accelerate",
                    "accelerate.commands.accelerate_cli": "accelerate",
                    "deepspeed.launcher.runner": "deepspeed"}
