"""Why the SEP engine uses the conv filter: SEP 1.4.1's matched filter with masks.

    .venv/bin/python benchmarks/sep_matched_filter.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import sep

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import make_frame  # noqa: E402


def main():
    img = make_frame(1024, seed=3)[0].astype(np.float64)
    bkg = sep.Background(img)
    sub, rms = img - bkg.back(), bkg.rms()

    def n(**kw):
        return len(sep.extract(sub, 1.5, minarea=5, **kw))

    def rowmask(y, n_px=1024):
        m = np.zeros(img.shape, bool)
        m[y, :n_px] = True
        return m

    scattered = np.zeros(img.shape, bool)
    scattered[::37, ::41] = True
    cases = [
        ("rms array, matched filter, no mask", n(err=rms)),
        ("rms array, matched filter, masked row 500", n(err=rms, mask=rowmask(500))),
        ("rms array, matched filter, masked column 500", n(err=rms, mask=np.ascontiguousarray(rowmask(500).T))),
        ("rms array, matched filter, row 500 masked over 200 px", n(err=rms, mask=rowmask(500, 200))),
        ("rms array, matched filter, row 500 masked over 512 px", n(err=rms, mask=rowmask(500, 512))),
        (f"rms array, matched filter, {int(scattered.sum())} scattered masked px", n(err=rms, mask=scattered)),
        ("rms array, matched filter, row 0 masked", n(err=rms, mask=rowmask(0))),
        ("rms array x1e6 on row 500, no mask", n(err=np.where(rowmask(500), rms * 1e6, rms))),
        ("rms array x1e4 on row 500, no mask", n(err=np.where(rowmask(500), rms * 1e4, rms))),
        ("scalar err, masked row 500", n(err=bkg.globalrms, mask=rowmask(500))),
        ("rms array, conv filter, masked row 500", n(err=rms, mask=rowmask(500), filter_type="conv")),
        ("rms array, matched filter, masked row 500, thresh 3.0", len(sep.extract(sub, 3.0, minarea=5, err=rms,
                                                                                 mask=rowmask(500)))),
    ]
    lines = ["# SEP 1.4.1 matched filter with masked pixels",
             "",
             "`.venv/bin/python benchmarks/sep_matched_filter.py` (1024x1024 synthetic frame, seed 3, "
             "thresh 1.5, minarea 5, default 3x3 kernel)",
             "",
             "| case | detections |", "|---|---|"]
    lines += [f"| {c} | {k} |" for c, k in cases]
    lines += ["", "The extra detections are spread over the whole image and mostly small (5-10 px), "
              "not pieces of objects cut by the line: with an rms array SEP's matched filter changes "
              "the effective threshold of the entire frame once a few hundred masked (or "
              "near-infinite-noise) pixels exist: at thresh 3.0 the masked run gives about what the "
              "unmasked run gives at 1.5, close to the sum(k)/sqrt(sum(k^2)) = 2.7 ratio between a "
              "true matched-filter S/N and SExtractor's convolved threshold, as if SEP switched to "
              "true S/N units for the whole frame. The conv filter (SExtractor's own) and a scalar "
              "err are immune, so maxidetect's engine filters by convolution."]
    text = "\n".join(lines) + "\n"
    out = Path(__file__).resolve().parent / "results" / "sep_matched_filter.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
