"""Training pieces: class and pixel weights, the weighted loss, a few steps."""

import numpy as np
import pytest

from maxidetect.classes import N_CLASSES, class_index
from maxidetect.training.train import (
    PatchStream,
    TrainConfig,
    class_weights,
    make_trainer,
    pixel_weights,
    truth_planes,
    weighted_bce_numpy,
)


def test_class_weights_inverse_proportions():
    np.testing.assert_allclose(class_weights([0.5, 0.25, 0.25]), [0.2, 0.4, 0.4])
    with pytest.raises(ValueError):
        class_weights([0.5, 0.0])


def test_pixel_weights_sum_and_smoothing():
    planes = np.zeros((2, 5, 5), bool)
    planes[0, 2, 2] = planes[1, 2, 2] = True  # one pixel in both classes
    w = pixel_weights(planes, [0.3, 0.7], smooth=1)
    assert w[2, 2] == pytest.approx(1.0) and w.sum() == pytest.approx(1.0)
    ws = pixel_weights(planes, [0.3, 0.7], smooth=3)
    np.testing.assert_allclose(ws[1:4, 1:4], 1 / 9, rtol=1e-6)
    assert ws[0, 0] == 0


def test_truth_planes_background():
    truth = np.array([[0, 1], [8, 1 | 64]], np.int32)
    p = truth_planes(truth)
    assert p.shape == (N_CLASSES, 2, 2)
    assert p[class_index("BG")].tolist() == [[True, False], [False, False]]
    assert p[class_index("TRL")][1, 1] and p[class_index("CR")][1, 1] and p[class_index("HP")][1, 0]


def test_weighted_bce_hand_computed():
    # One pixel, two classes: logit 0 with target 1 -> log 2; logit 2 with target 0 -> 2 + log(1 + e^-2).
    loss = weighted_bce_numpy([[[0.0, 2.0]]], [[[1.0, 0.0]]], [[2.0]])
    assert loss == pytest.approx(2 * (np.log(2) + 2 + np.log1p(np.exp(-2))))


def test_few_steps_lower_the_loss_on_a_tiny_model():
    cfg = TrainConfig(init=None, width=0.125, patch=64, frame_size=128, batch=2, learning_rate=3e-3, l2=0.0)
    stream = PatchStream(patch=64, frame_size=128, seed=1, per_frame=2)
    x, y, w = next(stream.batches(2))
    assert x.shape == (2, 64, 64, 1) and y.shape == (2, 64, 64, N_CLASSES) and w.shape == (2, 64, 64)
    assert stream.n_pixels == 2 * 64 * 64 and stream.proportions.sum() >= 1.0  # every pixel has a class
    model, step = make_trainer(cfg)
    z = np.asarray(model(x, logits=True))
    first = weighted_bce_numpy(z, y, w)
    losses = [float(step(x, y, w)) for _ in range(16)]
    assert losses[0] == pytest.approx(first, rel=1e-3)  # the training loss is the reference loss
    # Initial weights seeds 0-7 ended at 0.25-0.30 of the first loss after 16 steps.
    assert losses[-1] < 0.5 * losses[0]


def test_from_scratch_initial_weights_follow_the_seed():
    def first_kernel(seed):
        model, _ = make_trainer(TrainConfig(init=None, width=0.125, seed=seed))
        return np.asarray(model.trainable_weights[0])

    a, b, c = first_kernel(3), first_kernel(3), first_kernel(4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_train_cli_writes_weights_and_record(tmp_path):
    import json

    from maxidetect.cli import main

    cfg = tmp_path / "t.json"
    cfg.write_text(json.dumps({"init": None, "width": 0.125, "patch": 64, "frame_size": 128, "batch": 1,
                               "steps": 2, "learning_rate": 1e-3}))
    out = tmp_path / "tiny.weights.h5"
    assert main(["train", str(cfg), "--out", str(out)]) == 0
    rec = json.loads((tmp_path / "tiny.weights.json").read_text())
    assert out.stat().st_size > 0 and len(rec["losses"]) == 2
    # The recorded proportions are those of the patches trained on (same seed, 2 patches).
    again = PatchStream(patch=64, frame_size=128, seed=0)
    it = iter(again)
    next(it)
    next(it)
    np.testing.assert_allclose(list(rec["class_proportions"].values()), again.proportions)
    assert sum(rec["class_proportions"].values()) >= 1.0  # every pixel has at least one class (BG)
    cfg.write_text('{"bogus": 1}')
    assert main(["train", str(cfg), "--out", str(out)]) == 2


_JAX_SCRIPT = """
import numpy as np
import keras
assert keras.backend.backend() == "jax"
from maxidetect.training.train import PatchStream, TrainConfig, make_trainer, weighted_bce_numpy
cfg = TrainConfig(init=None, width=0.125, patch=64, frame_size=128, batch=2, learning_rate=3e-3, l2=1e-6)
x, y, w = next(PatchStream(patch=64, frame_size=128, seed=1, per_frame=2).batches(2))
model, step = make_trainer(cfg)
first = weighted_bce_numpy(np.asarray(model(x, logits=True)), y, w)
losses = [float(step(x, y, w)) for _ in range(12)]
# The model's own variables follow the jitted state: its loss is the last step's.
after = weighted_bce_numpy(np.asarray(model(x, logits=True)), y, w)
print(first, losses[0], min(losses[-4:]), after)
"""


def test_jax_backend_training_step(tmp_path):
    """The GPU machine has JAX and no TensorFlow: the same trainer on JAX."""
    import os
    import subprocess
    import sys

    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", _JAX_SCRIPT], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, loss0, last, after = map(float, proc.stdout.split()[-4:])
    msg = proc.stdout[-500:]
    assert loss0 == pytest.approx(first, rel=2e-2), msg  # + the small L2 term
    assert last < 0.85 * loss0, msg
    assert after < loss0, msg
