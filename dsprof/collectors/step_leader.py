"""Which optimizer's steps are the step boundaries, for :mod:`dsprof.collectors.steps`.

The first optimizer that steps leads: only its steps are boundaries, so a GAN's two optimizers
or a model with a separate optimizer per parameter group still give one boundary per
iteration. When the leader steps again after another optimizer did, the one that steps last
in an iteration takes over (once: the order of an iteration's updates is fixed), so a step is
one whole iteration.

A leader can also stop stepping while another optimizer takes over the loop (below).

An LR range test runs its own optimizer for a few dozen steps, then training builds a new one.
When the script keeps the first one alive (a variable of its own, an ``LRFinder`` holding it),
the step collector's leader never steps again, and the new optimizer's steps, read as a second
optimizer of the same loop (a GAN's generator), ended no step: every training step was lost
(47 range-test steps, none of the 60 training steps). A GAN's or WGAN's optimizers also step
in runs (5 critic steps per generator step, 100 in the reference WGAN's first iterations), so
a run hands the boundaries over only when it is long (``STALE_RUN`` steps in a row), at least
as long as the leader's whole reign, and its optimizer never led (a WGAN's critic led before
the generator took over).

Two runs shorter than that are loops of their own all the same, found after the fact:

- a run that a third optimizer interrupts, ``STALE_RUN`` steps or more: neither the leader
  nor the run's optimizer steps in the loop now running (a grid search's fits after a first
  fit whose net keeps its optimizer: 160 steps of 10 fits, after 456, were lost);
- the run still going at exit, ``END_RUN`` steps or more: the leader never stepped again
  (fine-tuning a head for 50 steps after 100 of pre-training whose optimizer the script keeps;
  15 L-BFGS steps after 30 of Adam). A GAN's iteration ends with the optimizer that leads, so
  at exit another one's run is at most its critic's steps of one iteration (WGAN-GP's 5)."""

from __future__ import annotations

import weakref
from typing import Any

from dsprof.log import logger

# Steps in a row of one other optimizer, with no step of the leader, before the leader can be
# judged gone: above any critic-to-generator ratio seen in practice within one iteration.
STALE_RUN = 16
# Steps of another optimizer's run still going at exit that make it a loop of its own
END_RUN = 8


