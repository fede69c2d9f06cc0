"""Command-line interface: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import sys
import time
import warnings


def _add_mask_parser(sub):
    p = sub.add_parser(
        "mask",
        help="compute contaminant masks for FITS images",
        description="Compute MaxiMask contaminant masks; writes NAME.masks.fits per input.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="FITS files (file.fits[N] selects an HDU), directories or .list files")
    p.add_argument("-o", "--out-dir", help="output directory (default: beside each input)")
    p.add_argument("--probs", action="store_true", help="write float32 probabilities instead of masks")
    p.add_argument("--no-priors", action="store_true", help="skip Bayesian prior modification")
    p.add_argument("--no-threshold", action="store_true", help="write probabilities, not thresholded masks")
    p.add_argument("--single-mask", action="store_true",
                   help="write one int32 image: OR of the flagged classes' bit codes")
    p.add_argument("--config-dir", help="directory with MaxiMask classes.flags/.priors/.thresh")
    p.add_argument("--classes", help="comma-separated classes to keep, e.g. CR,HP,TRL (default: all)")
    p.add_argument("--model", help="model name (see 'maxidetect models')")
    p.add_argument("--batch-size", type=int, default=1, help="tiles per forward pass (default 1)")
    p.add_argument("--tile", type=int, default=None, help="max tile side in pixels (default 1024)")
    p.add_argument("--margin", type=int, default=None,
                   help="tile overlap margin in pixels (default 160: stitched == untiled)")
    p.add_argument("--precision", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("-v", "--verbose", action="store_true", help="print timings per file")
    p.set_defaults(func=cmd_mask)


def cmd_mask(args) -> int:
    import numpy as np

    from .classes import ClassConfig, parse_class_list
    from .inference import DEFAULT_MARGIN, DEFAULT_TILE
    from .io import InputError, expand_inputs

    try:
        config = ClassConfig.from_dir(args.config_dir) if args.config_dir else ClassConfig.default()
        if args.classes:
            config.selected = config.selected & parse_class_list(args.classes)
        config.validate()
        specs = expand_inputs(args.paths)
    except (OSError, ValueError) as exc:
        print(f"maxidetect: error: {exc}", file=sys.stderr)
        return 2
    if args.single_mask and args.no_threshold:
        print("maxidetect: error: --single-mask needs thresholds (drop --no-threshold)", file=sys.stderr)
        return 2
    if not specs:
        print("maxidetect: error: no input FITS files found", file=sys.stderr)
        return 2
    if not np.any(config.selected):
        print("maxidetect: error: no class selected", file=sys.stderr)
        return 2

    from .masks import MaskMaker, MaxidetectWarning
    from .weights import WeightsError

    try:
        maker = MaskMaker(
            model=args.model,
            config=config,
            apply_priors=not args.no_priors,
            apply_threshold=not args.no_threshold,
            tile=args.tile or DEFAULT_TILE,
            margin=DEFAULT_MARGIN if args.margin is None else args.margin,
            batch_size=args.batch_size,
            precision=args.precision,
        )
    except (WeightsError, ValueError) as exc:
        print(f"maxidetect: error: {exc}", file=sys.stderr)
        return 2

    from tqdm import tqdm

    failures = 0
    bar = tqdm(specs, unit="file", disable=None if len(specs) > 1 else True, file=sys.stderr)
    for spec in bar:
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MaxidetectWarning)
            try:
                out = maker.process_file(
                    spec, out_dir=args.out_dir, overwrite=args.overwrite,
                    probs=args.probs, single=args.single_mask,
                )
            except (InputError, FileExistsError, OSError, ValueError) as exc:
                failures += 1
                tqdm.write(f"maxidetect: failed: {exc}", file=sys.stderr)
                continue
        for w in caught:
            tqdm.write(f"maxidetect: warning: {w.message}", file=sys.stderr)
        msg = f"{spec} -> {out}"
        if args.verbose:
            msg += f" ({time.perf_counter() - t0:.1f} s)"
        tqdm.write(msg)
    if failures:
        print(f"maxidetect: {failures} of {len(specs)} file(s) failed", file=sys.stderr)
    return 1 if failures else 0


def cmd_models(args) -> int:
    from .weights import load_manifest

    for name in load_manifest():
        print(name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="maxidetect", description="Contaminant masks for cleaner source catalogues."
    )
    parser.add_argument("--version", action="version", version=f"maxidetect {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_mask_parser(sub)
    p = sub.add_parser("models", help="list known models, the default first")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
