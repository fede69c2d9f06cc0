"""Compare networks: per-class ROC/AUC on held-out simulated frames, the
labelled real cosmic rays, and stars mistaken for defects on a crowded frame.

Scores are accumulated as histograms of the logit (``N_BINS`` bins over
``LOGIT_RANGE``), so memory is flat in the number of frames and the ROC is
resolved down to false-positive rates of ~1e-7. ROC and AUC use the raw
network probabilities (prior modification is monotonic per class, so it
changes thresholds, not the ROC). Operating points are reported at the map
thresholds of the class registry (raw probability) and at the threshold
that reaches a chosen purity on the held-out set (a threshold recomputed
for new weights).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from maxidetect.classes import CLASSES

__all__ = ["ScoreHistogram", "ModelReport", "evaluate_models", "write_model_report", "HELD_OUT_SEED0",
           "read_cr_labels"]

N_BINS = 4000
LOGIT_RANGE = (-20.0, 20.0)
# Training draws frames from seeds seed * 100003 + k (maxidetect.training.train); held-out
# frames start far above any of those for training seeds below 89.
HELD_OUT_SEED0 = 9_000_000


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


@dataclass
class ScoreHistogram:
    """Positive and negative counts of one class's scores in logit bins."""

    pos: np.ndarray = field(default_factory=lambda: np.zeros(N_BINS, np.int64))
    neg: np.ndarray = field(default_factory=lambda: np.zeros(N_BINS, np.int64))

    @staticmethod
    def edges() -> np.ndarray:
        return np.linspace(*LOGIT_RANGE, N_BINS + 1)

    def add(self, probs: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> None:
        z = _logit(probs)
        t = np.asarray(truth, bool)
        if valid is not None:
            z, t = z[valid], t[valid]
        idx = np.clip(np.searchsorted(self.edges(), z.ravel(), side="right") - 1, 0, N_BINS - 1)
        t = t.ravel()
        self.pos += np.bincount(idx[t], minlength=N_BINS)
        self.neg += np.bincount(idx[~t], minlength=N_BINS)

    def roc(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(FPR, TPR, threshold probability) from the highest threshold down."""
        tp = np.r_[0, np.cumsum(self.pos[::-1])]
        fp = np.r_[0, np.cumsum(self.neg[::-1])]
        tpr = tp / max(tp[-1], 1)
        fpr = fp / max(fp[-1], 1)
        thr = 1.0 / (1.0 + np.exp(-self.edges()[::-1]))
        return fpr, tpr, thr

    def auc(self) -> float:
        if not self.pos.any() or not self.neg.any():
            return float("nan")
        fpr, tpr, _ = self.roc()
        return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))

    def at_threshold(self, p: float) -> dict:
        """TPR, FPR and purity of ``score > p``."""
        k = int(np.clip(np.searchsorted(self.edges(), float(_logit(p)), side="right") - 1, 0, N_BINS))
        tp, fp = int(self.pos[k:].sum()), int(self.neg[k:].sum())
        npos, nneg = int(self.pos.sum()), int(self.neg.sum())
        return {"threshold": float(p), "tpr": tp / npos if npos else float("nan"),
                "fpr": fp / nneg if nneg else float("nan"), "purity": tp / (tp + fp) if tp + fp else float("nan")}

    def tpr_at_fpr(self, max_fpr: float) -> float:
        fpr, tpr, _ = self.roc()
        ok = fpr <= max_fpr
        return float(tpr[ok].max()) if ok.any() else 0.0

    def threshold_for_purity(self, purity: float) -> float | None:
        """Lowest probability threshold whose purity is still >= ``purity``."""
        tp = np.cumsum(self.pos[::-1])
        fp = np.cumsum(self.neg[::-1])
        with np.errstate(invalid="ignore", divide="ignore"):
            pur = tp / (tp + fp)
        ok = np.nonzero((tp > 0) & (pur >= purity))[0]
        if not ok.size:
            return None
        i = ok.max()  # bins counted from the top: the largest index is the lowest threshold
        lower_edge = self.edges()[::-1][i + 1]
        return float(1.0 / (1.0 + np.exp(-lower_edge)))


@dataclass
class ModelReport:
    """Everything measured for one model."""

    name: str
    hist: dict[str, ScoreHistogram]
    cr_sizes: dict[str, list[int]]  # size bin -> [found, total] at the map threshold
    gmos: dict
    crowded: dict
    seconds: float

    def summary(self, purity: float) -> dict:
        out = {}
        for c in CLASSES:
            h = self.hist.get(c.abbr)
            if h is None or not h.pos.any():
                continue
            out[c.abbr] = {"auc": h.auc(), "at_map_threshold": h.at_threshold(c.map_threshold),
                           "tpr_at_fpr_1e-4": h.tpr_at_fpr(1e-4),
                           "threshold_for_purity": h.threshold_for_purity(purity)}
        return out


def _cr_size_recall(probs_cr: np.ndarray, cr_truth: np.ndarray, threshold: float, acc: dict) -> None:
    lab, n = ndimage.label(cr_truth, structure=np.ones((3, 3)))
    if not n:
        return
    sizes = np.bincount(lab.ravel())[1:]
    hit = ndimage.maximum(probs_cr > threshold, lab, index=np.arange(1, n + 1)).astype(bool)
    for name, sel in (("1 px", sizes == 1), ("2-3 px", (sizes >= 2) & (sizes <= 3)), (">=4 px", sizes >= 4)):
        acc.setdefault(name, [0, 0])
        acc[name][0] += int(hit[sel].sum())
        acc[name][1] += int(sel.sum())


def read_cr_labels(path: Path) -> dict:
    """A label file: ``{"name", "image" (relative to the file), "hdu",
    "boxes_yx": [[y0, y1, x0, x1], ...]}`` of labelled real cosmic rays."""
    spec = json.loads(Path(path).read_text())
    image = Path(spec["image"])
    spec["image"] = image if image.is_absolute() else (Path(path).parent / image).resolve()
    spec["slices"] = [(slice(a, b), slice(c, d)) for a, b, c, d in spec["boxes_yx"]]
    return spec


def _labelled_cr_check(predictor, label_file: Path) -> dict:
    """Recall of labelled real cosmic rays: pixels of each labelled box more
    than 5 sigma above the frame's background count as truth."""
    from astropy.io import fits

    from maxidetect.network.normalise import normalise

    labels = read_cr_labels(label_file)
    with fits.open(labels["image"]) as h:
        sci = np.asarray(h[labels.get("hdu", 0)].data, np.float64)
    probs = predictor.predict(normalise(sci, **predictor.normalisation))
    cr = CLASSES[0]
    med = np.median(sci)
    sig = 1.4826 * np.median(np.abs(sci - med))
    out = {"instances": []}
    found_px = total_px = 0
    for sl in labels["slices"]:
        t = sci[sl] > med + 5 * sig
        m = probs[0][sl] > cr.map_threshold
        found_px += int((m & t).sum())
        total_px += int(t.sum())
        out["instances"].append({"pixels": int(t.sum()), "flagged": int((m & t).sum()),
                                 "max_p": float(probs[0][sl][t].max()) if t.any() else float("nan")})
    out["pixel_recall"] = found_px / total_px if total_px else float("nan")
    out["instances_found"] = sum(i["flagged"] > 0 for i in out["instances"])
    out["frame_fraction_flagged_cr"] = float(np.mean(probs[0] > cr.map_threshold))
    out["name"] = labels.get("name", Path(label_file).stem)
    return out


def _crowded_check(predictor, path: Path) -> dict:
    """Stars whose peak pixel is called a cosmic ray or hot pixel (map thresholds)."""
    from astropy.io import fits

    from maxidetect.extract.sep_engine import detect
    from maxidetect.files import is_image_hdu
    from maxidetect.network.normalise import normalise

    with fits.open(path) as h:
        data = np.asarray(next(x for x in h if is_image_hdu(x)).data, np.float64)
    cat = detect(data).catalog
    stars = cat[(cat["ISOAREA_IMAGE"] >= 9) & (cat["FLAGS"] < 4)]
    probs = predictor.predict(normalise(data, **predictor.normalisation))
    x = np.clip(np.round(stars["X_IMAGE"] - 1).astype(int), 0, data.shape[1] - 1)
    y = np.clip(np.round(stars["Y_IMAGE"] - 1).astype(int), 0, data.shape[0] - 1)
    out = {"stars": len(stars)}
    for abbr, k in (("CR", 0), ("HP", 3)):
        out[f"called_{abbr}"] = int(np.sum(probs[k][y, x] > CLASSES[k].map_threshold))
    return out


def evaluate_models(models, n_frames: int = 4, size: int = 1024, seed0: int = HELD_OUT_SEED0,
                    cr_labels: Path | None = None, crowded: Path | None = None,
                    progress: bool = True) -> list[ModelReport]:
    """Score each of ``models`` (names from the manifest, or (name, keras model)
    pairs) on the same held-out simulated frames and real checks."""

    from tqdm import tqdm

    from maxidetect.network.inference import Predictor
    from maxidetect.network.normalise import normalise
    from maxidetect.validation.simulate import simulate_frame

    preds = []
    for m in models:
        if isinstance(m, tuple):
            preds.append((m[0], Predictor(m[1])))
        else:
            preds.append((m, Predictor(m)))
    hists = {name: {c.abbr: ScoreHistogram() for c in CLASSES if c.bit} for name, _ in preds}
    sizes = {name: {} for name, _ in preds}
    seconds = dict.fromkeys(hists, 0.0)
    for i in tqdm(range(n_frames), unit="frame", disable=not progress, file=sys.stderr):
        frame = simulate_frame(seed0 + i, size=size)
        inputs = {}  # models sharing a normalisation share its result
        for name, pred in preds:
            key = tuple(sorted(pred.normalisation.items()))
            if key not in inputs:
                inputs[key] = normalise(frame.image, **pred.normalisation)
            t0 = time.perf_counter()
            p = pred.predict(inputs[key])
            seconds[name] += time.perf_counter() - t0
            for k, c in enumerate(CLASSES):
                if c.bit:
                    hists[name][c.abbr].add(p[k], (frame.truth & c.bit) != 0)
            _cr_size_recall(p[0], (frame.truth & CLASSES[0].bit) != 0, CLASSES[0].map_threshold, sizes[name])
    reports = []
    for name, pred in preds:
        reports.append(ModelReport(
            name=name, hist=hists[name], cr_sizes=sizes[name],
            gmos=_labelled_cr_check(pred, cr_labels) if cr_labels else {},
            crowded=_crowded_check(pred, crowded) if crowded else {},
            seconds=seconds[name] / max(n_frames, 1)))
    return reports


def write_model_report(reports: list[ModelReport], out_dir, purity: float = 0.9, meta: dict | None = None) -> Path:
    """``report.md``, ``report.json`` and ``roc.png`` (if matplotlib is there)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summaries = {r.name: r.summary(purity) for r in reports}
    record = {"meta": meta or {}, "purity_target": purity,
              "models": {r.name: {"classes": summaries[r.name], "cr_recall_by_size": r.cr_sizes,
                                  "labelled_crs": r.gmos, "crowded_frame": r.crowded,
                                  "seconds_per_frame": r.seconds} for r in reports}}
    (out / "report.json").write_text(json.dumps(record, indent=1))
    names = [r.name for r in reports]
    m = meta or {}
    lines = [f"# Model evaluation: {' vs '.join(names)}", ""]
    if m:
        lines += [f"Held-out simulated frames: {m.get('n_frames')} x {m.get('size')}^2, seeds from "
                  f"{m.get('seed0')}; command: `{m.get('command', '')}`", ""]
    head = "| class | " + " | ".join(f"AUC {n}" for n in names) + " | " + \
        " | ".join(f"TPR/FPR/purity @ map thr, {n}" for n in names) + " | " + \
        " | ".join(f"TPR @ FPR 1e-4, {n}" for n in names) + " | " + \
        " | ".join(f"thr for purity {purity:g}, {n}" for n in names) + " |"
    lines += [head, "|" + "---|" * (1 + 4 * len(names))]
    for c in CLASSES:
        if not c.bit or not any(c.abbr in summaries[n] for n in names):
            continue
        s = [summaries[n].get(c.abbr) for n in names]
        cells = [f"{x['auc']:.4f}" if x else "-" for x in s]
        cells += [f"{x['at_map_threshold']['tpr']:.3f}/{x['at_map_threshold']['fpr']:.1e}/"
                  f"{x['at_map_threshold']['purity']:.3f}" if x else "-" for x in s]
        cells += [f"{x['tpr_at_fpr_1e-4']:.3f}" if x else "-" for x in s]
        cells += [("-" if x is None or x["threshold_for_purity"] is None else f"{x['threshold_for_purity']:.3f}")
                  for x in s]
        lines.append(f"| {c.abbr} (thr {c.map_threshold:g}) | " + " | ".join(cells) + " |")
    lines += ["", "Cosmic-ray recall by size at the map threshold (found/total):", ""]
    bins = ("1 px", "2-3 px", ">=4 px")
    lines += ["| model | " + " | ".join(bins) + " |", "|---|" + "---|" * len(bins)]
    for r in reports:
        lines.append(f"| {r.name} | " + " | ".join(
            f"{r.cr_sizes.get(b, [0, 0])[0]}/{r.cr_sizes.get(b, [0, 0])[1]}" for b in bins) + " |")
    if any(r.gmos or r.crowded for r in reports):
        label = next((r.gmos["name"] for r in reports if r.gmos), "labelled")
        lines += ["", "Real frames:", "", f"| model | {label} labelled CR pixel recall | {label} CRs found | "
                  f"{label} frame flagged CR | crowded-frame stars | called CR | called HP | s/frame (sim) |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in reports:
            g, k = r.gmos, r.crowded
            lines.append(f"| {r.name} | {g.get('pixel_recall', float('nan')):.3f} | "
                         f"{g.get('instances_found', '-')}/{len(g.get('instances', [])) or '-'} | "
                         f"{g.get('frame_fraction_flagged_cr', float('nan')):.4f} | {k.get('stars', '-')} | "
                         f"{k.get('called_CR', '-')} | {k.get('called_HP', '-')} | {r.seconds:.1f} |")
    try:
        _roc_plot(reports, out / "roc.png")
        lines += ["", "![ROC](roc.png)"]
    except ImportError:
        lines += ["", "(matplotlib not installed: no plot)"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"


def _roc_plot(reports: list[ModelReport], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    abbrs = [c.abbr for c in CLASSES if c.bit and any(r.hist[c.abbr].pos.any() for r in reports)]
    ncol = 4
    nrow = -(-len(abbrs) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.8 * nrow), squeeze=False)
    for ax, abbr in zip(axes.ravel(), abbrs, strict=False):
        for r in reports:
            fpr, tpr, _ = r.hist[abbr].roc()
            ax.plot(np.maximum(fpr, 1e-7), tpr, label=f"{r.name} ({r.hist[abbr].auc():.3f})")
        ax.set_xscale("log")
        ax.set_xlim(1e-7, 1)
        ax.set_title(abbr)
        ax.set_xlabel("FPR")
        ax.set_ylabel("TPR")
        ax.legend(fontsize=7, loc="lower right")
    for ax in axes.ravel()[len(abbrs):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
