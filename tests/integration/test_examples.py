"""The example training scripts run end to end as plain Python programs (no dsprof involved)."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples"

pytestmark = pytest.mark.slow


def run_example(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


@pytest.mark.parametrize("script", ["mlp.py", "transformer_lm.py", "cnn.py", "ddp_train.py"])
def test_example_runs_requested_steps(script: str) -> None:
    # GIVEN an example training script
    assert (EXAMPLES / script).is_file()

    # WHEN it runs for 3 steps
    result = run_example(script, "--steps", "3")

    # THEN it exits cleanly and its final line reports the 3 steps
    assert result.returncode == 0, result.stderr
    assert "3 steps" in last_line(result.stdout), result.stdout


def test_transformer_lm_runs_with_sdpa() -> None:
    # GIVEN the transformer LM with attention switched to scaled_dot_product_attention
    args = ("--steps", "2", "--sdpa")

    # WHEN it runs for 2 steps
    result = run_example("transformer_lm.py", *args)

    # THEN it exits cleanly and reports the 2 steps with sdpa attention
    assert result.returncode == 0, result.stderr
    line = last_line(result.stdout)
    assert "2 steps" in line, result.stdout
    assert "sdpa" in line, result.stdout


def test_hand_norm_softmax_swaps_promise_the_memory_they_free(tmp_path) -> None:
    # GIVEN the example with a hand softmax, LayerNorm and RMSNorm, profiled
    from dsprof.analyzers.registry import analyze
    from dsprof.run import load
    from tests.integration.helpers import dsprof

    out = tmp_path / "run"
    res = dsprof("run", "-q", "--no-analyze", "-o", str(out), str(EXAMPLES / "hand_norm_softmax.py"),
                 "--steps", "8")
    assert res.code == 0, res.stderr
    assert "8 steps" in last_line(res.stdout)
    with load(out) as run:
        found = {(f.kind, f.key.split(":")[0]): f for f in analyze(run, write=False).findings
                 if f.kind.startswith("fusion.hand_")}
    # THEN torch.softmax frees the scores the hand form kept (MiBs), F.layer_norm what the
    # hand LayerNorm saved beyond its input, and F.rms_norm, which keeps what the hand form
    # keeps on CPU, promises nothing where it is found (its CPU saving is none, so it is not
    # always found; tests/unit/test_swap_memory.py has the byte counts of each)
    softmax = found[("fusion.hand_softmax", "Model.blocks.*.softmax")]
    assert softmax.saving_bytes > 4 * 2**20
    layer_norm = found[("fusion.hand_norm", "Model.blocks.*.norm1")]
    assert 0 < layer_norm.saving_bytes < softmax.saving_bytes
    rms = [f for (kind, key), f in found.items() if kind == "fusion.hand_norm"
           and "norm1" not in key]
    assert all(f.saving_bytes == 0 for f in rms)
