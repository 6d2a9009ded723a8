"""The summary's note for a run whose training went to a Python child process: the script saw
no training step, and a Python process it started (meta.json ``python_children``,
:mod:`dsprof.collectors.python_children`) ran long enough to have trained. The note names the
child and the command that profiles it: ``dsprof run train.py ARGS`` for
``python train.py ARGS``, ``dsprof run --nproc-per-node N train.py`` for a torchrun of N
processes, the launcher's own ``-m dsprof run`` for Accelerate and DeepSpeed; the same when
the script dsprof ran is itself such a launcher (``dsprof run $(which torchrun) ...``).

Every word comes from a run directory (docs/security.md): each is shell-quoted, a count is
used only where it is a positive integer, and the line is written on one line.
"""

from __future__ import annotations

import os
import shlex
from typing import Any

from dsprof.launchers import LAUNCHER_MODULES, LAUNCHER_SCRIPTS
from dsprof.manifest import Target
from dsprof.render.safe_text import one_line

MEANINGFUL_S = 2.0
"""A child that ran less is a probe (``python --version``, a short helper), not a training:
a CPU training child that imports torch and steps an MLP 300 times ran 4.6 s here."""
TRAINED = ("optimizer", "manual", "backward")
"""``steps_source`` values of a process that trained itself: no note for those."""
_SHOWN_CHARS = 120
# torchrun's options that `dsprof run` has too (its own launcher starts the ranks so)
_TORCHRUN_NPROC = ("--nproc-per-node", "--nproc_per_node")


def python_child_notes(meta: dict[str, Any], target: Target | None) -> list[str]:
    """The note, or none when the script trained itself or no Python child ran long."""
    if meta.get("script_imported_torch") is not False and meta.get("steps_source") in TRAINED:
        return []
    children = [c for c in meta.get("python_children") or []
                if isinstance(c, dict) and _words(c.get("argv"))
                and isinstance(c.get("seconds"), (int, float)) and c["seconds"] >= MEANINGFUL_S
                and not _runs_code(_words(c.get("argv")))]
    if not children:
        return []
    # a child whose end went unseen ("ended": null) is timed to the script's end, an upper
    # bound: the script's own work after it (a driver's time.sleep(3) after a 50 ms child) is
    # no training of the child's. A child seen ending, or still running, is named first.
    timed = [c for c in children if c.get("ended") is not None]
    longest = max(timed or children, key=lambda c: c["seconds"])
    argv = _words(longest["argv"])
    shown = _shown(argv) + (" ..." if longest.get("cut") is True else "")
    ended = (f", exit status {longest['exit_status']}"
             if isinstance(longest.get("exit_status"), int) and longest["exit_status"] >= 0 else
             f", killed by signal {-longest['exit_status']}"
             if isinstance(longest.get("exit_status"), int) else
             ", still running when the script ended" if longest.get("ended") is False else "")
    # (an exit dsprof did not see: the time runs to the script's end)
    took = ("" if longest.get("ended") is not None else "up to ") + \
        f"{float(longest['seconds']):.1f} s"

    launched = _launcher_target(target)
    many = len(children) > 1
    if launched is not None:  # dsprof ran the launcher itself; its workers are the children
        who = (f"the script is {launched[0]}'s launcher, and the {len(children)} Python "
               f"process{'es' if many else ''} it started ran unprofiled")
        command = profile_command(launched[1], launched[0])
    else:
        who = (f"{len(children)} Python child processes it started ran unprofiled, the longest"
               if many else "a Python child process it started ran unprofiled")
        launcher = longest.get("launcher")
        command = (None if longest.get("cut") is True else
                   profile_command(argv, launcher if isinstance(launcher, str)
                                   and launcher in _LAUNCHERS else None))
    them = "them" if many and launched is not None else "it"
    run = (f"; profile {them} with: {command}" if command else
           "; profile the training script it runs with: dsprof run SCRIPT ARGS")
    return [one_line(f"no training step was seen in this process: {who} "
                     f"({shown}, {took}{ended}), as dsprof does not "
                     f"follow a script's subprocesses{run}")]


_LAUNCHERS = set(LAUNCHER_SCRIPTS.values())


