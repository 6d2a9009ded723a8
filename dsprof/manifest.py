"""``RunManifest``: meta.json, parsed once, typed, and upgraded from older versions in one place.

meta.json is the run header (docs/format.md lists its keys). This module is the only reader of
that file: :func:`read_meta_doc` checks it and brings an older document up to the current
``SCHEMA_VERSION`` (one function per version step, in ``_UPGRADES``); :func:`parse` turns the
document into a :class:`RunManifest` whose fields every stage reads instead of dict lookups.
A document from a newer dsprof is refused with one line (the CLI exits 2 on it).

Fields the header may lack (an import has no target, a CPU run no accelerator) are None or
empty; the document itself stays available as ``raw`` for keys that have no field yet.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

from dsprof.errors import RunDirError
from dsprof.meta_types import checked
from dsprof.schema_version import SCHEMA_VERSION

META_FILE = "meta.json"
ACCELERATOR_KINDS = ("cuda", "rocm")


def _v1_to_v2(doc: dict[str, Any]) -> dict[str, Any]:
    """Version 1 headers said nothing of where the run came from, and recorded no step
    source: every version-1 run was made by ``dsprof run`` with the optimizer step hook."""
    doc.setdefault("source", "run")
    if doc["source"] == "run":
        doc.setdefault("steps_source", "optimizer")
    return doc


def _v2_to_v3(doc: dict[str, Any]) -> dict[str, Any]:
    """Version 3 added the per-rank aggregate tables (rank_totals, kernel_time, op_time,
    phase_time); the header is unchanged, and a version-2 run's aggregates are computed from
    its tables when first read (``Run.aggregate``)."""
    return doc


def _v3_to_v4(doc: dict[str, Any]) -> dict[str, Any]:
    """Version 4 added the ``compiles`` table (torch.compile's compilations, Dynamo's record of
    each); the header is unchanged, and a version-3 run has no such table: what reads it is
    skipped there, as on an imported trace."""
    return doc


# schema version -> the function that upgrades a document of that version by one step
_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}


def upgrade(doc: dict[str, Any]) -> dict[str, Any]:
    """Bring a meta.json document of an older schema version up to ``SCHEMA_VERSION``.

    Raises:
        RunDirError: the document is from a newer dsprof, or of a version with no upgrade.
    """
    version = doc.get("schema_version")
    if "schema_version" in doc and (not isinstance(version, int) or isinstance(version, bool)
                                    or version < 1):
        raise RunDirError(f"meta.json's schema_version is {_shown(version)}, not a version "
                          "dsprof writes; it was not written by dsprof")
    if not isinstance(version, int) or isinstance(version, bool):
        raise RunDirError("meta.json has no schema_version; it was not written by dsprof")
    if version > SCHEMA_VERSION:
        raise RunDirError(f"the run was written by a newer dsprof (schema {version}, this "
                          f"dsprof reads up to {SCHEMA_VERSION}); upgrade dsprof to read it")
    doc = dict(doc)
    while doc["schema_version"] < SCHEMA_VERSION:
        step = _UPGRADES.get(doc["schema_version"])
        if step is None:
            raise RunDirError(f"meta.json has schema version {doc['schema_version']}, which "
                              "this dsprof cannot read; re-create the run")
        doc = step(doc)
        doc["schema_version"] += 1
    return doc


def _shown(value: Any) -> str:
    """A value from the file, short and on one line, for a message."""
    text = repr(value)
    return (text[:40] + "...") if len(text) > 40 else text


def read_meta_doc(run_path: Path) -> dict[str, Any]:
    """meta.json of a run directory, checked and upgraded (a plain dict, for writers that
    update it), each value of a type dsprof never writes there dropped (``meta_types``).

    Raises:
        RunDirError: missing, unreadable, corrupt, or written by a newer schema.
    """
    meta_path = run_path / META_FILE
    if not run_path.is_dir():
        what = "it is a file, not a folder" if run_path.exists() else "it does not exist"
        raise RunDirError(f"{run_path} is not a run directory ({what}); "
                          "pass a folder made by `dsprof run` or `dsprof import`")
    if not meta_path.is_file():
        raise RunDirError(f"{run_path} is not a run directory (no meta.json); "
                          "pass a folder made by `dsprof run` or `dsprof import`, "
                          "or import a trace with `dsprof import`")
    try:
        doc = orjson.loads(meta_path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise RunDirError(f"{meta_path} is corrupt ({exc}); re-create the run") from None
    if not isinstance(doc, dict):
        raise RunDirError(f"{meta_path} has no schema_version; it was not written by dsprof")
    try:
        return checked(upgrade(doc))
    except RunDirError as exc:
        raise RunDirError(f"{run_path}: {exc}") from None


# meta.json ``launcher`` of a run whose ranks ``dsprof run --nproc-per-node N`` started
LAUNCHED_BY_DSPROF = "dsprof --nproc-per-node"
# and of one whose script started its ranks through torch.multiprocessing.spawn
SPAWNED_BY_SCRIPT = "torch.multiprocessing.spawn"

@dataclass(frozen=True)
class Device:
    """A rank's device as the session recorded it (``devices`` in meta.json)."""

    rank: int
    kind: str
    name: str | None
    total_memory: int | None = None
    capability: str | None = None
    """CUDA compute capability as the session wrote it (``"8.0"``), None when unknown."""

    @property
    def accelerator(self) -> bool:
        return self.kind in ACCELERATOR_KINDS


