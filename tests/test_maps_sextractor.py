"""Maps from masks, and the real SExtractor binary reading them."""

import shutil

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from maxidetect.classes import CLASSES, class_index
from maxidetect.cli import _split_argv, build_parser, main
from maxidetect.errors import ConfigError, InputError, SExtractorError
from maxidetect.extract.catalog import read_catalog
from maxidetect.extract.config import SexConfig, find_binary, read_param_file
from maxidetect.extract.inprocess import detect_file
from maxidetect.extract.sextractor import build_command, run_sextractor
from maxidetect.maps.writer import MapPolicy, compute_maps, maps_from_masks, write_maps

from .conftest import EXAMPLE, real

needs_sex = pytest.mark.skipif(
    shutil.which("source-extractor") is None and shutil.which("sex") is None,
    reason="SExtractor binary not installed (.ci/run installs Debian's source-extractor)",
)


def _star_field(size=200, seed=1):
    """Gaussian stars on a flat noisy sky; returns image and star positions."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    img = rng.normal(1000.0, 10.0, (size, size))
    pos = [(40.3, 50.7), (120.2, 80.9), (160.6, 150.1), (60.5, 160.4), (100.1, 30.2)]
    for x, y in pos:
        img += 3000.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2))
    return img.astype(np.float32), pos


def _write(path, data, header=None):
    fits.PrimaryHDU(data, header=header).writeto(path)
    return path


# -- maps --------------------------------------------------------------------
def test_policy_defaults_and_overrides():
    p = MapPolicy()
    zero = {CLASSES[i].abbr for i in p.indices("zero")}
    assert {"CR", "HP", "DP", "HCL", "DCL", "P", "TRL", "OV"} == zero
    assert {"SAT", "SP", "BBG", "NEB", "FR"} == {CLASSES[i].abbr for i in p.indices("flag")}
    q = MapPolicy.parse("SAT=zero,cr=none")
    assert q.actions["SAT"] == "zero" and q.actions["CR"] == "none"
    with pytest.raises(ValueError, match="action"):
        MapPolicy.parse("SAT=maybe")
    with pytest.raises(ValueError, match="unknown contaminant class"):
        MapPolicy.parse("XYZ=zero")


def test_compute_maps_from_real_network(maker):
    """CTIO cut: the saturated star is flagged (SAT bit) but keeps weight 1;
    zeroed pixels are exactly the zero-policy classes' masks."""
    with fits.open(real("fitswcs_tpv_ctio_mosaic2.fits")) as h:
        img = h[0].data[384:512, 384:512].astype(np.float32)
    masks = maker.masks(img).astype(bool)
    ms = compute_maps(img, maker, MapPolicy(noise=False, fuse=False))
    sat = masks[class_index("SAT")]
    assert sat.sum() > 20, "the saturated star should be masked"
    assert np.all(ms.flag[sat] & 512)
    zero_cls = [class_index(c) for c in ("CR", "HCL", "DCL", "HP", "DP", "P", "TRL", "OV")]
    expect_zero = masks[zero_cls].any(axis=0)
    np.testing.assert_array_equal(ms.weight == 0, expect_zero)
    assert ms.weight.dtype == np.float32 and ms.flag.dtype == np.int32
    # Growth and soft weights.
    grown = compute_maps(img, maker, MapPolicy(grow=2, noise=False, fuse=False))
    assert (grown.weight == 0).sum() >= (ms.weight == 0).sum()
    assert np.all(grown.weight[ms.weight == 0] == 0)
    soft = compute_maps(img, maker, MapPolicy(soft=True, noise=False, fuse=False))
    assert np.all(soft.weight[ms.weight == 0] == 0)
    assert soft.weight.min() >= 0 and soft.weight.max() <= 1
    # A user weight map: its zeros stay zero.
    user = np.ones_like(img)
    user[:, :10] = 0
    mu = compute_maps(img, maker, MapPolicy(fuse=False), user_weight=user)
    noisy = compute_maps(img, maker, MapPolicy(noise=True, fuse=False))  # same zeros, positive elsewhere
    np.testing.assert_array_equal(noisy.weight == 0, ms.weight == 0)
    assert noisy.weight[ms.weight > 0].min() > 0
    assert np.all(mu.weight[:, :10] == 0)


