"""Which ops the CPU fp64 price counts (analyzers/cpu_fp64.py); the price itself is checked on
real runs in tests/integration/test_cpu_fp64.py."""

from __future__ import annotations

from dsprof.analyzers.cpu_fp64 import _first_float


def test_an_op_is_fp64_by_its_first_floating_point_input():
    # an fp64 matmul, and an fp64 embedding lookup (its indices come first)
    assert _first_float('["double", "double"]') == "double"
    assert _first_float('["long int", "double"]') == "double"
    # an fp32 op handed a 0-dim fp64 tensor after its fp32 input is an fp32 op
    assert _first_float('["float", "double"]') == "float"
    # no floating-point input at all
    assert _first_float('["long int", "Scalar"]') is None
    assert _first_float(None) is None



def test_fp64_beside_matrix_factorizations_is_not_advised_away():
    from dsprof.analyzers.registry import analyze
    from dsprof.run import Run
    from tests.unit.test_analyzers_synthetic import MS, steps, table

    # GIVEN an fp64 matmul of a CPU run, alone, and then beside an fp64 Cholesky (a Gaussian
    # process: GPyTorch casts its Cholesky to float64 in an fp32 model; an exact GP is fp64 on
    # purpose)
    mm = {"id": 1, "step": 1, "name": "aten::mm", "cat": "cpu_op", "thread": 1,
          "start_ns": 21 * MS, "dur_ns": 5 * MS, "self_ns": 5 * MS, "flops": 2 * 512**3,
          "dtypes": '["double", "double"]', "input_shapes": "[[512, 512], [512, 512]]",
          "module": "model.proj", "phase": "forward"}
    chol = {**mm, "id": 2, "name": "aten::linalg_cholesky_ex", "flops": None,
            "input_shapes": "[[512, 512]]", "dtypes": '["double"]', "start_ns": 27 * MS}

    def kinds(*ops):
        run = Run.from_tables(meta={"source": "import"}, steps=steps([20, 20]), ops=table(*ops))
        out = analyze(run, only=("tensor_cores",), write=False)
        return [f.kind for f in out.findings], [s["reason"] for s in out.skipped]

    assert kinds(mm)[0] == ["tensor_core.fp64"]
    # THEN beside the factorization it is not: fp64 is the model's numerics, said in skipped
    found, why = kinds(mm, chol)
    assert found == [] and "aten::linalg_cholesky_ex" in why[0] and "not advised" in why[0]
