"""The per-detection score: features on constructed objects, the shipped
model (checksum, exact tree evaluation), MD_CONTAM/MD_CLASS in every
catalogue format of both engines, and --clean."""

import gzip
import json
import shutil

import numpy as np
import pytest
from astropy.io import fits

from maxidetect.cli import main
from maxidetect.errors import WeightsError
from maxidetect.extract.catalog import read_catalog
from maxidetect.maps.trails import Trail
from maxidetect.score.features import FEATURES, detection_features
from maxidetect.score.model import ScoreModel, load_score_model

from .conftest import EXAMPLE, REPO

needs_sex = pytest.mark.skipif(not (shutil.which("source-extractor") or shutil.which("sex")),
                               reason="SExtractor not installed")
F = {name: k for k, name in enumerate(FEATURES)}


def _gauss(shape, x, y, flux, fwhm):
    yy, xx = np.indices(shape)
    s = fwhm / 2.3548
    return flux * np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / s**2) / (2 * np.pi * s * s)


def test_features_see_what_a_person_would():
    rng = np.random.default_rng(0)
    img = rng.normal(100, 3, (96, 96))
    img += _gauss(img.shape, 30.2, 30.7, 3000, 3.5)  # a star
    img[60, 60] += 600  # a cosmic ray
    seg = np.zeros(img.shape, np.int32)
    seg[24:38, 24:38] = 1
    seg[59:62, 59:62] = 2
    yy, xx = np.indices(img.shape)
    along = np.abs((xx - 70) * np.sin(np.radians(20)) - (yy - 20) * np.cos(np.radians(20))) < 1.2
    img[along & (xx > 62) & (xx < 82)] += 40  # a trail fragment at 20 deg
    seg[along & (xx > 62) & (xx < 82)] = 3
    flag = np.zeros(img.shape, np.int32)
    flag[60, 60] = 1  # the network calls the ray CR
    trail = Trail(theta=np.radians(20 + 90), rho=70 * np.cos(np.radians(110)) + 20 * np.sin(np.radians(110)),
                  sigma=1.0, amplitude=5, t0=-500, t1=500, significance=10, source="test")
    x = detection_features(img, np.ones_like(img), flag, seg, [1, 2, 3], fwhm=3.5, trails=[trail])
    star, cr, frag = x
    assert cr[F["sharpness"]] > 0.9 and star[F["sharpness"]] < 0.5  # sharper than the PSF
    assert cr[F["peak_frac_psf"]] > 3 * star[F["peak_frac_psf"]]
    assert 0.7 < star[F["r50_psf"]] < 1.4 and cr[F["r50_psf"]] < 0.5
    assert cr[F["core_CR"]] == 1 and star[F["core_CR"]] == 0
    assert frag[F["elongation"]] > 3 and frag[F["trail_dist"]] < 1 and frag[F["trail_angle"]] < 10
    assert star[F["trail_dist"]] > 5
    # The PSF fits a star best, a narrower profile fits a cosmic ray better.
    assert star[F["psf_r2"]] > 0.9 and star[F["psf_r2"]] > star[F["psf_r2_narrow"]]
    assert cr[F["psf_r2_narrow"]] > cr[F["psf_r2"]]
    assert 0.7 < star[F["psf_flux_frac"]] < 1.3
    # The same frame in erg/s/cm^2/A or x 1e25 is the same frame: the features' floors (1e-12 on
    # fluxes and sums of squares) once made a star's score 0.5 from 0.
    for scale in (1e-19, 1e25):
        y = detection_features(img * scale, np.ones_like(img), flag, seg, [1, 2, 3], fwhm=3.5, trails=[trail])
        np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-4)