class StepLeader:
    """The optimizer that marks the boundaries, told of every optimizer step.

    :meth:`stepped` says what an optimizer's step is: ``(True, late)`` ends a step, after
    the ``late`` ends (found after the fact, when a new optimizer took the loop over) are
    recorded; ``(False, [])`` ends none."""

    def __init__(self) -> None:
        self._leader: weakref.ref[Any] | None = None
        # several optimizers: the last other one to step after the leader, and whether the
        # boundaries were handed to it
        self._other: weakref.ref[Any] | None = None
        self._handed_over = False
        # the step in progress when the optimizer that steps last took the boundaries over:
        # the steps before it were one first-optimizer step each, and it spans more than an
        # iteration (ingest marks them all split_iteration)
        self.handover_step: int | None = None
        self._watch = LeaderWatch()  # a leader that stopped stepping (an LR range test's)
        # set by the last call of :meth:`stepped` when a new optimizer took the loop over from
        # one that is gone or stopped stepping, and is not the same kind of optimizer over the
        # same parameters (a script that builds its optimizer anew each epoch): a loop after
        # another (an LR range test's, a sweep's next configuration, fine-tuning)
        self.new_loop = False
        # set with new_loop when the leader came back after another optimizer's loop: the
        # step it ends starts a loop again
        self.resumed = False
        self._led_kind: tuple[type, dict[int, weakref.ref[Any]]] | None = None

    def stepped(self, optimizer: Any, end_ns: int, cpu_ns: int,
                steps_done: int) -> tuple[bool, list[tuple[int, int]]]:
        self.new_loop = self.resumed = False
        leader = self._leader() if self._leader is not None else None
        if leader is None:
            # (a leader garbage-collected: the script built a new optimizer in its place)
            self.new_loop = self._leader is not None and not self._same_kind(optimizer)
            self._remember_kind(optimizer)
            self._leader = weakref.ref(optimizer)
            self._other = None
            # its steps since the leader was last seen, kept as another's run: steps too
            late = self._watch.run_of(optimizer)
            self._watch.leads(optimizer)
            logger.debug("step collector: %s marks the step boundaries", type(optimizer).__name__)
            if late:
                self._watch.leader_stepped()
                return True, late
        elif leader is not optimizer:
            ended = self._watch.interrupted(optimizer)
            if ended is not None:
                # the run's optimizer trained a loop of its own, now over: its steps were
                # steps, all found after the fact; this step starts a run of its own
                self._led_by(*ended)
                self._other = weakref.ref(optimizer)
                self._watch.other_stepped(optimizer, end_ns, cpu_ns)
                return False, ended[1]
            # another optimizer of the same loop (a GAN's generator, a second optimizer over
            # other parameters): remember the last one to step after the leader
            self._other = weakref.ref(optimizer)
            run = self._watch.other_stepped(optimizer, end_ns, cpu_ns)
            if not run:
                return False, []
            # the leader is gone (an LR range test's optimizer kept alive): this one's steps
            # were steps, found after the fact; this one ends the current step
            self._leader, self._other = weakref.ref(optimizer), None
            self.new_loop = not self._same_kind(optimizer)
            self._remember_kind(optimizer)
            self._watch.leads(optimizer)
            self._watch.leader_stepped()
            logger.debug("step collector: %s marks the step boundaries (the leader stopped)",
                         type(optimizer).__name__)
            return True, run[:-1]
        elif self._other is not None and _share_parameters(leader, self._other()) and \
                (ended := self._watch.pending(STALE_RUN)) is not None:
            # the leader steps again after another optimizer's run of STALE_RUN steps or
            # more over some of the same parameters: that run was a loop of its own (a head
            # fine-tuned between two stretches of the whole model's training, 60 + 20 + 40
            # steps, kept 60: the leader's return was read as a GAN's iteration order), and
            # this step starts the leader's again. A GAN's two optimizers share none: its
            # critic's runs, however long, stay parts of its iterations
            self.new_loop = self.resumed = True  # (its optimizer never led: another one)
            self._other = None
            self._watch.leader_stepped()
            return True, ended[1]
        elif self._other is not None and not self._handed_over:
            # the leader steps again after another optimizer did: an iteration ends with the
            # last optimizer to step, so from here on that one marks the boundaries (a window
            # then holds each forward with its backward). No boundary now: this step ends at
            # the new leader's next step (step 1, first calls).
            other = self._other()
            if other is not None:
                self._leader, self._handed_over = self._other, True
                self.handover_step = steps_done
                # the first iterations came one update a step for STALE_RUN steps or more (the
                # classic WGAN's 100 critic steps an iteration at first): a profiler window may
                # have fallen there, on critic steps alone; the iterations are a loop of their own
                self.new_loop = steps_done >= STALE_RUN
                self._watch.leads(other)
                logger.debug("step collector: %s marks the step boundaries (it steps last)",
                             type(other).__name__)
                return False, []
        self._watch.leader_stepped()
        return True, []


    def at_exit(self) -> list[tuple[int, int]]:
        """The ends of another optimizer's run still going at exit, when it is a loop of its
        own (``END_RUN`` steps or more, its optimizer never led), else none: steps found
        after the fact (``new_loop`` says whether they are a new loop)."""
        self.new_loop = False
        ended = self._watch.pending(END_RUN)
        if ended is None:
            short = self._watch.run_length()
            if short:
                logger.info("another optimizer stepped %d time(s) after the last step boundary "
                            "before the run ended: not recorded as steps (a loop of its own "
                            "takes %d)", short, END_RUN)
            return []
        self._led_by(*ended)
        return ended[1]

    def _led_by(self, ref: weakref.ref[Any], run: list[tuple[int, int]]) -> None:
        """The optimizer of ``ref`` (gone, perhaps) led the ``run`` just found."""
        optimizer = ref()
        # (gone: another optimizer than the last leader, and the next to step is compared
        # with the last leader's kind)
        self.new_loop = optimizer is None or not self._same_kind(optimizer)
        self._leader, self._other = ref, None
        if optimizer is not None:
            self._remember_kind(optimizer)
            self._watch.leads(optimizer)
        self._watch.leader_steps = len(run)  # its reign: what a run must match to take over

    def _remember_kind(self, optimizer: Any) -> None:
        # weak references by id: a parameter freed (a sweep's last model) is no longer there,
        # and a new one at the same address is another object (tensors compare elementwise,
        # so no set of them)
        params: dict[int, weakref.ref[Any]] = {}
        for p in _params(optimizer):
            try:
                params[id(p)] = weakref.ref(p)
            except TypeError:
                pass
        self._led_kind = (type(optimizer), params)

    def _same_kind(self, optimizer: Any) -> bool:
        """``optimizer`` is of the last leader's class, over the same parameters (all of
        them: fine-tuning a head after the whole model is another loop)."""
        if self._led_kind is None or type(optimizer) is not self._led_kind[0]:
            return False
        old = self._led_kind[1]
        params = _params(optimizer)
        return bool(params) and len({id(p) for p in params}) == len(old) \
            and all((r := old.get(id(p))) is not None and r() is p for p in params)


