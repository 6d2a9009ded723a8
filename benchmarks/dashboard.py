"""Dashboard timeline at scale: first render and zoom round trip on synthetic 1 M / 10 M-span runs.

What it measures, per run size:

* server: loading the run's timeline index (DuckDB scan of ``ops``/``steps`` into sorted
  arrays, once per run), building the level-of-detail figure for the whole run and for a
  zoomed range, and the figure's JSON size (what goes over the wire);
* browser (headless Chromium at /usr/bin/chromium, through Playwright): time from navigation to
  the timeline drawn (includes loading the page's scripts and plotly.js's basic bundle); a
  zoom and a pan inside the fetched range, which the browser redraws with no request (checked:
  the page's own counter says no fetch), timed to the last redraw; and new fetches, the round
  trip ``relayout`` -> Dash callback -> server LOD -> new figure drawn, for a 1 % and a 0.01 %
  window in the middle of the run.

For scale, the note ../shared/notes/dash-in-a-real-browser.md measured shipping every event
instead: 100 k spans as plotly bars did not draw within 60 s in the same browser; its
level-of-detail prototype drew in ~0.2-0.4 s.

The synthetic run: 8 threads x 3 nesting depths of back-to-back ops (lognormal durations,
median ~20 us), 40 op names, plus one step per 10 k ops. Written as a real run directory
(meta.json + Parquet) and opened with ``dsprof.load``.

    .venv/bin/python benchmarks/dashboard.py                  # 1 M and 10 M spans
    .venv/bin/python benchmarks/dashboard.py --events 1e6 --no-browser
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
REPEATS = 3
sys.path.insert(0, str(REPO))

from dsprof.rundir import RunDir
from dsprof.schema import OPS, STEPS


def write_run(path: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    lanes = 8 * 3
    lane = rng.integers(0, lanes, n)
    dur = (rng.lognormal(10, 1.0, n)).astype(np.int64) + 100
    gap = rng.exponential(5000, n).astype(np.int64)
    order = np.argsort(lane, kind="stable")
    lane, dur, gap = lane[order], dur[order], gap[order]
    start = np.empty(n, np.int64)
    bounds = np.searchsorted(lane, np.arange(lanes + 1))
    for k in range(lanes):
        a, b = bounds[k], bounds[k + 1]
        start[a:b] = np.concatenate([[0], np.cumsum(dur[a:b] + gap[a:b])[:-1]])
    t0 = 1_700_000_000 * 10**9
    end = int((start + dur).max())
    n_steps = max(n // 10_000, 1)
    edges = np.linspace(0, end, n_steps + 1).astype(np.int64)
    # each op in the step it starts in (the last edge belongs to the last step)
    op_step = np.minimum(np.searchsorted(edges, start, "right") - 1, n_steps - 1)
    names = pa.DictionaryArray.from_arrays(
        pa.array(rng.integers(0, 40, n).astype(np.int32)),
        pa.array([f"aten::op{i}" for i in range(40)])).cast(pa.string())
    cols = {
        "rank": pa.array(np.zeros(n, np.int32)), "id": pa.array(np.arange(n)),
        "step": pa.array(op_step),
        "depth": pa.array((lane % 3).astype(np.int32)),
        "thread": pa.array((lane // 3).astype(np.int64)), "cat": pa.array(["cpu_op"] * 1).take(
            pa.array(np.zeros(n, np.int64))),
        "name": names, "start_ns": pa.array(start + t0), "dur_ns": pa.array(dur),
        "self_ns": pa.array(dur), "phase": pa.array(["forward", "backward", "optimizer"]).take(
            pa.array(rng.integers(0, 3, n))),
    }
    arrays = [cols.get(c.name, pa.nulls(n, c.type)).cast(c.type) for c in OPS.columns]
    run = RunDir.create(path)
    (path / "tables" / "ops").mkdir(parents=True)
    pq.write_table(pa.Table.from_arrays(arrays, schema=OPS.schema),
                   path / "tables" / "ops" / "rank0.parquet")
    edges = edges + t0
    steps = {"rank": np.zeros(n_steps, np.int32), "step": np.arange(n_steps),
             "start_ns": edges[:-1], "end_ns": edges[1:], "dur_ns": np.diff(edges),
             "profiled": np.ones(n_steps, bool)}
    sarrays = [pa.array(steps[c.name], c.type) if c.name in steps else pa.nulls(n_steps, c.type)
               for c in STEPS.columns]
    (path / "tables" / "steps").mkdir(parents=True)
    pq.write_table(pa.Table.from_arrays(sarrays, schema=STEPS.schema),
                   path / "tables" / "steps" / "rank0.parquet")
    run.write_meta({"source": "import", "status": "imported", "ingested": True, "ranks": [0]})


_LOCAL_JS = """async ([a, b]) => {
    // a pan/zoom inside the fetched range: plotly redraws, the page must not ask the server.
    // Timed to the last redraw it causes (Dash writes the range back into the figure and
    // plotly draws again), at most 2 s after.
    const gd = document.querySelector('#timeline-graph .js-plotly-plot');
    const stats = window.dsprofTimeline || {local: 0, fetched: 0};
    const local = stats.local, fetched = stats.fetched;
    let last = null;
    const mark = () => { last = performance.now(); };
    gd.on('plotly_afterplot', mark);
    const t0 = performance.now();
    await dsprofSetRange(a, b);
    mark();
    await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
    const settled = performance.now();
    await new Promise(r => setTimeout(r, 2000));
    gd.removeListener('plotly_afterplot', mark);
    const s = window.dsprofTimeline;
    return {ms: Math.max(last, settled) - t0, local: s.local - local,
            fetched: s.fetched - fetched};
}"""

_FETCH_JS = """async ([a, b]) => {
    // a view outside the fetched range or finer than it: the server sends a new figure
    const gd = document.querySelector('#timeline-graph .js-plotly-plot');
    const before = gd.layout.title.text;
    const t0 = performance.now();
    await dsprofSetRange(a, b);
    while (gd.layout.title.text === before) {
        if (performance.now() - t0 > 60000) return {ms: -1};
        await new Promise(r => setTimeout(r, 5));
    }
    await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
    const ms = performance.now() - t0;
    // the callback requests of this fetch, request sent to response received: the server's
    // share (the rest is the browser: plotly's redraws and Dash)
    const http = performance.getEntriesByType('resource')
        .filter(e => e.name.includes('_dash-update-component') && e.startTime >= t0)
        .reduce((m, e) => Math.max(m, e.responseEnd - e.startTime), 0);
    return {ms: ms, http_ms: http, fetched: window.dsprofTimeline.fetched};
}"""


def measure(n: int, browser) -> dict:
    from dsprof.dashboard.app import create_app
    from dsprof.dashboard.figures.timeline import timeline_figure
    from dsprof.dashboard.server import DashboardServer
    from dsprof.dashboard.source import RunSource

    tmp = Path(tempfile.mkdtemp(prefix="dsprof-dash-bench-"))
    try:
        t = time.perf_counter()
        write_run(tmp / "run", n)
        out = {"events": n, "write_s": time.perf_counter() - t}
        src = RunSource(tmp / "run")
        t = time.perf_counter()
        index = src.timeline
        out["index_s"] = time.perf_counter() - t
        out["spans"] = len(index)
        t = time.perf_counter()
        fig = timeline_figure(index, index.window())
        js = fig.to_json()
        out["full_build_s"] = time.perf_counter() - t
        out["full_kb"] = len(js) / 1024
        out["full_shapes"] = sum(len(tr.base) for tr in fig.data)
        mid, span = index.span_ns // 2, index.span_ns
        t = time.perf_counter()
        zfig = timeline_figure(index, index.window(mid, mid + span // 100))
        zjs = zfig.to_json()
        out["zoom_build_s"] = time.perf_counter() - t
        out["zoom_kb"] = len(zjs) / 1024
        if browser is not None:
            server = DashboardServer(create_app(src)).start()
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = ctx.new_page()
            try:
                page.goto(server.url + "timeline", timeout=120_000)
                page.wait_for_selector("#timeline-graph .barlayer .point", timeout=120_000)
                out["first_render_s"] = page.evaluate("() => performance.now()") / 1000
                # inside the fetched range (the whole run here: every step is profiled):
                # zoom to the middle 60 %, pan a fifth of that (a D key) and back; median
                # of REPEATS each (the machine is shared: single runs are noisy)
                za, zb, d = 0.2 * span / 1e6, 0.8 * span / 1e6, 0.12 * span / 1e6
                local: dict[str, list[float]] = {"local_zoom_s": [], "local_pan_s": []}
                for k in range(REPEATS):
                    whole = (0.0, span / 1e6) if k % 2 else (0.05 * span / 1e6,
                                                            0.95 * span / 1e6)
                    for label, (a, b) in (("local_zoom_s", whole), ("local_zoom_s", (za, zb)),
                                          ("local_pan_s", (za + d, zb + d)),
                                          ("local_pan_s", (za, zb))):
                        got = page.evaluate(_LOCAL_JS, [a, b])
                        if got["fetched"] or got["local"] != 1:
                            raise RuntimeError(f"{label}: expected a browser-only redraw, "
                                               f"got {got}")
                        local[label].append(got["ms"] / 1000)
                out.update({k: float(np.median(v)) for k, v in local.items()})
                # new fetches: a 1 % and a 0.01 % window, at places REPEATS apart
                for label, width in (("fetch1pct_s", span / 100), ("fetch001pct_s",
                                                                   span / 10_000)):
                    times, http = [], []
                    for k in range(REPEATS):
                        at = span * (0.2 + 0.25 * k)
                        got = page.evaluate(_FETCH_JS, [at / 1e6, (at + width) / 1e6])
                        if got["ms"] < 0:
                            raise RuntimeError(f"{label}: no new figure within 60 s")
                        times.append(got["ms"] / 1000)
                        http.append(got["http_ms"] / 1000)
                    out[label] = float(np.median(times))
                    out[label.replace("_s", "_http_s")] = float(np.median(http))
            finally:
                ctx.close()
                server.stop()
        src.close()
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sec(key: str, r: dict) -> str:
    v = r.get(key)
    return f"{v:.2f}s" if v is not None else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", default="1e6,1e7", help="comma-separated span counts")
    ap.add_argument("--no-browser", action="store_true", help="server side only")
    args = ap.parse_args()
    sizes = [int(float(x)) for x in args.events.split(",")]
    browser = pw = None
    if not args.no_browser and Path("/usr/bin/chromium").exists():
        from playwright.sync_api import sync_playwright

        sys.path.insert(0, str(REPO))
        from tests.browser.conftest import FLAGS

        pw = sync_playwright().start()
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
    rows = [measure(n, browser) for n in sizes]
    if browser is not None:
        browser.close()
        pw.stop()
    print(f"{'spans':>12} {'index load':>11} {'full LOD':>9} {'JSON':>8} {'shapes':>7} "
          f"{'zoom LOD':>9} {'first render':>13} {'zoom local':>11} {'pan local':>10} "
          f"{'fetch 1%':>9} {'fetch .01%':>11}")
    for r in rows:
        print(f"{r['spans']:>12,} {r['index_s']:>10.2f}s {r['full_build_s']:>8.2f}s "
              f"{r['full_kb']:>6.0f}KB {r['full_shapes']:>7,} {r['zoom_build_s']:>8.2f}s "
              f"{sec('first_render_s', r):>13} {sec('local_zoom_s', r):>11} "
              f"{sec('local_pan_s', r):>10} "
              f"{sec('fetch1pct_s', r):>9} {sec('fetch001pct_s', r):>11}")
    print(f"(browser times: median of {REPEATS}; of a fetch, the HTTP request to the callback "
          "took " + ", ".join(f"{r['spans']:,}: {sec('fetch1pct_http_s', r)} / "
                              f"{sec('fetch001pct_http_s', r)}" for r in rows)
          + f"; load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print("first render = navigation to timeline drawn, incl. loading the page's scripts and "
          "plotly.js (its basic bundle: ~0.3 s to evaluate here); zoom/pan local = inside the fetched range, redrawn in "
          "the browser with no request (to the last redraw); fetch = view outside the fetched "
          "range or finer than it: relayout -> server LOD -> redrawn. Aims: first render < "
          "1.5 s at 1 M, local < 0.1 s, fetch < 0.3 s.")

if __name__ == "__main__":
    main()
