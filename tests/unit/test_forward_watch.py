"""Which outermost forward calls were training's, once training takes over
(collectors/forward_watch.py ``training_forwards``)."""

from __future__ import annotations

import torch

from dsprof.collectors.forward_watch import ForwardWatch


def _watch() -> ForwardWatch:
    return ForwardWatch(None, lambda module: None)


def test_the_grad_mode_calls_after_no_grad_inference_are_the_training_forward():
    # GIVEN 3 encoder calls under no_grad, then the head and a loss module in grad mode
    watch = _watch()
    encoder, head, loss = torch.nn.Identity(), torch.nn.Linear(1, 1), torch.nn.MSELoss()
    with torch.no_grad():
        for _ in range(3):
            watch._called(encoder)
    watch._called(head)
    watch._called(loss)
    # WHEN training takes over THEN both grad-mode calls were its first forward, and they
    # leave the inference counts
    assert watch.training_forwards() == 2
    assert (watch.calls, watch.classes) == (3, {"Identity": 3})
    # (asked again, nothing more is taken)
    assert watch.training_forwards() == 0 and watch.calls == 3


def test_inference_in_grad_mode_gives_up_only_the_last_call():
    # GIVEN forwards that all ran in grad mode (an evaluation without no_grad): which were
    # inference cannot be told, but the backward() needed the last one
    watch = _watch()
    model = torch.nn.Linear(1, 1)
    for _ in range(5):
        watch._called(model)
    assert watch.training_forwards() == 1
    assert (watch.calls, watch.classes) == (4, {"Linear": 4})


def test_a_model_and_its_loss_module_in_grad_mode_give_up_one_iteration():
    # GIVEN an evaluation without no_grad, each batch the model then nn.CrossEntropyLoss,
    # and training's first forward the same two calls
    watch = _watch()
    model, loss = torch.nn.Linear(1, 1), torch.nn.CrossEntropyLoss()
    for _ in range(21):
        watch._called(model)
        watch._called(loss)
    # WHEN training takes over THEN its first forward is both calls (before: the loss
    # module's only, the model's counted as a 21st inference forward)
    assert watch.training_forwards() == 2
    assert (watch.calls, watch.classes) == (40, {"Linear": 20, "CrossEntropyLoss": 20})


def test_inference_mode_counts_as_no_grad_and_the_tail_stays_short():
    watch = _watch()
    model = torch.nn.Linear(1, 1)
    with torch.inference_mode():
        watch._called(model)
    for _ in range(200):
        watch._called(model)
    # a first iteration's forward is a handful of calls: at most 8 are taken
    assert watch.training_forwards() == 8 and watch.calls == 201 - 8
