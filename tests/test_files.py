"""The streaming FITS writer and the band-wise plane reader."""

import gzip
import io

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from maxidetect.errors import InputError
from maxidetect.files import FitsStreamWriter, open_fits, read_plane


def _header():
    h = fits.Header()
    h["OBJECT"] = ("field 7", "target")
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRPIX1"], h["CRPIX2"], h["CRVAL1"], h["CRVAL2"] = 10.0, 20.0, 150.1, 2.2
    h["CD1_1"], h["CD2_2"], h["CD1_2"], h["CD2_1"] = -7.5e-5, 7.5e-5, 0.0, 0.0
    return h


def test_blocks_in_any_order_give_a_valid_mef(tmp_path):
    rng = np.random.default_rng(3)
    cube = rng.integers(0, 2, (3, 50, 70), dtype=np.uint8)
    probs = rng.random((37, 41)).astype(np.float32)
    bits = rng.integers(-2**30, 2**30, (5, 9), dtype=np.int32)
    table = Table({"X": np.arange(4.0), "NAME": ["a", "b", "c", "d"]})
    out = tmp_path / "out.fits"
    with FitsStreamWriter(out) as w:
        w.add_hdu(fits.PrimaryHDU(header=_header()))
        slot = w.add_image(_header(), cube.shape, np.uint8)
        # tiles out of order, partial widths and whole rows
        for k in (2, 0, 1):
            for y0, y1, x0, x1 in ((25, 50, 30, 70), (0, 25, 0, 70), (25, 50, 0, 30)):
                slot.write((k,), y0, x0, cube[k, y0:y1, x0:x1])
        w.add_hdu(fits.BinTableHDU(table, name="CAT"))
        w.add_image(fits.Header({"EXTNAME": "P"}), probs.shape, np.float32).write((), 0, 0, probs)
        w.add_image(fits.Header(), bits.shape, np.int32).write((), 2, 4, bits[2:, 4:])
    assert out.stat().st_size % 2880 == 0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with fits.open(out) as h:
        h.verify("exception")
        assert len(h) == 5 and h[0].data is None
        assert h[0].header["OBJECT"] == "field 7" and h[0].header["EXTEND"] is True
        np.testing.assert_array_equal(h[1].data, cube)
        assert h[1].header["CRVAL1"] == 150.1 and h[1].header["NAXIS3"] == 3
        assert list(h["CAT"].data["NAME"]) == ["a", "b", "c", "d"]
        np.testing.assert_array_equal(h["P"].data, probs)
        expect = np.zeros_like(bits)
        expect[2:, 4:] = bits[2:, 4:]
        np.testing.assert_array_equal(h[4].data, expect)  # unwritten pixels are 0


def test_failure_leaves_nothing_and_inputs_are_protected(tmp_path):
    out = tmp_path / "out.fits"
    with pytest.raises(RuntimeError):
        with FitsStreamWriter(out) as w:
            w.add_image(fits.Header(), (10, 10), np.float32).write((), 0, 0, np.ones((10, 10)))
            raise RuntimeError("inference failed half-way")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="outside"):
        with FitsStreamWriter(out) as w:
            w.add_image(fits.Header(), (10, 10), np.uint8).write((), 5, 5, np.ones((6, 6)))
    assert list(tmp_path.iterdir()) == []

    # an image primary followed by an extension
    with FitsStreamWriter(out) as w:
        w.add_image(_header(), (4, 6), np.float32).write((), 0, 0, np.full((4, 6), 2.5))
        w.add_hdu(fits.ImageHDU(np.arange(3.0), name="X"))
    with fits.open(out) as h:
        h.verify("exception")
        assert h[0].header["EXTEND"] is True and h[0].data.sum() == 60 and h["X"].data[2] == 2

    src = tmp_path / "in.fits"
    fits.PrimaryHDU(np.ones((4, 4))).writeto(src)
    before = src.read_bytes()
    with pytest.raises(InputError, match="input"):
        FitsStreamWriter(src, overwrite=True, protect=[src])
    with pytest.raises(FileExistsError):
        FitsStreamWriter(src)
    assert src.read_bytes() == before


