"""The chain rule of the fusion analyzer on hand-built op sequences (no trace needed)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from dsprof.analyzers.fusion import classify, fold_indices
from dsprof.metrics.ops.fusion_chains import chain_bytes, chain_saving, find_chains
from dsprof.metrics.ops.opbytes import op_io
from dsprof.metrics.ops.optable import Op


def op(name: str, *shapes: tuple[int, ...], module: str = "M.blocks.0.act", t_us: float = 100,
       dtype: str = "float") -> Op:
    io = op_io(json.dumps([list(s) for s in shapes]), json.dumps([dtype] * len(shapes)))
    op.n = getattr(op, "n", 0) + 1
    return Op(0, 1, op.n, "aten::" + name, op.n * 1000, op.n * 1000 + 500, t_us * 1e-6,
              module, io, op.n, json.dumps([dtype] * len(shapes)))


X = (1024, 256)


def test_a_pointwise_chain_is_consecutive_ops_each_consuming_the_last_output():
    # GIVEN a tanh GELU written out, between two matmuls, with a view in the middle
    seq = [op("addmm", (256,), (1024, 64), (64, 256), module="M.blocks.0.up"),
           op("pow", X), op("mul", X, ()), op("add", X, X), op("view", X), op("mul", X, ()),
           op("tanh", X), op("add", X, ()), op("mul", X, X),
           op("addmm", (64,), X, (256, 64), module="M.blocks.0.down")]
    # WHEN chains are found
    chains = find_chains(seq, frozenset({"M", "M.blocks.0", "M.blocks.0.act"}))
    # THEN the 7 pointwise ops form one chain held by the act module, named a GELU
    assert len(chains) == 1
    chain = chains[0]
    assert chain.names == ("pow", "mul", "add", "mul", "tanh", "add", "mul")
    assert chain.module == "M.blocks.0.act" and chain.before.name == "aten::addmm"
    assert classify(chain, device=False) == "fusion.hand_gelu"
    # AND a fused kernel moves x in and y out only (4 bytes x 2 x 256k), far below op by op
    total, fused = chain_bytes(chain)
    assert fused == 2 * 1024 * 256 * 4 + 3 * 4  # + the three 0-dim float operands
    assert total > 6 * fused
    # AND the saving is positive and never more than the chain's own time
    saving, now = chain_saving(chain, bandwidth=5e9, overhead=5e-6)
    assert 0 < saving <= now


def test_a_shape_change_or_a_non_fusible_op_ends_the_chain():
    # GIVEN add -> mul on one shape, a matmul, then relu on another shape
    seq = [op("add", X, X), op("mul", X, ()), op("mm", X, (256, 8)), op("relu", (1024, 8)),
           op("sigmoid", (7, 7))]
    # WHEN chains are found
    chains = find_chains(seq)
    # THEN only add -> mul is a chain (relu stands alone on a CPU run; sigmoid does not
    # consume relu's output)
    assert [c.names for c in chains] == [("add", "mul"), ("relu",)]
    assert classify(chains[1], device=False) == ""
    assert classify(chains[1], device=True) == "fusion.linear_activation"


def test_a_mask_computed_on_the_side_joins_the_attention_chain():
    # GIVEN hand-written attention: matmul, scale, ~mask, masked_fill, softmax, matmul
    s = (4, 4, 128, 128)
    seq = [op("matmul", (4, 4, 128, 32), (4, 4, 32, 128), module="M.attn"),
           op("mul", s, (), module="M.attn"), op("bitwise_not", (128, 128), module="M.attn",
                                                 dtype="bool"),
           op("masked_fill", s, (128, 128), module="M.attn"), op("softmax", s, module="M.attn"),
           op("matmul", s, (4, 4, 128, 32), module="M.attn")]
    # WHEN chains are found
    chains = find_chains(seq, frozenset({"M", "M.attn"}))
    # THEN one chain covers scale, mask and softmax, and it is named attention
    assert [c.names for c in chains] == [("mul", "bitwise_not", "masked_fill", "softmax")]
    assert classify(chains[0], device=False) == "fusion.attention"


def test_a_chain_does_not_span_two_blocks_of_a_module_list():
    # GIVEN block 0's residual add followed by block 1's RMSNorm (ModuleList never called)
    seq = [op("add", X, X, module="M.blocks.0"), op("pow", X, (), module="M.blocks.1.norm"),
           op("mean", X, module="M.blocks.1.norm"),
           op("add", (1024, 1), (), module="M.blocks.1.norm"),
           op("rsqrt", (1024, 1), module="M.blocks.1.norm"),
           op("mul", X, (1024, 1), module="M.blocks.1.norm"),
           op("mul", X, (256,), module="M.blocks.1.norm")]
    called = frozenset({"M", "M.blocks.0", "M.blocks.1", "M.blocks.1.norm"})
    # WHEN chains are found
    chains = find_chains(seq, called)
    # THEN the norm is one chain of its own, a hand-written RMSNorm
    assert [c.module for c in chains] == ["M.blocks.1.norm"]
    assert chains[0].names == ("pow", "mean", "add", "rsqrt", "mul", "mul")
    assert classify(chains[0], device=False) == "fusion.hand_norm"


def test_conv_batchnorm_relu_skips_the_batch_counter():
    # GIVEN conv2d, BatchNorm's num_batches_tracked += 1, batch_norm, relu_
    a = (8, 32, 16, 16)
    seq = [op("conv2d", (8, 3, 16, 16), (32, 3, 3, 3), module="S.0.0"),
           op("add_", (), (), module="S.0.1", dtype="long int"),
           op("batch_norm", a, (32,), (32,), (32,), (32,), module="S.0.1"),
           op("relu_", a, module="S.0.2")]
    # WHEN chains are found
    chains = find_chains(seq, frozenset({"S", "S.0", "S.0.0", "S.0.1", "S.0.2"}))
    # THEN batch_norm -> relu_ follows the conv, held by the block
    assert [c.names for c in chains] == [("batch_norm", "relu_")]
    assert chains[0].module == "S.0"
    assert classify(chains[0], device=False) == "fusion.conv_bn"


def test_layer_indices_fold_into_one_pattern():
    assert fold_indices("M.blocks.12.mlp.0") == "M.blocks.*.mlp.*"
    assert fold_indices("M.head") == "M.head"


def test_the_library_op_knob_is_offered_only_where_the_chain_is_the_whole_module():
    from dsprof.analyzers.fusion_fixes import library_op, whole_module

    def gelu(module: str) -> list[Op]:
        return [op("pow", X, module=module), op("mul", X, (), module=module),
                op("add", X, X, module=module), op("mul", X, (), module=module),
                op("tanh", X, module=module), op("add", X, (), module=module),
                op("mul", X, X, module=module)]

    called = frozenset({"M", "M.blocks.0", "M.blocks.0.act", "M.blocks.0.mlp"})
    # GIVEN a GELU module whose forward is the chain (and a view), between two Linear modules
    alone = [op("addmm", (256,), (1024, 64), (64, 256), module="M.blocks.0.up"),
             op("view", X, module="M.blocks.0.act"), *gelu("M.blocks.0.act"),
             op("addmm", (64,), X, (256, 64), module="M.blocks.0.down")]
    (chain,) = find_chains(alone, called)
    # THEN the library op can stand in for that module's forward
    assert whole_module(chain, alone)
    assert library_op(classify(chain, device=False), chain.names) == "gelu_tanh"
    # GIVEN the same GELU inline in an MLP module whose forward also runs its matmuls
    inline = [op("addmm", (256,), (1024, 64), (64, 256), module="M.blocks.0.mlp"),
              *gelu("M.blocks.0.mlp"),
              op("addmm", (64,), X, (256, 64), module="M.blocks.0.mlp")]
    (chain,) = find_chains(inline, called)
    # THEN swapping the module's forward would drop the matmuls: no library-op knob
    assert chain.module == "M.blocks.0.mlp" and not whole_module(chain, inline)


def _new_gelu(shape: tuple[int, ...], t_us: float) -> list[Op]:
    """transformers' NewGELUActivation as the profile shows it: 8 ops, each ``t_us``."""
    return [op("mul", shape, (), t_us=t_us), op("pow", shape, (), t_us=t_us),
            op("mul", shape, (), t_us=t_us), op("add", shape, shape, t_us=t_us),
            op("mul", shape, (), t_us=t_us), op("tanh", shape, t_us=t_us),
            op("add", shape, (), t_us=t_us), op("mul", shape, shape, t_us=t_us)]


