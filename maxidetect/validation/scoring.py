"""Scoring against truth: catalogue matching, completeness, contamination,
flux accuracy, and pixel-level mask quality (TPR, FPR, purity, ROC, AUC).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from maxidetect.classes import CLASSES, class_index

__all__ = [
    "match_catalogs",
    "match_truth",
    "MATCH_MIN_SNR",
    "MATCH_FLUX_RATIO",
    "MATCH_FLUX_SIGMA",
    "MATCH_FLUX_RADIUS",
    "MATCH_FLUX_SNR",
    "MATCH_RULE",
    "match_detections",
    "score_catalog",
    "mask_quality",
    "roc_curve",
    "CONTAMINANT_ORDER",
    "evaluate_scores",
]

#: Order in which a spurious detection is attributed to one contaminant: the
#: most specific (small, defect-like) classes first, diffuse ones last.
CONTAMINANT_ORDER = ("CR", "HP", "HCL", "DP", "DCL", "TRL", "P", "SP", "SAT", "OV", "FR", "NEB", "BBG")


def match_catalogs(det_xy, true_xy, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching within ``radius``, closest pairs first.

    Parameters
    ----------
    det_xy, true_xy : array, shape (N, 2) and (M, 2)
        Positions in the same pixel convention.
    radius : float
        Maximum separation [pix].

    Returns
    -------
    det_idx, true_idx : int arrays of equal length
        Matched pairs; every detection and every true source is used at most once.
    """
    det_xy = np.asarray(det_xy, float).reshape(-1, 2)
    true_xy = np.asarray(true_xy, float).reshape(-1, 2)
    if radius <= 0:
        raise ValueError(f"match radius must be > 0, got {radius}")
    if len(det_xy) == 0 or len(true_xy) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    pairs = cKDTree(det_xy).sparse_distance_matrix(cKDTree(true_xy), radius, output_type="ndarray")
    if len(pairs) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    order = np.lexsort((pairs["j"], pairs["i"], pairs["v"]))  # distance, then index: deterministic
    used_d = np.zeros(len(det_xy), bool)
    used_t = np.zeros(len(true_xy), bool)
    di, ti = [], []
    for k in order:
        i, j = pairs["i"][k], pairs["j"][k]
        if not used_d[i] and not used_t[j]:
            used_d[i] = used_t[j] = True
            di.append(i)
            ti.append(j)
    return np.array(di, int), np.array(ti, int)


#: A detection is credited to a true source only if that source could be
#: detected on its own: expected S/N >= 3 (the default 1.5 sigma over >= 5
#: pixels). Matched to a fainter one (most of a power-law catalogue), a cosmic
#: ray or hot pixel that fell on it counted as a real detection: on 4x-crowded
#: frames, half the "real" detections the score put above 0.9 were such.
MATCH_MIN_SNR = 3.0


#: A detection of a true source near the detection limit (expected S/N <
#: MATCH_FLUX_SNR) is that source only if its flux is no more than
#: MATCH_FLUX_RATIO times the true light around it (every true source within
#: MATCH_FLUX_RADIUS match radii, so a blend stays real) plus MATCH_FLUX_SIGMA
#: of its own error: a nebula knot or fringe peak of S/N 20-200 within 1 FWHM
#: of an S/N 3-6 star is not that star (on 4x-crowded frames, 46 of the 705
#: detections the score put above 0.9 were "real" by position alone, most of
#: them so). Brighter sources match by position alone: a star on a nebula has
#: a FLUX_AUTO of 5-20x its own (the nebula's light in its aperture) and is
#: still that star.
MATCH_FLUX_SNR = 10.0
MATCH_FLUX_RATIO = 3.0
MATCH_FLUX_SIGMA = 5.0
MATCH_FLUX_RADIUS = 3.0
#: The rule in words (the score's training record).
MATCH_RULE = (f"real: matched one-to-one within 1 FWHM to a true source with expected S/N >= {MATCH_MIN_SNR:g}; "
              f"below S/N {MATCH_FLUX_SNR:g} only with a flux (FLUX_AUTO) no more than {MATCH_FLUX_RATIO:g}x the "
              f"true light within {MATCH_FLUX_RADIUS:g} match radii + {MATCH_FLUX_SIGMA:g} errors; then a saturated "
              f"star left unmatched matches an unmatched detection within its saturated footprint (+1 FWHM)")
