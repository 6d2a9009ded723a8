"""Where GPU time went by module and phase, how much of it ran on Tensor Cores, and the FLOP/s
and MFU that the matrix math achieved.

Contract (views ``kernels``, ``ops``, ``steps`` as in :mod:`dsprof.schema`):

* **GPU time** is the sum of device-event durations (kernels, memcpy, memset; ``sync`` events
  are waits, not work), so overlapping streams both count. A kernel belongs to the op that issued
  its launch (``kernels.op_id``), whose ``module`` and ``phase`` it takes; kernels with no such op
  are ``(unattributed)``. With ``rollup``, a kernel of ``blocks.3.mlp.fc1`` also counts for
  ``blocks.3.mlp``, ``blocks.3`` and ``blocks``.
* **Tensor Core share**: Tensor Core kernel time over all compute-kernel time (kinds compute and
  communication excluded: NCCL kernels are communication), and over the time of gemm, conv and
  attention kernels (the kernels that could have used them). Kernels whose verdict is unknown
  (null, Triton templates) count as not Tensor Core.
* **FLOPs** are ``ops.flops`` (from shapes, on the op that does the arithmetic). An op's kernels
  are the device events launched by runtime calls on its thread while it ran; its **math mode**
  is its first input dtype, promoted fp32 -> TF32 when any of its kernels ran on Tensor Cores
  (see :func:`dsprof.devices.math_mode`).
* **MFU** of a step = sum over its ops of (FLOPs / peak FLOP/s of the op's math mode) divided by
  the step's wall time: the share of the step the device would need at peak. Achieved FLOP/s is
  FLOPs over the same wall time. Per module, the time is the module's GPU time (its kernels),
  or its ops' own CPU time on a run without kernels. An unknown device, or a math mode the
  device lacks, gives ``mfu = None`` and says why in ``peak_note``.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass, replace
from typing import Any

import duckdb
import orjson

from dsprof.devices import DevicePeak, lookup, math_mode
from dsprof.manifest import RunManifest, manifest_of

UNATTRIBUTED = "(unattributed)"
MATRIX_CATEGORIES = ("gemm", "conv", "attention")


@dataclass(frozen=True)
class GpuTime:
    module: str
    phase: str
    gpu_ns: int
    share: float
    """of all GPU time, 0..1"""
    kernels: int


@dataclass(frozen=True)
class TensorCoreShare:
    key: str
    """``run``, the step number, or the module path"""
    kernel_ns: int
    matrix_ns: int
    """time of gemm, conv and attention kernels"""
    tc_ns: int

    @property
    def of_kernels(self) -> float:
        return self.tc_ns / self.kernel_ns if self.kernel_ns else 0.0

    @property
    def of_matrix(self) -> float:
        return self.tc_ns / self.matrix_ns if self.matrix_ns else 0.0


@dataclass(frozen=True)
class Throughput:
    key: str
    """the step number or the module path"""
    flops: int
    time_ns: int
    flops_per_s: float
    mfu: float | None
    peak_note: str
    """empty, or why there is no MFU"""


def device_name(meta: RunManifest | dict[str, Any], rank: int = 0) -> str | None:
    """The accelerator a rank ran on (:meth:`RunManifest.device_name`). None for CPU runs and
    traces without device properties."""
    return manifest_of(meta).device_name(rank)


def gpu_time_by_module(con: duckdb.DuckDBPyConnection, *, rollup: bool = False,
                       by_phase: bool = True) -> list[GpuTime]:
    """GPU time per (module, phase), largest first."""
    phase = "coalesce(o.phase, 'other')" if by_phase else "'all'"
    base = f"""
        SELECT coalesce(o.module, '{UNATTRIBUTED}') AS module, {phase} AS phase, k.dur_ns
        FROM kernels k LEFT JOIN ops o ON o.rank = k.rank AND o.id = k.op_id
        WHERE k.kind <> 'sync'"""
    if rollup:
        base = f"""
            WITH b AS ({base}), p AS (
                SELECT phase, dur_ns, string_split(module, '.') AS parts,
                       module = '{UNATTRIBUTED}' AS un FROM b),
            e AS (SELECT phase, dur_ns, parts, un,
                         unnest(generate_series(1, CASE WHEN un THEN 1 ELSE len(parts) END)) AS i
                  FROM p)
            SELECT CASE WHEN un THEN '{UNATTRIBUTED}' ELSE array_to_string(parts[1:i], '.') END
                   AS module, phase, dur_ns FROM e"""
    total = con.execute("SELECT coalesce(sum(dur_ns), 0) FROM kernels WHERE kind <> 'sync'"
                        ).fetchone()[0]
    rows = con.execute(f"""
        SELECT module, phase, sum(dur_ns)::BIGINT, count(*) FROM ({base})
        GROUP BY module, phase ORDER BY sum(dur_ns) DESC, module, phase""").fetchall()
    return [GpuTime(m, p, int(ns), ns / total if total else 0.0, int(n)) for m, p, ns, n in rows]


def tensor_core_share(con: duckdb.DuckDBPyConnection, by: str = "run") -> list[TensorCoreShare]:
    """Tensor Core share per ``run``, ``step`` or ``module``."""
    key = {"run": "'run'", "step": "k.step::VARCHAR",
           "module": f"coalesce(o.module, '{UNATTRIBUTED}')"}[by]
    cats = ", ".join(f"'{c}'" for c in MATRIX_CATEGORIES)
    # only the module split reads the launching op: the join with every op is skipped
    # otherwise (an op's (rank, id) is unique, so the join never changes the kernel rows)
    join = "LEFT JOIN ops o ON o.rank = k.rank AND o.id = k.op_id" if by == "module" else ""
    rows = con.execute(f"""
        SELECT {key} AS key, sum(k.dur_ns)::BIGINT,
               coalesce(sum(k.dur_ns) FILTER (WHERE k.category IN ({cats})), 0)::BIGINT,
               coalesce(sum(k.dur_ns) FILTER (WHERE k.tensor_core), 0)::BIGINT
        FROM kernels k {join}
        WHERE k.kind = 'compute'
        GROUP BY key ORDER BY sum(k.dur_ns) DESC""").fetchall()
    return [TensorCoreShare(str(k), int(a), int(m), int(t)) for k, a, m, t in rows]


def flop_ops(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every op with FLOPs, with the GPU time and Tensor Core verdict of its kernels.

    Computed once per connection (a run's views do not change while it is open) and copied
    out: ``dsprof import`` asks five times (the gpu report twice, its FLOP/s tables, the
    tensor_cores analyzer), and the join with every launch was a fifth of the gpu report.
    """
    try:
        cached = _FLOP_OPS.get(con)
    except TypeError:  # a connection type that cannot be weakly referenced: no cache
        cached = None
    if cached is None:
        cached = _flop_ops(con)
        with contextlib.suppress(TypeError):
            _FLOP_OPS[con] = cached
    return [dict(o) for o in cached]


