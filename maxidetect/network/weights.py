"""Known models, their manifest, and the weight cache.

``weights/manifest.json`` lists the models maxidetect knows. The pretrained
MaxiMask weights are not redistributed: on first use they are read from the
installed ``maximask`` package's SavedModel variables (MIT licensed), written
once as a Keras weights file in the per-user cache, and checked against the
manifest's checksum every time they are loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maxidetect.classes import CLASS_NAMES
from maxidetect.errors import WeightsError

__all__ = [
    "ModelInfo",
    "MANIFEST_PATH",
    "load_manifest",
    "get_model_info",
    "default_model_name",
    "cache_dir",
    "weights_checksum",
    "load_network",
    "load_weight_arrays",
    "maximask_savedmodel_dir",
    "register_model",
    "weights_dir",
    "weights_width",
]

MANIFEST_PATH = Path(__file__).resolve().parent.parent.parent / "weights" / "manifest.json"


def weights_dir() -> Path:
    """Directory of the manifest and shipped weights: ``$MAXIDETECT_WEIGHTS_DIR``
    if set (a private model zoo), else the checkout's ``weights/``."""
    env = os.environ.get("MAXIDETECT_WEIGHTS_DIR")
    return Path(env) if env else MANIFEST_PATH.parent


def manifest_path() -> Path:
    return weights_dir() / "manifest.json"


@dataclass
class ModelInfo:
    """One manifest entry."""

    name: str
    source: str
    classes: list[str]
    training_priors: list[float]
    normalisation: dict
    sha256: str
    architecture: dict = field(default_factory=dict)
    description: str = ""
    thresholds: list[float] | None = None
    recipe: dict | None = None
    evaluation: str | None = None

    @property
    def cache_file(self) -> Path:
        return cache_dir() / f"{self.name}.weights.h5"


def load_manifest() -> dict[str, ModelInfo]:
    """Read the manifest: ``{name: ModelInfo}`` in file order (default first)."""
    path = manifest_path()
    if not path.exists():
        raise WeightsError(f"{path}: model manifest missing (install from a checkout with pip -e)")
    data = json.loads(path.read_text())
    models = {}
    for entry in data["models"]:
        info = ModelInfo(**entry)
        if info.classes != list(CLASS_NAMES[: len(info.classes)]):
            raise WeightsError(f"manifest entry {info.name}: classes out of registry order")
        models[info.name] = info
    return models


def default_model_name() -> str:
    return next(iter(load_manifest()))


def get_model_info(name: str | None = None) -> ModelInfo:
    models = load_manifest()
    name = name or next(iter(models))
    if name not in models:
        raise WeightsError(f"unknown model {name!r}; known: {', '.join(models)}")
    return models[name]


