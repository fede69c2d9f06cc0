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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy import ndimage

from maxidetect.classes import CLASSES
from maxidetect.errors import WeightsError
from maxidetect.extract.catalog import read_catalog
from maxidetect.extract.config import SexConfig
from maxidetect.extract.inprocess import detect_file
from maxidetect.extract.sextractor import run_sextractor
from maxidetect.files import parse_input, write_hdulist_atomic
from maxidetect.maps.writer import MapPolicy, MapSet, maps_from_masks, noise_weight
from maxidetect.score.catalogs import Scorer, score_sextractor_catalog
from maxidetect.score.model import load_score_model
from maxidetect.validation.scoring import (
    CONTAMINANT_ORDER,
    MATCH_FLUX_RATIO,
    MATCH_FLUX_SIGMA,
    MATCH_FLUX_SNR,
    MATCH_MIN_SNR,
    evaluate_scores,
    mask_quality,
    score_catalog,
)
from maxidetect.validation.simulate import SimConfig, simulate_frame

__all__ = ["BenchOptions", "run_bench", "run_engine", "write_report", "real_report"]

ENGINES = ("SEP", "SExtractor")


@dataclass
class BenchOptions:
    variants: tuple = ("default",)
    n_frames: int = 3
    size: int = 2048
    seed: int = 100
    engines: tuple = ENGINES
    peers: bool = False
    policy: MapPolicy = field(default_factory=MapPolicy)
    sim_config: SimConfig = field(default_factory=SimConfig)
    snr_cut: float = 10.0
    radius_fwhm: float = 1.0
    #: The network's weights (a manifest name; None: the default model). The
    #: maps of a model not offered for maps are measured here all the same:
    #: this is how it is checked against their invariants.
    model: str | None = None

    @classmethod
    def quick(cls) -> BenchOptions:
        return cls(n_frames=1, size=1024, seed=7)


def _have_sextractor() -> bool:
    return shutil.which("source-extractor") is not None or shutil.which("sex") is not None


def _write_maps(path: Path, ms: MapSet, header: fits.Header) -> tuple[Path, Path]:
    """The maps as ``maxidetect maps`` writes them: with the fusion's cards
    (the PSF FWHM and the fitted trails, which the score reads)."""
    w = path.with_suffix(".weight.fits")
    f = path.with_suffix(".flag.fits")
    header = ms.header(header)
    write_hdulist_atomic(fits.HDUList([fits.PrimaryHDU(ms.weight, header)]), w, overwrite=True)
    write_hdulist_atomic(fits.HDUList([fits.PrimaryHDU(ms.flag, header)]), f, overwrite=True)
    return w, f


def run_engine(engine: str, path: Path, config: SexConfig, maps, out_dir: Path, scorer=None):
    """The catalogue (Table) of one engine ("SEP" or "SExtractor") on a
    file, with ``maps`` (weight, flag paths) or none, scored by ``scorer``
    (:class:`~maxidetect.score.catalogs.Scorer`) when given."""
    if engine == "SEP":
        return read_catalog(detect_file(path, config, maps=maps, out_dir=out_dir, overwrite=True, on_table=scorer))

    def post(c, ctype, seg):
        score_sextractor_catalog(c, ctype, seg, parse_input(str(path)), maps, scorer)

    return read_catalog(run_sextractor(path, config, maps=maps, out_dir=out_dir, overwrite=True,
                                       postprocess=post if scorer else None).catalog)


def _truth_masks(truth: np.ndarray, class_indices) -> np.ndarray:
    return np.stack([(truth & CLASSES[ci].bit) != 0 if CLASSES[ci].bit else np.zeros(truth.shape, bool)
                     for ci in class_indices])


def _astroscrappy_mask(image: np.ndarray, header) -> np.ndarray | None:
    try:
        import astroscrappy
    except ImportError:
        return None
    gain = float(header.get("GAIN", 1.0))
    mask, _ = astroscrappy.detect_cosmics(np.asarray(image, np.float32), gain=gain,
                                          readnoise=float(header.get("RDNOISE", 5.0)),
                                          satlevel=float(header.get("SATURATE", 65535.0)) * gain)  # electrons
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


#: Frame variants of the benchmark: the simulator's default ranges, an
#: undersampled PSF (good seeing on many wide-field cameras), a crowded field,
#: a long exposure's cosmic rays (6000 per 2048^2, 13x the default's), and a
#: thick (deep-depletion) CCD's cosmic rays, blurred by charge diffusion.
VARIANTS = {"default": {}, "undersampled": {"fwhm": (1.5, 2.2)}, "crowded": {"n_stars": 2800}, "cosmic": {"n_cr": 6000},
            "diffused": {"cr_diffusion": (0.3, 0.7)}}