@pytest.mark.parametrize("policy", [MapPolicy(noise=False), MapPolicy(grow=2, soft=True), MapPolicy(noise=True)],
                         ids=["default", "grow-soft", "noise"])
def test_streamed_map_files_equal_in_memory_maps(maker, tmp_path, monkeypatch, policy):
    """write_maps writes flags tile by tile and weights band by band: the files
    must equal compute_maps' arrays exactly, user weights included."""
    import maxidetect.maps.writer as maps_mod

    monkeypatch.setattr(maps_mod, "BAND_ROWS", 48)  # several bands on a small cut
    with fits.open(real("fitswcs_tpv_ctio_mosaic2.fits")) as h:
        img = h[0].data[384:512, 300:620].astype(np.float32)
    user = np.ones_like(img)
    user[50:60] = 0.5
    user[:, :3] = 0
    path = _write(tmp_path / "cut.fits", img)
    upath = _write(tmp_path / "cut.w.fits", user)
    w, f = write_maps(path, maker, policy, weight_image=upath, reuse_masks=False)
    expect = compute_maps(img, maker, policy, user_weight=user)
    assert (expect.weight == 0).sum() > 384 and (expect.flag != 0).any()
    np.testing.assert_array_equal(fits.getdata(w), expect.weight)
    np.testing.assert_array_equal(fits.getdata(f), expect.flag)
    # Maps from ready masks and the probabilities they came from: the same again.
    probs = maker.probabilities(img.copy())
    again = maps_from_masks(probs > maker.config.thresholds[maker.selected][:, None, None], maker, policy,
                            user_weight=user, image=img, probs=probs)
    np.testing.assert_array_equal(again.weight, expect.weight)
    np.testing.assert_array_equal(again.flag, expect.flag)


@pytest.mark.parametrize("policy", [MapPolicy(), MapPolicy(fuse=False, noise=False)], ids=["fused", "network"])
def test_pixels_without_data_get_zero_weight(maker, tmp_path, policy):
    """NaN (a resampled frame's blank corner, a hole) and inf pixels have no
    measurement: weight 0 in every route, also where the network's
    normalisation overwrites the image; and inf does not overflow
    L.A.Cosmic's electrons (a RuntimeWarning before)."""
    import warnings

    with fits.open(real("fitswcs_tpv_ctio_mosaic2.fits")) as h:
        img = h[0].data[384:512, 300:620].astype(np.float32)
    img[40:70, 100:140] = np.nan  # inside the frame: no edge statistics to catch it
    img[:12, :20] = np.nan
    img[100, 200:203] = np.inf
    missing = ~np.isfinite(img)
    path = _write(tmp_path / "holes.fits", img)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        ms = compute_maps(img.copy(), maker, policy, inplace=True)
        w, _ = write_maps(path, maker, policy, reuse_masks=False)
    for weight in (ms.weight, fits.getdata(w)):
        assert (weight[missing] == 0).all()
        assert (weight[~missing] > 0).mean() > 0.95


def test_write_maps_single_and_mef_layout(maker, tmp_path):
    ctio = shutil.copy(real("fitswcs_tpv_ctio_mosaic2.fits"), tmp_path / "ctio.fits")
    w, f = write_maps(ctio, maker)
    with fits.open(w) as hw, fits.open(f) as hf, fits.open(ctio) as hi:
        assert len(hw) == len(hf) == 1
        assert hw[0].data.shape == hi[0].data.shape and hw[0].data.dtype.kind == "f"
        assert hf[0].data.dtype == np.dtype(">i4")
        assert WCS(hw[0].header).wcs.compare(WCS(hi[0].header).wcs)
        assert hf[0].header["MDWZERO"].startswith("CR")
    gmos = shutil.copy(real("astroscrappy_gmos.fits"), tmp_path / "gmos.fits")
    w, f = write_maps(gmos, maker)
    with fits.open(w) as hw, fits.open(gmos) as hi:
        assert len(hw) == len(hi) == 4
        assert hw[0].data is None
        assert all(hw[k].data.shape == hi[k].data.shape for k in (1, 2, 3))
    with pytest.raises(FileExistsError):
        write_maps(gmos, maker)


