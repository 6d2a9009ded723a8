"""Strings with bytes that are not UTF-8 as meta.json holds them (dsprof/undecodable.py)."""

from __future__ import annotations

import orjson

from dsprof.undecodable import representable, shown


def test_an_undecodable_byte_is_shown_as_its_escape_and_other_text_is_kept():
    # GIVEN an argument Python decoded with surrogateescape (byte 0xe9), a lone surrogate that
    # stands for no byte, and text that is UTF-8 already
    # THEN the byte reads as \xe9, the surrogate as its escape, the rest unchanged
    assert shown("caf\udce9") == "caf\\xe9"
    assert shown("x\ud800") == "x\\ud800"
    assert shown("café ✓") == "café ✓"


def test_a_document_with_such_strings_in_keys_lists_and_values_can_be_written():
    # GIVEN a meta.json document whose argv, cwd and environment hold byte 0xe9
    doc = {"argv": ("s.py", "caf\udce9"), "cwd": "/d\udce9", "env": {"K\udce9": "v"}, "n": 1}
    # THEN JSON can hold it (orjson refused: "str is not valid UTF-8")
    assert orjson.loads(orjson.dumps(representable(doc))) == {
        "argv": ["s.py", "caf\\xe9"], "cwd": "/d\\xe9", "env": {"K\\xe9": "v"}, "n": 1}
