"""Where models call some classes on one real frame: raw probabilities (no priors) above 0.5
drawn as contours over the image, one panel per model.

    python benchmarks/class_overlay.py FRAME.fits MODEL [MODEL ...] [--classes BBG,TRL] [--out overlay.png]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

COLOURS = ("r", "c", "y", "m", "g")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("frame")
    ap.add_argument("models", nargs="+")
    ap.add_argument("--classes", default="BBG,TRL")
    ap.add_argument("--out", default="overlay.png")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from maxidetect.classes import class_index
    from maxidetect.files import is_image_hdu, open_fits
    from maxidetect.network.inference import Predictor
    from maxidetect.network.normalise import normalise

    with open_fits(args.frame) as h:
        data = np.asarray(next(x for x in h if is_image_hdu(x) and x.data is not None and x.data.ndim == 2).data,
                          np.float32)
    classes = args.classes.split(",")
    sky = np.nanmedian(data)
    noise = 1.4826 * np.nanmedian(np.abs(data - sky))
    shown = np.arcsinh((data - sky) / max(noise, 1e-6))
    fig, axes = plt.subplots(1, len(args.models) + 1, figsize=(6 * (len(args.models) + 1), 6), squeeze=False)
    axes[0, 0].imshow(shown, origin="lower", cmap="gray", vmin=-2, vmax=6)
    axes[0, 0].set_title(args.frame.rsplit("/", 1)[-1])
    for ax, name in zip(axes[0, 1:], args.models, strict=True):
        pred = Predictor(name, engine="onnxruntime")
        probs = pred.predict(normalise(data, **pred.normalisation))
        ax.imshow(shown, origin="lower", cmap="gray", vmin=-2, vmax=6)
        parts = []
        for c, colour in zip(classes, COLOURS, strict=False):
            hit = probs[class_index(c)] > 0.5
            if hit.any():
                ax.contour(hit, levels=[0.5], colors=colour, linewidths=0.5)
            parts.append(f"{c} ({colour}) {100 * hit.mean():.2f}%")
            print(f"{name}: {c} p > 0.5 on {100 * hit.mean():.2f}% of the pixels")
        ax.set_title(f"{name}: " + ", ".join(parts), fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)
    return 0


if __name__ == "__main__":
    sys.exit(main())
