"""Many files: serial, a local process pool, or a Dask cluster; resumable.

:func:`run_files` checks a whole run before any work (every setting; no
output may replace an input or be written by two inputs), then maps
:func:`process_file` over the inputs and returns a :class:`RunSummary`.

Run records. Each product of a file (masks; maps; a catalogue per engine)
has a record ``.maxidetect/<input>.<product>.json`` in the directory of the
product's first output (``OUTDIR`` or beside the input): ``started``
before work, ``complete`` with the output sizes once every output is in
place (each written atomically), the input's SHA-256 and the hash of the
settings that shaped it. A product whose record is complete and matches
the input, the settings and the files on disk is reused: that is how a
rerun resumes after a crash, and how ``maps`` then ``detect`` then ``sex``
share one set of maps. A partial or stale record (ours) is redone; a
complete one made with other settings, or an output with no record, is
replaced only with ``overwrite``. Inputs are never replaced.

Workers load the network once (cached per process) and process whole files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from maxidetect import timing
from maxidetect.errors import ConfigError, InputError, MaxidetectError, MaxidetectWarning
from maxidetect.files import InputSpec, atomic_output, exists_message, input_clash, parse_input, protected
from maxidetect.pipeline import Job, make_catalog, make_maps, make_masks, planned_outputs

__all__ = ["Job", "FileResult", "RunSummary", "process_file", "run_files", "check_run", "record_path",
           "input_sha256", "write_json_atomic", "RECORD_DIR"]

RECORD_DIR = ".maxidetect"


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
    log: list[str] = field(default_factory=list)  # commands run, SExtractor's warnings
    tracking: float | None = None
    peak_rss_mb: float = 0.0  # of the worker process, so far
    reused: list[str] = field(default_factory=list)  # products taken from an earlier run
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage (maxidetect.timing)


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


def _maker(job: Job):
    """The MaskMaker for ``job``'s network and class settings, once per process."""
    from maxidetect.masks.maker import MaskMaker

    key = json.dumps([job.kind == "mask", asdict(job.network), asdict(job.classes)], sort_keys=True, default=str)
    with _LOCK:
        if key not in _MAKERS:
            n, c = job.network, job.classes
            _MAKERS[key] = MaskMaker(
                model=n.model, config=c.config(for_maps=job.kind != "mask"), apply_priors=not c.no_priors,
                apply_threshold=not c.no_threshold, tile=n.tile, margin=n.margin, batch_size=n.batch_size,
                precision=n.precision, engine=n.engine, threads=_set_threads(job.threads), background=n.background,
                for_maps=job.kind != "mask")
        return _MAKERS[key]


def _tracker(job: Job):
    from maxidetect.network.maxitrack import Tracker

    t = job.tracking
    key = json.dumps([t.track_prior, t.track_threshold])
    with _LOCK:
        if key not in _TRACKERS:
            _TRACKERS[key] = Tracker(prior=t.track_prior, threshold=t.track_threshold,
                                     threads=_set_threads(job.threads))
        return _TRACKERS[key]


