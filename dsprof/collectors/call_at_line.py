"""Call a torch entry point as if the script's own line called it, for the warnings it gives.

A wrapper of dsprof's around a torch entry point (``float(t)``, ``t.item()``; see
``host_sync``) is a Python frame. A warning torch's C++ code gives inside the call is put at
the top Python frame, which is then the wrapper: ``float()`` of a tensor that requires grad
("Converting a tensor with requires_grad=True to a scalar ...") and every conversion under
``torch.jit.trace`` (``TracerWarning``) would read ``dsprof/collectors/host_sync.py:NNN`` where
the plain run says ``train.py:40``, and Python's once-per-location filter would show one
warning for all of the script's lines. So when a call may warn, the wrapper runs it from a
one-line code object compiled under the caller's file name at the caller's line and executed
in the caller's globals: the warning gets the plain run's file, line, module and
``__warningregistry__``, so the same filters show the same warnings. Only calls that may warn
take this path (a dict lookup and an ``exec``: ~0.9 us more, ``benchmarks/host_sync_cost.py``);
the code text is dsprof's own, only the file name and line number come from the live frame.
"""

from __future__ import annotations

from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

from dsprof.collectors.compile_watch import invisible_code_to_dynamo
from dsprof.frames import OWN_CODES

_LINE = "_dsprof_out = _dsprof_call(*_dsprof_args, **_dsprof_kwargs)"
# (file, line) -> the code that makes the call there. A script converts from a handful of
# lines; past the bound (generated code) a call is made directly, its warning at the wrapper
_CODES: dict[tuple[str, int], CodeType] = {}
_MAX_CODES = 4096


def call_at_line(frame: FrameType, call: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> Any:
    """``call(*args, **kwargs)`` as if ``frame``'s current line made it."""
    code = _code_at(frame.f_code.co_filename, frame.f_lineno)
    if code is None:
        return call(*args, **kwargs)
    scope = {"_dsprof_call": call, "_dsprof_args": args, "_dsprof_kwargs": kwargs}
    exec(code, frame.f_globals, scope)  # noqa: S102 - dsprof's own line, at the caller's place
    return scope["_dsprof_out"]


def is_own_code(code: CodeType) -> bool:
    """Whether ``code`` is one of the lines this module runs (a traceback leaves it out: it
    repeats the caller's line)."""
    return code in OWN_CODES


def _code_at(filename: str, lineno: int | None) -> CodeType | None:
    if not lineno or lineno < 1:
        return None
    key = (filename, lineno)
    code = _CODES.get(key)
    if code is None and len(_CODES) < _MAX_CODES:
        try:
            code = compile("\n" * (lineno - 1) + _LINE, filename, "exec", dont_inherit=True)
        except (ValueError, SyntaxError, MemoryError):  # a file name compile() refuses
            return None
        # Dynamo never compiles this frame (after a graph break the eager rest of a compiled
        # function still runs under Dynamo's frame callback); what it calls stays Dynamo's
        invisible_code_to_dynamo(code)
        _CODES[key] = code
        OWN_CODES.add(code)
    return code
