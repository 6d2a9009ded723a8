"""Findings: each with its saving, explanation, evidence (links that jump the timeline to the
ops or time range), the code fix, the knobs that apply it, the verify command, and the
checkpointing Pareto front when it has one; for a run made with ``--apply``, the applied
findings' predicted vs measured saving."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from dash import dcc, html

from dsprof.dashboard.figures.findings import (
    has_pareto,
    pareto_figure,
    predicted_measured_figure,
    savings_figure,
)
from dsprof.dashboard.pages.common import graph, missing, section
from dsprof.dashboard.text import fmt_bytes, fmt_saving
from dsprof.errors import DsprofError
from dsprof.findings import Evidence, Finding

PATH = "/findings"
TITLE = "Findings"


def evidence_href(ev: Evidence) -> str | None:
    """The timeline link for one piece of evidence, or None when it points at no time or op."""
    q: dict[str, Any] = {}
    if ev.start_ns is not None:
        q["start"] = ev.start_ns
    if ev.end_ns is not None:
        q["end"] = ev.end_ns
    if ev.step is not None:
        q["step"] = ev.step
    if ev.op_ids:
        q["ops"] = ",".join(str(i) for i in ev.op_ids)
    if not q:
        return None
    if ev.rank is not None:
        q["rank"] = ev.rank
    return f"/timeline?{urlencode(q)}"


def finding_card(f: Finding) -> html.Div:
    saving = []
    if f.saving_s:
        saving.append(fmt_saving(f, " per "))
    if f.saving_bytes:
        saving.append(f"{fmt_bytes(f.saving_bytes)} of peak memory")
    evidence = []
    for k, ev in enumerate(f.evidence):
        href = evidence_href(ev)
        text = ev.text + (f"  ({ev.site})" if ev.site else "")
        evidence.append(html.Li(dcc.Link(text, href=href, id=f"ev-{f.id}-{k}",
                                         className="evidence-link")
                                if href else text))
    body: list[Any] = [
        html.H4(f.title),
        html.P(f"{f.severity} | saves {', '.join(saving) or 'nothing measurable'} | "
               f"confidence {f.confidence} | {f.kind} | id {f.id}", className="finding-meta"),
    ]
    if f.explanation:
        body.append(html.P(f.explanation))
    if evidence:
        body += [html.H5("Evidence"), html.Ul(evidence)]
    if f.fix:
        body += [html.H5("Fix"), html.Pre(f.fix, className="fix")]
    if f.apply:
        knobs = " ".join(f"{k}={v}" for k, v in sorted(f.apply.items()))
        body += [html.H5("Apply without a code change"),
                 html.Pre(f"{knobs} dsprof run ...   # or: dsprof run --apply {f.id} ...")]
    if f.verify:
        body += [html.H5("Verify"), html.Pre(f.verify, className="verify")]
    if has_pareto(f):
        body.append(graph(f"pareto-{f.id}", pareto_figure(f)))
    return html.Div(body, id=f"finding-{f.id}", className=f"finding sev-{f.severity}")


def applied_comparison(src: Any) -> Any:
    """The page's data for a run made with ``--apply``: ``dsprof verify``'s comparison
    (``reports.verification``: read-only, from the runs' facts), or None for other runs.

    Raises:
        DsprofError: the baseline the manifest names cannot be read.
    """
    if src.run.manifest.applied is None:
        return None
    from dsprof.reports.verification import compare

    return compare(src.path)


def _applied(src: Any) -> Any:
    """For a run made with ``--apply``: the applied findings' predicted vs measured step time
    and peak, as ``dsprof verify`` reports them (against the baseline its manifest names)."""
    plan = src.run.manifest.applied
    if plan is None:
        return None
    titles = html.Ul([html.Li(f.get("title", f.get("id", ""))) for f in plan.findings])
    try:
        v = applied_comparison(src)
    except DsprofError as exc:
        return section("Applied in this run", titles, missing(
            f"Predicted vs measured needs the baseline run: {exc}", "applied"))
    pairs: dict[str, tuple[float, float]] = {}
    if v.baseline_step_s is not None and v.predicted_step_s is not None \
            and v.measured_saving_s is not None:
        pairs["saving_s"] = (v.baseline_step_s - v.predicted_step_s, v.measured_saving_s)
    if None not in (v.baseline_peak, v.predicted_peak, v.measured_peak):
        pairs["saving_bytes"] = (float(v.baseline_peak - v.predicted_peak),
                                 float(v.baseline_peak - v.measured_peak))
    parts: list[Any] = [titles, html.P(f"baseline: {v.baseline}")]
    if pairs:
        parts.append(graph("applied-predicted-measured", predicted_measured_figure(pairs)))
    return section("Applied in this run: predicted vs measured", *parts, sid="applied")


def layout(ctx: Any, query: dict[str, str]) -> html.Div:
    src = ctx.a
    out: list[Any] = [html.H2("Findings")]
    if src.analysis is None:
        out.append(missing(src.missing("findings"), "findings"))
        return html.Div(out)
    findings = src.findings
    wanted = query.get("id")
    if wanted:
        findings = [f for f in findings if f.id == wanted] or findings
    applied = _applied(src)
    if applied is not None:
        out.append(applied)
    if any(f.saving_s > 0 for f in src.findings):
        out.append(graph("findings-savings", savings_figure(src.findings)))
    if not findings:
        out.append(html.P("The analyzers found nothing to change."))
    out += [finding_card(f) for f in findings]
    analysis = src.analysis
    if analysis.skipped:
        out.append(section("Analyzers that did not run", html.Ul(
            [html.Li(f"{s['analyzer']}: {s['reason']}") for s in analysis.skipped])))
    if analysis.failed:
        out.append(section("Analyzers that failed", html.Ul(
            [html.Li(f"{s['analyzer']}: {s['error']}") for s in analysis.failed])))
    return html.Div(out)


def register(app: Any, ctx: Any) -> None:
    """No callbacks: evidence links are plain links to the timeline page."""