def profile_command(argv: list[str], launcher: str | None) -> str | None:
    """What profiles the command ``argv`` (its program first), or None where dsprof cannot
    say (``python -c``, a launcher whose script is no ``.py`` file)."""
    if launcher is None:
        found = _python_script(argv)
        if found is None:
            return None
        head, rest = found
        return _join(["dsprof", "run", *head], rest)
    rest = _launcher_args(argv) or []
    at = next((i for i, w in enumerate(rest) if not w.startswith("-") and w.endswith(".py")),
              None)
    if at is None:
        return None
    options, script = rest[:at], rest[at:]
    if launcher == "torchrun":
        nproc, others = _torchrun_nproc(options)
        if nproc is not None and not others:
            return _join(["dsprof", "run", "--nproc-per-node", nproc], script)
        return _join(["torchrun"], [*options]) + " " + _join(["-m", "dsprof", "run"], script)
    if launcher == "accelerate":
        return _join(["accelerate", "launch"], options) + " " + \
            _join(["-m", "dsprof", "run"], script)
    if launcher == "deepspeed":
        return _join(["deepspeed"], options) + " " + _join(["--module", "dsprof", "run"], script)
    return None


def _launcher_target(target: Target | None) -> tuple[str, list[str]] | None:
    """The launcher dsprof ran as the script, with a command line as if typed: ``(torchrun,
    [torchrun, --nproc-per-node=2, train.py])``."""
    if target is None or not target.argv:
        return None
    if target.kind == "module":
        name = LAUNCHER_MODULES.get(target.name)
        return (name, ["python", "-m", target.name, *target.argv[1:]]) if name else None
    name = LAUNCHER_SCRIPTS.get(os.path.basename(target.argv[0]))
    return (name, list(target.argv)) if name else None


def _launcher_args(argv: list[str]) -> list[str] | None:
    """The words after the launcher itself: after ``torchrun``, ``accelerate launch``,
    ``python -m torch.distributed.run``."""
    words = argv[1:]
    if os.path.basename(argv[0]) not in LAUNCHER_SCRIPTS:
        if "-m" not in words:
            return None
        words = words[words.index("-m") + 2:]
    if os.path.basename(argv[0]) == "accelerate" or \
            "accelerate.commands.accelerate_cli" in argv[:4]:
        return words[1:] if words[:1] == ["launch"] else None
    return words


def _torchrun_nproc(options: list[str]) -> tuple[str | None, list[str]]:
    """torchrun's process count (a positive integer as text; "1", its default, when not
    given) and its other options but ``--standalone``."""
    nproc: str | None = "1"
    others: list[str] = []
    skip = False
    for i, word in enumerate(options):
        if skip:
            skip = False
            continue
        name, eq, value = word.partition("=")
        if name in _TORCHRUN_NPROC:
            if not eq:
                value, skip = (options[i + 1] if i + 1 < len(options) else ""), True
            nproc = value if value.isdigit() and int(value) > 0 else None
        elif word != "--standalone":
            others.append(word)
    return nproc, others


def _python_script(argv: list[str]) -> tuple[list[str], list[str]] | None:
    """``python [OPTIONS] SCRIPT ARGS`` as (``[SCRIPT]``, ARGS), ``-m MODULE ARGS`` as
    (``[-m, MODULE]``, ARGS); None for ``-c``, ``-`` (stdin) and no script."""
    i = 1
    while i < len(argv):
        word = argv[i]
        if word == "-m":
            return (["-m", argv[i + 1]], argv[i + 2:]) if i + 1 < len(argv) else None
        if word in ("-c", "-", "--") or word.startswith("-c"):
            return None
        if word in ("-X", "-W", "--check-hash-based-pycs"):
            i += 2
            continue
        if not word.startswith("-"):
            return [word], argv[i + 1:]
        i += 1
    return None


def _runs_code(argv: list[str]) -> bool:
    """``python -c CODE``: a probe or a helper, never a script dsprof could run."""
    return any(w == "-c" or (w.startswith("-c") and len(w) > 2) for w in argv[1:3])


def _words(value: Any) -> list[str]:
    return [str(w) for w in value] if isinstance(value, list) else []


def _join(head: list[str], rest: list[str]) -> str:
    return " ".join(shlex.quote(w) for w in [*head, *rest])


def _shown(argv: list[str]) -> str:
    """The child's command as a shell would read it, its program by name (``python``)."""
    text = _join([os.path.basename(argv[0])], argv[1:])
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS - 3] + "..."
