"""Training the detection score: simulated frames through the whole pipeline
(network, fused maps, SEP detection), each detection labelled by the truth
catalogue (``real`` if it matches a true source within 1 FWHM that could be
detected alone, expected S/N >= 3; else the contaminant under it, ``BG`` for
a noise peak), and a gradient-boosted tree classifier fitted on their features.

Why scikit-learn's HistGradientBoostingClassifier: native multi-class with
calibrated probabilities (log loss), missing values and no feature scaling,
deterministic with a seed, minutes on 2 cores for ~10^5 detections, and
already an ecosystem dependency for training; LightGBM would add a compiled
dependency for no gain at this size. The fitted trees are exported to JSON
(:mod:`maxidetect.score.model`), so scoring needs no scikit-learn.

Guard against learning the simulator: training frames use one range of
simulator settings (:data:`TRAIN_RANGE`); the evaluation adds frames outside
it (:data:`OUT_OF_RANGE`: undersampled PSF, other sky, gain, 4x density,
stronger and weaker contaminants).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from maxidetect.classes import CLASSES
from maxidetect.extract.config import SexConfig
from maxidetect.extract.sep_engine import detect
from maxidetect.files import atomic_output
from maxidetect.maps.policy import MapPolicy
from maxidetect.maps.trails import trails_from_header
from maxidetect.maps.writer import maps_from_masks
from maxidetect.score.features import FEATURES, PsfShape, detection_features
from maxidetect.score.model import REAL, ScoreModel
from maxidetect.validation.scoring import CONTAMINANT_ORDER, MATCH_RULE, evaluate_scores, match_detections
from maxidetect.validation.simulate import SIMULATOR_VERSION, SimConfig, simulate_frame

__all__ = ["TRAIN_RANGE", "TRAIN_DENSITY", "TRAIN_TRACKING", "OUT_OF_RANGE", "FLAG_ONLY_EVIDENCE",
           "frame_detections", "make_dataset", "trainable", "train", "export",
           "evaluate_scores", "choose_threshold"]

#: Completeness is measured on true sources above this expected S/N (as ``bench``).
SNR_CUT = 10.0
#: The simulator settings the model is trained on. The PSF range includes
#: undersampled seeing (FWHM 1.5-2.5 px, common on wide-field cameras): trained
#: on 2.5-4.5 px only, the model called 1.4% of the real S/N > 10 detections on
#: undersampled frames contaminants even at MD_CONTAM 0.99.
#: Nearby disc galaxies (``n_large_galaxies``: 0.5 per frame) were tried and not kept: on the same
#: held-out frames the model so trained was no better at any threshold (docs/measurements.md).
#: Elliptical PSFs to axis ratio ~0.7 (the simulator's ellipticity, per frame): the features read
#: shapes against the frame's PSF, which the model must see other than round.
TRAIN_RANGE = {"fwhm": (1.5, 4.5), "sky": (400.0, 1500.0), "gain": 2.0, "ellipticity": (0.0, 0.3)}
#: Source density of the training frames: the simulator's star count times
#: each factor in turn (frame by frame). Trained at 1x only, the model called
#: real detections of 4x-crowded frames contaminants up to 0.10 more often
#: than they were (per decile); 4x stays outside this range, for the evaluation.
TRAIN_DENSITY = (0.5, 1.0, 2.0)
#: Tracking errors of the training frames [px], frame by frame (with the densities: every pair):
#: trained on untrailed frames only, the score called stars trailed 5-16 px by a second generator's
#: tracking error contaminants (--clean lost 1.1 pt of completeness at FWHM 1.6-3.5 px, 5.4 pt at
#: 1.1-1.6 px). Longer trails stay outside, for the evaluation.
TRAIN_TRACKING = (0.0, 0.0, 0.0, 5.0, 11.0)
#: Frames outside it, for the evaluation only ("undersampled", inside the
#: training PSF range now, is kept as the bench variant's check).
OUT_OF_RANGE = {
    "undersampled": {"fwhm": (1.5, 2.2)},
    "very_undersampled": {"fwhm": (1.1, 1.5)},
    "broad_psf": {"fwhm": (4.5, 6.5)},
    "bright_sky": {"sky": (2500.0, 5000.0)},
    "faint_sky": {"sky": (80.0, 300.0)},
    "gain_1": {"gain": 1.0, "rdnoise": 8.0},
    "crowded": {"n_stars": 2800},
    "many_defects": {"n_cr": 1200, "n_hp": 400, "n_trails": 4},
    "long_tracking": {"tracking_length": 20.0},
    "sharp_tracking": {"fwhm": (1.1, 1.5), "tracking_length": 8.0},
}


def _bit(abbr):
    return next(c.bit for c in CLASSES if c.abbr == abbr)


def _labels(cat, frame, fwhm: float) -> tuple[np.ndarray, np.ndarray]:
    """real / contaminant abbreviation / BG (unexplained noise peak) per
    detection, and the matched true source's expected S/N (NaN if none)."""
    from scipy import ndimage

    det, di, ti = match_detections(cat, frame.catalog, fwhm, frame.truth)
    out = np.full(len(det), "BG", dtype=object)
    grown = ndimage.grey_dilation(frame.truth, size=(3, 3))
    h, w = frame.truth.shape
    ix = np.clip(np.round(det[:, 0]).astype(int), 0, w - 1)
    iy = np.clip(np.round(det[:, 1]).astype(int), 0, h - 1)
    bits = grown[iy, ix]
    for abbr in reversed(CONTAMINANT_ORDER):
        out[(bits & _bit(abbr)) != 0] = abbr
    out[di] = REAL
    snr = np.full(len(det), np.nan)
    snr[di] = np.asarray(frame.catalog["SNR"], float)[ti]
    return out, snr


