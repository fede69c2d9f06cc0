"""Command-line interface: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import sys


def _add_network_options(p) -> None:
    """How the network runs: shared by mask, maps, detect and sex."""
    from maxidetect.network.inference import ENGINES
    from maxidetect.network.normalise import BACKGROUNDS

    p.add_argument("--model", help="model name (see 'maxidetect models')")
    p.add_argument("--tile", type=int, default=None, help="tiles hold at most N*N pixels (default 2048 on ONNX Runtime, 1024 on Keras)")
    p.add_argument("--batch-size", type=int, default=1, help="tiles per forward pass (default 1)")
    p.add_argument("--precision", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="what runs the network (default auto: ONNX Runtime for float32 unless KERAS_BACKEND "
                   "is set; both give the same masks)")
    p.add_argument("--background", choices=BACKGROUNDS, default=None,
                   help="normalisation background maps (default: the model's; maximask for the pretrained "
                   "network; centred avoids its edge sag on small frames)")


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
    _add_network_options(p)
    p.add_argument("--margin", type=int, default=None,
                   help="tile overlap margin in pixels (default 160: stitched == untiled)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("-v", "--verbose", action="store_true", help="print timings per file")
    _add_run_options(p)
    p.set_defaults(func=cmd_mask)


def cmd_mask(args) -> int:
    import numpy as np

    from maxidetect.classes import ClassConfig, parse_class_list
    from maxidetect.files import expand_inputs

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

    from maxidetect.errors import WeightsError
    from maxidetect.network.weights import get_model_info
    from maxidetect.runner import Job

    try:
        get_model_info(args.model)  # unknown model: fail before any work
    except WeightsError as exc:
        print(f"maxidetect: error: {exc}", file=sys.stderr)
        return 2
    options = {k: getattr(args, k) for k in ("model", "tile", "margin", "batch_size", "precision", "engine", "background",
                                             "classes", "config_dir", "no_priors", "no_threshold", "probs", "single_mask",
                                             "track", "track_prior", "track_threshold")}
    job = Job("mask", options, out_dir=args.out_dir, overwrite=args.overwrite)
    return _run_job(job, specs, args)


def _add_run_options(p, reject: bool = False) -> None:
    g = p.add_argument_group("frame quality (MaxiTrack)")
    g.add_argument("--track", action="store_true",
                   help="score tracking errors per frame and record it (MDTRKP, MDTRKV) in the output headers")
    if reject:
        g.add_argument("--reject-tracking", action="store_true",
                       help="skip frames whose tracking-error probability is over --track-threshold")
    g.add_argument("--track-prior", type=float, default=0.05,
                   help="expected fraction of frames with tracking errors (default 0.05)")
    g.add_argument("--track-threshold", type=float, default=0.5, help="tracking-error threshold (default 0.5)")
    g = p.add_argument_group("many files")
    g.add_argument("--workers", type=int, default=1,
                   help="local worker processes, each loading the network once (default 1)")
    g.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on an existing Dask cluster (e.g. tcp://host:8786), one task per file")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar or per-file lines (batch systems)")
    g.add_argument("--summary", metavar="FILE", help="write the run summary (JSON) to FILE")


def _run_job(job, specs, args) -> int:
    """Run ``job`` over ``specs`` per the run options; per-file lines, a
    summary of the failures (file, HDU, reason), JSON summary on request."""
    import os
    import shlex

    from tqdm import tqdm

    from maxidetect.runner import run_files

    quiet = getattr(args, "quiet", False)
    workers = max(1, getattr(args, "workers", 1) or 1)
    client = None
    if getattr(args, "scheduler", None):
        try:
            from dask.distributed import Client

            client = Client(args.scheduler, timeout="20s")
        except (ImportError, OSError) as exc:
            print(f"maxidetect: error: cannot reach the Dask scheduler {args.scheduler}: {exc}", file=sys.stderr)
            return 2
    elif workers > 1:
        job.threads = max(1, (os.cpu_count() or 1) // workers)

    def report(r):
        if quiet and r.status != "failed":
            return
        for w in r.warnings:
            tqdm.write(f"maxidetect: warning: {w}", file=sys.stderr)
        if r.status == "failed":
            tqdm.write(f"maxidetect: failed: {r.reason}", file=sys.stderr)
        elif r.status == "skipped":
            tqdm.write(f"{r.input}: up to date ({', '.join(r.outputs)})")
        elif r.status == "rejected":
            tqdm.write(f"{r.input}: rejected, {r.reason}")
        else:
            msg = f"{r.input} -> {', '.join(r.outputs)}"
            if getattr(args, "verbose", False):
                msg += f" ({r.seconds:.1f} s)"
                for c in r.commands:
                    tqdm.write(f"ran: {c}")
            tqdm.write(msg)
        if job.kind == "maps" and r.status != "failed" and len(r.outputs) == 2:
            from maxidetect.maps.writer import sextractor_args

            tqdm.write("SExtractor arguments: " + shlex.join(sextractor_args(*r.outputs)))

    try:
        summary = run_files(job, specs, workers=workers, client=client,
                            progress=not quiet and len(specs) > 1, on_result=report)
    finally:
        if client is not None:
            client.close()
    info = summary.to_dict()
    if args.summary:
        from pathlib import Path

        from maxidetect.runner import write_json_atomic

        write_json_atomic(Path(args.summary), info)
    if summary.failed:
        print(f"maxidetect: {len(summary.failed)} of {len(specs)} file(s) failed:", file=sys.stderr)
        for r in summary.failed:
            print(f"  {r.input}  HDU {r.hdu or '-'}  {r.reason}", file=sys.stderr)
    if not quiet and len(specs) > 1:
        c = summary.counts()
        rej = f", {c['rejected']} rejected (tracking)" if c["rejected"] else ""
        print(f"{len(specs)} files: {c['done']} done, {c['skipped']} up to date{rej}, {c['failed']} failed in "
              f"{summary.seconds:.1f} s ({info['mpix_per_s']:.2f} MPix/s, {summary.mode}, "
              f"{summary.workers} worker(s))", file=sys.stderr)
    return 1 if summary.failed else 0


def _add_map_options(p, sextractor: bool) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE", help="FITS images (file.fits[N] selects an HDU)")
    p.add_argument("-o", "--out-dir", help="output directory (default: beside each input)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    if sextractor:
        p.add_argument("--no-mask", action="store_true", help="run without maps (the reference run)")
    p.add_argument("--policy", help="per-class map action overrides, e.g. SAT=zero,FR=none "
                   "(actions: zero, flag, none; defaults in the class registry)")
    p.add_argument("--grow", type=int, default=0, help="grow zero-weight regions by N pixels (default 0)")
    p.add_argument("--soft-weights", action="store_true", help="weight 1-p instead of 0/1 outside zeroed pixels")
    p.add_argument("--noise-weights", action="store_true",
                   help="fold (global/local rms)^2, capped at 1, into the weights (fewer noise peaks in "
                   "bright areas, some completeness lost)")
    p.add_argument("--maximask-defaults", action="store_true",
                   help="MaxiMask 1.4.1's priors and thresholds instead of the catalogue defaults")
    p.add_argument("--weight-image", help="your own weight map, multiplied in (its zeros stay zero)")
    p.add_argument("--config-dir", help="directory with MaxiMask classes.flags/.priors/.thresh")
    p.add_argument("--classes", help="comma-separated classes entering the maps (default: all)")
    _add_network_options(p)
    p.add_argument("--verbose", action="store_true", help="print timings and the commands run")


_SEX_EPILOG = (
    "SExtractor arguments (-c FILE, -KEY VALUE) pass through unchanged; maxidetect's own "
    "options start with '--' (or -o)."
)


def _split_argv(argv: list[str], parser: argparse.ArgumentParser) -> tuple[list[str], list[str]]:
    """Separate SExtractor's ``-c FILE`` / ``-KEY VALUE`` pairs from our options."""
    import re

    takes_value = {}
    for action in parser._actions:
        for opt in action.option_strings:
            takes_value[opt] = action.nargs != 0
    ours, theirs = [], []
    i = 0
    while i < len(argv):
        tok = argv[i]
        name = tok.split("=", 1)[0]
        if name in takes_value:
            ours.append(tok)
            if takes_value[name] and "=" not in tok and i + 1 < len(argv):
                ours.append(argv[i + 1])
                i += 1
        elif tok == "-c" or re.match(r"^-[A-Z][A-Z0-9_]*$", tok):
            theirs.append(tok)
            if i + 1 < len(argv):
                theirs.append(argv[i + 1])
                i += 1
        else:
            ours.append(tok)
        i += 1
    return ours, theirs