def test_a_star_on_a_nebula_is_psf_shaped_a_knot_of_it_is_not():
    """Once the local light is taken out, a star on a nebula fits the PSF and
    its PSF component is most of its own light; a knot of the nebula is broader."""
    rng = np.random.default_rng(1)
    img = rng.normal(100, 3, (160, 160))
    yy, xx = np.indices(img.shape)
    img += 150 * np.exp(-0.5 * ((xx - 80) ** 2 + (yy - 80) ** 2) / 30**2)  # a nebula
    img += _gauss(img.shape, 90.3, 74.6, 4000, 3.0)  # a star on it
    img += _gauss(img.shape, 50.0, 110.0, 30000, 9.0)  # a knot, three PSFs broad
    seg = np.zeros(img.shape, np.int32)
    seg[66:84, 82:100] = 1
    seg[98:123, 38:63] = 2
    star, knot = detection_features(img, np.ones_like(img), np.zeros(img.shape, np.int32), seg, [1, 2], fwhm=3.0)
    assert star[F["psf_r2"]] > 0.85 and star[F["psf_r2"]] > star[F["psf_r2_broad"]]
    assert knot[F["psf_r2_broad"]] > knot[F["psf_r2"]] + 0.1
    # A zero-weight pixel (a cosmic ray masked on the star) is left out of the fit.
    img2 = img.copy()
    img2[75, 91] += 5000
    weight = np.ones_like(img)
    weight[75, 91] = 0
    masked = detection_features(img2, weight, np.zeros(img.shape, np.int32), seg, [1], fwhm=3.0)[0]
    assert masked[F["psf_r2"]] > 0.8


def _trailed(shape, x, y, flux, sigma, length, angle):
    """A round Gaussian star of ``sigma`` dragged ``length`` px along ``angle`` (a tracking error)."""
    yy, xx = np.indices(shape)
    out = np.zeros(shape)
    for t in np.linspace(-length / 2, length / 2, 41):
        cx, cy = x + t * np.cos(angle), y + t * np.sin(angle)
        out += np.exp(-0.5 * ((xx - cx) ** 2 + (yy - cy) ** 2) / sigma**2)
    return flux * out / out.sum()


def test_shapes_are_read_against_a_trailed_psf():
    """Stars trailed 10 px by a tracking error in good seeing are as long as a cosmic-ray track:
    against the frame's trailed PSF they are PSF-shaped (elongation as the PSF's, along its axis,
    fitted by it), a track across them is not; read against a round PSF the star is not either."""
    from maxidetect.score.features import PsfShape

    sig, length, ang = 0.6, 10.0, np.radians(30)
    var = np.sqrt(sig**2 * (sig**2 + length**2 / 12))  # the trailed PSF's geometric-mean variance
    q, fwhm = sig**2 / var, 2.3548 * np.sqrt(var)
    rng = np.random.default_rng(3)
    img = rng.normal(100, 3, (96, 96))
    star_light = _trailed(img.shape, 30.3, 30.6, 6000, sig, length, ang)
    track_light = _trailed(img.shape, 66.0, 64.0, 6000, 0.45, length, ang + np.radians(80))
    img += star_light + track_light
    seg = np.where(star_light > 6, 1, np.where(track_light > 6, 2, 0)).astype(np.int32)  # isophotes at 2 sigma
    trailed = PsfShape(q=q, theta=ang, trailed=True)
    star, track = detection_features(img, np.ones_like(img), None, seg, [1, 2], fwhm=fwhm, psf=trailed)
    assert star[F["elongation"]] > 3 and 0.7 < star[F["elong_psf"]] < 1.4 and star[F["psf_angle"]] < 8
    assert star[F["psf_q"]] == pytest.approx(q) and track[F["psf_angle"]] > 60
    assert star[F["psf_r2"]] > 0.9 and star[F["psf_r2"]] > track[F["psf_r2"]] + 0.2
    assert 0.7 < star[F["psf_flux_frac"]] < 1.3 and 0.6 < star[F["peak_frac_psf"]] < 1.6
    assert 0.7 < star[F["r50_psf"]] < 1.4
    round_ = detection_features(img, np.ones_like(img), None, seg, [1], fwhm=fwhm)[0]
    assert round_[F["psf_r2"]] < star[F["psf_r2"]] - 0.1 and round_[F["elong_psf"]] > 3


