"""Command-line interface: a thin layer over the Python API.

The options of ``mask``, ``maps``, ``detect`` and ``sex`` come from
:mod:`maxidetect.settings`; this module parses, builds one
:class:`~maxidetect.pipeline.Job`, and reports: one line per file (stdout),
one line per failure and warning (stderr), a final summary. Exit status:
0 all done, 1 some file failed, 2 nothing done (bad options or settings).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import sys
import time
import warnings
from dataclasses import fields
from pathlib import Path

from maxidetect.errors import MaxidetectError, MaxidetectWarning
from maxidetect.settings import (
    SETTINGS,
    ExtractSettings,
    add_options,
    from_args,
    nonnegative_int,
    open_probability,
    positive_int,
    probability,
)
from maxidetect.version import __version__

PIPELINE_COMMANDS = ("mask", "maps", "detect", "sex")
_SEX_EPILOG = ("SExtractor arguments (-c FILE, -KEY VALUE) pass through unchanged (checked against SExtractor's "
               "keywords first); maxidetect's own options start with '--' (or -o, -q, -v).")


def _type(check):
    def convert(text):
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = check.__name__.replace("_", " ")
    return convert


def _error(msg) -> int:
    print(f"maxidetect: error: {msg}", file=sys.stderr)
    return 2


# -- progress ----------------------------------------------------------------------
class Progress:
    """Files done (and, for one big file, its tiles): a bar on a terminal,
    a plain line at most every ``every`` seconds otherwise, nothing with -q."""

    def __init__(self, n_files: int, quiet: bool = False, every: float = 30.0, stream=None):
        self.stream = stream or sys.stderr
        self.n, self.done, self.failed = n_files, 0, 0
        self.quiet, self.every = quiet, every
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = self.last = time.monotonic()
        self.mpix = 0.0
        self.bar = None
        if not quiet and self.tty:
            from tqdm import tqdm

            total, unit = (n_files, "file") if n_files > 1 else (100, "%")
            self.bar = tqdm(total=total, unit=unit, file=self.stream, dynamic_ncols=True, leave=False)

    def write(self, line: str, err: bool = False) -> None:
        stream = sys.stderr if err else sys.stdout
        if self.bar is not None:
            self.bar.write(line, file=stream)
        else:
            print(line, file=stream, flush=True)

    def fraction(self, x: float) -> None:
        """Within one file (serial runs): the fraction of its pixels done."""
        if self.quiet or self.n > 1:
            return
        if self.bar is not None:
            self.bar.n = int(100 * x)
            self.bar.refresh()
        elif time.monotonic() - self.last > self.every:
            self.last = time.monotonic()
            print(f"maxidetect: {100 * x:.0f}% of the file", file=self.stream, flush=True)

    def file_done(self, r) -> None:
        self.done += 1
        self.failed += r.status == "failed"
        self.mpix += r.mpix if r.status == "done" else 0.0
        if self.quiet or self.n == 1:
            if self.bar is not None:
                self.bar.n = 100
                self.bar.refresh()
            return
        rate = self.mpix / max(time.monotonic() - self.t0, 1e-9)
        if self.bar is not None:
            self.bar.set_postfix_str(f"{rate:.2f} MPix/s, {self.failed} failed")
            self.bar.update(1)
        elif time.monotonic() - self.last > self.every and self.done < self.n:
            self.last = time.monotonic()
            print(f"maxidetect: {self.done}/{self.n} files, {self.failed} failed, {rate:.2f} MPix/s",
                  file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# -- the pipeline commands -------------------------------------------------------------
def _add_run_options(p, many: bool = True) -> None:
    g = p.add_argument_group("run")
    g.add_argument("-o", "--out-dir", help="output directory (default: beside each input)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace outputs no run record accounts for, or made with other settings (never an input)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress and no per-file lines (batch systems)")
    g.add_argument("-v", "--verbose", action="store_true",
                   help="timings, the commands run, SExtractor's warnings and astropy's")
    if many:
        g.add_argument("--workers", type=_type(positive_int), default=1,
                       help="local worker processes, each loading the network once (default 1)")
        g.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on an existing Dask cluster (e.g. tcp://host:8786), one task per file")
        g.add_argument("--summary", metavar="FILE", help="write the run summary (JSON) to FILE")


def _pipeline_parser(sub, name: str, help: str, description: str, epilog: str | None = None):
    p = sub.add_parser(name, help=help, description=description, epilog=epilog)
    what = "PATH" if name == "mask" else "IMAGE"
    p.add_argument("paths", nargs="+", metavar=what,
                   help="FITS files (file.fits[N] or file.fits[EXTNAME] selects an HDU), directories, quoted globs "
                   "or .list files")
    _add_run_options(p)
    add_options(p, name, SETTINGS)
    p.set_defaults(func=cmd_pipeline)
    return p


def _job(args):
    from maxidetect.pipeline import _GROUPS, Job

    groups = {attr: from_args(cls, args, **({"sex_args": tuple(args.sex_args)} if cls is ExtractSettings else {}))
              for attr, cls in _GROUPS.items()}
    return Job(args.command, out_dir=args.out_dir, overwrite=args.overwrite, **groups)


def cmd_pipeline(args) -> int:
    """``mask``, ``maps``, ``detect`` and ``sex``: every setting is checked
    before any work, then the runner does the files."""

    from maxidetect.files import expand_inputs
    from maxidetect.runner import run_files

    try:
        job = _job(args)
        specs = expand_inputs(args.paths)
        if not specs:
            raise MaxidetectError("no input FITS files found")
    except (MaxidetectError, OSError, ValueError) as exc:
        return _error(exc)
    client = None
    if args.scheduler:
        try:
            from dask.distributed import Client

            client = Client(args.scheduler, timeout="20s")
        except ImportError:
            return _error("--scheduler needs Dask: pip install 'maxidetect[dask]'")
        except OSError as exc:
            return _error(f"cannot reach the Dask scheduler {args.scheduler}: {exc}")
    elif args.workers > 1:
        job = dataclasses.replace(job, threads=max(1, (os.cpu_count() or 1) // args.workers))
    progress = Progress(len(specs), quiet=args.quiet)

    def report(r):
        for w in r.warnings:  # each names its file (several files' warnings interleave)
            named = w.startswith(r.input.split("[")[0])
            progress.write(f"maxidetect: warning: {w if named else f'{r.input}: {w}'}", err=True)
        if r.status == "failed":
            progress.write(f"maxidetect: failed: {r.reason}", err=True)
            return
        if args.verbose:
            for line in r.log:
                progress.write(line, err=True)
        if args.quiet:
            return
        if r.status == "skipped":
            progress.write(f"{r.input}: up to date ({', '.join(r.outputs)})")
        elif r.status == "rejected":
            progress.write(f"{r.input}: rejected, {r.reason}")
        else:
            reused = f"; reused {', '.join(r.reused)}" if r.reused else ""
            timing = f" ({r.seconds:.1f} s)" if args.verbose else ""
            progress.write(f"{r.input} -> {', '.join(r.outputs)}{timing}{reused}")
            if args.verbose and r.stages:
                progress.write("  time: " + ", ".join(f"{k} {v:.2f} s" for k, v in _by_stage(r.stages)), err=True)
        if job.kind == "maps" and len(r.outputs) == 2:
            from maxidetect.maps.writer import sextractor_args

            progress.write("SExtractor arguments: " + shlex.join(sextractor_args(*r.outputs)))
            if any(c.isspace() or c == "," for p in r.outputs for c in str(p)):
                progress.write("maxidetect: warning: SExtractor splits WEIGHT_IMAGE and FLAG_IMAGE at spaces and "
                               "commas: link these maps under plainer names (maxidetect sex does)", err=True)

    try:
        summary = run_files(job, specs, workers=args.workers, client=client, progress=progress, on_result=report,
                            others=[args.summary] if args.summary else ())
    except (MaxidetectError, OSError, ValueError) as exc:
        progress.close()
        return _error(exc)
    finally:
        if client is not None:
            client.close()
    progress.close()
    info = summary.to_dict()
    if args.summary:
        from maxidetect.runner import write_json_atomic

        write_json_atomic(Path(args.summary), info)
    c = summary.counts()
    if summary.failed or (len(specs) > 1 and not args.quiet):
        rej = f", {c['rejected']} rejected (tracking)" if c["rejected"] else ""
        print(f"maxidetect: {len(specs)} file(s): {c['done']} done, {c['skipped']} up to date{rej}, "
              f"{c['failed']} failed in {summary.seconds:.1f} s ({info['mpix_per_s']:.2f} MPix/s, {summary.mode}, "
              f"{summary.workers} worker(s))", file=sys.stderr)
    return 1 if summary.failed else 0


def _by_stage(seconds: dict) -> list[tuple[str, float]]:
    """Stage times in data-flow order (:data:`maxidetect.timing.STAGES`), unknown ones last."""
    from maxidetect.timing import STAGES

    return sorted(seconds.items(), key=lambda kv: STAGES.index(kv[0]) if kv[0] in STAGES else len(STAGES))


_TAKES_VALUE_RE = re.compile(r"^-[A-Z][A-Z0-9_]*$")


def _split_argv(argv: list[str], parser: argparse.ArgumentParser) -> tuple[list[str], list[str]]:
    """Separate SExtractor's ``-c FILE`` / ``-KEY VALUE`` pairs from our options."""
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
        elif tok == "-c" or _TAKES_VALUE_RE.match(tok):
            theirs.append(tok)
            if i + 1 < len(argv):
                theirs.append(argv[i + 1])
                i += 1
        else:
            ours.append(tok)
        i += 1
    return ours, theirs