def _run_maps_engine(args, engine: str) -> int:
    """Shared driver of ``maps``, ``sex`` and ``detect``: settings are
    checked here (before any work), then the runner does the files."""
    from maxidetect.errors import ConfigError, InputError, SExtractorError, WeightsError
    from maxidetect.extract.config import SexConfig, split_sextractor_args
    from maxidetect.files import expand_inputs
    from maxidetect.maps.writer import MapPolicy
    from maxidetect.network.weights import get_model_info
    from maxidetect.runner import Job, class_config

    try:
        cfile, over = split_sextractor_args(args.sex_args)
        SexConfig(cfile, over)
        if engine == "sex":
            from maxidetect.extract.config import find_binary

            find_binary(args.sex_binary)  # fail before the costly masks
        specs = expand_inputs(args.images)
        if not specs:
            raise InputError("no input FITS files found")
        MapPolicy.parse(args.policy, grow=args.grow, soft=args.soft_weights, noise=args.noise_weights)
        if not getattr(args, "no_mask", False):
            get_model_info(args.model)
            class_config(engine, vars(args))
    except (ConfigError, SExtractorError, InputError, WeightsError, OSError, ValueError) as exc:
        print(f"maxidetect: error: {exc}", file=sys.stderr)
        return 2
    keys = ("model", "tile", "batch_size", "precision", "engine", "background", "classes", "config_dir",
            "maximask_defaults", "policy",
            "grow", "soft_weights", "noise_weights", "weight_image", "no_mask", "sex_args", "sex_binary",
            "track", "reject_tracking", "track_prior", "track_threshold")
    options = {k: getattr(args, k, None) for k in keys}
    job = Job(engine, options, out_dir=args.out_dir, overwrite=args.overwrite)
    return _run_job(job, specs, args)