def test_write_maps_bad_user_weight_writes_nothing(maker, tmp_path):
    img, _ = _star_field(64)
    path = _write(tmp_path / "im.fits", img)
    bad = _write(tmp_path / "w.fits", np.ones((32, 32), np.float32))
    with pytest.raises(InputError, match=r"w\.fits.*does not match"):
        write_maps(path, maker, weight_image=bad)
    assert not (tmp_path / "im.weight.fits").exists() and not (tmp_path / "im.flag.fits").exists()


# -- configuration -----------------------------------------------------------
def test_split_sextractor_arguments():
    sub = build_parser()._subparsers._group_actions[0].choices["sex"]
    ours, theirs = _split_argv(
        ["im.fits", "-c", "my.sex", "--grow", "2", "-DETECT_THRESH", "3", "-o", "out", "--no-mask"], sub
    )
    assert ours == ["im.fits", "--grow", "2", "-o", "out", "--no-mask"]
    assert theirs == ["-c", "my.sex", "-DETECT_THRESH", "3"]


def test_config_reading_and_resolution(tmp_path, monkeypatch):
    cfg = SexConfig(real("../sextractor_reference/default.sex"), {"DETECT_THRESH": "3"})
    assert cfg.get_float("DETECT_THRESH", 0) == 3.0
    assert cfg.get_float("DEBLEND_MINCONT", 0) == 1.0
    assert cfg.user_set("CATALOG_NAME") and not cfg.user_set("WEIGHT_IMAGE")
    # Auxiliary files resolve beside the configuration when not in the cwd.
    monkeypatch.chdir(tmp_path)
    assert cfg.resolve("FILTER_NAME") == real("../sextractor_reference/default.conv").resolve()
    with pytest.raises(ConfigError, match="cannot read"):
        SexConfig(tmp_path / "missing.sex")
    # Our own default.param has the flag columns.
    params = read_param_file(SexConfig().resolve("PARAMETERS_NAME"))
    assert {"IMAFLAGS_ISO", "NIMAFLAGS_ISO", "FLAGS_WEIGHT"} <= set(params)


def test_missing_binary_says_how_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SExtractorError, match="apt-get install source-extractor"):
        find_binary()


def test_command_adds_maps_flag_columns_and_interp(tmp_path):
    from maxidetect.files import parse_input

    # A parameter file without the flag columns gets them appended.
    (tmp_path / "p.param").write_text("NUMBER\nX_IMAGE\n")
    cfg = SexConfig(None, {"PARAMETERS_NAME": str(tmp_path / "p.param")})
    cmd = build_command("sex", parse_input("im.fits[2]"), cfg, (tmp_path / "w.fits", tmp_path / "f.fits"),
                        tmp_path / "c.fits", "FITS_1.0", tmp_path)
    assert cmd[1] == "im.fits[2]"
    i = cmd.index("-PARAMETERS_NAME")
    assert read_param_file(cmd[i + 1]) == ["NUMBER", "X_IMAGE", "IMAFLAGS_ISO", "NIMAFLAGS_ISO", "FLAGS_WEIGHT"]
    assert cmd[cmd.index("-WEIGHT_TYPE") + 1] == "MAP_WEIGHT"
    assert cmd[cmd.index("-INTERP_TYPE") + 1] == "NONE"
    assert cmd[cmd.index("-FLAG_TYPE") + 1] == "OR"
    # The user's INTERP_TYPE wins.
    cfg2 = SexConfig(None, {"INTERP_TYPE": "ALL"})
    cmd2 = build_command("sex", parse_input("im.fits"), cfg2, (tmp_path / "w.fits", tmp_path / "f.fits"),
                         tmp_path / "c.fits", "FITS_1.0", tmp_path)
    assert cmd2.count("-INTERP_TYPE") == 1 and cmd2[cmd2.index("-INTERP_TYPE") + 1] == "ALL"