#: "none@maps-noise": no maps, at the detection threshold the maps' noise
#: gives (excluding zero-weight pixels lowers the measured noise, so the same
#: DETECT_THRESH is a lower threshold): a control for the sources lost with
#: nothing of them masked.
STRATEGIES = ("none", "none@maps-noise", "network", "maxidetect", "maxidetect+clean", "oracle", "astroscrappy",
              "maximask")
LOST_SNR_BINS = ((20, 50), (50, 200), (200, np.inf))


def variant_config(base: SimConfig, variant: str) -> SimConfig:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    return SimConfig(**{**asdict(base), **VARIANTS[variant]})


def _noise_matched(cfg: SexConfig, image: np.ndarray, ms: MapSet) -> SexConfig:
    """``cfg`` with DETECT_THRESH scaled by the ratio of the frame's global
    noise measured without the zero-weight pixels of ``ms`` to that measured
    on every pixel: the absolute threshold the maps' run detects at."""
    import sep

    data = np.nan_to_num(np.asarray(image, np.float64))
    bad = ms.weight <= 0
    every = sep.Background(data, bw=64, bh=64).globalrms
    ratio = sep.Background(data, mask=bad, bw=64, bh=64).globalrms / every if every > 0 and not bad.all() else 1.0
    thresh = cfg.get_float("DETECT_THRESH", 1.5) * ratio
    return cfg.with_overrides({"DETECT_THRESH": f"{thresh:.6f}"})


def _zero_near(ms: MapSet | None, x: float, y: float, fwhm: float) -> int:
    """Zero-weight pixels of ``ms`` within 1 FWHM of (x, y) (0-based)."""
    if ms is None:
        return 0
    h, w = ms.weight.shape
    r = int(np.ceil(fwhm))
    y0, y1, x0, x1 = max(int(y) - r, 0), min(int(y) + r + 2, h), max(int(x) - r, 0), min(int(x) + r + 2, w)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    near = np.hypot(xx - x, yy - y) <= fwhm
    return int((ms.weight[y0:y1, x0:x1][near] <= 0).sum())


def _closest(cat, x: float, y: float, radius: float) -> tuple[int, float] | None:
    """(row, distance [px]) of the detection of ``cat`` (1-based X_IMAGE,
    Y_IMAGE) nearest to (x, y) (0-based), or None when none lies within ``radius``."""
    if cat is None or not len(cat):
        return None
    d = np.hypot(np.asarray(cat["X_IMAGE"]) - 1.0 - x, np.asarray(cat["Y_IMAGE"]) - 1.0 - y)
    k = int(np.argmin(d))
    return (k, float(d[k])) if d[k] <= radius else None


def _score_near(cat, x: float, y: float, fwhm: float) -> dict:
    """MD_CONTAM and MD_CLASS of the detection of ``cat`` nearest to (x, y)
    (0-based), if one lies within 1 FWHM; else {} (the maps lost it already)."""
    near = _closest(cat, x, y, fwhm)
    if near is None:
        return {}
    k = near[0]
    return {"md_contam": float(cat["MD_CONTAM"][k]), "md_class": str(cat["MD_CLASS"][k])}


#: How far (in FWHM) a lost source's nearest detection is looked for.
NEAREST_FWHM = 5.0


def _nearest(cat, x: float, y: float, fwhm: float) -> dict:
    """Where a run's detection nearest to (x, y) (0-based) lies: its distance
    [px] and isophotal area, or ``{}`` when none lies within
    :data:`NEAREST_FWHM` FWHM. Tells a source whose detection moved (on
    diffuse light its isophote takes in the light around it and its
    barycentre follows) from one that merged into a larger object or vanished."""
    near = _closest(cat, x, y, NEAREST_FWHM * fwhm)
    if near is None:
        return {}
    k, d = near
    return {"px": d, "area": int(cat["ISOAREA_IMAGE"][k]) if "ISOAREA_IMAGE" in cat.colnames else None}


def _nearest_text(e: dict) -> str:
    """A lost source's :func:`_nearest` of the maps' run and of the no-mask run, in words."""
    n, n0 = e.get("nearest"), e.get("nearest_none")
    if n is None:
        return ""
    if not n:
        return f", no detection within {NEAREST_FWHM:g} FWHM"
    area = f"{n['area']} px" if n.get("area") is not None else "?"
    was = f"; no mask {n0['px']:.1f} px, {n0['area']} px" if n0 and n0.get("area") is not None else ""
    return f", nearest detection {n['px']:.1f} px off (isophote {area}{was})"


