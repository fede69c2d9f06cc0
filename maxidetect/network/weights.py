"""Known models: the manifest and the weight files, verified at every load.

``weights/manifest.json`` (installed as ``maxidetect/weights``) lists the
models maxidetect knows, the default first, and the MaxiTrack classifier.
Each has one ``NAME.npz`` of float32 arrays beside the manifest
(``layer/0`` kernel, ``layer/1`` bias or PReLU slopes) and a SHA-256 over
its arrays in layer order; a file that does not match is refused. The
pretrained MaxiMask and MaxiTrack arrays were converted once from the
SavedModels of PyPI ``maximask`` 1.4.1 (MIT; ``weights/NOTICE.md``):
:func:`convert_pretrained` repeats that conversion for anyone who wants to
check it (it needs the ``convert`` extra: TensorFlow and ``maximask``).
Nothing is converted or downloaded at run time, and nothing of Keras or
TensorFlow is imported to read the arrays.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maxidetect.classes import CLASS_NAMES
from maxidetect.errors import WeightsError
from maxidetect.files import atomic_output
from maxidetect.network.architecture import LAYER_SPECS
from maxidetect.resources import data_dir

__all__ = [
    "ModelInfo",
    "load_manifest",
    "get_model_info",
    "default_model_name",
    "manifest_path",
    "weights_dir",
    "arrays_checksum",
    "weights_checksum",
    "model_arrays",
    "load_weight_arrays",
    "load_network",
    "load_tracker_arrays",
    "save_arrays",
    "read_arrays",
    "weights_width",
    "register_model",
    "convert_pretrained",
    "maximask_savedmodel_dir",
]

#: Layer order of the MaxiTrack arrays (the order of its checksum).
TRACKER_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "conv1_prelu", "conv2_prelu", "conv3_prelu",
                  "conv4_prelu", "conv5_prelu", "dense1", "dense2", "dense1_prelu", "dense2_prelu", "dense3")


def weights_dir() -> Path:
    """Directory of the manifest and weight files: ``$MAXIDETECT_WEIGHTS_DIR``
    if set (a private model zoo), else the installed ``maxidetect/weights``."""
    env = os.environ.get("MAXIDETECT_WEIGHTS_DIR")
    return Path(env) if env else data_dir("weights")


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
    map_thresholds: list[float] | None = None
    #: Why the model is not offered for maps (maps, detect, sex), or None: a
    #: model must pass the maps' invariants (no real source lost) to make them.
    no_maps: str | None = None

    @property
    def arrays_file(self) -> Path:
        return weights_dir() / f"{self.name}.npz"


def _read_manifest() -> dict:
    path = manifest_path()
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise WeightsError(f"{path}: model manifest missing (set MAXIDETECT_WEIGHTS_DIR or reinstall maxidetect)") \
            from None
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: unreadable model manifest ({exc})") from None


def load_manifest() -> dict[str, ModelInfo]:
    """Read the manifest: ``{name: ModelInfo}`` in file order (default first)."""
    models = {}
    for entry in _read_manifest()["models"]:
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


def tracker_info() -> dict:
    for t in _read_manifest().get("trackers", []):
        if t["name"] == "maxitrack":
            return t
    raise WeightsError(f"{manifest_path()}: no 'maxitrack' entry under 'trackers'")


# -- arrays and checksums ------------------------------------------------------
def arrays_checksum(layers) -> str:
    """SHA-256 over ``(layer name, [arrays])`` pairs: name, shape and float32
    little-endian bytes in order; stable across file formats and platforms."""
    h = hashlib.sha256()
    for name, arrays in layers:
        for i, w in enumerate(arrays):
            arr = np.ascontiguousarray(np.asarray(w, dtype="<f4"))
            h.update(f"{name}/{i}:{arr.shape}".encode())
            h.update(arr.tobytes())
    return h.hexdigest()


def model_arrays(model) -> dict[str, tuple[np.ndarray, ...]]:
    """A Keras model's variables as ``{layer: (arrays...)}`` in layer order."""
    return {layer.name: tuple(np.asarray(w.numpy(), np.float32) for w in layer.weights)
            for layer in model.layers if layer.weights}


def weights_checksum(model) -> str:
    """:func:`arrays_checksum` of a Keras model's variables."""
    return arrays_checksum(model_arrays(model).items())


