"""Simulator, matcher, scoring and the benchmark report."""

import json
from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from maxidetect.cli import main
from maxidetect.validation.scoring import (
    MATCH_MIN_SNR,
    mask_quality,
    match_catalogs,
    match_truth,
    roc_curve,
    score_catalog,
)
from maxidetect.validation.simulate import BIT, TRUTH_LEVEL, SimConfig, simulate_frame, truth_level

# The knob that switches each contaminant off.
OFF = {
    "CR": {"n_cr": 0}, "HP": {"n_hp": 0}, "HCL": {"n_hcl": 0}, "DP": {"n_dp": 0}, "DCL": {"n_dcl": 0},
    "P": {"n_persistence": 0}, "TRL": {"n_trails": 0}, "FR": {"n_fringe_regions": 0}, "NEB": {"n_nebulae": 0},
    "BBG": {"n_bbg": 0}, "OV": {"overscan": 0}, "SP": {"spike_mag": -99.0},
}


def test_reproducible_by_seed():
    a = simulate_frame(3, size=256)
    b = simulate_frame(3, size=256)
    c = simulate_frame(4, size=256)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.truth, b.truth)
    assert a.catalog.pformat() == b.catalog.pformat()
    assert not np.array_equal(a.image, c.image)
    assert a.header["GAIN"] == 2.0 and "SATURATE" in a.header and a.header["CTYPE1"] == "RA---TAN"


@pytest.mark.parametrize("abbr", sorted(OFF))
def test_truth_mask_covers_injected_signal(abbr):
    """Noise-free frames with and without one contaminant (same seed): every
    pixel it changed by more than a small fraction of the sky noise is in its
    truth mask, and its truth mask is where it changed something."""
    cfg = SimConfig(noise=False, n_cr=3000, n_hp=400, n_dp=400, n_persistence=200, n_stars=4000,
                    star_mag=(10.0, 25.0))
    size = 384
    full = simulate_frame(11, cfg, size=size)
    off = simulate_frame(11, replace(cfg, **OFF[abbr]), size=size)
    noise = np.sqrt(full.header["SIMSKY"] * cfg.gain + cfg.rdnoise**2) / cfg.gain
    diff = full.image.astype(np.float64) - off.image
    truth = full.class_mask(abbr)
    assert truth.any(), f"{abbr} was not injected"
    assert not off.class_mask(abbr).any()
    sat = full.class_mask("SAT") | off.class_mask("SAT")
    level = truth_level(abbr, full.header["SIMSKY"], noise) if abbr in TRUTH_LEVEL else 0.5 * noise
    changed = (np.abs(diff) > level) & ~sat
    if abbr == "FR":  # a smooth-edged region: its truth is where the pattern is at half strength
        from scipy import ndimage

        truth = ndimage.binary_dilation(truth, iterations=40)
    missed = changed & ~truth
    assert missed.sum() <= 0.01 * max(changed.sum(), 1), f"{abbr}: {missed.sum()} changed pixels outside truth"
    if abbr != "FR":
        assert np.mean(np.abs(diff[truth & ~sat]) > 0) > 0.95


def test_cosmic_rays_blurred_by_charge_diffusion_keep_their_charge_and_their_truth():
    """Thick CCDs blur a hit's charge (``cr_diffusion``): the same cosmic rays,
    spread wider with lower peaks, the charge kept, the truth on the blurred
    light, and everything else in the frame exactly as without the blur."""
    cfg = SimConfig(noise=False, n_cr=1500, n_stars=300, n_galaxies=0, n_trails=0, overscan=0)
    size, sigma = 256, 0.6
    sharp, blurred = (simulate_frame(8, c, size=size) for c in (cfg, replace(cfg, cr_diffusion=(sigma, sigma))))
    off = simulate_frame(8, replace(cfg, n_cr=0), size=size)
    d_sharp, d_blur = (f.image.astype(np.float64) - off.image for f in (sharp, blurred))
    assert "SIMCRDIF" not in sharp.header and blurred.header["SIMCRDIF"] == sigma
    inner = np.zeros(d_blur.shape, bool)
    inner[8:-8, 8:-8] = True  # the blur carries charge over the frame's edge
    assert abs(d_blur[inner].sum() / d_sharp[inner].sum() - 1) < 0.02
    assert d_blur.max() < 0.5 * d_sharp.max()
    assert (d_blur > 1).sum() > 2 * (d_sharp > 1).sum()
    noise = np.sqrt(blurred.header["SIMSKY"] * cfg.gain + cfg.rdnoise**2) / cfg.gain
    truth, level = blurred.class_mask("CR"), truth_level("CR", blurred.header["SIMSKY"], noise)
    assert np.all(truth <= (d_blur > 0)) and np.all((d_blur > level) <= truth)
    np.testing.assert_array_equal(sharp.truth & ~BIT["CR"], blurred.truth & ~BIT["CR"])
    np.testing.assert_array_equal(simulate_frame(8, replace(cfg, n_cr=0, cr_diffusion=(sigma, sigma)), size=size).image,
                                  off.image)


