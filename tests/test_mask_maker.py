"""Files in, masks out: structures, dtypes, headers, safety."""

import hashlib
import os
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from maxidetect.classes import ClassConfig
from maxidetect.errors import InputError, MaxidetectWarning
from maxidetect.files import expand_inputs
from maxidetect.masks.maker import MaskMaker

from .conftest import EXAMPLE, real


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def ctio_cut(tmp_path_factory):
    """A 256x320 cut of the CTIO frame (saturated star, CRs) with its WCS."""
    d = tmp_path_factory.mktemp("ctio")
    with fits.open(real("fitswcs_tpv_ctio_mosaic2.fits")) as h:
        hdr = h[0].header.copy()
        data = h[0].data[256:512, 192:512]  # big-endian float32 kept as is
    hdr["CRPIX1"] -= 192
    hdr["CRPIX2"] -= 256
    p = d / "ctio_cut.fits"
    fits.PrimaryHDU(data, hdr).writeto(p)
    return p


def test_gmos_mef_small_image_finds_labelled_cosmic_rays(maker, tmp_path):
    src = real("astroscrappy_gmos.fits")
    before = _sha(src)
    out = maker.process_file(src, out_dir=tmp_path)
    assert _sha(src) == before  # input untouched
    with fits.open(out) as h, fits.open(src) as s:
        assert len(h) == len(s) == 4
        assert h[0].data is None
        assert [x.name for x in h] == [x.name for x in s]
        sci = h["SCI"].data
        assert sci.shape == (14, 150, 200) and sci.dtype == np.uint8
        cr = sci[0].astype(bool)
    # The two labelled cosmic rays (areas 74 and 93 px) are both flagged.
    for sl in [(slice(41, 72), slice(142, 161)), (slice(117, 147), slice(35, 43))]:
        assert cr[sl].sum() >= 10


def test_wcs_and_header_kept_and_provenance_written(maker, ctio_cut, tmp_path):
    out = maker.process_file(ctio_cut, out_dir=tmp_path)
    hin = fits.getheader(ctio_cut)
    hout = fits.getheader(out)
    assert hout["OBJECT"] == hin["OBJECT"] and hout["EXPTIME"] == hin["EXPTIME"]
    w_in = WCS(hin)
    w_out = WCS(hout, naxis=2)
    np.testing.assert_allclose(
        w_out.pixel_to_world_values(10.0, 200.0), w_in.pixel_to_world_values(10.0, 200.0), rtol=0, atol=1e-10
    )
    assert hout["MDMODEL"] == "maximask" and len(hout["MDSHA256"]) == 64
    assert hout["CR_PR"] == 0.0005  # full precision, not '0.00'
    assert hout["HCL_PR"] == 1e-05 and hout["SP_TH"] == 0.54
    assert hout["MDCLS1"] == "CR" and hout["MDCLS14"] == "BG"


def test_big_endian_integer_and_native_inputs_agree(maker, ctio_cut):
    data = fits.getdata(ctio_cut)
    assert data.dtype.byteorder == ">"
    a = maker.masks(data)
    b = maker.masks(data.astype("<f4"))
    assert np.array_equal(a, b)
    assert a[9].sum() > 50  # the saturated star is flagged SAT
    raw = fits.getdata(real("ccdproc_a8280271_saao_raw.fits"))[:200, 300:536]  # uint16, overscan at right
    m = maker.masks(raw)
    assert m.shape == (14, 200, 236)


def test_single_mask_is_or_of_bit_codes(maker, ctio_cut, tmp_path):
    data = fits.getdata(ctio_cut)
    masks = maker.masks(data)
    single = maker.bitmask(data)
    assert single.dtype == np.int32
    expected = np.zeros(data.shape, np.int32)
    for plane, bit in zip(masks, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 0], strict=True):
        expected[plane.astype(bool)] |= bit
    assert np.array_equal(single, expected) and single.any()
    out = maker.process_file(ctio_cut, out_dir=tmp_path, single=True)
    d = fits.getdata(out)
    assert d.shape == data.shape and np.array_equal(d, single)


def test_probabilities_and_class_selection(predictor, ctio_cut):
    data = fits.getdata(ctio_cut)
    cfg = ClassConfig.default()
    cfg.selected[:] = False
    cfg.selected[[0, 9]] = True  # CR, SAT
    mk = MaskMaker(predictor=predictor, config=cfg)
    p = mk.probabilities(data)
    assert p.shape == (2,) + data.shape and p.dtype == np.float32
    raw = MaskMaker(predictor=predictor, config=cfg, apply_priors=False).probabilities(data)
    assert (p <= raw + 1e-7).all()  # smaller priors than training lower the posteriors
    assert np.array_equal(mk.masks(data), (p > np.array([0.43, 0.81])[:, None, None]).astype(np.uint8))


def test_cube_fz_and_hdu_selection(maker, ctio_cut, tmp_path):
    data = fits.getdata(ctio_cut).astype(np.float32)
    cube = np.stack([data, data[::-1, ::-1].copy()])
    p = tmp_path / "cube.fits"
    fits.PrimaryHDU(cube).writeto(p)
    out = fits.getdata(maker.process_file(p, out_dir=tmp_path))
    assert out.shape == (2, 14) + data.shape
    assert np.array_equal(out[0], maker.masks(data))

    # Lossless tile compression of integer data gives the same masks.
    ints = np.round(data).astype(np.int32)
    fz = tmp_path / "frame.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(ints, compression_type="RICE_1")]).writeto(fz)
    res = maker.process_file(fz, out_dir=tmp_path)
    assert res.name == "frame.masks.fits"
    with fits.open(res) as h:
        assert len(h) == 2 and h[0].data is None
        assert np.array_equal(h[1].data, maker.masks(ints))
        got_ext1 = h[1].data.copy()

    sel = maker.process_file(f"{fz}[1]", out_dir=tmp_path)
    assert sel.name == "frame.hdu1.masks.fits"
    assert np.array_equal(fits.getdata(sel), got_ext1)


