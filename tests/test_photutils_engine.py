"""photutils as a third extractor: SExtractor's deblending criterion on
photutils' children, parity with the SEP engine on a real frame, maps as
masks, the CLI route, and a clear error when the extra is missing."""

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
from maxidetect.extract.photutils_engine import _branch_contrast, detect_photutils  # noqa: E402


def _gauss(shape, x, y, sigma, amp):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return amp * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / sigma**2)


def test_bumps_on_a_plateau_merge_but_two_stars_stay_apart():
    """A broad plateau with small bumps: photutils' basins each carry a share
    of the plateau and pass its test; above their saddles they carry almost
    nothing, so SExtractor's criterion keeps one object. Two real stars on
    the same plateau stay two."""
    shape = (80, 120)
    plateau = _gauss(shape, 60, 40, 25, 50.0)
    bumps = sum(_gauss(shape, x, y, 1.5, 1.5) for x, y in [(40, 30), (75, 45), (55, 55), (70, 25)])
    data = plateau + bumps
    parents = (data > 5).astype(np.int32)
    # photutils-like children: the plateau cut into the bumps' basins (nearest bump)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    d = np.stack([(xx - x) ** 2 + (yy - y) ** 2 for x, y in [(40, 30), (75, 45), (55, 55), (70, 25)]])
    children = np.where(parents > 0, 1 + d.argmin(0), 0).astype(np.int32)
    out = _branch_contrast(data, parents, children, 0.005)
    assert len(np.unique(out[out > 0])) == 1
    # Two bright stars on the plateau: each is far above its saddle.
    stars = data + _gauss(shape, 40, 30, 1.5, 400.0) + _gauss(shape, 75, 45, 1.5, 400.0)
    d2 = np.stack([(xx - 40) ** 2 + (yy - 30) ** 2, (xx - 75) ** 2 + (yy - 45) ** 2])
    two = np.where(parents > 0, 1 + d2.argmin(0), 0).astype(np.int32)
    assert len(np.unique(_branch_contrast(stars, parents, two, 0.005)[parents > 0])) == 2


def test_real_frame_parity_with_the_sep_engine():
    img = fits.getdata(EXAMPLE).astype(np.float32)
    cfg = SexConfig()
    ph = detect_photutils(img, cfg).catalog
    se = detect(img, cfg).catalog
    i, _ = match_catalogs(np.c_[ph["X_IMAGE"], ph["Y_IMAGE"]], np.c_[se["X_IMAGE"], se["Y_IMAGE"]], 1.5)
    # photutils has no CLEAN: a few more objects, nearly all of SEP's found at the same place
    assert len(se) <= len(ph) <= 1.5 * len(se)
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
