"""Training as the seed describes it: simulated patches with per-class truth,
per-pixel binary cross-entropy summed over classes and weighted by class
rarity, L2 regularisation, Adam.

Class weights ``w_c = (1/p_c) / sum_c' (1/p_c')`` from the class proportions
``p_c`` of the training data; a pixel's weight is the sum of the weights of
its classes (background, BG, when it has none), smoothed 3x3. The proportions
measured on the training stream become the model's training priors.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from scipy import ndimage

from maxidetect.classes import CLASSES, N_CLASSES, class_index

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


def weighted_bce_numpy(logits, targets, weights, mask=None) -> float:
    """Reference loss: mean over pixels of w_p * sum_c m_c BCE(target, sigmoid(logit)).

    logits, targets: (..., H, W, n); weights: (..., H, W); mask (broadcast
    to the logits; default 1): 1 a class learns its target, 0 it is left out,
    -1 the target is an upper bound (the loss counts only where the
    probability exceeds it).
    """
    z = np.asarray(logits, np.float64)
    y = np.asarray(targets, np.float64)
    # Stable BCE with logits: max(z,0) - z*y + log(1 + exp(-|z|)).
    bce = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    if mask is not None:
        m = np.asarray(mask, np.float64)
        bce = bce * (np.maximum(m, 0) + np.maximum(-m, 0) * (1 / (1 + np.exp(-z)) > y))
    return float(np.mean(np.asarray(weights, np.float64) * bce.sum(axis=-1)))


def resolve_data_path(path) -> Path:
    """A path, or ``package:NAME:relative/path`` for data an installed package
    ships (e.g. astropy's real test images)."""
    text = str(path)
    if text.startswith("package:"):

        _, pkg, rel = text.split(":", 2)
        return Path(str(resources.files(pkg).joinpath(rel)))
    return Path(text)


class PatchStream:
    """Training patches, generated on the fly (nothing held in memory).

    Yields ``(x, y, w, m)``: normalised image (patch, patch, 1), targets
    (patch, patch, n_classes) float32, pixel weights (patch, patch) and the
    per-class loss mask (n_classes,) float32.

    Simulated patches: targets are the simulated truth, or, for the classes
    in ``teacher_classes``, the probabilities of ``teacher`` (a
    :class:`~maxidetect.network.inference.Predictor`) on the same frame:
    distillation keeps what the teacher learnt on real data. Real patches
    (``real_frames``, a fraction ``real_fraction`` of the patches; random
    crops, flips and quarter turns): teacher targets for its classes, the
    other classes masked out of the loss (no truth). ``proportions``
    accumulates the class pixel fractions of the simulated truth.
    """

    def __init__(self, patch: int = 400, frame_size: int = 800, seed: int = 0, per_frame: int = 4,
                 weights=None, sim_config=None, background: str = "maximask", teacher=None,
                 teacher_classes=(), real_frames=(), real_fraction: float = 0.0, start: int = 0, skip: int = 0,
                 real_bounds=None, real_absent=None, truth_union=(), real_absent_weight: float = 1.0,
                 workers: int = 0):
        self.patch, self.frame_size, self.seed, self.per_frame = patch, frame_size, seed, per_frame
        self.background = background
        self.sim_config = sim_config
        self.weights = class_weights([c.training_prior for c in CLASSES]) if weights is None else np.asarray(weights)
        self.counts = np.zeros(N_CLASSES)
        self.n_pixels = 0
        self.teacher = teacher
        self.teacher_idx = [class_index(a) for a in teacher_classes]
        self.union_idx = [class_index(a) for a in truth_union]
        if real_frames and (teacher is None or not self.teacher_idx):
            raise ValueError("real frames have no truth: they need a teacher and teacher classes")
        self.real_fraction = float(real_fraction) if real_frames else 0.0
        self.real = [self._load_real(p) for p in real_frames]
        # Per real frame: the loss mask (1 teacher classes, -1 bounded, 0 no
        # target) and the classes absent from it (target 0, mask 1).
        self.real_masks, self.real_zero = [], []
        for p in real_frames:
            m = np.zeros(N_CLASSES, np.float32)
            m[self.teacher_idx] = 1.0
            for a in (real_bounds or {}).get(str(p), ()):
                m[class_index(a)] = -1.0
            zero = [class_index(a) for a in (real_absent or {}).get(str(p), ())]
            m[zero] = float(real_absent_weight)  # the loss weighs a class by its mask's magnitude
            self.real_masks.append(m)
            self.real_zero.append(zero)
        self.frames_used = start  # frames drawn so far (resumes the stream)
        # Patches of frame ``start`` already used (a checkpoint mid-frame), and of the current frame.
        self.skip, self.frame_patches = int(skip), 0
        # Processes simulating frames ahead (0: in this process). The frames depend on their
        # index alone, so a run is the same with any number of workers.
        self.workers = max(int(workers), 0)

    def _load_real(self, path) -> np.ndarray:
        from maxidetect.files import is_image_hdu, open_fits
        from maxidetect.network.normalise import normalise

        path = resolve_data_path(path)
        with open_fits(path) as h:
            hdu = next(x for x in h if is_image_hdu(x) and len(x.shape) == 2)
            data = np.asarray(hdu.data, np.float32)
        x = normalise(data, background=self.background)
        if min(x.shape) < self.patch:  # small cut-outs: pad with background (0 after normalisation)
            pad = [(0, max(self.patch - n, 0)) for n in x.shape]
            x = np.pad(x, pad)
        probs = self.teacher.predict(x) if self.teacher is not None else None  # every class: bounds too
        return np.stack([x, *probs]) if probs is not None else x[None]

    def _teach(self, x: np.ndarray):
        if self.teacher is None or not self.teacher_idx:
            return None
        return self.teacher.predict(x)[self.teacher_idx]

    @property
    def proportions(self) -> np.ndarray:
        return self.counts / max(self.n_pixels, 1)

    def _draws(self):
        """(k, rng, simulated frame or None for a real one), in order from ``frames_used``."""
        def draw(k):
            rng = np.random.default_rng([self.seed, k])  # per frame: a resumed stream draws the same patches
            return rng, not (self.real and rng.random() < self.real_fraction)

        k = self.frames_used
        if not self.workers:
            while True:
                rng, sim = draw(k)
                yield k, rng, _simulated(self.seed * 100003 + k, self.sim_config, self.frame_size,
                                         self.background) if sim else None
                k += 1
        import multiprocessing
        from collections import deque
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: the parent holds JAX/TensorFlow threads that a fork would copy mid-flight.
        with ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            ahead = deque()
            while True:
                while len(ahead) < 2 * self.workers:
                    rng, sim = draw(k)
                    job = pool.submit(_simulated, self.seed * 100003 + k, self.sim_config, self.frame_size,
                                      self.background) if sim else None
                    ahead.append((k, rng, job))
                    k += 1
                kk, rng, job = ahead.popleft()
                yield kk, rng, job.result() if job is not None else None

    def __iter__(self):
        sim_mask = np.ones(N_CLASSES, np.float32)
        skip, self.skip = self.skip, 0
        for k, rng, simulated in self._draws():
            self.frames_used, self.frame_patches = k + 1, 0
            if simulated is None:
                j = int(rng.integers(len(self.real)))
                stack, real_mask, zero = self.real[j], self.real_masks[j], self.real_zero[j]
                for _ in range(self.per_frame):
                    y0 = int(rng.integers(0, stack.shape[1] - self.patch + 1))
                    x0 = int(rng.integers(0, stack.shape[2] - self.patch + 1))
                    cut = stack[:, y0:y0 + self.patch, x0:x0 + self.patch]
                    cut = np.rot90(cut, int(rng.integers(4)), axes=(1, 2))
                    if rng.random() < 0.5:
                        cut = cut[:, :, ::-1]
                    if skip:  # used before the checkpoint: drawn (the same random numbers), not yielded
                        skip -= 1
                        continue
                    self.frame_patches += 1
                    y = np.zeros((N_CLASSES, self.patch, self.patch), np.float32)
                    y[real_mask != 0] = cut[1:][real_mask != 0]  # the teacher's: targets and bounds
                    y[zero] = 0.0
                    w = pixel_weights(y[self.teacher_idx] > 0.5, self.weights[self.teacher_idx]) \
                        + np.float32(self.weights[-1])
                    yield (np.ascontiguousarray(cut[0])[..., None], np.moveaxis(y, 0, -1).copy(), w, real_mask)
                continue
            x, planes = simulated
            w = pixel_weights(planes, self.weights)
            target = planes.astype(np.float32)
            taught = self._teach(x)
            if taught is not None:
                target[self.teacher_idx] = taught
                # Union: what the teacher sees, plus the simulated truth it misses.
                target[self.union_idx] = np.maximum(target[self.union_idx], planes[self.union_idx])
            for _ in range(self.per_frame):
                y0 = int(rng.integers(0, self.frame_size - self.patch + 1))
                x0 = int(rng.integers(0, self.frame_size - self.patch + 1))
                if skip:
                    skip -= 1
                    continue
                self.frame_patches += 1
                sl = (slice(y0, y0 + self.patch), slice(x0, x0 + self.patch))
                p = planes[(slice(None),) + sl]
                self.counts += p.reshape(N_CLASSES, -1).sum(axis=1)
                self.n_pixels += self.patch * self.patch
                yield (x[sl][..., None].astype(np.float32), np.moveaxis(target[(slice(None),) + sl], 0, -1).copy(),
                       w[sl].astype(np.float32), sim_mask)

    def batches(self, batch: int):
        it = iter(self)
        while True:
            xs, ys, ws, ms = zip(*(next(it) for _ in range(batch)), strict=True)
            yield np.stack(xs), np.stack(ys), np.stack(ws), np.stack(ms)[:, None, None, :]


def _simulated(seed: int, sim_config, size: int, background: str):
    """One simulated frame, normalised, and its truth planes (a worker process's job)."""
    from maxidetect.network.normalise import normalise
    from maxidetect.validation.simulate import simulate_frame

    frame = simulate_frame(seed, sim_config, size=size)
    return normalise(frame.image, background=background), truth_planes(frame.truth)


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
    # Distillation: these classes learn the teacher's probabilities (where the
    # pretrained network is good on real data); the others the simulated truth.
    teacher: str | None = None
    teacher_classes: tuple = ()
    real_frames: tuple = ()  # real images (paths) for teacher-only patches
    real_fraction: float = 0.0  # share of frames drawn from real_frames
    # {real frame: [classes]}: on that frame the teacher's probabilities of
    # these (non-teacher) classes are upper bounds (it is right to see little
    # there: spectra, crowded star fields), so simulated truth cannot teach
    # them where the sky has none. Leave out frames where the teacher misses
    # the class (a real trail).
    real_bounds: dict = field(default_factory=dict)
    # {real frame: [classes]} a person checked are absent from that frame
    # (no trail, no bright background): target 0 there, whatever the teacher says.
    real_absent: dict = field(default_factory=dict)
    # Loss weight of those absent classes on real patches (1: as any target). Fine-tuning
    # on simulated frames drifted the false bright background of real frames up (runs 4, 5).
    real_absent_weight: float = 1.0
    # Teacher classes whose target on simulated frames is max(teacher, truth):
    # the teacher's real-sky knowledge plus the simulated hits it misses.
    truth_union: tuple = ()
    sim_config: dict | None = None  # maxidetect.validation.simulate.SimConfig overrides
    # {class: factor} multiplying that class's pixel weight in the loss (1 for the others): a class
    # whose held-out AUC lags gets more of the gradient without changing any target.
    class_loss_factors: dict = field(default_factory=dict)
    checkpoint_every: int = 50  # steps between checkpoints (resumable runs)
    per_frame: int = 4  # patches cut from each simulated or real frame

    def __post_init__(self):
        from maxidetect.network.normalise import check_background

        check_background(self.background)
        self.teacher_classes = tuple(self.teacher_classes)
        self.real_frames = tuple(str(p) for p in self.real_frames)
        unknown = set(self.teacher_classes) - {c.abbr for c in CLASSES}
        if unknown:
            raise ValueError(f"teacher_classes: unknown classes {sorted(unknown)}")
        self.truth_union = tuple(self.truth_union)
        self.class_loss_factors = {str(k): float(v) for k, v in (self.class_loss_factors or {}).items()}
        bad = set(self.class_loss_factors) - {c.abbr for c in CLASSES}
        if bad or any(not v > 0 for v in self.class_loss_factors.values()):
            raise ValueError(f"class_loss_factors: unknown classes {sorted(bad)} or a factor <= 0")
        if not self.real_absent_weight > 0:
            raise ValueError(f"real_absent_weight must be > 0, got {self.real_absent_weight}")
        extra = set(self.truth_union) - set(self.teacher_classes)
        if extra:
            raise ValueError(f"truth_union: not teacher classes {sorted(extra)}")
        for key in ("real_bounds", "real_absent"):
            table = {str(k): list(v) for k, v in (getattr(self, key) or {}).items()}
            setattr(self, key, table)
            for frame, classes in table.items():
                if frame not in self.real_frames:
                    raise ValueError(f"{key}: {frame} is not one of real_frames")
                bad = set(classes) - {c.abbr for c in CLASSES} | (set(classes) & set(self.teacher_classes))
                if bad:
                    raise ValueError(f"{key}[{frame}]: unknown or teacher classes {sorted(bad)}")
        both = {f: set(self.real_bounds.get(f, ())) & set(c) for f, c in self.real_absent.items()}
        if any(both.values()):
            raise ValueError(f"real_absent and real_bounds overlap: {({f: sorted(c) for f, c in both.items() if c})}")


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
    elif cfg.trainable == "decoder":
        # The encoder (conv1..conv5 blocks and the bottleneck) frozen: no gradients through it.
        from maxidetect.network.architecture import ENCODER_LAYERS

        for layer in model._flatten_layers(include_self=False):
            layer.trainable = layer.name not in ENCODER_LAYERS
    elif cfg.trainable != "all":
        raise ValueError(f"trainable must be 'all', 'decoder' or 'head', got {cfg.trainable!r}")
    is_kernel = ["kernel" in v.path for v in model.trainable_weights]
    kernels = [v for v, k in zip(model.trainable_weights, is_kernel, strict=True) if k]
    opt = keras.optimizers.Adam(learning_rate=cfg.learning_rate)

    def objective(z, y, w, m, kernel_values):
        bce = ops.maximum(z, 0) - z * y + ops.log1p(ops.exp(-ops.abs(z)))
        # m: 1 learn the target, 0 left out, -1 the target is an upper bound
        # (counted only where the probability is above it; see weighted_bce_numpy).
        above = ops.cast(ops.greater(ops.sigmoid(z), y), z.dtype)
        data = ops.mean(w * ops.sum(bce * (ops.maximum(m, 0) + ops.maximum(-m, 0) * above), axis=-1))
        reg = sum(ops.sum(k * k) for k in kernel_values) if kernel_values else 0.0
        return data + cfg.l2 * reg

    def loss_fn(x, y, w, m):
        return objective(model(x, logits=True, training=True), y, w, m, kernels)

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function
        def step(x, y, w, m):
            with tf.GradientTape() as tape:
                loss = loss_fn(x, y, w, m)
            grads = tape.gradient(loss, model.trainable_weights)
            opt.apply_gradients(zip(grads, model.trainable_weights, strict=True))
            return loss
    elif backend == "torch":
        def step(x, y, w, m):
            import torch

            model.zero_grad()
            loss = loss_fn(torch.as_tensor(x), torch.as_tensor(y), torch.as_tensor(w), torch.as_tensor(m))
            loss.backward()
            opt.apply([v.value.grad for v in model.trainable_weights], model.trainable_weights)
            return loss
    elif backend == "jax":
        step = _jax_step(model, opt, objective, is_kernel)
    else:
        raise NotImplementedError(f"training on the {backend} backend is not wired (use tensorflow, jax or torch)")

    def train_step(x, y, w, m=None) -> float:
        if m is None:
            m = np.ones((x.shape[0], 1, 1, y.shape[-1]), np.float32)
        return float(step(x, y, w, m))

    def loss(x, y, w, m):  # the objective at the current weights, no step (checks, evaluation)
        return float(loss_fn(x, y, w, m))

    train_step.optimizer = opt
    train_step.loss = loss
    return model, train_step


def _jax_step(model, opt, objective, is_kernel):
    """One jitted Adam step on JAX: Keras 3's stateless API, the variables
    written back after each step so the model can be saved at any time."""
    import jax

    trainable = model.trainable_variables
    frozen = model.non_trainable_variables
    opt.build(trainable)

    def loss_of(tv, ntv, x, y, w, m):
        z, ntv = model.stateless_call(tv, ntv, x, logits=True, training=True)
        kernels = [v for v, k in zip(tv, is_kernel, strict=True) if k]
        return objective(z, y, w, m, kernels), ntv

    grad_fn = jax.value_and_grad(loss_of, has_aux=True)

    @jax.jit
    def jstep(tv, ntv, ov, x, y, w, m):
        (loss, ntv), grads = grad_fn(tv, ntv, x, y, w, m)
        tv, ov = opt.stateless_apply(ov, grads, tv)
        return loss, tv, ntv, ov

    state = {}

    def step(x, y, w, m):
        if not state:  # read lazily: a resumed run assigns the variables after building the step
            state.update(tv=[v.value for v in trainable], ntv=[v.value for v in frozen],
                         ov=[v.value for v in opt.variables])
        loss, state["tv"], state["ntv"], state["ov"] = jstep(state["tv"], state["ntv"], state["ov"], x, y, w, m)
        for var, val in zip(trainable, state["tv"], strict=True):
            var.assign(val)
        for var, val in zip(frozen, state["ntv"], strict=True):
            var.assign(val)
        for var, val in zip(opt.variables, state["ov"], strict=True):
            var.assign(val)
        return loss

    return step


def _loss_weights(cfg: TrainConfig) -> np.ndarray:
    """The stream's class weights (inverse training priors) times the recipe's ``class_loss_factors``."""
    w = class_weights([c.training_prior for c in CLASSES])
    for abbr, f in cfg.class_loss_factors.items():
        w[class_index(abbr)] *= f
    return w


def _resume_at(state: dict, cfg: TrainConfig) -> dict:
    """The stream's ``start`` and ``skip`` for a saved position: a checkpoint taken part way
    through a frame (batch and per_frame out of step, or a time limit) resumes inside it."""
    used = int(state.get("frame_patches", cfg.per_frame))  # older checkpoints: whole frames
    if 0 < used < cfg.per_frame:
        return {"start": state["frames_used"] - 1, "skip": used}
    return {"start": state["frames_used"], "skip": 0}


def _checkpoint_path(out: Path) -> Path:
    return out.with_suffix(".ckpt.npz")


def _save_checkpoint(path: Path, model, optimizer, state: dict) -> None:
    """One file, replaced atomically: weights, optimizer variables, progress."""

    from maxidetect.files import atomic_output
    from maxidetect.network.weights import model_arrays

    arrays = {f"w:{n}/{i}": a for n, t in model_arrays(model).items() for i, a in enumerate(t)}
    arrays.update({f"o:{i}": np.asarray(v.value) for i, v in enumerate(optimizer.variables)})
    arrays["state"] = np.frombuffer(json.dumps(state).encode(), np.uint8)
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _load_checkpoint(path: Path, model, optimizer) -> dict:
    with np.load(path) as z:
        state = json.loads(bytes(z["state"]).decode())
        for layer in model.layers:
            layer.set_weights([z[f"w:{layer.name}/{i}"] for i in range(len(layer.weights))])
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        for i, v in enumerate(optimizer.variables):
            v.assign(z[f"o:{i}"])
    return state


def run_training(cfg: TrainConfig, out, progress: bool = True, resume: bool = True, workers: int = 0,
                 teacher_engine: str = "onnxruntime", max_seconds: float | None = None) -> dict:
    """Train per ``cfg``; write ``out`` (``.npz`` arrays or Keras ``.weights.h5``)
    and ``out.json`` (config, class proportions seen, loss curve). Returns that
    record.

    Every ``cfg.checkpoint_every`` steps the whole state (weights, optimizer,
    steps, losses, the patch stream's position) goes to ``OUT.ckpt.npz``, one
    file replaced atomically; the same command resumes from it (``resume``)
    if its configuration is the same, so a run can span several sessions.

    Execution settings, not part of the recipe (a run is the same with any of them):
    ``workers`` processes simulate frames ahead (0: this process; a GPU node's
    CPUs keep its accelerator fed), ``teacher_engine`` runs the teacher
    (``"keras"``: on the accelerator), and ``max_seconds`` stops the run at the
    first step past that many seconds of this call, checkpointed and written as far as
    it got (the record's ``steps``); the same command then resumes it.
    """

    from tqdm import tqdm

    from maxidetect.validation.simulate import SimConfig

    out = Path(out)
    if not out.name.endswith((".weights.h5", ".npz")):
        raise ValueError(f"{out}: the output name must end in .npz or .weights.h5")
    out.parent.mkdir(parents=True, exist_ok=True)
    model, step = make_trainer(cfg)
    ckpt = _checkpoint_path(out)
    state = {"config": asdict(cfg), "step": 0, "losses": [], "frames_used": 0, "frame_patches": 0,
             "counts": [0.0] * N_CLASSES,
             "n_pixels": 0, "seconds": 0.0}
    if resume and ckpt.exists():
        saved = _load_checkpoint(ckpt, model, step.optimizer)
        if json.loads(json.dumps(saved["config"])) != json.loads(json.dumps(asdict(cfg))):
            raise ValueError(f"{ckpt}: a checkpoint of another configuration (remove it to start afresh)")
        state = saved
    teacher = None
    if cfg.teacher:
        from maxidetect.network.inference import Predictor

        teacher = Predictor(cfg.teacher, engine=teacher_engine)
    stream = PatchStream(patch=cfg.patch, frame_size=cfg.frame_size, seed=cfg.seed, background=cfg.background,
                         per_frame=cfg.per_frame,
                         teacher=teacher, teacher_classes=cfg.teacher_classes, real_frames=cfg.real_frames,
                         real_fraction=cfg.real_fraction, real_bounds=cfg.real_bounds, **_resume_at(state, cfg),
                         real_absent=cfg.real_absent, truth_union=cfg.truth_union,
                         real_absent_weight=cfg.real_absent_weight,
                         workers=workers, weights=_loss_weights(cfg),
                         sim_config=SimConfig(**{k: tuple(v) if isinstance(v, list) else v
                                                 for k, v in (cfg.sim_config or {}).items()}))
    stream.counts = np.asarray(state["counts"], np.float64)
    stream.n_pixels = state["n_pixels"]
    t0 = time.perf_counter() - state["seconds"]
    started = time.perf_counter()
    batches = stream.batches(cfg.batch)
    for k in tqdm(range(state["step"], cfg.steps), unit="step", disable=not progress, file=sys.stderr,
                  initial=state["step"], total=cfg.steps):
        state["losses"].append(step(*next(batches)))
        state["step"] = k + 1
        late = max_seconds is not None and time.perf_counter() - started > max_seconds
        if state["step"] % cfg.checkpoint_every == 0 or state["step"] == cfg.steps or late:
            state.update(frames_used=stream.frames_used, frame_patches=stream.frame_patches,
                         counts=stream.counts.tolist(), n_pixels=stream.n_pixels,
                         seconds=time.perf_counter() - t0)
            _save_checkpoint(ckpt, model, step.optimizer, state)
        if late:
            break
    batches.close()  # ends the stream's worker processes
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npz":
        from maxidetect.network.weights import model_arrays, save_arrays

        save_arrays(out, model_arrays(model))
    else:
        tmp = out.with_name(f".{out.name}.tmp.weights.h5")
        model.save_weights(tmp)
        tmp.replace(out)
    losses = state["losses"]
    record = {"config": asdict(cfg), "steps": state["step"], "seconds": time.perf_counter() - t0,
              "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
              "losses": losses, "frames_used": stream.frames_used,
              "class_proportions": dict(zip([c.abbr for c in CLASSES], stream.proportions.tolist(), strict=True))}
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    return record