_FLOP_OPS: weakref.WeakKeyDictionary[Any, list[dict[str, Any]]] = weakref.WeakKeyDictionary()


def _flop_ops(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    has_kernels = "kernels" in {r[0] for r in con.execute("SHOW TABLES").fetchall()}
    kernel_cols = "NULL::BIGINT AS gpu_ns, NULL::BOOLEAN AS any_tc, 0 AS n_kernels"
    join = ""
    if has_kernels:
        kernel_cols = ("sum(k.dur_ns)::BIGINT AS gpu_ns, bool_or(coalesce(k.tensor_core, false)) "
                       "AS any_tc, count(k.dur_ns) AS n_kernels")
        join = """
            LEFT JOIN ops l ON l.rank = f.rank AND l.thread = f.thread
                 AND l.cat IN ('cuda_runtime', 'cuda_driver')
                 AND l.start_ns >= f.start_ns AND l.start_ns < f.start_ns + f.dur_ns
            LEFT JOIN kernels k ON k.rank = l.rank AND k.launch_id = l.id AND k.kind = 'compute'"""
    cur = con.execute(f"""
        SELECT f.rank, f.id, f.step, f.name, f.module, f.phase, f.flops, f.dtypes,
               f.input_shapes, f.dur_ns, {kernel_cols}
        FROM ops f {join}
        WHERE f.flops IS NOT NULL
        GROUP BY ALL ORDER BY f.rank, f.id""")
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def first_dtype(dtypes: str | None) -> str | None:
    if not dtypes:
        return None
    try:
        values = orjson.loads(dtypes)
    except orjson.JSONDecodeError:
        return None
    return next((v for v in values if isinstance(v, str) and v and v != "Scalar"), None)


def _seconds_at_peak(op: dict[str, Any], peak: DevicePeak | None) -> tuple[float | None, str]:
    mode = math_mode(first_dtype(op["dtypes"]), op["any_tc"])
    if peak is None:
        return None, "unknown device: no peak FLOP/s to compare with"
    if mode is None:
        return None, f"unknown dtype {first_dtype(op['dtypes'])!r}"
    flops = peak.peak_flops(mode)
    if flops is None:
        return None, f"{peak.name} has no {mode} peak in the table"
    return op["flops"] / flops, ""


def _throughput(key: str, ops: list[dict[str, Any]], time_ns: int,
                peak: DevicePeak | None) -> Throughput:
    flops = sum(int(o["flops"]) for o in ops)
    at_peak, notes = 0.0, set()
    for o in ops:
        s, note = _seconds_at_peak(o, peak)
        if s is None:
            notes.add(note)
        else:
            at_peak += s
    seconds = time_ns / 1e9
    mfu = None if notes or not seconds else at_peak / seconds
    return Throughput(key, flops, time_ns, flops / seconds if seconds else 0.0, mfu,
                      "; ".join(sorted(notes)))


def throughput_per_step(con: duckdb.DuckDBPyConnection, peak: DevicePeak | None,
                        rank: int = 0) -> list[Throughput]:
    """Achieved FLOP/s and MFU of each step of ``rank`` that has FLOPs."""
    has_steps = con.execute("SELECT count(*) FROM information_schema.tables "
                            "WHERE table_name = 'steps'").fetchone()[0]
    if not has_steps:
        return []  # a trace with no ProfilerStep (old autograd-profiler traces) has no steps
    ops = [o for o in flop_ops(con) if o["rank"] == rank and o["step"] is not None]
    steps = dict(con.execute("SELECT step, dur_ns FROM steps WHERE rank = ?", [rank]).fetchall())
    out = []
    for step in sorted({o["step"] for o in ops}):
        if steps.get(step):
            out.append(_throughput(str(step), [o for o in ops if o["step"] == step],
                                   int(steps[step]), peak))
    return out


def throughput_per_module(con: duckdb.DuckDBPyConnection, peak: DevicePeak | None, *,
                          rank: int | None = None,
                          steps: list[int] | None = None) -> list[Throughput]:
    """Achieved FLOP/s and MFU per innermost module, largest FLOPs first.

    Args:
        rank: only this rank's ops and kernels (None: every rank).
        steps: per step: only the ops and kernels of these steps, and FLOPs and time as the
            mean per step over them (FLOP/s and MFU, being ratios, are the same either way),
            like the per-step table of :func:`throughput_per_step`. None: summed over the
            whole capture.
    """
    ops = [o for o in flop_ops(con) if (rank is None or o["rank"] == rank)
           and (steps is None or o["step"] in steps)]
    gpu = _module_gpu_ns(con, rank, steps) if any(o["n_kernels"] for o in ops) else {}
    by_module: dict[str, list[dict[str, Any]]] = {}
    for o in ops:
        by_module.setdefault(o["module"] or UNATTRIBUTED, []).append(o)
    n = len(steps) if steps else 1
    out = []
    for module, mops in by_module.items():
        time_ns = gpu.get(module) if gpu else sum(int(o["dur_ns"]) for o in mops)
        t = _throughput(module, mops, int(time_ns or 0), peak)
        out.append(replace(t, flops=t.flops // n, time_ns=t.time_ns // n) if n > 1 else t)
    return sorted(out, key=lambda t: (-t.flops, t.key))


def _module_gpu_ns(con: duckdb.DuckDBPyConnection, rank: int | None,
                   steps: list[int] | None) -> dict[str, int]:
    """GPU time per innermost module, of one rank and some steps when given."""
    if rank is None and steps is None:
        return {g.module: g.gpu_ns for g in gpu_time_by_module(con, by_phase=False)}
    where, params = ["k.kind <> 'sync'"], []
    if rank is not None:
        where.append("k.rank = ?")
        params.append(rank)
    if steps is not None:
        if not steps:
            return {}
        where.append(f"k.step IN ({', '.join('?' for _ in steps)})")
        params.extend(steps)
    rows = con.execute(f"""
        SELECT coalesce(o.module, '{UNATTRIBUTED}'), sum(k.dur_ns)::BIGINT
        FROM kernels k LEFT JOIN ops o ON o.rank = k.rank AND o.id = k.op_id
        WHERE {' AND '.join(where)} GROUP BY 1""", params).fetchall()
    return {m: int(ns) for m, ns in rows}


def peak_for(meta: RunManifest | dict[str, Any], rank: int = 0) -> tuple[DevicePeak | None, str]:
    """(peaks, note) of a rank's device; the note says why there are none."""
    name = device_name(meta, rank)
    if name is None:
        return None, "no accelerator recorded (CPU run, or a trace without deviceProperties)"
    peak = lookup(name)
    return peak, "" if peak else f"unknown device {name!r}: not in dsprof's table of peaks"
