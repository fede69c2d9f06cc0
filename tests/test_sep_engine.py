"""The SEP engine: SExtractor parity, no fragmentation, catalogue formats."""

import numpy as np
import pytest
import sep
from astropy.io import fits

from maxidetect.cli import main
from maxidetect.extract.catalog import read_catalog, write_catalog
from maxidetect.extract.config import SexConfig
from maxidetect.extract.sep_engine import detect

from .conftest import DATA

REF = DATA / "sextractor_reference"


def _ref():
    if not (REF / "image.fits").exists():
        pytest.skip("sextractor_reference data not available")
    return REF


def test_parity_with_sextractor_reference(tmp_path, monkeypatch):
    """`maxidetect detect image.fits --no-mask -c default.sex` reproduces the
    SExtractor catalogue: all 65 objects within 0.1 px, FLUX_AUTO within 1%."""
    ref = _ref()
    monkeypatch.chdir(tmp_path)
    rc = main(["detect", str(ref / "image.fits"), "--no-mask", "-c", str(ref / "default.sex"),
               "-CHECKIMAGE_TYPE", "NONE"])
    assert rc == 0
    ours = read_catalog(tmp_path / "test.cat")  # CATALOG_NAME and ASCII_HEAD from the config
    theirs = read_catalog(ref / "image.cat")
    assert len(theirs) == 65 and len(ours) == 65
    d = np.hypot(ours["X_IMAGE"][:, None] - theirs["X_IMAGE"][None], ours["Y_IMAGE"][:, None] - theirs["Y_IMAGE"][None])
    i = d.argmin(axis=0)
    assert np.all(d[i, np.arange(65)] < 0.1)
    assert len(set(i)) == 65
    ok = theirs["FLUX_AUTO"] > 0  # SExtractor 2.8.6 wrote 0 for one object
    rel = np.abs(ours["FLUX_AUTO"][i][ok] / theirs["FLUX_AUTO"][ok] - 1)
    assert rel.max() < 0.01
    rel_k = np.abs(ours["KRON_RADIUS"][i][ok] / theirs["KRON_RADIUS"][ok] - 1)
    assert rel_k.max() < 0.01


def _frame(size=400, seed=5):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    img = rng.normal(500.0, 8.0, (size, size))
    n = 120
    xs, ys = rng.uniform(5, size - 5, n), rng.uniform(5, size - 5, n)
    fl = 10 ** rng.uniform(2.3, 4.5, n)
    for x, y, f in zip(xs, ys, fl, strict=True):
        img += f / (2 * np.pi * 1.6**2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.6**2))
    return img