# -- other commands ----------------------------------------------------------------------
def cmd_track(args) -> int:
    from maxidetect.files import check_not_input, expand_inputs
    from maxidetect.network.maxitrack import Tracker, write_table

    try:
        specs = expand_inputs(args.paths)
        if not specs:
            raise MaxidetectError("no input FITS files found")
        if args.table:
            check_not_input(args.table, [s.path for s in specs])
        tracker = Tracker(prior=None if args.no_prior else args.prior, threshold=args.threshold,
                          max_tiles=args.max_tiles or None)
    except (MaxidetectError, OSError, ValueError) as exc:
        return _error(exc)
    progress = Progress(len(specs), quiet=args.quiet)
    rows, failures = [], 0
    for spec in specs:
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", MaxidetectWarning)
                got = tracker.score_file(spec)
            for w in caught:
                progress.write(f"maxidetect: warning: {w.message}", err=True)
        except (MaxidetectError, OSError, ValueError) as exc:
            failures += 1
            progress.write(f"maxidetect: failed: {exc}", err=True)
            continue
        finally:
            progress.file_done(type("R", (), {"status": "done", "mpix": 0.0})())
        rows += got
        for r in got:
            timing = f"\t({time.perf_counter() - t0:.1f} s)" if args.verbose and r.hdu == "all" else ""
            progress.write(f"{r.path}\t{r.hdu}\t{r.probability:.4f}\t{r.verdict}{timing}")
    progress.close()
    if args.table:
        write_table(rows, args.table)
    if failures:
        print(f"maxidetect: {failures} of {len(specs)} file(s) failed", file=sys.stderr)
    return 1 if failures else 0