def cache_dir() -> Path:
    """Per-user cache: ``$MAXIDETECT_CACHE``, else ``$XDG_CACHE_HOME/maxidetect``,
    else ``~/.cache/maxidetect``."""
    env = os.environ.get("MAXIDETECT_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "maxidetect"


def weights_checksum(model) -> str:
    """SHA-256 over the model's variables (name, shape, float32 little-endian
    bytes) in layer order: stable across file formats and platforms."""
    return _arrays_checksum((layer.name, [w.numpy() for w in layer.weights]) for layer in model.layers)


def _arrays_checksum(layers) -> str:
    """:func:`weights_checksum` of ``(layer name, [arrays])`` pairs."""
    h = hashlib.sha256()
    for name, arrays in layers:
        for i, w in enumerate(arrays):
            arr = np.ascontiguousarray(np.asarray(w, dtype="<f4"))
            h.update(f"{name}/{i}:{arr.shape}".encode())
            h.update(arr.tobytes())
    return h.hexdigest()


def maximask_savedmodel_dir() -> Path:
    """Directory of the SavedModel installed with the ``maximask`` package."""
    try:
        import maximask_and_maxitrack
    except ImportError:
        raise WeightsError(
            "the pretrained MaxiMask weights come from the 'maximask' package: "
            "pip install maximask==1.4.1"
        ) from None
    d = Path(maximask_and_maxitrack.__file__).resolve().parent / "maximask" / "model"
    if not (d / "variables" / "variables.index").exists():
        raise WeightsError(f"{d}: no SavedModel variables found in the maximask package")
    return d


def _convert_maximask(model) -> None:
    """Copy the SavedModel's conv kernels and biases into ``model``."""
    try:
        import tensorflow as tf
    except ImportError:
        raise WeightsError(
            "converting the MaxiMask SavedModel needs TensorFlow once "
            "(pip install tensorflow); afterwards the cached file is used"
        ) from None
    reader = tf.train.load_checkpoint(str(maximask_savedmodel_dir() / "variables" / "variables"))
    for name, layer in model.convs.items():
        try:
            kernel = reader.get_tensor(f"{name}/kernel/.ATTRIBUTES/VARIABLE_VALUE")
            bias = reader.get_tensor(f"{name}/bias/.ATTRIBUTES/VARIABLE_VALUE")
        except Exception as exc:  # tf raises NotFoundError
            raise WeightsError(f"SavedModel has no variables for layer {name}: {exc}") from None
        layer.set_weights([kernel, bias])


def _atomic_save_weights(model, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".weights.h5")
    os.close(fd)
    try:
        model.save_weights(tmp, overwrite=True)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_network(name: str | None = None, dtype=None):
    """Build the network of model ``name`` and load its verified weights.

    Returns ``(model, info)``. The pretrained MaxiMask weights are converted
    on first use and cached (see :func:`cache_dir`).
    """
    from maxidetect.network.keras_engine import build_model

    info = get_model_info(name)
    arch = info.architecture or {}
    model = build_model(n_classes=len(info.classes), width=arch.get("width", 1.0), dtype=dtype)

    repo_file = weights_dir() / f"{info.name}.weights.h5"
    candidates = [repo_file, info.cache_file]
    for f in candidates:
        if f.exists():
            model.load_weights(str(f))
            if weights_checksum(model) == info.sha256:
                return model, info
            if f == info.cache_file:
                # A stale or damaged cache is rebuilt below.
                f.unlink()
            else:
                raise WeightsError(f"{f}: checksum does not match the manifest entry {info.name}")
    if info.source.startswith("maximask"):
        _convert_maximask(model)
        got = weights_checksum(model)
        if got != info.sha256:
            raise WeightsError(
                f"converted MaxiMask weights have checksum {got}, manifest says {info.sha256}"
            )
        _atomic_save_weights(model, info.cache_file)
        return model, info
    raise WeightsError(f"weights of model {info.name} not found (looked in {', '.join(map(str, candidates))})")


def load_weight_arrays(name: str | None = None):
    """Kernels and biases of model ``name`` without importing Keras.

    Returns ``({layer: (kernel (3, 3, in, out), bias (out,))}, info)`` in
    :data:`~maxidetect.network.architecture.LAYER_SPECS` order. Read from an array
    file in the cache (named by the manifest checksum and verified against
    it on every load); on first use it is filled from :func:`load_network`,
    which needs Keras once.
    """
    import zipfile

    from maxidetect.files import atomic_output
    from maxidetect.network.architecture import LAYER_SPECS

    info = get_model_info(name)
    names = [n for n, _, _ in LAYER_SPECS]
    path = cache_dir() / f"{info.name}.{info.sha256[:16]}.npz"
    if path.exists():
        try:
            with np.load(path) as z:
                arrays = {n: (z[f"{n}/0"], z[f"{n}/1"]) for n in names}
            if _arrays_checksum((n, arrays[n]) for n in names) == info.sha256:
                return arrays, info
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            pass
        path.unlink(missing_ok=True)  # stale or damaged: rebuilt below
    model, info = load_network(info.name)
    arrays = {layer.name: tuple(np.asarray(w.numpy(), np.float32) for w in layer.weights) for layer in model.layers}
    if list(arrays) != names:
        raise WeightsError(f"model {info.name}: layers {list(arrays)} differ from the architecture's")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{f"{n}/{i}": a for n in names for i, a in enumerate(arrays[n])})
    return arrays, info


