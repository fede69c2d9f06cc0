"""Many files: serial, a local process pool, or a Dask cluster; resumable.

A :class:`Job` says what to do with each file (``mask``, ``maps``,
``detect`` or ``sex``) and with which settings; :func:`process_file` does it
for one file and never raises; :func:`run_files` maps it over the inputs
and returns a :class:`RunSummary`.

Resumability. Before working on a file we write a record
``OUTDIR/.maxidetect/<input>.<kind>.json`` with status ``started``, the
input's SHA-256 and the settings' hash; after every output is in place
(each written atomically) the record becomes ``complete`` with the output
sizes. A rerun skips a file whose record is complete and matches the input,
the settings and the outputs on disk; it redoes (overwrites) outputs that a
record shows are ours but partial or stale; it refuses to replace outputs it
has no record of unless ``overwrite`` is set. A kill at any point therefore
leaves either complete outputs or ones the next run redoes, never a
truncated file under a final name.

Workers load the network once (cached per process) and process whole files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
import threading
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

__all__ = ["Job", "FileResult", "RunSummary", "process_file", "run_files", "record_path", "input_sha256", "class_config",
           "write_json_atomic"]

KINDS = ("mask", "maps", "detect", "sex")
_DEFAULTS = {"grow": 0, "batch_size": 1, "precision": "float32", "track_prior": 0.05, "track_threshold": 0.5}
RECORD_DIR = ".maxidetect"


@dataclass
class Job:
    """What to do with every file, as plain (picklable) settings.

    Parameters
    ----------
    kind : {"mask", "maps", "detect", "sex"}
    options : dict
        Network options (model, tile, margin, batch_size, precision, classes,
        config_dir, maximask_defaults, no_priors, no_threshold), mask output
        options (probs, single_mask), map options (policy, grow,
        soft_weights, noise_weights, weight_image, no_mask) and SExtractor
        arguments (sex_args list, sex_binary).
    out_dir : str or None
        Outputs beside each input when None.
    overwrite : bool
        Replace outputs that no run record accounts for.
    threads : int or None
        Compute threads per worker (None: the library default).
    """

    kind: str
    options: dict = field(default_factory=dict)
    out_dir: str | None = None
    overwrite: bool = False
    threads: int | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")

    def settings_hash(self) -> str:
        from maxidetect import __version__

        # Unset and default values hash alike, so the CLI and the API agree;
        # where the binary lives, or which engine runs the network, does not
        # change outputs (the engines' masks agree; tests/test_onnxnet.py).
        o = {k: v for k, v in self.options.items()
             if k not in ("sex_binary", "engine") and v not in (None, False, "", []) and _DEFAULTS.get(k, object()) != v}
        blob = json.dumps({"kind": self.kind, "options": o, "version": __version__}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class FileResult:
    """Outcome for one input: ``done``, ``skipped`` (up to date), ``rejected``
    (MaxiTrack over the threshold with ``reject_tracking``) or ``failed``."""

    input: str
    status: str
    outputs: list[str] = field(default_factory=list)
    reason: str = ""
    hdu: str | None = None
    seconds: float = 0.0
    mpix: float = 0.0
    worker: str = ""
    warnings: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    tracking: float | None = None
    peak_rss_mb: float = 0.0  # of the worker process, so far


@dataclass
class RunSummary:
    results: list[FileResult]
    seconds: float
    workers: int
    mode: str

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r.status == "failed"]

    def counts(self) -> dict:
        out = {"done": 0, "skipped": 0, "failed": 0, "rejected": 0}
        for r in self.results:
            out[r.status] += 1
        return out

    def to_dict(self) -> dict:
        done = [r for r in self.results if r.status == "done"]
        mpix = sum(r.mpix for r in done)
        return {
            "mode": self.mode, "workers": self.workers, "files": len(self.results), **self.counts(),
            "seconds": self.seconds, "files_per_s": len(done) / self.seconds if self.seconds else 0.0,
            "mpix_per_s": mpix / self.seconds if self.seconds else 0.0,
            "peak_rss_mb_per_worker": {w: max(r.peak_rss_mb for r in self.results if r.worker == w)
                                       for w in sorted({r.worker for r in self.results})},
            "failures": [{"file": r.input, "hdu": r.hdu, "reason": r.reason} for r in self.failed],
            "results": [asdict(r) for r in self.results],
        }


# -- per-process state ------------------------------------------------------
_LOCK = threading.Lock()
_MAKERS: dict[str, object] = {}
_TRACKERS: dict[str, object] = {}
_THREADS: int | None = None


def _dask_worker_threads() -> int | None:
    """The thread slots of the Dask worker running this task, or None."""
    if "distributed" not in sys.modules:
        return None  # not on a worker; importing it would cost ~1 s
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return None


def _set_threads(n: int | None) -> int | None:
    """Bound the compute threads of this process, once; returns the bound.

    Unset inside a Dask worker, it is the worker's thread count: measured on
    2 cores, two 1-thread workers each letting TensorFlow use both cores ran
    32 frames at 0.85x the speed of one serial worker (oversubscribed).
    Engines read it when they start (``Predictor(threads=...)``)."""
    global _THREADS
    n = n or _dask_worker_threads()
    if _THREADS is None and n:
        _THREADS = int(n)
        os.environ.setdefault("OMP_NUM_THREADS", str(n))
    return _THREADS


def class_config(kind: str, options: dict):
    """The validated ClassConfig of a job's options: the user's MaxiMask
    files, else MaxiMask's defaults (``mask``, ``maximask_defaults``), else
    the catalogue defaults; narrowed to ``classes``."""
    from maxidetect.classes import ClassConfig, parse_class_list

    if options.get("config_dir"):
        config = ClassConfig.from_dir(options["config_dir"])
    elif kind == "mask" or options.get("maximask_defaults"):
        config = ClassConfig.default()
    else:
        config = ClassConfig.catalogue()
    if options.get("classes"):
        config.selected = config.selected & parse_class_list(options["classes"])
    config.validate()
    return config


def _maker(job: Job):
    """The MaskMaker for ``job``'s network options, built once per process."""
    from maxidetect.masks.maker import MaskMaker
    from maxidetect.network.inference import DEFAULT_MARGIN

    o = job.options
    keys = ("model", "tile", "margin", "batch_size", "precision", "engine", "background", "classes", "config_dir",
            "maximask_defaults", "no_priors", "no_threshold")
    key = json.dumps({"kind": job.kind == "mask", **{k: o.get(k) for k in keys}}, sort_keys=True, default=str)
    with _LOCK:
        if key not in _MAKERS:
            threads = _set_threads(job.threads)
            config = class_config(job.kind, o)
            _MAKERS[key] = MaskMaker(
                model=o.get("model"), config=config,
                apply_priors=not o.get("no_priors", False), apply_threshold=not o.get("no_threshold", False),
                tile=o.get("tile") or None,
                margin=DEFAULT_MARGIN if o.get("margin") is None else o["margin"],
                batch_size=o.get("batch_size") or 1, precision=o.get("precision") or "float32",
                engine=o.get("engine") or "auto", threads=threads, background=o.get("background"))
        return _MAKERS[key]