@dataclass(frozen=True)
class Target:
    """What ran: a script or ``-m module``, with its argv."""

    kind: str
    name: str
    argv: tuple[str, ...]

    @property
    def command(self) -> str:
        """The command line after ``dsprof run`` (``-m name args`` for modules)."""
        head = ["-m", self.name] if self.kind == "module" else []
        rest = list(self.argv[1:]) if head else list(self.argv)
        return " ".join(shlex.quote(a) for a in [*head, *rest])


@dataclass(frozen=True)
class Window:
    """A profiler window: its index, kind, and the steps it recorded."""

    index: int
    kind: str
    steps: tuple[int, ...]
    capped: bool = False


@dataclass(frozen=True)
class AppliedPlan:
    """A run made with ``--apply``: the baseline and what was predicted (meta ``applied``)."""

    baseline: str
    findings: tuple[Mapping[str, Any], ...]
    predicted_saving_s: float
    predicted_saving_bytes: int
    baseline_step_s: float | None = None


@dataclass(frozen=True)
class RunManifest:
    """meta.json, typed. Build one with :func:`parse` (or :func:`load_manifest`)."""

    schema_version: int
    source: str
    status: str | None
    target: Target | None
    settings: Mapping[str, Any]
    env: Mapping[str, str]
    devices: tuple[Device, ...]
    trace_device_names: tuple[str, ...]
    trace_capability: str | None
    world_size: int | None
    windows: tuple[Window, ...]
    steps_source: str | None
    applied: AppliedPlan | None
    ingested: bool
    exit_status: int | None
    rank_failures: Mapping[str, str]
    cwd: str | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def is_run(self) -> bool:
        """Made by ``dsprof run`` (not an import): step 0 is setup, steps are all timed."""
        return self.source == "run"

    @property
    def warmup(self) -> int:
        """Profiler warm-up steps before each window (torch's schedule: at least one when the
        window follows no wait)."""
        warmup = int(self.settings.get("warmup", 1) or 0)
        if int(self.settings.get("wait", 0) or 0) == 0:
            warmup = max(warmup, 1)
        return warmup

    @property
    def launcher(self) -> str | None:
        """What started the ranks of a multi-rank run: ``dsprof --nproc-per-node``,
        ``torchrun`` (any launcher of the user's that ran ``-m dsprof run`` per rank), or the
        script itself through ``torch.multiprocessing.spawn``; None for one process."""
        value = self.raw.get("launcher")
        return value if isinstance(value, str) and value else None

    @property
    def nproc_per_node(self) -> int | None:
        """``dsprof run --nproc-per-node N``'s N."""
        return _positive_int(self.raw.get("nproc_per_node"))

    def rerun_ranks(self) -> list[str] | None:
        """What ``dsprof run`` needs to start this run's ranks again as they were started:
        ``--nproc-per-node N`` where dsprof's launcher started them (or, in a run recorded
        before ``launcher`` was, where it had several), nothing for one process or a script
        that spawns its own (``--nproc-per-node`` would start N copies, each spawning its
        ranks); None where the job's own launcher (torchrun) started them, which dsprof
        cannot start."""
        if self.launcher == "torchrun":
            return None
        if self.launcher == LAUNCHED_BY_DSPROF:
            ranks = self.nproc_per_node
        elif self.launcher is None and (self.world_size or 1) > 1:
            ranks = self.world_size
        else:
            ranks = None
        return ["--nproc-per-node", str(ranks)] if ranks else []

    def device(self, rank: int = 0) -> Device | None:
        return next((d for d in self.devices if d.rank == rank), None)

    def accelerator_names(self) -> list[str]:
        """Names of the accelerators of the run (a session's record, else the traces'
        ``deviceProperties``), in rank order."""
        names = [d.name for d in self.devices if d.accelerator and d.name]
        return names + [n for n in self.trace_device_names if n]

    def compute_capability(self) -> float | None:
        """The first accelerator's compute capability (a session's record, else the traces'
        ``deviceProperties``), e.g. 8.0; None when unknown."""
        cap = next((d.capability for d in self.devices if d.capability), self.trace_capability)
        try:
            return None if cap is None else float(cap)
        except ValueError:
            return None

    def device_name(self, rank: int = 0) -> str | None:
        """The accelerator of ``rank``: its session's record (None when that is a CPU), else
        any rank's, else the imported traces' ``deviceProperties``."""
        dev = self.device(rank)
        if dev is not None:
            return dev.name if dev.accelerator else None
        names = self.accelerator_names()
        return names[0] if names else None