_SAT_BIT = CLASSES[class_index("SAT")].bit


def _match_saturated(det_xy, all_xy, snr, flux, di, ti, saturated, radius: float, min_snr: float):
    """Second pass for saturated stars: a star whose saturated footprint
    (``saturated``, grown by ``radius``) holds a detection left unmatched is
    that detection, closest first, one-to-one. Bleeding along columns and
    diffraction spikes move a saturated star's centroid by several FWHM (3-6
    px on crowded bench frames, S/N > 3000), and the first pass called those
    stars lost and their detections spurious. Only the brightest true source
    (``flux``) of a footprint is eligible."""
    saturated = np.asarray(saturated, bool)
    lab, n = ndimage.label(ndimage.binary_dilation(saturated, iterations=max(1, int(np.ceil(radius)))))
    if n == 0:
        return di, ti
    h, w = lab.shape

    def pixel(xy):
        return (np.clip(np.round(xy[:, 1]).astype(int), 0, h - 1), np.clip(np.round(xy[:, 0]).astype(int), 0, w - 1))

    free_d = np.ones(len(det_xy), bool)
    free_d[di] = False
    # only a star saturated itself (its centre within 1 px of a saturated pixel), not a faint one on a bleed
    free_t = (snr >= min_snr) & ndimage.binary_dilation(saturated, np.ones((3, 3), bool))[pixel(all_xy)]
    free_t[ti] = False
    rd, rt = lab[pixel(det_xy)], lab[pixel(all_xy)]
    # a faint star on the bleed of a bright one is not what saturated there
    free_t &= flux >= ndimage.maximum(flux, rt, np.arange(n + 1))[rt]
    add_d, add_t = [], []
    for k in np.intersect1d(rd[free_d & (rd > 0)], rt[free_t & (rt > 0)]):
        dk = np.flatnonzero(free_d & (rd == k))
        tk = np.flatnonzero(free_t & (rt == k))
        a, b = match_catalogs(det_xy[dk], all_xy[tk], float(max(h, w)))
        add_d.extend(dk[a])
        add_t.extend(tk[b])
    return np.r_[di, np.array(add_d, int)], np.r_[ti, np.array(add_t, int)]