# -- the real binary -----------------------------------------------------------
@needs_sex
def test_imaflags_on_known_flagged_pixel_both_engines(tmp_path):
    """Hand-made maps: one star sits on a SAT-flagged pixel block, another
    has zero-weight pixels beside it; IMAFLAGS_ISO/NIMAFLAGS_ISO must say so."""
    img, pos = _star_field()
    path = _write(tmp_path / "im.fits", img)
    flag = np.zeros(img.shape, np.int32)
    x0, y0 = pos[0]
    flag[int(y0) - 1 : int(y0) + 2, int(x0) - 1 : int(x0) + 2] = 512  # 9 px on star 0's core
    weight = np.ones(img.shape, np.float32)
    weight[100:103, :] = 0  # a masked row band far from the stars
    wp = _write(tmp_path / "w.fits", weight)
    fp = _write(tmp_path / "f.fits", flag)
    cfg = SexConfig()
    for engine in ("sex", "sep"):
        if engine == "sex":
            cat = run_sextractor(str(path), cfg, maps=(wp, fp), out_dir=tmp_path / engine).catalog
        else:
            cat = detect_file(str(path), cfg, maps=(wp, fp), out_dir=tmp_path / engine)
        t = read_catalog(cat)
        d = np.hypot(t["X_IMAGE"] - (x0 + 1), t["Y_IMAGE"] - (y0 + 1))
        k = int(np.argmin(d))
        assert d[k] < 0.5, engine
        assert t["IMAFLAGS_ISO"][k] == 512, engine
        assert t["NIMAFLAGS_ISO"][k] == 9, engine
        others = np.arange(len(t)) != k
        assert np.all(t["IMAFLAGS_ISO"][others] == 0), engine
        # Nothing is detected on the zero-weight band.
        assert not np.any((t["Y_IMAGE"] > 100.5) & (t["Y_IMAGE"] < 103.5)), engine


@needs_sex
def test_sextractor_reads_files_whose_names_hold_spaces_and_commas(tmp_path):
    """SExtractor splits WEIGHT_IMAGE/FLAG_IMAGE (and its image argument) at
    spaces and commas ("odd shape.fits" failed: "cannot open odd"): the run
    still reads this image and these maps, and shows their real names."""
    img, pos = _star_field()
    (tmp_path / "maps, v2").mkdir()
    path = _write(tmp_path / "my image.fits", img)
    flag = np.zeros(img.shape, np.int32)
    x0, y0 = pos[0]
    flag[int(y0) - 1 : int(y0) + 2, int(x0) - 1 : int(x0) + 2] = 512
    weight = np.ones(img.shape, np.float32)
    weight[100:103, :] = 0
    wp = _write(tmp_path / "maps, v2" / "w 1.fits", weight)
    fp = _write(tmp_path / "maps, v2" / "f,1.fits", flag)
    run = run_sextractor(str(path), SexConfig(), maps=(wp, fp), out_dir=tmp_path / "out, here")
    assert run.catalog.parent.name == "out, here" and run.catalog.name.startswith("my image.")
    t = read_catalog(run.catalog)
    k = int(np.argmin(np.hypot(t["X_IMAGE"] - (x0 + 1), t["Y_IMAGE"] - (y0 + 1))))
    assert t["IMAFLAGS_ISO"][k] == 512 and t["NIMAFLAGS_ISO"][k] == 9  # the flag map was read
    assert not np.any((t["Y_IMAGE"] > 100.5) & (t["Y_IMAGE"] < 103.5))  # and the weight map
    assert str(path) in run.command and str(wp) in run.command and str(fp) in run.command


