// Timeline pan/zoom in the browser: decides, for each range change, whether the server must
// be asked for a new level-of-detail figure, and sends it only then.
//
// The server sends the view plus half a view on each side ("fetched", in layout.meta). Plotly
// has already redrawn a range change by the time this runs, from the bars it holds, so a view
// that stays inside the fetched range, at a zoom the drawing is faithful at, needs nothing
// more: no request is made. The server is asked only when the view leaves the fetched range,
// when it needs finer detail than was sent (a pixel of the new view is less than meta.res_ms:
// aggregated bins, widened slivers or unlabelled bars would show too wide), or on a reset
// (double-click).
// window.dsprofTimeline counts both outcomes (tests and benchmarks/dashboard.py read it).
// Every change is routed exactly once, whichever way it came: dsprofSetRange (keys, links,
// tests) routes before it redraws; a drag or scroll through the relayout listener, bound as
// soon as a graph appears; a change made before that is routed when the listener is bound.
(function () {
    const PLOT_PX = 1500;   // figures/timeline.py PLOT_PX: the server's idea of a pixel
    const RANGE = /^xaxis[0-9]*[.]range(\[0\])?$/;

    function asked(r) {
        if (!r) return null;
        for (const k in r) {
            if (/^xaxis[0-9]*[.]autorange$/.test(k) && r[k]) return "reset";
            if (!RANGE.test(k)) continue;
            if (k.endsWith("[0]")) {
                const other = r[k.replace("[0]", "[1]")];
                if (other !== undefined) return [Number(r[k]), Number(other)];
            } else if (Array.isArray(r[k]) && r[k].length === 2) {
                return [Number(r[k][0]), Number(r[k][1])];
            }
        }
        return null;
    }

    function route(relayout) {
        const noUpdate = window.dash_clientside.no_update;
        const stats = window.dsprofTimeline = window.dsprofTimeline || {local: 0, fetched: 0};
        const range = asked(relayout);
        if (range === null) return noUpdate;
        const gd = document.querySelector("#timeline-graph .js-plotly-plot");
        const meta = gd && gd.layout && gd.layout.meta;
        if (range !== "reset" && meta && meta.fetched) {
            const [a, b] = range, [f0, f1] = meta.fetched;
            const px = (b - a) / PLOT_PX;
            if (a >= f0 && b <= f1 && px >= (meta.res_ms || 0)) {
                stats.local += 1;
                return noUpdate;
            }
        }
        stats.fetched += 1;
        return relayout;
    }

    // Ask the server for a figure: the range goes to the "timeline-range" store, whose
    // callback fetches.
    function send(out) {
        window.dash_clientside.set_props("timeline-range", {data: out});
    }

    // The range setRange has already routed: its relayout event must not count (or fetch)
    // a second time.
    let routed = null;

    function same(r, s) {
        if (!Array.isArray(r) || !s) return false;
        const eps = 1e-9 * Math.max(Math.abs(s[1] - s[0]), 1e-9);
        return Math.abs(r[0] - s[0]) <= eps && Math.abs(r[1] - s[1]) <= eps;
    }

    // Show [a, b] (ms). Routed here, so it never depends on a listener being bound yet. A
    // range the server must send is only sent: the figure it answers with is drawn at that
    // range, and drawing the old figure there first would cost the page a whole redraw (as
    // long as drawing the new one) for bars about to be replaced.
    function setRange(a, b) {
        const gd = document.querySelector("#timeline-graph .js-plotly-plot");
        if (!gd || !window.Plotly) return null;
        hook();
        const out = route({"xaxis.range": [a, b]});
        if (out !== window.dash_clientside.no_update) {
            send(out);
            return Promise.resolve(gd);
        }
        routed = [a, b];
        // every x axis: with the memory row the two are matched and Dash writes the relayout
        // back into the figure, where a stale axis would win again
        const update = {};
        for (const k in gd.layout) {
            if (/^xaxis[0-9]*$/.test(k)) update[k + ".range"] = [a, b];
        }
        // as a drag does: with a constant uirevision, plotly keeps a GUI range when Dash
        // redraws the same figure (e.g. after adding the launch arrow); a plain relayout
        // would snap back to the figure's range
        const relayout = window.Plotly._guiRelayout || window.Plotly.relayout;
        return relayout(gd, update);
    }

    // This page listens to the relayout event itself, in place of dcc.Graph: dcc.Graph writes
    // every relayout back into its figure prop, and that makes plotly draw the whole plot a
    // second time (measured: 30-70 ms for plotly's own redraw, then 60-130 ms more).
    function onRelayout(relayout) {
        const range = asked(relayout);
        if (routed !== null && same(range, routed)) {
            routed = null;  // setRange routed it already
            return;
        }
        const out = route(relayout);
        if (out !== window.dash_clientside.no_update) send(out);
    }

    // dcc.Graph binds its listeners once, after its first draw, and a graph plotly purged and
    // redrew (a new page, e.g. from an evidence link) has lost every listener: replace them
    // with this page's. Run on every DOM change (a new graph is routed before a person or a
    // key can move it) and every 100 ms.
    function hook() {
        const gd = document.querySelector("#timeline-graph .js-plotly-plot");
        if (!gd || !gd._ev || !window.dash_clientside || !window.dash_clientside.set_props) {
            return;
        }
        const bound = gd._ev.listeners("plotly_relayout");
        if (bound.length === 1 && bound[0] === onRelayout) return;
        const fresh = !bound.includes(onRelayout);
        gd.removeAllListeners("plotly_relayout");
        gd.on("plotly_relayout", onRelayout);
        // A range change made before this listener was bound went unrouted (nothing would
        // fetch for it, ever): the axis no longer shows the view the figure was drawn for.
        const meta = gd.layout && gd.layout.meta;
        const key = Object.keys(gd.layout || {}).find(
            k => /^xaxis[0-9]*$/.test(k) && gd.layout[k] && gd.layout[k].range);
        const axis = key && gd._fullLayout && gd._fullLayout[key];
        if (fresh && meta && meta.view && axis && axis.range
                && !same([Number(axis.range[0]), Number(axis.range[1])], meta.view)) {
            onRelayout({"xaxis.range": [Number(axis.range[0]), Number(axis.range[1])]});
        }
    }
    setInterval(hook, 100);
    new MutationObserver(hook).observe(document.documentElement, {childList: true,
                                                                  subtree: true});

    window.dash_clientside = Object.assign({}, window.dash_clientside);
    window.dash_clientside.dsprof_timeline = {route: route};
    window.dsprofSetRange = setRange;
})();
