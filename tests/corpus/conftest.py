"""Known gaps of the corpus: each is a check that asserts the right behaviour and fails today,
marked ``xfail(strict=True)`` with its cause, so the day it passes the suite says so.
docs/compatibility.md lists them under "Open"."""

from __future__ import annotations

import pytest

KNOWN_GAPS = {
    ("test_flops_match_flop_counter", "manual_update"):
        "no optimizer and fewer than 64 backward() calls: the backward() step source is decided "
        "at exit, so the window stays 'unstepped' and every op of the capture is in step 0 "
        "(ingest would have to give ops their step from session.json's boundaries)",
    ("test_ops_are_attributed_to_the_models_modules", "gan"):
        "two optimizers: the first to step (the discriminator's) marks the boundaries, so a "
        "window starts inside an iteration and the generator's backward ops, whose forward ran "
        "before the window, get no module (91 % of FLOPs attributed, 99 % asked)",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or "corpus" not in callspec.params:
            continue
        reason = KNOWN_GAPS.get((item.originalname, callspec.params["corpus"].name))
        if reason is not None:
            item.add_marker(pytest.mark.xfail(strict=True, reason=reason))