def frame_detections(frame, maker, policy: MapPolicy | None = None, config: SexConfig | None = None):
    """(catalog, features, labels, true S/N, maps) of one simulated frame
    through the default pipeline (fused maps, SEP engine)."""
    policy = policy or MapPolicy()
    sel = [int(i) for i in maker.selected]
    probs = maker.probabilities(frame.image)
    masks = probs > maker.config.thresholds[sel][:, None, None]
    ms = maps_from_masks(masks, maker, policy, image=frame.image, header=frame.header, probs=probs)
    del probs
    hdr = ms.header(frame.header)
    d = detect(frame.image, config or SexConfig(), weight=ms.weight, flag=ms.flag, header=frame.header)
    fwhm = float(hdr.get("MDFWHM", frame.header["SIMFWHM"]))
    x = detection_features(frame.image, ms.weight, ms.flag, d.segmentation, np.asarray(d.catalog["NUMBER"]),
                           fwhm, trails_from_header(hdr), psf=PsfShape.from_header(hdr))
    labels, snr = _labels(d.catalog, frame, float(frame.header["SIMFWHM"]))
    return d.catalog, x, labels, snr, ms


def make_dataset(seeds, size: int, sim: dict | None = None, maker=None, progress: bool = True,
                 density=(1.0,), tracking=None, cache=None):
    """Features, labels, frame seeds and matched true S/N of every detection
    of the frames ``seeds``; frame k has ``density[k % len(density)]`` times
    the configured number of stars and (``tracking`` given) a tracking error of
    ``tracking[k % len(tracking)]`` px. ``cache``: a folder where each set is
    kept (.npz, keyed by these arguments, the features, the simulator and the
    network: not by the maps' code, so empty it after changing that) and read
    back instead of made again (refitting the trees with other settings takes
    minutes, not the hour the frames take)."""
    key = None
    if cache is not None:
        maker_name = getattr(getattr(getattr(maker, "predictor", None), "info", None), "name", "default")
        key = hashlib.sha256(json.dumps([list(map(int, seeds)), size, sim, list(density),
                                         None if tracking is None else list(tracking), list(FEATURES),
                                         SIMULATOR_VERSION, str(maker_name)], sort_keys=True,
                                        default=str).encode()).hexdigest()[:16]
        path = Path(cache) / f"dataset-{key}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                return z["x"], z["y"].astype(object), z["frames"], z["snr"]
    out = _make_dataset(seeds, size, sim, maker, progress, density, tracking)
    if key is not None:
        Path(cache).mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, x=out[0], y=out[1].astype(str), frames=out[2], snr=out[3])
    return out


