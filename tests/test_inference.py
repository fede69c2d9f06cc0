"""Tiling: stitched == untiled, any size, pooling grid alignment."""

import numpy as np
import pytest
from astropy.io import fits

from maxidetect.network.inference import Predictor, tile_grid
from maxidetect.network.normalise import normalise

from .conftest import assert_probs_agree, real


@pytest.mark.parametrize("tile", [1024, 1568, 2048])
def test_tile_grid_partitions_the_image_with_aligned_origins(tile):
    for shape in [(2048, 2048), (1056, 640), (4096, 1024), (352, 96), (8000, 320), (2048, 4096)]:
        grid, (th, tw) = tile_grid(shape, tile, 160)
        assert th * tw <= tile**2  # the memory budget
        cover = np.zeros(shape, int)
        for y0, x0, ky0, ky1, kx0, kx1 in grid:
            assert y0 % 32 == 0 and x0 % 32 == 0
            assert y0 + th <= shape[0] and x0 + tw <= shape[1]
            # Each kept pixel is >= margin from any cut edge of its tile.
            assert ky0 == 0 or ky0 - y0 >= 160
            assert kx0 == 0 or kx0 - x0 >= 160
            assert ky1 == shape[0] or y0 + th - ky1 >= 160
            assert kx1 == shape[1] or x0 + tw - kx1 >= 160
            cover[ky0:ky1, kx0:kx1] += 1
        assert (cover == 1).all()


def test_tile_grid_prefers_the_least_overlap_within_the_budget():
    # A 2048 px frame within 1568**2 px: two 2048 x 1184 strips (1.16x the
    # pixels), not four 1184 px squares (1.34x).
    grid, (th, tw) = tile_grid((2048, 2048), 1568, 160)
    assert len(grid) == 2 and sorted((th, tw)) == [1184, 2048]
    assert tile_grid((2048, 2048), 1184, 160)[1] == (1184, 1184)
    assert len(tile_grid((2048, 2048), 2048, 160)[0]) == 1
    # A thin frame is cut across its length only.
    grid, shape = tile_grid((8000, 320), 1184, 160)
    assert len(grid) == 2 and shape == (4160, 320)


@pytest.mark.slow
def test_stitched_equals_untiled_on_real_image(predictor):
    im = normalise(fits.getdata(real("fitswcs_zpn_ukirt_wfcam.fits")))
    # 501 px pads to 512: one tile untiled, 6x6 tiles of 352 px with margin 160.
    whole = predictor.predict(im)
    tiled = Predictor(tile=352, margin=160).predict(im)
    assert_probs_agree(tiled, whole)
    # A too-small margin is visibly different: the margin matters.
    rough = Predictor(tile=352, margin=32).predict(im)
    assert np.abs(rough - whole).max() > 1e-3


def test_any_size_including_tiny(predictor):
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (7, 300), (150, 200), (33, 65)]:
        out = predictor.predict(rng.normal(size=shape).astype(np.float32))
        assert out.shape == (14,) + shape
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_batching_does_not_change_results(predictor):
    im = normalise(fits.getdata(real("fitswcs_tpv_ctio_mosaic2.fits")))[:400, :448]
    one = Predictor(tile=224, margin=64, batch_size=1).predict(im)
    four = Predictor(tile=224, margin=64, batch_size=4).predict(im)
    assert_probs_agree(one, four)


def test_bad_tile_settings_are_refused(predictor):
    with pytest.raises(ValueError, match="no room"):
        Predictor(tile=320, margin=160)
