"""Titles and fixes of the step-outlier verdicts that name no saving (analyzers/step_outliers.py):
what the slow steps were, and that nothing in the script is to change or what switch does
that work less often."""

from __future__ import annotations

from typing import Any

from dsprof.analyzers.step_warmup import span
from dsprof.render.safe_text import one_line

Row = tuple[Any, ...]

VERIFY = {
    "steps.warmup": ("no change is proposed: in a longer run the median stays and the "
                     "warm-up's share of the mean step time shrinks"),
    "steps.more_input": "no change is proposed: the same inputs give the same steps",
    "steps.extra_work": "no change is proposed: the script asks for that work",
    "steps.more_iterations": "no change is proposed: the script gave those steps more work",
}
VERIFY_GONE = "dsprof run ... then dsprof summary RUN: the outlier steps are gone"


def gc(slow: list[Row], n_steps: int, rank: int, generations: set) -> tuple[str, str]:
    one = len(slow) == 1
    gens = "/".join(str(g) for g in sorted(g for g in generations if g is not None))
    title = (f"{len(slow)} of {n_steps} steps on rank {rank} {'was' if one else 'were'} slow "
             f"because Python's garbage collector ran in {'it' if one else 'them'} (generation "
             f"{gens}, up to {max(r[7] for r in slow) / 1e6:.1f} ms): the runtime's periodic "
             "work, not the script's")
    fix = ("# Nothing to change at this size: the cyclic garbage collector runs when\n"
           "# allocations of Python objects cross its thresholds (a run under dsprof\n"
           "# allocates more and collects sooner than the plain script). If collections\n"
           "# grow with many long-lived objects, freeze them once set-up is done:\n"
           "import gc\n"
           "gc.freeze()  # after building the model, optimizer and data loaders")
    return title, fix


def more_input(slow: list[Row], n_steps: int, rank: int, med: float) -> tuple[str, str]:
    title = (f"{len(slow)} of {n_steps} steps on rank {rank} ran up to "
             f"{max(r[3] for r in slow) / med:.1f}x the median because the model computed "
             "more in them: calls on more input (a generate() call's prefill, a longer "
             "sequence, a larger batch), not a saving")
    fix = ("# Nothing to change for these steps: each step of this run is one call of\n"
           "# the model (no optimizer, no backward), and these calls were given more\n"
           "# to compute. Under generate() the first call of each is the prefill (the\n"
           "# whole prompt at once); the others decode one token each.")
    return title, fix


def periodic_fix(every: int, sites: list[str], switch: str | None) -> str:
    """The fix of work every ``every`` steps: the framework's ``switch`` for how often, else
    a step-modulo sketch at the lines that ran only then."""
    sites = [one_line(s) for s in sites]  # run-directory text, put into comment lines
    return (f"# Work done every {every} steps (evaluation, checkpoint saving, logging, an epoch "
            "restart)\n# runs on the training thread"
            f"{' (' + ', '.join(sites) + ')' if sites else ''}. It is work the script asks "
            "for;\n# if it should cost less, do it less often or off the critical path (a "
            "background\n# thread for saving), e.g.:\n"
            + (switch or f"if step % {4 * every} == 0:  # was every {every} steps\n"
               + (f"    ...  # the work at {sites[0]}" if sites else
                  "    ...  # the evaluation, the checkpoint, the log"))
            + "\n# (work the algorithm needs every N steps, such as an RL rollout, stays as it "
            "is)")


def extra_lines(steps: list[Row], rank: int, med: float, sites: list[str],
                cost: str) -> tuple[str, str]:
    """Outliers at no stride that ran lines no other step ran: the script's work."""
    one = len(steps) == 1
    title = (f"{'Step' if one else 'Steps'} {span(steps)} on rank {rank} ran up to "
             f"{max(r[3] for r in steps) / med:.1f}x the median doing work no other step did, "
             f"at {', '.join(sites)}: work the script asks for (an evaluation, a checkpoint, "
             f"logging), {cost} on average, not a saving")
    fix = (f"# Nothing to remove: {'this step' if one else 'these steps'} ran code the others "
           f"did not\n# ({one_line(', '.join(sites))}). If that work should cost less, do it less often "
           "or off\n# the training thread (a background thread for saving).")
    return title, fix


def off_cpu(slow: list[Row], n_steps: int, rank: int) -> tuple[str, str]:
    title = (f"{len(slow)} of {n_steps} steps on rank {rank} were slow because the process "
             "was off the CPU: noise on this machine, not the program")
    fix = ("# Nothing to change in the script: these steps waited for the CPU (other\n"
           "# processes on the machine) or for I/O. Measure on a quiet machine, or\n"
           "# pin the job to its own cores (taskset / numactl).")
    return title, fix


def once(row: Row, n_steps: int, rank: int, med: float) -> tuple[str, str]:
    # (a step number, not a count: "step 79 of 73" read as broken where the counted steps
    # start late, the loop after an LR range test)
    title = (f"One of {n_steps} steps (step {row[0]}) on rank {rank} ran {row[3] / med:.1f}x "
             "the median once, with nothing dsprof saw it do differently: one sample, not a "
             "pattern")
    fix = ("# Nothing to change in the script yet: the step waited for no data, ran no\n"
           "# line the others did not, and had no collection. Run more steps to\n"
           "# see whether it recurs.")
    return title, fix


def jitter(slow: list[Row], n_steps: int, rank: int, med: float,
           min_slowdown: float, min_excess_ns: float) -> tuple[str, str]:
    worst = max(r[3] for r in slow)
    title = (f"{len(slow)} of {n_steps} steps on rank {rank} ran up to "
             f"{worst / med:.2f}x the median with no wait to explain it: "
             "step-to-step noise, not the program")
    bound = (f"{min_slowdown}x the median or more" if worst < min_slowdown * med else
             f"{min_excess_ns / 1e6:.1f} ms over the median or more (in steps this short,\n"
             "# a page fault or an interrupt is a large share of one)")
    fix = ("# Nothing to change in the script: no step waited for data or off the CPU,\n"
           f"# and none ran {bound}.")
    return title, fix


def more_iterations(slow: list[Row], n_steps: int, rank: int, med: float, call: str, site: str,
                    theirs: float, usual: float) -> tuple[str, str]:
    title = (f"{len(slow)} of {n_steps} steps on rank {rank} ran up to "
             f"{max(r[3] for r in slow) / med:.1f}x the median doing more of the same work: "
             f"{call}() at {site} ran {theirs:.0f} times in them against {usual:.0f} in a "
             "median step (a longer episode, more micro-batches, more of the script's own "
             "loop), not a saving")
    fix = (f"# Nothing to change for these steps: {one_line(site)} runs once per iteration of the\n"
           "# script's own loop inside a step, and these steps ran more iterations (an\n"
           "# episode that lasted longer, more micro-batches); their time follows their work.")
    return title, fix