@needs_sex
def test_sex_cli_single_and_mef(maker, tmp_path, monkeypatch, capsys):
    """`maxidetect sex` end to end with the real network and binary: maps
    accepted for a single-HDU and a multi-extension image."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(real("fitswcs_tpv_ctio_mosaic2.fits"), "ctio.fits")
    shutil.copy(real("astroscrappy_gmos.fits"), "gmos.fits")
    rc = main(["sex", "ctio.fits", "gmos.fits", "-DETECT_THRESH", "2", "--verbose"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "-WEIGHT_TYPE MAP_WEIGHT" in out.err and "-DETECT_THRESH 2" in out.err  # -v: the command run
    ctio = read_catalog("ctio.sex.cat.fits")
    assert len(ctio) > 10 and "IMAFLAGS_ISO" in ctio.colnames
    # The saturated star (peak at row 440, column 465, 0-based) carries the SAT bit.
    # Its core has zero weight, so the detections sit around it.
    near = np.hypot(ctio["X_IMAGE"] - 466, ctio["Y_IMAGE"] - 441) < 25
    assert near.any() and np.all(ctio["IMAFLAGS_ISO"][near] & 512)
    gmos = read_catalog("gmos.sex.cat.fits")
    assert set(np.unique(gmos["EXT_NUMBER"])) == {1, 2, 3}
    # A bad value is refused before any work, naming the key; nothing is written.
    rc = main(["sex", "ctio.fits", "-o", "bad", "-DETECT_MINAREA", "abc", "--overwrite"])
    err = capsys.readouterr().err
    assert rc == 2 and "DETECT_MINAREA = 'abc'" in err and not (tmp_path / "bad").exists()
    # A SExtractor error is reported with its own message, no catalogue written.
    rc = main(["sex", "ctio.fits", "-o", "bad", "--no-mask", "-WEIGHT_TYPE", "MAP_RMS",
               "-WEIGHT_IMAGE", "nowhere.fits"])
    err = capsys.readouterr().err
    assert rc == 1 and "SExtractor failed" in err and "cannot open nowhere.fits" in err
    assert not list((tmp_path / "bad").glob("*.cat.fits"))


@needs_sex
def test_sex_on_compressed_files_and_tables_between_images(maker, tmp_path):
    """SExtractor pairs image and map HDUs by position, tables included, and
    reads neither .fz nor .gz: the maps keep a stand-in for the table and the
    image reaches SExtractor uncompressed. Integer data compress losslessly,
    so all three files give the same catalogue."""
    import gzip

    data = np.round(fits.getdata(real("fitswcs_tpv_ctio_mosaic2.fits"))).astype(np.int32)
    table = fits.BinTableHDU.from_columns([fits.Column("A", "E", array=np.arange(3.0))], name="LOG")
    plain = tmp_path / "mef.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data[:256], name="A"), table,
                  fits.ImageHDU(data[256:], name="B")]).writeto(plain)
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data[:256], name="A"), table,
                  fits.CompImageHDU(data[256:], name="B")]).writeto(tmp_path / "mef_c.fits.fz")
    (tmp_path / "mef_g.fits.gz").write_bytes(gzip.compress(plain.read_bytes()))
    cfg = SexConfig()
    cats = {}
    for name in ("mef.fits", "mef_c.fits.fz", "mef_g.fits.gz"):
        maps = write_maps(tmp_path / name, maker, out_dir=tmp_path)
        with fits.open(maps[0]) as w:
            assert [h.data is None for h in w] == [True, False, True, False]
            assert w[2].header["MDMAP"] == "NONE" and w[3].name == "B"
        cats[name] = read_catalog(run_sextractor(tmp_path / name, cfg, maps=maps, out_dir=tmp_path).catalog)
    ref = cats["mef.fits"]
    assert len(ref) > 10 and len(np.unique(ref["EXT_NUMBER"])) == 2 and (ref["IMAFLAGS_ISO"] > 0).any()
    for name, cat in cats.items():
        np.testing.assert_array_equal(cat["X_IMAGE"], ref["X_IMAGE"], err_msg=name)
        np.testing.assert_array_equal(cat["IMAFLAGS_ISO"], ref["IMAFLAGS_ISO"], err_msg=name)
    # An HDU chosen by name, here astropy's default name of a compressed HDU.
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data[:256])]).writeto(tmp_path / "one.fits.fz")
    one = f"{tmp_path / 'one.fits.fz'}[COMPRESSED_IMAGE]"
    by_name = read_catalog(run_sextractor(one, cfg, out_dir=tmp_path).catalog)
    plain_a = read_catalog(run_sextractor(f"{plain}[A]", cfg, out_dir=tmp_path / "a").catalog)
    assert len(by_name) > 5
    np.testing.assert_array_equal(by_name["X_IMAGE"], plain_a["X_IMAGE"])
    # The SEP engine reads the same maps HDU for HDU.
    sep_cat = read_catalog(detect_file(plain, cfg, maps=write_maps(plain, maker, out_dir=tmp_path / "m"),
                                       out_dir=tmp_path / "sep"))
    assert abs(len(sep_cat) - len(ref)) <= max(2, 0.02 * len(ref))


@needs_sex
def test_length_one_axes_are_dropped_like_sextractor_does(maker, tmp_path):
    """(1, H, W) and (1, 1, H, W) images: 2-D maps, and the catalogues of the 2-D image."""
    data = fits.getdata(real("fitswcs_tpv_ctio_mosaic2.fits"))
    cfg = SexConfig()
    cats = {}
    for lead in ((), (1,), (1, 1)):
        p = _write(tmp_path / f"img{len(lead)}.fits", data.reshape(lead + data.shape))
        maps = write_maps(p, maker, out_dir=tmp_path)
        assert fits.getdata(maps[0]).shape == data.shape
        cats[lead] = (read_catalog(detect_file(p, cfg, maps=maps, out_dir=tmp_path / "sep")),
                      read_catalog(run_sextractor(p, cfg, maps=maps, out_dir=tmp_path / "sex").catalog))
    for lead, (sep_cat, sex_cat) in cats.items():
        assert len(sep_cat) > 10
        for got, ref in ((sep_cat, cats[()][0]), (sex_cat, cats[()][1])):
            np.testing.assert_array_equal(got["X_IMAGE"], ref["X_IMAGE"], err_msg=str(lead))
            np.testing.assert_array_equal(got["IMAFLAGS_ISO"], ref["IMAFLAGS_ISO"], err_msg=str(lead))


@needs_sex
def test_engines_agree_on_real_images(maker, tmp_path):
    """Same settings and maps: SEP and SExtractor counts per frame within 3%
    (or three objects, on frames of a few dozen: the two deblend a bright
    blend (FLAGS 2) into different pieces now and then) with and without
    maps, and the total over the four frames within 2%. With maps this needs
    SExtractor's threshold map (filtered variance); masking instead was 25%
    off on GMOS."""
    cfg = SexConfig()
    totals = {"nomask": [0, 0], "mask": [0, 0]}
    for name in ("fitswcs_tpv_ctio_mosaic2.fits", "fitswcs_zpn_ukirt_wfcam.fits",
                 "astroscrappy_gmos.fits", "ccdproc_a8280271_saao_raw.fits"):
        p = shutil.copy(real(name), tmp_path / name)
        maps = write_maps(p, maker, out_dir=tmp_path)
        for tag, m in (("nomask", None), ("mask", maps)):
            n_sep = len(read_catalog(detect_file(p, cfg, maps=m, out_dir=tmp_path / tag / "sep")))
            n_sex = len(read_catalog(run_sextractor(p, cfg, maps=m, out_dir=tmp_path / tag / "sex").catalog))
            assert abs(n_sep - n_sex) <= max(3, 0.03 * n_sex), (name, tag, n_sep, n_sex)
            totals[tag][0] += n_sep
            totals[tag][1] += n_sex
    for tag, (n_sep, n_sex) in totals.items():
        assert abs(n_sep - n_sex) <= 0.02 * n_sex, (tag, n_sep, n_sex)


def test_the_maps_masks_do_not_depend_on_the_sky_level_left_in_the_frame(predictor):
    """MaxiMask's normalisation maps sag towards the zeros beyond a frame, so
    on a 512 px frame the network's calls depended on the sky level: this
    CTIO frame raw or sky-subtracted got 43 or 128 cosmic-ray pixels and
    60063 or 6986 of bright background. The maps' masks (centred maps) are
    the same whatever constant the frame carries; ``mask`` keeps MaxiMask's."""
    from maxidetect.masks.maker import MaskMaker

    img = fits.getdata(EXAMPLE).astype(np.float32)
    maps_maker, mask_maker = MaskMaker(predictor=predictor, for_maps=True), MaskMaker(predictor=predictor)
    assert maps_maker.normalisation["background"] == "centred"
    assert mask_maker.normalisation["background"] == "maximask"
    th = maps_maker.config.thresholds[maps_maker.selected][:, None, None]
    raw, sub = (maps_maker.probabilities(x) > th for x in (img, img - np.float32(np.median(img))))
    assert np.array_equal(raw, sub)
    th = mask_maker.config.thresholds[mask_maker.selected][:, None, None]
    raw, sub = (mask_maker.probabilities(x) > th for x in (img, img - np.float32(np.median(img))))
    assert (raw != sub).sum() > 1000  # what the maps no longer inherit


