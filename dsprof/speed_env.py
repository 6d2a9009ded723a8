"""The environment variables that set how fast a run goes, recorded with the run and given back
to its reruns (``dsprof verify``).

A rerun is the same program only with the same threads, allocator and compiler settings. Verify
reran in the shell it was typed in: a run profiled with ``OMP_NUM_THREADS=1`` was rerun with
torch's default of 2 threads on the 2-core machine (meta ``host_bandwidth.threads``: 1, then 2),
and "measured" 15.10 -> 6.92 ms a step for a fix priced at 1.06 ms; on a loaded machine the same
mismatch went the other way (3.22 -> 57.37 ms). So a run records these variables, set or not
(meta.json ``speed_env``: a name -> its value, or null where it was unset), and a rerun sets
each as recorded and unsets the ones the run did not have.

Light module: no torch, read by the CLI's verify and by the session header.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# set or unset, each decides a run's speed: recorded either way
NAMES = (
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES", "OMP_WAIT_POLICY",
    "OMP_DYNAMIC", "OMP_SCHEDULE", "KMP_AFFINITY", "KMP_BLOCKTIME", "GOMP_CPU_AFFINITY",
    "MALLOC_ARENA_MAX", "MALLOC_CONF", "CUDA_VISIBLE_DEVICES",
    "CUDA_LAUNCH_BLOCKING", "CUDA_DEVICE_MAX_CONNECTIONS", "CUBLAS_WORKSPACE_CONFIG",
    "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF", "TORCH_LOGS", "TORCH_COMPILE_DEBUG",
    "TORCH_CPP_LOG_LEVEL", "ATEN_CPU_CAPABILITY", "DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA",
)
# families of them: every one set is recorded, and one a rerun's shell adds is unset
PREFIXES = ("OMP_", "KMP_", "MKL_", "TORCHINDUCTOR_", "TORCHDYNAMO_", "NCCL_")
MAX_VALUE = 4096  # longer is not a setting (a run directory is data)
# A run directory is data, and verify runs a process with what it gives back: no variable that
# names code to load (LD_PRELOAD is not recorded at all; OMP_TOOL_LIBRARIES, NCCL_NET_PLUGIN,
# a cache or compiler path), and only values that are settings, not paths (no "/")
_NOT_GIVEN_BACK = frozenset(("PLUGIN", "TOOL", "TOOLS", "LIBRARY", "LIBRARIES", "LIB", "PATH",
                             "DIR", "CACHE", "PRELOAD", "FILE", "CC", "CXX", "SO"))
_SETTING = re.compile(r"^[A-Za-z0-9_.,:=+\- ]*$")


def _given_back(name: str) -> bool:
    """A name verify may set or unset in a rerun: none that names code or a file to load."""
    return not _NOT_GIVEN_BACK.intersection(name.split("_"))


def speed_env(environ: Mapping[str, str]) -> dict[str, str | None]:
    """``{name: value or None}``: every name of :data:`NAMES` (None: unset), and every
    variable of a :data:`PREFIXES` family that is set."""
    out: dict[str, str | None] = {name: environ.get(name) for name in NAMES}
    out.update({k: v for k, v in environ.items() if k.startswith(PREFIXES)})
    return dict(sorted(out.items()))


def rerun_env(environ: Mapping[str, str], recorded: object) -> dict[str, str]:
    """``environ`` with the run's recorded speed settings put back: each recorded variable set
    to its value or unset, and a family member the run did not have unset. A record that is
    not one (a run before it, or a hand-edited meta.json) leaves ``environ`` as it is."""
    env = dict(environ)
    if not isinstance(recorded, Mapping):
        return env
    kept = {k: v for k, v in recorded.items()
            if isinstance(k, str) and (k in NAMES or k.startswith(PREFIXES))
            and _given_back(k)
            and (v is None or isinstance(v, str) and len(v) <= MAX_VALUE
                 and _SETTING.match(v) is not None)}
    if not kept:  # nothing of a record in it
        return env
    for name in list(env):
        # (a name that is never given back stays as the shell has it)
        if name.startswith(PREFIXES) and name not in kept and _given_back(name):
            del env[name]
    for name, value in kept.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def differences(before: Mapping[str, str], after: Mapping[str, str],
                recorded: object) -> list[str]:
    """What ``rerun_env`` changed, as ``NAME=value`` / ``NAME unset`` (for verify to say)."""
    if not isinstance(recorded, Mapping):
        return []
    out = []
    for name in sorted(set(before) | set(after)):
        if before.get(name) != after.get(name):
            out.append(f"{name} unset" if name not in after else f"{name}={after[name]}")
    return out
