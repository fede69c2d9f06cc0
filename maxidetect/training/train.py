"""Training as the seed describes it: simulated patches with per-class truth,
per-pixel binary cross-entropy summed over classes and weighted by class
rarity, L2 regularisation, Adam.

Class weights ``w_c = (1/p_c) / sum_c' (1/p_c')`` from the class proportions
``p_c`` of the training data; a pixel's weight is the sum of the weights of
its classes (background, BG, when it has none), smoothed 3x3. The proportions
measured on the training stream become the model's training priors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from maxidetect.classes import CLASSES, N_CLASSES

__all__ = [
    "class_weights",
    "pixel_weights",
    "truth_planes",
    "weighted_bce_numpy",
    "PatchStream",
    "TrainConfig",
    "make_trainer",
    "run_training",
]


def class_weights(proportions) -> np.ndarray:
    """``(1/p_c) / sum(1/p_c')``, float64 (n,). Proportions must be > 0."""
    p = np.asarray(proportions, dtype=np.float64)
    if np.any(p <= 0):
        raise ValueError("class proportions must be > 0 (a class absent from the data has no weight)")
    inv = 1.0 / p
    return inv / inv.sum()


def truth_planes(truth: np.ndarray) -> np.ndarray:
    """Bit-mask truth (H, W) -> bool (N_CLASSES, H, W); BG where no bit is set."""
    planes = np.zeros((N_CLASSES,) + truth.shape, bool)
    for k, c in enumerate(CLASSES):
        planes[k] = (truth & c.bit) != 0 if c.bit else truth == 0
    return planes


def pixel_weights(planes: np.ndarray, weights, smooth: int = 3) -> np.ndarray:
    """Sum of the class weights of each pixel's classes, smoothed ``smooth``x``smooth``.

    Parameters
    ----------
    planes : bool (n, H, W)
    weights : (n,) class weights
    """
    w = np.tensordot(np.asarray(weights, np.float64), planes.astype(np.float64), axes=1)
    if smooth > 1:
        w = ndimage.uniform_filter(w, size=smooth, mode="nearest")
    return w.astype(np.float32)


def weighted_bce_numpy(logits, targets, weights) -> float:
    """Reference loss: mean over pixels of w_p * sum_c BCE(target, sigmoid(logit)).

    logits, targets: (..., H, W, n); weights: (..., H, W).
    """
    z = np.asarray(logits, np.float64)
    y = np.asarray(targets, np.float64)
    # Stable BCE with logits: max(z,0) - z*y + log(1 + exp(-|z|)).
    bce = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    return float(np.mean(np.asarray(weights, np.float64) * bce.sum(axis=-1)))


class PatchStream:
    """Simulated training patches, generated on the fly (nothing held in memory).

    Yields ``(x, y, w)``: normalised image (patch, patch, 1), truth
    (patch, patch, n_classes) float32, pixel weights (patch, patch).
    ``proportions`` accumulates the class pixel fractions seen so far.
    """

    def __init__(self, patch: int = 400, frame_size: int = 800, seed: int = 0, per_frame: int = 4,
                 weights=None, sim_config=None, background: str = "maximask"):
        self.patch, self.frame_size, self.seed, self.per_frame = patch, frame_size, seed, per_frame
        self.background = background
        self.sim_config = sim_config
        self.weights = class_weights([c.training_prior for c in CLASSES]) if weights is None else np.asarray(weights)
        self.counts = np.zeros(N_CLASSES)
        self.n_pixels = 0

    @property
    def proportions(self) -> np.ndarray:
        return self.counts / max(self.n_pixels, 1)

    def __iter__(self):
        from maxidetect.network.normalise import normalise
        from maxidetect.validation.simulate import simulate_frame

        k = 0
        rng = np.random.default_rng(self.seed)
        while True:
            frame = simulate_frame(self.seed * 100003 + k, self.sim_config, size=self.frame_size)
            k += 1
            x = normalise(frame.image, background=self.background)
            planes = truth_planes(frame.truth)
            w = pixel_weights(planes, self.weights)
            for _ in range(self.per_frame):
                y0 = int(rng.integers(0, self.frame_size - self.patch + 1))
                x0 = int(rng.integers(0, self.frame_size - self.patch + 1))
                sl = (slice(y0, y0 + self.patch), slice(x0, x0 + self.patch))
                p = planes[(slice(None),) + sl]
                self.counts += p.reshape(N_CLASSES, -1).sum(axis=1)
                self.n_pixels += self.patch * self.patch
                yield (x[sl][..., None].astype(np.float32), np.moveaxis(p, 0, -1).astype(np.float32),
                       w[sl].astype(np.float32))

    def batches(self, batch: int):
        it = iter(self)
        while True:
            xs, ys, ws = zip(*(next(it) for _ in range(batch)), strict=True)
            yield np.stack(xs), np.stack(ys), np.stack(ws)


@dataclass
class TrainConfig:
    """What ``maxidetect train CONFIG`` reads (JSON keys of the same names)."""

    init: str | None = "maximask"  # pretrained model to fine-tune, or None (from scratch)
    width: float = 1.0  # channel multiplier of a from-scratch model
    trainable: str = "all"  # "all" or "head" (final_conv and the side branches' last convs)
    patch: int = 400
    frame_size: int = 800
    batch: int = 4
    steps: int = 100
    learning_rate: float = 1e-4
    l2: float = 1e-6
    seed: int = 0  # patch stream and, from scratch, the initial weights (reproducible runs)
    background: str = "maximask"  # normalisation maps (maxidetect.network.normalise.BACKGROUNDS)

    def __post_init__(self):
        from maxidetect.network.normalise import check_background

        check_background(self.background)


def make_trainer(cfg: TrainConfig):
    """(model, train_step) for ``cfg``; ``train_step(x, y, w) -> loss`` runs one Adam step.

    The loss is :func:`weighted_bce_numpy`'s, on logits, plus ``l2 * sum(kernel**2)``.
    """
    import keras
    from keras import ops

    from maxidetect.network.keras_engine import build_model
    from maxidetect.network.weights import load_network

    if cfg.init:
        model, _ = load_network(cfg.init)
    else:
        # Unseeded initial weights made two runs of one config differ (and a CI test flaky).
        keras.utils.set_random_seed(cfg.seed)
        model = build_model(width=cfg.width)
    if cfg.trainable == "head":
        for layer in model._flatten_layers(include_self=False):
            layer.trainable = layer.name == "final_conv" or layer.name.endswith("_conv1") and "ucp" in layer.name
    elif cfg.trainable != "all":
        raise ValueError(f"trainable must be 'all' or 'head', got {cfg.trainable!r}")
    is_kernel = ["kernel" in v.path for v in model.trainable_weights]
    kernels = [v for v, k in zip(model.trainable_weights, is_kernel, strict=True) if k]
    opt = keras.optimizers.Adam(learning_rate=cfg.learning_rate)

    def objective(z, y, w, kernel_values):
        bce = ops.maximum(z, 0) - z * y + ops.log1p(ops.exp(-ops.abs(z)))
        data = ops.mean(w * ops.sum(bce, axis=-1))
        reg = sum(ops.sum(k * k) for k in kernel_values) if kernel_values else 0.0
        return data + cfg.l2 * reg

    def loss_fn(x, y, w):
        return objective(model(x, logits=True, training=True), y, w, kernels)

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function
        def step(x, y, w):
            with tf.GradientTape() as tape:
                loss = loss_fn(x, y, w)
            grads = tape.gradient(loss, model.trainable_weights)
            opt.apply_gradients(zip(grads, model.trainable_weights, strict=True))
            return loss
    elif backend == "torch":
        def step(x, y, w):
            import torch

            model.zero_grad()
            loss = loss_fn(torch.as_tensor(x), torch.as_tensor(y), torch.as_tensor(w))
            loss.backward()
            opt.apply([v.value.grad for v in model.trainable_weights], model.trainable_weights)
            return loss
    elif backend == "jax":
        step = _jax_step(model, opt, objective, is_kernel)
    else:
        raise NotImplementedError(f"training on the {backend} backend is not wired (use tensorflow, jax or torch)")

    def train_step(x, y, w) -> float:
        return float(step(x, y, w))

    return model, train_step


def _jax_step(model, opt, objective, is_kernel):
    """One jitted Adam step on JAX: Keras 3's stateless API, the variables
    written back after each step so the model can be saved at any time."""
    import jax

    trainable = model.trainable_variables
    frozen = model.non_trainable_variables
    opt.build(trainable)

    def loss_of(tv, ntv, x, y, w):
        z, ntv = model.stateless_call(tv, ntv, x, logits=True, training=True)
        kernels = [v for v, k in zip(tv, is_kernel, strict=True) if k]
        return objective(z, y, w, kernels), ntv

    grad_fn = jax.value_and_grad(loss_of, has_aux=True)

    @jax.jit
    def jstep(tv, ntv, ov, x, y, w):
        (loss, ntv), grads = grad_fn(tv, ntv, x, y, w)
        tv, ov = opt.stateless_apply(ov, grads, tv)
        return loss, tv, ntv, ov

    state = {"tv": [v.value for v in trainable], "ntv": [v.value for v in frozen],
             "ov": [v.value for v in opt.variables]}

    def step(x, y, w):
        loss, state["tv"], state["ntv"], state["ov"] = jstep(state["tv"], state["ntv"], state["ov"], x, y, w)
        for var, val in zip(trainable, state["tv"], strict=True):
            var.assign(val)
        for var, val in zip(frozen, state["ntv"], strict=True):
            var.assign(val)
        return loss

    return step


def run_training(cfg: TrainConfig, out, progress: bool = True) -> dict:
    """Train per ``cfg`` and write ``out`` (Keras weights) and ``out.json``
    (config, class proportions seen, loss curve). Returns that record."""
    import json
    import sys
    import time
    from dataclasses import asdict
    from pathlib import Path

    from tqdm import tqdm

    out = Path(out)
    if not out.name.endswith(".weights.h5"):
        raise ValueError(f"{out}: the output name must end in .weights.h5")
    model, step = make_trainer(cfg)
    stream = PatchStream(patch=cfg.patch, frame_size=cfg.frame_size, seed=cfg.seed, background=cfg.background)
    losses = []
    t0 = time.perf_counter()
    batches = stream.batches(cfg.batch)
    for _ in tqdm(range(cfg.steps), unit="step", disable=not progress, file=sys.stderr):
        losses.append(step(*next(batches)))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.weights.h5")
    model.save_weights(tmp)
    tmp.replace(out)
    record = {"config": asdict(cfg), "steps": cfg.steps, "seconds": time.perf_counter() - t0,
              "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
              "losses": losses, "class_proportions": dict(zip([c.abbr for c in CLASSES],
                                                               stream.proportions.tolist(), strict=True))}
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    return record