@pytest.mark.parametrize("shape, total_us", [
    # GPT-2 tiny (hf_gpt2, hf_trainer): on a quiet machine 0.162-0.180 ms a step for 2
    # instances forward + backward (thread CPU time, benchmarks/gelu_swap_cpu.py's (32, 256))
    ((2, 16, 256), 86),
    # fusion_mlp: 4.97 ms a step for 2 instances, as verify measures it (benchmarks/advice.py,
    # 6 paired rounds, quiet machine)
    ((2048, 256), 2485),
])
def test_a_library_gelu_on_cpu_saves_what_was_measured_in_training(shape, total_us):
    from dsprof.metrics.ops.library_cost import (
        CALIBRATED_S_PER_ELEMENT,
        LibraryCost,
        library_op_saving,
    )

    called = frozenset({"M", "M.blocks.0", "M.blocks.0.act"})
    cost = LibraryCost(*CALIBRATED_S_PER_ELEMENT["gelu_tanh"], "calibrated (one thread)")
    # GIVEN the 8-op tanh GELU on the calibration shapes, as a profile records it
    (chain,) = find_chains(_new_gelu(shape, t_us=25), called)
    # WHEN F.gelu replaces it on CPU
    # THEN forward + backward save what the swap saved in training (5 %). (The forward alone
    # is not: on a quiet machine it saved 10.3-10.6 us and 0.73-1.06 ms where the constants'
    # forward half gives 44 us and 1.42 ms; docs/analyzers.md.)
    assert library_op_saving(chain, True, cost) == pytest.approx(total_us * 1e-6, rel=0.05)
    # AND the profiled op times do not move it: the profiler inflates a chain of small ops
    # (7x on GPT-2 tiny) and the machine's load moves them
    (slow,) = find_chains(_new_gelu(shape, t_us=250), called)
    assert library_op_saving(slow, True, cost) == library_op_saving(chain, True, cost)