def test_a_star_cut_by_a_masked_column_is_seen_as_one_object_in_two_pieces():
    """SEP on a star crossed by a zero-weight dead column: two detections, the
    fainter one knows a brighter object lies across the gap (zero_split > 0),
    the brighter sees only a fainter one (< 0), a star alone has none."""
    from maxidetect.extract.config import SexConfig
    from maxidetect.extract.sep_engine import detect

    rng = np.random.default_rng(2)
    img = rng.normal(100, 3, (96, 96))
    img += _gauss(img.shape, 30.0, 40.0, 40000, 3.5)  # cut 1.5 px right of its centre
    img += _gauss(img.shape, 70.0, 70.0, 20000, 3.5)  # alone
    weight = np.ones_like(img)
    img[:, 32] = 3.0
    weight[:, 32] = 0
    d = detect(img, SexConfig(), weight=weight)
    x = detection_features(img, weight, None, d.segmentation, d.catalog["NUMBER"], fwhm=3.5)
    xs, ys = np.asarray(d.catalog["X_IMAGE"]) - 1, np.asarray(d.catalog["Y_IMAGE"]) - 1
    main = np.argmin(np.hypot(xs - 30, ys - 40))
    piece = np.argmin(np.hypot(xs - 34, ys - 40))
    alone = np.argmin(np.hypot(xs - 70, ys - 70))
    assert len({main, piece, alone}) == 3 and abs(xs[piece] - 34) < 2
    assert x[piece, F["zero_split"]] > 0.3 and x[main, F["zero_split"]] < -0.3
    assert x[alone, F["zero_split"]] == -3.0


def test_shipped_model_is_verified_and_evaluated_exactly(tmp_path, monkeypatch):
    from maxidetect.network import weights

    model = load_score_model()
    assert model.classes[0] and "real" in model.classes and 0 < model.threshold < 1
    x = np.random.default_rng(1).normal(0, 1, (50, len(FEATURES))).astype(np.float32)
    p = model.predict_proba(x)
    assert p.shape == (50, len(model.classes)) and np.allclose(p.sum(1), 1)
    contam, cls = model.score(x)
    assert np.all((contam >= 0.5) == (cls != "none"))
    # A damaged model file is refused, naming it; a missing one too.
    src = weights.weights_dir()
    for name in ("manifest.json", model.source.split("/")[-1]):
        shutil.copy(src / name, tmp_path / name)
    shipped = tmp_path / model.source.split("/")[-1]
    assert shipped.name.endswith(".json.gz")  # gzip on disk, checksum of the JSON
    spec = json.loads(gzip.decompress(shipped.read_bytes()))
    spec["threshold"] = 0.01
    shipped.write_bytes(gzip.compress(json.dumps(spec).encode()))
    monkeypatch.setenv("MAXIDETECT_WEIGHTS_DIR", str(tmp_path))
    import maxidetect.score.model as sm

    monkeypatch.setattr(sm, "_CACHE", {})
    with pytest.raises(WeightsError, match="checksum"):
        load_score_model()
    (tmp_path / model.source.split("/")[-1]).unlink()
    with pytest.raises(WeightsError, match="score model missing"):
        load_score_model()


