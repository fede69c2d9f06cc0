"""Completeness and contamination with and without masks, on simulated truth.

For each simulated frame: maxidetect's probabilities and masks (scored per
class at pixel level), then detection with each strategy and engine, each
catalogue cross-matched one-to-one with the truth. Strategies:

- ``none``: no maps (the reference run);
- ``maxidetect``: maxidetect's maps (default policy);
- ``oracle``: the truth masks through the same policy (an upper bound);
- ``astroscrappy``: L.A.Cosmic cosmic-ray mask as weight 0 (if installed);
- ``maximask``: MaxiMask's own CLI masks through the same policy (if
  installed and ``peers`` is on: it is slow).

Outputs: ``report.md``, ``results.json`` and PNG plots in the output directory.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from maxidetect.classes import CLASSES
from maxidetect.extract.catalog import read_catalog
from maxidetect.extract.config import SexConfig
from maxidetect.extract.inprocess import detect_file
from maxidetect.extract.sextractor import run_sextractor
from maxidetect.files import write_hdulist_atomic
from maxidetect.maps.writer import MapPolicy, MapSet, maps_from_masks, noise_weight
from maxidetect.validation.scoring import CONTAMINANT_ORDER, mask_quality, score_catalog
from maxidetect.validation.simulate import SimConfig, simulate_frame

__all__ = ["BenchOptions", "run_bench", "write_report", "real_report"]

ENGINES = ("SEP", "SExtractor")


@dataclass
class BenchOptions:
    n_frames: int = 3
    size: int = 2048
    seed: int = 100
    engines: tuple = ENGINES
    peers: bool = False
    policy: MapPolicy = field(default_factory=MapPolicy)
    sim_config: SimConfig = field(default_factory=SimConfig)
    snr_cut: float = 10.0
    radius_fwhm: float = 1.0

    @classmethod
    def quick(cls) -> BenchOptions:
        return cls(n_frames=1, size=1024, seed=7)


def _have_sextractor() -> bool:
    return shutil.which("source-extractor") is not None or shutil.which("sex") is not None


def _write_maps(path: Path, ms: MapSet, header: fits.Header) -> tuple[Path, Path]:
    w = path.with_suffix(".weight.fits")
    f = path.with_suffix(".flag.fits")
    write_hdulist_atomic(fits.HDUList([fits.PrimaryHDU(ms.weight, header)]), w, overwrite=True)
    write_hdulist_atomic(fits.HDUList([fits.PrimaryHDU(ms.flag, header)]), f, overwrite=True)
    return w, f


def _truth_masks(truth: np.ndarray, class_indices) -> np.ndarray:
    return np.stack([(truth & CLASSES[ci].bit) != 0 if CLASSES[ci].bit else np.zeros(truth.shape, bool)
                     for ci in class_indices])


def _astroscrappy_mask(image: np.ndarray, header) -> np.ndarray | None:
    try:
        import astroscrappy
    except ImportError:
        return None
    mask, _ = astroscrappy.detect_cosmics(np.asarray(image, np.float32), gain=float(header.get("GAIN", 1.0)),
                                          readnoise=float(header.get("RDNOISE", 5.0)),
                                          satlevel=float(header.get("SATURATE", 65535.0)))
    return mask


def _maximask_masks(path: Path, maker) -> np.ndarray | None:
    exe = shutil.which("maximask") or (Path(sys.executable).parent / "maximask")
    if not Path(exe).exists():
        return None
    proc = subprocess.run([str(exe), str(path)], capture_output=True, text=True, cwd=path.parent)
    out = path.with_name(path.stem + ".mask.fits")
    if proc.returncode != 0 or not out.exists():
        return None
    cube = fits.getdata(out).astype(bool)
    return cube[[int(i) for i in maker.selected]] if cube.shape[0] == 14 else None


def run_bench(opts: BenchOptions, maker=None, work_dir=None, progress: bool = True) -> dict:
    """Run the benchmark; returns every figure (see :func:`write_report`)."""
    from tqdm import tqdm

    if maker is None:
        from maxidetect.classes import ClassConfig
        from maxidetect.masks.maker import MaskMaker

        maker = MaskMaker(config=ClassConfig.catalogue())
    engines = [e for e in opts.engines if e == "SEP" or _have_sextractor()]
    work = Path(work_dir or tempfile.mkdtemp(prefix="maxidetect-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    cfg = SexConfig()
    sel = [int(i) for i in maker.selected]
    thresholds = maker.config.thresholds[sel]
    frames = []
    bar = tqdm(total=opts.n_frames, unit="frame", disable=not progress, file=sys.stderr)
    for k in range(opts.n_frames):
        seed = opts.seed + k
        t0 = time.perf_counter()
        frame = simulate_frame(seed, opts.sim_config, size=opts.size)
        path = work / f"sim{seed}.fits"
        write_hdulist_atomic(fits.HDUList([fits.PrimaryHDU(frame.image, frame.header)]), path, overwrite=True)
        fwhm = float(frame.header["SIMFWHM"])
        t1 = time.perf_counter()
        probs = maker.probabilities(frame.image)
        t_mask = time.perf_counter() - t1
        masks = probs > thresholds[:, None, None]
        quality = mask_quality(probs, thresholds, frame.truth, sel)
        del probs
        strategies = {"none": None}
        strategies["maxidetect"] = _write_maps(
            work / f"sim{seed}_md.fits", maps_from_masks(masks, maker, opts.policy, image=frame.image), frame.header)
        strategies["oracle"] = _write_maps(
            work / f"sim{seed}_oracle.fits",
            maps_from_masks(_truth_masks(frame.truth, sel), maker, opts.policy, image=frame.image), frame.header)
        crm = _astroscrappy_mask(frame.image, frame.header)
        if crm is not None:
            w = (~crm).astype(np.float32)
            if opts.policy.noise:  # same weighting as maxidetect's maps: only the mask differs
                w *= noise_weight(frame.image, crm)
            strategies["astroscrappy"] = _write_maps(
                work / f"sim{seed}_lacos.fits", MapSet(weight=w, flag=np.where(crm, 1, 0).astype(np.int32)),
                frame.header)
        if opts.peers:
            mm = _maximask_masks(path, maker)
            if mm is not None:
                strategies["maximask"] = _write_maps(
                    work / f"sim{seed}_maximask.fits", maps_from_masks(mm, maker, opts.policy, image=frame.image),
                    frame.header)
        results = []
        for strat, maps in strategies.items():
            for engine in engines:
                if strat in ("astroscrappy", "maximask") and engine != "SEP":
                    continue
                out = work / f"{strat}_{engine}"
                if engine == "SEP":
                    cat = read_catalog(detect_file(path, cfg, maps=maps, out_dir=out, overwrite=True))
                else:
                    cat = read_catalog(run_sextractor(path, cfg, maps=maps, out_dir=out, overwrite=True).catalog)
                s = score_catalog(cat, frame.catalog, frame.truth, fwhm, opts.radius_fwhm, opts.snr_cut,
                                  mag_bins=np.arange(12.0, 26.5, 0.5))
                results.append({"strategy": strat, "engine": engine, **s})
        frames.append({"seed": seed, "size": opts.size, "fwhm": fwhm, "sky": float(frame.header["SIMSKY"]),
                       "n_true": len(frame.catalog), "mask_seconds": t_mask,
                       "frame_seconds": time.perf_counter() - t0, "mask_quality": quality, "results": results})
        bar.update(1)
    bar.close()
    return {"options": {"n_frames": opts.n_frames, "size": opts.size, "seed": opts.seed, "engines": engines,
                        "snr_cut": opts.snr_cut, "radius_fwhm": opts.radius_fwhm,
                        "policy": opts.policy.actions, "grow": opts.policy.grow},
            "frames": frames, "summary": _summarise(frames)}


def _summarise(frames) -> list[dict]:
    keys = sorted({(r["strategy"], r["engine"]) for f in frames for r in f["results"]},
                  key=lambda k: (["none", "maxidetect", "oracle", "astroscrappy", "maximask"].index(k[0]), k[1]))
    rows = []
    for strat, engine in keys:
        rs = [r for f in frames for r in f["results"] if r["strategy"] == strat and r["engine"] == engine]
        nb = sum(r["n_true_bright"] for r in rs)
        rows.append({
            "strategy": strat, "engine": engine,
            "n_detections": sum(r["n_detections"] for r in rs),
            "n_spurious": sum(r["n_spurious"] for r in rs),
            "completeness": sum(r["completeness"] * r["n_true_bright"] for r in rs) / nb if nb else float("nan"),
            "spurious_by_class": {c: sum(r["spurious_by_class"][c] for r in rs) for c in (*CONTAMINANT_ORDER, "none")},
            "flux_bias": float(np.nanmedian([r["flux_bias"] for r in rs])),
        })
    base = {r["engine"]: r for r in rows if r["strategy"] == "none"}
    for r in rows:
        b = base.get(r["engine"])
        if b:
            r["spurious_reduction"] = 1 - r["n_spurious"] / b["n_spurious"] if b["n_spurious"] else float("nan")
            r["completeness_change_pp"] = 100 * (r["completeness"] - b["completeness"])
    return rows


def _mean_quality(frames) -> dict:
    out = {}
    for c in CONTAMINANT_ORDER:
        qs = [f["mask_quality"].get(c) for f in frames if f["mask_quality"].get(c)]
        qs = [q for q in qs if q["n_true"] > 0]
        if not qs:
            continue
        tp = sum(q["tpr"] * q["n_true"] for q in qs)
        nt = sum(q["n_true"] for q in qs)
        nf = sum(q["n_flagged"] for q in qs)
        out[c] = {"n_true": nt, "n_flagged": nf, "tpr": tp / nt,
                  "fpr": float(np.mean([q["fpr"] for q in qs])),
                  "purity": tp / nf if nf else float("nan"),
                  "auc": float(np.nanmean([q["auc"] for q in qs]))}
    return out


def write_report(results: dict, out_dir, command: str = "") -> dict:
    """Write report.md, results.json and PNG plots; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "report": out / "report.md"}
    paths["json"].write_text(json.dumps(results, indent=1, default=float))
    quality = _mean_quality(results["frames"])
    o = results["options"]
    lines = [f"# maxidetect benchmark: {o['n_frames']} simulated frame(s) of {o['size']}x{o['size']}", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        f"Seeds {o['seed']}..{o['seed'] + o['n_frames'] - 1}; completeness over true sources with expected "
        f"S/N > {o['snr_cut']:g}; one-to-one matching within {o['radius_fwhm']:g} FWHM; a spurious detection "
        "matches no true source and is attributed to the contaminant under it.",
        "",
        "| strategy | engine | detections | spurious | spurious vs no mask | completeness | change [pp] | flux bias |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["summary"]:
        red = -r.get("spurious_reduction", float("nan"))
        ch = r.get("completeness_change_pp", float("nan"))
        lines.append(f"| {r['strategy']} | {r['engine']} | {r['n_detections']} | {r['n_spurious']} | "
                     f"{red:+.1%} | {r['completeness']:.4f} | {ch:+.2f} | {r['flux_bias']:+.4f} |")
    lines += ["", "## Spurious detections by contaminant", "",
              "| strategy | engine | " + " | ".join((*CONTAMINANT_ORDER, "none")) + " |",
              "|---|---|" + "---|" * (len(CONTAMINANT_ORDER) + 1)]
    for r in results["summary"]:
        lines.append(f"| {r['strategy']} | {r['engine']} | "
                     + " | ".join(str(r["spurious_by_class"][c]) for c in (*CONTAMINANT_ORDER, "none")) + " |")
    lines += ["", "## Mask quality per class (pixel level, maxidetect defaults)", "",
              "| class | true px | flagged px | TPR | FPR | purity | AUC |", "|---|---|---|---|---|---|---|"]
    for c, q in quality.items():
        lines.append(f"| {c} | {q['n_true']} | {q['n_flagged']} | {q['tpr']:.3f} | {q['fpr']:.2e} | "
                     f"{q['purity']:.3f} | {q['auc']:.3f} |")
    # Targets of the default pipeline.
    lines += ["", "## Targets (default pipeline vs no mask: >= 90% fewer spurious, completeness >= -0.5 pp)", ""]
    for r in results["summary"]:
        if r["strategy"] != "maxidetect":
            continue
        ok_s = r["spurious_reduction"] >= 0.9
        ok_c = r["completeness_change_pp"] >= -0.5
        left = {c: n for c, n in r["spurious_by_class"].items() if n}
        top = ", ".join(f"{c} {n}" for c, n in sorted(left.items(), key=lambda kv: -kv[1])[:4])
        short = "met" if ok_s else f"short by {0.9 - r['spurious_reduction']:.1%}"
        lines.append(f"- {r['engine']}: spurious {-r['spurious_reduction']:+.1%} ({short}), completeness "
                     f"{r['completeness_change_pp']:+.2f} pp ({'met' if ok_c else 'missed'}); left: {top}")
    try:
        paths.update(_plots(results, quality, out))
        lines += ["", "![completeness](completeness.png)", "", "![contamination](contamination.png)", "",
                  "![ROC](roc.png)"]
    except ImportError:
        lines += ["", "(matplotlib not installed: no plots)"]
    paths["report"].write_text("\n".join(lines) + "\n")
    return paths


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _plots(results, quality, out: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results["summary"]:
        curves = [x["completeness_curve"] for f in results["frames"] for x in f["results"]
                  if x["strategy"] == r["strategy"] and x["engine"] == r["engine"]]
        mags = [p["mag"] for p in curves[0]]
        n = np.array([[p["n"] for p in c] for c in curves]).sum(0)
        comp = np.array([[(p["completeness"] or 0) * p["n"] for p in c] for c in curves]).sum(0)
        ok = n > 0
        ax.plot(np.array(mags)[ok], comp[ok] / n[ok], "-" if r["engine"] == "SEP" else "--",
                label=f"{r['strategy']} ({r['engine']})")
    ax.set_xlabel("true magnitude")
    ax.set_ylabel("completeness")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    paths["completeness"] = _save(fig, out / "completeness.png")

    fig, ax = plt.subplots(figsize=(9, 4.5))
    cls = (*CONTAMINANT_ORDER, "none")
    rows = results["summary"]
    width = 0.8 / max(len(rows), 1)
    for k, r in enumerate(rows):
        ax.bar(np.arange(len(cls)) + k * width, [r["spurious_by_class"][c] for c in cls], width,
               label=f"{r['strategy']} ({r['engine']})")
    ax.set_xticks(np.arange(len(cls)) + 0.4 - width / 2)
    ax.set_xticklabels(cls)
    ax.set_ylabel("spurious detections")
    ax.set_yscale("symlog")
    ax.legend(fontsize=7, ncol=2)
    paths["contamination"] = _save(fig, out / "contamination.png")

    fig, ax = plt.subplots(figsize=(6, 5))
    f0 = results["frames"][0]["mask_quality"]
    for c, q in f0.items():
        if q["roc"] is None:
            continue
        ax.plot(np.maximum(q["roc"]["fpr"], 1e-7), q["roc"]["tpr"], label=f"{c} (AUC {q['auc']:.3f})")
    ax.set_xscale("log")
    ax.set_xlim(1e-7, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    paths["roc"] = _save(fig, out / "roc.png")
    return paths


# -- real frames without truth ---------------------------------------------------
def real_report(paths, out_dir, maker=None, policy: MapPolicy | None = None, config: SexConfig | None = None) -> dict:
    """What the masks do on frames without truth.

    For each image HDU: detections without maps and with maxidetect's maps
    (SEP engine); per class, how many no-mask detections the maps removed
    (centre on a zero-weight pixel of that class, no counterpart within 1.5 px
    in the masked run) and how many masked-run detections carry its bit in
    IMAFLAGS_ISO; a PNG preview with the masks overlaid.
    """
    from maxidetect.extract.sep_engine import detect
    from maxidetect.files import is_image_hdu, parse_input
    from maxidetect.maps.writer import compute_maps

    if maker is None:
        from maxidetect.classes import ClassConfig
        from maxidetect.masks.maker import MaskMaker

        maker = MaskMaker(config=ClassConfig.catalogue())
    policy = policy or MapPolicy()
    cfg = config or SexConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in paths:
        spec = parse_input(str(p))
        with fits.open(spec.path) as hdul:
            pairs = [(hdul.index_of(spec.hdu), hdul[spec.hdu])] if spec.hdu is not None else list(enumerate(hdul))
            for index, hdu in pairs:
                if not is_image_hdu(hdu) or hdu.data.ndim != 2:
                    continue
                data = np.asarray(hdu.data, dtype=np.float32)
                ms = compute_maps(data, maker, policy)
                t0 = detect(data, cfg, header=hdu.header).catalog
                t1 = detect(data, cfg, weight=ms.weight, flag=ms.flag, header=hdu.header).catalog
                ix = np.clip(np.round(t0["X_IMAGE"] - 1).astype(int), 0, data.shape[1] - 1)
                iy = np.clip(np.round(t0["Y_IMAGE"] - 1).astype(int), 0, data.shape[0] - 1)
                if len(t1):
                    from scipy.spatial import cKDTree

                    d, _ = cKDTree(np.c_[t1["X_IMAGE"], t1["Y_IMAGE"]]).query(np.c_[t0["X_IMAGE"], t0["Y_IMAGE"]])
                else:
                    d = np.full(len(t0), np.inf)
                gone = d > 1.5
                from scipy import ndimage

                fl = ndimage.grey_dilation(ms.flag, size=(3, 3))[iy, ix]
                zw = ndimage.minimum_filter(ms.weight, size=3)[iy, ix] == 0
                removed = {c.abbr: int(np.sum(gone & zw & ((fl & c.bit) != 0))) if policy.actions[c.abbr] == "zero"
                           else 0 for c in CLASSES if c.bit}
                flagged = {c.abbr: int(np.sum((np.asarray(t1["IMAFLAGS_ISO"]) & c.bit) != 0)) for c in CLASSES if c.bit}
                name = f"{spec.path.stem}_hdu{index}"
                png = _preview(data, ms, out / f"{name}.png", title=f"{spec.path.name}[{index}]")
                rows.append({"file": str(spec.path.name), "hdu": index, "shape": list(data.shape),
                             "n_nomask": len(t0), "n_masked": len(t1), "removed": removed, "flagged": flagged,
                             "zero_weight_fraction": float(np.mean(ms.weight == 0)),
                             "preview": png.name if png else None})
    (out / "real.json").write_text(json.dumps(rows, indent=1))
    cls = [c.abbr for c in CLASSES if c.bit]
    lines = ["# Real frames (no truth): what the maps did (SEP engine, maxidetect defaults)", "",
             "removed = no-mask detections centred on zero-weight pixels of the class and gone from the masked "
             "run; flagged = masked-run detections with the class bit in IMAFLAGS_ISO.", "",
             "| frame | HDU | no mask | masked | zero-weight px | removed by class | flagged by class |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        rem = ", ".join(f"{c} {r['removed'][c]}" for c in cls if r["removed"][c]) or "-"
        flg = ", ".join(f"{c} {r['flagged'][c]}" for c in cls if r["flagged"][c]) or "-"
        lines.append(f"| {r['file']} | {r['hdu']} | {r['n_nomask']} | {r['n_masked']} | "
                     f"{r['zero_weight_fraction']:.2%} | {rem} | {flg} |")
    lines.append("")
    lines += [f"![{r['file']}[{r['hdu']}]]({r['preview']})" for r in rows if r["preview"]]
    (out / "real.md").write_text("\n".join(lines) + "\n")
    return {"rows": rows, "report": out / "real.md"}


def _preview(data, ms: MapSet, path: Path, title: str = "") -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from astropy.visualization import ZScaleInterval
        from matplotlib.colors import ListedColormap
    except ImportError:
        return None
    finite = np.where(np.isfinite(data), data, np.nanmedian(data))
    lo, hi = ZScaleInterval().get_limits(finite)
    fig, ax = plt.subplots(1, 2, figsize=(12, 6), sharex=True, sharey=True)
    for a in ax:
        a.imshow(finite, origin="lower", cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    cmap = plt.get_cmap("tab20")
    handles = []
    for k, c in enumerate(CLASSES):
        if not c.bit:
            continue
        m = (ms.flag & c.bit) != 0
        if not m.any():
            continue
        color = cmap(k % 20)
        ax[1].imshow(np.ma.masked_where(~m, m), origin="lower", cmap=ListedColormap([color]), alpha=0.55,
                     interpolation="nearest")
        handles.append(plt.Line2D([], [], color=color, lw=6, label=c.abbr))
    ax[1].contour(ms.weight == 0, levels=[0.5], colors="red", linewidths=0.4)
    ax[0].set_title(title)
    ax[1].set_title("masks (red: weight 0)")
    if handles:
        ax[1].legend(handles=handles, fontsize=7, loc="upper right")
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path