def test_nan_and_all_nan_hdus(maker, tmp_path):
    rng = np.random.default_rng(3)
    img = rng.normal(100, 5, (160, 192)).astype(np.float32)
    img[20:40, :] = np.nan
    p = tmp_path / "nan.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(img),
            fits.ImageHDU(np.full((64, 64), np.nan, np.float32), name="BLANK"),
            fits.BinTableHDU.from_columns([fits.Column(name="A", format="E", array=[1.0, 2.0])], name="TAB"),
        ]
    ).writeto(p)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MaxidetectWarning)
        out = maker.process_file(p, out_dir=tmp_path)
    assert any("BLANK" in str(w.message) or "[1]" in str(w.message) for w in caught)
    with fits.open(out) as h:
        assert h[0].data.shape == (14, 160, 192)
        assert not h[1].data.any()
        assert h[2].name == "TAB" and list(h[2].data["A"]) == [1.0, 2.0]


def test_outputs_are_atomic_and_never_overwrite(maker, ctio_cut, tmp_path):
    out = maker.process_file(ctio_cut, out_dir=tmp_path)
    stamp = out.stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="--overwrite"):
        maker.process_file(ctio_cut, out_dir=tmp_path)
    assert out.stat().st_mtime_ns == stamp
    maker.process_file(ctio_cut, out_dir=tmp_path, overwrite=True)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)
    with pytest.raises(InputError, match="refusing to write over the input"):
        maker.process_file(ctio_cut, output=ctio_cut, overwrite=True)


def test_bad_inputs_give_clear_errors(maker, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        maker.process_file(tmp_path / "missing.fits")
    junk = tmp_path / "junk.fits"
    junk.write_bytes(b"this is not FITS" * 200)
    with pytest.raises(InputError, match="junk.fits"):
        maker.process_file(junk)
    tab = tmp_path / "table.fits"
    table = fits.BinTableHDU.from_columns([fits.Column(name="A", format="E", array=[1.0])])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(tab)
    with pytest.raises(InputError, match="no 2-D or 3-D image HDU"):
        maker.process_file(tab)
    with pytest.raises(InputError, match=r"\[7\]: no such HDU"):
        maker.process_file(f"{EXAMPLE}[7]", out_dir=tmp_path)
    # A MEF cut inside its last image: refused whole, not masked up to the cut.
    cut = tmp_path / "cut.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((64, 64), np.float32)),
                  fits.ImageHDU(np.ones((64, 64), np.float32))]).writeto(cut)
    cut.write_bytes(cut.read_bytes()[:-5000])
    with pytest.raises(InputError, match=r"cut.fits\[2\]: file is truncated"):
        maker.process_file(cut)
    assert not list(tmp_path.glob("*.masks.fits"))


def test_expand_directories_and_list_files(tmp_path):
    for name in ("b.fits", "a.fits.fz", "notes.txt", "a.masks.fits"):
        (tmp_path / name).write_bytes(b"")
    specs = expand_inputs([tmp_path])
    assert [s.path.name for s in specs] == ["a.fits.fz", "b.fits"]
    lst = tmp_path / "run.list"
    lst.write_text("# comment\nb.fits\n/abs/x.fits[2]\n")
    specs = expand_inputs([lst])
    assert specs[0].path == tmp_path / "b.fits" and specs[1].hdu == 2


def test_cli_processes_good_files_and_reports_bad_ones(tmp_path, capsys):
    from maxidetect.cli import main

    bad = tmp_path / "bad.fits"
    bad.write_bytes(b"garbage")
    rc = main(["mask", str(EXAMPLE), str(bad), "-o", str(tmp_path / "out"), "--classes", "CR,SAT", "--single-mask"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "bad.fits" in err and "failed" in err
    out = tmp_path / "out" / "fitswcs_tpv_ctio_mosaic2.masks.fits"
    d = fits.getdata(out)
    assert d.dtype.kind == "i" and d.dtype.itemsize == 4 and set(np.unique(d)) <= {0, 1, 512, 513}
    assert main(["models"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "maximask"


_DEVICE_MASKS_SCRIPT = """
import numpy as np
from maxidetect.masks.maker import MaskMaker
from maxidetect.validation.simulate import simulate_frame

image = simulate_frame(3, size=192).image
maker = MaskMaker(engine="keras")
assert maker._masks_forward() is not None
made_there = maker.masks(image)
thresholds = maker.config.thresholds[maker.selected][:, None, None]
on_host = (maker.probabilities(image) > thresholds).astype(np.uint8)  # host priors, host thresholds
from maxidetect.priors import bitmask
bits = maker.bitmask(image)
print(int(on_host.sum()), int((made_there != on_host).sum()), int((bits != bitmask(on_host, maker.selected)).sum()),
      int((bits != 0).sum()))
"""


def test_masks_made_on_the_jax_device_equal_the_host_thresholded_probabilities(tmp_path):
    """A GPU node thresholds inside the compiled call (1 byte per class leaves the device):
    the same masks as the probabilities prior-modified and thresholded on the host."""
    from .conftest import run_on_jax

    out = run_on_jax(_DEVICE_MASKS_SCRIPT, tmp_path)
    flagged, differing, bits_differing, bits_set = map(int, out.split()[-4:])
    assert flagged > 0 and differing == 0
    assert bits_set > 0 and bits_differing == 0  # the bitmask from the device's masks too
