"""Terminal rendering of a :class:`RunDiff` (rich). Presents only; computes nothing."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from dsprof.render.safe_text import plain
from dsprof.render.summary import fmt_bytes, fmt_ms
from dsprof.reports.diff import Delta, RunDiff


def _pct(a: float | None, b: float | None) -> str:
    if not a or b is None:
        return "-"
    return f"{(b / a - 1) * 100:+.1f}%"


def render_diff(d: RunDiff, console: Console) -> None:
    for w in d.warnings:
        console.print(plain(f"warning: {w}", style="bold yellow"))
    t = Table(title="Runs compared (B against A)", title_justify="left")
    for col, just in (("", "left"), ("A", "right"), ("B", "right"), ("change", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    t.add_row("run", plain(d.a.path), plain(d.b.path), "")
    t.add_row("steps timed", str(d.a.steps), str(d.b.steps), "")
    if d.a.step_ms is not None or d.b.step_ms is not None:
        t.add_row("mean step", _ms(d.a.step_ms), _ms(d.b.step_ms), _pct(d.a.step_ms, d.b.step_ms))
        t.add_row("median step", _ms(d.a.median_ms), _ms(d.b.median_ms),
                  _pct(d.a.median_ms, d.b.median_ms))
    if d.a.samples_per_s or d.b.samples_per_s:
        t.add_row("samples/s", _num(d.a.samples_per_s), _num(d.b.samples_per_s),
                  _pct(d.a.samples_per_s, d.b.samples_per_s))
    if d.a.peak_bytes or d.b.peak_bytes:
        t.add_row(plain(f"peak memory ({d.a.peak_source or d.b.peak_source})"),
                  fmt_bytes(d.a.peak_bytes), fmt_bytes(d.b.peak_bytes),
                  _pct(d.a.peak_bytes, d.b.peak_bytes))
    for cat in sorted(set(d.a.peak_by_category) | set(d.b.peak_by_category)):
        va, vb = d.a.peak_by_category.get(cat), d.b.peak_by_category.get(cat)
        if va or vb:
            t.add_row(plain(f"  {cat} at the peak"), fmt_bytes(va), fmt_bytes(vb), _pct(va, vb))
    console.print(t)
    _loops(d, console)
    if d.applied:
        a = Table(title="Applied findings: predicted vs measured", title_justify="left")
        for col, just in (("finding", "left"), ("predicted", "right"), ("measured", "right")):
            a.add_column(col, justify=just)  # type: ignore[arg-type]
        for f in d.applied:
            a.add_row(plain(f"{f.id} {f.title}"), _saving(f.predicted_saving_ms,
                                                           f.predicted_saving_bytes),
                      _saving(f.measured_saving_ms, f.measured_saving_bytes))
        console.print()
        console.print(a)
        if len(d.applied) > 1:
            console.print("  measured: the runs measure the applied findings together, so the "
                          "change is on the last row only")
    _deltas("Op self time per profiled step", d.ops, console)
    _deltas("Module self time per profiled step", d.modules, console)
    for label, items in (("resolved", d.resolved), ("new", d.new)):
        for f in items:
            console.print(plain(f"finding {label}: {f['id']} {f['title']}"))
    for f in d.remaining:
        console.print(plain(f"finding remains: {f['id']} {f['title']} (saving "
                            f"{f['saving_s_before'] * 1e3:.2f} -> {f['saving_s'] * 1e3:.2f} "
                            "ms/step)"))


def _loops(d: RunDiff, console: Console) -> None:
    if not d.loops:
        return
    rates = any(r.a_samples_per_s or r.b_samples_per_s for r in d.loops)
    t = Table(title="Step time by loop (B against A, by position)", title_justify="left")
    for col in ("loop", "steps A / B", "median A", "median B", "change",
                *(("samples/s A", "samples/s B") if rates else ())):
        t.add_column(col, justify="left" if col == "loop" else "right")
    for r in d.loops:
        t.add_row(str(r.loop), f"{r.a_steps} / {r.b_steps}", _ms(r.a_median_ms),
                  _ms(r.b_median_ms), _pct(r.a_median_ms, r.b_median_ms),
                  *((_num(r.a_samples_per_s), _num(r.b_samples_per_s)) if rates else ()))
    console.print()
    console.print(t)


def _deltas(title: str, rows: list[Delta], console: Console) -> None:
    if not rows:
        return
    t = Table(title=title + " (largest changes)", title_justify="left")
    for col, just in (("name", "left"), ("A", "right"), ("B", "right"), ("change", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in rows:
        t.add_row(plain(r.name), fmt_ms(r.a_ms), fmt_ms(r.b_ms), f"{r.delta_ms:+.3f} ms")
    console.print()
    console.print(t)


def _ms(v: float | None) -> str:
    return "-" if v is None else fmt_ms(v)


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def _saving(ms: float | None, nbytes: int | None) -> str:
    parts = []
    if ms:
        parts.append(f"{ms:.2f} ms/step")
    if nbytes:
        parts.append(f"{fmt_bytes(nbytes)} peak")
    return ", ".join(parts) or ("-" if ms is None else "0")
