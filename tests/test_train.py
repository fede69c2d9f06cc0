"""Training pieces: class and pixel weights, the weighted loss, a few steps."""

import numpy as np
import pytest

from maxidetect.classes import CLASS_NAMES, N_CLASSES, class_index
from maxidetect.training.train import (
    PatchStream,
    TrainConfig,
    class_weights,
    make_trainer,
    pixel_weights,
    run_training,
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


def test_upper_bound_targets_count_only_above_the_bound():
    # Target 0.3 as an upper bound: a probability under it costs nothing, one above it its BCE.
    z = np.array([[[-2.0, 1.0]]])  # sigmoid 0.12 (under 0.3) and 0.73 (above)
    y = np.array([[[0.3, 0.3]]])
    full = weighted_bce_numpy(z, y, [[1.0]])
    bounded = weighted_bce_numpy(z, y, [[1.0]], mask=[-1.0, -1.0])
    only_above = weighted_bce_numpy(z[..., 1:], y[..., 1:], [[1.0]])
    assert bounded == pytest.approx(only_above) and bounded < full
    first_only = weighted_bce_numpy(z[..., :1], y[..., :1], [[1.0]])
    assert weighted_bce_numpy(z, y, [[1.0]], mask=[1.0, 0.0]) == pytest.approx(first_only)


def test_few_steps_lower_the_loss_on_a_tiny_model():
    cfg = TrainConfig(init=None, width=0.125, patch=64, frame_size=128, batch=2, learning_rate=3e-3, l2=0.0)
    stream = PatchStream(patch=64, frame_size=128, seed=1, per_frame=2)
    x, y, w, m = next(stream.batches(2))
    assert x.shape == (2, 64, 64, 1) and y.shape == (2, 64, 64, N_CLASSES) and w.shape == (2, 64, 64)
    assert m.shape == (2, 1, 1, N_CLASSES) and np.all(m == 1)  # simulated patches: every class has truth
    assert stream.n_pixels == 2 * 64 * 64 and stream.proportions.sum() >= 1.0  # every pixel has a class
    model, step = make_trainer(cfg)
    z = np.asarray(model(x, logits=True))
    first = weighted_bce_numpy(z, y, w)
    # The training loss is the reference loss, bounds included (CR, HP learnt; TRL, NEB bounded).
    mb = np.zeros_like(m)
    mb[..., [class_index("CR"), class_index("HP")]] = 1.0
    mb[..., [class_index("TRL"), class_index("NEB")]] = -1.0
    yb = np.clip(y * 0.5 + 0.1, 0, 1).astype(np.float32)
    assert float(step.loss(x, yb, w, mb)) == pytest.approx(weighted_bce_numpy(z, yb, w, mb), rel=1e-3)
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
x, y, w, m = next(PatchStream(patch=64, frame_size=128, seed=1, per_frame=2).batches(2))
model, step = make_trainer(cfg)
first = weighted_bce_numpy(np.asarray(model(x, logits=True)), y, w)
losses = [float(step(x, y, w)) for _ in range(12)]
# The model's own variables follow the jitted state: its loss is the last step's.
after = weighted_bce_numpy(np.asarray(model(x, logits=True)), y, w)
print(first, losses[0], min(losses[-4:]), after)
"""


def test_jax_backend_training_step(tmp_path):
    """The GPU machine has JAX and no TensorFlow: the same trainer on JAX."""
    from .conftest import run_on_jax

    out = run_on_jax(_JAX_SCRIPT, tmp_path)
    first, loss0, last, after = map(float, out.split()[-4:])
    msg = out[-500:]
    assert loss0 == pytest.approx(first, rel=2e-2), msg  # + the small L2 term
    assert last < 0.85 * loss0, msg
    assert after < loss0, msg


def test_distillation_targets_real_patches_and_resume(tmp_path):
    """Teacher classes learn the teacher's probabilities, real patches carry
    only those classes, and a stopped run resumes to the same weights."""
    from maxidetect.network.inference import Predictor

    from .conftest import EXAMPLE

    teacher = Predictor("maximask")
    stream = PatchStream(patch=64, frame_size=128, seed=2, per_frame=2, teacher=teacher, teacher_classes=("CR", "HP"),
                         real_frames=(str(EXAMPLE),), real_fraction=0.5, real_bounds={str(EXAMPLE): ["TRL", "BBG"]})
    seen = {"sim": 0, "real": 0}
    it = iter(stream)
    for _ in range(40):
        x, y, w, m = next(it)
        soft = y[..., [0, 3]]
        if m.all():  # simulated: truth for every class but CR and HP, which hold the teacher's probabilities
            seen["sim"] += 1
            assert np.array_equal(np.unique(y[..., 6]), np.unique(y[..., 6]).astype(bool))  # TRL stays 0/1
        else:  # real: the teacher's classes enter the loss, and its TRL and BBG as upper bounds
            seen["real"] += 1
            assert m.tolist() == [1.0 if c in ("CR", "HP") else -1.0 if c in ("TRL", "BBG") else 0.0
                                  for c in CLASS_NAMES]
            bbg = y[..., class_index("BBG")]  # the teacher's probabilities (on the whole frame), soft
            assert ((bbg > 0) & (bbg < 1)).mean() > 0.5
            assert not y[..., class_index("NEB")].any()  # no target, no bound
        assert soft.min() >= 0 and soft.max() <= 1 and x.shape == (64, 64, 1)
    assert seen["sim"] and seen["real"]
    # The teacher's probabilities are its network's on the same normalised pixels.
    assert any(0.0 < v < 1.0 for v in np.unique(soft))

    cfg = TrainConfig(init=None, width=0.125, patch=64, frame_size=128, batch=2, steps=4, learning_rate=1e-3,
                      checkpoint_every=2, seed=5)
    whole = run_training(cfg, tmp_path / "whole.npz", progress=False)
    part = TrainConfig(**{**cfg.__dict__, "steps": 2})
    run_training(part, tmp_path / "split.npz", progress=False)
    ckpt = tmp_path / "split.ckpt.npz"
    assert ckpt.exists()
    # A different configuration refuses the checkpoint instead of mixing runs.
    with pytest.raises(ValueError, match="another configuration"):
        run_training(cfg, tmp_path / "split.npz", progress=False)
    import json

    state = json.loads(bytes(np.load(ckpt)["state"]).decode())
    state["config"]["steps"] = 4  # the same run, continued to 4 steps
    arrays = dict(np.load(ckpt))
    arrays["state"] = np.frombuffer(json.dumps(state).encode(), np.uint8)
    np.savez(ckpt, **arrays)
    resumed = run_training(cfg, tmp_path / "split.npz", progress=False)
    assert len(resumed["losses"]) == 4
    np.testing.assert_allclose(resumed["losses"], whole["losses"], rtol=1e-4)
    from maxidetect.network.weights import read_arrays

    a, b = read_arrays(tmp_path / "whole.npz"), read_arrays(tmp_path / "split.npz")
    assert all(np.allclose(x, y, atol=1e-5) for k in a for x, y in zip(a[k], b[k], strict=True))


def test_real_bounds_must_name_listed_frames_and_non_teacher_classes():
    with pytest.raises(ValueError, match="not one of real_frames"):
        TrainConfig(teacher="maximask", teacher_classes=("CR",), real_frames=("a.fits",),
                    real_bounds={"b.fits": ["TRL"]})
    with pytest.raises(ValueError, match="teacher classes"):
        TrainConfig(teacher="maximask", teacher_classes=("CR",), real_frames=("a.fits",),
                    real_bounds={"a.fits": ["CR"]})
    cfg = TrainConfig(teacher="maximask", teacher_classes=("CR",), real_frames=("a.fits",),
                      real_bounds={"a.fits": ["TRL", "BBG"]})
    assert cfg.real_bounds == {"a.fits": ["TRL", "BBG"]}


def test_absent_classes_are_zero_targets_and_union_keeps_simulated_hits():
    """real_absent: on that real frame the class learns 0 (mask 1); truth_union:
    simulated CR pixels the teacher misses are still targets."""
    from maxidetect.network.inference import Predictor

    from .conftest import EXAMPLE

    stream = PatchStream(patch=64, frame_size=128, seed=3, per_frame=2, teacher=Predictor("maximask"),
                         teacher_classes=("CR", "HP"), real_frames=(str(EXAMPLE),), real_fraction=0.5,
                         real_bounds={str(EXAMPLE): ["NEB"]}, real_absent={str(EXAMPLE): ["TRL", "BBG"]},
                         truth_union=("CR",), real_absent_weight=4.0)
    stream.weights = np.ones(len(CLASS_NAMES))
    seen = {"sim": 0, "real": 0}
    it = iter(stream)
    cr, trl, bbg = class_index("CR"), class_index("TRL"), class_index("BBG")
    for _ in range(40):
        x, y, w, m = next(it)
        if m.all():
            seen["sim"] += 1
        else:
            seen["real"] += 1
            assert m[trl] == 4.0 and m[bbg] == 4.0 and m[class_index("NEB")] == -1.0
            assert m[cr] == 1.0
            assert not y[..., trl].any() and not y[..., bbg].any()
            # The loss weighs an absent class by the mask's magnitude: 4x a target of weight 1.
            z = np.full(y.shape, 0.7)
            one = np.where(np.arange(len(m)) == trl, 1.0, 0.0)
            assert np.isclose(weighted_bce_numpy(z, y, w, m * one), 4 * weighted_bce_numpy(z, y, w, one))
    assert seen["sim"] and seen["real"]
    # Union on a simulated frame: every truth CR pixel is a target of at least 1.
    from maxidetect.network.normalise import normalise
    from maxidetect.training.train import truth_planes
    from maxidetect.validation.simulate import simulate_frame

    frame = simulate_frame(3 * 100003 + 0, None, size=128)
    planes = truth_planes(frame.truth)
    taught = stream._teach(normalise(frame.image, background="maximask"))
    assert planes[cr].any() and (taught[0][planes[cr]] < 0.5).any()  # the teacher misses some
    stream2 = PatchStream(patch=128, frame_size=128, seed=3, per_frame=1, teacher=stream.teacher,
                          teacher_classes=("CR", "HP"), truth_union=("CR",))
    x, y, w, m = next(iter(stream2))  # the first frame, whole
    assert (y[..., cr][planes[cr]] == 1.0).all()
    with pytest.raises(ValueError, match="not teacher classes"):
        TrainConfig(teacher="maximask", teacher_classes=("CR",), truth_union=("TRL",))
    with pytest.raises(ValueError, match="overlap"):
        TrainConfig(teacher="maximask", teacher_classes=("CR",), real_frames=("a.fits",),
                    real_bounds={"a.fits": ["TRL"]}, real_absent={"a.fits": ["TRL"]})
    with pytest.raises(ValueError, match="real_absent_weight"):
        TrainConfig(real_absent_weight=0)


def test_worker_processes_draw_the_same_patches_and_a_time_limit_stops_a_run_resumably(tmp_path):
    here = PatchStream(patch=64, frame_size=128, seed=4, per_frame=2)
    pooled = PatchStream(patch=64, frame_size=128, seed=4, per_frame=2, workers=2)
    a, b = here.batches(2), pooled.batches(2)
    for _ in range(3):
        for u, v in zip(next(a), next(b), strict=True):
            np.testing.assert_array_equal(u, v)
    b.close()
    assert pooled.frames_used == here.frames_used == 3

    cfg = TrainConfig(init=None, width=0.125, patch=64, frame_size=128, batch=2, steps=3, learning_rate=1e-3,
                      checkpoint_every=50, seed=6)
    first = run_training(cfg, tmp_path / "t.npz", progress=False, max_seconds=0)
    assert first["steps"] == 1 and len(first["losses"]) == 1 and (tmp_path / "t.ckpt.npz").exists()
    rest = run_training(cfg, tmp_path / "t.npz", progress=False, workers=1)
    whole = run_training(cfg, tmp_path / "w.npz", progress=False)
    assert rest["steps"] == 3
    np.testing.assert_allclose(rest["losses"], whole["losses"], rtol=1e-4)


def test_class_loss_factors_scale_one_class_weight_and_refuse_unknown_classes():
    from maxidetect.training.train import _loss_weights

    base = _loss_weights(TrainConfig())
    hp = class_index("HP")
    scaled = _loss_weights(TrainConfig(class_loss_factors={"HP": 3}))
    assert scaled[hp] == pytest.approx(3 * base[hp])
    assert np.array_equal(np.delete(scaled, hp), np.delete(base, hp))
    with pytest.raises(ValueError, match="class_loss_factors"):
        TrainConfig(class_loss_factors={"XX": 2})
    with pytest.raises(ValueError, match="class_loss_factors"):
        TrainConfig(class_loss_factors={"HP": 0})