def test_nearby_disc_galaxies_are_true_galaxies_and_leave_the_rest_of_the_frame_as_it_was():
    """``n_large_galaxies`` adds discs of r_eff 20-100 px to the truth catalogue as galaxies,
    their light summing to their flux (the part of it inside the frame); with none the frame is
    the default's, bit for bit."""
    cfg = SimConfig(noise=False, n_cr=0, n_hp=0, n_dp=0, n_trails=0, overscan=0)
    base, big = (simulate_frame(7, replace(cfg, n_large_galaxies=k), size=512) for k in (0.0, 1.0))
    np.testing.assert_array_equal(base.image, simulate_frame(7, cfg, size=512).image)
    assert len(big.catalog) == len(base.catalog) + 1  # this seed's draw: one disc
    disc = big.catalog[-1]
    assert disc["KIND"] == "galaxy" and 12.5 <= disc["MAG"] <= 16.0
    extra = big.image.astype(np.float64) - base.image
    assert extra.min() > -1e-3 * extra.max()
    assert 0.9 < extra.sum() / float(disc["FLUX"]) <= 1.0 + 1e-6
    many = simulate_frame(5, replace(cfg, n_large_galaxies=4.0), size=512)
    assert len(many.catalog) - len(simulate_frame(5, cfg, size=512).catalog) > 1


def test_matcher_one_to_one_radius_and_edges():
    true = np.array([[10.0, 10.0], [12.0, 10.0], [50.0, 50.0]])
    det = np.array([[11.1, 10.0], [10.2, 10.0], [80.0, 80.0], [50.0, 52.5]])
    di, ti = match_catalogs(det, true, radius=2.0)
    pairs = dict(zip(di.tolist(), ti.tolist(), strict=True))
    assert pairs == {1: 0, 0: 1}  # closest pair first, then the next; each used once
    di, ti = match_catalogs(det, true, radius=3.0)
    assert dict(zip(di.tolist(), ti.tolist(), strict=True))[3] == 2
    assert match_catalogs(np.zeros((0, 2)), true, 2.0)[0].size == 0
    assert match_catalogs(det, np.zeros((0, 2)), 2.0)[0].size == 0
    with pytest.raises(ValueError):
        match_catalogs(det, true, 0)
    # Two detections on one source: only one matches.
    di, ti = match_catalogs(np.array([[5.0, 5.0], [5.1, 5.0]]), np.array([[5.05, 5.0]]), 1.0)
    assert len(di) == 1


def test_a_detection_on_a_source_too_faint_to_detect_alone_is_not_credited_to_it():
    # A cosmic ray that lands on an S/N 1 star is spurious; one S/N 3 star is detectable alone.
    truth_cat = Table({"X": [10.0, 40.0], "Y": [10.0, 40.0], "SNR": [1.0, MATCH_MIN_SNR], "FLUX": [1.0, 1.0],
                       "MAG": [25.0, 24.0]})
    det = np.array([[10.5, 10.0], [40.5, 40.0]])
    di, ti = match_truth(det, truth_cat, 2.0)
    assert di.tolist() == [1] and ti.tolist() == [1]
    assert match_truth(det, truth_cat, 2.0, min_snr=0.5)[1].tolist() == [0, 1]
    s = score_catalog(Table({"X_IMAGE": det[:, 0] + 1, "Y_IMAGE": det[:, 1] + 1, "FLUX_AUTO": [1.0, 1.0]}),
                      truth_cat, np.zeros((50, 50), np.int32), 2.0)
    assert s["n_spurious"] == 1 and s["n_matched"] == 1


