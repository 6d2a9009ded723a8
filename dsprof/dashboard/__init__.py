"""The Dash dashboard: ``dsprof dashboard RUN [RUN_B]``.

Layers, each importable on its own (nothing here is imported by ``import dsprof``):

* :mod:`~dsprof.dashboard.source` reads one run for the pages: the tables present, the
  analyzers' outputs (``summarize``, findings.json) and what is missing with the command that
  collects it.
* :mod:`~dsprof.dashboard.timeline` keeps a run's timeline as sorted numpy arrays and answers a
  visible range with at most ~2,000 shapes (exact spans, or per-lane busy runs plus the longest
  spans), so a 10 M-event run stays interactive.
* ``figures/``: pure functions from tables (or analyzer results) to plotly figures, unit-tested
  without a browser.
* ``pages/``: Dash layouts and callbacks that only wire figures to inputs.
* :mod:`~dsprof.dashboard.app` builds the app, :mod:`~dsprof.dashboard.server` serves it on
  127.0.0.1 (a free port when asked for port 0) and stops it.
"""
