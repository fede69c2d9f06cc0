"""The contaminant score of each detection: a gradient-boosted tree model.

Trained with scikit-learn's ``HistGradientBoostingClassifier`` (the
``train`` extra; :mod:`maxidetect.training.score`) and exported to a JSON
file of trees that this module evaluates with numpy: nothing of
scikit-learn is needed, or pickled, at run time, and a model file reads the
same under any library version. The file is verified against the SHA-256
of its manifest entry (``weights/manifest.json``, ``scorers``) at load.

``MD_CONTAM`` is the model's probability that a detection is not a real
source (1 - P(real)); ``MD_CLASS`` the most likely contaminant when
``MD_CONTAM`` >= 0.5, else ``none``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maxidetect.errors import WeightsError
from maxidetect.score.features import FEATURES

__all__ = ["ScoreModel", "load_score_model", "scorer_info", "REAL"]

REAL = "real"


@dataclass
class _Tree:
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    leaf: np.ndarray
    value: np.ndarray
    missing_left: np.ndarray

    def predict(self, x: np.ndarray) -> np.ndarray:
        node = np.zeros(len(x), np.int64)
        active = ~self.leaf[node]
        while active.any():
            i = np.flatnonzero(active)
            nd = node[i]
            v = x[i, self.feature[nd]]
            go_left = np.where(np.isnan(v), self.missing_left[nd], v <= self.threshold[nd])
            node[i] = np.where(go_left, self.left[nd], self.right[nd])
            active[i] = ~self.leaf[node[i]]
        return self.value[node]


class ScoreModel:
    """A multi-class tree ensemble: ``predict_proba(features)`` -> (n, n_classes)."""

    def __init__(self, spec: dict, source: str = ""):
        self.spec = spec
        self.source = source
        self.classes = list(spec["classes"])
        self.features = list(spec["features"])
        if self.features != list(FEATURES):
            raise WeightsError(f"{source}: score model built for other features (retrain it: maxidetect train-score)")
        self.baseline = np.asarray(spec["baseline"], np.float64)
        self.trees = [[_Tree(**{k: np.asarray(v) for k, v in t.items()}) for t in it] for it in spec["iterations"]]
        self.threshold = float(spec.get("threshold", 0.5))
        recipe = spec.get("recipe") if isinstance(spec.get("recipe"), dict) else {}
        fwhm = (recipe.get("sim_range") or {}).get("fwhm")
        #: (lo, hi) PSF FWHM [px] of the training frames, or None if the spec does not say.
        self.fwhm_range = (float(fwhm[0]), float(fwhm[1])) if fwhm else None
        self.real = self.classes.index(REAL)

    def raw(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        out = np.tile(self.baseline, (len(x), 1))
        for it in self.trees:
            for k, tree in enumerate(it):
                out[:, k if len(it) > 1 else 0] += tree.predict(x)
        return out

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        raw = self.raw(x)
        if raw.shape[1] == 1:  # binary: one logit
            p1 = 1 / (1 + np.exp(-raw[:, 0]))
            return np.c_[1 - p1, p1]
        raw -= raw.max(axis=1, keepdims=True)
        e = np.exp(raw)
        return e / e.sum(axis=1, keepdims=True)

    def score(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(MD_CONTAM float32, MD_CLASS str) of a feature matrix."""
        if len(x) == 0:
            return np.zeros(0, np.float32), np.zeros(0, "<U4")
        p = self.predict_proba(x)
        contam = 1.0 - p[:, self.real]
        others = p.copy()
        others[:, self.real] = -1
        cls = np.array(self.classes)[np.argmax(others, axis=1)]
        return contam.astype(np.float32), np.where(contam >= 0.5, cls, "none").astype("<U4")


def scorer_info(name: str | None = None) -> dict:
    """The manifest entry of a score model (the first if ``name`` is None)."""
    from maxidetect.network.weights import _read_manifest

    entries = _read_manifest().get("scorers", [])
    if not entries:
        raise WeightsError("the model manifest lists no score model (scorers)")
    if name is None:
        return entries[0]
    for e in entries:
        if e["name"] == name:
            return e
    raise WeightsError(f"unknown score model {name!r}; known: {', '.join(e['name'] for e in entries)}")


_CACHE: dict[str, ScoreModel] = {}


def load_score_model(name: str | None = None, path=None) -> ScoreModel:
    """The verified score model of the manifest (or a JSON file at ``path``)."""
    from maxidetect.network.weights import weights_dir

    if path is None:
        info = scorer_info(name)
        path, sha = weights_dir() / info["file"], info["sha256"]
    else:
        sha = None
    path = Path(path)
    key = str(path.resolve())
    if key in _CACHE:
        return _CACHE[key]
    try:
        blob = path.read_bytes()
        if path.suffix == ".gz":
            blob = gzip.decompress(blob)
    except FileNotFoundError:
        raise WeightsError(f"{path}: score model missing (reinstall maxidetect, or maxidetect train-score)") from None
    except (OSError, EOFError) as exc:
        raise WeightsError(f"{path}: unreadable score model ({exc})") from None
    if sha is not None and hashlib.sha256(blob).hexdigest() != sha:
        raise WeightsError(f"{path}: checksum does not match the manifest's score model entry")
    try:
        model = ScoreModel(json.loads(blob), source=str(path))
    except (ValueError, KeyError) as exc:
        raise WeightsError(f"{path}: not a score model ({exc})") from None
    _CACHE[key] = model
    return model