# -- records ------------------------------------------------------------------
def input_sha256(path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def record_path(spec, job: Job, product: str | None = None) -> Path:
    """The run record of ``product`` of ``spec`` (default: the job's last product)."""
    spec = spec if isinstance(spec, InputSpec) else parse_input(str(spec))
    product = product or job.products()[-1]
    # Beside the product itself: a catalogue named elsewhere (CATALOG_NAME)
    # must not leave its record beside a shared, perhaps read-only, input,
    # where another run's record would then refuse it.
    paths = planned_outputs(job, spec).get(product) or []
    d = Path(paths[0]).parent if paths else (Path(job.out_dir) if job.out_dir else spec.path.parent)
    name = spec.path.name + (f"_hdu{spec.hdu}" if spec.hdu is not None else "")
    return d / RECORD_DIR / f"{name}.{job.product_name(product)}.json"


def write_json_atomic(path, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f, indent=1)


def _read_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _record_state(rec: dict | None, in_sha: str, digest: str) -> str:
    """``new`` (no record), ``ours`` (partial, stale input or damaged outputs:
    redo), ``other`` (complete, other settings), ``current`` (reuse)."""
    if rec is None:
        return "new"
    if rec.get("status") != "complete" or rec.get("input_sha256") != in_sha:
        return "ours"
    if rec.get("settings_sha256") != digest:
        return "other"
    for p, size in zip(rec.get("outputs", []), rec.get("sizes", []), strict=False):
        try:
            if os.path.getsize(p) != size:
                return "ours"
        except OSError:
            return "ours"
    return "current"


# -- the run, checked before any work ----------------------------------------------
def check_run(job: Job, specs, others=()) -> None:
    """Refuse a run before any work: bad settings, an output that would
    replace an input (also via links), two inputs writing one file.
    ``others``: further outputs of the run (a summary file, a table)."""
    job.validate()
    inputs = [s.path for s in specs]
    if job.maps.weight_image:
        inputs.append(Path(job.maps.weight_image))
    seen: dict[str, str] = {}
    for spec in specs:
        for product, paths in planned_outputs(job, spec).items():
            for p in paths:
                hit = input_clash(p, inputs)
                if hit is not None:
                    raise InputError(f"{p}: refusing to write over the input {hit} ({product} of {spec})")
                key = os.path.realpath(p)
                if key in seen and seen[key] != str(spec):
                    why = ""
                    if product == "catalog":
                        why = ("; CATALOG_NAME/CHECKIMAGE_NAME/XML_NAME name one file for every input: leave them "
                               "out (maxidetect names catalogues per input) or run one input at a time")
                    raise ConfigError(f"{p}: both {seen[key]} and {spec} would write it{why}")
                seen[key] = str(spec)
    for p in others:
        if p is not None:
            hit = input_clash(p, inputs)
            if hit is not None:
                raise InputError(f"{p}: refusing to write over the input {hit}")


# -- one file ---------------------------------------------------------------
_WHERE = re.compile(r"^(?P<path>\S.*?)\[(?P<hdu>[^\[\]]+)\]: ")


def _hdu_of(message: str) -> str | None:
    """The HDU of a ``file[hdu]: problem`` message."""
    m = _WHERE.match(message)
    return m.group("hdu") if m else None


def _mpix(path: Path) -> float:
    from astropy.io import fits

    from maxidetect.files import is_image_hdu

    try:
        with fits.open(path, memmap=True) as h:
            return sum(float(_prod(x.shape)) for x in h if is_image_hdu(x)) / 1e6
    except Exception:
        return 0.0


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _reason(exc: BaseException, spec) -> str:
    """One line: ``file[hdu]: problem``."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, FileExistsError) and "replaces it" not in msg:
        msg += " (--overwrite replaces it)"
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in msg:
        msg = f"{exc.filename}: {exc.strerror or msg}"
    if not isinstance(exc, (MaxidetectError, OSError, ValueError, RuntimeError)):
        msg = f"{type(exc).__name__}: {msg} | " + traceback.format_exc(limit=2).strip().splitlines()[-1]
    if str(spec.path) not in msg and not msg.startswith(str(spec)):
        msg = f"{spec}: {msg}"
    return msg


def process_file(job: Job, spec, inputs=()) -> FileResult:
    """Do ``job`` on one input; every error becomes a ``failed`` result.
    ``inputs``: the run's other inputs, which no output may replace."""
    spec = spec if isinstance(spec, InputSpec) else parse_input(str(spec))
    t0 = time.perf_counter()
    res = FileResult(input=str(spec), status="failed", worker=f"{os.uname().nodename}:{os.getpid()}")
    mine = [spec.path] + ([Path(job.maps.weight_image)] if job.maps.weight_image else []) + [Path(p) for p in inputs]
    try:
        with protected(mine), warnings.catch_warnings(record=True) as caught, timing.record() as res.stages:
            warnings.simplefilter("always", MaxidetectWarning)
            made = _process(job, spec, res)
        res.warnings = [str(w.message) for w in caught if issubclass(w.category, MaxidetectWarning)]
        if res.status != "rejected":
            res.status = "done" if made else "skipped"
        if made:
            res.mpix = _mpix(spec.path)
    except Exception as exc:  # one bad file never stops the others
        res.status = "failed"
        res.reason = _reason(exc, spec)
        res.hdu = _hdu_of(res.reason)
    res.seconds = time.perf_counter() - t0
    res.peak_rss_mb = _peak_rss_mb()
    return res


def _process(job: Job, spec: InputSpec, res: FileResult) -> bool:
    """The products of one file; returns whether anything was made."""
    if not spec.path.is_file():
        raise InputError(f"{spec.path}: file does not exist")
    in_sha = input_sha256(spec.path)
    planned = planned_outputs(job, spec)
    cards: list = []
    products = job.products()
    if job.tracking.active:
        tracker = _tracker(job)
        p = tracker.score_file(spec)[-1].probability
        res.tracking = p
        cards = tracker.header_cards(p)
        if job.tracking.reject_tracking and p > tracker.threshold:
            res.status, res.reason = "rejected", f"MaxiTrack probability {p:.3f} > {tracker.threshold}"
            return False
    made = False
    maps = None
    for product in products:
        paths = planned[product]
        rpath = record_path(spec, job, product)
        digest = job.digest(product)
        rec = _read_record(rpath)
        state = _record_state(rec, in_sha, digest)
        if state == "current":
            outputs = [Path(p) for p in rec["outputs"]]
            res.reused.append(product)
        else:
            if state == "other" and not job.overwrite:
                raise FileExistsError(f"{paths[0] if paths else rpath}: made by an earlier run with other settings "
                                      f"(record {rpath}); --overwrite replaces it, -o DIR keeps both")
            if state == "new" and not job.overwrite:
                for p in paths:
                    if p.exists():
                        raise FileExistsError(exists_message(p).replace("output exists", "output exists, "
                                                                        "not made by a recorded maxidetect run"))
            overwrite = job.overwrite or state != "new"
            base = {"input": str(spec), "input_sha256": in_sha, "settings_sha256": digest, "product": product,
                    "kind": job.kind}
            write_json_atomic(rpath, {"status": "started", **base})
            outputs = _make(job, spec, product, maps, overwrite, cards, res.log)
            write_json_atomic(rpath, {
                "status": "complete", **base, "tracking": res.tracking, "outputs": [str(p) for p in outputs],
                "sizes": [os.path.getsize(p) for p in outputs],
                "finished": datetime.now(UTC).isoformat(timespec="seconds")})
            made = True
        if product == "maps":
            maps = tuple(outputs)
        res.outputs += [str(p) for p in outputs]
    return made


def _make(job: Job, spec: InputSpec, product: str, maps, overwrite: bool, cards, log) -> list[Path]:
    if product == "masks":
        return make_masks(job, spec, _maker(job), overwrite, cards)
    if product == "maps":
        return make_maps(job, spec, _maker(job), overwrite, cards)
    _set_threads(job.threads)
    return make_catalog(job, spec, maps, overwrite, cards, log)


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


def run_files(job: Job, specs, workers: int = 1, client=None, progress=None, on_result=None,
              others=()) -> RunSummary:
    """Check the run (:func:`check_run`), then process every spec.

    ``client`` (a ``dask.distributed.Client``) sends one task per file to its
    cluster, else ``workers`` local processes (1: in this process).
    ``progress``: an object with ``file_done(result)`` and ``fraction(x)``
    (see :class:`maxidetect.cli.Progress`), or None. ``on_result(FileResult)``
    is called as files finish.
    """
    specs = [s if isinstance(s, InputSpec) else parse_input(str(s)) for s in specs]
    check_run(job, specs, others)
    inputs = tuple(str(s.path) for s in specs)
    t0 = time.perf_counter()
    results: list[FileResult] = []

    def collect(r: FileResult):
        results.append(r)
        if progress is not None:
            progress.file_done(r)
        if on_result is not None:
            on_result(r)

    if client is not None:
        from dask.distributed import as_completed

        mode = f"dask {client.scheduler.address}"
        futures = client.map(process_file, [job] * len(specs), [str(s) for s in specs], [inputs] * len(specs),
                             pure=False)
        for fut in as_completed(futures):
            collect(fut.result())
        n_workers = len(client.scheduler_info().get("workers", {}))
    elif workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        mode = "processes"
        n_workers = workers
        # spawn: forking a process that has started compute threads is unsafe.
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_pool_init,
                                 initargs=(job.threads,)) as ex:
            futs = [ex.submit(process_file, job, str(s), inputs) for s in specs]
            for f in as_completed(futs):
                collect(f.result())
    else:
        mode, n_workers = "serial", 1
        for s in specs:
            _attach_progress(job, progress)  # None detaches an earlier run's (the maker is cached per process)
            collect(process_file(job, s, inputs))
    order = {str(s): i for i, s in enumerate(specs)}
    results.sort(key=lambda r: order.get(r.input, len(order)))
    return RunSummary(results=results, seconds=time.perf_counter() - t0, workers=n_workers, mode=mode)


def _attach_progress(job: Job, progress) -> None:
    """Within-file progress (tiles) for serial runs; ``None``: none."""
    if job.kind == "mask" or job.masked:
        try:
            _maker(job).progress = progress.fraction if progress is not None else None
        except Exception:  # a bad setting fails in process_file, with its message
            pass