def _pixel_scores(ms: MapSet, frame, image) -> dict:
    """Pixel recall of the final maps (flagged or zero weight) per defect
    class; cosmic rays as the targets count them (pixels >= 5 sigma) with
    their false-positive rate off a 1-pixel halo."""
    import sep

    data = np.asarray(image, np.float64)
    bkg = sep.Background(data, bw=64, bh=64)
    snr = (data - bkg.back()) / bkg.rms()
    zero = ms.weight == 0
    out = {}
    for abbr in ("CR", "HP", "HCL", "DCL", "TRL"):
        bit = next(c.bit for c in CLASSES if c.abbr == abbr)
        truth = (frame.truth & bit) != 0
        hit = ((ms.flag & bit) != 0) | zero
        if abbr == "CR":
            strong = truth & (snr >= 5)
            halo = ndimage.binary_dilation(truth, structure=np.ones((3, 3), bool))
            flagged = (ms.flag & bit) != 0
            out["CR"] = {"n_true": int(strong.sum()), "recall": float((hit & strong).sum() / max(strong.sum(), 1)),
                         "fpr_off_halo": float((flagged & ~halo).sum() / max((~halo).sum(), 1))}
        else:
            out[abbr] = {"n_true": int(truth.sum()), "recall": float((hit & truth).sum() / max(truth.sum(), 1))}
    # Bright background is flagged, never zeroed: its flags alone, and how many of them are on it.
    bit = next(c.bit for c in CLASSES if c.abbr == "BBG")
    truth, flagged = (frame.truth & bit) != 0, (ms.flag & bit) != 0
    out["BBG"] = {"n_true": int(truth.sum()), "recall": float((flagged & truth).sum() / max(truth.sum(), 1)),
                  "precision": float((flagged & truth).sum() / flagged.sum()) if flagged.any() else float("nan")}
    out["zero_fraction"] = float(zero.mean())
    return out


def run_bench(opts: BenchOptions, maker=None, work_dir=None, progress: bool = True) -> dict:
    """Run the benchmark; returns every figure (see :func:`write_report`).
    Its frames, maps and catalogues are kept in ``work_dir`` when given, else
    in a temporary directory removed at the end (~1.3 GB for the default run:
    left behind, ten runs filled a disk)."""
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="maxidetect-bench-") as tmp:
            return _run_bench(opts, maker, tmp, progress)
    return _run_bench(opts, maker, work_dir, progress)


