"""Reports computed once and read by every later command: ``RUN/reports/<name>.json``.

``dsprof import`` (and any ``summary`` or ``gpu`` that had to compute its report) stores what it
computed, as the report's own JSON, beside the tables. A later ``dsprof summary RUN`` or ``dsprof
gpu RUN`` with the same options renders that file and never opens the tables, so it imports
neither pyarrow, DuckDB nor numpy: on an ingested run the command costs the interpreter, click
and rich (issue 16; docs/decisions.md, "computed once, read by all").

A stored report is used only while it is current. Its ``key`` records what it was computed
from: the format version below, the dsprof version, and the size and modification time of
``meta.json`` and of every file under ``tables/``. Anything that rewrites a table or the
header (a new ingest, an upgrade of an older run, ``dsprof run`` finishing) changes the key, and
the command computes the report again from the tables. A file that cannot be read, or is not
what this module wrote, is treated as absent: it is a cache, never the only copy of anything.

This module imports only the standard library and orjson, so that checking the key stays
cheap; it must not import the run layer (which imports pyarrow).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from dsprof._version import __version__

REPORTS_DIR = "reports"
REPORT_FORMAT = 1
"""Bump when a stored report's layout changes: older files then read as absent."""

SUMMARY_TOP = 15
"""``dsprof summary --top`` by default: the summary ``dsprof import`` stores."""
GPU_TOP = 10
"""``dsprof gpu --top`` by default: the report ``dsprof import`` stores."""

META_FILE = "meta.json"  # dsprof.manifest.META_FILE, not imported: that module imports pyarrow
TABLES_DIR = "tables"


def summary_params(top: int = SUMMARY_TOP) -> dict[str, Any]:
    """What a stored summary depends on besides the run."""
    return {"top": int(top)}


def gpu_params(top: int = GPU_TOP, hta_rounding: bool = False) -> dict[str, Any]:
    """What a stored gpu report depends on besides the run."""
    return {"top": int(top), "hta": bool(hta_rounding)}


def report_path(run_path: str | os.PathLike[str], name: str) -> Path:
    return Path(run_path) / REPORTS_DIR / f"{name}.json"


def fingerprint(run_path: str | os.PathLike[str]) -> list[Any]:
    """What a stored report was computed from: (relative path, size, mtime_ns) of meta.json and
    of every file under tables/, sorted. A run being rewritten changes at least one of them."""
    root = Path(run_path)
    entries: list[Any] = []
    for path in [root / META_FILE, *_files_under(root / TABLES_DIR)]:
        try:
            st = os.stat(path)
        except OSError:
            continue
        entries.append([str(path.relative_to(root)), st.st_size, st.st_mtime_ns])
    return sorted(entries)


def _files_under(folder: Path) -> list[Path]:
    out: list[Path] = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    out.extend(_files_under(Path(entry.path)))
                elif not entry.name.startswith("."):  # a writer's temporary file
                    out.append(Path(entry.path))
    except OSError:
        pass
    return out


def _key(run_path: str | os.PathLike[str], params: dict[str, Any]) -> dict[str, Any]:
    return {"format": REPORT_FORMAT, "dsprof": __version__, "params": params,
            "files": fingerprint(run_path)}


def save_report(run_path: str | os.PathLike[str], name: str, params: dict[str, Any],
                report: dict[str, Any]) -> bool:
    """Store ``report`` (a report's ``to_json()``) for later commands with the same ``params``.

    Returns False, storing nothing, when the run directory is read-only: the report was shown,
    only not kept (the next command computes it again).
    """
    from dsprof.rundir import atomic_write_bytes

    path = report_path(run_path, name)
    doc = {"key": _key(run_path, params), "report": report}
    try:
        data = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
        path.parent.mkdir(exist_ok=True)
        atomic_write_bytes(path, data, durable=False)  # a cache (module docstring)
    except OSError:
        return False
    return True


def load_report(run_path: str | os.PathLike[str], name: str,
                params: dict[str, Any]) -> dict[str, Any] | None:
    """The stored report ``name`` if it is current for these ``params``, else None."""
    path = report_path(run_path, name)
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("report"), dict):
        return None
    if doc.get("key") != _key(run_path, params):
        return None
    return doc["report"]


def finished_and_ingested(run_path: str | os.PathLike[str]) -> bool:
    """Whether a stored report may stand for this run: it is ingested and not being written
    (a live ``dsprof run`` keeps status "running" until it ends). A meta.json that is missing,
    corrupt or newer than this dsprof answers False: the full path's run layer then says why."""
    from dsprof.errors import RunDirError
    from dsprof.manifest import read_meta_doc

    try:
        meta = read_meta_doc(Path(run_path))
    except (RunDirError, OSError):
        return False
    return bool(meta.get("ingested") and meta.get("status") != "running")


@contextmanager
def rendering(run_path: str | os.PathLike[str], name: str) -> Iterator[None]:
    """Around the rendering of a stored report: a file whose key is current but whose values
    are not what dsprof wrote (edited by hand, or made to look current) becomes one line naming
    it (a RunDirError: exit 2), not a traceback from a renderer formatting a string as a
    number."""
    from dsprof.errors import RunDirError

    try:
        yield
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        path = report_path(run_path, name)
        raise RunDirError(f"{path} is not a report dsprof wrote ({type(exc).__name__}: {exc}); "
                          "delete it: the next command computes it again from the tables"
                          ) from None
