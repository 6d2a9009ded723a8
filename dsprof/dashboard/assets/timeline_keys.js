// Keyboard navigation on the Timeline page, as in Perfetto and chrome://tracing:
// W / S zoom in / out around the centre, A / D pan left / right (a fifth of the view).
// Each key is an ordinary x-range change, handled as a drag is (timeline_view.js: in the
// browser inside the fetched range, else by the server).
(function () {
    const STEP = 0.2;
    document.addEventListener("keydown", function (ev) {
        if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
        const tag = (ev.target && ev.target.tagName) || "";
        if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") return;
        const key = ev.key.toLowerCase();
        if (!"wasd".includes(key) || key.length !== 1) return;
        const gd = document.querySelector("#timeline-graph .js-plotly-plot");
        if (!gd || !gd.layout || !window.Plotly) return;
        // the full layout: with the memory row, the two x axes are matched and a relayout
        // of one leaves the other's layout.range as it was
        const axis = gd._fullLayout && gd._fullLayout.xaxis;
        if (!axis || !axis.range) return;
        let a = Number(axis.range[0]), b = Number(axis.range[1]);
        const w = b - a, c = (a + b) / 2;
        if (key === "w") { a = c - w * (1 - STEP) / 2; b = c + w * (1 - STEP) / 2; }
        if (key === "s") { a = c - w / (1 - STEP) / 2; b = c + w / (1 - STEP) / 2; }
        if (key === "a") { a -= w * STEP; b -= w * STEP; }
        if (key === "d") { a += w * STEP; b += w * STEP; }
        ev.preventDefault();
        window.dsprofSetRange(a, b);  // timeline_view.js
    });
})();
