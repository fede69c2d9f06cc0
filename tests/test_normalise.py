"""Normalisation: MaxiMask's maps reproduced, the other choices, edge cases."""

import numpy as np
import pytest
from astropy.io import fits

from maxidetect.network.normalise import BACKGROUNDS, normalise, normalise_settings
from maxidetect.network.weights import get_model_info

from .conftest import real


def _bright_patch_frame():
    """Flat sky with a region of bright background that fills whole meshes."""
    rng = np.random.default_rng(8)
    im = 1000.0 + rng.normal(0, 10.0, (1000, 1200))
    im[300:700, 400:800] += 300.0
    return im.astype(">f4")


@pytest.mark.parametrize("name", ["fitswcs_tpv_ctio_mosaic2.fits", "ccdproc_a8280271_saao_raw.fits", None])
def test_maximask_background_reproduces_maximask_normalisation(name):
    """Against MaxiMask's own function (installed package): equal to float32
    rounding, edges included, on real frames and on a frame whose bright
    background fills whole meshes (MaxiMask gives outlier meshes their
    neighbours' level, so the region stays bright for the network to see);
    SEP's full-frame maps differ by tens of sigma."""
    from maximask_and_maxitrack.utils import image_norm

    data = fits.getdata(real(name)) if name else _bright_patch_frame()  # big-endian, as read
    ref = image_norm(np.asarray(data, np.float32))[0]
    ours = normalise(data)
    assert np.abs(ours - ref).max() < 1e-3
    sep_maps = np.abs(normalise(data, background="sep") - ref)
    assert np.percentile(sep_maps, 99) > 1.0
    if name is None:
        assert np.median(ours[350:650, 450:750]) > 10  # 30 sigma above the sky


@pytest.mark.parametrize("background", BACKGROUNDS)
def test_noise_with_a_sloped_background_becomes_unit_normal(background):
    """Away from the edges, sky + gradient + Gaussian noise of known sigma
    normalises to mean 0, sigma 1, on a frame off the mesh grid (1030x1290)."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:1030, 0:1290]
    sky = 1000.0 + 0.05 * xx - 0.03 * yy
    x = normalise((sky + rng.normal(0, 12.0, sky.shape)).astype(">f4"), background=background)
    inner = x[250:-250, 250:-250]
    assert abs(inner.mean()) < 0.03 and abs(inner.std() - 1) < 0.03


def test_maximask_maps_sag_at_the_edges_and_centred_does_not():
    """MaxiMask's zero-padded node filter lowers both maps near the frame
    edges (a flat sky comes out positive there); the centred choice keeps
    flat sky at zero everywhere."""
    rng = np.random.default_rng(4)
    im = (500.0 + rng.normal(0, 10.0, (800, 800))).astype(np.float32)
    sag = normalise(im)
    flat = normalise(im, background="centred")
    assert sag[:20, :20].mean() > 2  # corner: background pulled towards 0
    assert abs(sag[300:500, 300:500].mean()) < 0.05
    assert abs(flat[:20, :20].mean()) < 0.3 and abs(flat.mean()) < 0.05


@pytest.mark.parametrize("shape", [(7, 300), (150, 200), (399, 401), (1, 64)])
def test_small_frames_are_finite_and_unbiased(shape):
    """Axes shorter than two meshes (MaxiMask refuses them): one mesh along the
    axis, constant maps, no sag."""
    rng = np.random.default_rng(5)
    im = rng.normal(100.0, 5.0, shape)
    for b in BACKGROUNDS:
        x = normalise(im, background=b)
        assert x.dtype == np.float32 and np.isfinite(x).all()
        if im.size >= 2000:
            assert abs(np.median(x)) < 0.15 and abs(x.std() - 1) < 0.1


def test_constant_zero_and_nan_regions():
    rng = np.random.default_rng(6)
    im = rng.normal(50.0, 3.0, (600, 600))
    im[:, :250] = 40.0  # constant meshes: no noise there
    im[400:, 400:] = np.nan
    for b in BACKGROUNDS:
        assert np.isfinite(normalise(im, background=b)).all()  # zero-noise meshes take the typical noise
    # Next to the constant meshes the sky stays near 0: the mesh they share
    # with the sky is MaxiMask's clipped mean of both (what the network was
    # trained on: 0.3 sigma off here), not a runaway level or noise.
    x = normalise(im, background="centred")
    assert abs(np.median(x[50:350, 450:550])) < 0.5
    assert not normalise(np.zeros((300, 300))).any()
    assert not normalise(np.full((300, 300), np.nan)).any()


def test_input_untouched_unless_asked_and_bad_arguments():
    im = np.random.default_rng(7).normal(10.0, 1.0, (256, 256)).astype(np.float32)
    before = im.copy()
    out = normalise(im)
    assert np.array_equal(im, before) and out is not im
    same = normalise(im, copy=False)
    assert same is im and np.array_equal(same, out)
    with pytest.raises(ValueError, match="background"):
        normalise(before, background="photutils")
    with pytest.raises(ValueError, match="2-D"):
        normalise(before[None])


def test_model_settings_choose_the_background():
    assert normalise_settings(get_model_info("maximask").normalisation)["background"] == "maximask"
    assert normalise_settings({**get_model_info("maximask").normalisation, "background": "sep"})["background"] == "sep"
    # Entries written before the key existed were trained on SEP's maps.
    assert normalise_settings({"background_mesh": 128})["background"] == "sep"
    assert normalise_settings({"background_mesh": 128})["mesh"] == 128


@pytest.mark.parametrize("scale,sky_subtracted", [(100.0, False), (1e4, False), (1e3, True), (1e-30, False),
                                                  (1e-30, True)])
def test_frames_beyond_the_clip_range_normalise_as_the_frame_in_it(scale, sky_subtracted):
    """A real frame in other units (a co-add in electrons, a frame x 100, a
    sky-subtracted frame of large noise, a frame in erg/s/cm^2/Hz) normalises
    as the frame itself: clipped to [-500, 80000] first, the whole frame was
    flattened (x 100: no cosmic ray left, a fifth of it called trail and
    bright background) or its star cores made plateaus; at 1e-30 float32's
    squares underflowed and its noise read 0. The frame in range stays
    MaxiMask's."""
    from maximask_and_maxitrack.utils import image_norm

    data = np.asarray(fits.getdata(real("ccdproc_a8280271_saao_raw.fits")), np.float64)
    if sky_subtracted:
        data = data - np.median(data)
    ref = normalise(data)
    assert np.abs(ref - image_norm(data.astype(np.float32))[0]).max() < 1e-3
    got = normalise(data * scale)
    assert np.abs(got - ref).max() < 0.01


@pytest.mark.parametrize("background", ["centred", "maximask"])
def test_mesh_statistics_on_threads_equal_one_thread(monkeypatch, background):
    from maxidetect.network import normalise as module

    rng = np.random.default_rng(4)
    image = rng.normal(1000.0, 10.0, (1000, 1000)).astype(np.float32)
    image[300:340, 500:560] += 5000.0  # a bright patch: clipping iterations differ between meshes
    monkeypatch.setattr(module, "_cores", lambda: 1)
    one = module.normalise(image, background=background)
    monkeypatch.setattr(module, "_cores", lambda: 4)
    assert np.array_equal(module.normalise(image, background=background), one)
