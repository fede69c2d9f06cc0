"""MaxiTrack: the converted network equals the SavedModel, frame scores
separate clean from smeared simulated frames, the CLI table, and rejection
in the detection path."""

import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from maxidetect.errors import MaxidetectWarning
from maxidetect.network.maxitrack import Tracker, TrackerNet, tile_origins
from maxidetect.validation.simulate import SimConfig, simulate_frame
from maxidetect.validation.tracking import TRACKING_SIM

from .conftest import assert_probs_agree, real


@pytest.fixture(scope="module")
def tracker():
    return Tracker()


def test_equals_the_savedmodel_on_real_tiles():
    tf = pytest.importorskip("tensorflow")
    from maxidetect.network.normalise import normalise
    from maxidetect.network.weights import maximask_savedmodel_dir

    pytest.importorskip("maximask_and_maxitrack")
    sm = tf.saved_model.load(str(maximask_savedmodel_dir("maxitrack")))
    f = sm.signatures["serving_default"]
    model = TrackerNet()
    tiles = []
    for name in ("fitswcs_zpn_ukirt_wfcam.fits", "fitswcs_tpv_ctio_mosaic2.fits", "ccdproc_a8280271_saao_raw.fits"):
        # SEP's maps: tiles whose answers span both classes (checked below).
        n = normalise(fits.getdata(real(name)), background="sep")
        tiles += [n[:400, :400], n[-400:, -400:]]
    x = np.stack(tiles)[..., None].astype(np.float32)
    want = f(input_1=tf.constant(x))["output_1"].numpy()
    got = np.asarray(model(x))
    assert_probs_agree(got, want, mean_atol=1e-5)  # 12 numbers: no mean over many pixels to test
    assert want[:, 1].min() < 0.01 and want[:, 1].max() > 0.9  # the inputs span both answers
    # The same network with other weights is far off: the weights matter.
    from maxidetect.network.weights import load_tracker_arrays

    rng = np.random.default_rng(0)
    other = {k: tuple(rng.permutation(a.ravel()).reshape(a.shape) for a in v) for k, v in load_tracker_arrays().items()}
    assert np.abs(TrackerNet(other)(x) - want).max() > 0.01


def test_tiles_cover_the_frame_and_pad_small_ones(tracker):
    assert tile_origins(1000) == [100, 500] and tile_origins(400) == [0] and tile_origins(150) == [0]
    # A cut-out smaller than a tile is padded, and its score said to be unreliable.
    with pytest.warns(MaxidetectWarning, match="smaller than MaxiTrack's 400x400 tile"):
        t = tracker.tiles(np.random.default_rng(0).normal(100, 5, (150, 200)))
    assert t.shape == (1, 400, 400, 1) and np.all(t[0, :100, :, 0] == 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MaxidetectWarning)
        big = Tracker(max_tiles=3, model=tracker.model).tiles(np.random.default_rng(0).normal(100, 5, (1600, 1600)))
    assert big.shape[0] == 3


def test_clean_and_smeared_frames_separate(tracker):
    clean = [tracker.score_image(simulate_frame(610 + s, SimConfig(**TRACKING_SIM), size=800).image)[0]
             for s in range(3)]
    smeared = [tracker.score_image(simulate_frame(610 + s, SimConfig(**TRACKING_SIM, tracking_length=15),
                                                  size=800).image)[0] for s in range(3)]
    # Every smeared frame above every clean one (AUC 1) and above the
    # threshold; the clean ones below it but for the odd frame whose cosmic
    # rays read as streaks (seed 611: 0.56; 0.001 without its cosmic rays).
    assert max(clean) < min(smeared) and min(smeared) > tracker.threshold
    assert np.median(clean) < tracker.threshold
    # Without the 5% prior the clean frames score higher: the prior matters.
    raw = Tracker(prior=None, model=tracker.model)
    assert raw.score_image(simulate_frame(611, SimConfig(**TRACKING_SIM), size=800).image)[0] > clean[1]


def test_track_cli_table(tmp_path, capsys):
    from maxidetect.cli import main

    f = simulate_frame(620, SimConfig(**TRACKING_SIM, tracking_length=20), size=500)
    fits.PrimaryHDU(f.image).writeto(tmp_path / "smeared.fits")
    planes = [simulate_frame(s, SimConfig(**TRACKING_SIM), size=450).image for s in (621, 622)]
    mef = fits.HDUList([fits.PrimaryHDU()] + [fits.ImageHDU(p) for p in planes])
    mef.writeto(tmp_path / "mef.fits")
    rc = main(["track", str(tmp_path / "smeared.fits"), str(tmp_path / "mef.fits"), "--table",
               str(tmp_path / "t.csv"), "-q"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    rows = [line.split("\t") for line in out]
    assert [r[1] for r in rows] == ["0", "all", "1", "2", "all"]
    assert rows[0][3] == "trailed" and rows[-1][3] == "ok"
    t = Table.read(tmp_path / "t.csv")
    assert list(t.colnames) == ["path", "hdu", "probability", "verdict", "n_tiles"] and len(t) == 5
    assert np.isclose(t["probability"][4], np.mean(t["probability"][2:4]))
    assert main(["track", str(tmp_path / "smeared.fits"), "--table", str(tmp_path / "t.fits"), "-q"]) == 0
    assert len(Table.read(tmp_path / "t.fits")) == 2


def test_detect_rejects_trailed_frames_and_records_the_score(tmp_path, capsys):
    from maxidetect.cli import main

    sim = SimConfig(**TRACKING_SIM)
    fits.PrimaryHDU(simulate_frame(633, SimConfig(**TRACKING_SIM, tracking_length=20), size=500).image).writeto(
        tmp_path / "bad.fits")
    fits.PrimaryHDU(simulate_frame(632, sim, size=500).image).writeto(tmp_path / "good.fits")
    rc = main(["detect", str(tmp_path / "bad.fits"), str(tmp_path / "good.fits"), "--no-mask", "--reject-tracking"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "bad.fits: rejected" in out
    assert not (tmp_path / "bad.nomask.sep.cat.fits").exists()
    with fits.open(tmp_path / "good.nomask.sep.cat.fits") as h:
        assert h[1].header["MDTRKV"] == "ok" and 0 <= h[1].header["MDTRKP"] < 0.5
