"""Trails the sweep does not hold: several at once, real profiles, aircraft.

``benchmarks/trail_sweep.py`` puts one Gaussian trail on each frame. Here
second-generator frames (``benchmarks/independent.py``, no trail of their
own) get constructed cases: a satellite train (parallel trails 12-40 px
apart), two trails crossing at a shallow angle, bright trails with a real
PSF's power-law wings (a Moffat's line profile), a broad meteor, two faint
trails side by side, an aircraft (two wing-light streaks with strobe
flashes on them), two bright trails crossing at right angles, two bright
ones 10 px apart, a very bright one (S/N 860), a defocused one 1 deg off
the rows, three broad ones (the frames' cosmic rays on their bands) and
three exactly along the pixel grid (a geostationary satellite's). For
each: the share of each trail's pixels (signal above 0.5 sigma) given zero
weight by the default maps, the trails fitted, and, with SEP, the detections
that match no true source (spurious, and those on a trail, cosmic-ray hits on
it included) and the true sources of S/N > 20 found without the maps and lost
with them.

    .venv/bin/python benchmarks/trail_cases.py [--size 1024] [--out DIR] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy import ndimage

from maxidetect.classes import CLASSES
from maxidetect.extract.config import SexConfig
from maxidetect.files import write_hdulist_atomic
from maxidetect.maps.frame import pixel_noise
from maxidetect.maps.policy import MapPolicy
from maxidetect.maps.writer import maps_from_masks
from maxidetect.masks.maker import MaskMaker
from maxidetect.validation.bench import _write_maps, run_engine
from maxidetect.validation.scoring import score_catalog

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from independent import make_frame  # noqa: E402

TRL = next(c.bit for c in CLASSES if c.abbr == "TRL")

#: Each case: (frame seed, trails). A trail: (angle [deg], offset of its line from the frame's
#: centre [px], FWHM or Moffat core [px], peak S/N per pixel, profile, (t0, t1) along it or None).
#: Profiles: "gauss"; "moffat-P" the line profile (1 + (d / core)^2)^-P of a PSF with wings.
CASES = {
    "train of seven, 22-40 px apart": (900, [(28.0, o, 3.0, p, "gauss", None) for o, p in
                                             zip(np.cumsum([0, 25, 30, 22, 40, 28, 35]) - 90,
                                                 [12, 6, 9, 4, 8, 3, 10], strict=True)]),
    "train of six, 12 px apart": (901, [(126.0, -30 + 12 * k, 3.0, 6.0, "gauss", None) for k in range(6)]),
    "two crossing at 3 deg": (902, [(40.0, 0.0, 3.0, 6.0, "gauss", None), (43.0, 0.0, 3.0, 4.0, "gauss", None)]),
    "two crossing at 8 deg": (903, [(115.0, 0.0, 3.0, 5.0, "gauss", None), (123.0, 0.0, 3.0, 5.0, "gauss", None)]),
    "two faint side by side, 30 px apart": (904, [(52.0, -15.0, 4.0, 2.0, "gauss", None),
                                                  (52.0, 15.0, 4.0, 2.0, "gauss", None)]),
    "bright, Moffat wings, S/N 40": (905, [(74.0, 60.0, 2.5, 40.0, "moffat-1.5", None)]),
    "bright, Moffat wings, S/N 100": (906, [(46.0, -40.0, 2.0, 100.0, "moffat-2.0", None)]),
    "bright, Moffat wings, S/N 400": (907, [(143.0, 20.0, 2.0, 400.0, "moffat-1.6", (-400.0, 300.0))]),
    "meteor, FWHM 14 px": (908, [(57.0, 0.0, 14.0, 4.0, "gauss", (-500.0, 400.0))]),
    "aircraft": (909, [(69.0, -12.0, 3.0, 4.0, "gauss", None), (69.0, 13.0, 3.0, 3.0, "gauss", None),
                       (69.0, -12.0, 2.8, 250.0, "strobe", None), (69.0, 13.0, 2.8, 250.0, "strobe", None)]),
    "two bright crossing at 90 deg, S/N 100 and 80": (910, [(30.0, 0.0, 2.5, 100.0, "moffat-2.0", None),
                                                            (120.0, 0.0, 2.5, 80.0, "moffat-2.0", None)]),
    "two bright 10 px apart, S/N 60 and 40": (911, [(61.75, 0.0, 2.5, 60.0, "moffat-2.0", None),
                                                    (61.75, 10.0, 2.5, 40.0, "moffat-2.0", None)]),
    "very bright, S/N 860, FWHM 7.8 px": (912, [(105.0, 30.0, 7.8, 860.0, "gauss", None)]),
    "defocused (FWHM 9 px), 1 deg off the rows, S/N 20": (913, [(89.0, 0.0, 9.0, 20.0, "gauss", None)]),
    "broad (FWHM 9 px) at 30 deg, S/N 20": (940, [(30.0, 17.0, 9.0, 20.0, "gauss", None)]),
    "broad (FWHM 12 px) at 47 deg, S/N 10": (944, [(47.0, 17.0, 12.0, 10.0, "gauss", None)]),
    "broad (FWHM 9 px), 0.5 deg off the rows, S/N 20": (942, [(89.5, 17.0, 9.0, 20.0, "gauss", None)]),
    "along a column, S/N 5": (915, [(0.0, 20.3, 3.0, 5.0, "gauss", None)]),
    "along a column between two, S/N 8": (916, [(0.0, -60.5, 3.0, 8.0, "gauss", None)]),
    "along a row, Moffat wings, S/N 200": (917, [(90.0, -40.0, 2.5, 200.0, "moffat-2.0", None)]),
}


def add_trails(image: np.ndarray, trails, noise: float) -> list[np.ndarray]:
    """Adds each trail to ``image`` (in place); its pixels above 0.5 sigma, one bool map each."""
    n = image.shape[0]
    yy, xx = np.mgrid[:n, :n].astype(np.float64)
    out = []
    for angle, offset, width, peak, profile, span in trails:
        a = np.radians(angle)
        d = (xx - n / 2) * np.cos(a) + (yy - n / 2) * np.sin(a) - offset
        t = -(xx - n / 2) * np.sin(a) + (yy - n / 2) * np.cos(a)
        if profile == "gauss":
            light = np.exp(-0.5 * (d / (width / 2.3548)) ** 2)
        elif profile.startswith("moffat-"):
            light = (1 + (d / width) ** 2) ** -float(profile.split("-")[1])
        else:  # strobe flashes: round spots every 70 px along the line
            light = np.exp(-0.5 * (np.hypot(d, (t + 35) % 70 - 35) / (width / 2.3548)) ** 2)
        if span is not None:
            light *= (t >= span[0]) & (t <= span[1])
        image += (peak * noise * light).astype(image.dtype)
        out.append(peak * light > 0.5)
    return out


def run(size: int, work: Path) -> dict:
    maker = MaskMaker(for_maps=True)
    sel = [int(i) for i in maker.selected]
    thresholds = maker.config.thresholds[sel][:, None, None]
    cfg = SexConfig()
    rows = []
    for name, (seed, trails) in CASES.items():
        image, hdr, cat, truth, meta = make_frame(seed, size, "default", trail=False)
        noise = pixel_noise(image)  # from neighbours' differences: no sky gradient in it
        pixels = add_trails(image, trails, noise)
        for p in pixels:
            truth[p] |= TRL
        path = work / f"case_{seed}.fits"
        write_hdulist_atomic(fits.HDUList([fits.PrimaryHDU(image, hdr)]), path, overwrite=True)
        t0 = time.perf_counter()
        probs = maker.probabilities(image)
        fused = maps_from_masks(probs > thresholds, maker, MapPolicy(), image=image, header=hdr, probs=probs)
        del probs
        seconds = time.perf_counter() - t0
        maps = _write_maps(work / f"case_{seed}.maxidetect.fits", fused, hdr)
        scores, matched, on_trail = {}, {}, {}
        on_any = ndimage.maximum_filter(np.logical_or.reduce(pixels), size=3)  # the scorer's 3x3
        for strat, m in (("none", None), ("maxidetect", maps)):
            c = run_engine("SEP", path, cfg, m, work / f"case_{seed}_{strat}")
            sc = score_catalog(c, cat, truth, meta["fwhm"])
            matched[strat] = set(sc.pop("matched_true").tolist())
            sc.pop("matched_flux")
            scores[strat] = sc
            spur = ~sc["matched_det"]  # a cosmic ray's hit on a trail counts as on it
            sx = np.clip(np.round(np.asarray(c["X_IMAGE"])[spur] - 1).astype(int), 0, size - 1)
            sy = np.clip(np.round(np.asarray(c["Y_IMAGE"])[spur] - 1).astype(int), 0, size - 1)
            on_trail[strat] = int(on_any[sy, sx].sum())
        snr = np.asarray(cat["SNR"])
        lost = sorted(i for i in matched["none"] - matched["maxidetect"] if snr[i] > 20)
        row = {"case": name, "seed": seed, "seconds": seconds, "trails_fitted": len(fused.report.trails),
               "zeroed": [float((fused.weight[p] == 0).mean()) for p in pixels],
               "spurious": {s: int(scores[s]["n_spurious"]) for s in scores},
               "spurious_trl": on_trail,
               "lost_snr20": len(lost)}
        print(f"{name}: zeroed {', '.join(f'{z:.3f}' for z in row['zeroed'])}; fitted {row['trails_fitted']}; "
              f"spurious {row['spurious']['none']} -> {row['spurious']['maxidetect']} (on trails "
              f"{row['spurious_trl']['none']} -> {row['spurious_trl']['maxidetect']}); lost {len(lost)}", flush=True)
        rows.append(row)
    return {"size": size, "rows": rows}


def report(result: dict, command: str) -> str:
    lines = ["# Trails the sweep does not hold (second generator's frames, constructed trails)", "",
             f"`{command}` ({os.cpu_count()} CPU cores); {result['size']}^2 frames of "
             "`benchmarks/independent.py` (default variant, no trail of their own), SEP. *Zeroed*: per trail, "
             "the share of its pixels (signal > 0.5 sigma) with zero weight in the default maps (the aircraft's "
             "third and fourth: its strobe flashes). *Spurious*: detections matching no true source, without the "
             "maps -> with them (of them on a trail: centred within 1 px of a trail's pixels, cosmic-ray hits on it "
             "included). *Lost*: true sources of S/N > 20 found without the maps, "
             "not with them.", "",
             "| case | zeroed | trails fitted | spurious | of them on a trail | lost S/N > 20 |", "|---" * 6 + "|"]
    for r in result["rows"]:
        lines.append(f"| {r['case']} | {', '.join(f'{z:.2f}' for z in r['zeroed'])} | {r['trails_fitted']} | "
                     f"{r['spurious']['none']} -> {r['spurious']['maxidetect']} | "
                     f"{r['spurious_trl']['none']} -> {r['spurious_trl']['maxidetect']} | {r['lost_snr20']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--out", default=str(HERE / "results" / "trail_cases"))
    ap.add_argument("--work", default=None, help="keeps the frames and catalogues (default: a temporary folder)")
    a = ap.parse_args(argv)
    import tempfile

    tmp = None if a.work else tempfile.TemporaryDirectory(prefix="maxidetect-trails-")
    work = Path(a.work or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    result = run(a.size, work)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/trail_cases.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / "report.md").write_text(report(result, command.strip()))
    print(report(result, command.strip()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
