"""Run a user's script or module in this process exactly as ``python SCRIPT ARGS`` /
``python -m MODULE ARGS`` would: ``sys.argv``, ``__main__``, ``sys.path[0]``, exit status.

Exit status follows CPython: ``sys.exit(n)`` -> n (``None`` -> 0, a message -> printed, 1),
an uncaught exception -> its traceback (without dsprof's frames) and 1, Ctrl-C -> its traceback
and 130, the exception kept for dsprof's entry point to raise again (dsprof.cli.interrupted).
A script that cannot start (missing, syntax error, unknown module) raises ScriptError before
anything runs, so dsprof can exit 2 with one line.
"""

from __future__ import annotations

import atexit
import builtins
import importlib.util
import os
import runpy
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from importlib.machinery import SourceFileLoader
from pathlib import Path
from typing import Any, NoReturn

from dsprof import script_watchdog
from dsprof.collectors.call_at_line import is_own_code
from dsprof.errors import ScriptError
from dsprof.interpreter_options import split_orig_argv
from dsprof.peer_loss import lost_a_peer

_DSPROF_DIR = str(Path(__file__).resolve().parent)
_RUNPY = {runpy.__file__, "<frozen runpy>"}
# The script's globals stay alive until the interpreter exits, as under plain python. Dropping
# them when the script returns would run their destructors inside dsprof's exit path, before
# the run is saved: a gloo process group's destructor joins its threads there and can hang
# with the GIL held, where no signal handler can help.
_KEPT: list[Any] = []
# sys.argv, sys.path[0] and __main__ as the script left them: dsprof's own exit work runs with
# its own (its ingest workers may import __main__), and they are given back before the
# interpreter's exit, whose atexit handlers are the script's too (a handler that pickled a
# class of the script's failed: "attribute lookup Net on __main__ failed", and read
# dsprof's command line as sys.argv)
_LEFT: dict[str, Any] = {}
# dsprof's own last words (cli/last_words.py), said once the script's exit output is out
_AT_THE_END: list[Callable[[], None]] = []
_EXIT_FUNCS_RAN: list[bool] = []  # _release_kept_globals has run


def at_the_end(say: Callable[[], None]) -> None:
    """Call ``say`` at exit, after the script's atexit handlers and its globals' finalizers;
    or before, where one of those handlers ends the process (``os._exit(0)``: the summary was
    lost); or now, where the script ran the exit functions itself (``atexit._run_exitfuncs()``,
    as some launchers do before a hard exit: the registry is empty since)."""
    if _EXIT_FUNCS_RAN:
        say()
        return
    _AT_THE_END.append(say)
    if len(_AT_THE_END) == 1:
        atexit.register(_said_before_a_hard_exit)  # registered last: runs first at exit


def _said_before_a_hard_exit() -> None:
    """At exit, before the script's atexit handlers: ``os._exit`` says dsprof's last words
    first, then ends the process as asked (the real one; :func:`_say_last_words` puts it back
    when the handlers are done)."""
    real_exit = os._exit

    def _exit(status: int) -> NoReturn:
        _say_last_words()
        real_exit(status)

    _HARD_EXIT[:] = [real_exit, _exit]
    os._exit = _exit


_HARD_EXIT: list[Any] = []  # [os._exit as found, dsprof's] while the script's handlers run


def _say_last_words() -> None:
    if len(_HARD_EXIT) == 2 and os._exit is _HARD_EXIT[1]:
        os._exit = _HARD_EXIT[0]
    _HARD_EXIT.clear()
    while _AT_THE_END:
        try:
            _AT_THE_END.pop(0)()
        except Exception:  # noqa: BLE001, S110 - at exit: the script's status must stand
            pass