def _run_bench(opts: BenchOptions, maker, work_dir, progress: bool) -> dict:
    from tqdm import tqdm

    if maker is None:
        from maxidetect.masks.maker import MaskMaker

        maker = MaskMaker(opts.model, for_maps=True)
    engines = [e for e in opts.engines if e == "SEP" or _have_sextractor()]
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    cfg = SexConfig()
    sel = [int(i) for i in maker.selected]
    thresholds = maker.config.thresholds[sel]
    network_policy = replace(opts.policy, fuse=False)
    try:
        scorer_model = load_score_model()
    except WeightsError:
        scorer_model = None  # no score model: no clean rows
    scores = []
    fused_policy = replace(opts.policy, fuse=True)
    frames = []
    bar = tqdm(total=opts.n_frames * len(opts.variants), unit="frame", disable=not progress, file=sys.stderr)
    for variant in opts.variants:
        sim = variant_config(opts.sim_config, variant)
        for k in range(opts.n_frames):
            seed = opts.seed + k
            t0 = time.perf_counter()
            frame = simulate_frame(seed, sim, size=opts.size)
            tag = f"{variant}_{seed}"
            path = work / f"sim_{tag}.fits"
            write_hdulist_atomic(fits.HDUList([fits.PrimaryHDU(frame.image, frame.header)]), path, overwrite=True)
            fwhm = float(frame.header["SIMFWHM"])
            t1 = time.perf_counter()
            probs = maker.probabilities(frame.image)
            t_mask = time.perf_counter() - t1
            masks = probs > thresholds[:, None, None]
            quality = mask_quality(probs, thresholds, frame.truth, sel)
            mapsets = {"network": maps_from_masks(masks, maker, network_policy)}
            t2 = time.perf_counter()
            mapsets["maxidetect"] = maps_from_masks(masks, maker, fused_policy, image=frame.image,
                                                    header=frame.header, probs=probs)
            del probs
            t_fuse = time.perf_counter() - t2
            mapsets["oracle"] = maps_from_masks(_truth_masks(frame.truth, sel), maker, network_policy)
            crm = _astroscrappy_mask(frame.image, frame.header)
            if crm is not None:
                w = (~crm).astype(np.float32)
                if opts.policy.noise:  # same weighting as maxidetect's maps: only the mask differs
                    w *= noise_weight(frame.image, crm)
                mapsets["astroscrappy"] = MapSet(weight=w, flag=np.where(crm, 1, 0).astype(np.int32))
            if opts.peers:
                mm = _maximask_masks(path, maker)
                if mm is not None:
                    mapsets["maximask"] = maps_from_masks(mm, maker, network_policy)
            strategies = {"none": None}
            strategies.update({name: _write_maps(work / f"sim_{tag}_{name}.fits", ms, frame.header)
                               for name, ms in mapsets.items()})
            pixels = {name: _pixel_scores(ms, frame, frame.image) for name, ms in mapsets.items()
                      if name in ("network", "maxidetect", "oracle")}
            report = mapsets["maxidetect"].report
            results, matched, cats = [], {}, {}
            runs = [(strat, maps, False, cfg) for strat, maps in strategies.items()]
            runs.insert(1, ("none@maps-noise", None, False, _noise_matched(cfg, frame.image, mapsets["maxidetect"])))
            if scorer_model is not None:
                runs.append(("maxidetect+clean", strategies["maxidetect"], True, cfg))
            for strat, maps, clean, run_cfg in runs:
                for engine in engines:
                    if strat in ("astroscrappy", "maximask") and engine != "SEP":
                        continue
                    scorer = Scorer(scorer_model, clean=clean) if scorer_model is not None else None
                    cat = run_engine(engine, path, run_cfg, maps, work / f"{tag}_{strat}_{engine}", scorer)
                    sc = score_catalog(cat, frame.catalog, frame.truth, fwhm, opts.radius_fwhm, opts.snr_cut,
                                       mag_bins=np.arange(12.0, 26.5, 0.5))
                    matched[(strat, engine)] = set(sc.pop("matched_true").tolist())
                    sc.pop("matched_flux")
                    real = sc.pop("matched_det")  # the same matching labels the score's reliability
                    if strat == "maxidetect" and engine == "SEP" and "MD_CONTAM" in cat.colnames:
                        scores.append((np.asarray(cat["MD_CONTAM"], float), real, variant))
                    cats[(strat, engine)] = cat  # where a lost source's detection went
                    results.append({"strategy": strat, "engine": engine, **sc})
            snr = np.asarray(frame.catalog["SNR"])
            for r in results:
                base = matched.get(("none", r["engine"]))
                lost = sorted(i for i in base - matched[(r["strategy"], r["engine"])] if snr[i] > 20) \
                    if base is not None and r["strategy"] != "none" else []
                r["lost"] = {f"{lo:g}-{hi:g}": int(sum(lo < snr[i] <= hi for i in lost)) for lo, hi in LOST_SNR_BINS}
                ms = mapsets.get(r["strategy"].removesuffix("+clean"))
                zero_px = [_zero_near(ms, frame.catalog["X"][i], frame.catalog["Y"][i], fwhm) for i in lost]
                r["lost_masked"] = int(sum(z > 0 for z in zero_px))  # the invariant: none under zero weight
                control = matched.get(("none@maps-noise", r["engine"]))
                r["lost_examples"] = [{"x": float(frame.catalog["X"][i]), "y": float(frame.catalog["Y"][i]),
                                       "snr": float(snr[i]), "kind": str(frame.catalog["KIND"][i]), "zero_px": z,
                                       "control_lost": bool(control is not None and i not in control),
                                       "nearest": _nearest(cats.get((r["strategy"], r["engine"])),
                                                           frame.catalog["X"][i], frame.catalog["Y"][i], fwhm),
                                       "nearest_none": _nearest(cats.get(("none", r["engine"])),
                                                                frame.catalog["X"][i], frame.catalog["Y"][i], fwhm)}
                                      for i, z in list(zip(lost, zero_px, strict=True))[:10]]
                scored = cats.get(("maxidetect", r["engine"]))  # what --clean decided on
                if r["strategy"].endswith("+clean") and scored is not None and "MD_CONTAM" in scored.colnames:
                    for e in r["lost_examples"]:
                        e.update(_score_near(scored, e["x"], e["y"], fwhm))
            frames.append({"variant": variant, "seed": seed, "size": opts.size, "fwhm": fwhm,
                           "sky": float(frame.header["SIMSKY"]), "n_true": len(frame.catalog),
                           "mask_seconds": t_mask, "fusion_seconds": t_fuse,
                           "frame_seconds": time.perf_counter() - t0, "mask_quality": quality, "pixels": pixels,
                           "fusion": {k: v for k, v in vars(report).items() if k not in ("trails", "columns")}
                           | {"trails": len(report.trails), "columns": len(report.columns)} if report else {},
                           "results": results})
            bar.update(1)
    bar.close()
    return {"options": {"n_frames": opts.n_frames, "size": opts.size, "seed": opts.seed, "engines": engines,
                        "model": maker.predictor.info.name,
                        "variants": list(opts.variants), "snr_cut": opts.snr_cut, "radius_fwhm": opts.radius_fwhm,
                        "policy": opts.policy.actions, "grow": opts.policy.grow},
            "frames": frames,
            "summary": {v: _summarise([f for f in frames if f["variant"] == v]) for v in opts.variants},
            "scores": {v: evaluate_scores(np.concatenate([c for c, _, vv in scores if vv == v]),
                                          np.concatenate([r for _, r, vv in scores if vv == v]))
                       for v in opts.variants if any(vv == v for _, _, vv in scores)},
            "threshold": scorer_model.threshold if scorer_model is not None else None}


