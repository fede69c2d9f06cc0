"""Many files: resumable runs, isolated failures, the Dask path on a real
local cluster. Small simulated frames keep it quick; the network is real."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from astropy.io import fits

from maxidetect.files import InputSpec
from maxidetect.runner import Job, process_file, record_path, run_files
from maxidetect.validation.simulate import simulate_frame

from .conftest import REPO

SIZE = 192


def _frames(d, n=4, seed=300):
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        f = simulate_frame(seed + k, size=SIZE)
        p = d / f"f{k}.fits"
        fits.PrimaryHDU(f.image.astype(np.float32), f.header).writeto(p)
        paths.append(p)
    return paths


def _same_outputs(a, b):
    """Byte-identical data and equal headers (no timestamps are written)."""
    names = sorted(p.name for p in a.glob("*.fits"))
    assert names and names == sorted(p.name for p in b.glob("*.fits"))
    for n in names:
        with fits.open(a / n) as ha, fits.open(b / n) as hb:
            assert len(ha) == len(hb)
            for x, y in zip(ha, hb, strict=True):
                assert x.header == y.header, n
                if x.data is not None:
                    assert x.data.tobytes() == y.data.tobytes(), n


def _cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "maxidetect.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return _frames(tmp_path_factory.mktemp("in"))


def test_killed_run_resumes_to_the_same_outputs(inputs, tmp_path):
    ref, run = tmp_path / "ref", tmp_path / "run"
    summary = run_files(Job("mask", out_dir=str(ref)), inputs, progress=None)
    assert summary.counts() == {"done": 4, "skipped": 0, "failed": 0, "rejected": 0}
    # Kill -9 once the first file is complete (mid-way through the second).
    proc = _cli("mask", *inputs, "-o", run, "--quiet")
    first = record_path(InputSpec(inputs[0]), Job("mask", out_dir=str(run)))
    t0 = time.time()
    while time.time() - t0 < 300:
        if first.exists() and json.loads(first.read_text())["status"] == "complete":
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(run.glob("*.masks.fits")))
    assert 1 <= done_before < 4
    # Same command again: completes, skipping what was complete.
    rc = subprocess.run([sys.executable, "-m", "maxidetect.cli", "mask", *map(str, inputs), "-o", str(run),
                         "--quiet", "--summary", str(tmp_path / "s.json")], capture_output=True, text=True)
    assert rc.returncode == 0, rc.stderr
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["skipped"] >= 1 and s["done"] + s["skipped"] == 4 and s["failed"] == 0
    _same_outputs(ref, run)
    # A third run does nothing.
    again = run_files(Job("mask", out_dir=str(run)), inputs, progress=None)
    assert again.counts()["skipped"] == 4


def test_partial_stale_and_foreign_outputs(inputs, tmp_path):
    job = Job("mask", out_dir=str(tmp_path))
    r = process_file(job, inputs[0])
    assert r.status == "done"
    out = tmp_path / "f0.masks.fits"
    good = out.read_bytes()
    # A "started" record (killed run) means ours and partial: redone.
    rec = record_path(InputSpec(inputs[0]), job)
    data = json.loads(rec.read_text())
    data["status"] = "started"
    rec.write_text(json.dumps(data))
    out.write_bytes(good[:2880])  # as if damaged
    assert process_file(job, inputs[0]).status == "done"
    assert out.read_bytes() == good
    # Other settings: refused (the earlier run's file is kept) unless overwrite.
    other = Job.build("mask", classes="CR,HP", out_dir=str(tmp_path))
    r = process_file(other, inputs[0])
    assert r.status == "failed" and "other settings" in r.reason and "--overwrite" in r.reason
    assert out.read_bytes() == good
    r = process_file(Job.build("mask", classes="CR,HP", out_dir=str(tmp_path), overwrite=True), inputs[0])
    assert r.status == "done"
    with fits.open(out) as h:
        assert h[0].data.shape[0] == 2
    # A file nobody recorded is not replaced without overwrite.
    (tmp_path / "f1.masks.fits").write_bytes(b"user's file")
    r = process_file(job, inputs[1])
    assert r.status == "failed" and "--overwrite" in r.reason
    assert (tmp_path / "f1.masks.fits").read_bytes() == b"user's file"


def test_corrupt_file_is_reported_and_the_rest_complete(inputs, tmp_path, capsys):
    from maxidetect.cli import main

    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"SIMPLE  =                    T" + b"\0" * 100)
    rc = main(["mask", str(inputs[0]), str(bad), str(inputs[1]), "-o", str(tmp_path / "o"),
               "--summary", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    assert rc == 1
    # One line for the failure (file and problem), once; then one summary line.
    assert err.count("bad.fits") == 1 and "not a readable FITS file" in err
    assert "3 file(s): 2 done, 0 up to date, 1 failed" in err
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["done"] == 2 and s["failed"] == 1
    assert s["failures"][0]["file"] == str(bad) and "FITS" in s["failures"][0]["reason"]
    assert (tmp_path / "o" / "f0.masks.fits").exists() and (tmp_path / "o" / "f1.masks.fits").exists()


def test_process_pool_and_dask_cluster_match_serial(inputs, tmp_path):
    distributed = pytest.importorskip("distributed")
    serial = tmp_path / "serial"
    s = run_files(Job("maps", out_dir=str(serial)), inputs, progress=None)
    assert not s.failed, [r.reason for r in s.failed]
    pool = tmp_path / "pool"
    s = run_files(Job("maps", out_dir=str(pool), threads=1), inputs, workers=2, progress=None)
    assert not s.failed and s.mode == "processes", [r.reason for r in s.failed]
    _same_outputs(serial, pool)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
            distributed.Client(cl) as client:
        d = tmp_path / "dask"
        s = run_files(Job("maps", out_dir=str(d)), inputs, client=client, progress=None)
        assert not s.failed and s.mode.startswith("dask") and s.workers == 2, [r.reason for r in s.failed]
        # One task per file, spread over the workers, each loading the model once.
        assert len({r.worker for r in s.results}) == 2
    _same_outputs(serial, d)


def test_globs_directories_and_lists_expand(inputs, tmp_path):
    from maxidetect.errors import InputError
    from maxidetect.files import expand_inputs

    d = inputs[0].parent
    assert [s.path for s in expand_inputs([str(d / "f*.fits")])] == sorted(inputs)
    (tmp_path / "a.list").write_text(f"# comment\n{inputs[1]}\n{inputs[2]}[0]\n")
    specs = expand_inputs([str(tmp_path / "a.list"), str(d)])
    assert [str(s) for s in specs[:2]] == [str(inputs[1]), f"{inputs[2]}[0]"] and len(specs) == 6
    with pytest.raises(InputError, match="no file matches"):
        expand_inputs([str(d / "nothing*.fits")])


def test_worker_peak_memory_is_its_own_not_its_parents():
    # Linux's ru_maxrss keeps the pre-exec high-water mark, i.e. that of
    # the parent that spawned the worker; the runner must not report it.
    ballast = np.ones(700 * 2**20 // 8)  # 700 MB, resident
    code = "from maxidetect.runner import _peak_rss_mb; print(_peak_rss_mb())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    child = float(out.stdout.strip())
    assert 10 < child < 500, child
    assert ballast.sum() > 0


def test_a_later_run_without_progress_does_not_call_an_earlier_runs(inputs, tmp_path):
    """The network is loaded once per process; a run without progress must
    not call the progress of an earlier run (its stream may be closed)."""

    class Closed:
        def file_done(self, r):
            pass

        def fraction(self, x):
            raise ValueError("I/O operation on closed file.")

    s = run_files(Job("mask", out_dir=str(tmp_path / "a")), inputs[:1], progress=Closed())
    assert s.failed  # that run's own progress broke it
    s = run_files(Job("mask", out_dir=str(tmp_path / "b")), inputs[:1], progress=None)
    assert not s.failed, [r.reason for r in s.failed]


def test_a_catalogue_named_elsewhere_keeps_its_record_beside_it(inputs, tmp_path, monkeypatch):
    """CATALOG_NAME puts the catalogue in the working directory: its record
    goes there too, never beside the (shared) input, where a run from another
    directory with other settings would otherwise be refused."""
    import shutil

    from maxidetect.cli import main

    src = tmp_path / "shared"
    src.mkdir()
    frame = shutil.copy(inputs[0], src / "f.fits")
    for k, cfg in enumerate(("a", "b")):
        work = tmp_path / cfg
        work.mkdir()
        monkeypatch.chdir(work)
        extra = ["-DETECT_THRESH", "3"] if k else []
        assert main(["detect", str(frame), "--no-mask", "-CATALOG_NAME", "test.cat", "-q", *extra]) == 0
        assert (work / "test.cat").exists() and (work / ".maxidetect").is_dir()
    assert not (src / ".maxidetect").exists()


def test_a_mask_run_starts_without_the_extraction_and_maps_stack():
    """The runner (what `maxidetect mask` imports) leaves the maps, extraction
    and scoring modules (SEP, astropy.table, scikit-image) to their stages."""
    code = ("import sys, maxidetect.cli, maxidetect.runner; "
            "print(sorted(m for m in ('maxidetect.extract.inprocess', 'maxidetect.extract.sep_engine', "
            "'maxidetect.maps.fusion', 'maxidetect.maps.writer', 'maxidetect.score.catalogs', 'astropy.table', "
            "'skimage') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