def _synthetic_1024():
    import importlib.util

    from .conftest import REPO

    spec = importlib.util.spec_from_file_location("synthetic", REPO / "benchmarks" / "synthetic.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_frame(1024, seed=3)[0].astype(np.float64)


def test_masked_lines_do_not_fragment():
    """A zero-weight row and column leave the detections as they were (minus
    what the lines cover). On this frame SEP's own matched filter with an rms
    array and the same mask multiplies them over the whole image."""
    img = _synthetic_1024()
    cfg = SexConfig()
    n0 = len(detect(img, cfg).catalog)
    w = np.ones_like(img)
    w[500, :] = 0
    w[:, 300] = 0
    n1 = len(detect(img, cfg, weight=w).catalog)
    assert n0 - 10 <= n1 <= n0 * 1.03 + 2
    # The SEP behaviour worked around (if SEP fixes it, this tells us).
    bkg = sep.Background(img)
    data = img - bkg.back()
    base = len(sep.extract(data, 1.5, err=bkg.rms()))
    bug = len(sep.extract(data, 1.5, err=bkg.rms(), mask=w == 0))
    assert bug > 1.5 * base


def test_soft_weights_and_flags_columns():
    img = _frame(200, seed=2)
    w = np.ones_like(img)
    w[50:60, 50:60] = 0.0
    flag = np.zeros(img.shape, np.int32)
    flag[:, :100] = 1024
    t = detect(img, SexConfig(), weight=w, flag=flag).catalog
    left = t["X_IMAGE"] < 95
    assert np.all(t["IMAFLAGS_ISO"][left] == 1024)
    assert np.all(t["NIMAFLAGS_ISO"][left] == t["ISOAREA_IMAGE"][left])
    assert np.all(t["IMAFLAGS_ISO"][t["X_IMAGE"] > 106] == 0)
    assert not np.any((t["X_IMAGE"] > 51.5) & (t["X_IMAGE"] < 59.5) & (t["Y_IMAGE"] > 51.5) & (t["Y_IMAGE"] < 59.5))


def test_catalog_formats_round_trip(tmp_path):
    img = _frame(160, seed=3)
    hdr = fits.Header({"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 10.0, "CRVAL2": -20.0,
                       "CRPIX1": 80.0, "CRPIX2": 80.0, "CD1_1": -7e-5, "CD2_2": 7e-5, "CD1_2": 0.0, "CD2_1": 0.0})
    t = detect(img, SexConfig(), header=hdr).catalog
    assert np.all(np.isfinite(t["ALPHA_J2000"])) and abs(np.median(t["DELTA_J2000"]) + 20) < 0.02
    for ctype, name in (("FITS_1.0", "a.fits"), ("FITS_LDAC", "b.fits"), ("ASCII_HEAD", "c.cat")):
        p = write_catalog([t], tmp_path / name, ctype, headers=[hdr])
        back = read_catalog(p)
        assert len(back) == len(t)
        np.testing.assert_allclose(back["X_IMAGE"], t["X_IMAGE"], rtol=1e-6)
    with fits.open(tmp_path / "b.fits") as h:
        assert [x.name for x in h[1:]] == ["LDAC_IMHEAD", "LDAC_OBJECTS"]
        assert any(c.startswith("CRVAL1") for c in h[1].data[0][0])
    with pytest.raises(FileExistsError):
        write_catalog([t], tmp_path / "a.fits", "FITS_1.0")


def test_segment_statistics_equal_scipy_ndimage():
    """Segments (one sort of the labelled pixels) gives what scipy.ndimage's
    labelled sum/maximum give, for any subset and order of ids, ids with no
    pixel and booleans; peak positions are the first maximum in raster order."""
    from scipy import ndimage

    from maxidetect.extract.segments import Segments

    rng = np.random.default_rng(9)
    seg, n = ndimage.label(rng.random((120, 150)) > 0.6)
    img = np.round(rng.normal(0, 3, seg.shape))  # integer values: ties within objects
    flag = rng.random(seg.shape) > 0.9
    for ids in (np.arange(1, n + 1), np.array([n, 3, 1, 7, n + 5])):
        s = Segments(seg, ids)
        have = ids <= n
        assert np.allclose(s.sum(img)[have], ndimage.sum(img, seg, ids[have]))
        assert np.array_equal(s.max(img)[have], ndimage.maximum(img, seg, ids[have]))
        assert np.array_equal(s.max(flag)[have].astype(bool), np.asarray(ndimage.maximum(flag, seg, ids[have]), bool))
        py, px = s.argmax(img)  # scipy breaks ties arbitrarily: the first in raster order, by brute force
        for i in np.flatnonzero(have):
            ys, xs = np.nonzero((seg == ids[i]) & (img == img[seg == ids[i]].max()))
            assert (py[i], px[i]) == (ys[0], xs[0])
        assert (s.sum(img)[~have] == 0).all() and (s.max(img)[~have] == 0).all()


def test_an_object_over_seps_first_pixel_stack_is_extracted_as_with_a_frame_sized_one(monkeypatch):
    """SEP's pixel stack is tried at SExtractor's MEMORY_PIXSTACK (sized to the frame, it took
    0.75 GB of a 4096^2 frame's maps): where an object holds more pixels over the threshold, the
    frame is extracted again with a stack of its size, and the catalogue is that stack's."""
    rng = np.random.default_rng(5)
    img = rng.normal(100.0, 5.0, (300, 300))
    yy, xx = np.mgrid[:300, :300]
    img += 400.0 * np.exp(-((xx - 150.0) ** 2 + (yy - 140.0) ** 2) / (2 * 60.0**2))  # ~30000 px over it
    for x, y in rng.uniform(20, 280, (15, 2)):
        img += 3000.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2))
    calls = []
    real = sep.extract

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(sep, "extract", counted)
    small = detect(img, SexConfig(overrides={"MEMORY_PIXSTACK": 2000})).catalog
    assert len(calls) == 2  # the first stack filled up
    calls.clear()
    whole = detect(img, SexConfig(overrides={"MEMORY_PIXSTACK": img.size})).catalog
    assert len(calls) == 1 and len(whole) >= 10
    for name in ("X_IMAGE", "Y_IMAGE", "FLUX_AUTO", "ISOAREA_IMAGE", "FLAGS"):
        np.testing.assert_array_equal(small[name], whole[name])