def _share_parameters(a: Any, b: Any) -> bool:
    """Whether optimizers ``a`` and ``b`` step some of the same tensors."""
    if a is None or b is None:
        return False
    ids = {id(p) for p in _params(a)}
    return any(id(p) in ids for p in _params(b))


def _params(optimizer: Any) -> list[Any]:
    return [p for g in getattr(optimizer, "param_groups", None) or []
            for p in g.get("params") or []]


class LeaderWatch:
    """The leader's step count, and the current run of another optimizer's step ends."""

    def __init__(self) -> None:
        self._led: weakref.WeakSet[Any] = weakref.WeakSet()
        self.leader_steps = 0
        self._run_of: weakref.ref[Any] | None = None
        self._run: list[tuple[int, int]] = []

    def leads(self, optimizer: Any) -> None:
        """``optimizer`` marks the boundaries from now on."""
        self._led.add(optimizer)
        self.leader_steps = 0
        self._run_of, self._run = None, []

    def leader_stepped(self) -> None:
        self.leader_steps += 1
        self._run_of, self._run = None, []

    def interrupted(self, optimizer: Any) -> tuple[weakref.ref[Any], list[tuple[int, int]]] | None:
        """The run of an optimizer that never led, ``STALE_RUN`` steps or more, when
        ``optimizer`` (not the leader) steps after it: that loop is over."""
        ref = self._run_of
        if ref is None or ref() is optimizer or len(self._run) < STALE_RUN:
            return None
        return self._take(ref)

    def run_length(self) -> int:
        """Steps in the run going now (0: none)."""
        return len(self._run) if self._run_of is not None else 0

    def run_of(self, optimizer: Any) -> list[tuple[int, int]]:
        """The ends of ``optimizer``'s run going now (none: another's, or none going)."""
        ref = self._run_of
        return list(self._run) if ref is not None and ref() is optimizer else []

    def pending(self, least: int) -> tuple[weakref.ref[Any], list[tuple[int, int]]] | None:
        """The run going now, when ``least`` steps or more of an optimizer that never led."""
        ref = self._run_of
        if ref is None or len(self._run) < least:
            return None
        return self._take(ref)

    def _take(self, ref: weakref.ref[Any]) -> tuple[weakref.ref[Any], list[tuple[int, int]]] | None:
        optimizer = ref()
        if optimizer is not None and optimizer in self._led:
            return None  # a WGAN's critic after the generator took over
        run, self._run_of, self._run = self._run, None, []
        return ref, run

    def other_stepped(self, optimizer: Any, end_ns: int, cpu_ns: int) -> list[tuple[int, int]]:
        """The ends of ``optimizer``'s run (this step's last) when it has taken over the loop,
        else an empty list."""
        if optimizer in self._led:
            return []  # a WGAN's critic after the generator took over: its runs are normal
        if self._run_of is None or self._run_of() is not optimizer:
            self._run_of, self._run = weakref.ref(optimizer), []
        self._run.append((end_ns, cpu_ns))
        if len(self._run) < max(STALE_RUN, self.leader_steps):
            return []
        run, self._run_of, self._run = self._run, None, []
        return run