def test_a_library_op_dearer_than_the_chain_saves_nothing():
    from dsprof.metrics.ops.library_cost import LibraryCost, library_op_saving

    (chain,) = find_chains(_new_gelu((2048, 256), t_us=25),
                           frozenset({"M", "M.blocks.0", "M.blocks.0.act"}))
    # GIVEN a library op that costs 100 ns an element: never a negative saving
    assert library_op_saving(chain, True, LibraryCost(1e-7, 1e-7, "test")) == 0.0


def test_the_chain_dtype_is_its_output_tensors():
    from dsprof.metrics.ops.library_cost import chain_dtype

    (fp32,) = find_chains(_new_gelu((64, 256), t_us=25), frozenset({"M", "M.blocks.0",
                                                                    "M.blocks.0.act"}))
    assert chain_dtype(fp32) == "float"
    bf16 = [op(o.short, *[s for s, _ in o.io.inputs], dtype="c10::BFloat16")
            for o in _new_gelu((64, 256), t_us=25)]
    (chain,) = find_chains(bf16, frozenset({"M", "M.blocks.0", "M.blocks.0.act"}))
    assert chain_dtype(chain) == "c10::BFloat16"

def test_a_chain_that_ends_in_its_reduction_is_no_norm():
    # GIVEN a hand-written loss: (d * d) * 0.5 + eps, sqrt, mean over everything
    seq = [op("sub", X, X), op("mul", X, X), op("mul", X, ()), op("add", X, ()), op("sqrt", X),
           op("mean", X)]
    # WHEN classified
    chains = find_chains(seq)
    assert [c.names for c in chains] == [("sub", "mul", "mul", "add", "sqrt", "mean")]
    # THEN it is a pointwise chain, not a LayerNorm (a norm returns the normalised tensor)
    assert classify(chains[0], device=False) == "fusion.pointwise_chain"
    # AND an RMSNorm, whose mean is followed by the scaling, still is a norm
    rms = find_chains([op("pow", X, ()), op("mean", X), op("add", (1024, 1), ()),
                       op("rsqrt", (1024, 1)), op("mul", X, (1024, 1))])
    assert [classify(c, device=False) for c in rms] == ["fusion.hand_norm"]


def test_a_preprocessing_loop_makes_one_chain_per_iteration_not_one_chain_of_all():
    # GIVEN a loop over samples, each `torch.randn(256, 64).tanh().sum(0)` (randn is in no
    # forward sequence: not differentiable), 20,000 iterations in grad mode
    seq = []
    for _ in range(20_000):
        seq += [op("tanh", (256, 64), module=None), op("sum", (256, 64), module=None)]
    # WHEN chains are found (with the called modules known)
    chains = find_chains(seq, frozenset({"M"}))
    # THEN each iteration is its own tanh -> sum: a sum's output, smaller than its input, does
    # not feed the next sample's tanh, and a pointwise op parked as a side op does not pull
    # the next sum into the chain (before, one "chain" of every op, found in quadratic time:
    # 110 s on 68,544 ops)
    assert len(chains) == 20_000
    assert {c.names for c in chains} == {("tanh", "sum")}


def test_a_reduction_feeds_an_op_that_takes_its_smaller_output():
    # GIVEN x - x.mean(-1, keepdim=True), then * x.pow(2).sum()
    seq = [op("mean", X, (1,), ()), op("sub", X, (1024, 1)), op("pow", X, ()),
           op("sum", X), op("mul", X, ())]
    chains = find_chains(seq)
    # THEN mean -> sub -> pow -> sum -> mul is one chain (each reduction's next op takes
    # something smaller than the reduction's input: the kept mean, the 0-dim sum)
    assert [c.names for c in chains] == [("mean", "sub", "pow", "sum", "mul")]


