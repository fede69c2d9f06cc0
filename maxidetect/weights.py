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

from .classes import CLASS_NAMES

__all__ = [
    "ModelInfo",
    "MANIFEST_PATH",
    "load_manifest",
    "get_model_info",
    "default_model_name",
    "cache_dir",
    "weights_checksum",
    "load_network",
    "maximask_savedmodel_dir",
]

MANIFEST_PATH = Path(__file__).resolve().parent.parent / "weights" / "manifest.json"


class WeightsError(RuntimeError):
    """The weights of a model cannot be found, converted or verified."""


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

    @property
    def cache_file(self) -> Path:
        return cache_dir() / f"{self.name}.weights.h5"


def load_manifest() -> dict[str, ModelInfo]:
    """Read the manifest: ``{name: ModelInfo}`` in file order (default first)."""
    if not MANIFEST_PATH.exists():
        raise WeightsError(f"{MANIFEST_PATH}: model manifest missing (install from a checkout with pip -e)")
    data = json.loads(MANIFEST_PATH.read_text())
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
    h = hashlib.sha256()
    for layer in model.layers:
        for i, w in enumerate(layer.weights):
            arr = np.ascontiguousarray(np.asarray(w.numpy(), dtype="<f4"))
            h.update(f"{layer.name}/{i}:{arr.shape}".encode())
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
    from .network import build_model

    info = get_model_info(name)
    arch = info.architecture or {}
    model = build_model(n_classes=len(info.classes), width=arch.get("width", 1.0), dtype=dtype)

    repo_file = MANIFEST_PATH.parent / f"{info.name}.weights.h5"
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