def _tracker(job: Job):
    from maxidetect.network.maxitrack import DEFAULT_PRIOR, DEFAULT_THRESHOLD, Tracker

    o = job.options
    prior = o.get("track_prior", DEFAULT_PRIOR)
    thr = o.get("track_threshold")
    key = json.dumps([prior, thr])
    with _LOCK:
        if key not in _TRACKERS:
            from maxidetect.network.inference import bound_keras_threads

            bound_keras_threads(_set_threads(job.threads))
            _TRACKERS[key] = Tracker(prior=prior, threshold=DEFAULT_THRESHOLD if thr is None else thr)
        return _TRACKERS[key]


# -- records ------------------------------------------------------------------
def input_sha256(path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def record_path(spec, job: Job) -> Path:
    d = Path(job.out_dir) if job.out_dir else spec.path.parent
    name = spec.path.name + (f"_hdu{spec.hdu}" if spec.hdu is not None else "")
    return d / RECORD_DIR / f"{name}.{job.kind}.json"


def write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _up_to_date(rec: dict | None, in_sha: str, settings: str) -> bool:
    if not rec or rec.get("status") != "complete":
        return False
    if rec.get("input_sha256") != in_sha or rec.get("settings_sha256") != settings:
        return False
    for p, size in zip(rec.get("outputs", []), rec.get("sizes", []), strict=False):
        try:
            if os.path.getsize(p) != size:
                return False
        except OSError:
            return False
    return bool(rec.get("outputs")) or bool(rec.get("rejected"))


# -- one file ---------------------------------------------------------------
def _hdu_of(message: str) -> str | None:
    m = re.search(r"\[([^\]]+)\]", message)
    return m.group(1) if m else None


def _mpix(path: Path) -> float:
    from astropy.io import fits

    from maxidetect.files import is_image_hdu

    try:
        with fits.open(path, memmap=True) as h:
            return sum(float(np.prod(x.shape)) for x in h if is_image_hdu(x)) / 1e6  # .size is bytes
    except Exception:
        return 0.0


def _run(job: Job, spec, overwrite: bool, commands: list, cards=()) -> list[Path]:
    o = job.options
    if job.kind == "mask":
        out = _maker(job).process_file(spec, out_dir=job.out_dir, overwrite=overwrite,
                                       probs=o.get("probs", False), single=o.get("single_mask", False),
                                       extra_cards=cards)
        return [out]
    from maxidetect.maps.writer import MapPolicy, write_maps

    maps = None
    if not o.get("no_mask"):
        policy = MapPolicy.parse(o.get("policy"), grow=o.get("grow", 0), soft=o.get("soft_weights", False),
                                 noise=o.get("noise_weights", False))
        maps = write_maps(spec, _maker(job), policy, out_dir=job.out_dir, weight_image=o.get("weight_image"),
                          overwrite=overwrite, extra_cards=cards)
    if job.kind == "maps":
        return list(maps)
    from maxidetect.extract.config import SexConfig, split_sextractor_args

    config = SexConfig(*split_sextractor_args(o.get("sex_args") or []))
    if job.kind == "sex":
        import shlex

        from maxidetect.pipeline import sex_file

        cat, cmd = sex_file(spec, config, maps=maps, binary=o.get("sex_binary"), out_dir=job.out_dir,
                            overwrite=overwrite)
        commands.append(shlex.join(cmd))
    else:
        from maxidetect.pipeline import detect_file

        _set_threads(job.threads)
        cat = detect_file(spec, config, maps=maps, out_dir=job.out_dir, overwrite=overwrite, extra_cards=cards)
    return ([cat] if cat is not None else []) + (list(maps) if maps else [])


def process_file(job: Job, spec) -> FileResult:
    """Do ``job`` on one input; every error becomes a ``failed`` result."""
    from maxidetect.errors import MaxidetectWarning
    from maxidetect.files import InputSpec, parse_input

    spec = spec if isinstance(spec, InputSpec) else parse_input(str(spec))
    t0 = time.perf_counter()
    res = FileResult(input=str(spec), status="failed", worker=f"{os.uname().nodename}:{os.getpid()}")
    try:
        if not spec.path.is_file():
            raise FileNotFoundError(f"{spec.path}: file does not exist")
        in_sha = input_sha256(spec.path)
        settings = job.settings_hash()
        rpath = record_path(spec, job)
        rec = _read_record(rpath)
        if _up_to_date(rec, in_sha, settings):
            res.status, res.outputs = "skipped", rec["outputs"]
            res.tracking = rec.get("tracking")
            if rec.get("rejected"):
                res.status, res.reason = "rejected", "MaxiTrack (recorded)"
            return res
        ours = rec is not None  # outputs of an earlier, partial or stale, run of ours
        base = {"input": str(spec), "input_sha256": in_sha, "settings_sha256": settings, "kind": job.kind,
                "settings": job.options}
        write_json_atomic(rpath, {"status": "started", **base})
        cards = []
        if job.options.get("track") or job.options.get("reject_tracking"):
            tracker = _tracker(job)
            p = tracker.score_file(spec)[-1].probability
            res.tracking = p
            cards = tracker.header_cards(p)
            if job.options.get("reject_tracking") and p > tracker.threshold:
                res.status, res.reason = "rejected", f"MaxiTrack probability {p:.3f} > {tracker.threshold}"
                res.seconds = time.perf_counter() - t0
                write_json_atomic(rpath, {"status": "complete", **base, "rejected": True, "tracking": p,
                                           "outputs": [], "sizes": []})
                return res
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MaxidetectWarning)
            outputs = _run(job, spec, overwrite=job.overwrite or ours, commands=res.commands, cards=cards)
        res.warnings = [str(w.message) for w in caught if issubclass(w.category, MaxidetectWarning)]
        res.outputs = [str(p) for p in outputs]
        res.seconds = time.perf_counter() - t0
        res.mpix = _mpix(spec.path)
        write_json_atomic(rpath, {
            "status": "complete", **base, "tracking": res.tracking, "outputs": res.outputs,
            "sizes": [os.path.getsize(p) for p in res.outputs], "seconds": res.seconds,
            "finished": datetime.now(UTC).isoformat(timespec="seconds")})
        res.status = "done"
    except FileExistsError as exc:
        res.reason = f"{exc} (no run record for it; --overwrite replaces it)"
    except Exception as exc:  # one bad file never stops the others
        res.reason = f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
        if not isinstance(exc, (OSError, ValueError, RuntimeError)):
            res.reason += " | " + traceback.format_exc(limit=2).strip().splitlines()[-1]
        res.hdu = _hdu_of(str(exc))
    res.seconds = time.perf_counter() - t0
    res.peak_rss_mb = _peak_rss_mb()
    return res


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    Linux's VmHWM, not ``ru_maxrss``: the latter keeps the high-water mark of
    the process image before ``exec``, i.e. of the parent that started it (a
    worker started by a 9 GB parent reported 9.5 GB while never above 1.4 GB).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux
    except (ImportError, OSError):
        return 0.0