def weights_width(path) -> float:
    """Channel multiplier of a saved network, from its bottleneck convolution
    (256 output channels at width 1; the narrow first layers are clamped)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            node = f["convmid/vars/0"] if "convmid/vars/0" in f else f["layers/convmid/vars/0"]
            return node.shape[-1] / 256.0
    except (OSError, KeyError) as exc:
        raise WeightsError(f"{path}: not a maxidetect network weights file ({exc})") from None


def _chmod_default(path) -> None:
    """mkstemp files are 0600; published files get the usual umask mode."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _manifest_text(data: dict) -> str:
    """JSON with lists of numbers and names kept on one line (readable diffs)."""
    import re

    text = json.dumps(data, indent=2)
    return re.sub(r"\[\s*([^\[\]{}]*?)\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]" if m.group(1).strip()
                  else "[]", text) + "\n"


def register_model(
    name: str,
    weights_file,
    training_priors,
    description: str = "",
    thresholds=None,
    width: float | None = None,
    recipe: dict | None = None,
    evaluation: str | None = None,
    background: str = "maximask",
) -> ModelInfo:
    """Add (or replace) model ``name`` in the manifest, copying its weights
    beside it as ``NAME.weights.h5`` with their checksum.

    ``training_priors`` are the class proportions the network was trained on
    (they become the priors of the prior modification); ``recipe`` records
    the training data and settings; ``evaluation`` names the report;
    ``background``: the normalisation maps it was trained on.
    Existing entries keep their order; a new one goes last, so the default
    (first) model only changes by editing the manifest on purpose.
    """
    import shutil

    from maxidetect.network.keras_engine import build_model
    from maxidetect.network.normalise import check_background

    if not name or any(ch in name for ch in "/\\ "):
        raise ValueError(f"model name {name!r}: no spaces or slashes")
    priors = [float(p) for p in training_priors]
    if len(priors) != len(CLASS_NAMES) or not np.all(np.isfinite(priors)) or min(priors) < 0:
        raise ValueError(f"training_priors: need {len(CLASS_NAMES)} non-negative proportions")
    check_background(background)
    width = weights_width(weights_file) if width is None else width
    model = build_model(n_classes=len(CLASS_NAMES), width=width)
    model.load_weights(str(weights_file))
    entry = {
        "name": name,
        "description": description,
        "source": f"maxidetect:weights/{name}.weights.h5",
        "classes": list(CLASS_NAMES),
        "training_priors": priors,
        "thresholds": [float(t) for t in thresholds] if thresholds is not None else None,
        "normalisation": {**(get_model_info("maximask").normalisation if "maximask" in load_manifest() else {}),
                          "background": background},
        "architecture": {"family": "maximask-segnet", "width": float(width), "parameters": int(model.count_params())},
        "sha256": weights_checksum(model),
    }
    if recipe is not None:
        entry["recipe"] = recipe
    if evaluation is not None:
        entry["evaluation"] = evaluation
    target = weights_dir() / f"{name}.weights.h5"
    if Path(weights_file).resolve() != target.resolve():
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".weights.h5")
        os.close(fd)
        try:
            shutil.copyfile(weights_file, tmp)
            _chmod_default(tmp)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    path = manifest_path()
    data = json.loads(path.read_text()) if path.exists() else {"models": []}
    models = [m for m in data["models"] if m["name"] != name]
    at = next((i for i, m in enumerate(data["models"]) if m["name"] == name), len(models))
    models.insert(at, entry)
    data["models"] = models
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(_manifest_text(data))
    _chmod_default(tmp)
    os.replace(tmp, path)
    return load_manifest()[name]
