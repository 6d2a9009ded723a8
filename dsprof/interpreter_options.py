"""The interpreter's own options of a ``dsprof run`` (``python -W error -X dev -m dsprof run``),
recorded in meta.json ``interpreter_options`` and given back to ``dsprof verify``'s reruns;
the ranks of ``dsprof run --nproc-per-node`` and ``dsprof tune``'s runs are started with the
options of the process that starts them.

Verify reran ``[sys.executable, "-m", "dsprof", "run", ...]``: a run made under
``python -W error`` was verified by a script whose ``sys.warnoptions`` was ``[]``, a different
program (a warning the run raised as an error passed in the rerun). A run directory is data
(docs/security.md), so a rerun gets back only Python's own options from an allow-list, each
with a value that loads nothing: ``-W`` filters whose category is a builtin warning (a dotted
category makes ``warnings`` import its module), ``-X`` options that only switch a behaviour
(not ``pycache_prefix=PATH`` or ``presite=MODULE``), and the flags without a value. Never
``-c``, ``-m`` or a word that is not an option.

Light module: no torch, read by the CLI's verify, the launcher and the session header.
"""

from __future__ import annotations

import re
import sys

# flags that take no value; a word may bundle them (-OO, -bb, -Es)
_FLAGS = frozenset("OBuEsIPbRq")
# -X names that switch a behaviour and load nothing; a value, where given, a plain word
_X_NAMES = frozenset(("dev", "utf8", "importtime", "tracemalloc", "faulthandler",
                      "showrefcount", "warn_default_encoding", "no_debug_ranges",
                      "frozen_modules", "int_max_str_digits", "perf", "perf_jit", "cpu_count",
                      "gil", "thread_inherit_context", "context_aware_warnings"))
_X_VALUE = re.compile(r"^[A-Za-z0-9_]*$")
_W_ACTION = ("default", "always", "all", "ignore", "module", "once", "error")
_W_FIELD = re.compile(r"^[A-Za-z0-9_ .*\\^$?+\[\]-]*$")  # message and module are regexes
_W_CATEGORY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$|^$")  # a builtin: no module to import
MAX_WORDS = 64


def split_orig_argv(orig: list[str], own: list[str]) -> list[str] | None:
    """The interpreter and its options at the head of ``orig`` (``sys.orig_argv``), before
    dsprof's entry and ``own`` (dsprof's arguments, ``sys.argv[1:]``); None where ``own`` is
    not its tail (dsprof called from Python, not as the process's command line)."""
    if len(orig) < len(own) + 2 or orig[len(orig) - len(own):] != own:
        return None
    head = orig[:len(orig) - len(own)]  # the interpreter, its flags, dsprof's entry
    last, before = head[-1], head[-2]
    if before in ("-m", "-c"):  # python -m dsprof
        return head[:-2]
    if last.startswith("-m"):  # python -mdsprof
        return head[:-1]
    if before.startswith("-") and not before.startswith("--") and before.endswith("m"):
        return [*head[:-2], before[:-1]]  # python -Im dsprof: -I stays
    return head[:-1]  # the dsprof command (its script) or python .../dsprof/__main__.py


def of_this_process() -> list[str]:
    """The options this interpreter was started with, as given (``["-W", "error"]``), where
    dsprof's command line is the process's; else none."""
    head = split_orig_argv(list(sys.orig_argv), sys.argv[1:])
    return head[1:] if head else []


def allowed(recorded: object) -> list[str]:
    """The options of ``recorded`` (meta.json's, untrusted) that a rerun may be given: those of
    the allow-list, each as one word (``-Werror``, ``-Xdev``); anything else is dropped."""
    if not isinstance(recorded, list) or len(recorded) > MAX_WORDS:
        return []
    words = [w for w in recorded if isinstance(w, str)]
    if len(words) != len(recorded):
        return []
    out: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("-W", "-X"):  # the value is the next word
            value = words[i + 1] if i + 1 < len(words) else None
            i += 2
            if value is not None and _value_ok(word[1], value):
                out.append(word + value)
            continue
        i += 1
        if _one_word_ok(word):
            out.append(word)
    return out


def _one_word_ok(word: str) -> bool:
    """``-Werror``, ``-Xdev``, or flags without a value (``-O``, ``-bb``, ``-Es``)."""
    if word[:2] in ("-W", "-X"):
        return _value_ok(word[1], word[2:])
    return len(word) > 1 and word[0] == "-" and set(word[1:]) <= _FLAGS


def _value_ok(option: str, value: str) -> bool:
    if option == "X":
        name, _, setting = value.partition("=")
        return name in _X_NAMES and _X_VALUE.match(setting) is not None
    fields = value.split(":")
    if len(fields) > 5 or not all(_W_FIELD.match(f) for f in fields):
        return False
    action = fields[0]
    if action and not any(a.startswith(action) for a in _W_ACTION):
        return False
    return len(fields) < 3 or _W_CATEGORY.match(fields[2]) is not None