# -- many files ---------------------------------------------------------------
def _pool_init(threads: int | None) -> None:
    _set_threads(threads)


def run_files(job: Job, specs, workers: int = 1, client=None, progress: bool = True,
              on_result=None) -> RunSummary:
    """Process every spec; ``client`` (a ``dask.distributed.Client``) sends one
    task per file to its cluster, else ``workers`` local processes (1: in
    this process). ``on_result(FileResult)`` is called as files finish."""
    from tqdm import tqdm

    specs = list(specs)
    t0 = time.perf_counter()
    results: list[FileResult] = []
    bar = tqdm(total=len(specs), unit="file", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    mpix = [0.0]

    def collect(r: FileResult):
        results.append(r)
        mpix[0] += r.mpix if r.status == "done" else 0.0
        el = time.perf_counter() - t0
        bar.set_postfix_str(f"{mpix[0] / el:.2f} MPix/s, {sum(x.status == 'failed' for x in results)} failed")
        bar.update(1)
        if on_result is not None:
            on_result(r)

    if client is not None:
        from dask.distributed import as_completed

        mode = f"dask {client.scheduler.address}"
        futures = client.map(process_file, [job] * len(specs), [str(s) for s in specs], pure=False)
        for fut in as_completed(futures):
            collect(fut.result())
        n_workers = len(client.scheduler_info().get("workers", {}))
    elif workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        mode = "processes"
        n_workers = workers
        # spawn: forking a process that has started TensorFlow's threads is unsafe.
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_pool_init,
                                 initargs=(job.threads,)) as ex:
            futs = [ex.submit(process_file, job, str(s)) for s in specs]
            for f in as_completed(futs):
                collect(f.result())
    else:
        mode, n_workers = "serial", 1
        for s in specs:
            collect(process_file(job, s))
    bar.close()
    order = {str(s): i for i, s in enumerate(specs)}
    results.sort(key=lambda r: order.get(r.input, len(order)))
    return RunSummary(results=results, seconds=time.perf_counter() - t0, workers=n_workers, mode=mode)