def cmd_models(args) -> int:
    from maxidetect.network.weights import load_manifest

    for name, info in load_manifest().items():
        print(f"{name}\t{info.description}" if args.verbose else name)
    return 0


def cmd_simulate(args) -> int:
    from maxidetect.validation.simulate import SimConfig, simulate_frame, write_frame

    try:
        cfg = SimConfig.from_file(args.config) if args.config else SimConfig()
    except (OSError, ValueError) as exc:
        return _error(exc)
    for k in range(args.n):
        seed = args.seed + k
        frame = simulate_frame(seed, cfg, size=args.size)
        try:
            paths = write_frame(frame, args.outdir, f"sim{seed}", overwrite=args.overwrite)
        except (FileExistsError, OSError) as exc:
            print(f"maxidetect: failed: {exc}", file=sys.stderr)
            return 1
        if not args.quiet:
            print(f"seed {seed}: {paths['image']} ({len(frame.catalog)} sources), {paths['truth']}, "
                  f"{paths['catalog']}")
    return 0


def cmd_bench(args) -> int:
    from maxidetect.maps.policy import MapPolicy
    from maxidetect.validation.bench import VARIANTS, BenchOptions, real_report, run_bench, write_report
    from maxidetect.validation.simulate import SimConfig

    try:
        policy = MapPolicy.parse(args.policy, grow=args.grow, noise=args.noise_weights)
        opts = BenchOptions.quick() if args.quick else BenchOptions()
        for name in ("frames", "size", "seed"):
            if getattr(args, name) is not None:
                setattr(opts, {"frames": "n_frames"}.get(name, name), getattr(args, name))
        opts.policy = policy
        opts.peers = args.peers
        if args.model is not None:
            from maxidetect.network.weights import get_model_info

            opts.model = get_model_info(args.model).name  # an unknown name: one clear line, before any work
        if args.variants:
            opts.variants = tuple(v.strip() for v in args.variants.split(","))
            bad = set(opts.variants) - set(VARIANTS)
            if bad:
                raise ValueError(f"unknown variant(s) {sorted(bad)}; known: {', '.join(VARIANTS)}")
        opts.engines = tuple(e.strip() for e in args.engines.split(","))
        bad = set(opts.engines) - {"SEP", "SExtractor"}
        if bad:
            raise ValueError(f"unknown engine(s) {sorted(bad)}; use SEP and/or SExtractor")
        if args.sim_config:
            opts.sim_config = SimConfig.from_file(args.sim_config)
    except (MaxidetectError, OSError, ValueError) as exc:
        return _error(exc)
    command = "maxidetect " + shlex.join(sys.argv[1:]) if sys.argv and "maxidetect" in sys.argv[0] else ""
    if args.real:
        r = real_report(args.real, args.out_dir, policy=policy)
        print(f"real-frame report: {r['report']}")
        return 0
    if args.tracking:
        return _bench_tracking(args, command)
    results = run_bench(opts, work_dir=args.work_dir, progress=not args.quiet)
    paths = write_report(results, args.out_dir,
                         command=command or f"maxidetect bench{' --quick' if args.quick else ''}")
    for variant, rows in results["summary"].items():
        for r in rows:
            red = r.get("spurious_reduction", float("nan"))
            lost = sum(r["lost"].values()) if r["strategy"] != "none" else 0
            print(f"{variant:>12} {r['strategy']:>12} {r['engine']:<10} spurious {r['n_spurious']:5d} ({-red:+.1%})  "
                  f"completeness {r['completeness']:.4f} ({r.get('completeness_change_pp', 0):+.2f} pp), lost {lost}")
    print(f"report: {paths['report']}")
    return 0