def test_a_wrapped_python_number_is_not_a_reductions_output():
    # GIVEN u.relu().mean(0), then the next sample's (x * 0.5 + y).relu(): the profiler records
    # the 0.5 as a 0-dim double beside the float tensor
    half = dataclasses.replace(op("mul", X, ()),
                               io=op_io(json.dumps([list(X), []]), '["float", "double"]'))
    seq = [op("relu", X), op("mean", X), half, op("add", X, X), op("relu", X)]
    chains = find_chains(seq)
    # THEN the mean ends its chain (the mul does not take its output), and the next sample's
    # ops, parked as side ops while they fed nothing of the chain, start their own
    assert [c.names for c in chains] == [("relu", "mean"), ("mul", "add", "relu")]


def test_a_ppo_loss_linked_by_its_shapes_is_named_after_no_library_op():
    # GIVEN the op chain Stable-Baselines3's PPO loss recorded on CPU (batch 64, 2 actions),
    # after the action net's Linear: the entropy (clamp -> softmax -> mul -> sum -> neg), the
    # advantages normalised (mean -> sub -> std -> div), then ratio and clipped surrogate
    # (sub -> exp -> mul -> clamp -> mul): consecutive ops of one length, linked by shape
    b, a = (64,), (64, 2)
    seq = [op("linear", (64, 64), (2, 64), (2,), module=None),
           op("clamp", a, module=None), op("softmax", a, module=None),
           op("mul", a, a, module=None), op("sum", a, module=None), op("neg", b, module=None),
           op("mean", b, module=None), op("sub", b, (), module=None),
           op("std", b, module=None), op("div", b, (), module=None),
           op("sub", b, b, module=None), op("exp", b, module=None),
           op("mul", b, b, module=None), op("clamp", b, module=None),
           op("mul", b, b, module=None)]
    # WHEN chains are found and classified
    (chain,) = find_chains(seq)
    assert len(chain.ops) == 14 and chain.before.name == "aten::linear"
    # THEN it is a pointwise chain: no attention (the softmax's output goes on to more
    # pointwise math, not to a matmul), no LayerNorm (clamp, softmax, exp are no norm's
    # ops), no softmax by hand (neither are clamp and std)
    assert classify(chain, device=False) == "fusion.pointwise_chain"
    # AND its parts alone are not named either
    entropy = dataclasses.replace(chain, ops=chain.ops[:5])
    assert classify(entropy, device=False) == "fusion.pointwise_chain"
    advantages = dataclasses.replace(chain, ops=chain.ops[5:9], before=None)
    assert classify(advantages, device=False) == "fusion.pointwise_chain"
    # AND the same softmax with its probabilities going to a matmul, dropped out on the way,
    # is attention
    scores = dataclasses.replace(chain, ops=(chain.ops[0], chain.ops[1],
                                             op("dropout", a, module=None)))
    assert classify(scores, device=False) == "fusion.attention"


def test_an_lstm_cell_written_out_is_no_gelu():
    # GIVEN a hand LSTM cell's gate math: sigmoid gates, c = f * c + i * g, h = o * tanh(c)
    g = (32, 128)
    seq = [op("addmm", (512,), (32, 64), (64, 512)), op("sigmoid", g), op("mul", g, g),
           op("add", g, g), op("tanh", g), op("mul", g, g)]
    (chain,) = find_chains(seq)
    # THEN tanh among multiplies does not make it a tanh GELU: sigmoid is no GELU's op
    assert classify(chain, device=False) == "fusion.pointwise_chain"


def test_a_chain_in_no_module_is_told_to_compile_the_function_around_it():
    from dsprof.analyzers.fusion_fixes import UNATTRIBUTED, fix_text

    (chain,) = find_chains([op("sub", X, X, module=None), op("exp", X, module=None),
                            op("mul", X, X, module=None)])
    # WHEN the trace recorded module calls (a dsprof run) and none held the chain
    _, fix = fix_text("fusion.pointwise_chain", UNATTRIBUTED, "sub -> exp -> mul", chain,
                      modules_recorded=True)
    # THEN the fix compiles the loss function, not the model whose forward never ran it
    assert fix.splitlines()[-1] == "loss_fn = torch.compile(loss_fn)"
    assert "model" not in fix
    # AND where the trace recorded no modules (an imported trace), the model is compiled
    _, unknown = fix_text("fusion.pointwise_chain", UNATTRIBUTED, "sub -> exp", chain,
                          modules_recorded=False)
    assert "model.compile()" in unknown
    # AND a chain in a module still compiles that module
    _, in_module = fix_text("fusion.pointwise_chain", "M.blocks.*.act", "sub -> exp", chain)
    assert "model.blocks[i].act.compile()" in in_module
