"""Trail recall over the range the maps issue names: peak S/N per pixel,
width, length, any angle, ending inside the frame or crossing it.

Frames from the second generator (``benchmarks/independent.py``: stars,
galaxies, cosmic rays, hot pixels, a hot column), each with one trail forced
onto it; its angle and position are drawn per frame. A trail of FWHM 2 px
lies on an undersampled frame (PSF FWHM 1.5-2.1 px), wider ones on the
default frames (2.5-4.5 px): no trail is sharper than the PSF. Per trail:
the share of its pixels (injected signal above 0.5 sigma, as the truth of
both generators) given zero weight by the network's maps alone and by the
default (fused) maps, and whether a line was fitted to it. Trail-free frames
give the false trails.

    .venv/bin/python benchmarks/trail_sweep.py [--seeds 2] [--size 1024] [--out DIR] [--cache DIR]

``--cache DIR`` keeps each frame's network probabilities (``sw_SEED_p.npy``; 56 MB each at 1024^2)
and reuses them: a rerun after a change to the maps costs the fusion only (~15 min, not ~35).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from maxidetect.classes import CLASSES
from maxidetect.maps.policy import MapPolicy
from maxidetect.maps.writer import maps_from_masks
from maxidetect.masks.maker import MaskMaker

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from independent import make_frame  # noqa: E402

TRL = next(c.bit for c in CLASSES if c.abbr == "TRL")
SNRS = (1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
FWHMS = (2.0, 4.0, 7.0, 10.0)
LENGTHS = (100, 250, None)  # None: through the frame
#: A trail counts as masked when this share of its pixels has zero weight.
FOUND = 0.9


def run(seeds: int, size: int, seed0: int, cache: Path | None = None) -> dict:
    maker = MaskMaker(for_maps=True)
    sel = [int(i) for i in maker.selected]
    thresholds = maker.config.thresholds[sel][:, None, None]
    policy = MapPolicy()
    rows = []
    cases = [(s, w, n) for s in SNRS for w in FWHMS for n in LENGTHS] + [None]
    k = 0
    for case in cases:
        for _ in range(seeds):
            seed = seed0 + k
            k += 1
            if case is None:
                image, hdr, _, truth, meta = make_frame(seed, size, "default", trail=False)
            else:
                snr, fwhm, length = case
                image, hdr, _, truth, meta = make_frame(seed, size, "undersampled" if fwhm <= 2 else "default",
                                                        trail={"snr": snr, "fwhm": fwhm, "length": length})
            t0 = time.perf_counter()
            cached = cache / f"sw_{seed}_p.npy" if cache is not None else None
            if cached is not None and cached.exists():
                probs = np.load(cached)
            else:
                probs = maker.probabilities(image)
                if cached is not None:
                    np.save(cached, probs)
            masks = probs > thresholds
            net = maps_from_masks(masks, maker, replace(policy, fuse=False))
            fused = maps_from_masks(masks, maker, policy, image=image, header=hdr, probs=probs)
            del probs
            on = (truth & TRL) != 0
            row = {"seed": seed, "psf_fwhm": meta["fwhm"], "angle": meta["trail_deg"],
                   "seconds": time.perf_counter() - t0,
                   "trails_fitted": len(fused.report.trails),
                   "trl_zero_px": int(((fused.weight == 0) & ((fused.flag & TRL) != 0)).sum())}
            if case is not None:
                row.update(snr=snr, fwhm=fwhm, length=length, n_px=int(on.sum()),
                           network=float((net.weight[on] == 0).mean()), maps=float((fused.weight[on] == 0).mean()))
                print(f"S/N {snr:g} FWHM {fwhm:g} length {length or 'frame'} seed {seed}: network "
                      f"{row['network']:.3f} maps {row['maps']:.3f} fitted {row['trails_fitted']} "
                      f"(angle {row['angle']:.1f})", flush=True)
            else:
                print(f"no trail, seed {seed}: fitted {row['trails_fitted']}, TRL zero px {row['trl_zero_px']}",
                      flush=True)
            rows.append(row)
    return {"size": size, "seeds": seeds, "seed0": seed0, "found": FOUND, "rows": rows}


def report(result: dict, command: str) -> str:
    rows = [r for r in result["rows"] if "snr" in r]
    null = [r for r in result["rows"] if "snr" not in r]
    lines = ["# Trail recall over S/N, width and length (second generator)", "",
             f"`{command}` ({os.cpu_count()} CPU cores); {result['size']}^2 frames, {result['seeds']} per case, "
             "angle and position drawn per frame. Each cell: mean share of the trail's pixels (signal > 0.5 "
             f"sigma) with zero weight, default maps (network's maps alone); in brackets the trails with >= "
             f"{result['found']:.0%} of their pixels zeroed, of the frames.", ""]
    for length in LENGTHS:
        name = "through the frame" if length is None else f"{length} px, ending inside the frame"
        lines += [f"## Length {name}", "", "| peak S/N per pixel | " + " | ".join(f"FWHM {w:g} px" for w in FWHMS)
                  + " |", "|---" * (len(FWHMS) + 1) + "|"]
        for snr in SNRS:
            cells = []
            for w in FWHMS:
                rs = [r for r in rows if r["snr"] == snr and r["fwhm"] == w and r["length"] == length]
                m, n = np.mean([r["maps"] for r in rs]), np.mean([r["network"] for r in rs])
                found = sum(r["maps"] >= result["found"] for r in rs)
                cells.append(f"{m:.2f} ({n:.2f}) [{found}/{len(rs)}]")
            lines.append(f"| {snr:g} | " + " | ".join(cells) + " |")
        lines.append("")
    found = [r for r in rows if r["maps"] >= result["found"]]
    by_net = [r for r in rows if r["network"] >= result["found"]]
    lines += [f"Trails with >= {result['found']:.0%} of their pixels zeroed: {len(found)} of {len(rows)} by the "
              f"default maps, {len(by_net)} by the network's maps alone; "
              + ", ".join(f"{'across the frame' if n is None else f'{n} px'} "
                          f"{sum(r['length'] == n for r in found)}/{sum(r['length'] == n for r in rows)}"
                          for n in LENGTHS) + ".", ""]
    fitted = sum(r["trails_fitted"] for r in null)
    lines += [f"Trail-free frames: {fitted} trails fitted on {len(null)} frames, "
              f"{sum(r['trl_zero_px'] for r in null)} pixels zeroed as trail.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2, help="frames per case")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=7000)
    ap.add_argument("--out", default=str(HERE / "results" / "trail_sweep"))
    ap.add_argument("--cache", default=None, help="folder for the network's probabilities, reused when there")
    args = ap.parse_args(argv)
    cache = Path(args.cache) if args.cache else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    result = run(args.seeds, args.size, args.seed, cache)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1, default=float))
    command = ".venv/bin/python benchmarks/trail_sweep.py " + " ".join(sys.argv[1:] if argv is None else argv)
    (out / "report.md").write_text(report(result, command.strip()))
    print(f"wrote {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