def _make_dataset(seeds, size, sim, maker, progress, density, tracking):
    from tqdm import tqdm

    from maxidetect.masks.maker import MaskMaker

    maker = maker or MaskMaker(for_maps=True)
    cfg = SimConfig(**{**asdict(SimConfig()), **(sim or {})})
    xs, ys, frames, snrs = [], [], [], []
    for k, seed in enumerate(tqdm(list(seeds), unit="frame", disable=not progress, file=sys.stderr)):
        track = cfg.tracking_length if tracking is None else float(tracking[k % len(tracking)])
        frame = simulate_frame(int(seed), replace(cfg, n_stars=round(cfg.n_stars * density[k % len(density)]),
                                                  tracking_length=track), size=size)
        cat, x, y, snr, _ = frame_detections(frame, maker)
        xs.append(x)
        ys.append(y)
        snrs.append(snr)
        frames.append(np.full(len(y), int(seed)))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(frames), np.concatenate(snrs)


#: Contaminants that look exactly like a real source, so only the network's
#: flag of the class tells them: a persistence ghost is an earlier exposure's
#: star. Trained on unflagged ghosts, the model called soft real sources of
#: the same S/N persistence (default bench seed 100: galaxies of S/N 76 and 90
#: on bright background, MD_CONTAM 0.908 and 0.945, dropped by --clean).
FLAG_ONLY_EVIDENCE = ("P",)