@pytest.mark.parametrize("compressed", [False, True])
def test_read_plane_matches_the_scaled_data(tmp_path, compressed):
    rng = np.random.default_rng(5)
    raw = rng.integers(-3000, 3000, (2, 70, 45)).astype(">i2")
    path = tmp_path / "cube.fits"
    hdr = fits.Header({"BZERO": 32768.0, "BSCALE": 2.0})
    if compressed:
        fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(raw[1])]).writeto(path)
    else:
        hdu = fits.PrimaryHDU(raw, header=hdr)
        hdu.scale("int16", bzero=32768.0, bscale=2.0)
        fits.HDUList([hdu]).writeto(path)
    with fits.open(path) as h:
        hdu = h[1] if compressed else h[0]
        expect = (hdu.data if compressed else hdu.data[1]).astype(np.float32)
        got = read_plane(hdu, () if compressed else (1,), rows=16)
    assert got.dtype == np.float32 and got.dtype.isnative and got.shape == (70, 45)
    np.testing.assert_array_equal(got, expect)


def test_temporaries_of_killed_runs_are_removed(tmp_path):
    """A kill -9 during a streamed write leaves a hidden temporary; the next
    write of the same output on this host removes it if its process is dead,
    and leaves a live process's temporary alone."""
    import os
    import subprocess

    from maxidetect.files import temp_output

    out = tmp_path / "frame.masks.fits"
    dead = subprocess.Popen(["true"])
    dead.wait()
    fd, live = temp_output(out)  # this process's own temporary: alive
    os.close(fd)
    fd, stale = temp_output(out)
    os.close(fd)
    stale_dead = tmp_path / os.path.basename(stale).replace(f"-{os.getpid()}.", f"-{dead.pid}.")
    os.rename(stale, stale_dead)
    assert stale_dead.name.startswith(f".{out.name}.") and f"-{dead.pid}." in stale_dead.name
    assert stale_dead.exists()
    with FitsStreamWriter(out) as w:
        w.add_image(fits.Header(), (2, 2), np.uint8).write((), 0, 0, np.ones((2, 2)))
    assert not stale_dead.exists() and os.path.exists(live)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, os.path.basename(live)])


def _mef_bytes():
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((100, 120), np.float32), name="SCI1"),
                  fits.ImageHDU(np.ones((80, 91), np.float32), name="SCI2")]).writeto(buf)
    return buf.getvalue()


def test_damaged_files_fail_at_open_naming_the_hdu(tmp_path):
    raw = _mef_bytes()
    hdr2 = raw.index(b"XTENSION", raw.index(b"SCI1"))  # start of the second extension
    cases = {
        "data_cut.fits": (raw[: len(raw) - 20000], r"data_cut.fits\[2\]: file is truncated"),
        "header_cut.fits": (raw[: hdr2 + 1000], r"header_cut.fits\[2\]: extension header is truncated"),
        "cut.fits.gz": (gzip.compress(raw)[:-100], r"cut.fits.gz: gzip stream is damaged"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError, match=message):
            open_fits(tmp_path / name)
    # astropy alone hands back the first extension without complaint: a partial output.
    with fits.open(tmp_path / "cut.fits.gz") as h:
        assert len(h) < 3


def test_tolerated_file_endings(tmp_path):
    raw = _mef_bytes()
    last = 80 * 91 * 4
    variants = {
        "zeros.fits": raw + bytes(4000),  # zero padding after the last HDU
        "unpadded.fits": raw[: len(raw) - (2880 - last % 2880)],  # last data block without its padding
        "whole.fits.gz": gzip.compress(raw),
    }
    for name, data in variants.items():
        (tmp_path / name).write_bytes(data)
        with open_fits(tmp_path / name) as h:
            assert len(h) == 3 and h[2].data.shape == (80, 91) and h[2].data.sum() == 80 * 91
