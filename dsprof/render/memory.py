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
        _holdings("by category (bytes live at the peak)", p.by_category,
                  p.share_total("category"), console, top, shorten_module)
        if p.freed_before:
            console.print(f"  [dim]freed memory allocated before the trace: "
                          f"{fmt_bytes(p.freed_before)} (it holds nothing at the peak)[/]")
        if p.attribution == "allocated":
            what = (f"bytes allocated up to the peak, % of all {fmt_bytes(p.allocated_bytes)} "
                    "allocated")
            _holdings(f"by module ({what})", p.allocated_by_module, p.share_total("module"),
                      console, top, shorten_module)
            _holdings(f"top allocation sites ({what})", p.allocated_by_site,
                      p.share_total("site"), console, top, shorten_site)
            console.print("  [dim]the trace records no addresses, so a free cannot be matched "
                          "to its allocation: what each module or site held at the peak is "
                          "unknown[/]")
        else:
            _holdings("by module (bytes live at the peak)", p.by_module, p.share_total("module"),
                      console, top, shorten_module)
            _holdings("top allocation sites (bytes live at the peak)", p.by_site,
                      p.share_total("site"), console, top, shorten_site)
        if p.unattributed:
            console.print(f"unattributed (allocated before the trace, unseen): "
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


def _holdings(title: str, rows: list[Holding], total: int, console: Console, top: int,
              shorten: Callable[[str, int], str]) -> None:
    """One table of holdings; ``total`` is what the % column is a share of (the report says
    which: the peak, or the bytes allocated up to it)."""
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
        t.add_row(plain(shorten(h.key, width)), fmt_bytes(h.bytes),
                  f"{100 * h.bytes / total:.1f}" if total else "-", str(h.count))
    print_titled(console, t)


def _allocator(p: DevicePeak, console: Console) -> None:
    a = p.allocator
    parts = [f"{k.replace('_', ' ')} {fmt_bytes(a[k])}" for k in
             ("reserved_peak", "allocated_peak", "inactive_split_peak", "largest_free") if k in a]
    parts += [f"{k.replace('_', ' ')} {a[k]}" for k in
              ("alloc_retries", "ooms", "device_allocs", "device_frees") if k in a]
    console.print("allocator: " + ", ".join(parts))