def _device(rank: str, d: Mapping[str, Any]) -> Device:
    cap = d.get("capability")
    if isinstance(cap, list | tuple):
        cap = ".".join(str(c) for c in cap)
    # a GPU run that never ended has its device's facts unsettled: name "", total_memory 0
    # (collectors/device.py): unknown, not an empty name or a 0-byte device
    return Device(int(rank) if str(rank).isdigit() else 0, str(d.get("kind") or "cpu"),
                  d.get("name") or None, d.get("total_memory") or None,
                  None if cap in (None, "") else str(cap))


def _trace_capability(props: Any) -> str | None:
    if isinstance(props, list) and props and isinstance(props[0], dict) \
            and "computeMajor" in props[0]:
        return f"{props[0]['computeMajor']}.{props[0].get('computeMinor', 0)}"
    return None


def _positive_int(value: Any) -> int | None:
    """An integer of at least 1, else None: a count that goes into the commands a finding
    prints (``--nproc-per-node N``), never the text a meta.json holds in its place."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 \
        else None


def parse(doc: Mapping[str, Any]) -> RunManifest:
    """A manifest from a meta.json document (upgraded first if it is older).

    Raises:
        RunDirError: from a newer dsprof, or not a dsprof header.
    """
    d = upgrade(dict(doc))
    target = d.get("target") or None
    devices = d.get("devices") or {}
    applied = d.get("applied") or None
    return RunManifest(
        schema_version=int(d["schema_version"]),
        source=str(d.get("source") or "run"),
        status=d.get("status"),
        target=None if not isinstance(target, dict) or not target.get("argv") else Target(
            str(target.get("kind") or "script"), str(target.get("name") or ""),
            tuple(str(a) for a in target["argv"])),
        settings=MappingProxyType(dict(d.get("settings") or {})),
        env=MappingProxyType(dict(d.get("env") or {})),
        devices=tuple(sorted((_device(r, v) for r, v in devices.items()
                              if isinstance(v, dict)), key=lambda x: x.rank))
        if isinstance(devices, dict) else (),
        trace_device_names=tuple(str(p.get("name")) for p in d.get("trace_device_properties")
                                 or [] if isinstance(p, dict) and p.get("name")),
        trace_capability=_trace_capability(d.get("trace_device_properties")),
        world_size=_positive_int(d.get("world_size")),
        windows=tuple(Window(w["index"] if isinstance(w.get("index"), int) else i,
                             str(w.get("kind") or "window"),
                             tuple(int(s) for s in w.get("steps") or []), bool(w.get("capped")))
                      for i, w in enumerate(d.get("windows") or []) if isinstance(w, dict)),
        steps_source=d.get("steps_source"),
        applied=None if not isinstance(applied, dict) else AppliedPlan(
            str(applied.get("baseline") or ""),
            tuple(f for f in applied.get("findings") or [] if isinstance(f, dict)),
            float(applied.get("predicted_saving_s") or 0.0),
            int(applied.get("predicted_saving_bytes") or 0),
            applied.get("baseline_step_s")),
        ingested=bool(d.get("ingested")),
        exit_status=d.get("exit_status"),
        rank_failures=MappingProxyType(dict(d.get("rank_failures") or {})),
        cwd=d.get("cwd"),
        raw=MappingProxyType(d),
    )


def manifest_of(meta: RunManifest | Mapping[str, Any]) -> RunManifest:
    """A manifest from either a manifest or a meta.json document (one without a version is
    taken as the current one: headers built in memory by tests and tools)."""
    if isinstance(meta, RunManifest):
        return meta
    return parse({"schema_version": SCHEMA_VERSION, **meta})


def load_manifest(run_path: Path) -> RunManifest:
    """The manifest of a run directory (see :func:`read_meta_doc` for the errors)."""
    return parse(read_meta_doc(run_path))
