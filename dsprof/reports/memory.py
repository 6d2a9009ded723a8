"""What held memory at the peak: the facts behind ``dsprof memory RUN`` and the OOM post-mortem.

Reads the ``memory`` table (and ``stacks``, ``ops``, ``modules``, ``allocator``) only. For each
rank and device, the peak is the row with the largest live total (``allocated``); what was live
then is every alloc row of the same capture made at or before that instant and not yet freed
(``ts_ns <= T < free_ns``), summed by category, by module and by allocation site; each share is
of the peak, so the rows of one table sum to at most 100 %.

Rows without an address (raw memory timelines, 2021 Kineto traces) cannot be paired, so what each
key held at the peak is known only where a free carries the key of the block it frees:

* by category, their signed bytes up to the peak are summed (a timeline record carries its
  block's category; a trace without categories has the one key ``unknown``). A category whose
  frees outweigh its allocs freed memory allocated before the trace: it is left out and its
  bytes are reported as ``freed_before``, never as a negative size.
* by module and by site, a free is charged to the op that freed the block, not the one that
  allocated it, so signed sums mean nothing there (one op's -64 MiB, three ops at 66.7 % of
  the peak each). Those tables give the bytes each key **allocated** from the capture's start
  to the peak (``attribution = "allocated"``, in ``allocated_by_module`` and
  ``allocated_by_site``), as shares of all bytes allocated then (``allocated_bytes``); they sum
  to 100 % and never claim to be live. ``by_module`` and ``by_site`` (live at the peak, which
  the dashboard draws as such) stay empty then.

The site is the stack's innermost user frame when the allocation has a stack (activations, CUDA
snapshots), else the op that allocated it and its module. What the live rows do not explain
(blocks the census could not reach, memory allocated before the trace, on an accelerator whose
allocator counts everything) is reported as ``unattributed``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from dsprof.errors import RunDirError
from dsprof.run import Run

OOM_ERRORS = ("OutOfMemoryError", "MemoryError", "MemoryBudgetExceeded")
POSTMORTEM_FILE = "oom.json"


@dataclass(frozen=True)
class Holding:
    """Bytes live at the peak for one key (a category, module or site)."""

    key: str
    bytes: int
    count: int


@dataclass(frozen=True)
class DevicePeak:
    rank: int
    device: str
    peak_bytes: int
    ts_ns: int | None
    step: int | None
    capture: int
    by_category: list[Holding]
    by_module: list[Holding]
    by_site: list[Holding]
    unattributed: int
    allocator: dict[str, int] = field(default_factory=dict)
    attribution: str = "live"
    """``live``: ``by_module`` and ``by_site`` hold bytes live at the peak (shares of
    ``peak_bytes``). ``allocated``: the trace has no addresses to pair frees with allocs, so
    those stay empty and ``allocated_by_module`` / ``allocated_by_site`` hold the bytes
    allocated from the capture's start to the peak (shares of ``allocated_bytes``)."""
    allocated_by_module: list[Holding] = field(default_factory=list)
    allocated_by_site: list[Holding] = field(default_factory=list)
    allocated_bytes: int = 0
    """All bytes allocated from the capture's start to the peak (the total of ``allocated``
    shares); 0 when ``attribution`` is ``live``."""
    freed_before: int = 0
    """Bytes freed in the capture of blocks allocated before it (categories whose frees
    outweigh their allocs, rows without addresses); they hold nothing at the peak."""
    category_bytes: int = 0
    """Live bytes at the peak that have a category row (all of them, beyond ``top``)."""

    def share_total(self, table: str) -> int:
        """The total that a row of ``by_<table>`` is a share of: the peak, or (module and
        site rows of a trace without addresses) all bytes allocated up to it. Where frees of
        memory allocated before the trace leave the categories' live bytes above the peak
        (the peak is a lower bound then), the categories' sum, so shares never pass 100 %."""
        if table != "category" and self.attribution == "allocated":
            return self.allocated_bytes
        if table == "category":
            return max(self.peak_bytes, self.category_bytes)
        return self.peak_bytes


@dataclass(frozen=True)
class MemoryReport:
    peaks: list[DevicePeak]
    modules: list[dict[str, Any]]
    """The modules table's largest activation savers (checkpointing candidates)."""
    oom: str | None
    """The error the script died of, when it was out of memory (or over the budget)."""
    budget: int | None


def memory_report(run: Run, top: int = 10) -> MemoryReport:
    """Raises:
        RunDirError: the run has no memory events.
    """
    if not run.has("memory") or not run.sql("SELECT count(*) FROM memory")[0][0]:
        raise RunDirError(
            f"{run.path} has no memory events (no memory table): the profiled window recorded "
            "no allocation. Profile at least one training step (check --wait/--active against "
            "the number of steps the script runs), or import a trace recorded with "
            "profile_memory=True or a CUDA snapshot")
    peaks = [device_peak(run, r, d, top) for r, d in run.sql(
        "SELECT DISTINCT rank, device FROM memory WHERE allocated IS NOT NULL ORDER BY 1, 2")]
    modules: list[dict[str, Any]] = []
    if run.has("modules"):
        cols = ("rank", "name", "type", "params", "param_bytes", "activation_bytes",
                "self_activation_bytes", "fwd_ns", "bwd_ns")
        for row in run.sql(f"SELECT {', '.join(cols)} FROM modules WHERE activation_bytes > 0 "
                           "ORDER BY activation_bytes DESC, name LIMIT ?", [top]):
            modules.append(dict(zip(cols, row)))
    error = run.meta.get("exit_error")
    settings = run.meta.get("settings") or {}
    return MemoryReport([p for p in peaks if p is not None], modules,
                        error if error in OOM_ERRORS else None, settings.get("memory_budget"))


