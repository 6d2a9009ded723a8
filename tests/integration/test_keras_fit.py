"""Keras 3 on its torch backend: ``model.fit(validation_split=...)`` of a small Sequential with
Keras' Adam. It runs as without dsprof; its steps are found though Keras' optimizer is no
torch.optim one (``backward()`` ends them); the epoch-end validation inside a counted step is
named as an evaluation (it iterates another DataLoader: ``steps.loader_batches``), with Keras'
``validation_freq``, not priced as an outlier to remove; and no advice names a torch.optim
switch Keras does not have."""

from __future__ import annotations

import importlib.util
import re

import pytest

from dsprof.analyzers.registry import analyze
from dsprof.run import load
from tests.integration.helpers import dsprof, meta, plain, write

pytestmark = pytest.mark.timed_runs  # judges its runs' times: recorded alone (tests/machine_share.py)

# not imported here: keras loads its default backend (TensorFlow) when imported without
# KERAS_BACKEND
if importlib.util.find_spec("keras") is None:
    pytest.skip("keras is not installed", allow_module_level=True)

KERAS_FIT = """
import os
import sys
os.environ["KERAS_BACKEND"] = "torch"
import numpy as np
import keras

keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(2048, 32)).astype("float32")
y = (x @ rng.normal(size=(32, 1)) > 0).astype("float32")
model = keras.Sequential([keras.Input(shape=(32,)), keras.layers.Dense(128, activation="relu"),
                          keras.layers.Dense(128, activation="relu"),
                          keras.layers.Dense(1, activation="sigmoid")])
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy",
              metrics=["accuracy"])
hist = model.fit(x, y, epochs=4, batch_size=32, validation_split=0.1, verbose=2)
print("final", round(hist.history["loss"][-1], 4))
model.save_weights(sys.argv[1])
"""


def _timeless(text: str) -> str:
    return re.sub(r"\d+s - \d+ms/step", "T", text)


def test_keras_fit_steps_and_its_validation_are_named(tmp_path):
    # GIVEN Keras' fit over 58 batches an epoch for 4 epochs, validating at each epoch's end
    script = write(tmp_path / "keras_fit.py", KERAS_FIT)
    bare = plain(script, str(tmp_path / "plain.weights.h5"), timeout=300)
    assert bare.returncode == 0, bare.stderr
    out = tmp_path / "run"
    res = dsprof("run", "-q", "--no-analyze", "-o", str(out), str(script), str(tmp_path / "ds.weights.h5"),
                 timeout=300)
    # THEN it runs as without dsprof: the same epoch lines but for the times, the same weights
    assert res.code == 0, res.stderr
    assert _timeless(res.stdout) == _timeless(bare.stdout) and "Epoch 4/4" in res.stdout
    assert (tmp_path / "ds.weights.h5").read_bytes() == (tmp_path / "plain.weights.h5"
                                                         ).read_bytes()
    assert "keras" in meta(out)["frameworks"]
    with load(out) as run:
        # AND every training batch is a step (Keras' optimizer.apply is no torch.optim step)
        assert run.sql("SELECT count(*) FROM steps")[0][0] == 58 * 4
        findings = analyze(run, write=False).findings
    # AND the epoch-end validation in the counted steps is named as the script's evaluation,
    # with Keras' switch, and no saving: at each epoch's end, named by its pass over another
    # DataLoader, or, where the stride stood out, as periodic work
    steps = [f for f in findings if f.analyzer == "step_outliers"]
    extra = [f for f in steps if f.kind in ("steps.extra_work", "steps.periodic")]
    assert extra, [f.title for f in steps]
    assert "evaluation" in extra[0].title and "validation_freq" in extra[0].fix, extra[0].fix
    assert "if step %" not in extra[0].fix
    assert not extra[0].saving_s
    # (other steps that ran slow are the machine's to judge: CI's quiet rehearsal of 3999815
    # had 3 beside the validations; they get their own verdict, which never counts the
    # validations' time)
    for f in steps:
        if f is not extra[0]:
            assert not set(f.data["steps"]) & set(extra[0].data["steps"]), f.title
    # AND no advice names a torch.optim switch
    for f in findings:
        assert "fused=True" not in f.fix and "torch.optim" not in f.fix, f.title
