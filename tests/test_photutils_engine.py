"""photutils as a third extractor: SExtractor's deblending and CLEAN on
photutils' segments, parity with the SEP engine on constructed blends and a
real frame, maps as masks, the CLI route, and a clear error when the extra
is missing."""

import sys

import numpy as np
import pytest
from astropy.io import fits

from maxidetect.cli import main
from maxidetect.errors import ConfigError
from maxidetect.extract.catalog import read_catalog
from maxidetect.extract.config import SexConfig
from maxidetect.extract.sep_engine import detect
from maxidetect.validation.scoring import match_catalogs

from .conftest import EXAMPLE

pytest.importorskip("photutils")
from maxidetect.extract.photutils_engine import _clean, _deblend, detect_photutils  # noqa: E402


def _gauss(shape, x, y, sigma, amp):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return amp * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / sigma**2)


def test_bumps_on_a_plateau_stay_one_object_but_two_stars_split():
    """SExtractor's contrast: a branch counts by its flux above its own
    level. Noise-sized bumps on a broad plateau carry almost nothing above
    their levels (photutils' basin criterion kept each one); two stars on the
    same plateau are two objects, each holding its own peak."""
    shape = (80, 120)
    plateau = _gauss(shape, 60, 40, 25, 50.0)
    bumps = sum(_gauss(shape, x, y, 1.5, 1.5) for x, y in [(40, 30), (75, 45), (55, 55), (70, 25)])
    data = plateau + bumps
    parents = (data > 5).astype(np.int32)
    thresh = np.full(shape, 5.0)
    out, branches = _deblend(data, parents, thresh, 32, 0.005, 5)
    assert len(np.unique(out[out > 0])) == 1 and not branches.any()
    stars = data + _gauss(shape, 40, 30, 1.5, 400.0) + _gauss(shape, 75, 45, 1.5, 400.0)
    out, branches = _deblend(stars, parents, thresh, 32, 0.005, 5)
    assert len(np.unique(out[out > 0])) == 2
    assert out[30, 40] != out[45, 75] and branches[30, 40] == out[30, 40] and branches[45, 75] == out[45, 75]
    assert (out > 0).sum() == (parents > 0).sum()  # every pixel of the segment is given to one of them


def _blends(seed=3):
    """Pairs of stars at 2.5-8 px separations and flux ratios 1-30 on noise."""
    rng = np.random.default_rng(seed)
    shape = (200, 260)
    img = rng.normal(0.0, 10.0, shape)
    for k, (sep_px, ratio) in enumerate([(2.5, 1), (3.5, 3), (4.5, 10), (6, 30), (8, 2), (5, 1)]):
        x0, y0 = 40 + 90 * (k % 3), 50 + 100 * (k // 3)
        img += _gauss(shape, x0, y0, 1.3, 3000.0) + _gauss(shape, x0 + sep_px, y0 + 1, 1.3, 3000.0 / ratio)
    return img.astype(np.float32)


def test_deblending_agrees_with_the_sep_engine():
    """Blended pairs: the same objects as SEP's (SExtractor's algorithm), at
    the same places. A known background keeps the two background
    estimators out of the comparison."""
    img = _blends()
    cfg = SexConfig().with_overrides({"BACK_TYPE": "MANUAL", "BACK_VALUE": "0"})
    ph, se = detect_photutils(img, cfg).catalog, detect(img, cfg).catalog
    i, j = match_catalogs(np.c_[ph["X_IMAGE"], ph["Y_IMAGE"]], np.c_[se["X_IMAGE"], se["Y_IMAGE"]], 0.5)
    assert len(ph) == len(se) == len(i) >= 8  # the wider pairs split, the closest and faintest not, in both


def test_clean_drops_a_wing_bump_and_keeps_a_separate_star():
    shape = (120, 160)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    star = 5e4 * (1 + ((xx - 50) ** 2 + (yy - 60) ** 2) / 9.0) ** -2.0
    img = star + _gauss(shape, 72, 60, 1.0, 3.0) + _gauss(shape, 140, 60, 1.5, 300.0)
    thresh = np.full(shape, 10.0)
    labels = np.zeros(shape, np.int32)
    labels[img > 10] = 1
    labels[(np.hypot(xx - 72, yy - 60) < 2.5) & (img > 10)] = 2  # a wing bump 22 px out, its own segment
    labels[(np.hypot(xx - 140, yy - 60) < 4) & (img > 10)] = 3
    out = _clean(img, img, thresh, labels, 5, 1.0)
    assert set(np.unique(out)) == {0, 1, 3}
    assert (out[labels == 2] == 0).all()


def test_real_frame_parity_with_the_sep_engine():
    img = fits.getdata(EXAMPLE).astype(np.float32)
    cfg = SexConfig()
    ph = detect_photutils(img, cfg).catalog
    se = detect(img, cfg).catalog
    i, _ = match_catalogs(np.c_[ph["X_IMAGE"], ph["Y_IMAGE"]], np.c_[se["X_IMAGE"], se["Y_IMAGE"]], 1.5)
    # the same algorithm on photutils' parts: counts within 10%, nearly all of SEP's found at the same place
    assert abs(len(ph) - len(se)) <= 0.1 * len(se)
    assert len(i) >= 0.9 * len(se)


def test_zero_weight_pixels_are_never_detected():
    img = fits.getdata(EXAMPLE).astype(np.float32)
    full = detect_photutils(img).catalog
    k = int(np.argmax(full["FLUX_AUTO"]))
    x, y = int(full["X_IMAGE"][k] - 1), int(full["Y_IMAGE"][k] - 1)
    weight = np.ones_like(img)
    weight[max(0, y - 25):y + 26, max(0, x - 25):x + 26] = 0
    d = detect_photutils(img, weight=weight)
    assert (d.segmentation[weight == 0] == 0).all()
    assert np.hypot(np.asarray(d.catalog["X_IMAGE"]) - 1 - x, np.asarray(d.catalog["Y_IMAGE"]) - 1 - y).min() > 10


def test_a_frame_without_one_usable_pixel_gives_an_empty_catalogue_as_sep_does():
    """All blank, or all zero weight: photutils raised "All input pixels are
    masked" (the maps and the SEP engine give an empty catalogue)."""
    img = fits.getdata(EXAMPLE).astype(np.float32)
    for image, weight in ((np.full((64, 80), np.nan, np.float32), None), (img, np.zeros_like(img))):
        d = detect_photutils(image, weight=weight)
        assert len(d.catalog) == 0 and len(detect(image, weight=weight).catalog) == 0
        assert not d.segmentation.any() and d.segmentation.shape == image.shape


def test_cli_writes_sextractor_named_columns(tmp_path):
    src = tmp_path / "f.fits"
    src.write_bytes(EXAMPLE.read_bytes())
    assert main(["detect", str(src), "--extractor", "photutils", "-o", str(tmp_path / "out"), "-q"]) == 0
    cats = list((tmp_path / "out").glob("*.phot.cat.fits"))
    assert len(cats) == 1
    t = read_catalog(cats[0])
    for col in ("NUMBER", "X_IMAGE", "Y_IMAGE", "FLUX_AUTO", "MAG_AUTO", "FLUX_RADIUS", "IMAFLAGS_ISO", "MD_CONTAM",
                "MD_CLASS"):
        assert col in t.colnames
    assert len(t) > 10


def test_missing_extra_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "photutils.segmentation", None)
    with pytest.raises(ConfigError, match=r"maxidetect\[photutils\]"):
        detect_photutils(np.zeros((64, 64), np.float32))
