"""What the knobs that act on named modules share (``DS_COMPILE``, ``DS_GRADIENT_CHECKPOINTING``,
``DS_LIBRARY_OP``).

Module paths are the names dsprof gives modules (``TransformerLM.blocks.0.attn``: the root's
class name, then its ``named_modules()`` path) and may use ``*`` for one path component
(``TransformerLM.blocks.*.attn``). Models are usually built after the session starts, so such a
knob waits: a global forward pre-hook sees each root module the first time it is called, walks
its submodules once and hands them, named, to :meth:`ModuleKnob.apply_to`; a module below one
already changed is skipped (compiling or checkpointing both would do the inner one twice), and
so is a module changed before (a shared one, or one renamed when its model was called after
it). The names are the module annotator's, by the same code
(:class:`dsprof.module_paths.ModuleNames`): a module called directly before its model, a
module shared by two models and a module called from outside every model's tree (named after
its caller; a forward hook keeps the call stack for that) get the path the profile showed, and
a model wrapped in ``torch.compile`` is named as the model (no ``OptimizedModule._orig_mod``),
the knob changing the module inside the wrapper so that the compiled code runs the change. A
model compiled as a method (``model.compile()``) is called inside Dynamo's trace, where the hook
cannot walk; so while the hook lives the knob also wraps ``torch.compile`` and walks such a
model when it is compiled. A model called only inside a compiled function is out of reach. A
pattern that matched nothing is an error in the log at the end of the run and ``unmatched`` in
meta.json, which ``dsprof verify`` prints next to its numbers: the rerun measured the program
without that part of the fix.

A global module hook puts every module call of the program on ``Module._call_impl``'s slow
path (77-92 us a step on the corpus's tiny GPT-2), and Dynamo guards on the global hook dicts
a trace saw: a hook removed after a compiled forward was traced with it recompiles it (one
added after the trace does not, and is not called inside the compiled code:
docs/decisions.md). So the hook goes as soon as
the value is found: at the end of the root walk after which every pattern has matched some
module (``1`` for checkpointing: once a root's repeated stack was found). A walk sees the
root's whole tree at its first call, before its forward runs, so a pattern such as
``Model.blocks.*`` has all its modules by then. What this misses (docs/decisions.md): a root
first called after that (a second instance of a class already matched built anew, a model
built later, another root a ``*`` in the root component could match; a ``copy.deepcopy`` of a
changed model is changed with it, :mod:`dsprof.apply.changed_forward`); a pattern that names
the second of two roots keeps the hook until that root is called.
"""

from __future__ import annotations

import functools
import re
import threading
import weakref
from typing import Any, ClassVar

from dsprof.apply import Knob
from dsprof.log import logger
from dsprof.module_paths import (
    ModuleNames,
    is_compile_wrapper,
    is_wrapper,
    named_module_paths,
    split_knob_paths,
)


def path_regexes(patterns: list[str]) -> list[re.Pattern[str]]:
    """``*`` matches one path component."""
    return [re.compile("[^.]*".join(re.escape(part) for part in p.split("*"))) for p in patterns]


def split_paths(value: str) -> list[str]:
    """A knob value's module paths (``\\,``: a comma inside one, dsprof/module_paths.py)."""
    return split_knob_paths(value)


def named_modules(root: Any) -> list[tuple[str, Any]]:
    """(dsprof module path, module) of ``root`` and everything below it."""
    return list(named_module_paths(root))