def cmd_maps(args) -> int:
    return _run_maps_engine(args, "maps")


def cmd_sex(args) -> int:
    return _run_maps_engine(args, "sex")


def cmd_detect(args) -> int:
    return _run_maps_engine(args, "detect")


def cmd_simulate(args) -> int:
    from maxidetect.validation.simulate import SimConfig, simulate_frame, write_frame

    try:
        cfg = SimConfig.from_file(args.config) if args.config else SimConfig()
    except (OSError, ValueError) as exc:
        print(f"maxidetect: error: {exc}", file=sys.stderr)
        return 2
    for k in range(args.n):
        seed = args.seed + k
        frame = simulate_frame(seed, cfg, size=args.size)
        try:
            paths = write_frame(frame, args.outdir, f"sim{seed}", overwrite=args.overwrite)
        except (FileExistsError, OSError) as exc:
            print(f"maxidetect: failed: {exc}", file=sys.stderr)
            return 1
        print(f"seed {seed}: {paths['image']} ({len(frame.catalog)} sources), {paths['truth']}, {paths['catalog']}")
    return 0


def cmd_bench(args) -> int:
    import shlex

    from maxidetect.maps.writer import MapPolicy
    from maxidetect.validation.bench import BenchOptions, real_report, run_bench, write_report
    from maxidetect.validation.simulate import SimConfig

    try:
        policy = MapPolicy.parse(args.policy, grow=args.grow, noise=args.noise_weights)
        opts = BenchOptions.quick() if args.quick else BenchOptions()
        if args.frames is not None:
            opts.n_frames = args.frames
        if args.size is not None:
            opts.size = args.size
        if args.seed is not None:
            opts.seed = args.seed
        opts.policy = policy
        opts.peers = args.peers
        opts.engines = tuple(e.strip() for e in args.engines.split(","))
        bad = set(opts.engines) - {"SEP", "SExtractor"}
        if bad:
            raise ValueError(f"unknown engine(s) {sorted(bad)}; use SEP and/or SExtractor")
        if args.sim_config:
            opts.sim_config = SimConfig.from_file(args.sim_config)
    except (OSError, ValueError) as exc:
        print(f"maxidetect: error: {exc}", file=sys.stderr)
        return 2
    command = "maxidetect " + shlex.join(sys.argv[1:]) if sys.argv and "maxidetect" in sys.argv[0] else ""
    if args.real:
        r = real_report(args.real, args.out_dir, policy=policy)
        print(f"real-frame report: {r['report']}")
        return 0
    if args.tracking:
        return _bench_tracking(args, command)
    results = run_bench(opts, work_dir=args.work_dir)
    paths = write_report(results, args.out_dir, command=command or f"maxidetect bench{' --quick' if args.quick else ''}")
    for r in results["summary"]:
        red = r.get("spurious_reduction", float("nan"))
        print(f"{r['strategy']:>12} {r['engine']:<10} spurious {r['n_spurious']:5d} ({-red:+.1%})  "
              f"completeness {r['completeness']:.4f} ({r.get('completeness_change_pp', 0):+.2f} pp)")
    print(f"report: {paths['report']}")
    return 0


