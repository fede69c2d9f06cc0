"""Contaminants injected into real frames: found, and no real source lost.

Simulated frames have a truth but not the sky; real frames have the sky but
no truth. Here known contaminants are added to real frames (the repository's
reference frames and astropy's m13): a satellite trail (Gaussian across,
peak 1-12 sigma per pixel, width sigma 0.5-3 px, any angle, crossing the
frame or ending inside it, with photon noise where the header has a gain),
cosmic rays (single-pixel hits and wandering tracks) and a hot column
segment. Each injected frame is compared with its original, both through
the default maps (and the network's maps alone, as a row) and SEP:

- *recall*: injected pixels flagged or at zero weight (trail pixels >= 1
  sigma; cosmic-ray pixels >= 5 sigma; column pixels), and the fraction of
  the trail's length covered end to end (20-px pieces with >= half their
  >= 1 sigma pixels masked);
- *left*: detections of the injected frame with no counterpart (2 px) in the
  original's catalogue made the same way -- the contamination the maps left
  (no mask: the contamination there was to remove);
- *lost*: real sources (S/N > 20 detections of the injected frame without a
  mask, found in the original with no mask and with its maps) that the
  injected frame's maps lose (none within 2 px), split into those on the
  trail's footprint (where a fitted trail may take a source with it) and
  those elsewhere (which must be none), beside an *oracle* row: zero weight
  on exactly the injected pixels, the control for sources any mask of them
  costs (in a crowded field masking a trail changes the background and the
  deblending of stars far from it).

    .venv/bin/python benchmarks/injection.py [--seeds 6] [-o benchmarks/results/injection]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy import ndimage
from scipy.spatial import cKDTree

from maxidetect.classes import CLASSES
from maxidetect.extract.config import SexConfig
from maxidetect.extract.sep_engine import detect
from maxidetect.maps.policy import MapPolicy
from maxidetect.maps.writer import MapSet, maps_from_masks
from maxidetect.masks.maker import MaskMaker

sys.path.insert(0, str(Path(__file__).resolve().parent))
from independent import track_deposits  # noqa: E402  (the second generator's cosmic-ray tracks)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIT = {c.abbr: c.bit for c in CLASSES}
FRAMES = {
    "CTIO Mosaic2 (galaxies, saturated star)": ROOT / "../shared/data/real/fitswcs_tpv_ctio_mosaic2.fits",
    "UKIRT WFCAM (crowded bulge)": ROOT / "../shared/data/real/fitswcs_zpn_ukirt_wfcam.fits",
    "SAAO raw (overscan, uint16)": ROOT / "../shared/data/real/ccdproc_a8280271_saao_raw.fits",
    "NTT EMMI (SEP's reference)": ROOT / "../shared/data/sextractor_reference/image.fits",
    "m13 (astropy test data)": "package:astropy:io/fits/hdu/compressed/tests/data/m13.fits",
}


def _path(p) -> Path:
    if isinstance(p, str) and p.startswith("package:"):
        import importlib

        _, pkg, rel = p.split(":", 2)
        return Path(importlib.import_module(pkg).__file__).parent / rel
    return Path(p).resolve()


def _noise(image: np.ndarray) -> tuple[float, float]:
    import sep

    bkg = sep.Background(np.ascontiguousarray(image, np.float64), bw=64, bh=64)
    return float(bkg.globalback), float(bkg.globalrms)


def inject(image: np.ndarray, header: fits.Header, seed: int):
    """(injected image, {class: injected signal}) for one draw."""
    rng = np.random.default_rng([seed, 11])
    h, w = image.shape
    _, sigma = _noise(image)
    gain = float(header.get("GAIN") or 0.0)
    yy, xx = np.mgrid[0:h, 0:w]
    out = image.astype(np.float64)
    signal = {}
    # Trail: peak 1-12 sigma (log-uniform), width sigma 0.5-3 px; half cross the frame.
    ang = rng.uniform(0, np.pi)
    cx, cy = rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.75) * h
    along = (xx - cx) * np.cos(ang) + (yy - cy) * np.sin(ang)
    across = -(xx - cx) * np.sin(ang) + (yy - cy) * np.cos(ang)
    if rng.random() < 0.5:
        t0, t1 = -2.0 * max(h, w), 2.0 * max(h, w)
    else:  # ends inside: at least 120 px long
        t0 = rng.uniform(-0.6, -0.1) * min(h, w)
        t1 = t0 + rng.uniform(120, 0.9 * min(h, w))
    width = rng.uniform(0.5, 3.0)
    peak = np.exp(rng.uniform(np.log(1.0), np.log(12.0))) * sigma
    trl = peak * np.exp(-0.5 * (across / width) ** 2) * ((along >= t0) & (along <= t1))
    signal["TRL"] = trl
    signal["trail"] = {"angle_deg": float(np.degrees(ang)), "width_sigma": float(width),
                       "peak_sigma": float(peak / sigma), "crosses": bool(t0 < -max(h, w)),
                       "along": along, "t": (float(t0), float(t1))}
    # Cosmic rays: 25 per 512^2; 35% single-pixel hits, the rest wandering tracks.
    cr = np.zeros((h, w))
    for _ in range(rng.poisson(25 * h * w / 512**2)):
        y, x = rng.uniform(0, h), rng.uniform(0, w)
        if rng.random() < 0.35:
            cr[int(y), int(x)] += rng.uniform(8, 300) * sigma
            continue
        a, n = rng.uniform(0, 2 * np.pi), int(min(rng.exponential(8.0) + 2, 50) / 0.5)
        per = rng.uniform(6, 120) * sigma
        for py, px, wt in track_deposits((h, w), x, y, a, n, rng):
            cr[py, px] += 0.5 * per * wt
    signal["CR"] = cr
    # Hot column segment: 3-30 sigma, 60 px to the full height.
    col = np.zeros((h, w))
    x = int(rng.integers(w // 10, w - w // 10))
    length = int(rng.integers(60, h + 1))
    y0 = int(rng.integers(0, h - length + 1))
    col[y0:y0 + length, x] = rng.uniform(3.0, 30.0) * sigma
    signal["HCL"] = col
    out += trl + cr + col
    if gain > 0:  # the trail's photon noise
        out += rng.normal(0.0, 1.0, out.shape) * np.sqrt(np.clip(trl, 0, None) / gain)
    sat = header.get("SATURATE")
    if sat:
        out = np.minimum(out, float(sat))
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        out = np.clip(np.round(out), info.min, info.max)
    return out.astype(np.float32), signal, sigma


def _catalog(image, header, ms, cfg):
    t = detect(image, cfg, weight=None if ms is None else ms.weight, flag=None if ms is None else ms.flag,
               header=header).catalog
    xy = np.c_[np.asarray(t["X_IMAGE"]) - 1, np.asarray(t["Y_IMAGE"]) - 1] if len(t) else np.zeros((0, 2))
    snr = np.asarray(t["FLUX_AUTO"]) / np.maximum(np.asarray(t["FLUXERR_AUTO"]), 1e-30) if len(t) else np.zeros(0)
    return xy, snr


def _unmatched(a, b, r: float = 2.0) -> np.ndarray:
    """Rows of ``a`` with no row of ``b`` within ``r`` px."""
    if not len(a):
        return np.zeros(0, bool)
    if not len(b):
        return np.ones(len(a), bool)
    d, _ = cKDTree(b).query(a)
    return d > r


def _masked(ms, bit) -> np.ndarray:
    return ((ms.flag & bit) != 0) | (ms.weight <= 0)


def _on(mask: np.ndarray, xy: np.ndarray) -> np.ndarray:
    if not len(xy):
        return np.zeros(0, bool)
    iy = np.clip(np.round(xy[:, 1]).astype(int), 0, mask.shape[0] - 1)
    ix = np.clip(np.round(xy[:, 0]).astype(int), 0, mask.shape[1] - 1)
    return mask[iy, ix]


def _no_maps(shape) -> MapSet:
    return MapSet(weight=np.ones(shape, np.float32), flag=np.zeros(shape, np.int32))


def _oracle_maps(sig: dict, sigma: float) -> MapSet:
    """Zero weight and flags on exactly what was injected: the trail's pixels
    >= 1 sigma grown by 2 px (the maps' growth of trails), the cosmic rays'
    >= 1 sigma grown by 1 px (their halo), the column. Sources a perfect mask
    loses too are lost to detection (deblending, the background), not to
    the maps' errors."""
    trl = ndimage.binary_dilation(sig["TRL"] >= sigma, iterations=2)
    cr = ndimage.binary_dilation(sig["CR"] >= sigma, structure=np.ones((3, 3), bool))
    col = sig["HCL"] > 0
    flag = np.zeros(trl.shape, np.int32)
    for m, abbr in ((trl, "TRL"), (cr, "CR"), (col, "HCL")):
        flag[m] |= BIT[abbr]
    return MapSet(weight=(~(trl | cr | col)).astype(np.float32), flag=flag)


def measure(image, header, seed, maker, cfg) -> list[dict]:
    thr = maker.config.thresholds[[int(i) for i in maker.selected]][:, None, None]
    policy = MapPolicy()
    strategies = {"network": replace(policy, fuse=False), "maxidetect": policy}
    inj, sig, sigma = inject(image, header, seed)
    xy0n, _ = _catalog(image, header, None, cfg)
    xy1n, snr1n = _catalog(inj, header, None, cfg)
    trl_px = sig["TRL"] >= sigma
    trl_foot = ndimage.binary_dilation(sig["TRL"] >= 0.5 * sigma, iterations=3)
    cr_px = sig["CR"] >= 5 * sigma
    col_px = sig["HCL"] > 0
    # Where each detection left lies: on the trail, a cosmic ray, the column, or none of them (a
    # detection the maps changed elsewhere: deblending, or the threshold after the frame's global rms).
    feet = {"trail": trl_foot, "CR": ndimage.binary_dilation(sig["CR"] >= 3 * sigma, iterations=2),
            "column": ndimage.binary_dilation(col_px, iterations=2)}

    def left_by(xy, ref):
        xy = xy[_unmatched(xy, ref)]
        rest = np.ones(len(xy), bool)
        out = {}
        for k, f in feet.items():
            on = _on(f, xy) & rest
            out[k], rest = int(on.sum()), rest & ~on
        return out | {"elsewhere": int(rest.sum())}

    rows = [{"strategy": "none", "left": int(_unmatched(xy1n, xy0n).sum()), "left_by": left_by(xy1n, xy0n)}]
    p0, p1 = maker.probabilities(np.asarray(image, np.float32)), maker.probabilities(inj)
    m0, m1 = p0 > thr, p1 > thr
    for name in (*strategies, "oracle"):
        if name == "oracle":  # the control: perfect masks of what was injected (the original needs none)
            ms0, ms1 = _no_maps(image.shape), _oracle_maps(sig, sigma)
            xy0 = xy0n
        else:
            ms0 = maps_from_masks(m0, maker, strategies[name], image=np.asarray(image, np.float32), header=header,
                                  probs=p0)
            ms1 = maps_from_masks(m1, maker, strategies[name], image=inj, header=header, probs=p1)
            xy0, _ = _catalog(image, header, ms0, cfg)
        xy1, _ = _catalog(inj, header, ms1, cfg)
        trl_hit = _masked(ms1, BIT["TRL"]) & trl_px
        # End to end: 20-px pieces along the trail with >= half their >= 1 sigma pixels masked.
        along = sig["trail"]["along"][trl_px]
        pieces = np.floor((along - along.min()) / 20).astype(int) if along.size else np.zeros(0, int)
        n_p = np.bincount(pieces) if pieces.size else np.zeros(0)
        k_p = np.bincount(pieces, weights=trl_hit[trl_px]) if pieces.size else np.zeros(0)
        counted = n_p >= 5
        # Real sources the injected frame shows with no mask (found in the original with no mask and
        # with its maps) that the injected frame's maps lose.
        real = xy1n[(snr1n > 20) & ~_unmatched(xy1n, xy0n) & ~_unmatched(xy1n, xy0)]
        strong = np.asarray(_unmatched(real, xy1))
        on_trail = _on(trl_foot, real)
        # Trail flags the injection made away from the trail (an end run on into the frame's own
        # structure, or a false line): > 8 px from its footprint and not flagged in the original.
        beyond = ((ms1.flag & BIT["TRL"]) != 0) & ((ms0.flag & BIT["TRL"]) == 0) \
            & ~ndimage.binary_dilation(trl_foot, iterations=8)
        rows.append({
            "strategy": name,
            "trail_px_beyond": int(beyond.sum()),
            "trail_recall": float(trl_hit.sum() / max(trl_px.sum(), 1)),
            "trail_length_covered": float((k_p[counted] >= 0.5 * n_p[counted]).mean()) if counted.any() else None,
            "trail_px": int(trl_px.sum()),
            "cr_recall": float((_masked(ms1, BIT["CR"]) & cr_px).sum() / max(cr_px.sum(), 1)),
            "col_recall": float((_masked(ms1, BIT["HCL"]) & col_px).sum() / max(col_px.sum(), 1)),
            "left": int(_unmatched(xy1, xy0).sum()),
            "left_on_trail": int((_unmatched(xy1, xy0) & _on(trl_foot, xy1)).sum()),
            "left_by": left_by(xy1, xy0),
            "lost_snr20_elsewhere": int((strong & ~on_trail).sum()),
            "lost_snr20_on_trail": int((strong & on_trail).sum()),
            "lost_xy": real[strong & ~on_trail].round(1).tolist(),
            # zero-weight pixels within 2 px of each: masking's doing, or detection's (deblending)
            "lost_zero_px": [int((ms1.weight[max(int(y) - 2, 0):int(y) + 3, max(int(x) - 2, 0):int(x) + 3] <= 0).sum())
                             for x, y in real[strong & ~on_trail]],
        })
    t = sig["trail"]
    for r in rows:
        r.update(seed=seed, trail_peak_sigma=round(t["peak_sigma"], 2), trail_width=round(t["width_sigma"], 2),
                 trail_angle=round(t["angle_deg"], 1), trail_crosses=t["crosses"],
                 no_mask_left_on_trail=int((_unmatched(xy1n, xy0n) & _on(trl_foot, xy1n)).sum()))
    return rows


def _report(results: dict, out: Path, command: str) -> None:
    lines = ["# Contaminants injected into real frames", "",
             f"`{command}`; SEP with the default settings. Trail recall: pixels >= 1 sigma flagged or at zero "
             "weight; length: 20-px pieces of the trail with half of those pixels masked; CR: pixels >= 5 sigma; "
             "column: all its pixels; *beyond*: pixels flagged TRL more than 8 px from the trail's footprint "
             "(>= 0.5 sigma, grown 3 px) that the original's maps do not flag. *Left*: detections of the injected "
             "frame with no counterpart within 2 px in the original's catalogue made the same way. *Lost*: real "
             "sources, S/N > 20 detections of the injected "
             "frame without a mask that the original shows (with no mask and with its maps), that the injected "
             "frame's maps lose: on the trail's footprint or elsewhere (with the zero-weight pixels within 2 px); "
             "*oracle*: zero weight on exactly the injected pixels (trail >= 1 sigma grown 2 px, cosmic rays >= 1 "
             "sigma grown 1 px, the column), the control for sources that any mask of them costs. "
             "*Left by place*: on the trail's footprint, within 2 px of a cosmic ray (>= 3 sigma) or of the column, "
             "or elsewhere (a detection the maps changed away from the contaminants: deblending, or the threshold "
             "of the whole frame, which follows its global rms over the pixels of non-zero weight).", "",
             "| frame | strategy | trail recall | trail length | trail px missed | trail px beyond | CR recall | "
             "column recall | left (on trail) | left: trail / CR / column / elsewhere | lost S/N>20 elsewhere | "
             "lost on trail |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for frame, rows in results["frames"].items():
        for strat in ("none", "network", "maxidetect", "oracle"):
            rs = [r for r in rows if r["strategy"] == strat]
            left = sum(r["left"] for r in rs)
            by = " / ".join(str(sum(r["left_by"][k] for r in rs)) for k in ("trail", "CR", "column", "elsewhere"))
            if strat == "none":
                on = sum(r["no_mask_left_on_trail"] for r in rs)
                lines.append(f"| {frame} | no mask | | | | | | | {left} ({on}) | {by} | | |")
                continue
            missed = sum(round((1 - r["trail_recall"]) * r["trail_px"]) for r in rs)
            cov = [r["trail_length_covered"] for r in rs if r["trail_length_covered"] is not None]
            lines.append(
                f"| {frame} | {strat} | {np.mean([r['trail_recall'] for r in rs]):.3f} | "
                f"{np.mean(cov):.3f} | {missed} | {sum(r['trail_px_beyond'] for r in rs)} | "
                f"{np.mean([r['cr_recall'] for r in rs]):.3f} | "
                f"{np.mean([r['col_recall'] for r in rs]):.3f} | {left} ({sum(r['left_on_trail'] for r in rs)}) | "
                f"{by} | {sum(r['lost_snr20_elsewhere'] for r in rs)} | {sum(r['lost_snr20_on_trail'] for r in rs)} |")
    lines += ["", "Per draw (default maps): trail peak [sigma], width sigma [px], angle, crosses the frame; "
              "trail recall, length covered, px beyond; lost elsewhere (positions, zero-weight pixels within 2 px); "
              "the oracle's lost elsewhere (the control).", "",
              "| frame | seed | peak | width | angle | crosses | recall | length | beyond | lost elsewhere | oracle |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for frame, rows in results["frames"].items():
        oracle = {r["seed"]: r["lost_snr20_elsewhere"] for r in rows if r["strategy"] == "oracle"}
        for r in rows:
            if r["strategy"] == "maxidetect":
                lines.append(f"| {frame} | {r['seed']} | {r['trail_peak_sigma']} | {r['trail_width']} | "
                             f"{r['trail_angle']} | {r['trail_crosses']} | {r['trail_recall']:.3f} | "
                             f"{r['trail_length_covered']:.2f} | {r['trail_px_beyond']} | "
                             f"{r['lost_snr20_elsewhere']} "
                             f"{r['lost_xy'] or ''} {r['lost_zero_px'] or ''} | {oracle[r['seed']]} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("-o", "--out", default=str(HERE / "results" / "injection"))
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    maker = MaskMaker(for_maps=True)
    cfg = SexConfig()
    results = {"frames": {}}
    t_start = time.perf_counter()
    for name, p in FRAMES.items():
        path = _path(p)
        if not path.exists():
            print(f"skipped (missing): {path}", file=sys.stderr)
            continue
        with fits.open(path) as hdul:
            hdu = next(h for h in hdul if h.data is not None and h.data.ndim == 2)
            image, header = hdu.data.astype(hdu.data.dtype.newbyteorder("=")), hdu.header.copy()
        rows = []
        for s in range(a.first_seed, a.first_seed + a.seeds):
            rows += measure(image, header, s, maker, cfg)
            print(name, s, {k: v for k, v in rows[-1].items() if k not in ("lost_xy", "lost_zero_px")}, flush=True)
        results["frames"][name] = rows
    results["seconds"] = time.perf_counter() - t_start
    command = "python benchmarks/injection.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / "results.json").write_text(json.dumps(results, indent=1))
    _report(results, out, command.strip())
    print((out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
