"""The run directory: the file boundary between collect, ingest, analyze and present.

Layout (documented in docs/format.md)::

    meta.json                 schema version, versions, argv, knobs, devices, exit status
    raw/rank<R>/...           what collectors wrote, untouched
    tables/<name>/rank<R>.parquet
    dsprof.log

Every file is written atomically (temporary name, then rename), so a crash never leaves a
table or meta.json that reads as valid but is cut short.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

import orjson

from dsprof.errors import RunDirError
from dsprof.manifest import META_FILE as META
from dsprof.manifest import read_meta_doc
from dsprof.schema_version import SCHEMA_VERSION
from dsprof.undecodable import representable

SESSION_FILE = "session.json"  # raw/rank<R>/: step boundaries and windows of a dsprof run
SAMPLES_FILE = "samples.json"  # raw/rank<R>/: host and GPU metrics of the sampler thread
CUPTI_KERNELS_FILE = "cupti_kernels.json"  # raw/rank<R>/: whole-run kernels (cupti mode)
ANOMALY_FILE = "anomaly.json"  # raw/rank<R>/: the first NaN/Inf (--detect-anomaly, DEBUG)
INGESTED_FILE = "ingested.json"  # raw/rank<R>/: the rank ingested itself (ingest/own_rank.py)


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary name. On failure (a full disk, a file
    size limit) the temporary file is removed and the old ``path``, if any, stays whole.

    ``durable=False`` skips the fsync (4-12 ms each on the project's machine), for caches that
    a reader treats as absent when unreadable (stored and rendered reports): after a crash
    such a file may be empty, never half-written, and is computed again."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise


def remove_quietly(path: Path) -> None:
    """Remove ``path`` if it is there (cleanup after a failed write must not fail itself)."""
    try:
        path.unlink()
    except OSError:
        pass


def new_run_path(runs_dir: Path, name: str, now: _dt.datetime | None = None,
                 suffix_only: bool = False) -> Path:
    """``runs_dir/<name>-<YYYYmmdd-HHMMSS>``, with a suffix if that exists already
    (``suffix_only``: ``runs_dir/<name>``, ``<name>-2``, ...)."""
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = runs_dir / (name if suffix_only else f"{name}-{stamp}")
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


class RunDir:
    """A run directory on disk (it may still be being written).

    Attributes:
        path: where it is (absolute for a run being written, see :meth:`create`).
        shown: the path as the user gave it, for messages ("dsprof summary dsprof-runs/x").
    """

    def __init__(self, path: str | os.PathLike[str], shown: str | os.PathLike[str] | None = None):
        self.path = Path(path)
        self.shown = Path(shown) if shown is not None else self.path

    # -- creation -----------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path) -> RunDir:
        """Create an empty run directory.

        The path is made absolute here: a script that changes directory (Hydra does) must
        not move where the session writes.

        Raises:
            RunDirError: ``path`` exists and is not empty, or cannot be created.
        """
        shown, path = path, Path(path).absolute()
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise RunDirError(f"output directory {path} already exists and is not empty; "
                              "choose another with -o or remove it")
        try:
            (path / "raw").mkdir(parents=True, exist_ok=True)
            probe = path / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise RunDirError(f"cannot write the run directory {path}: {exc.strerror or exc}; "
                              "choose a writable place with -o") from None
        return cls(path, shown)

    # -- paths --------------------------------------------------------------------------
    @property
    def meta_path(self) -> Path:
        return self.path / META

    @property
    def log_path(self) -> Path:
        return self.path / "dsprof.log"

    def raw_dir(self, rank: int) -> Path:
        d = self.path / "raw" / f"rank{rank}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def raw_ranks(self) -> list[int]:
        raw = self.path / "raw"
        if not raw.is_dir():
            return []
        ranks = []
        for d in raw.iterdir():
            if d.is_dir() and d.name.startswith("rank") and d.name[4:].isdigit():
                if int(d.name[4:]) > 2**31 - 1:  # ranks are int32 in every table
                    raise RunDirError(f"{d}: rank {d.name[4:]} is out of range (a rank is "
                                      "below 2**31); this run directory was not made by dsprof")
                ranks.append(int(d.name[4:]))
        return sorted(ranks)

    def table_dir(self, name: str) -> Path:
        return self.path / "tables" / name

    def table_glob(self, name: str) -> str:
        return str(self.table_dir(name) / "*.parquet")

    def tables(self) -> list[str]:
        """Names of the tables that hold at least one part."""
        # imported here: dsprof.schema loads pyarrow, which `dsprof import` needs only once
        # its inputs are checked (a bad path exits in the interpreter's time, not pyarrow's)
        from dsprof.schema import TABLES

        return [n for n in TABLES if any(self.table_dir(n).glob("*.parquet"))]

    # -- meta ---------------------------------------------------------------------------
    def write_meta(self, meta: dict[str, Any]) -> None:
        # the script's argv, working directory and paths may hold bytes that are not UTF-8,
        # which JSON cannot (dsprof/undecodable.py)
        meta = representable({"schema_version": SCHEMA_VERSION, **meta})
        atomic_write_bytes(self.meta_path, orjson.dumps(meta, option=orjson.OPT_INDENT_2
                                                        | orjson.OPT_SORT_KEYS))

    def update_meta(self, **changes: Any) -> dict[str, Any]:
        meta = self.read_meta() if self.meta_path.exists() else {}
        meta.update(changes)
        self.write_meta(meta)
        return meta

    def read_meta(self) -> dict[str, Any]:
        """Read and check meta.json (upgraded to the current schema by the manifest module,
        the one reader of that file).

        Raises:
            RunDirError: missing, unreadable, or written by a newer schema.
        """
        return read_meta_doc(self.path)
