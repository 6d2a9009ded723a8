"""Another optimizer's run that is a loop of its own though shorter than the leader's reign
(collectors/step_leader.py): interrupted by a third optimizer, or still going at exit."""

from __future__ import annotations

import torch

from dsprof.collectors.step_leader import END_RUN, STALE_RUN, StepLeader


def _opt() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)


def _steps(leader: StepLeader, opt, n: int, t: list[int]) -> list[tuple[bool, list]]:
    out = []
    for _ in range(n):
        t[0] += 1
        out.append(leader.stepped(opt, t[0], t[0], 0))
    return out


def test_a_run_still_going_at_exit_is_a_loop_of_its_own():
    # GIVEN 100 steps of a kept optimizer, then 10 of another (fine-tuning a head)
    leader, t = StepLeader(), [0]
    first, second = _opt(), _opt()
    _steps(leader, first, 100, t)
    assert all(not ends for ends, _ in _steps(leader, second, 10, t))
    # THEN at exit its 10 steps are steps, a new loop
    late = leader.at_exit()
    assert [end for end, _ in late] == list(range(101, 111)) and leader.new_loop


def test_a_short_run_at_exit_is_not_one():
    leader, t = StepLeader(), [0]
    first, second = _opt(), _opt()
    _steps(leader, first, 100, t)
    _steps(leader, second, END_RUN - 1, t)
    assert leader.at_exit() == []


def test_a_critic_that_led_is_never_a_loop_at_exit():
    # GIVEN a WGAN: the critic steps first (leads), the generator steps after it (takes the
    # boundaries over as the optimizer that steps last), then the script ends in the middle of
    # an iteration with 100 critic steps (the reference WGAN's first iterations)
    leader, t = StepLeader(), [0]
    critic, generator = _opt(), _opt()
    for _ in range(5):
        _steps(leader, critic, 5, t)
        _steps(leader, generator, 1, t)
    _steps(leader, critic, 100, t)
    # THEN nothing is taken at exit
    assert leader.at_exit() == []


def test_a_run_a_third_optimizer_interrupts_is_a_loop_of_its_own():
    # GIVEN 100 steps of a kept optimizer, then fits of 20 steps each by new optimizers
    leader, t = StepLeader(), [0]
    kept, fit1, fit2 = _opt(), _opt(), _opt()
    _steps(leader, kept, 100, t)
    assert STALE_RUN <= 20
    _steps(leader, fit1, 20, t)
    # THEN the second fit's first step finds the first fit's 20 steps, a new loop, and ends none
    ends, late = leader.stepped(fit2, 999, 999, 0)
    assert not ends and [end for end, _ in late] == list(range(101, 121)) and leader.new_loop
    # AND the second fit, 20 steps as long as the first's reign, takes the boundaries over
    t[0] = 1000
    results = _steps(leader, fit2, 19, t)
    assert results[-1][0] and len(results[-1][1]) == 19


def test_the_leader_back_after_another_optimizers_loop_starts_its_own_again():
    # GIVEN 60 steps of Adam, 20 of a head's SGD, then Adam again for 40 (the fine-tuned model
    # trained on as a whole): Adam's return was read as a GAN's iteration order, and the
    # boundaries went to the SGD, which never stepped again (60 steps recorded of 120)
    leader, t = StepLeader(), [0]
    weight = torch.nn.Parameter(torch.zeros(2))
    whole = torch.optim.Adam([weight, torch.nn.Parameter(torch.zeros(2))])
    head = torch.optim.SGD([weight], lr=0.1)  # some of the same tensors
    assert all(ends for ends, _ in _steps(leader, whole, 60, t))
    _steps(leader, head, 20, t)
    ends, late = leader.stepped(whole, 999, 999, 60)
    # THEN the head's 20 steps are steps, a loop, and Adam's step ends one, starting another
    assert ends and len(late) == 20 and leader.new_loop and leader.resumed
    t[0] = 1000
    assert all(ends for ends, _ in _steps(leader, whole, 39, t))


def test_a_gans_short_runs_still_hand_the_boundaries_to_the_optimizer_that_steps_last():
    # GIVEN a GAN whose discriminator leads and the generator steps once after it
    leader, t = StepLeader(), [0]
    d, g = _opt(), _opt()
    _steps(leader, d, 1, t)
    _steps(leader, g, 1, t)
    ends, late = leader.stepped(d, 999, 999, 1)
    # THEN no loop: the generator marks the boundaries from here (it steps last)
    assert not ends and late == [] and not leader.new_loop and not leader.resumed


def test_a_handover_after_a_long_split_is_a_loop_and_a_short_one_is_not():
    # GIVEN the classic WGAN: 100 critic steps, then the generator's (it steps last, and takes
    # the boundaries over at the critic's next step): the 100 were one update a step, where a
    # profiler window had fallen on critic steps alone
    def handover(critic_steps: int) -> bool:
        leader, t = StepLeader(), [0]
        critic, generator = _opt(), _opt()
        _steps(leader, critic, critic_steps, t)
        _steps(leader, generator, 1, t)
        ends, _ = leader.stepped(critic, 999, 999, critic_steps)
        assert not ends and leader.handover_step == critic_steps
        return leader.new_loop

    # THEN the iterations after it are a loop of their own; after WGAN-GP's 5, not
    assert handover(100) and not handover(5)


def test_a_gan_whose_generator_steps_first_keeps_its_long_critic_runs_in_its_iterations():
    # GIVEN a generator that steps first, then 100 critic steps, then the generator again: the
    # two optimizers step different tensors (a GAN), unlike a head fine-tuned inside a model
    leader, t = StepLeader(), [0]
    generator, critic = _opt(), _opt()
    _steps(leader, generator, 1, t)
    _steps(leader, critic, 100, t)
    ends, late = leader.stepped(generator, 999, 999, 1)
    # THEN no loop: the critic marks the boundaries from here on (it steps last)
    assert not ends and late == [] and not leader.resumed
