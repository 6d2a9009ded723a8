"""``dsprof run [OPTIONS] -m MODULE ARGS...``: everything after MODULE is the module's, as
``python -m MODULE ARGS...`` gives it.

``-m`` is one of ``run``'s options, and click went on parsing options after its value:
``dsprof run -m pkg.train -o out.pt -q --wait 2 -- x`` made ``out.pt`` dsprof's run
directory, took ``-q`` and ``--wait 2`` for dsprof's, dropped the ``--``, and ``-h`` printed
dsprof's help; the module's ``sys.argv`` was ``['pkg/train.py', 'x']``. The script form needs
nothing of this: the first argument that is no option is the script, and click parses no
option after it (``allow_interspersed_args=False``).
"""

from __future__ import annotations

import click


class RunCommand(click.Command):
    """``dsprof run``: the arguments after ``-m MODULE`` are passed on untouched."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, module_args_apart(self.get_params(ctx), args))


def module_args_apart(params: list[click.Parameter], args: list[str]) -> list[str]:
    """``args`` with a ``--`` after ``-m MODULE`` (``-mMODULE``, ``-qm MODULE``), so that the
    parser reads no option of dsprof's after it; unchanged when no ``-m`` comes before the
    script. dsprof's options before ``-m`` are skipped with their values (``-o -m`` is a run
    directory named ``-m``)."""
    takes_value: dict[str, bool] = {}
    for p in params:
        if isinstance(p, click.Option):
            for opt in (*p.opts, *p.secondary_opts):
                takes_value[opt] = not (p.is_flag or p.count)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--" or arg == "-" or not arg.startswith("-"):
            return args  # the script: click parses nothing after it
        if arg.startswith("--"):
            i += 1 if "=" in arg or not takes_value.get(arg, False) else 2
            continue
        # one or more short options: flags, then perhaps one that takes a value
        for k, letter in enumerate(arg[1:], start=1):
            if letter == "m":
                end = i + 1 if k + 1 < len(arg) else i + 2  # -mMODULE or -m MODULE
                if end > len(args):
                    return args  # no MODULE: click says so
                return [*args[:end], "--", *args[end:]]
            if takes_value.get(f"-{letter}", False):
                i += 1 if k + 1 < len(arg) else 2  # -oRUN or -o RUN
                break
        else:
            i += 1
    return args