def trainable(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """bool (n,): the detections the score learns from: all but those of a
    :data:`FLAG_ONLY_EVIDENCE` class with no flag of that class over their
    isophote or core (the frame holds no evidence of what they are). They
    stay in every evaluation, as the contaminants they are."""
    y = np.asarray(y, dtype=object)
    keep = np.ones(len(y), bool)
    for abbr in FLAG_ONLY_EVIDENCE:
        flagged = (x[:, FEATURES.index(f"iso_{abbr}")] > 0) | (x[:, FEATURES.index(f"core_{abbr}")] > 0)
        keep &= ~((y == abbr) & ~flagged)
    return keep


def train(x: np.ndarray, y: np.ndarray, seed: int = 0, max_iter: int = 300):
    """The fitted HistGradientBoostingClassifier (scikit-learn, ``train`` extra),
    on the :func:`trainable` detections."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    keep = trainable(x, y)
    x, y = x[keep], merge_rare(np.asarray(y)[keep])
    clf = HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=0.08, max_leaf_nodes=31,
                                         min_samples_leaf=30, l2_regularization=1.0, early_stopping=True,
                                         validation_fraction=0.15, n_iter_no_change=20, random_state=seed)
    return clf.fit(x, y)


def merge_rare(y: np.ndarray, min_count: int = 20) -> np.ndarray:
    """Contaminant classes too rare to learn become BG (an unexplained spurious detection)."""
    y = np.asarray(y, dtype=object).copy()
    for c, n in zip(*np.unique(y, return_counts=True), strict=True):
        if n < min_count and c != REAL:
            y[y == c] = "BG"
    return y


def export(clf, meta: dict) -> dict:
    """The fitted trees as a JSON-able dict (:class:`~maxidetect.score.model.ScoreModel`)."""
    iterations = []
    for it in clf._predictors:
        trees = []
        for tp in it:
            nd = tp.nodes
            trees.append({"feature": nd["feature_idx"].astype(int).tolist(),
                          "threshold": nd["num_threshold"].astype(float).tolist(),
                          "left": nd["left"].astype(int).tolist(), "right": nd["right"].astype(int).tolist(),
                          "leaf": nd["is_leaf"].astype(bool).tolist(), "value": nd["value"].astype(float).tolist(),
                          "missing_left": nd["missing_go_to_left"].astype(bool).tolist()})
        iterations.append(trees)
    return {"classes": [str(c) for c in clf.classes_], "features": list(FEATURES),
            "baseline": np.asarray(clf._baseline_prediction, float).ravel().tolist(),
            "iterations": iterations, **meta}


def choose_threshold(contam: np.ndarray, real: np.ndarray, snr: np.ndarray | None = None,
                     snr_cut: float = SNR_CUT, max_real_loss: float = 0.0025) -> float:
    """The lowest MD_CONTAM threshold that keeps all but ``max_real_loss`` of
    the real detections of true sources with expected S/N > ``snr_cut`` (the
    population completeness is measured on, so the clean catalogue loses at
    most that much completeness) on held-out frames. Fainter real detections
    are not protected: near the noise a real source and a noise peak look
    alike, and protecting them all would keep most of the contamination.
    The default 0.25% is half the completeness budget (0.5 pt): out of the
    training range the model loses more (undersampled and crowded frames: up
    to 4x the in-range loss at MD_CONTAM 0.8-0.95)."""
    contam, real = np.asarray(contam), np.asarray(real, bool)
    if snr is not None:
        real = real & (np.nan_to_num(np.asarray(snr, float), nan=0.0) > snr_cut)
    r = np.sort(contam[real])
    if not len(r):
        return 0.5
    k = int(np.floor((1 - max_real_loss) * (len(r) - 1)))
    return min(0.99, float(r[k]) + 1e-6)  # in float64 whatever the scores' type


def run(out, train_seeds=range(0, 24), held_seeds=range(500, 506), size: int = 1024, seed: int = 0,
        progress: bool = True, threshold_frames: int = 24, cache=None) -> dict:
    """Train, evaluate in and out of range, choose the threshold, write the model JSON.

    The threshold is chosen on ``threshold_frames`` in-range held-out frames
    (from ``held_seeds``' first seed; at least ``held_seeds``): the rule rests
    on the highest-scored few of the bright real detections, and on 6 frames
    (~350 of them) it moved by 0.1 between two sets of frames."""
    from maxidetect.masks.maker import MaskMaker

    t0 = time.perf_counter()
    maker = MaskMaker(for_maps=True)
    x, y, _, _ = make_dataset(train_seeds, size, TRAIN_RANGE, maker, progress, TRAIN_DENSITY, TRAIN_TRACKING, cache)
    clf = train(x, y, seed)
    t_train = time.perf_counter() - t0
    meta = {"recipe": {"train_seeds": [min(train_seeds), max(train_seeds)], "size": size, "seed": seed,
                       "sim_range": {k: list(v) if isinstance(v, tuple) else v for k, v in TRAIN_RANGE.items()},
                       "density": list(TRAIN_DENSITY), "tracking": list(TRAIN_TRACKING),
                       "simulator_version": SIMULATOR_VERSION,
                       "n_detections": int(len(y)),
                       "classes": {str(c): int((y == c).sum()) for c in np.unique(y)},
                       "left_out": {"rule": "detections of a class in FLAG_ONLY_EVIDENCE without its flag "
                                    "(maxidetect.training.score.trainable)",
                                    "n": int((~trainable(x, y)).sum()), "classes": list(FLAG_ONLY_EVIDENCE)},
                       "estimator": "sklearn HistGradientBoostingClassifier",
                       "params": {k: v for k, v in clf.get_params().items() if isinstance(v, (int, float, str))},
                       "n_iter": int(clf.n_iter_), "seconds": round(t_train, 1),
                       "label_rule": MATCH_RULE}}
    model = ScoreModel(export(clf, meta))
    evaluation = {}
    in_seeds = _threshold_seeds(held_seeds, threshold_frames)
    for name, sim in [("in_range", TRAIN_RANGE)] + list(OUT_OF_RANGE.items()):
        sim_cfg = {**TRAIN_RANGE, **sim} if name != "in_range" else sim
        xh, yh, _, snr = make_dataset(in_seeds if name == "in_range" else held_seeds, size, sim_cfg, maker,
                                      progress, TRAIN_DENSITY if name == "in_range" else (1.0,),
                                      TRAIN_TRACKING if name == "in_range" else None, cache)
        contam, _ = model.score(xh)
        evaluation[name] = {"contam": contam.tolist(), "real": (yh == REAL).tolist(), "snr": snr.tolist(),
                            **evaluate_scores(contam, yh == REAL, snr, SNR_CUT)}
    ins = evaluation["in_range"]
    threshold = choose_threshold(np.asarray(ins["contam"]), np.asarray(ins["real"]), np.asarray(ins["snr"]))
    meta["recipe"]["threshold_frames"] = [in_seeds[0], in_seeds[-1]]
    spec = export(clf, {**meta, "threshold": threshold})
    return _write(out, spec, evaluation)


def _threshold_seeds(held_seeds, threshold_frames: int) -> list[int]:
    held = list(held_seeds)
    return list(range(held[0], held[0] + max(threshold_frames, len(held))))


def _write(out, spec: dict, evaluation: dict) -> dict:
    """The model JSON (gzip if ``out`` ends in .gz) and its record, atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(spec, separators=(",", ":"))
    # NAME.json.gz: gzip (a third of the size); the checksum is the JSON's either way
    blob = gzip.compress(text.encode(), mtime=0) if out.suffix == ".gz" else text.encode()
    with atomic_output(out) as tmp:
        Path(tmp).write_bytes(blob)
    record = {"file": out.name, "sha256": hashlib.sha256(text.encode()).hexdigest(), "threshold": spec["threshold"],
              "recipe": spec["recipe"],
              "threshold_rule": f"keeps all but 0.25% of held-out in-range real detections of sources "
                                f"with expected S/N > {SNR_CUT:g} (frames recipe.threshold_frames)",
              "evaluation": {k: {kk: vv for kk, vv in v.items() if kk not in ("contam", "real", "snr")}
                             for k, v in evaluation.items()}}
    with atomic_output(out.with_name(out.name.removesuffix(".gz")).with_suffix(".record.json")) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=1))
    return {**record, "raw": evaluation}


