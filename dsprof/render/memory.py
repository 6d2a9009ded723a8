"""Terminal rendering of a :class:`MemoryReport` (rich). Presents only; computes nothing."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from dsprof.render.layout import name_width, print_titled, shorten_module, shorten_site
from dsprof.render.safe_text import esc, plain
from dsprof.render.summary import fmt_bytes
from dsprof.reports.memory import DevicePeak, Holding, MemoryReport


def render_report(report: MemoryReport, console: Console, top: int = 10) -> None:
    if report.oom:
        _oom_header(report, console)
    for p in report.peaks:
        where = f"step {p.step}" if p.step is not None else "the capture"
        console.print(f"[bold]rank {p.rank}, {esc(p.device)}[/]: peak {fmt_bytes(p.peak_bytes)} "
                      f"live, in {where}")
        _holdings("by category", p.by_category, p.peak_bytes, console, top, shorten_module)
        _holdings("by module", p.by_module, p.peak_bytes, console, top, shorten_module)
        _holdings("top allocation sites (bytes live at the peak)", p.by_site, p.peak_bytes,
                  console, top, shorten_site)
        if p.unattributed:
            console.print(f"unattributed (allocated before the capture, unseen): "
                          f"{fmt_bytes(p.unattributed)}")
        if p.allocator:
            _allocator(p, console)
    if report.modules:
        t = Table(title="saved for backward per forward (what checkpointing a module frees)",
                  title_justify="left")
        shown = report.modules[:top]
        type_w = max(len("type"), *(len(str(m["type"])) for m in shown)) if shown else 4
        # three byte columns of ~10 characters, five columns' padding and borders
        width = name_width(console.width, type_w + 3 * 11 + 16)
        for col in ("module", "type", "activations", "own", "params"):
            t.add_column(col, justify="left" if col in ("module", "type") else "right",
                         no_wrap=col == "module")
        for m in shown:
            t.add_row(plain(shorten_module(m["name"], width)), plain(m["type"]), fmt_bytes(m["activation_bytes"]),
                      fmt_bytes(m["self_activation_bytes"]), fmt_bytes(m["param_bytes"]))
        print_titled(console, t)


def render_oom_short(report: MemoryReport, console: Console) -> None:
    """The few lines printed when the script died of out-of-memory: what filled memory."""
    _oom_header(report, console)
    for p in report.peaks:
        cats = ", ".join(f"{esc(h.key)} {fmt_bytes(h.bytes)}" for h in p.by_category[:4])
        console.print(f"  {esc(p.device)} peak {fmt_bytes(p.peak_bytes)}: {cats}")
        mods = [h for h in p.by_module if h.key != "(no module)"][:3]
        if mods:
            console.print("  modules: " + ", ".join(
                f"{esc(shorten_module(h.key, 40))} {fmt_bytes(h.bytes)}" for h in mods))
        if p.by_site:
            console.print("  sites: " + ", ".join(
                f"{esc(shorten_site(h.key, 50))} {fmt_bytes(h.bytes)}" for h in p.by_site[:3]))


def _oom_header(report: MemoryReport, console: Console) -> None:
    what = ("over the memory budget" + (f" of {fmt_bytes(report.budget)}" if report.budget
                                        else "") if report.oom == "MemoryBudgetExceeded"
            else f"out of memory ({esc(report.oom)})")
    console.print(f"[bold red]the script died {what}[/]; what filled memory at the peak:")


def _holdings(title: str, rows: list[Holding], peak: int, console: Console, top: int,
              shorten: Callable[[str, int], str]) -> None:
    # A row with net frees (bytes <= 0) is memory allocated before the capture and freed in
    # it (events without addresses are summed signed): it holds nothing at the peak, and its
    # negative share would push the others past 100 %.
    freed = [h for h in rows if h.bytes <= 0]
    rows = [h for h in rows if h.bytes > 0]
    if not rows:
        return
    t = Table(title=title, title_justify="left")
    # bytes (~11), % (~5), blocks (~6), padding and borders: the name gets the rest, on one
    # line, shortened from the left so rows stay distinguishable
    width = name_width(console.width, 11 + 5 + 6 + 13)
    t.add_column("", justify="left", no_wrap=True)
    t.add_column("bytes", justify="right")
    t.add_column("%", justify="right")
    t.add_column("blocks", justify="right")
    for h in rows[:top]:
        t.add_row(plain(shorten(h.key, width)), fmt_bytes(h.bytes), f"{100 * h.bytes / peak:.1f}" if peak else "-",
                  str(h.count))
    print_titled(console, t)
    if freed:
        console.print(f"  [dim]{len(freed)} row(s) left out: they freed memory allocated "
                      "before the capture, and hold nothing at the peak[/]")


def _allocator(p: DevicePeak, console: Console) -> None:
    a = p.allocator
    parts = [f"{k.replace('_', ' ')} {fmt_bytes(a[k])}" for k in
             ("reserved_peak", "allocated_peak", "inactive_split_peak", "largest_free") if k in a]
    parts += [f"{k.replace('_', ' ')} {a[k]}" for k in
              ("alloc_retries", "ooms", "device_allocs", "device_frees") if k in a]
    console.print("allocator: " + ", ".join(parts))