def match_truth(det_xy, truth_cat, radius: float, min_snr: float = MATCH_MIN_SNR, det_flux=None,
                det_flux_err=None, saturated=None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`match_catalogs` against the true sources with expected S/N >=
    ``min_snr`` (column ``SNR``); the returned true indices are rows of
    ``truth_cat``. With ``det_flux`` (and ``det_flux_err``, per detection), a
    pair whose true source has S/N < :data:`MATCH_FLUX_SNR` and whose
    detection is brighter than :data:`MATCH_FLUX_RATIO` times the true
    ``FLUX`` of every source within :data:`MATCH_FLUX_RADIUS` x ``radius`` of
    it, plus :data:`MATCH_FLUX_SIGMA` errors, is no match. With ``saturated``
    (bool image of the truly saturated pixels), sources and detections left
    unmatched within one saturated footprint are paired there
    (:func:`_match_saturated`)."""
    snr = np.asarray(truth_cat["SNR"], float)
    all_xy = np.c_[np.asarray(truth_cat["X"], float), np.asarray(truth_cat["Y"], float)]
    keep = np.flatnonzero(snr >= min_snr)
    di, ti = match_catalogs(det_xy, all_xy[keep], radius)
    ti = keep[ti]
    faint = snr[ti] < MATCH_FLUX_SNR
    if det_flux is not None and faint.any():
        f = np.asarray(det_flux, float)[di[faint]]
        err = np.zeros_like(f) if det_flux_err is None else np.nan_to_num(np.asarray(det_flux_err, float)[di[faint]])
        tflux = np.asarray(truth_cat["FLUX"], float)
        near = cKDTree(all_xy).query_ball_point(np.asarray(det_xy, float)[di[faint]], MATCH_FLUX_RADIUS * radius)
        local = np.array([tflux[j].sum() for j in near])
        ok = np.ones(len(di), bool)
        ok[faint] = ~(f > MATCH_FLUX_RATIO * local + MATCH_FLUX_SIGMA * err)
        di, ti = di[ok], ti[ok]
    if saturated is not None and len(det_xy):
        di, ti = _match_saturated(np.asarray(det_xy, float).reshape(-1, 2), all_xy, snr,
                                  np.asarray(truth_cat["FLUX"], float), di, ti, saturated, radius, min_snr)
    return di, ti


def _attribute(bits: np.ndarray) -> np.ndarray:
    """One contaminant name per detection from its truth bits ("none" if 0)."""
    out = np.full(len(bits), "none", dtype=object)
    for abbr in reversed(CONTAMINANT_ORDER):
        bit = next(c.bit for c in CLASSES if c.abbr == abbr)
        out[(bits & bit) != 0] = abbr
    return out


def match_detections(cat, truth_cat, radius: float, truth_mask=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`match_truth` of a catalogue with SExtractor-named columns
    (1-based X_IMAGE/Y_IMAGE; FLUX_AUTO and FLUXERR_AUTO where present):
    (0-based detection positions (n, 2), detection indices, true indices).
    With ``truth_mask`` (contaminant bit codes), its SAT pixels are the
    saturated footprints of :func:`match_truth`."""
    det_xy = np.c_[np.asarray(cat["X_IMAGE"]) - 1.0, np.asarray(cat["Y_IMAGE"]) - 1.0] if len(cat) else np.zeros((0, 2))
    flux, err = (np.asarray(cat[c]) if len(cat) and c in cat.colnames else None for c in ("FLUX_AUTO", "FLUXERR_AUTO"))
    saturated = None if truth_mask is None else (np.asarray(truth_mask) & _SAT_BIT) != 0
    di, ti = match_truth(det_xy, truth_cat, radius, det_flux=flux, det_flux_err=err, saturated=saturated)
    return det_xy, di, ti


#: The point-like artefact classes whose flag on a real source is checked against the truth.
POINT_BITS = sum(c.bit for c in CLASSES if c.abbr in ("CR", "HP"))


def _false_point_flags(cat, det_xy, di, ti, snr, truth_mask, fwhm: float, min_snr: float = 20.0) -> tuple[int, int]:
    """(matched true sources of S/N > ``min_snr``, of them whose detection's
    IMAFLAGS_ISO says cosmic ray or hot pixel with no such pixel in the truth
    within its isophote's radius + 1 px (ISOAREA_IMAGE; 2 FWHM without it)):
    the real sources a catalogue kept to IMAFLAGS_ISO == 0 loses for a false
    call. (0, 0) without IMAFLAGS_ISO (no maps)."""
    if "IMAFLAGS_ISO" not in cat.colnames or not len(di):
        return 0, 0
    bright = snr[ti] > min_snr
    flags = np.asarray(cat["IMAFLAGS_ISO"])[di[bright]]
    area = np.asarray(cat["ISOAREA_IMAGE"], float)[di[bright]] if "ISOAREA_IMAGE" in cat.colnames else None
    h, w = truth_mask.shape
    n_false = 0
    for k in np.flatnonzero((flags & POINT_BITS) != 0):
        x, y = det_xy[di[bright][k]]
        r = int(np.ceil(np.sqrt(area[k] / np.pi) + 1)) if area is not None else int(np.ceil(2 * fwhm))
        iy, ix = int(round(y)), int(round(x))
        box = truth_mask[max(iy - r, 0):min(iy + r + 1, h), max(ix - r, 0):min(ix + r + 1, w)]
        n_false += not (box & POINT_BITS).any()
    return int(bright.sum()), int(n_false)


def score_catalog(
    cat,
    truth_cat,
    truth_mask: np.ndarray,
    fwhm: float,
    radius_fwhm: float = 1.0,
    snr_cut: float = 10.0,
    mag_bins=None,
) -> dict:
    """Completeness, contamination and flux accuracy of a detection catalogue.

    Parameters
    ----------
    cat : Table
        SExtractor-named columns (1-based X_IMAGE/Y_IMAGE, FLUX_AUTO; with
        FLUXERR_AUTO too, a match must be flux-consistent: :func:`match_truth`).
    truth_cat : Table
        X, Y (0-based), FLUX, MAG, SNR of the true sources; only those with
        SNR >= :data:`MATCH_MIN_SNR` can be matched (:func:`match_truth`).
    truth_mask : int array (H, W)
        OR of contaminant bit codes; a spurious detection is attributed to the
        contaminant under its centre (3x3 neighbourhood).
    fwhm : float
        PSF FWHM [pix]; the match radius is ``radius_fwhm * fwhm``.
    snr_cut : float
        Headline completeness counts true sources with expected S/N above this.

    Besides the figures, ``matched_true`` (indices of the matched true
    sources), ``matched_flux`` (their detections' FLUX_AUTO, in that order)
    and ``matched_det`` (bool per detection: matched) for callers that need
    the matching itself.
    """
    det_xy, di, ti = match_detections(cat, truth_cat, radius_fwhm * fwhm, truth_mask)
    matched_t = np.zeros(len(truth_cat), bool)
    matched_t[ti] = True
    matched_d = np.zeros(len(det_xy), bool)
    matched_d[di] = True
    snr = np.asarray(truth_cat["SNR"])
    bright = snr > snr_cut
    grown = ndimage.grey_dilation(truth_mask, size=(3, 3))
    h, w = truth_mask.shape
    sx = np.clip(np.round(det_xy[~matched_d, 0]).astype(int), 0, w - 1)
    sy = np.clip(np.round(det_xy[~matched_d, 1]).astype(int), 0, h - 1)
    who = _attribute(grown[sy, sx])
    by_class = {name: int(np.sum(who == name)) for name in (*CONTAMINANT_ORDER, "none")}
    mags = np.asarray(truth_cat["MAG"])
    if mag_bins is None:
        lo, hi = (np.floor(mags.min()), np.ceil(mags.max()) + 0.5) if len(mags) else (0, 1)
        mag_bins = np.arange(lo, hi, 0.5)
    idx = np.digitize(mags, mag_bins) - 1
    curve = []
    for k in range(len(mag_bins) - 1):
        sel = idx == k
        curve.append({"mag": float(0.5 * (mag_bins[k] + mag_bins[k + 1])), "n": int(sel.sum()),
                      "completeness": float(matched_t[sel].mean()) if sel.any() else None})
    n_point, n_false = _false_point_flags(cat, det_xy, di, ti, snr, truth_mask, fwhm)
    flux = np.asarray(cat["FLUX_AUTO"])[di] if len(di) else np.zeros(0)
    tflux = np.asarray(truth_cat["FLUX"])[ti]
    good = snr[ti] > 20
    rel = flux[good] / tflux[good] - 1 if good.any() else np.zeros(0)
    return {
        "n_detections": int(len(det_xy)),
        "n_matched": int(len(di)),
        "n_spurious": int((~matched_d).sum()),
        "spurious_by_class": by_class,
        "n_true_bright": int(bright.sum()),
        "completeness": float(matched_t[bright].mean()) if bright.any() else float("nan"),
        "completeness_all": float(matched_t.mean()) if len(matched_t) else float("nan"),
        "completeness_curve": curve,
        "flux_bias": float(np.median(rel)) if rel.size else float("nan"),
        "flux_scatter": float(1.4826 * np.median(np.abs(rel - np.median(rel)))) if rel.size else float("nan"),
        "match_radius_pix": float(radius_fwhm * fwhm),
        "n_bright_matched": n_point,
        "n_bright_false_point_flag": n_false,
        "matched_true": np.asarray(ti, int),
        "matched_flux": np.asarray(flux, np.float64),
        "matched_det": matched_d,
    }


def roc_curve(probs: np.ndarray, truth: np.ndarray, n_bins: int = 1000) -> tuple[np.ndarray, np.ndarray, float]:
    """ROC of probabilities against a boolean truth: (FPR, TPR, AUC).

    Histogram-based (``n_bins`` probability bins), so memory stays flat.
    """
    p = np.asarray(probs, np.float32).ravel()
    t = np.asarray(truth, bool).ravel()
    edges = np.linspace(0, 1, n_bins + 1)
    pos = np.histogram(p[t], edges)[0][::-1].cumsum()
    neg = np.histogram(p[~t], edges)[0][::-1].cumsum()
    npos, nneg = max(int(t.sum()), 1), max(int((~t).sum()), 1)
    tpr = np.r_[0.0, pos / npos]
    fpr = np.r_[0.0, neg / nneg]
    auc = float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(np.trapz(tpr, fpr))
    return fpr, tpr, auc


def mask_quality(probs: np.ndarray, thresholds, truth: np.ndarray, class_indices) -> dict:
    """Per-class pixel TPR, FPR, purity at the thresholds, and ROC AUC.

    Parameters
    ----------
    probs : float (n, H, W)
        Prior-modified probabilities of the classes in ``class_indices``.
    truth : int (H, W)
        Truth bit mask.
    """
    out = {}
    for k, ci in enumerate(class_indices):
        c = CLASSES[ci]
        if not c.bit:
            continue
        t = (truth & c.bit) != 0
        m = probs[k] > thresholds[k]
        tp = int(np.sum(m & t))
        fp = int(np.sum(m & ~t))
        fn = int(np.sum(~m & t))
        tn = int(t.size - tp - fp - fn)
        fpr_c, tpr_c, auc = roc_curve(probs[k], t) if t.any() else (None, None, float("nan"))
        out[c.abbr] = {
            "n_true": int(t.sum()),
            "n_flagged": int(m.sum()),
            "tpr": tp / (tp + fn) if tp + fn else float("nan"),
            "fpr": fp / (fp + tn) if fp + tn else float("nan"),
            "purity": tp / (tp + fp) if tp + fp else float("nan"),
            "auc": auc,
            "roc": {"fpr": fpr_c[:: 20].tolist(), "tpr": tpr_c[:: 20].tolist()} if fpr_c is not None else None,
        }
    return out


def evaluate_scores(contam: np.ndarray, real: np.ndarray, snr: np.ndarray | None = None, snr_cut: float = 10.0,
                    bins: int = 10) -> dict:
    """Reliability (predicted MD_CONTAM vs observed contaminant fraction per
    decile of the prediction) and the spurious/completeness trade-off over
    the threshold (with ``snr``, the matched true sources' expected S/N, also
    the real detections kept above ``snr_cut``)."""
    contam, real = np.asarray(contam), np.asarray(real, bool)
    bright = real & (np.nan_to_num(np.asarray(snr, float), nan=0.0) > snr_cut) if snr is not None else None
    edges = np.linspace(0, 1, bins + 1)
    k = np.clip(np.digitize(contam, edges) - 1, 0, bins - 1)
    rel = [{"lo": float(edges[i]), "hi": float(edges[i + 1]), "n": int((k == i).sum()),
            "predicted": float(contam[k == i].mean()) if (k == i).any() else None,
            "observed": float((~real[k == i]).mean()) if (k == i).any() else None} for i in range(bins)]
    curve = []
    for t in np.r_[np.linspace(0.05, 0.95, 19), 0.975, 0.99]:
        keep = contam < t
        row = {"threshold": float(t), "spurious_kept": int((keep & ~real).sum()), "real_kept": int((keep & real).sum())}
        if bright is not None:
            row["bright_real_kept"] = int((keep & bright).sum())
        curve.append(row)
    out = {"reliability": rel, "tradeoff": curve, "n": int(len(real)), "n_real": int(real.sum())}
    if bright is not None:
        out["n_bright_real"] = int(bright.sum())
    return out
