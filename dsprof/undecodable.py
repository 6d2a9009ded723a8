"""Text the script's process gave dsprof that is not UTF-8, made writable as JSON.

Python decodes command-line arguments, paths and environment values with ``surrogateescape``:
a byte that is not UTF-8 (``script.py $'caf\\xe9'``, a directory named with byte 0xe9) becomes a
lone surrogate (``'caf\\udce9'``), which the script receives and passes back to the system as
the same byte. orjson refuses such a string ("str is not valid UTF-8: surrogates not
allowed"), and meta.json, written with the script's argv and working directory, could not be:
the session did not start and nothing was profiled. What dsprof records shows such a byte as
``\\xe9``; the script itself keeps its exact bytes.
"""

from __future__ import annotations

from typing import Any


def shown(text: str) -> str:
    """``text`` with each undecodable byte as ``\\xNN`` (any other lone surrogate as
    ``\\udNNN``); a string without surrogates is returned as it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a surrogate that stands for no byte
            return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def representable(value: Any) -> Any:
    """``value`` (dicts, lists, tuples, strings as JSON holds them) with every string, key or
    value, as :func:`shown` writes it."""
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, dict):
        return {shown(k) if isinstance(k, str) else k: representable(v)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [representable(v) for v in value]
    return value