def rethreshold(path, out, held_seed: int = 500, threshold_frames: int = 24, size: int = 1024,
                progress: bool = True) -> dict:
    """Choose the threshold of a trained model again, on ``threshold_frames``
    in-range held-out frames from ``held_seed``, without refitting its trees
    (what :func:`run` with that many threshold frames writes); the record's
    other evaluations are kept. Writes ``out`` and its record."""
    from maxidetect.masks.maker import MaskMaker
    from maxidetect.score.model import load_score_model

    model = load_score_model(path=path)
    spec = dict(model.spec)
    seeds = _threshold_seeds([held_seed], threshold_frames)
    xh, yh, _, snr = make_dataset(seeds, size, TRAIN_RANGE, MaskMaker(for_maps=True), progress,
                                  TRAIN_DENSITY, TRAIN_TRACKING)
    contam, _ = model.score(xh)
    record = json.loads(Path(path).with_name(Path(path).name.removesuffix(".gz")).with_suffix(".record.json")
                        .read_text())
    evaluation = dict(record["evaluation"])
    evaluation["in_range"] = {"contam": contam.tolist(), "real": (yh == REAL).tolist(), "snr": snr.tolist(),
                              **evaluate_scores(contam, yh == REAL, snr, SNR_CUT)}
    spec["threshold"] = choose_threshold(contam, yh == REAL, snr)
    spec["recipe"] = {**spec["recipe"], "threshold_frames": [seeds[0], seeds[-1]]}
    return _write(out, spec, evaluation)
