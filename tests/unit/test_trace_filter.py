"""DSPROF_TRACE_FILTER: parsing and matching."""

from __future__ import annotations

import pytest

from dsprof.collectors.trace_filter import TraceFilter
from dsprof.errors import ConfigError


def test_empty_filter_selects_everything():
    f = TraceFilter.parse("  ")
    assert f.everything and f.step_selected(123)
    assert f.compile()("aten.mm.default", "")


def test_kinds_narrow_and_terms_of_one_kind_widen():
    # GIVEN two op terms and a module term
    m = TraceFilter.parse("op:mm, op:addmm module:blocks.1").compile()
    # THEN an op matching either op term inside the module passes, others do not
    assert m("aten.mm.default", "LM.blocks.1.mlp")
    assert m("aten.addmm.default", "LM.blocks.1")
    assert not m("aten.add.Tensor", "LM.blocks.1")      # op not selected
    assert not m("aten.mm.default", "LM.blocks.0.mlp")  # module not selected


def test_globs_match_the_whole_name_and_bare_words_are_ops():
    m = TraceFilter.parse("aten.*mm.default").compile()
    assert m("aten.addmm.default", "") and m("aten.mm.default", "")
    assert not m("aten.mm.out", "")
    assert TraceFilter.parse("relu").compile()("aten.relu_.default", "x")


def test_exclusions():
    m = TraceFilter.parse("!op:view !module:*.embed").compile()
    assert not m("aten.view.default", "M")
    assert not m("aten.mm.default", "M.embed")
    assert m("aten.mm.default", "M.head")


@pytest.mark.parametrize("text, inside, outside", [
    ("step:3", [3], [2, 4]), ("step:2-4", [2, 3, 4], [1, 5]), ("step:5-", [5, 900], [4]),
    ("step:1 step:7", [1, 7], [2, 6])])
def test_step_ranges(text, inside, outside):
    f = TraceFilter.parse(text)
    assert all(f.step_selected(s) for s in inside)
    assert not any(f.step_selected(s) for s in outside)


@pytest.mark.parametrize("text", ["step:x", "step:5-2", "layer:3", "op:", "step:-3"])
def test_bad_terms_are_config_errors(text):
    with pytest.raises(ConfigError, match="DSPROF_TRACE_FILTER"):
        TraceFilter.parse(text)