def test_a_much_brighter_detection_is_not_the_faint_source_it_lies_on():
    """A nebula knot of S/N 200 within 1 FWHM of an S/N 4 star is not that
    star; a blend of two faint stars (2x the flux) is still one of them, and
    a bright star on a nebula (its aperture flux 10x its own) is that star."""
    from maxidetect.validation.scoring import MATCH_FLUX_RATIO

    truth_cat = Table({"X": [10.0, 40.0, 42.0, 70.0], "Y": [10.0, 40.0, 40.0, 70.0], "SNR": [4.0, 4.0, 4.0, 50.0],
                       "FLUX": [100.0, 100.0, 100.0, 1000.0], "MAG": [24.0, 24.0, 24.0, 21.0]})
    det = np.array([[10.5, 10.0], [40.5, 40.0], [70.5, 70.0]])
    flux, err = np.array([5000.0, 600.0, 10000.0]), np.array([25.0, 25.0, 25.0])
    di, ti = match_truth(det, truth_cat, 2.0, det_flux=flux, det_flux_err=err)
    assert di.tolist() == [1, 2] and ti.tolist() == [1, 3]
    assert match_truth(det, truth_cat, 2.0)[0].tolist() == [0, 1, 2]  # by position alone
    # the limit: ratio x the true light within reach + 5 errors
    edge = MATCH_FLUX_RATIO * 100.0 + 5 * 25.0
    assert len(match_truth(det[:1], truth_cat, 2.0, det_flux=[edge], det_flux_err=[25.0])[0]) == 1
    assert len(match_truth(det[:1], truth_cat, 2.0, det_flux=[edge + 1], det_flux_err=[25.0])[0]) == 0
    s = score_catalog(Table({"X_IMAGE": det[:, 0] + 1, "Y_IMAGE": det[:, 1] + 1, "FLUX_AUTO": flux,
                             "FLUXERR_AUTO": err}), truth_cat, np.zeros((80, 80), np.int32), 2.0)
    assert s["n_spurious"] == 1 and s["n_matched"] == 2 and s["matched_det"].tolist() == [False, True, True]


def test_a_cosmic_ray_flag_on_a_real_source_counts_as_false_only_without_a_hit_in_its_isophote():
    """The bench counts the bright real sources a catalogue kept to
    IMAFLAGS_ISO == 0 loses for a false call: a star flagged CR with a hit in
    its isophote is rightly flagged, one without is not; a faint one, an
    unflagged one and one flagged for something else do not count."""
    truth_cat = Table({"X": [10.0, 40.0, 70.0, 70.0, 10.0], "Y": [10.0, 10.0, 10.0, 50.0, 50.0],
                       "FLUX": [1e4] * 5, "MAG": [20.0] * 5, "SNR": [100.0, 100.0, 100.0, 100.0, 10.0]})
    mask = np.zeros((80, 80), np.int32)
    mask[12, 13] = BIT["CR"]  # a hit 3.6 px from the first star, inside its isophote (radius 4.4 px)
    cr, fr = BIT["CR"], BIT["FR"]
    cat = Table({"X_IMAGE": [11.0, 41.0, 71.0, 71.0, 11.0], "Y_IMAGE": [11.0, 11.0, 11.0, 51.0, 51.0],
                 "FLUX_AUTO": [1e4] * 5, "ISOAREA_IMAGE": [60] * 5, "IMAFLAGS_ISO": [cr, cr, 0, fr, cr]})
    s = score_catalog(cat, truth_cat, mask, fwhm=2.0)
    assert s["n_bright_matched"] == 4 and s["n_bright_false_point_flag"] == 1
    cat.remove_column("IMAFLAGS_ISO")  # no maps: nothing to count
    assert score_catalog(cat, truth_cat, mask, fwhm=2.0)["n_bright_matched"] == 0


