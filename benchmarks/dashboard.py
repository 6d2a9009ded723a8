"""Dashboard timeline at scale: first render and zoom round trip on synthetic 1 M / 10 M-span runs.

What it measures, per run size:

* server (wall and CPU time): loading the run's timeline index (DuckDB scan of ``ops``/``steps``
  into sorted arrays, once per run), the Overview's per-step breakdown
  (``dsprof.metrics.step_breakdown``, also ``summary --json``'s), building the level-of-detail
  figure for the whole run and for a zoomed range, and the figure's JSON size (what goes over
  the wire);
* browser (headless Chromium at /usr/bin/chromium, through Playwright), on a freshly opened run
  whose background load (index, summary, step breakdown) starts with the server, as
  ``dsprof dashboard`` does: time from navigation to the timeline drawn (includes loading the
  page's scripts and plotly.js's basic bundle); a
  zoom and a pan inside the fetched range, which the browser redraws with no request (checked:
  the page's own counter says no fetch), timed to the last redraw; and new fetches, the round
  trip ``relayout`` -> Dash callback -> server LOD -> new figure drawn, for a 1 % and a 0.01 %
  window in the middle of the run. Each with its CPU time: the page's main thread (Chrome's
  ``ThreadTime``) and this process (the server), since on a shared machine wall time follows
  the load; the load average is printed.

For scale, the note ../shared/notes/dash-in-a-real-browser.md measured shipping every event
instead: 100 k spans as plotly bars did not draw within 60 s in the same browser; its
level-of-detail prototype drew in ~0.2-0.4 s.

The synthetic run: 8 threads x 3 nesting depths of back-to-back ops (lognormal durations,
median ~20 us), 40 op names, plus one step per 10 k ops, every op in the step it starts in and
none with a parent (the step breakdown's worst case: no nested op is left out of its sweep).
Written as a real run directory (meta.json + Parquet) and opened with ``dsprof.load``.

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
    from dsprof.metrics.step_breakdown import step_breakdown

    tmp = Path(tempfile.mkdtemp(prefix="dsprof-dash-bench-"))
    try:
        t = time.perf_counter()
        write_run(tmp / "run", n)
        out = {"events": n, "write_s": time.perf_counter() - t}
        src = RunSource(tmp / "run")
        with timed(out, "index"):
            index = src.timeline
        out["spans"] = len(index)
        with timed(out, "breakdown"):  # the Overview's per-step breakdown (summary --json's)
            step_breakdown(src.run)
        with timed(out, "full_build"):
            fig = timeline_figure(index, index.window())
            js = fig.to_json()
        out["full_kb"] = len(js) / 1024
        out["full_shapes"] = sum(len(tr.base) for tr in fig.data)
        mid, span = index.span_ns // 2, index.span_ns
        with timed(out, "zoom_build"):
            zfig = timeline_figure(index, index.window(mid, mid + span // 100))
            zjs = zfig.to_json()
        out["zoom_kb"] = len(zjs) / 1024
        if browser is not None:
            # a new source, as `dsprof dashboard` opens one: its background load (timeline,
            # summary, step breakdown) runs while the first page loads
            src.close()
            src = RunSource(tmp / "run")
            server = DashboardServer(create_app(src)).start()
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = ctx.new_page()
            # the CPU time of the page's main thread (Chrome's ThreadTime), which a loaded
            # machine does not inflate as it does wall time
            cdp = ctx.new_cdp_session(page)
            cdp.send("Performance.enable")

            def page_cpu() -> float:
                return next(m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]
                            if m["name"] == "ThreadTime")
            try:
                cpu0 = time.process_time()
                page.goto(server.url + "timeline", timeout=120_000)
                page.wait_for_selector("#timeline-graph .barlayer .point", timeout=120_000)
                out["first_render_s"] = page.evaluate("() => performance.now()") / 1000
                out["first_render_cpu_s"] = page_cpu()
                out["first_render_server_cpu_s"] = time.process_time() - cpu0
                # the rest is measured once the background load is done, as a person working
                # in the page a little later meets it (and so its CPU does not count here)
                src.warm().join()
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
                    times, http, cpu, server_cpu = [], [], [], []
                    for k in range(REPEATS):
                        at = span * (0.2 + 0.25 * k)
                        b0, c0 = page_cpu(), time.process_time()
                        got = page.evaluate(_FETCH_JS, [at / 1e6, (at + width) / 1e6])
                        if got["ms"] < 0:
                            raise RuntimeError(f"{label}: no new figure within 60 s")
                        times.append(got["ms"] / 1000)
                        http.append(got["http_ms"] / 1000)
                        cpu.append(page_cpu() - b0)
                        server_cpu.append(time.process_time() - c0)
                    out[label] = float(np.median(times))
                    out[label.replace("_s", "_http_s")] = float(np.median(http))
                    out[label.replace("_s", "_cpu_s")] = float(np.median(cpu))
                    out[label.replace("_s", "_server_cpu_s")] = float(np.median(server_cpu))
                # a pan inside the last fetched figure (the 0.01 % view: the most bars a
                # fetch sends), a fifth of the view each way: plotly redraws every bar it holds
                a, b = page.evaluate("() => document.querySelector('#timeline-graph "
                                     ".js-plotly-plot')._fullLayout.xaxis.range")
                d = (b - a) / 5
                pans = []
                for k in range(REPEATS):
                    c0 = page_cpu()
                    got = page.evaluate(_LOCAL_JS, [a + d, b + d] if k % 2 == 0 else [a, b])
                    if got["fetched"] or got["local"] != 1:
                        raise RuntimeError(f"pan in a fetched figure: expected a browser-only "
                                           f"redraw, got {got}")
                    pans.append((got["ms"] / 1000, page_cpu() - c0))
                out["fetched_pan_s"] = float(np.median([p[0] for p in pans]))
                out["fetched_pan_cpu_s"] = float(np.median([p[1] for p in pans]))
                out["fetched_bars"] = page.evaluate(
                    "() => document.querySelectorAll('#timeline-graph .barlayer .point').length")
            finally:
                ctx.close()
                server.stop()
        src.close()
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class timed:
    """Wall and CPU time (this process) of a block, as ``<label>_s`` and ``<label>_cpu_s``."""

    def __init__(self, out: dict, label: str):
        self.out, self.label = out, label

    def __enter__(self) -> None:
        self.t, self.c = time.perf_counter(), time.process_time()

    def __exit__(self, *exc: object) -> None:
        self.out[f"{self.label}_s"] = time.perf_counter() - self.t
        self.out[f"{self.label}_cpu_s"] = time.process_time() - self.c


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
    load0 = os.getloadavg()
    rows = [measure(n, browser) for n in sizes]
    load1 = os.getloadavg()
    if browser is not None:
        browser.close()
        pw.stop()
    print("server side (wall / CPU of this process; 2 DuckDB threads can make CPU > wall):")
    print(f"{'spans':>12} {'index load':>13} {'step breakdown':>15} {'full LOD':>12} "
          f"{'JSON':>6} {'shapes':>7} {'zoom LOD':>12}")
    for r in rows:
        print(f"{r['spans']:>12,} {pair('index', r):>13} {pair('breakdown', r):>15} "
              f"{pair('full_build', r):>12} {r['full_kb']:>4.0f}KB {r['full_shapes']:>7,} "
              f"{pair('zoom_build', r):>12}")
    if browser is not None:
        print(f"browser (median of {REPEATS}; [cpu] = CPU time: the page's main thread "
              "(Chrome's ThreadTime) + the server's process; http = request sent to response "
              "received):")
        print(f"{'spans':>12} {'first render [cpu]':>22} {'zoom local':>11} {'pan local':>10} "
              f"{'fetch 1% [cpu] (http)':>29} {'fetch .01% [cpu] (http)':>29}")
        for r in rows:
            first = (f"{sec('first_render_s', r)} [{r['first_render_cpu_s']:.2f}+"
                     f"{r['first_render_server_cpu_s']:.2f}]")
            print(f"{r['spans']:>12,} {first:>22} "
                  f"{sec('local_zoom_s', r):>11} {sec('local_pan_s', r):>10} "
                  f"{fetch('fetch1pct', r):>29} {fetch('fetch001pct', r):>29}")
        for r in rows:
            print(f"{r['spans']:>12,}: pan inside the 0.01 % fetched figure "
                  f"({r['fetched_bars']:,} bars): {r['fetched_pan_s']:.2f}s "
                  f"[{r['fetched_pan_cpu_s']:.2f} page CPU, incl. the 2 s idle wait]")
    print(f"load average (1 min) {load0[0]:.1f} at the start, {load1[0]:.1f} at the end, on "
          f"{os.cpu_count()} CPUs")
    print("first render = navigation to timeline drawn, incl. loading the page's scripts and "
          "plotly.js's basic bundle, with the dashboard's background load running; zoom/pan "
          "local = inside the fetched range, redrawn in the browser with no request (to the "
          "last redraw); fetch = view outside the fetched range or finer than it: relayout -> "
          "server LOD -> redrawn. Aims: first render < 1.5 s at 1 M, local < 0.1 s, fetch < "
          "0.3 s.")


def pair(label: str, r: dict) -> str:
    return f"{r[label + '_s']:.2f}/{r[label + '_cpu_s']:.2f}s"


def fetch(label: str, r: dict) -> str:
    if r.get(label + "_s") is None:
        return "-"
    return (f"{r[label + '_s']:.2f}s [{r[label + '_cpu_s']:.2f}+"
            f"{r[label + '_server_cpu_s']:.2f}] ({r[label + '_http_s']:.2f})")


if __name__ == "__main__":
    main()