def test_scoring_a_frame_broader_than_the_training_psfs_warns_once():
    """The shipped model saw FWHM 1.5-4.5 px; in bad seeing its scores are
    extrapolated (faint broad stars pass for cosmic rays), so scoring says so,
    once per run; within the range it is silent."""
    import warnings

    from maxidetect.errors import MaxidetectWarning
    from maxidetect.score.catalogs import Scorer

    model = load_score_model()
    lo, hi = model.fwhm_range
    assert (lo, hi) == (1.5, 4.5)
    rng = np.random.default_rng(3)
    img = rng.normal(100, 3, (64, 64)) + _gauss((64, 64), 30.0, 30.0, 5000, 3.0)
    seg = np.zeros(img.shape, np.int32)
    seg[24:37, 24:37] = 1
    scorer = Scorer(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scorer.columns(img, None, None, seg, [1], fits.Header({"MDFWHM": 3.0}))
        # a 4.5 px frame's PSF measures 5-17% broader: still the training range
        scorer.columns(img, None, None, seg, [1], fits.Header({"MDFWHM": 4.6}))
        assert not [w for w in caught if issubclass(w.category, MaxidetectWarning)]
        for _ in range(2):
            scorer.columns(img, None, None, seg, [1], fits.Header({"MDFWHM": 8.0}))
    msgs = [str(w.message) for w in caught if issubclass(w.category, MaxidetectWarning)]
    assert len(msgs) == 1 and "8.00 px" in msgs[0] and "1.5-4.5 px" in msgs[0]


def test_sklearn_trees_and_the_json_export_agree():
    pytest.importorskip("sklearn")
    from sklearn.ensemble import HistGradientBoostingClassifier

    from maxidetect.training.score import export

    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (600, len(FEATURES)))
    y = np.where(x[:, 0] + 0.5 * x[:, 3] > 0.3, "real", np.where(x[:, 5] > 0, "CR", "TRL"))
    clf = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(x, y)
    ours = ScoreModel(export(clf, {}))
    np.testing.assert_allclose(ours.predict_proba(x), clf.predict_proba(x), atol=1e-12)
    # Missing values (a PSF fit not measurable) take the same branch in both.
    x[::3, [0, F["psf_r2"]]] = np.nan
    np.testing.assert_allclose(ours.predict_proba(x), clf.predict_proba(x), atol=1e-12)


def test_the_score_does_not_learn_contaminants_the_frame_holds_no_evidence_of():
    """A persistence ghost is an earlier exposure's star: without the network's
    P flag it is left out of training (a soft galaxy looks the same), with it
    it is learnt; every other class is learnt from its shape and context."""
    from maxidetect.training.score import trainable

    x = np.zeros((5, len(FEATURES)), np.float32)
    y = np.array(["P", "P", "P", "real", "CR"], dtype=object)
    x[1, F["iso_P"]] = 0.4  # flagged over its isophote
    x[2, F["core_P"]] = 1.0  # flagged at its core
    x[0, F["iso_NEB"]] = 1.0  # another class's flag is no evidence of persistence
    assert trainable(x, y).tolist() == [False, True, True, True, True]


def test_clean_threshold_protects_the_completeness_population_only():
    from maxidetect.training.score import choose_threshold

    # 400 real S/N > 10 detections scored 0-0.5, one at 0.9; 100 faint real
    # ones scored up to 0.97 (noise-like); spurious ones near 1.
    rng = np.random.default_rng(0)
    contam = np.r_[rng.uniform(0, 0.5, 400), 0.9, rng.uniform(0.6, 0.97, 100), rng.uniform(0.95, 1, 300)]
    real = np.r_[np.ones(401, bool), np.ones(100, bool), np.zeros(300, bool)]
    snr = np.r_[np.full(401, 50.0), np.full(100, 5.0), np.full(300, np.nan)]
    t = choose_threshold(contam, real, snr, max_real_loss=0.0025)
    # the one outlier above 0.5 is the 0.25% allowed; the faint ones do not count
    assert 0.45 < t < 0.9
    assert (contam[:401] >= t).sum() == 1
    # without the S/N cut, faint real detections push the threshold up
    assert choose_threshold(contam, real, max_real_loss=0.0025) > 0.95
    # never above the cap, whatever the scores
    assert choose_threshold(np.ones(10), np.ones(10, bool)) == 0.99


@pytest.mark.slow
def test_rethreshold_keeps_the_trees_and_records_the_frames(tmp_path):
    """A new threshold from more held-out frames: the same trees, the rule's
    threshold on those frames, and the frames in the recipe and record."""
    from maxidetect.network.weights import weights_dir
    from maxidetect.training.score import choose_threshold, rethreshold

    src = tmp_path / "m.json.gz"
    shutil.copy(weights_dir() / "score-model.json.gz", src)
    shutil.copy(REPO / "benchmarks" / "results" / "score" / "score-model.record.json", tmp_path / "m.record.json")
    rec = rethreshold(src, tmp_path / "out.json.gz", held_seed=900, threshold_frames=1, size=256, progress=False)
    before, after = load_score_model(path=src), load_score_model(path=tmp_path / "out.json.gz")
    assert after.spec["iterations"] == before.spec["iterations"]
    raw = rec["raw"]["in_range"]
    assert after.threshold == rec["threshold"] == choose_threshold(np.asarray(raw["contam"]),
                                                                   np.asarray(raw["real"]), np.asarray(raw["snr"]))
    assert after.spec["recipe"]["threshold_frames"] == [900, 900]
    assert json.loads((tmp_path / "out.record.json").read_text())["recipe"]["threshold_frames"] == [900, 900]