def _bench_tracking(args, command: str) -> int:
    import json
    from pathlib import Path

    from maxidetect.network.maxitrack import Tracker
    from maxidetect.validation.tracking import tracking_benchmark

    n = args.frames if args.frames is not None else (3 if args.quick else 8)
    size = args.size if args.size is not None else 800
    seed = args.seed if args.seed is not None else 500
    r = tracking_benchmark(n_frames=n, size=size, seed0=seed, tracker=Tracker(), progress=True)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tracking.json").write_text(json.dumps(r, indent=1))
    lines = ["# MaxiTrack on simulated tracking errors", "",
             f"`{command or 'maxidetect bench --tracking'}`: {n} clean {size}x{size} frames (seeds {seed}..), "
             f"the same frames smeared along a random direction; prior {r['prior']}, threshold {r['threshold']}; "
             f"{r['seconds_per_frame']:.2f} s per frame (scoring only).", "",
             f"Clean frames (sky, sources, cosmic rays, hot/dead pixels): median probability "
             f"{r['clean_median_p']:.3f}, false-positive rate {r['fpr']:.2f}. Clean frames with every simulated "
             f"contaminant (satellite trails, bad columns, diffuse light too): median {r['contaminated_median_p']:.3f}, "
             f"false-positive rate {r['contaminated_fpr']:.2f}.", "",
             "| smear length [px] | AUC | TPR at threshold | median probability |", "|---|---|---|---|"]
    lines += [f"| {x['length']:g} | {x['auc']:.3f} | {x['tpr']:.2f} | {x['median_p']:.3f} |" for x in r["rows"]]
    (out / "tracking.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def cmd_train(args) -> int:
    import json
    from dataclasses import fields

    from maxidetect.training.train import TrainConfig, run_training

    try:
        data = json.loads(open(args.config).read()) if args.config else {}
        known = {f.name for f in fields(TrainConfig)}
        bad = set(data) - known
        if bad:
            raise ValueError(f"{args.config}: unknown training keys {sorted(bad)} (known: {sorted(known)})")
        cfg = TrainConfig(**data)
        if args.steps is not None:
            cfg.steps = args.steps
    except (OSError, ValueError, TypeError) as exc:
        print(f"maxidetect: error: {exc}", file=sys.stderr)
        return 2
    rec = run_training(cfg, args.out)
    print(f"{cfg.steps} steps in {rec['seconds']:.0f} s, loss {rec['loss_first']:.4g} -> {rec['loss_last']:.4g}; "
          f"weights: {args.out}")
    if args.register:
        from maxidetect.classes import CLASSES
        from maxidetect.network.weights import register_model

        props = rec["class_proportions"]
        info = register_model(args.register, args.out, [props[c.abbr] for c in CLASSES],
                              description=f"maxidetect training ({'fine-tuned from ' + cfg.init if cfg.init else 'from scratch'}"
                              f", {cfg.steps} steps)", recipe=rec["config"],
                              background=cfg.background)
        print(f"registered model {info.name} (sha256 {info.sha256[:12]}...); 'maxidetect models' lists it")
    return 0


def _load_for_eval(spec: str):
    """A manifest name, or a .weights.h5 file (any width)."""
    from pathlib import Path

    if not spec.endswith(".weights.h5"):
        return spec
    from maxidetect.network.keras_engine import build_model
    from maxidetect.network.weights import weights_width

    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such weights file")
    model = build_model(width=weights_width(path))
    model.load_weights(str(path))
    return (path.name.removesuffix(".weights.h5"), model)


def cmd_evaluate(args) -> int:
    from pathlib import Path

    from maxidetect.validation.compare_models import (
        GMOS_CR_SLICES,
        HELD_OUT_SEED0,
        evaluate_models,
        write_model_report,
    )

    real = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "real"
    # An empty string skips a real-frame check.
    gmos = real / "astroscrappy_gmos.fits" if args.gmos is None else Path(args.gmos) if args.gmos else None
    crowded = (real / "fitswcs_zpn_ukirt_wfcam.fits" if args.crowded is None
               else Path(args.crowded) if args.crowded else None)
    for what, path in (("--gmos", gmos), ("--crowded", crowded)):
        if path is not None and not path.exists() and (args.gmos if what == "--gmos" else args.crowded):
            print(f"maxidetect: error: {what} {path}: no such file", file=sys.stderr)
            return 2
    gmos = gmos if gmos is not None and gmos.exists() else None
    crowded = crowded if crowded is not None and crowded.exists() else None
    against = [args.against] if args.against and args.against != args.model else []
    try:
        models = [_load_for_eval(m) for m in [args.model] + against]
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"maxidetect: error: {exc}", file=sys.stderr)
        return 2
    reports = evaluate_models(models, n_frames=args.frames, size=args.size, seed0=args.seed,
                              gmos=gmos, crowded=crowded)
    meta = {"n_frames": args.frames, "size": args.size, "seed0": args.seed, "gmos_cr_slices": str(GMOS_CR_SLICES),
            "command": "maxidetect " + " ".join(sys.argv[1:]) if sys.argv else "", "held_out_from": HELD_OUT_SEED0}
    report = write_model_report(reports, args.out_dir, purity=args.purity, meta=meta)
    for r in reports:
        s = r.summary(args.purity)
        print(f"{r.name}: " + " ".join(f"{k} {v['auc']:.3f}" for k, v in s.items()))
    print(f"report: {report}")
    return 0


