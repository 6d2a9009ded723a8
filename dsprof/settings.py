"""One frozen settings object, built from defaults, then the environment, then CLI flags.

Every knob has a ``DSPROF_*`` environment twin so that ``dsprof run`` under torchrun, a
notebook and a CI job can all be configured the same way. ``DS_LOG_LEVEL`` is read by
:mod:`dsprof.log`, not here, because logging must work before any settings exist.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsprof.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE | _FALSE - {''})}")


def _nonneg_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def _pos_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be >= 1")
    return value


def _pos_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}


def parse_bytes(text: str) -> int | None:
    """``123``, ``512MiB``, ``2GB``, ``1.5GiB`` -> bytes; empty -> None."""
    t = text.strip().lower().replace(" ", "").replace("_", "")
    if not t:
        return None
    num = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = t[len(num):]
    if unit not in _UNITS or not num:
        raise ValueError("expected bytes, e.g. 2000000000, 512MiB or 2GB")
    value = int(float(num) * _UNITS[unit])
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def _nonneg_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def _path(text: str) -> Path | None:
    return Path(text) if text else None


def _knob(default: Any, env: str, parse: Callable[[str], Any], doc: str,
          alias: str | None = None) -> Any:
    """A setting; ``alias`` is a second environment name read when ``env`` is not set (the
    ``DS_*`` knobs that findings print in their ``apply``)."""
    return field(default=default, metadata={"env": env, "parse": parse, "doc": doc,
                                            "alias": alias})


@dataclass(frozen=True)
class Settings:
    """What a dsprof session does. Build it with :meth:`Settings.load`."""

    output: Path | None = _knob(None, "DSPROF_OUTPUT", _path,  # noqa: RUF009 - field metadata
                                "the run directory to write (default: RUNS_DIR/<script>-<stamp>)")
    runs_dir: Path = _knob(Path("dsprof-runs"), "DSPROF_RUNS_DIR", Path,  # noqa: RUF009
                           "where run directories are created when --output is not given")
    wait: int = _knob(5, "DSPROF_WAIT", _nonneg_int, "steps to skip before each profiler window")
    warmup: int = _knob(1, "DSPROF_WARMUP", _nonneg_int, "steps the profiler warms up (not kept)")
    active: int = _knob(3, "DSPROF_ACTIVE", _pos_int, "steps recorded in detail per window")
    repeat: int = _knob(1, "DSPROF_REPEAT", _nonneg_int, "number of windows (0: until the run ends)")
    max_capture_s: float = _knob(60.0, "DSPROF_MAX_CAPTURE_S", _pos_float,
                                 "cap on the capture when the script marks no steps, seconds")
    max_capture_mb: float = _knob(128.0, "DSPROF_MAX_CAPTURE_MB", _pos_float,
                                  "cap on what the process's heap may grow while the capture "
                                  "before the first step records, MiB (the profiler keeps "
                                  "every op; stopping the capture takes ~5x that again)")
    with_stack: bool = _knob(False, "DSPROF_WITH_STACK", _bool,
                             "also record Python stacks (python_function events) in windows")
    analyze: bool = _knob(True, "DSPROF_ANALYZE", _bool,
                          "ingest and summarize at exit (--no-analyze: only write raw/)")
    quiet: bool = _knob(False, "DSPROF_QUIET", _bool, "print nothing but errors")
    memory_budget: int | None = _knob(None, "DSPROF_MEMORY_BUDGET", parse_bytes,
                                      "live bytes allowed; over it (measured in profiled "
                                      "steps) the script is stopped as if out of memory")
    tf32: bool = _knob(False, "DSPROF_TF32", _bool,
                       "turn on TF32 Tensor Cores for fp32 matmuls and convolutions in the "
                       "profiled process", alias="DS_ENABLE_TENSOR_CORE")
    sample_ms: float = _knob(100.0, "DSPROF_SAMPLE_MS", _nonneg_float,
                             "period of the host (CPU, RSS) and GPU (NVML) metric sampler, "
                             "milliseconds; 0 turns it off")
    cupti_kernels: bool = _knob(False, "DSPROF_CUPTI_KERNELS", _bool,
                                "record every kernel of the whole run with CUPTI's activity API "
                                "(paused while a profiler window records)")
    detect_anomaly: bool = _knob(False, "DSPROF_DETECT_ANOMALY", _bool,
                                 "check every op's floating outputs for NaN/Inf and stop at the "
                                 "first (always on at DS_LOG_LEVEL=DEBUG)")
    trace_filter: str = _knob("", "DSPROF_TRACE_FILTER", str,
                              "which ops the DEBUG trace prints: op:, module:, step: terms")
    trace_alloc_bytes: int = _knob(1 << 20, "DSPROF_TRACE_ALLOC_BYTES", _nonneg_int,
                                   "the DEBUG trace logs op outputs of at least this many new "
                                   "bytes (0: none)")

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``env`` (``os.environ`` by default), then non-None ``overrides``.

        Raises:
            ConfigError: an environment value does not parse, or a value is out of range.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name, parse, alias = f.metadata["env"], f.metadata["parse"], f.metadata["alias"]
            if name not in env and alias is not None and alias in env:
                name = alias
            if name in env:
                try:
                    values[f.name] = parse(env[name])
                except ValueError as exc:
                    raise ConfigError(f"{name}={env[name]!r} is not valid: {exc}") from None
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown settings {sorted(unknown)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if min(self.wait, self.warmup, self.repeat) < 0:
            raise ConfigError("--wait, --warmup and --repeat must be >= 0")
        if self.active < 1:
            raise ConfigError("--active must be >= 1")
        if self.max_capture_s <= 0:
            raise ConfigError("--max-capture must be > 0 seconds")
        if self.max_capture_mb <= 0:
            raise ConfigError("--max-capture-mb must be > 0 MiB")
        if self.memory_budget is not None and self.memory_budget <= 0:
            raise ConfigError("--memory-budget must be > 0 bytes")
        if self.sample_ms < 0:
            raise ConfigError("--sample-ms must be >= 0 (0 turns sampling off)")
        if self.trace_alloc_bytes < 0:
            raise ConfigError("--trace-alloc-bytes must be >= 0")
        from dsprof.collectors.trace_filter import TraceFilter

        TraceFilter.parse(self.trace_filter)

    def knobs(self) -> dict[str, Any]:
        """The settings as JSON-friendly values, for meta.json."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out

    @staticmethod
    def env_names() -> dict[str, str]:
        return {f.name: f.metadata["env"] for f in dataclasses.fields(Settings)}


@dataclass(frozen=True)
class Schedule:
    """Which steps ``dsprof.profile()`` records op by op, as ``dsprof run --wait/--warmup/
    --active/--repeat`` (and torch.profiler's ``schedule``) do. None keeps the default.

    Args:
        wait: steps skipped before each window.
        warmup: steps the profiler warms up (not kept).
        active: steps recorded per window.
        repeat: number of windows (0: until the profile ends).
    """

    wait: int | None = None
    warmup: int | None = None
    active: int | None = None
    repeat: int | None = None

    def knobs(self) -> dict[str, int | None]:
        return dataclasses.asdict(self)