def test_maps_reuse_up_to_date_masks(maker, tmp_path, monkeypatch):
    """An up-to-date NAME.masks.fits made with the same model and settings is
    reused (the network is not run again) where the maps need no
    probabilities; a different threshold is not, nor are fused maps that
    flag cosmic rays (their tracks are completed from the CR probability)."""
    img, _ = _star_field(96)
    path = _write(tmp_path / "im.fits", img)
    maker.process_file(str(path))
    expect = compute_maps(img, maker, MapPolicy.parse("CR=none"))

    def boom(*a, **k):
        raise AssertionError("masks were recomputed")

    monkeypatch.setattr(maker.predictor, "iter_tiles", boom)  # the network must not run
    w, f = write_maps(path, maker, MapPolicy.parse("CR=none"))
    np.testing.assert_array_equal(fits.getdata(w), expect.weight)
    np.testing.assert_array_equal(fits.getdata(f), expect.flag)
    w, f = write_maps(path, maker, MapPolicy(fuse=False), overwrite=True)
    assert fits.getdata(w).shape == img.shape
    with pytest.raises(AssertionError, match="recomputed"):
        write_maps(path, maker, overwrite=True)
    from maxidetect.classes import ClassConfig
    from maxidetect.masks.maker import MaskMaker

    cfg = ClassConfig.default()
    cfg.thresholds[0] = 0.5
    other = MaskMaker(config=cfg, predictor=maker.predictor)
    with pytest.raises(AssertionError, match="recomputed"):
        write_maps(path, other, overwrite=True)
    # Nor masks made on other normalisation maps (the maps' own are centred: other masks)
    centred = MaskMaker(predictor=maker.predictor, background="centred")
    with pytest.raises(AssertionError, match="recomputed"):
        write_maps(path, centred, overwrite=True)


@needs_sex
def test_sex_warns_where_sextractor_s_own_statistics_underflow(tmp_path, monkeypatch, capsys):
    """A frame in erg/s/cm^2/Hz (noise ~1e-29): the maps are those of the frame
    in ADU, but SExtractor's float sums of squares underflow and it detects
    the sky (143 detections of 40 sources at a noise of 1e-23): the run says
    so. At a noise of 1e-21 SExtractor still works, and nothing is said."""
    monkeypatch.chdir(tmp_path)
    img, _ = _star_field()
    _write(tmp_path / "tiny.fits", (img * 1e-30).astype(np.float32))
    _write(tmp_path / "small.fits", (img * 1e-20).astype(np.float32))
    assert main(["sex", "tiny.fits", "small.fits", "-q"]) == 0
    err = capsys.readouterr().err
    assert "tiny.fits" in err and "SExtractor's single-precision" in err and "small.fits" not in err