def cmd_track(args) -> int:
    from tqdm import tqdm

    from maxidetect.errors import InputError
    from maxidetect.files import expand_inputs
    from maxidetect.network.maxitrack import Tracker, write_table

    try:
        specs = expand_inputs(args.paths)
        if not specs:
            raise InputError("no input FITS files found")
        tracker = Tracker(prior=None if args.no_prior else args.prior, threshold=args.threshold,
                          max_tiles=args.max_tiles or None)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"maxidetect: error: {exc}", file=sys.stderr)
        return 2
    rows, failures = [], []
    for spec in tqdm(specs, unit="file", disable=None if len(specs) > 1 and not args.quiet else True,
                     file=sys.stderr):
        try:
            got = tracker.score_file(spec)
        except (InputError, OSError, ValueError) as exc:
            failures.append(str(exc))
            tqdm.write(f"maxidetect: failed: {exc}", file=sys.stderr)
            continue
        rows += got
        for r in got:
            tqdm.write(f"{r.path}\t{r.hdu}\t{r.probability:.4f}\t{r.verdict}")
    if args.table:
        write_table(rows, args.table)
    if failures:
        print(f"maxidetect: {len(failures)} of {len(specs)} file(s) failed", file=sys.stderr)
    return 1 if failures else 0


def cmd_models(args) -> int:
    from maxidetect.network.weights import load_manifest

    for name in load_manifest():
        print(name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from maxidetect import __version__

    parser = argparse.ArgumentParser(
        prog="maxidetect", description="Contaminant masks for cleaner source catalogues."
    )
    parser.add_argument("--version", action="version", version=f"maxidetect {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_mask_parser(sub)
    p = sub.add_parser("models", help="list known models, the default first")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("track", help="MaxiTrack: probability that each frame suffers from tracking errors",
                       description="One line per image HDU and one per frame (HDU 'all'): path, HDU, "
                       "probability, verdict (ok or trailed), tab-separated.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="FITS files, directories or .list files")
    p.add_argument("--prior", type=float, default=0.05,
                   help="expected fraction of frames with tracking errors (default 0.05, MaxiMask's)")
    p.add_argument("--no-prior", action="store_true", help="keep the network's balanced training prior")
    p.add_argument("--threshold", type=float, default=0.5, help="probability above which a frame is trailed")
    p.add_argument("--max-tiles", type=int, default=16, help="400x400 tiles scored per HDU (0: all; default 16)")
    p.add_argument("--table", metavar="FILE", help="also write the table (.csv, else a FITS table)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_track)
    p = sub.add_parser("simulate", help="simulate CCD frames with per-class truth masks and a truth catalogue",
                       description="Write simSEED.fits, simSEED.truth.fits (bit mask + per-class planes) and "
                       "simSEED.truth.cat.fits per frame; the same seed gives the same frame.")
    p.add_argument("outdir", metavar="OUTDIR")
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--size", type=int, default=2048, help="frame side in pixels (default 2048)")
    p.add_argument("-n", type=int, default=1, help="number of frames (seeds SEED, SEED+1, ...)")
    p.add_argument("--config", help="JSON file overriding simulation parameters (see maxidetect.validation.simulate.SimConfig)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_simulate)
    p = sub.add_parser("bench", help="completeness/contamination with and without masks on simulated truth",
                       description="Simulate frames, run detection with each strategy and engine, cross-match to "
                       "truth; writes report.md, results.json and PNG plots.")
    p.add_argument("--quick", action="store_true", help="one 1024x1024 frame (CI, demos)")
    p.add_argument("--frames", type=int, help="number of frames (default 3)")
    p.add_argument("--size", type=int, help="frame side (default 2048)")
    p.add_argument("--seed", type=int, help="first seed (default 100)")
    p.add_argument("--engines", default="SEP,SExtractor", help="SEP,SExtractor (SExtractor skipped if missing)")
    p.add_argument("--peers", action="store_true", help="also run MaxiMask's own CLI (slow)")
    p.add_argument("--policy", help="per-class map action overrides, e.g. SAT=zero")
    p.add_argument("--grow", type=int, default=0, help="grow zero-weight regions by N pixels")
    p.add_argument("--noise-weights", action="store_true", help="fold the local noise into the weights")
    p.add_argument("--sim-config", help="JSON simulation overrides")
    p.add_argument("--real", nargs="+", metavar="FITS", help="report on real frames without truth instead")
    p.add_argument("--tracking", action="store_true",
                   help="MaxiTrack ROC/AUC on simulated tracking errors instead (tracking.md/json)")
    p.add_argument("-o", "--out-dir", default="bench_output", help="report directory (default bench_output)")
    p.add_argument("--work-dir", help="keep the simulated frames, maps and catalogues here")
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("train", help="train or fine-tune the network on simulated patches (weighted BCE, Adam)",
                       description="Reads a JSON of maxidetect.training.train.TrainConfig keys (init, width, trainable, patch, "
                       "frame_size, batch, steps, learning_rate, l2, seed, background); writes OUT.weights.h5 and OUT.weights.json.")
    p.add_argument("config", nargs="?", help="JSON training configuration (default: TrainConfig defaults)")
    p.add_argument("--out", default="trained.weights.h5", help="output weights (.weights.h5)")
    p.add_argument("--steps", type=int, help="override the number of steps")
    p.add_argument("--register", metavar="NAME", help="add the result to weights/manifest.json as model NAME")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("evaluate", help="per-class ROC/AUC of a model vs another on held-out simulated and real data",
                       description="Scores MODEL (a manifest name or a .weights.h5 file) and --against on the same "
                       "held-out simulated frames (seeds from 9000000, never used in training), the labelled "
                       "cosmic rays of the GMOS frame and stars called CR/HP on the crowded UKIRT frame; writes "
                       "report.md, report.json and roc.png.")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--against", default="maximask", help="model to compare with (default maximask; '' for none)")
    p.add_argument("--frames", type=int, default=4, help="held-out simulated frames (default 4)")
    p.add_argument("--size", type=int, default=1024, help="frame side (default 1024)")
    p.add_argument("--seed", type=int, default=9_000_000, help="first held-out seed (default 9000000)")
    p.add_argument("--purity", type=float, default=0.9, help="purity for the recomputed thresholds (default 0.9)")
    p.add_argument("--gmos", help="GMOS frame with the labelled cosmic rays (default: shared data)")
    p.add_argument("--crowded", help="crowded frame for the stars-as-defects check (default: shared UKIRT frame)")
    p.add_argument("-o", "--out-dir", default="evaluation", help="report directory (default evaluation)")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("maps", help="write SExtractor WEIGHT_IMAGE/FLAG_IMAGE maps and print the arguments",
                       description="Write NAME.weight.fits and NAME.flag.fits (layout of the image) and print "
                       "the SExtractor arguments that use them.")
    _add_map_options(p, sextractor=False)
    _add_run_options(p)
    p.set_defaults(func=cmd_maps)
    p = sub.add_parser("sex", help="run the real SExtractor with maxidetect's maps",
                       description="Compute masks and maps, then run SExtractor (source-extractor or sex) "
                       "with -WEIGHT_TYPE MAP_WEIGHT -FLAG_IMAGE ... -INTERP_TYPE NONE added.",
                       epilog=_SEX_EPILOG)
    _add_map_options(p, sextractor=True)
    _add_run_options(p, reject=True)
    p.add_argument("--sex-binary", help="SExtractor executable (default: source-extractor or sex on PATH)")
    p.set_defaults(func=cmd_sex)
    p = sub.add_parser("detect", help="detect sources in process with the SEP engine",
                       description="SExtractor's steps in process (SEP): reads the same -c FILE and -KEY VALUE.",
                       epilog=_SEX_EPILOG)
    _add_map_options(p, sextractor=True)
    _add_run_options(p, reject=True)
    p.set_defaults(func=cmd_detect)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    sex_args: list[str] = []
    if argv and argv[0] in ("sex", "detect", "maps"):
        sub = parser._subparsers._group_actions[0].choices[argv[0]]
        ours, sex_args = _split_argv(argv[1:], sub)
        argv = [argv[0]] + ours
    args = parser.parse_args(argv)
    args.sex_args = sex_args
    if args.command == "maps" and sex_args:
        parser.error("'maps' takes no SExtractor arguments")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