def _release_kept_globals() -> None:
    """At exit, after the script's own atexit handlers (this one is registered before the
    script runs, and atexit runs last-registered first): let the script's globals go as the
    interpreter lets ``__main__``'s go. Their module dict is held in a cycle by the script's
    functions and classes, so the interpreter's final garbage collection is what finalizes
    them: every ``__del__`` runs first, with the globals still in place (PEP 442), then the
    cycle is cleared. Dropping dsprof's references and collecting does the same; a dict in no
    cycle is freed at once, as a module nobody else holds would be; one a library still holds
    (torch holds __main__) is left to the interpreter's module teardown, which sets its names
    to None in the order they were bound, as without dsprof. A global's ``__del__``
    (a log file flushed, a tracker's run closed, a destructor that blocks) then runs as it
    would without dsprof; left to the module list's teardown it could be skipped. Then the
    gloo process groups dsprof held go, once their worker threads are idle
    (:mod:`dsprof.collectors.process_groups`)."""
    import gc

    from dsprof.collectors import process_groups

    # the script's handlers have run with its __main__ (as_the_script_left_it): its module
    # goes now, with dsprof's references, not at the module list's teardown, whose order
    # (__main__'s key first in, so last out) left a blocking destructor skipped
    if _LEFT.get("main") is not None and sys.modules.get("__main__") is _LEFT["main"] \
            and _LEFT.get("own_main") is not None:
        sys.modules["__main__"] = _LEFT["own_main"]
    _put_back_gc_callbacks(_LEFT.pop("gc_callbacks", []))  # where nothing gave them back
    _LEFT.clear()
    _KEPT.clear()
    # a collection plain python does not make: the script's gc.callbacks are not called for it
    # (they are for the interpreter's own, at its finalisation, as without dsprof)
    held, gc.callbacks[:] = gc.callbacks[:], []
    try:
        gc.collect()
    finally:
        _put_back_gc_callbacks(held)
    # last: the process groups dsprof held (DDP/gloo), once their worker threads are idle
    process_groups.release()
    _EXIT_FUNCS_RAN.append(True)
    _say_last_words()


atexit.register(_release_kept_globals)


@dataclass(frozen=True)
class Target:
    """Args:
        kind: ``script`` or ``module``.
        name: the script path as given, or the module name.
        args: the arguments after it.
        code: the compiled script (None for modules).
    """

    kind: str
    name: str
    args: tuple[str, ...]
    code: types.CodeType | None = None

    @property
    def display_name(self) -> str:
        return Path(self.name).stem if self.kind == "script" else self.name.rsplit(".", 1)[-1]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "argv": [self.name, *self.args]}


@dataclass(frozen=True)
class Outcome:
    exit_status: int
    reason: str  # exit | exception | interrupt
    error: str | None = None  # the exception's class name when reason is "exception"
    peer_lost: bool = False  # the exception says another rank went away (dsprof.peer_loss)
    # the script's KeyboardInterrupt (reason "interrupt"), its traceback the printed one: raised
    # again at dsprof's very end, so the interpreter ends the process as it ends the script's
    interrupt: BaseException | None = None


def prepare_script(path: str, args: tuple[str, ...]) -> Target:
    p = Path(path)
    if not p.exists():
        raise ScriptError(f"script {path} not found; check the path (dsprof run SCRIPT [ARGS])")
    if p.is_dir():
        raise ScriptError(f"{path} is a directory, not a script; use `dsprof run -m MODULE` "
                          "for a package")
    try:
        source = p.read_bytes()
    except OSError as exc:
        raise ScriptError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        # under its absolute path, as ``python script.py`` compiles it: tracebacks, warnings
        # and inspect read as without dsprof (reports shorten it: frames.shown_path)
        code = compile(source, os.path.abspath(path), "exec", dont_inherit=True)
    except SyntaxError as exc:
        if exc.filename is None:  # null bytes (3.11.4+: a SyntaxError with no place in a file)
            raise ScriptError(f"{path} is not a Python script ({exc.msg}): dsprof runs a .py "
                              "file, or a package with -m MODULE") from None
        raise ScriptError(f"{exc.filename}:{exc.lineno}: SyntaxError: {exc.msg}; "
                          "fix the script, it was not run") from None
    except ValueError as exc:  # null bytes, before 3.11.4
        raise ScriptError(f"{path} is not a Python script ({exc}): dsprof runs a .py file, "
                          "or a package with -m MODULE") from None
    return Target("script", path, tuple(args), code)


