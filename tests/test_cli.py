"""The command line as a user meets it: inputs are never written over,
commands share their outputs, bad values fail before any work, one line per
failure, and the README tells the truth about the options."""

import hashlib
import os
import re
import shutil

import numpy as np
import pytest
from astropy.io import fits

from maxidetect.cli import build_parser, main

from .conftest import EXAMPLE, REPO

needs_sex = pytest.mark.skipif(not (shutil.which("source-extractor") or shutil.which("sex")),
                               reason="SExtractor not installed")


def _digest(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def frame(tmp_path):
    """A small real frame (CTIO Mosaic2 cut-out with a saturated star)."""
    with fits.open(EXAMPLE) as h:
        data, hdr = h[0].data[:192, :256].astype(np.float32), h[0].header
    p = tmp_path / "f.fits"
    fits.PrimaryHDU(data, hdr).writeto(p)
    return p


def _run(args, capsys):
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


# -- no route writes over an input -----------------------------------------------
@needs_sex
@pytest.mark.parametrize("extra", [
    ["-CATALOG_NAME", "{in}", "--overwrite"],
    ["-CATALOG_NAME", "{in}"],
    ["-CHECKIMAGE_TYPE", "BACKGROUND", "-CHECKIMAGE_NAME", "{in}", "-o", "{dir}/out"],
    ["-WRITE_XML", "Y", "-XML_NAME", "{in}", "--overwrite"],
    ["-CATALOG_NAME", "{hardlink}", "--overwrite"],
    ["-CATALOG_NAME", "{symlink}", "--overwrite"],
])
def test_sextractor_outputs_never_replace_the_input(frame, tmp_path, capsys, extra, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.link(frame, tmp_path / "hard.fits")
    (tmp_path / "sym.fits").symlink_to(frame)
    before = _digest(frame)
    args = [a.format(**{"in": frame, "dir": tmp_path, "hardlink": tmp_path / "hard.fits",
                        "symlink": tmp_path / "sym.fits"}) for a in extra]
    rc, _, err = _run(["sex", frame] + args, capsys)
    assert rc == 2
    assert "refusing to write over the input" in err and str(frame) in err
    assert "--overwrite" not in err.split("refusing")[1]  # never advises overwriting the input
    assert _digest(frame) == before
    assert not list(tmp_path.rglob("*.weight.fits"))  # refused before any work


def test_summary_and_table_never_replace_an_input(frame, tmp_path, capsys):
    before = _digest(frame)
    rc, _, err = _run(["mask", frame, "-o", tmp_path / "out", "--summary", frame], capsys)
    assert rc == 2 and "refusing to write over the input" in err and _digest(frame) == before
    rc, _, err = _run(["track", frame, "--table", frame], capsys)
    assert rc == 2 and "refusing to write over the input" in err and _digest(frame) == before


def test_an_output_path_that_is_another_input_is_refused(frame, tmp_path, capsys):
    # f.masks.fits given as an input of the same run: writing f's masks would replace it.
    other = tmp_path / "f.masks.fits"
    shutil.copy(frame, other)
    rc, _, err = _run(["mask", frame, other, "--overwrite"], capsys)
    assert rc == 2 and "refusing to write over the input" in err
    assert _digest(other) == _digest(frame)


# -- commands share outputs -------------------------------------------------------
@needs_sex
def test_detect_then_sex_share_the_maps_and_keep_their_own_catalogues(frame, tmp_path, capsys):
    rc, out, err = _run(["maps", frame], capsys)
    assert rc == 0, err
    weight = tmp_path / "f.weight.fits"
    stamp = weight.stat().st_mtime_ns
    rc, out, err = _run(["detect", frame], capsys)
    assert rc == 0, err
    assert "reused maps" in out and weight.stat().st_mtime_ns == stamp
    rc, out, err = _run(["sex", frame], capsys)
    assert rc == 0, err
    assert "reused maps" in out and weight.stat().st_mtime_ns == stamp
    rc, out, err = _run(["detect", frame, "--no-mask"], capsys)
    assert rc == 0, err
    names = sorted(p.name for p in tmp_path.glob("f.*cat.fits"))
    assert names == ["f.nomask.sep.cat.fits", "f.sep.cat.fits", "f.sex.cat.fits"]
    # Maps made with other settings are not silently replaced.
    rc, out, err = _run(["detect", frame, "--grow", "2"], capsys)
    assert rc == 1 and "other settings" in err and weight.stat().st_mtime_ns == stamp
    rc, out, err = _run(["detect", frame, "--grow", "2", "--overwrite"], capsys)
    assert rc == 0 and weight.stat().st_mtime_ns != stamp


def test_rerunning_on_a_directory_skips_our_outputs(frame, tmp_path, capsys):
    rc, out, err = _run(["maps", tmp_path], capsys)
    assert rc == 0, err
    rc, out, err = _run(["maps", tmp_path], capsys)
    assert rc == 0 and "up to date" in out
    rc, out, err = _run(["detect", tmp_path], capsys)
    assert rc == 0, err
    # A renamed output is still recognised by its header, a plain copy of the input is not.
    shutil.copy(tmp_path / "f.flag.fits", tmp_path / "renamed.fits")
    shutil.copy(frame, tmp_path / "g.fits")
    rc, out, err = _run(["mask", tmp_path], capsys)
    assert rc == 0, err
    made = sorted(p.name for p in tmp_path.glob("*.masks.fits"))
    assert made == ["f.masks.fits", "g.masks.fits"]
    assert not list(tmp_path.glob("*.weight.weight.fits")) and not list(tmp_path.glob("*.flag.*cat*"))


def test_fixed_catalogue_name_with_several_inputs_is_refused_before_work(frame, tmp_path, capsys):
    g = tmp_path / "g.fits"
    shutil.copy(frame, g)
    rc, _, err = _run(["detect", frame, g, "-CATALOG_NAME", tmp_path / "test.cat", "-CATALOG_TYPE", "ASCII_HEAD"],
                      capsys)
    assert rc == 2 and "CATALOG_NAME" in err and "both" in err
    assert not list(tmp_path.glob("*.weight.fits"))


# -- bad values fail before work -------------------------------------------------------
@pytest.mark.parametrize("args,needle", [
    (["detect", "{f}", "-FOO", "1"], "FOO: not a SExtractor keyword"),
    (["detect", "{f}", "-DETECT_THRESH", "abc"], "DETECT_THRESH = 'abc'"),
    (["detect", "{f}", "-BACK_FILTERTHRESH", "1"], "did you mean BACK_FILTTHRESH"),
    (["detect", "{f}", "-c", "{bad_sex}"], "UNKNOWN_KEY: not a SExtractor keyword"),
    (["mask", "{f}", "--tile", "0"], "--tile: 0 is not a positive integer"),
    (["mask", "{f}", "--workers", "0"], "--workers: 0 is not a positive integer"),
    (["mask", "{f}", "--workers", "-1"], "--workers: -1 is not a positive integer"),
    (["mask", "{f}", "--margin", "-1"], "--margin: -1 is negative"),
    (["mask", "{f}", "--batch-size", "0"], "--batch-size: 0 is not a positive integer"),
    (["maps", "{f}", "--track-threshold", "5"], "--track-threshold: 5.0 is not a probability"),
    (["maps", "{f}", "--policy", "XX=zero"], "unknown contaminant class 'XX'"),
    (["mask", "{f}", "--config-dir", "{garbage}"], "classes.priors: not a text file"),
    (["mask", "{f}", "--config-dir", "{range}"], "classes.priors: class CR: prior 2.0"),
    (["simulate", "{d}/sims", "--size", "10"], "--size: 10 px is outside 64 to 16384"),
    (["simulate", "{d}/sims", "--size", "0"], "--size: 0 is not a positive integer"),
])
def test_bad_values_fail_before_work_in_one_line(frame, tmp_path, capsys, args, needle):
    (tmp_path / "bad.sex").write_text("DETECT_THRESH 2\nUNKNOWN_KEY 3\n")
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "classes.priors").write_bytes(bytes(range(256)) * 4)
    rng = tmp_path / "range"
    rng.mkdir()
    from maxidetect.classes import CLASS_NAMES

    (rng / "classes.priors").write_text("".join(f"{c} {2.0 if c == 'CR' else 0.1}\n" for c in CLASS_NAMES))
    fill = {"f": frame, "d": tmp_path, "bad_sex": tmp_path / "bad.sex", "garbage": garbage, "range": rng}
    try:
        rc, _, err = _run([a.format(**fill) for a in args], capsys)
    except SystemExit as exc:  # argparse's own errors
        rc, err = exc.code, capsys.readouterr().err
    assert rc == 2
    assert needle in err, err
    assert "Traceback" not in err
    assert not list(tmp_path.glob("*.weight.fits")) and not list(tmp_path.glob("*.masks.fits"))
    assert not (tmp_path / "sims").exists()


def test_unwritable_output_dir_reports_one_line_without_a_fake_hdu(frame, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    rc, _, err = _run(["mask", frame, "-o", ro, "--summary", tmp_path / "s.json"], capsys)
    assert rc == 1 and err.count("maxidetect: failed:") == 1
    import json

    assert json.loads((tmp_path / "s.json").read_text())["failures"][0]["hdu"] is None


def test_every_warning_names_its_file(tmp_path, capsys):
    """Warnings of several files interleave: each line names its file (the
    score's out-of-range PSF warning named none)."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:256, :256]
    img = rng.normal(1000.0, 10.0, (256, 256))
    for x, y in rng.uniform(15, 241, (25, 2)):
        img += 4e4 / (2 * np.pi * 3.0**2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 3.0**2))  # FWHM 7 px
    fits.PrimaryHDU(img.astype(np.float32)).writeto(tmp_path / "broad.fits")
    fits.PrimaryHDU(rng.normal(0.0, 1.0, (1, 200)).astype(np.float32)).writeto(tmp_path / "row.fits")
    rc, _, err = _run(["detect", tmp_path / "broad.fits", tmp_path / "row.fits", "--clean", "-o", tmp_path / "o"],
                      capsys)
    lines = [ln for ln in err.splitlines() if ln.startswith("maxidetect: warning:")]
    assert rc == 0 and any("training range" in ln for ln in lines) and any("PSF not" in ln for ln in lines)
    assert all(re.match(r"maxidetect: warning: \S+/(broad|row)\.fits", ln) for ln in lines), lines


# -- README and --help ------------------------------------------------------------------
def _readme():
    return (REPO / "README.md").read_text()


def test_every_option_the_readme_names_exists():
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices
    known = {opt for p in sub.values() for a in p._actions for opt in a.option_strings}
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", _readme()))
    missing = sorted(named - known - {"--help"})
    assert not missing, f"README names options no command has: {missing}"


def test_readme_python_snippet_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", _readme(), re.S)
    assert blocks, "the README shows the Python API"
    monkeypatch.chdir(tmp_path)
    shutil.copy(EXAMPLE, tmp_path / "frame.fits")
    namespace = {}  # the snippets build on each other, as a reader runs them
    for code in blocks:
        exec(compile(code, "README.md", "exec"), namespace)


@pytest.mark.parametrize("model", ["maxidetect-distill"])
def test_a_model_that_fails_the_maps_invariants_is_not_offered_for_maps(model):
    """maxidetect-distill calls real spectra and star fields trails: maps,
    detect and sex refuse it before any work, naming why; its masks stay
    available."""
    from maxidetect.errors import ConfigError
    from maxidetect.pipeline import Job

    for kind in ("maps", "detect", "sex"):
        with pytest.raises(ConfigError, match=f"not offered for maps .*maxidetect mask --model {model}"):
            Job.build(kind, model=model).validate()
    Job.build("mask", model=model).validate()
    Job.build("detect", model=model, no_mask=True).validate()  # no maps: no model needed


def test_numpy_huge_page_advice_is_off_unless_asked_for():
    """Importing maxidetect first turns numpy's transparent-huge-page advice
    off (the maps' whole-frame temporaries faulted in slowly), and leaves an
    explicit choice alone."""
    import subprocess
    import sys

    code = "import maxidetect, os; print(os.environ['NUMPY_MADVISE_HUGEPAGE'])"
    for given, want in ((None, "0"), ("1", "1")):
        env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
        if given is not None:
            env["NUMPY_MADVISE_HUGEPAGE"] = given
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == want