def device_peak(run: Run, rank: int, device: str, top: int) -> DevicePeak | None:
    row = run.sql("""
        SELECT allocated, ts_ns, step, capture FROM memory
        WHERE rank = ? AND device = ? AND allocated IS NOT NULL AND action IN ('alloc', 'free')
        ORDER BY allocated DESC, ts_ns NULLS FIRST LIMIT 1""", [rank, device])
    if not row:
        return None
    peak, ts, step, capture = row[0]
    # Paired rows (with an address): the allocs not yet freed at the peak. Rows without an
    # address (raw memory timelines, 2021 traces) cannot be paired: their signed bytes up to
    # the peak are summed instead, which gives the same per-category totals.
    where = """m.rank = $rank AND m.device = $device AND m.capture = $capture
          AND (m.ts_ns IS NULL OR m.ts_ns <= $ts) AND (
            (m.addr IS NOT NULL AND m.action = 'alloc'
             AND (m.free_ns IS NULL OR m.free_ns > $ts))
            OR (m.addr IS NULL AND m.action IN ('alloc', 'free')))"""
    params = {"rank": rank, "device": device, "capture": capture,
              "ts": ts if ts is not None else -(2**62)}

    def group(key_sql: str, joins: str = "") -> list[Holding]:
        rows = run.con.execute(
            f"SELECT {key_sql} AS k, sum(m.bytes), count(*) FROM memory m {joins} "
            f"WHERE {where} GROUP BY k ORDER BY 2 DESC, k LIMIT {int(top)}", params).fetchall()
        return [Holding(k if k is not None else "unknown", int(b), int(c)) for k, b, c in rows]

    unpaired = run.con.execute(
        f"SELECT count(*) FROM memory m WHERE {where} AND m.addr IS NULL AND m.action = 'alloc'",
        params).fetchone()[0]
    # without addresses, module and site rows are what each key allocated up to the peak
    alloc_where = """m.rank = $rank AND m.device = $device AND m.capture = $capture
          AND (m.ts_ns IS NULL OR m.ts_ns <= $ts) AND m.action = 'alloc'"""

    def charged(key_sql: str, joins: str = "") -> list[Holding]:
        if not unpaired:
            return group(key_sql, joins)
        rows = run.con.execute(
            f"SELECT {key_sql} AS k, sum(m.bytes), count(*) FROM memory m {joins} "
            f"WHERE {alloc_where} GROUP BY k ORDER BY 2 DESC, k LIMIT {int(top)}",
            params).fetchall()
        return [Holding(k if k is not None else "unknown", int(b), int(c)) for k, b, c in rows]

    cats = run.con.execute(
        "SELECT coalesce(m.category, 'unknown') AS k, sum(m.bytes), count(*) FROM memory m "
        f"WHERE {where} GROUP BY k ORDER BY 2 DESC, k", params).fetchall()
    by_cat = [Holding(k, int(b), int(c)) for k, b, c in cats if b > 0][:top]
    freed_before = -sum(int(b) for _k, b, _c in cats if b < 0)
    by_mod = charged("coalesce(m.module, '(no module)')")
    site_joins, site_key = "", "NULL"
    if run.has("stacks"):
        site_joins += "LEFT JOIN stacks s ON s.rank = m.rank AND s.stack_id = m.stack_id "
        site_key = "s.site"
    if run.has("ops"):
        site_joins += "LEFT JOIN ops o ON o.rank = m.rank AND o.id = m.op_id "
        site_key = f"coalesce({site_key}, o.name || coalesce(' in ' || m.module, ''))"
    by_site = charged(f"coalesce({site_key}, CASE WHEN m.source = 'baseline' THEN "
                      "m.category || ' (alive before the window)' END, 'unknown')", site_joins)
    attributed = sum(int(b) for _k, b, _c in cats if b > 0)
    allocated_bytes = 0
    if unpaired:
        allocated_bytes = int(run.con.execute(
            f"SELECT coalesce(sum(m.bytes), 0) FROM memory m WHERE {alloc_where}",
            params).fetchone()[0])
    live_mod, live_site = ([], []) if unpaired else (by_mod, by_site)
    return DevicePeak(rank, device, int(peak), ts, step, int(capture), by_cat, live_mod,
                      live_site, max(int(peak) - int(attributed), 0),
                      _allocator(run, rank, device),
                      attribution="allocated" if unpaired else "live",
                      allocated_by_module=by_mod if unpaired else [],
                      allocated_by_site=by_site if unpaired else [],
                      allocated_bytes=allocated_bytes, freed_before=freed_before,
                      category_bytes=attributed)


def _allocator(run: Run, rank: int, device: str) -> dict[str, int]:
    if not run.has("allocator"):
        return {}
    row = run.sql("""
        SELECT max(reserved), max(allocated), max(inactive_split), max(largest_free),
               max(alloc_retries), max(ooms), max(device_allocs), max(device_frees)
        FROM allocator WHERE rank = ? AND device = ? AND source <> 'timeline'""",
                  [rank, device])[0]
    keys = ("reserved_peak", "allocated_peak", "inactive_split_peak", "largest_free",
            "alloc_retries", "ooms", "device_allocs", "device_frees")
    return {k: int(v) for k, v in zip(keys, row) if v is not None}


def write_postmortem(run: Run) -> MemoryReport | None:
    """When the script died out of memory (or over ``--memory-budget``), write "what filled
    memory" to ``oom.json`` in the run directory and return it; else None."""
    if run.meta.get("exit_error") not in OOM_ERRORS:
        return None
    from dsprof.rundir import atomic_write_bytes

    report = memory_report(run)
    atomic_write_bytes(run.path / POSTMORTEM_FILE,
                       orjson.dumps(asdict(report), option=orjson.OPT_INDENT_2))
    return report