def prepare_module(name: str, args: tuple[str, ...]) -> Target:
    # found as ``python -m`` finds it: the working directory in the place of dsprof's own
    # sys.path[0] (the folder of its entry script, <venv>/bin, which the module saw at
    # sys.path[1] when the directory was put before it); run() puts it there again. Under
    # -P (safe_path) sys.path[0] is no entry's folder: the directory goes before it, as before
    cwd, own_path0 = os.getcwd(), None
    if sys.path and not getattr(sys.flags, "safe_path", False):
        own_path0, sys.path[0] = sys.path[0], cwd
    elif cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        raise ScriptError(f"cannot find module {name}: {exc}") from None
    finally:
        if own_path0 is not None and sys.path and sys.path[0] == cwd:
            sys.path[0] = own_path0
    if spec is None:
        raise ScriptError(f"no module named {name}; check the name and sys.path "
                          "(dsprof run -m MODULE [ARGS])")
    return Target("module", name, tuple(args))


def run(target: Target) -> Outcome:
    """Execute the target; never raises (except for SystemExit codes it converts)."""
    saved_argv, saved_path0 = sys.argv[:], sys.path[0] if sys.path else None
    saved_main = sys.modules.get("__main__")
    saved_orig_argv = sys.orig_argv
    sys.orig_argv = _orig_argv_for(target)
    script_watchdog.track()
    try:
        if target.kind == "script":
            main = types.ModuleType("__main__")
            path = os.path.abspath(target.name)
            # the globals ``python script.py`` gives __main__: __file__ absolute, as since 3.9
            # (a script that changes directory, Hydra, still finds the files next to it);
            # the loader that reads its source; __builtins__ and __annotations__ as the
            # interpreter's own __main__ has them
            main.__dict__.update({"__file__": path, "__cached__": None, "__spec__": None,
                                  "__package__": None,
                                  "__loader__": SourceFileLoader("__main__", path),
                                  **_interpreters_main_globals(saved_main)})
            sys.modules["__main__"] = main
            _KEPT.append(main)
            sys.argv = [target.name, *target.args]
            sys.path[0] = str(Path(target.name).resolve().parent)
            exec(target.code, main.__dict__)  # noqa: S102 - running the user's script is the job
        else:
            sys.argv = [target.name, *target.args]
            sys.path[0] = os.getcwd()
            # as ``python -m`` (runpy._run_module_as_main): the module's code in a __main__
            # module that stays in sys.modules, argv[0] its file. run_module(alter_sys=True)
            # put dsprof's __main__ and argv[0] back when the module returned, before its
            # atexit handlers ran ("attribute lookup Head on __main__ failed", argv[0]
            # 'pkg.train'); in a module of its own, as_the_script_left_it gives them back
            _, spec, code = runpy._get_module_details(target.name)
            main = types.ModuleType("__main__")
            # and the globals the interpreter gave its own __main__, as for a script
            main.__dict__.update(_interpreters_main_globals(saved_main))
            sys.modules["__main__"] = main
            _KEPT.append(main)
            sys.argv[0] = spec.origin
            runpy._run_code(code, main.__dict__, None, "__main__", spec)
        return Outcome(0, "exit")
    except SystemExit as exc:
        _keep_main_globals(exc)
        return Outcome(_exit_code(exc.code), "exit")
    except KeyboardInterrupt as exc:
        _keep_main_globals(exc)
        _print_user_traceback(exc)
        return Outcome(130, "interrupt", interrupt=exc)
    except BaseException as exc:  # noqa: BLE001 - the user's failure, reported like Python does
        _keep_main_globals(exc)
        _print_user_traceback(exc)
        return Outcome(1, "exception", type(exc).__name__, lost_a_peer(exc))
    finally:
        main_now = sys.modules.get("__main__")
        _LEFT.update(argv=sys.argv, path0=sys.path[0] if sys.path else None,
                     main=main_now if main_now is not saved_main else None, own_main=saved_main,
                     orig_argv=sys.orig_argv, gc_callbacks=_set_aside_gc_callbacks())
        script_watchdog.pause()
        sys.argv, sys.orig_argv = saved_argv, saved_orig_argv
        if saved_path0 is not None and sys.path:
            sys.path[0] = saved_path0
        if saved_main is not None:
            sys.modules["__main__"] = saved_main


