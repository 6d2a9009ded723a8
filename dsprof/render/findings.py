"""Terminal rendering of findings (rich). Presents only; computes nothing.

Titles, evidence and fixes quote op names and file paths from traces: untrusted text, always
passed through :mod:`dsprof.render.safe_text`, so a name like ``[red]`` is printed, never
interpreted as markup, and no control character reaches the terminal.
"""

from __future__ import annotations

import textwrap

from rich.console import Console
from rich.table import Table
from rich.text import Text

from dsprof.findings import Finding
from dsprof.findings_file import Analysis
from dsprof.render.layout import NARROW
from dsprof.render.safe_text import clean, esc, plain
from dsprof.render.summary import fmt_bytes

_SEVERITY_STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan", "info": "dim"}


def saving_text(f: Finding) -> str:
    parts = []
    if f.saving_s > 0:
        ms = f.saving_s * 1e3
        # a trace that marks no steps: the saving is over the whole capture (or an iteration)
        per = str(f.data.get("saving_per") or "step")
        parts.append(f"{ms:.3g} ms/{per}" + (f" ({f.share:.0%})" if f.share and
                                             not f.saving_bytes else ""))
    if f.saving_bytes > 0:
        parts.append(f"{fmt_bytes(f.saving_bytes)} peak")
    return ", ".join(parts) or "-"


def render_findings(analysis: Analysis, console: Console, top: int = 10,
                    detail: int = 3) -> None:
    """A ranked table of the top findings, then the details (why, fix, verify) of the first
    ``detail`` of them, then what was skipped or failed."""
    findings = analysis.findings
    console.print()
    if not findings:
        console.print("[bold]Findings[/]: none; nothing crossed an analyzer's threshold")
    else:
        title = f"Findings ({len(findings)}, ranked by estimated saving)"
        if console.width < NARROW:
            _stacked(findings[:top], title, console)
        else:
            _table(findings[:top], title, console)
        if len(findings) > top:
            console.print(f"  ... and {len(findings) - top} more (dsprof analyze RUN --top N)")
        for f in findings[:detail]:
            render_detail(f, console)
    render_notes(analysis, console)
    for s in analysis.skipped:
        console.print(f"[dim]skipped {esc(s['analyzer'])}: {esc(s['reason'])}[/]")
    for s in analysis.failed:
        console.print(f"[red]analyzer {esc(s['analyzer'])} failed:[/] {esc(s['error'])}")


def _table(findings: list[Finding], title: str, console: Console) -> None:
    t = Table(title=title, title_justify="left")
    for col, just in (("id", "left"), ("severity", "left"), ("saving", "right"),
                      ("confidence", "left"), ("finding", "left")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for f in findings:
        t.add_row(plain(f.id), Text(f.severity, style=_SEVERITY_STYLE[f.severity]),
                  saving_text(f), plain(f.confidence), plain(f.title))
    console.print(t)


def _stacked(findings: list[Finding], title: str, console: Console) -> None:
    """Narrow terminals: one header line per finding (rank, id, severity, saving, confidence)
    and its title wrapped beneath it at the full width, instead of a fifth table column."""
    console.print(Text(title, style="italic"))
    for rank, f in enumerate(findings, 1):
        console.print(Text.assemble(
            (f"{rank:>2}. ", "bold"), (clean(f.id), "bold"), "  ",
            (f.severity, _SEVERITY_STYLE[f.severity]),
            f"  saves {saving_text(f)}  confidence {clean(f.confidence)}"))
        console.print(plain(textwrap.fill(clean(f.title), max(console.width - 1, 20),
                                          initial_indent="    ", subsequent_indent="    ",
                                          break_long_words=False, break_on_hyphens=False)),
                      soft_wrap=True)


def render_notes(analysis: Analysis, console: Console,
                 kinds: tuple[str, ...] = ("withheld", "incomplete", "user_profiler",
                                           "ranks", "noise", "gpu")) -> None:
    """What the reader must know beside the ranked list (see ``Analysis.notes``)."""
    for note in analysis.notes:
        if note.get("kind") in kinds:
            loud = note.get("kind") in ("withheld", "incomplete")
            console.print(plain(f"note: {note.get('text', '')}",
                                style="bold yellow" if loud else "dim"))


def render_detail(f: Finding, console: Console) -> None:
    console.print()
    console.print(Text.assemble((f"[{clean(f.id)}] ", "bold"), (clean(f.title), "bold")))
    console.print(plain(f"saving: {saving_text(f)}, confidence {f.confidence}"))
    if f.explanation:
        console.print(plain(f.explanation))
    for e in f.evidence[:5]:
        console.print(plain(f"  - {e.text}"))
    if f.fix:
        console.print(plain("fix:", style="bold"))
        # code to paste: never re-wrapped (a wrapped line is not valid Python any more)
        console.print(plain("\n".join("    " + line for line in f.fix.splitlines())),
                      soft_wrap=True)
    if f.apply:
        console.print(plain("apply: " + " ".join(f"{k}={v}" for k, v in f.apply.items())))
    if f.verify:
        console.print(plain(f"verify: {f.verify}"), soft_wrap=True)


def render_findings_short(analysis: Analysis, console: Console, top: int = 3) -> None:
    """The lines ``dsprof run`` prints at exit: the top findings with a saving."""
    shown = [f for f in analysis.findings if f.severity != "info"][:top]
    for f in shown:
        console.print(Text.assemble(("finding ", "bold"), (f"{clean(f.id)} ", ""),
                                    (f"[{f.severity}] ", _SEVERITY_STYLE[f.severity]),
                                    f"{clean(f.title)} (saves {saving_text(f)})"))
    render_notes(analysis, console, kinds=("withheld",))
    if analysis.failed:
        console.print(plain(f"{len(analysis.failed)} analyzer(s) failed; see the run's dsprof.log",
                            style="red"))