def outermost(named: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The modules of ``named`` (in walk order) that are not below another one of them."""
    kept: list[tuple[str, Any]] = []
    for name, sub in named:
        if not any(name.startswith(k + ".") for k, _ in kept):
            kept.append((name, sub))
    return kept


class ModuleKnob(Knob):
    """A knob that changes the modules :meth:`select` picks, once per module.

    Subclasses set ``self.patterns`` in ``parse`` (then call :meth:`_ready`), and implement
    :meth:`apply_to`, which returns True when it changed the module.
    """

    patterns: list[str]
    # The change settles on the module's first call (DS_LIBRARY_OP checks its swap there):
    # that call must not be traced by torch.compile (see :func:`first_call_eager`).
    settles_on_first_call: ClassVar[bool] = False

    def _ready(self) -> None:
        self._regexes = path_regexes(self.patterns)
        self.changed: list[str] = []
        self.found: list[str] = []  # every module path the walks picked, changed or not
        self._unmatched = list(self._regexes)  # patterns no walk has matched yet
        self._changed_modules: weakref.WeakSet[Any] = weakref.WeakSet()
        self._roots: list[str] = []  # the roots walked, for the message when nothing matched
        # the annotator's naming rule (dsprof/module_paths.py), so a finding's path is found
        self._names = ModuleNames()
        self._local = threading.local()
        self._handles: list[Any] = []

    def install(self) -> None:
        from torch.nn.modules.module import (
            register_module_forward_hook,
            register_module_forward_pre_hook,
        )

        # the forward hook keeps the call stack: a module called from outside every walked
        # tree is named after its caller, as the annotator names it
        self._handles = [register_module_forward_pre_hook(self._pre),
                         register_module_forward_hook(self._post, always_call=True)]
        self._wrap_compile()

    def _wrap_compile(self) -> None:
        """See a model compiled as a method (``model.compile()``, ``torch.compile(model.forward)``)
        before Dynamo traces it: its calls happen inside the trace, where the hook cannot walk."""
        import torch

        original: Any = torch.compile
        knob = self

        @functools.wraps(original)
        def compile(model: Any = None, *args: Any, **kwargs: Any) -> Any:
            compiled = original(model, *args, **kwargs)
            owner = getattr(model, "__self__", None)
            if knob.hooked and isinstance(owner, torch.nn.Module):
                try:
                    if knob._found(owner, None)[1] and knob.settles_on_first_call:
                        return _first_call_eager_fn(compiled)
                except Exception as exc:  # noqa: BLE001 - never fail the user's script
                    logger.error("%s: could not look at the compiled %s: %s", knob.env,
                                 type(owner).__name__, exc)
            return compiled

        self._compile_pair: tuple[Any, Any] = (original, compile)
        torch.compile = compile

    def uninstall(self) -> None:
        self._remove_hook()
        missing = self.unmatched()
        if missing:
            # loud: a verify rerun would otherwise measure the program without the fix
            logger.error("%s: no module matched %s, so nothing was changed there (roots "
                         "called: %s)", self.env, ", ".join(missing),
                         ", ".join(self._roots[:5]) or "none")

    def unmatched(self) -> list[str]:
        """The parts of the value no module matched (``1`` with no pattern: the value)."""
        if not self.patterns:
            return [] if self.found else [self.value]
        return [p for p, r in zip(self.patterns, self._regexes, strict=True)
                if r in self._unmatched]

    def report(self) -> dict[str, Any]:
        missing = self.unmatched()
        return {"unmatched": missing} if missing else {}

    def select(self, named: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """The modules to change: by default those the patterns name."""
        return [(n, m) for n, m in named if any(r.fullmatch(n) for r in self._regexes)]

    def apply_to(self, name: str, module: Any) -> bool:
        raise NotImplementedError

    @property
    def hooked(self) -> bool:
        """Whether the global module hook is still installed."""
        return bool(self._handles)

    def found_all(self) -> bool:
        """Whether the walks so far found what the value asks for: a module for every pattern
        (with no pattern, ``1``: some module at all). Then the hook has nothing left to do."""
        return bool(self.found) and not self._unmatched

    def _remove_hook(self) -> None:
        import torch

        for handle in self._handles:
            handle.remove()
        self._handles = []
        original, wrapper = getattr(self, "_compile_pair", (None, None))
        if wrapper is not None and torch.compile is wrapper:  # else it passes through
            torch.compile = original  # type: ignore[assignment]
        self._compile_pair = (None, None)
        self._local = threading.local()
        self._names.clear()  # only the hook reads them

    def _stack(self) -> list[tuple[Any, str]]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def _pre(self, module: Any, args: Any) -> None:
        import torch

        if torch.compiler.is_compiling():
            return
        stack = self._stack()
        name, changed, in_wrapper = self._found(module, stack[-1][1] if stack else None)
        stack.append((module, name))
        if changed and in_wrapper and self.settles_on_first_call:
            # the check on the first call must not be traced: run that call uncompiled
            first_call_eager(module)

    def _found(self, module: Any, parent: str | None) -> tuple[str, bool, bool]:
        """Name ``module`` (called under ``parent``, None: a root) and, the first time, change
        the modules its walk picks. Returns its name, whether a module was changed, and whether
        one of those is inside a torch.compile wrapper."""
        name, named = self._names.name_call(module, parent)
        if not named:  # named before: its walk already looked at it
            return name, False, False
        if parent is None:
            self._roots.append(name)
        # a wrapper (torch.compile's, Fabric's) has the path of the module it wraps: change
        # that module, so that the compiled code runs the change (as it would run a pasted one)
        picked = self.select([(n, m) for n, m in named if not is_wrapper(m)])
        self.found += [n for n, _ in picked]
        self._unmatched = [r for r in self._unmatched
                           if not any(r.fullmatch(n) for n, _ in picked)]
        now: list[Any] = []
        for path, sub in outermost(picked):
            if sub in self._changed_modules:  # renamed (its model called after it), or shared
                continue
            if self.apply_to(path, sub):
                self.changed.append(path)
                self._changed_modules.add(sub)
                now.append(sub)
        in_wrapper = any(is_compile_wrapper(w) and _holds(w, now) for _, w in named)
        if self.found_all():
            # before the root's forward runs: no module call pays for the hook from here on,
            # and a forward compiled below this root is traced without it (no recompile)
            self._remove_hook()
            logger.debug("%s: every pattern matched in %s; the module hook is removed",
                         self.env, name)
        return name, bool(now), in_wrapper

    def _post(self, module: Any, args: Any, output: Any) -> None:
        import torch

        if torch.compiler.is_compiling():  # traced, the stack's creation is a guard (recompile)
            return
        stack = self._stack()
        for k in range(len(stack) - 1, -1, -1):
            if stack[k][0] is module:
                del stack[k:]
                return


def _holds(root: Any, modules: list[Any]) -> bool:
    inside = {id(m) for m in root.modules()}
    return any(id(m) in inside for m in modules)


def first_call_eager(root: Any) -> None:
    """Run the rest of ``root``'s current call (the call whose pre-hook this is) with
    torch.compile standing aside: compiled code runs eagerly, nothing is traced; later calls
    compile as before.

    A knob whose change settles on a module's first call (DS_LIBRARY_OP runs the module and the
    library op there and compares them) would otherwise have that check traced: measured on a
    two-block MLP compiled with a recording backend (tests/unit/test_compiled_knobs.py), the
    ``allclose`` is a data-dependent graph break, and the compiled code keeps the pieces for
    good (9 graphs and 4 graph breaks where the pasted change compiles to 1 graph and none).
    Run eagerly, the first call checks and swaps, and the second call traces the swapped module
    only: the one graph the pasted change gives. The first step is not compiled, the second
    compiles, and ``dsprof verify`` measures neither. (Setting the wrapper's ``forward`` would
    not do: ``Module._call_impl`` reads ``forward`` before it runs the pre-hooks.)
    """
    import torch

    try:
        from torch._dynamo import eval_frame

        before = eval_frame._stance
        torch.compiler.set_stance("force_eager")
    except Exception as exc:  # noqa: BLE001 - a torch without stances: the check is traced
        logger.warning("cannot run the first call of %s uncompiled: %s", type(root).__name__,
                       exc)
        return

    def restore(module: Any, args: Any, output: Any) -> None:
        handle.remove()
        torch.compiler.set_stance(before.stance,
                                  skip_guard_eval_unsafe=before.skip_guard_eval_unsafe,
                                  force_backend=before.backend)

    # read by _call_impl after the forward, so it ends this very call (raised or not)
    handle = root.register_forward_hook(restore, always_call=True)


def _first_call_eager_fn(compiled: Any) -> Any:
    """``compiled`` (what torch.compile returned for a method) with its first call run with
    torch.compile standing aside, as :func:`first_call_eager` does for a wrapper's call."""
    import torch

    done = False

    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal done
        if done:
            return compiled(*args, **kwargs)
        done = True
        with torch.compiler.set_stance("force_eager"):
            return compiled(*args, **kwargs)

    return call