def _orig_argv_for(target: Target) -> list[str]:
    """``sys.orig_argv`` as plain python gives the target: the interpreter and the flags
    dsprof's own process got, then the script or ``-m MODULE``, then its arguments. dsprof's
    own command line there (``[python, .../bin/dsprof, run, -o, RUN, ...]``) made a script that
    restarts itself (``os.execv(sys.orig_argv[0], sys.orig_argv)``) start dsprof again, which
    refused the run directory it was writing. Left as it is where dsprof's arguments are not
    its tail (dsprof's command called from Python, not as the process's command line)."""
    orig = list(sys.orig_argv)
    flags = split_orig_argv(orig, sys.argv[1:])
    if flags is None:
        return orig
    entry = ["-m", target.name] if target.kind == "module" else [target.name]
    return [*flags, *entry, *target.args]


def _interpreters_main_globals(own_main: types.ModuleType | None) -> dict[str, Any]:
    """``__builtins__`` the builtins module, not the dict other modules see
    (``__builtins__.print``), and an empty ``__annotations__`` where this interpreter gave its
    own __main__ one (3.11-3.13): what ``python script.py`` and ``python -m`` run the code in."""
    return {"__builtins__": builtins,
            **({"__annotations__": {}} if own_main is not None
               and "__annotations__" in vars(own_main) else {})}


def as_the_script_left_it() -> None:
    """Before the interpreter's exit: ``sys.argv``, ``sys.path[0]`` and ``__main__`` as the
    script left them, which its atexit handlers see without dsprof."""
    if not _LEFT:
        return
    sys.argv, sys.orig_argv = _LEFT["argv"], _LEFT["orig_argv"]
    if _LEFT["path0"] is not None and sys.path:
        sys.path[0] = _LEFT["path0"]
    if _LEFT["main"] is not None:
        sys.modules["__main__"] = _LEFT["main"]
    _put_back_gc_callbacks(_LEFT.pop("gc_callbacks", []))
    script_watchdog.resume()


def _is_dsprofs(callback: Any) -> bool:
    module = getattr(getattr(callback, "__func__", callback), "__module__", None) or ""
    return module == "dsprof" or module.startswith("dsprof.")


def _set_aside_gc_callbacks() -> list[Any]:
    """The script's ``gc.callbacks``, out of the list while dsprof's own work runs between its
    last line and its atexit handlers (the run's save, ingest, analysis): that work's
    allocations start collections, and the script's callbacks were called for each, where the
    plain interpreter runs none between the script's last line and its atexit handlers.
    dsprof's own stay."""
    import gc

    script = [cb for cb in gc.callbacks if not _is_dsprofs(cb)]
    gc.callbacks[:] = [cb for cb in gc.callbacks if _is_dsprofs(cb)]
    return script


def _put_back_gc_callbacks(script: list[Any]) -> None:
    """Before the script's atexit handlers: its callbacks first, where they were, then any
    registered meanwhile."""
    import gc

    gc.callbacks[:] = [*script, *(cb for cb in gc.callbacks if cb not in script)]


def _keep_main_globals(exc: BaseException) -> None:
    """A module run with runpy: its globals live only in the frames of the exception that ended
    it; keep them (not the frames) until the interpreter exits."""
    tb = exc.__traceback__
    while tb is not None:
        glob = tb.tb_frame.f_globals
        if glob.get("__name__") == "__main__" and not any(g is glob for g in _KEPT):
            _KEPT.append(glob)
        tb = tb.tb_next


def _exit_code(code: Any) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _print_user_traceback(exc: BaseException) -> None:
    """The traceback the plain run prints: without dsprof's frames, at its top (the launcher)
    or in between (a wrapper of dsprof's around ``if t:`` or ``t.item()`` that passed the
    error on)."""
    kept = []
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if not (code.co_filename.startswith(_DSPROF_DIR) or code.co_filename in _RUNPY
                or is_own_code(code)):
            kept.append(tb)
        tb = tb.tb_next
    for tb, after in zip(kept, [*kept[1:], None]):
        tb.tb_next = after
    tb = kept[0] if kept else None
    exc.__traceback__ = tb
    sys.excepthook(type(exc), exc, tb)
    sys.stderr.flush()