def test_score_and_quality_on_hand_made_catalogues():
    truth_cat = Table({"X": [10.0, 30.0, 60.0], "Y": [10.0, 30.0, 60.0], "FLUX": [1e4, 1e4, 50.0],
                       "MAG": [20.0, 20.0, 25.0], "SNR": [100.0, 100.0, 2.0]})
    mask = np.zeros((80, 80), np.int32)
    mask[70, 70] = BIT["CR"]
    cat = Table({"X_IMAGE": [11.0, 71.0, 5.0], "Y_IMAGE": [11.2, 71.0, 75.0], "FLUX_AUTO": [9.0e3, 1.0, 1.0]})
    s = score_catalog(cat, truth_cat, mask, fwhm=2.0)
    assert s["n_matched"] == 1 and s["n_spurious"] == 2
    assert s["spurious_by_class"]["CR"] == 1 and s["spurious_by_class"]["none"] == 1
    assert s["completeness"] == 0.5  # the S/N 2 source does not count
    assert s["flux_bias"] == pytest.approx(-0.1)
    probs = np.zeros((1, 80, 80), np.float32)
    probs[0, 70, 70] = 0.9
    probs[0, 0, 0] = 0.8
    from maxidetect.classes import class_index

    q = mask_quality(probs, [0.5], mask, [class_index("CR")])["CR"]
    assert q["tpr"] == 1.0 and q["purity"] == 0.5 and q["fpr"] == pytest.approx(1 / (80 * 80 - 1))
    fpr, tpr, auc = roc_curve(probs[0], mask == BIT["CR"])
    assert auc > 0.99 and tpr[-1] == 1.0 and fpr[-1] == 1.0


def test_simulate_cli_writes_frame_truth_catalogue(tmp_path):
    assert main(["simulate", str(tmp_path), "--seed", "5", "--size", "256"]) == 0
    img = fits.getdata(tmp_path / "sim5.fits")
    with fits.open(tmp_path / "sim5.truth.fits") as h:
        assert h[0].data.shape == img.shape and h["CLASSES"].data.shape == (14, 256, 256)
        np.testing.assert_array_equal(h["CLASSES"].data[0], (h[0].data & 1) != 0)
    cat = Table.read(tmp_path / "sim5.truth.cat.fits")
    assert {"X", "Y", "FLUX", "MAG", "KIND", "SNR", "CONTAM"} <= set(cat.colnames)
    assert main(["simulate", str(tmp_path), "--seed", "5", "--size", "256"]) == 1  # exists
    (tmp_path / "bad.json").write_text('{"nope": 1}')
    assert main(["simulate", str(tmp_path), "--config", str(tmp_path / "bad.json")]) == 2


@pytest.mark.slow
def test_bench_quick_report(tmp_path, monkeypatch):
    """`maxidetect bench --quick` end to end: report, JSON and plots; its
    frames, maps and catalogues (no --work-dir) are not left behind."""
    import tempfile

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    assert main(["bench", "--quick", "--engines", "SEP", "-o", "out"]) == 0
    assert not any((tmp_path / "tmp").iterdir())
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    rows = res["summary"]["default"]
    strategies = {r["strategy"] for r in rows}
    assert {"none", "none@maps-noise", "network", "maxidetect", "oracle"} <= strategies
    oracle = next(r for r in rows if r["strategy"] == "oracle")
    none = next(r for r in rows if r["strategy"] == "none")
    fused = next(r for r in rows if r["strategy"] == "maxidetect")
    assert oracle["n_spurious"] < none["n_spurious"] and fused["n_spurious"] < none["n_spurious"]
    assert set(fused["lost"]) == {"20-50", "50-200", "200-inf"} and 0 <= fused["pixels"]["CR"] <= 1
    assert 0 <= fused["pixels"]["BBG"] <= 1 and oracle["pixels"]["BBG"] == 1.0
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| maxidetect | SEP |" in text and "mask quality per class" in text and "Pixel recall" in text
    assert "BBG precision" in text and "flagged CR/HP falsely" in text
    nf, nm = fused["false_point_flags"]
    assert nm > 0 and 0 <= nf <= nm  # the maps' catalogue carries IMAFLAGS_ISO
    for png in ("completeness.png", "contamination.png", "roc.png"):
        assert (tmp_path / "out" / png).stat().st_size > 1000


