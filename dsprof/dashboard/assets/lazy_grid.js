// Stand-in for dash_ag_grid.AgGrid until its bundle is loaded (dsprof/dashboard/page_scripts.py
// leaves the 1.3 MB bundle out of every page so that pages without a grid never evaluate it).
// The first grid a page renders adds the bundle's <script> (Dash serves it at its usual URL;
// the bundle finds its own lazy chunks from that script's src), then renders the real grid
// with the same props. The stand-in keeps the grid's id, class and style while it loads.
(function () {
    if (window.dash_ag_grid) return;  // the bundle is in the page after all: nothing to do
    let loading = null;

    function loadBundle() {
        if (!loading) {
            loading = new Promise(function (resolve, reject) {
                const config = JSON.parse(document.getElementById("_dash-config").textContent);
                const prefix = config.requests_pathname_prefix || "/";
                const script = document.createElement("script");
                script.src = prefix + "_dash-component-suites/dash_ag_grid/dash_ag_grid.min.js";
                script.onload = function () { resolve(window.dash_ag_grid.AgGrid); };
                script.onerror = function () {
                    loading = null;
                    reject(new Error("dsprof: could not load the AG Grid bundle"));
                };
                document.head.appendChild(script);
            });
        }
        return loading;
    }

    function LazyAgGrid(props) {
        const React = window.React;
        const [Real, setReal] = React.useState(null);
        React.useEffect(function () {
            let live = true;
            loadBundle().then(function (grid) { if (live) setReal(function () { return grid; }); });
            return function () { live = false; };
        }, []);
        if (Real) return React.createElement(Real, props);
        return React.createElement("div", {
            id: props.id, className: "dsprof-grid-loading " + (props.className || ""),
            style: props.style,
        });
    }

    window.dash_ag_grid = {AgGrid: LazyAgGrid};
})();
