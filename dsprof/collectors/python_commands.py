"""What a child's command line runs: which are Python (an interpreter, a launcher such as
``torchrun``), and whether torch's own code is the one starting it. Read by
:mod:`.python_children` at a child's start, and by the summary's note."""

from __future__ import annotations

import os
import re
import shlex
import sys
from types import FrameType
from typing import Any

from dsprof.frames import DSPROF_DIR, standard_library
from dsprof.launchers import LAUNCHER_MODULES, LAUNCHER_SCRIPTS

_PYTHON_NAME = re.compile(r"(python|pypy)[0-9.]*[dmu]?(\.exe)?")
# what a shell would read otherwise than as words (a string command run by the shell)
_SHELL_SYNTAX = re.compile(r"[|&;<>()$`*?\[\]{}~!\\\n]")
# torch.compile's compile and autotune workers (torch/_inductor/compile_worker/__main__.py)
LIBRARY_CHILDREN = ("torch/_inductor/", "torch._inductor")


def command_words(args: Any) -> list[str] | None:
    """A ``Popen`` command as words: a list as given, a string split as the shell would when it
    holds nothing but words (``"python train.py"``); None when it is not read so."""
    if isinstance(args, (str, bytes, os.PathLike)):
        text = os.fsdecode(args)
        if _SHELL_SYNTAX.search(text):
            return None
        try:
            words = shlex.split(text)
        except ValueError:
            return None
    else:
        try:
            words = [os.fsdecode(a) for a in args]
        except TypeError:
            return None
    return words or None


def python_launcher(program: str, words: list[str]) -> str | None:
    """The launcher ``words`` start (``torchrun``, ``accelerate``, ...), "" for any other
    Python interpreter, None when ``program`` runs no Python that dsprof knows."""
    name = os.path.basename(program)
    if name in LAUNCHER_SCRIPTS:
        return LAUNCHER_SCRIPTS[name]
    if program != sys.executable and not _PYTHON_NAME.fullmatch(name):
        return None
    module = python_module(words)
    return LAUNCHER_MODULES.get(module or "", "")


def python_module(words: list[str]) -> str | None:
    """The module of ``python [OPTIONS] -m MODULE ...``, else None."""
    for i, word in enumerate(words[1:], start=1):
        if word == "-m":
            return words[i + 1] if i + 1 < len(words) else None
        if not word.startswith("-") or word in ("-c", "--"):
            return None
    return None


def started_by_torch() -> bool:
    """Whether the code that starts the child now is torch's own: the first frame of the stack
    outside dsprof and the standard library (``subprocess.run``, asyncio) lies in torch's
    package. torch.compile's ``cpu_vec_isa.py`` runs ``python -c "...cdll.LoadLibrary(...)"``
    probes (10 of 16 recorded children of a 20-step compiled MLP), words that name no
    ``torch/_inductor``."""
    torch_dir = _torch_dir()
    if torch_dir is None:
        return False
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not (filename.startswith((DSPROF_DIR, "<frozen")) or standard_library(filename)):
            return filename.startswith(torch_dir)
        frame = frame.f_back
    return False


_torch_dirs: list[str] = []  # torch's package folder, once torch is imported


def _torch_dir() -> str | None:
    if not _torch_dirs:
        torch = sys.modules.get("torch")
        filename = getattr(torch, "__file__", None)
        if not isinstance(filename, str):
            return None  # not (yet) imported: no torch code can be starting the child
        _torch_dirs.append(os.path.dirname(os.path.abspath(filename)) + os.sep)
    return _torch_dirs[0]