def test_bench_measures_the_maps_of_the_model_it_is_given(tmp_path):
    """`bench --model NAME` runs that model's network (a model not offered for
    maps included: this is how one is checked against the maps' invariants),
    says so in the report; an unknown name is one line and exit 2."""
    from maxidetect.validation.bench import BenchOptions, run_bench, write_report

    res = {}
    for name in ("maximask", "maxidetect-distill"):
        opts = BenchOptions(n_frames=1, size=256, seed=3, engines=("SEP",), model=name)
        res[name] = run_bench(opts, work_dir=tmp_path / name, progress=False)
        assert res[name]["options"]["model"] == name
    # Same frame, other weights: the network's masks differ.
    q = [res[n]["frames"][0]["mask_quality"] for n in res]
    assert json.dumps(q[0], default=float) != json.dumps(q[1], default=float)
    write_report(res["maxidetect-distill"], tmp_path / "out")
    assert "Network: `maxidetect-distill`" in (tmp_path / "out" / "report.md").read_text()
    assert main(["bench", "--quick", "--model", "no-such-model", "-o", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


def test_noise_matched_control_detects_at_the_maps_absolute_threshold():
    """Zero weight on a noisy strip lowers the frame's measured noise; the
    control run's DETECT_THRESH drops by the same ratio."""
    from maxidetect.extract.config import SexConfig
    from maxidetect.maps.writer import MapSet
    from maxidetect.validation.bench import _noise_matched

    rng = np.random.default_rng(0)
    img = rng.normal(100.0, 10.0, (256, 256))
    img[:, :160] += rng.normal(0.0, 30.0, (256, 160))  # noisy meshes (most of them) the maps zero
    w = np.ones(img.shape, np.float32)
    w[:, :160] = 0
    cfg = _noise_matched(SexConfig(), img, MapSet(weight=w, flag=np.zeros(img.shape, np.int32)))
    assert 0.5 < cfg.get_float("DETECT_THRESH", 0) < 1.45
    same = _noise_matched(SexConfig(), img, MapSet(weight=np.ones_like(w), flag=np.zeros(img.shape, np.int32)))
    assert same.get_float("DETECT_THRESH", 0) == pytest.approx(1.5)


def test_lost_source_cause_counts_zeroed_pixels_within_one_fwhm():
    """The bench says whether a lost source was masked or lost another way."""
    from maxidetect.maps.writer import MapSet
    from maxidetect.validation.bench import _zero_near

    w = np.ones((50, 50), np.float32)
    w[20, 20:23] = 0  # three zeroed pixels 0-2 px from (20, 20)
    w[40, 40] = 0  # far away
    ms = MapSet(weight=w, flag=np.zeros((50, 50), np.int32))
    assert _zero_near(ms, 20.0, 20.0, fwhm=2.5) == 3
    assert _zero_near(ms, 30.0, 30.0, fwhm=2.5) == 0
    assert _zero_near(ms, 0.0, 49.0, fwhm=2.5) == 0 and _zero_near(None, 20.0, 20.0, 2.5) == 0


def test_a_source_clean_drops_is_reported_with_the_score_that_dropped_it():
    """The bench names why --clean lost a source: the score of the maps'
    detection nearest to it (1-based catalogue positions), none past 1 FWHM."""
    from maxidetect.validation.bench import _score_near

    cat = Table({"X_IMAGE": [11.0, 31.0], "Y_IMAGE": [11.0, 41.0], "MD_CONTAM": [0.95, 0.1],
                 "MD_CLASS": ["P", "none"]})
    assert _score_near(cat, 10.5, 10.0, fwhm=2.0) == {"md_contam": pytest.approx(0.95), "md_class": "P"}
    assert _score_near(cat, 30.0, 43.0, fwhm=2.0) == {}
    assert _score_near(cat[:0], 10.0, 10.0, fwhm=2.0) == {}


def test_a_lost_source_is_reported_with_where_its_detection_went():
    """The bench tells a lost source whose detection moved (the nearest
    detection a few px off, its isophote beside the no-mask run's) from one
    with no detection left near it (merged into a larger object, or gone)."""
    from maxidetect.validation.bench import NEAREST_FWHM, _nearest, _nearest_text

    cat = Table({"X_IMAGE": [15.0, 81.0], "Y_IMAGE": [11.0, 81.0], "ISOAREA_IMAGE": [692, 40]})
    n = _nearest(cat, 10.0, 10.0, fwhm=2.0)  # 4 px off, 1-based positions
    assert n == {"px": pytest.approx(4.0), "area": 692}
    assert _nearest(cat, 40.0, 40.0, fwhm=2.0) == {}  # 41 px > 5 FWHM from either
    assert _nearest(cat[:0], 10.0, 10.0, 2.0) == {} and _nearest(None, 10.0, 10.0, 2.0) == {}
    text = _nearest_text({"nearest": n, "nearest_none": {"px": 1.4, "area": 2158}})
    assert "4.0 px off" in text and "692 px" in text and "no mask 1.4 px, 2158 px" in text
    assert _nearest_text({"nearest": {}}) == f", no detection within {NEAREST_FWHM:g} FWHM"
    assert _nearest_text({}) == ""  # results written before the field existed


def test_a_saturated_star_matches_its_detection_anywhere_on_its_footprint():
    """Bleeding moves a saturated star's centroid by several FWHM: its
    detection is that star, not a spurious one; a faint star on the bleed and
    a spike detection far along it are no pair, and without the truth mask the
    rule is off."""
    truth_cat = Table({"X": [20.0, 20.0, 60.0], "Y": [20.0, 38.0, 60.0], "SNR": [3000.0, 5.0, 100.0],
                       "FLUX": [1e7, 100.0, 1e4], "MAG": [14.0, 24.0, 19.0]})
    mask = np.zeros((80, 80), np.int32)
    mask[12:40, 19:22] = BIT["SAT"]  # core and bleed along the column
    # the star's detection 6 px down its bleed, a spike detection 10 px along it, a star elsewhere
    cat = Table({"X_IMAGE": [21.0, 21.0, 61.0], "Y_IMAGE": [27.0, 31.0, 61.0], "FLUX_AUTO": [9e6, 50.0, 1e4]})
    s = score_catalog(cat, truth_cat, mask, fwhm=2.0)
    assert s["matched_det"].tolist() == [True, False, True]
    assert sorted(s["matched_true"].tolist()) == [0, 2]
    assert score_catalog(cat, truth_cat, np.zeros_like(mask), fwhm=2.0)["matched_det"].tolist() == [False, False, True]


def test_bench_maps_carry_the_fusion_cards_the_score_reads(tmp_path):
    """The bench scores its catalogues from maps written as `maxidetect maps`
    writes them: the PSF FWHM and the fitted trails in both headers (without
    them the score measures its own FWHM and sees no trail)."""
    from maxidetect.maps.fusion import FusionReport
    from maxidetect.maps.trails import Trail, trails_from_header
    from maxidetect.maps.writer import MapSet
    from maxidetect.validation.bench import _write_maps

    report = FusionReport(fwhm=2.7, fwhm_measured=True,
                          trails=[Trail(0.5, 100.0, 1.2, 8.0, -300.0, 300.0, 40.0, "hough")])
    ms = MapSet(weight=np.ones((32, 32), np.float32), flag=np.zeros((32, 32), np.int32), report=report)
    hdr = fits.Header({"GAIN": 2.0})
    for path in _write_maps(tmp_path / "m.fits", ms, hdr):
        h = fits.getheader(path)
        assert h["MDFWHM"] == pytest.approx(2.7) and h["GAIN"] == 2.0
        assert len(trails_from_header(h)) == 1
    assert "MDFWHM" not in hdr  # the frame's own header is left alone