@pytest.fixture
def frame(tmp_path):
    with fits.open(EXAMPLE) as h:
        fits.PrimaryHDU(h[0].data[:256, :256].astype(np.float32), h[0].header).writeto(tmp_path / "f.fits")
    return tmp_path / "f.fits"


@pytest.mark.parametrize("ctype", ["FITS_1.0", "FITS_LDAC", "ASCII_HEAD"])
@pytest.mark.parametrize("command", ["detect", pytest.param("sex", marks=needs_sex)])
def test_score_columns_in_every_format_and_clean_drops_exactly_the_rows_above(frame, tmp_path, ctype, command,
                                                                             capsys):
    suffix = ".cat.fits" if ctype.startswith("FITS") else ".cat"
    tag = "sep" if command == "detect" else "sex"
    assert main([command, str(frame), "-CATALOG_TYPE", ctype, "-o", str(tmp_path / "all")]) == 0
    full = read_catalog(tmp_path / "all" / f"f.{tag}{suffix}")
    assert {"MD_CONTAM", "MD_CLASS"} <= set(full.colnames) and len(full) > 5
    contam = np.asarray(full["MD_CONTAM"], float)
    assert contam.min() >= 0 and contam.max() <= 1
    assert set(np.unique(full["MD_CLASS"])) <= set(load_score_model().classes) | {"none"}
    # halfway between two scores: ASCII catalogues round MD_CONTAM, so a
    # threshold equal to a printed score could fall on either side of it
    srt = np.unique(contam)
    thr = float(0.5 * (srt[len(srt) // 2 - 1] + srt[len(srt) // 2]))
    assert main([command, str(frame), "-CATALOG_TYPE", ctype, "-o", str(tmp_path / "clean"), "--clean",
                 "--contam-threshold", f"{thr}"]) == 0
    clean = read_catalog(tmp_path / "clean" / f"f.{tag}{suffix}")
    assert len(clean) == int((contam < thr).sum())
    np.testing.assert_allclose(np.sort(np.asarray(clean["MD_CONTAM"], float)), np.sort(contam[contam < thr]),
                               rtol=1e-5)
    capsys.readouterr()


def test_no_detection_gives_an_empty_catalogue_with_the_columns(tmp_path):
    fits.PrimaryHDU(np.random.default_rng(3).normal(100, 1, (64, 64)).astype(np.float32)).writeto(tmp_path / "n.fits")
    assert main(["detect", str(tmp_path / "n.fits"), "--no-mask", "-DETECT_THRESH", "50"]) == 0
    cat = read_catalog(tmp_path / "n.nomask.sep.cat.fits")
    assert len(cat) == 0 and "MD_CONTAM" in cat.colnames


def test_training_sets_are_kept_and_read_back_by_their_recipe(tmp_path):
    """``make_dataset(cache=...)`` keeps a set's features and reads them back, the same arrays;
    another recipe (here a tracking error) is another set."""
    from maxidetect.training.score import make_dataset

    args = ([901], 256, {"fwhm": (2.0, 2.0)})
    first = make_dataset(*args, progress=False, tracking=(6.0,), cache=tmp_path)
    again = make_dataset(*args, progress=False, tracking=(6.0,), cache=tmp_path)
    assert len(list(tmp_path.glob("dataset-*.npz"))) == 1
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(np.asarray(a, dtype=float if a.dtype != object else object),
                              np.asarray(b, dtype=float if b.dtype != object else object),
                              equal_nan=a.dtype != object)
    other = make_dataset(*args, progress=False, tracking=(0.0,), cache=tmp_path)
    assert len(list(tmp_path.glob("dataset-*.npz"))) == 2 and not np.array_equal(other[0], first[0])