def _bench_tracking(args, command: str) -> int:
    from maxidetect.network.maxitrack import Tracker
    from maxidetect.validation.tracking import tracking_benchmark

    n = args.frames if args.frames is not None else (3 if args.quick else 8)
    size = args.size if args.size is not None else 800
    seed = args.seed if args.seed is not None else 500
    r = tracking_benchmark(n_frames=n, size=size, seed0=seed, tracker=Tracker(), progress=not args.quiet)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tracking.json").write_text(json.dumps(r, indent=1))
    lines = ["# MaxiTrack on simulated tracking errors", "",
             f"`{command or 'maxidetect bench --tracking'}`: {n} clean {size}x{size} frames (seeds {seed}..), "
             f"the same frames smeared along a random direction; prior {r['prior']}, threshold {r['threshold']}; "
             f"{r['seconds_per_frame']:.2f} s per frame (scoring only).", "",
             f"Clean frames (sky, sources, cosmic rays, hot/dead pixels): median probability "
             f"{r['clean_median_p']:.3f}, false-positive rate {r['fpr']:.2f}. Clean frames with every simulated "
             f"contaminant (satellite trails, bad columns, diffuse light too): median "
             f"{r['contaminated_median_p']:.3f}, false-positive rate {r['contaminated_fpr']:.2f}.", "",
             "| smear length [px] | AUC | TPR at threshold | median probability |", "|---|---|---|---|"]
    lines += [f"| {x['length']:g} | {x['auc']:.3f} | {x['tpr']:.2f} | {x['median_p']:.3f} |" for x in r["rows"]]
    (out / "tracking.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def cmd_train(args) -> int:
    try:
        from maxidetect.training.train import TrainConfig, run_training
    except ImportError as exc:
        return _error(f"training needs Keras and a backend: pip install 'maxidetect[train]' ({exc})")
    try:
        data = json.loads(Path(args.config).read_text()) if args.config else {}
        known = {f.name for f in fields(TrainConfig)}
        bad = set(data) - known
        if bad:
            raise ValueError(f"{args.config}: unknown training keys {sorted(bad)} (known: {sorted(known)})")
        cfg = TrainConfig(**data)
        if args.steps is not None:
            cfg.steps = args.steps
    except (OSError, ValueError, TypeError) as exc:
        return _error(exc)
    rec = run_training(cfg, args.out, workers=args.workers, teacher_engine=args.teacher_engine,
                       max_seconds=args.max_seconds)
    print(f"{rec['steps']} of {cfg.steps} steps in {rec['seconds']:.0f} s, loss {rec['loss_first']:.4g} -> "
          f"{rec['loss_last']:.4g}; weights: {args.out}")
    if args.register:
        from maxidetect.classes import CLASSES
        from maxidetect.network.weights import register_model

        props = rec["class_proportions"]
        origin = "fine-tuned from " + cfg.init if cfg.init else "from scratch"
        info = register_model(args.register, args.out, [props[c.abbr] for c in CLASSES],
                              description=f"maxidetect training ({origin}, {rec['steps']} steps)",
                              recipe=rec["config"], background=cfg.background)
        print(f"registered model {info.name} (sha256 {info.sha256[:12]}...); 'maxidetect models' lists it")
    return 0


def cmd_train_score(args) -> int:
    try:
        from maxidetect.training.score import rethreshold, run
    except ImportError as exc:
        return _error(f"training the score needs scikit-learn: pip install 'maxidetect[train]' ({exc})")
    if args.rethreshold:
        if not Path(args.rethreshold).exists():
            return _error(f"--rethreshold {args.rethreshold}: no such file")
        rec = rethreshold(args.rethreshold, args.out, held_seed=args.held_seed,
                          threshold_frames=args.threshold_frames, size=args.size, progress=not args.quiet)
    else:
        rec = run(args.out, train_seeds=range(args.seed, args.seed + args.frames),
                  held_seeds=range(args.held_seed, args.held_seed + args.held_frames), size=args.size,
                  progress=not args.quiet, threshold_frames=args.threshold_frames, cache=args.cache)
    ev = rec["evaluation"]
    print(f"{args.out}: threshold {rec['threshold']:.3f}, sha256 {rec['sha256'][:12]}..., "
          f"{rec['recipe']['n_detections']} training detections")
    for name, e in ev.items():
        print(f"  {name}: {e['n']} detections, {e['n_real']} real")
    return 0


def _load_for_eval(spec: str):
    """A manifest name, or a ``.weights.h5`` / ``.npz`` file (any width)."""
    if not spec.endswith((".weights.h5", ".npz")):
        return spec
    from maxidetect.network.keras_engine import build_model
    from maxidetect.network.weights import read_arrays, weights_width

    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such weights file")
    model = build_model(width=weights_width(path))
    if path.suffix == ".npz":
        arrays = read_arrays(path)
        for layer in model.layers:
            layer.set_weights(list(arrays[layer.name]))
    else:
        model.load_weights(str(path))
    return (path.name.removesuffix(".weights.h5").removesuffix(".npz"), model)


def cmd_evaluate(args) -> int:
    from maxidetect.validation.compare_models import HELD_OUT_SEED0, evaluate_models, write_model_report

    for what, path in (("--cr-labels", args.cr_labels), ("--crowded", args.crowded)):
        if path and not Path(path).exists():
            return _error(f"{what} {path}: no such file")
    against = [args.against] if args.against and args.against != args.model else []
    try:
        models = [_load_for_eval(m) for m in [args.model] + against]
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        return _error(exc)
    reports = evaluate_models(models, n_frames=args.frames, size=args.size, seed0=args.seed,
                              cr_labels=Path(args.cr_labels) if args.cr_labels else None,
                              crowded=Path(args.crowded) if args.crowded else None, progress=not args.quiet)
    meta = {"n_frames": args.frames, "size": args.size, "seed0": args.seed, "cr_labels": args.cr_labels,
            "command": "maxidetect " + " ".join(sys.argv[1:]) if sys.argv else "", "held_out_from": HELD_OUT_SEED0}
    report = write_model_report(reports, args.out_dir, purity=args.purity, meta=meta)
    for r in reports:
        s = r.summary(args.purity)
        print(f"{r.name}: " + " ".join(f"{k} {v['auc']:.3f}" for k, v in s.items()))
    print(f"report: {report}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maxidetect", description="Contaminant masks for cleaner source catalogues.")
    parser.add_argument("--version", action="version", version=f"maxidetect {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _pipeline_parser(sub, "mask", "compute contaminant masks for FITS images",
                     "Compute MaxiMask contaminant masks; writes NAME.masks.fits per input.")
    _pipeline_parser(sub, "maps", "write SExtractor WEIGHT_IMAGE/FLAG_IMAGE maps and print the arguments",
                     "Write NAME.weight.fits and NAME.flag.fits (layout of the image) and print the SExtractor "
                     "arguments that use them.")
    _pipeline_parser(sub, "sex", "run the real SExtractor with maxidetect's maps",
                     "Compute masks and maps, then run SExtractor (source-extractor or sex) with -WEIGHT_TYPE "
                     "MAP_WEIGHT -FLAG_IMAGE ... -INTERP_TYPE NONE added; catalogue NAME.sex.cat.fits "
                     "(NAME.nomask.sex.cat.fits with --no-mask) unless CATALOG_NAME is given.", _SEX_EPILOG)
    _pipeline_parser(sub, "detect", "detect sources in process (SEP) with maxidetect's maps",
                     "SExtractor's steps in process: reads the same -c FILE and -KEY VALUE; catalogue "
                     "NAME.sep.cat.fits (NAME.nomask.sep.cat.fits with --no-mask) unless CATALOG_NAME is given.",
                     _SEX_EPILOG)
    p = sub.add_parser("models", help="list known models, the default first")
    p.add_argument("-v", "--verbose", action="store_true", help="with their descriptions")
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("track", help="MaxiTrack: probability that each frame suffers from tracking errors",
                       description="One line per image HDU and one per frame (HDU 'all'): path, HDU, "
                       "probability, verdict (ok or trailed), tab-separated.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="FITS files, directories or .list files")
    p.add_argument("--prior", type=_type(open_probability), default=0.05,
                   help="expected fraction of frames with tracking errors (default 0.05, MaxiMask's)")
    p.add_argument("--no-prior", action="store_true", help="keep the network's balanced training prior")
    p.add_argument("--threshold", type=_type(probability), default=0.5,
                   help="probability above which a frame is trailed (default 0.5)")
    p.add_argument("--max-tiles", type=_type(nonnegative_int), default=16,
                   help="400x400 tiles scored per HDU (0: all; default 16)")
    p.add_argument("--table", metavar="FILE", help="also write the table (.csv, else a FITS table)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress")
    p.add_argument("-v", "--verbose", action="store_true", help="timings per file")
    p.set_defaults(func=cmd_track)
    p = sub.add_parser("simulate", help="simulate CCD frames with per-class truth masks and a truth catalogue",
                       description="Write simSEED.fits, simSEED.truth.fits (bit mask + per-class planes) and "
                       "simSEED.truth.cat.fits per frame; the same seed gives the same frame.")
    p.add_argument("outdir", metavar="OUTDIR")
    p.add_argument("--seed", type=_type(nonnegative_int), default=0, help="first seed (default 0)")
    p.add_argument("--size", type=_type(_frame_size), default=2048, help="frame side in pixels, 64 to 16384 "
                   "(default 2048)")
    p.add_argument("-n", type=_type(positive_int), default=1, help="number of frames (seeds SEED, SEED+1, ...)")
    p.add_argument("--config", help="JSON file overriding simulation parameters "
                   "(see maxidetect.validation.simulate.SimConfig)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-frame lines")
    p.add_argument("-v", "--verbose", action="store_true", help="(no more output than the default)")
    p.set_defaults(func=cmd_simulate)
    p = sub.add_parser("bench", help="completeness/contamination with and without masks on simulated truth",
                       description="Simulate frames, run detection with each strategy and engine, cross-match to "
                       "truth; writes report.md, results.json and PNG plots.")
    p.add_argument("--quick", action="store_true", help="one 1024x1024 frame (CI, demos)")
    p.add_argument("--frames", type=_type(positive_int), help="number of frames (default 3)")
    p.add_argument("--size", type=_type(_frame_size), help="frame side (default 2048)")
    p.add_argument("--seed", type=_type(nonnegative_int), help="first seed (default 100)")
    p.add_argument("--engines", default="SEP,SExtractor", help="SEP,SExtractor (SExtractor skipped if missing)")
    p.add_argument("--peers", action="store_true", help="also run MaxiMask's own CLI (slow)")
    p.add_argument("--model", metavar="NAME", help="the network's weights ('maxidetect models'; default: the "
                   "default model); a model not offered for maps is measured all the same")
    p.add_argument("--policy", help="per-class map action overrides, e.g. SAT=zero")
    p.add_argument("--grow", type=_type(nonnegative_int), default=0, help="grow zero-weight regions by N pixels")
    p.add_argument("--noise-weights", action="store_true", help="fold the local noise into the weights")
    p.add_argument("--sim-config", help="JSON simulation overrides")
    p.add_argument("--variants", metavar="LIST", help="frame variants: default,undersampled,crowded,cosmic,diffused "
                   "(cosmic: a long exposure's cosmic rays; diffused: cosmic rays blurred by a thick CCD's charge "
                   "diffusion, sigma 0.3-0.7 px; default: default)")
    p.add_argument("--real", nargs="+", metavar="FITS", help="report on real frames without truth instead")
    p.add_argument("--tracking", action="store_true",
                   help="MaxiTrack ROC/AUC on simulated tracking errors instead (tracking.md/json)")
    p.add_argument("-o", "--out-dir", default="bench_output", help="report directory (default bench_output)")
    p.add_argument("--work-dir", help="keep the simulated frames, maps and catalogues here")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress")
    p.add_argument("-v", "--verbose", action="store_true", help="(no more output than the default)")
    p.set_defaults(func=cmd_bench)
    p = sub.add_parser("train", help="train or fine-tune the network on simulated patches (needs the train extra)",
                       description="Reads a JSON of maxidetect.training.train.TrainConfig keys (init, width, "
                       "trainable, patch, frame_size, batch, steps, learning_rate, l2, seed, background); writes "
                       "OUT.weights.h5 and OUT.weights.json.")
    p.add_argument("config", nargs="?", help="JSON training configuration (default: TrainConfig defaults)")
    p.add_argument("--out", default="trained.weights.h5", help="output weights (.weights.h5)")
    p.add_argument("--steps", type=_type(positive_int), help="override the number of steps")
    p.add_argument("--register", metavar="NAME", help="add the result to the model manifest as model NAME")
    p.add_argument("--workers", type=_type(nonnegative_int), default=0,
                   help="processes simulating frames ahead (default 0: this one); the run is the same with any")
    p.add_argument("--teacher-engine", choices=("onnxruntime", "keras"), default="onnxruntime",
                   help="engine of the distillation teacher (keras: on the training backend's GPU)")
    p.add_argument("--max-seconds", type=float, metavar="S",
                   help="stop after the first step past S seconds, checkpointed (the same command resumes)")
    p.add_argument("-v", "--verbose", action="store_true", help="(no more output than the default)")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("train-score", help="train the per-detection contaminant score (MD_CONTAM; needs [train])",
                       description="Simulated frames through the default pipeline, detections labelled by the "
                       "truth, a gradient-boosted tree classifier; writes OUT (JSON trees) and OUT.record.json "
                       "(recipe, class balance, in- and out-of-range evaluation).")
    p.add_argument("--out", default="score-model.json.gz", help="output model (JSON; gzip if it ends in .gz)")
    p.add_argument("--frames", type=_type(positive_int), default=24, help="training frames (default 24)")
    p.add_argument("--seed", type=_type(nonnegative_int), default=0, help="first training seed (default 0)")
    p.add_argument("--held-frames", type=_type(positive_int), default=6, help="held-out frames per setting")
    p.add_argument("--held-seed", type=_type(nonnegative_int), default=500, help="first held-out seed")
    p.add_argument("--threshold-frames", type=_type(positive_int), default=24,
                   help="in-range held-out frames the --clean threshold is chosen on (default 24)")
    p.add_argument("--cache", metavar="DIR", default=None,
                   help="keep each set of frames' features in DIR and reuse them (refit in minutes; "
                   "empty it after changing the maps)")
    p.add_argument("--rethreshold", metavar="MODEL", default=None,
                   help="only choose the threshold of the trained MODEL again (its trees kept), write OUT")
    p.add_argument("--size", type=_type(_frame_size), default=1024, help="frame side (default 1024)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress")
    p.add_argument("-v", "--verbose", action="store_true", help="(no more output than the default)")
    p.set_defaults(func=cmd_train_score)
    p = sub.add_parser("evaluate", help="per-class ROC/AUC of a model vs another on held-out simulated and real data",
                       description="Scores MODEL (a manifest name, a .weights.h5 or .npz file) and --against on the "
                       "same held-out simulated frames (seeds from 9000000, never used in training), labelled real "
                       "cosmic rays (--cr-labels) and stars called CR/HP on a crowded frame (--crowded); writes "
                       "report.md, report.json and roc.png.")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--against", default="maximask", help="model to compare with (default maximask; '' for none)")
    p.add_argument("--frames", type=_type(positive_int), default=4, help="held-out simulated frames (default 4)")
    p.add_argument("--size", type=_type(_frame_size), default=1024, help="frame side (default 1024)")
    p.add_argument("--seed", type=_type(nonnegative_int), default=9_000_000,
                   help="first held-out seed (default 9000000)")
    p.add_argument("--purity", type=_type(probability), default=0.9,
                   help="purity for the recomputed thresholds (default 0.9)")
    p.add_argument("--cr-labels", metavar="JSON", help="labelled real cosmic rays: a JSON file naming an image "
                   "and boxes (e.g. benchmarks/labels/astroscrappy_gmos_crs.json)")
    p.add_argument("--crowded", metavar="FITS", help="a crowded frame for the stars-called-defects check")
    p.add_argument("-o", "--out-dir", default="evaluation", help="report directory (default evaluation)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress")
    p.add_argument("-v", "--verbose", action="store_true", help="(no more output than the default)")
    p.set_defaults(func=cmd_evaluate)
    return parser


def _frame_size(text) -> int:
    v = positive_int(text)
    if not 64 <= v <= 16384:
        raise ValueError(f"{v} px is outside 64 to 16384")
    return v


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    sex_args: list[str] = []
    if argv and argv[0] in PIPELINE_COMMANDS:
        sub = parser._subparsers._group_actions[0].choices[argv[0]]
        ours, sex_args = _split_argv(argv[1:], sub)
        argv = [argv[0]] + ours
    args = parser.parse_args(argv)
    args.sex_args = sex_args
    if sex_args and args.command in ("mask", "maps"):
        parser.error(f"'{args.command}' takes no SExtractor arguments ({sex_args[0]} ...)")
    with warnings.catch_warnings():
        if not getattr(args, "verbose", False):
            # astropy's notes on odd headers (GRPMEM, RADECSYS, ...) are noise to a catalogue run.
            from astropy.utils.exceptions import AstropyWarning

            warnings.simplefilter("ignore", AstropyWarning)
        return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
