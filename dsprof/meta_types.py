"""The types of meta.json's keys, as dsprof writes them: what a reader may count on.

A run directory is data from someone else (docs/security.md): a meta.json whose ``windows``
was ``"w"``, whose ``settings`` was ``"x"`` or whose ``clock.rank_offsets_ns`` held ``"x"``
reached ``dict("x")``, ``int("a")`` or ``.get`` on a string in a dozen readers (a fuzz sweep of
summary, analyze, export: a traceback, exit status 1). :func:`checked` drops every value whose
type is not the one dsprof writes there, so that it reads as absent, as in a run recorded
before that key existed: each reader already goes on without it. A null stays: dsprof writes
null for what it does not know, and readers take it as absent.

``META_TYPES`` is the table (docs/format.md says what each key means). A spec is a type or a
tuple of types (an ``int`` is never a ``bool``); a dict spec is an object whose listed keys
are checked in turn, or a map: ``{"*": spec}`` of any keys, ``{RANK: spec}`` of rank numbers
(another key is no rank, and dropped), where a null entry is no entry; a one-item
list spec is a list whose items are checked, an item of the wrong type (or null) dropped; a
:class:`Pair` is a two-item list (``[first, last]`` steps), wrong as a whole when an item is.
Keys the table does not list pass as they are: their readers check them where they are used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dsprof.log import logger

Spec = Any  # type | tuple[type, ...] | dict[str, Spec] | list[Spec] | Pair

RANK = "<rank>"  # in a dict spec: the keys of a map by rank ("0", "1", ...)
MAX_RANK = 2**31 - 1  # ranks are int32 in every table


@dataclass(frozen=True)
class Pair:
    """A two-item list whose items are both of ``item``: readers unpack it (``for a, b in``)."""

    item: Any


NUM = (int, float)
STR_LIST = [str]
INT_LIST = [int]

_DEVICE = {"kind": str, "index": int, "name": str, "total_memory": int,
           "capability": (str, list), "count": int}
_WINDOW = {"index": int, "kind": str, "steps": INT_LIST, "file": str, "capped": bool,
           "capped_by": str}
_SETTINGS = {"warmup": int, "wait": int, "active": int, "repeat": int,
             "max_capture_s": NUM, "max_capture_mb": NUM, "sample_ms": NUM,
             "memory_budget": int, "trace_alloc_bytes": int}

META_TYPES: dict[str, Spec] = {
    "source": str, "status": str, "dsprof_version": str, "torch_version": str,
    "python_version": str, "host": str, "pid": int,
    "target": {"kind": str, "name": str, "argv": list},
    "dsprof_argv": list, "cwd": str, "interpreter_options": STR_LIST,
    "settings": _SETTINGS, "env": dict, "speed_env": dict,
    "devices": {RANK: _DEVICE},
    "cuda_driver_at_start": bool,
    "precision": dict,
    "ranks": INT_LIST, "world_size": int,
    "start_time": str, "end_time": str, "start_ns": int, "end_ns": int,
    "clock": {"kind": str, "rank_offsets_ns": {RANK: int}, "ranks": {RANK: dict}},
    "exit_status": int, "exit_reason": str, "exit_error": str,
    "user_profiler": {"sessions": int, "first_step": int, "windows_cut": int,
                      "steps": [Pair(int)]},
    "autograd_anomaly": int, "steps_source": str, "steps_recorded": int,
    "backward_calls": int, "grad_calls": int, "closure_steps": int, "loop_starts": INT_LIST,
    "frameworks": STR_LIST, "forward_calls": int, "forward_modules": {"*": int},
    "compile": {"used": bool, "compilations": int, "total_s": NUM, "recompile_limit": int,
                "calls": [Pair(str)], "compiles_dropped": int},
    "windows": [_WINDOW],
    "capped": bool, "capped_by": str, "max_capture_s": NUM, "max_capture_mb": NUM,
    "host_bandwidth": {"bytes_per_s": NUM, "bytes": int, "threads": int, "method": str},
    "library_pace": dict,  # checked where it is read (metrics/ops/library_cost.py)
    "knobs": {"*": dict},
    "applied": {"baseline": str, "baseline_step_s": NUM, "findings": [dict],
                "predicted_saving_s": NUM, "predicted_saving_bytes": int, "env": dict},
    "ingested": bool, "events": int,
    "ingest_notes": {"flops_unknown": {"ops": int, "kinds": {"*": int}},
                     "sampled": {RANK: NUM}},
    "inputs": list, "files": dict, "trace_device_properties": [dict], "rows": dict,
    "launcher": str, "nproc_per_node": int,
    "spawned": {"nprocs": int, "start_method": str},
    "spawned_unprofiled": [dict], "group_unprofiled": {"world_size": int, "rank": int},
    "late_environment": [dict], "script_imported_torch": bool, "child_processes": [dict],
    "python_children": [{"argv": STR_LIST, "cut": bool, "launcher": str, "seconds": NUM,
                         "ended": bool, "exit_status": int}],
    "python_children_more": int,
    "backend": str, "partial": bool, "rank_failures": {RANK: str},
    "first_failure": {"rank": int, "why": str}, "coordinator_lost": bool,
}


class _Wrong:
    """The mark of a value that is not of its spec's type."""


WRONG = _Wrong()
_NO_RANK = ()  # the spec of a key that is no rank: no type matches it


def _conform(value: Any, spec: Spec, where: str) -> Any:
    """``value`` (at ``where`` in the document) with its wrong-typed parts dropped, or
    ``WRONG`` when it is itself of the wrong type."""
    if value is None:
        return None
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return WRONG
        out = {}
        for key, item in value.items():
            at = f"{where}.{key}" if where else str(key)
            inner = _item_spec(spec, key)
            kept = item if inner is None else _conform(item, inner, at)
            # (a map's null entry is no entry: its readers take each value as it is)
            if kept is WRONG or (kept is None and (RANK in spec or "*" in spec)):
                logger.debug("meta.json %s: %.60r is null or not of the type dsprof writes "
                             "there; read as absent", at, item)
            else:
                out[key] = kept
        return out
    if isinstance(spec, Pair):
        if not isinstance(value, list) or len(value) != 2:
            return WRONG
        pair = [_conform(item, spec.item, where) for item in value]
        return value if all(item is not WRONG and item is not None for item in pair) else WRONG
    if isinstance(spec, list):
        if not isinstance(value, list):
            return WRONG
        items = [_conform(item, spec[0], f"{where}[{i}]") for i, item in enumerate(value)]
        kept = [item for item in items if item is not WRONG and item is not None]
        if len(kept) < len(items):
            logger.debug("meta.json %s: %d item(s) null or not of the type dsprof writes "
                         "there dropped", where, len(items) - len(kept))
        return kept
    types = spec if isinstance(spec, tuple) else (spec,)
    if isinstance(value, bool) and bool not in types:
        return WRONG
    return value if isinstance(value, types) else WRONG


def _item_spec(spec: dict[str, Spec], key: str) -> Spec:
    """The spec of ``key`` in an object of ``spec``: a map's (one that no value matches for a
    key that is no rank in a map by rank), or the key's own; None: not checked."""
    if RANK in spec:
        rank = key.isascii() and key.isdigit() and int(key) <= MAX_RANK
        return spec[RANK] if rank else _NO_RANK
    return spec["*"] if "*" in spec else spec.get(key)


def checked(doc: dict[str, Any]) -> dict[str, Any]:
    """meta.json's document with every value not of the type dsprof writes there dropped
    (``META_TYPES``), so that it reads as absent."""
    out = _conform(doc, META_TYPES, "")
    return out if isinstance(out, dict) else {}