# Storage: float32 arrays as their four byte planes (sign and exponent bytes
# apart from the mantissa bytes) in a deflated zip, which np.load reads; a model
# fine-tuned from another may be stored as the XOR of its bit patterns with
# the base's, whose leading bits mostly cancel. Measured on the shipped files:
# 93 MB as float32 npz -> 51 MB (maximask 19 MB, maxitrack 28 MB, the
# distilled network 3.5 MB as a delta on maximask). The checksums are over the
# arrays, so they do not depend on the storage.
_PLANES, _XOR, _BASE = "@planes", "@xor", "@base"


def _planes(bits: np.ndarray) -> np.ndarray:
    """uint32 bit patterns (shape S) -> uint8 byte planes (4, *S), least significant first."""
    bits = np.ascontiguousarray(bits, dtype="<u4")
    return np.moveaxis(bits.view(np.uint8).reshape(bits.shape + (4,)), -1, 0)


def _from_planes(planes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_planes`, as uint32 bit patterns."""
    return np.ascontiguousarray(np.moveaxis(planes, 0, -1)).view("<u4")[..., 0]


def save_arrays(path, arrays: dict, base=None) -> Path:
    """Write ``{layer: (arrays...)}`` as an ``.npz`` (``layer/i``), atomically.

    ``base``: an ``.npz`` (a model this one was fine-tuned from): each array
    whose layer and shape it shares is stored as a delta on it, the others
    whole; the base must stay beside ``path`` (:func:`read_arrays` finds it
    by file name) and is named in the file only if some array needs it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ref = read_arrays(base) if base is not None else {}
    members = {}
    for name, t in arrays.items():
        for i, a in enumerate(t):
            bits = np.asarray(a, "<f4").view("<u4")
            b = ref.get(name, ())
            if i < len(b) and b[i].shape == bits.shape:
                members[f"{name}/{i}{_XOR}"] = _planes(bits ^ np.asarray(b[i], "<f4").view("<u4"))
            else:
                members[f"{name}/{i}{_PLANES}"] = _planes(bits)
    if any(k.endswith(_XOR) for k in members):
        members = {_BASE: np.array(Path(base).name), **members}
    with atomic_output(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for key, arr in members.items():
            with z.open(f"{key}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)
    return path


def read_arrays(path) -> dict[str, tuple[np.ndarray, ...]]:
    """``{layer: (arrays...)}`` from an ``.npz`` written by :func:`save_arrays` (or
    the weights of a training checkpoint, ``OUT.ckpt.npz``), in file order."""
    path = Path(path)
    out: dict[str, list] = {}
    try:
        with np.load(path) as z:
            base = read_arrays(path.parent / str(z[_BASE].ravel()[0])) if _BASE in z.files else None
            for key in z.files:
                if key == _BASE or key == "state" or key.startswith("o:"):
                    continue  # a training checkpoint (OUT.ckpt.npz): its weights are "w:layer/i"
                value = z[key]
                if key.endswith(_PLANES):
                    key, value = key.removesuffix(_PLANES), _from_planes(value).view("<f4")
                elif key.endswith(_XOR):
                    key = key.removesuffix(_XOR)
                    name, i = key.rsplit("/", 1)
                    ref = np.asarray(base[name][int(i)], "<f4").view("<u4")
                    value = (_from_planes(value) ^ ref).view("<f4")
                name, i = key.removeprefix("w:").rsplit("/", 1)
                out.setdefault(name, []).append((int(i), value))
    except FileNotFoundError:
        raise WeightsError(f"{path}: weights file missing") from None
    except (OSError, ValueError, KeyError, IndexError, zipfile.BadZipFile) as exc:
        raise WeightsError(f"{path}: unreadable weights file ({exc})") from None
    return {n: tuple(a for _, a in sorted(v, key=lambda t: t[0])) for n, v in out.items()}


def _verified(path: Path, order, sha256: str, what: str) -> dict:
    arrays = read_arrays(path)
    missing = [n for n in order if n not in arrays]
    if missing:
        raise WeightsError(f"{path}: {what} weights lack layers {missing}")
    if arrays_checksum((n, arrays[n]) for n in order) != sha256:
        raise WeightsError(f"{path}: checksum does not match the manifest entry {what} (damaged or replaced file)")
    return {n: arrays[n] for n in order}


def load_weight_arrays(name: str | None = None):
    """Kernels and biases of model ``name``, verified, without Keras.

    Returns ``({layer: (kernel (3, 3, in, out), bias (out,))}, info)`` in
    :data:`~maxidetect.network.architecture.LAYER_SPECS` order.
    """
    info = get_model_info(name)
    arrays = _verified(info.arrays_file, [n for n, _, _ in LAYER_SPECS], info.sha256, info.name)
    return arrays, info


def load_tracker_arrays() -> dict:
    """The MaxiTrack arrays, verified: ``{layer: (kernel, bias) or (slopes,)}``."""
    info = tracker_info()
    return _verified(weights_dir() / f"{info['name']}.npz", TRACKER_LAYERS, info["sha256"], info["name"])


def load_network(name: str | None = None, dtype=None):
    """The Keras 3 network of model ``name`` with its verified weights:
    ``(model, info)`` (needs Keras and a backend: the ``keras`` extra)."""
    from maxidetect.network.keras_engine import build_model

    arrays, info = load_weight_arrays(name)
    arch = info.architecture or {}
    model = build_model(n_classes=len(info.classes), width=arch.get("width", 1.0), dtype=dtype)
    for layer in model.layers:
        layer.set_weights(list(arrays[layer.name]))
    return model, info


def weights_width(path) -> float:
    """Channel multiplier of a saved network (``.npz`` or Keras ``.weights.h5``),
    from its bottleneck convolution (256 output channels at width 1)."""
    path = Path(path)
    if path.suffix == ".npz":
        return read_arrays(path)["convmid"][0].shape[-1] / 256.0
    try:
        import h5py

        with h5py.File(path, "r") as f:
            node = f["convmid/vars/0"] if "convmid/vars/0" in f else f["layers/convmid/vars/0"]
            return node.shape[-1] / 256.0
    except (OSError, KeyError) as exc:
        raise WeightsError(f"{path}: not a maxidetect network weights file ({exc})") from None


def _network_arrays(weights_file, width: float | None) -> tuple[dict, float]:
    """The arrays of a trained network from ``.npz`` or ``.weights.h5``."""
    path = Path(weights_file)
    width = weights_width(path) if width is None else width
    if path.suffix == ".npz":
        arrays = read_arrays(path)
    else:
        from maxidetect.network.keras_engine import build_model

        model = build_model(n_classes=len(CLASS_NAMES), width=width)
        model.load_weights(str(path))
        arrays = model_arrays(model)
    names = [n for n, _, _ in LAYER_SPECS]
    if [n for n in arrays] != names:
        raise WeightsError(f"{path}: layers {list(arrays)} differ from the architecture's")
    return arrays, width


def _manifest_text(data: dict) -> str:
    """JSON with lists of numbers and names kept on one line (readable diffs)."""
    text = json.dumps(data, indent=2)
    return re.sub(r"\[\s*([^\[\]{}]*?)\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]" if m.group(1).strip()
                  else "[]", text) + "\n"


def _write_manifest(data: dict) -> None:
    path = manifest_path()
    with atomic_output(path) as tmp, open(tmp, "w") as f:
        f.write(_manifest_text(data))


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
    map_thresholds=None,
    delta_base: str | None = None,
) -> ModelInfo:
    """Add (or replace) model ``name`` in the manifest, writing its arrays
    beside it as ``NAME.npz`` with their checksum.

    ``weights_file``: ``.npz`` or a Keras ``.weights.h5`` (training's output).
    ``training_priors`` are the class proportions the network was trained on
    (they become the priors of the prior modification); ``recipe`` records
    the training data and settings; ``evaluation`` names the report;
    ``background``: the normalisation maps it was trained on;
    ``map_thresholds``: its per-class thresholds for the maps;
    ``delta_base``: the model its arrays are stored as a delta on (default
    the recipe's ``init``; a model retrained from its own earlier version
    names the one that version was a delta on).
    Existing entries keep their order; a new one goes last, so the default
    (first) model only changes by editing the manifest on purpose.
    """
    from maxidetect.network.normalise import check_background

    if not name or any(ch in name for ch in "/\\ "):
        raise ValueError(f"model name {name!r}: no spaces or slashes")
    priors = [float(p) for p in training_priors]
    if len(priors) != len(CLASS_NAMES) or not np.all(np.isfinite(priors)) or min(priors) < 0:
        raise ValueError(f"training_priors: need {len(CLASS_NAMES)} non-negative proportions")
    check_background(background)
    arrays, width = _network_arrays(weights_file, width)
    data = _read_manifest() if manifest_path().exists() else {"models": []}
    base = next((m for m in data["models"] if m["name"] == "maximask"), None)
    entry = {
        "name": name,
        "description": description,
        "source": f"maxidetect:weights/{name}.npz",
        "classes": list(CLASS_NAMES),
        "training_priors": priors,
        "thresholds": [float(t) for t in thresholds] if thresholds is not None else None,
        "normalisation": {**(base["normalisation"] if base else {}), "background": background},
        "architecture": {"family": "maximask-segnet", "width": float(width),
                         "parameters": int(sum(a.size for t in arrays.values() for a in t))},
        "sha256": arrays_checksum(arrays.items()),
    }
    if map_thresholds is not None:
        entry["map_thresholds"] = [float(t) for t in map_thresholds]
    if recipe is not None:
        entry["recipe"] = recipe
    if evaluation is not None:
        entry["evaluation"] = evaluation
    # A fine-tune is stored as a delta on the model it started from (a few
    # MB instead of ~20) when that model's file is here.
    init = delta_base or (recipe or {}).get("init")
    base = weights_dir() / f"{init}.npz" if isinstance(init, str) and init != name else None
    if base is not None and not base.exists():
        base = None
    save_arrays(weights_dir() / f"{name}.npz", arrays, base=base)
    models = [m for m in data["models"] if m["name"] != name]
    at = next((i for i, m in enumerate(data["models"]) if m["name"] == name), len(models))
    models.insert(at, entry)
    data["models"] = models
    _write_manifest(data)
    return load_manifest()[name]


# -- one-time conversion from the maximask package (developers) ----------------
def maximask_savedmodel_dir(which: str = "maximask") -> Path:
    """Directory of a SavedModel installed with the ``maximask`` package
    (``which``: "maximask" or "maxitrack")."""
    try:
        import maximask_and_maxitrack
    except ImportError:
        raise WeightsError("the SavedModels come from the 'maximask' package: pip install 'maxidetect[convert]'") \
            from None
    d = Path(maximask_and_maxitrack.__file__).resolve().parent / which / "model"
    if not (d / "variables" / "variables.index").exists():
        raise WeightsError(f"{d}: no SavedModel variables found in the maximask package")
    return d


def _checkpoint_reader(which: str):
    try:
        import tensorflow as tf
    except ImportError:
        raise WeightsError("reading the SavedModel needs TensorFlow: pip install 'maxidetect[convert]'") from None
    return tf.train.load_checkpoint(str(maximask_savedmodel_dir(which) / "variables" / "variables"))


def convert_pretrained(out_dir=None) -> dict[str, Path]:
    """Convert MaxiMask's and MaxiTrack's SavedModel variables into
    ``maximask.npz`` and ``maxitrack.npz`` (in ``out_dir``, default the
    weights directory), each checked against the manifest's checksum."""
    out = Path(out_dir) if out_dir is not None else weights_dir()
    info = get_model_info("maximask")
    reader = _checkpoint_reader("maximask")

    def conv(name):
        return (reader.get_tensor(f"{name}/kernel/.ATTRIBUTES/VARIABLE_VALUE"),
                reader.get_tensor(f"{name}/bias/.ATTRIBUTES/VARIABLE_VALUE"))

    net = {n: conv(n) for n, _, _ in LAYER_SPECS}
    if arrays_checksum(net.items()) != info.sha256:
        raise WeightsError("converted MaxiMask weights do not match the manifest checksum")
    reader = _checkpoint_reader("maxitrack")
    track = {n: conv(n) for n in TRACKER_LAYERS if not n.endswith("_prelu")}
    # The PReLU slopes are saved as unnamed variables/N, in layer order.
    names = reader.get_variable_to_shape_map()
    slopes = sorted((int(k.split("/")[1]), k) for k in names if k.startswith("variables/"))
    prelus = [n for n in TRACKER_LAYERS if n.endswith("_prelu")]
    if len(slopes) != len(prelus):
        raise WeightsError(f"MaxiTrack SavedModel: {len(slopes)} PReLU slopes, expected {len(prelus)}")
    track.update({n: (reader.get_tensor(k),) for n, (_, k) in zip(prelus, slopes, strict=True)})
    track = {n: track[n] for n in TRACKER_LAYERS}
    if arrays_checksum(track.items()) != tracker_info()["sha256"]:
        raise WeightsError("converted MaxiTrack weights do not match the manifest checksum")
    return {"maximask": save_arrays(out / "maximask.npz", net), "maxitrack": save_arrays(out / "maxitrack.npz", track)}