def _summarise(frames) -> list[dict]:
    keys = sorted({(r["strategy"], r["engine"]) for f in frames for r in f["results"]},
                  key=lambda k: (STRATEGIES.index(k[0]), k[1]))
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
            "lost": {b: sum(r["lost"][b] for r in rs) for b in rs[0]["lost"]},
            "lost_masked": sum(r.get("lost_masked", 0) for r in rs),
            "false_point_flags": (sum(r.get("n_bright_false_point_flag", 0) for r in rs),
                                  sum(r.get("n_bright_matched", 0) for r in rs)),
            "flux_bias": float(np.nanmedian([r["flux_bias"] for r in rs])),
        })
        pix = [f["pixels"][strat] for f in frames if strat in f.get("pixels", {})]
        if pix:
            rows[-1]["pixels"] = {c: float(np.mean([p[c]["recall"] for p in pix]))
                                  for c in ("CR", "HP", "HCL", "DCL", "TRL")}
            rows[-1]["pixels"]["CR_fpr_off_halo"] = float(np.mean([p["CR"]["fpr_off_halo"] for p in pix]))
            if all("BBG" in p for p in pix):
                rows[-1]["pixels"]["BBG"] = float(np.mean([p["BBG"]["recall"] for p in pix]))
                rows[-1]["pixels"]["BBG_precision"] = float(np.nanmean([p["BBG"]["precision"] for p in pix]))
    base = {r["engine"]: r for r in rows if r["strategy"] == "none"}
    for r in rows:
        b = base.get(r["engine"])
        if b:
            r["spurious_reduction"] = 1 - r["n_spurious"] / b["n_spurious"] if b["n_spurious"] else float("nan")
            r["completeness_change_pp"] = 100 * (r["completeness"] - b["completeness"])
            r["trl_spurious_fraction"] = (r["spurious_by_class"]["TRL"] / b["spurious_by_class"]["TRL"]
                                          if b["spurious_by_class"]["TRL"] else float("nan"))
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
    o = results["options"]
    lines = [f"# maxidetect benchmark: {o['n_frames']} simulated frame(s) of {o['size']}x{o['size']} per variant", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        f"Network: `{o.get('model', 'maximask')}`. Seeds {o['seed']}..{o['seed'] + o['n_frames'] - 1}; "
        f"variants {', '.join(o['variants'])} "
        f"({'; '.join(f'{v}: {VARIANTS[v] or chr(45)}' for v in o['variants'])}). Completeness over true sources "
        f"with expected S/N > {o['snr_cut']:g}; one-to-one matching within {o['radius_fwhm']:g} FWHM to true "
        f"sources with expected S/N >= {MATCH_MIN_SNR:g} (fainter ones cannot be detected alone), below S/N "
        f"{MATCH_FLUX_SNR:g} only with a flux no more than {MATCH_FLUX_RATIO:g}x the true light around them + "
        f"{MATCH_FLUX_SIGMA:g} errors (a bright knot on a faint star is not the star); a saturated star left "
        "unmatched matches an unmatched detection on its saturated footprint (bleeds move its centroid); a spurious "
        "detection matches no such source and is attributed to the contaminant under it. *Lost*: true sources "
        "with S/N > 20 that the same engine finds without maps and not with them. *Flagged CR/HP falsely*: "
        "true sources with S/N > 20 whose detection's IMAFLAGS_ISO says cosmic ray or hot pixel with none in the "
        "truth within its isophote (a catalogue kept to IMAFLAGS_ISO == 0 loses them). Strategies: `network` the "
        "network's thresholded masks alone; `maxidetect` the default (fused with the frame's evidence: star "
        "protection, fitted trails and columns, L.A.Cosmic); `oracle` the truth masks; `astroscrappy` "
        "L.A.Cosmic alone.",
    ]
    for v in o["variants"]:
        frames = [f for f in results["frames"] if f["variant"] == v]
        summary = results["summary"][v]
        lines += ["", f"## {v}", "",
                  "| strategy | engine | detections | spurious | vs no mask | completeness | change [pp] | "
                  "lost S/N>20 (20-50/50-200/>200) | of them under zero weight | TRL spurious vs no mask | "
                  "S/N>20 flagged CR/HP falsely |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in summary:
            red = -r.get("spurious_reduction", float("nan"))
            ch = r.get("completeness_change_pp", float("nan"))
            lost = "/".join(str(n) for n in r["lost"].values()) if r["strategy"] != "none" else "-"
            masked = str(r.get("lost_masked", 0)) if r["strategy"] not in ("none", "none@maps-noise") else "-"
            trl = r.get("trl_spurious_fraction", float("nan"))
            nf, nm = r.get("false_point_flags", (0, 0))
            fpf = f"{nf}/{nm}" if nm and r["strategy"] not in ("none", "none@maps-noise") else "-"
            lines.append(f"| {r['strategy']} | {r['engine']} | {r['n_detections']} | {r['n_spurious']} | "
                         f"{red:+.1%} | {r['completeness']:.4f} | {ch:+.2f} | {lost} | {masked} | {trl:.0%} | "
                         f"{fpf} |")
        lines += ["", "Spurious detections by contaminant:", "",
                  "| strategy | engine | " + " | ".join((*CONTAMINANT_ORDER, "none")) + " |",
                  "|---|---|" + "---|" * (len(CONTAMINANT_ORDER) + 1)]
        for r in summary:
            lines.append(f"| {r['strategy']} | {r['engine']} | "
                         + " | ".join(str(r["spurious_by_class"][c]) for c in (*CONTAMINANT_ORDER, "none")) + " |")
        lines += ["", "Pixel recall of the final maps (flagged or zero weight; CR: pixels >= 5 sigma; BBG: its "
                  "flags alone, and the share of them on bright background):", "",
                  "| strategy | CR | CR FPR off a 1-px halo | HP | HCL | DCL | TRL | BBG | BBG precision |",
                  "|---|---|---|---|---|---|---|---|---|"]
        seen = set()
        for r in summary:
            if "pixels" in r and r["strategy"] not in seen:
                seen.add(r["strategy"])
                q = r["pixels"]
                lines.append(f"| {r['strategy']} | {q['CR']:.3f} | {q['CR_fpr_off_halo']:.1e} | {q['HP']:.3f} | "
                             f"{q['HCL']:.3f} | {q['DCL']:.3f} | {q['TRL']:.3f} | {q.get('BBG', float('nan')):.3f} | "
                             f"{q.get('BBG_precision', float('nan')):.3f} |")
        net_s = float(np.mean([f["mask_seconds"] for f in frames]))
        fuse_s = float(np.mean([f.get("fusion_seconds", 0.0) for f in frames]))
        lines += ["", f"Time per frame: network {net_s:.1f} s, evidence fusion {fuse_s:.1f} s "
                  f"({fuse_s / net_s:.0%} of the network)."]
        for engine in sorted({r["engine"] for f in frames for r in f["results"]}):
            lost_ex = [(f["seed"], e) for f in frames for r in f["results"]
                       if r["strategy"] == "maxidetect" and r["engine"] == engine for e in r.get("lost_examples", [])]
            if lost_ex:
                lines += ["", f"Lost by the default maps ({engine}; with the zero-weight pixels within 1 FWHM of "
                          "the source: 0 means none of it was masked, its detection merged with diffuse light or a "
                          "neighbour, or moved, as the masks changed the background and noise; *control*: the "
                          "no-mask run at the maps' noise loses it too; the maps' run's detection nearest to it, "
                          "with its isophotal area, and the no-mask run's): " + "; ".join(
                              f"seed {s_} ({e['x']:.0f}, {e['y']:.0f}) {e['kind']} S/N {e['snr']:.0f}, "
                              f"{e.get('zero_px', '?')} px zeroed{', control' if e.get('control_lost') else ''}"
                              f"{_nearest_text(e)}"
                              for s_, e in lost_ex[:10])]
        for engine in sorted({r["engine"] for f in frames for r in f["results"]}):
            dropped = [(f["seed"], e) for f in frames for r in f["results"]
                       if r["strategy"] == "maxidetect+clean" and r["engine"] == engine
                       for e in r.get("lost_examples", []) if "md_contam" in e]
            if dropped:
                lines += ["", f"Lost by --clean ({engine}; the score of the maps' detection nearest to the source, "
                          "within 1 FWHM): " + "; ".join(
                              f"seed {s_} ({e['x']:.0f}, {e['y']:.0f}) {e['kind']} S/N {e['snr']:.0f}, "
                              f"MD_CONTAM {e['md_contam']:.3f} {e['md_class']}" for s_, e in dropped[:10])]
    if results.get("scores"):
        lines += ["", "## Detection score (MD_CONTAM) on these frames (SEP, maxidetect maps)", "",
                  f"Model threshold for --clean: {results['threshold']:.3f}. Reliability: predicted MD_CONTAM vs the "
                  "observed fraction of contaminants (no detectable true source within 1 FWHM) per decile of the "
                  "prediction.", ""]
        for v, sc in results["scores"].items():
            rel = [r for r in sc["reliability"] if r["n"]]
            lines += [f"{v} ({sc['n']} detections, {sc['n_real']} real):", "",
                      "| MD_CONTAM | n | mean predicted | observed | |", "|---|---|---|---|---|"]
            for r in rel:
                bad = r["n"] >= 50 and abs(r["predicted"] - r["observed"]) > 0.05
                lines.append(f"| {r['lo']:.1f}-{r['hi']:.1f} | {r['n']} | {r['predicted']:.3f} | {r['observed']:.3f} "
                             f"| {'off by > 0.05' if bad else ''} |")
            lines += ["", "| threshold | spurious kept | real kept |", "|---|---|---|"]
            lines += [f"| {c['threshold']:.3f} | {c['spurious_kept']} | {c['real_kept']} |" for c in sc["tradeoff"]]
            lines.append("")
        try:
            paths["reliability"] = _reliability_plot(results, out / "reliability.png")
            lines += ["![reliability](reliability.png)", ""]
        except ImportError:
            pass
    quality = _mean_quality([f for f in results["frames"] if f["variant"] == o["variants"][0]])
    lines += ["", f"## Network mask quality per class ({o['variants'][0]}; pixel level, catalogue thresholds)", "",
              "| class | true px | flagged px | TPR | FPR | purity | AUC |", "|---|---|---|---|---|---|---|"]
    for c, q in quality.items():
        lines.append(f"| {c} | {q['n_true']} | {q['n_flagged']} | {q['tpr']:.3f} | {q['fpr']:.2e} | "
                     f"{q['purity']:.3f} | {q['auc']:.3f} |")
    lines += ["", "## Targets of the default maps (spurious -90% or better, completeness >= -0.2 pp, no true source "
              "with S/N > 20 lost, TRL spurious <= 10% of no mask)", ""]
    for v in o["variants"]:
        for r in results["summary"][v]:
            if r["strategy"] == "maxidetect+clean":
                lines.append(f"- {v}, {r['engine']}, --clean: spurious {-r['spurious_reduction']:+.1%} (target -97%: "
                             f"{'met' if r['spurious_reduction'] >= 0.97 else 'not met'}), completeness "
                             f"{r['completeness_change_pp']:+.2f} pp (target >= -0.5: "
                             f"{'met' if r['completeness_change_pp'] >= -0.5 else 'not met'})")
            if r["strategy"] != "maxidetect":
                continue
            lost = sum(r["lost"].values())
            lines.append(f"- {v}, {r['engine']}: spurious {-r['spurious_reduction']:+.1%} "
                         f"({'met' if r['spurious_reduction'] >= 0.9 else 'not met'}), completeness "
                         f"{r['completeness_change_pp']:+.2f} pp "
                         f"({'met' if r['completeness_change_pp'] >= -0.2 else 'not met'}), lost {lost} "
                         f"({'met' if lost == 0 else 'not met'}; under zero weight {r.get('lost_masked', 0)}), "
                         f"TRL spurious {r['trl_spurious_fraction']:.0%}")
    try:
        first = {**results, "summary": [r for r in results["summary"][o["variants"][0]]
                                        if r["strategy"] != "none@maps-noise"],
                 "frames": [f for f in results["frames"] if f["variant"] == o["variants"][0]]}
        paths.update(_plots(first, quality, out))
        lines += ["", f"Plots ({o['variants'][0]}):", "", "![completeness](completeness.png)", "",
                  "![contamination](contamination.png)", "", "![ROC](roc.png)"]
    except ImportError:
        lines += ["", "(matplotlib not installed: no plots)"]
    paths["report"].write_text("\n".join(lines) + "\n")
    return paths


def _reliability_plot(results, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4.5))
    for v, sc in results["scores"].items():
        rel = [r for r in sc["reliability"] if r["n"]]
        ax[0].plot([r["predicted"] for r in rel], [r["observed"] for r in rel], "o-", label=v)
        ax[1].plot([c["real_kept"] for c in sc["tradeoff"]], [c["spurious_kept"] for c in sc["tradeoff"]], ".-",
                   label=v)
    ax[0].plot([0, 1], [0, 1], "k:", lw=1)
    ax[0].set_xlabel("predicted MD_CONTAM (decile mean)")
    ax[0].set_ylabel("observed contaminant fraction")
    ax[1].set_xlabel("real detections kept")
    ax[1].set_ylabel("spurious detections kept")
    ax[1].set_yscale("log")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    return _save(fig, path)


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
        from maxidetect.masks.maker import MaskMaker

        maker = MaskMaker(for_maps=True)
    policy = policy or MapPolicy()
    cfg = config or SexConfig()
    try:
        scorer_model = load_score_model()
    except WeightsError:
        scorer_model = None
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
                ms = compute_maps(data, maker, policy, header=hdu.header)
                t0 = detect(data, cfg, header=hdu.header).catalog
                d1 = detect(data, cfg, weight=ms.weight, flag=ms.flag, header=hdu.header)
                t1 = d1.catalog
                cleaned = None
                if scorer_model is not None and len(t1):
                    t1 = Scorer(scorer_model)(t1, data, ms.weight, ms.flag, d1.segmentation, ms.header())
                    cleaned = t1[np.asarray(t1["MD_CONTAM"]) >= scorer_model.threshold]
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
                cut = _cutouts(data, cleaned, out / f"{name}_clean_removed.png") if cleaned is not None else None
                rows.append({"file": str(spec.path.name), "hdu": index, "shape": list(data.shape),
                             "n_nomask": len(t0), "n_masked": len(t1), "removed": removed, "flagged": flagged,
                             "zero_weight_fraction": float(np.mean(ms.weight == 0)),
                             "clean_removed": int(len(cleaned)) if cleaned is not None else None,
                             "clean_removed_by_class": {str(c): int(n) for c, n in zip(
                                 *np.unique(cleaned["MD_CLASS"], return_counts=True), strict=True)}
                             if cleaned is not None and len(cleaned) else {},
                             "preview": png.name if png else None, "clean_cutouts": cut.name if cut else None})
    (out / "real.json").write_text(json.dumps(rows, indent=1))
    cls = [c.abbr for c in CLASSES if c.bit]
    lines = ["# Real frames (no truth): what the maps did (SEP engine, maxidetect defaults)", "",
             "removed = no-mask detections centred on zero-weight pixels of the class and gone from the masked "
             "run; flagged = masked-run detections with the class bit in IMAFLAGS_ISO.", "",
             "| frame | HDU | no mask | masked | zero-weight px | removed by class | flagged by class | "
             "--clean removes (MD_CLASS) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rem = ", ".join(f"{c} {r['removed'][c]}" for c in cls if r["removed"][c]) or "-"
        flg = ", ".join(f"{c} {r['flagged'][c]}" for c in cls if r["flagged"][c]) or "-"
        cl = "-" if r["clean_removed"] is None else f"{r['clean_removed']} (" + ", ".join(
            f"{c} {n}" for c, n in r["clean_removed_by_class"].items()) + ")"
        lines.append(f"| {r['file']} | {r['hdu']} | {r['n_nomask']} | {r['n_masked']} | "
                     f"{r['zero_weight_fraction']:.2%} | {rem} | {flg} | {cl} |")
    lines.append("")
    lines += [f"![{r['file']}[{r['hdu']}]]({r['preview']})" for r in rows if r["preview"]]
    lines += ["", "What --clean removes, for a person to judge (cut-outs, MD_CONTAM and MD_CLASS above each):", ""]
    lines += [f"![{r['file']}[{r['hdu']}] removed]({r['clean_cutouts']})" for r in rows if r["clean_cutouts"]]
    (out / "real.md").write_text("\n".join(lines) + "\n")
    return {"rows": rows, "report": out / "real.md"}


def _cutouts(data, table, path: Path, size: int = 21, max_n: int = 48) -> Path | None:
    """A grid of cut-outs of the detections in ``table`` (PNG)."""
    if table is None or len(table) == 0:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from astropy.visualization import ZScaleInterval
    except ImportError:
        return None
    rows = table[np.argsort(-np.asarray(table["MD_CONTAM"]))][:max_n]
    n = len(rows)
    cols = min(8, n)
    nr = int(np.ceil(n / cols))
    fig, axes = plt.subplots(nr, cols, figsize=(1.6 * cols, 1.8 * nr), squeeze=False)
    h = size // 2
    pad = np.pad(np.nan_to_num(np.asarray(data, np.float64)), h, mode="edge")
    for ax in axes.ravel():
        ax.axis("off")
    for ax, r in zip(axes.ravel(), rows, strict=False):
        x, y = int(round(r["X_IMAGE"] - 1)) + h, int(round(r["Y_IMAGE"] - 1)) + h
        cut = pad[y - h:y + h + 1, x - h:x + h + 1]
        lo, hi = ZScaleInterval().get_limits(cut)
        ax.imshow(cut, origin="lower", cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(f"{r['MD_CONTAM']:.2f} {r['MD_CLASS']}", fontsize=7)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path


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
