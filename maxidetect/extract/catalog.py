"""Catalogue files: write SExtractor's formats, read them back.

FITS_1.0 (one binary table per image HDU), FITS_LDAC (LDAC_IMHEAD +
LDAC_OBJECTS per image HDU, for SCAMP and PSFEx) and ASCII_HEAD/ASCII.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table, vstack

from maxidetect.files import atomic_output, exists_message, write_hdulist_atomic

__all__ = ["CATALOG_TYPES", "write_catalog", "read_catalog"]

CATALOG_TYPES = ("FITS_1.0", "FITS_LDAC", "ASCII_HEAD", "ASCII", "NONE")


def _ldac_imhead(header: fits.Header) -> fits.BinTableHDU:
    cards = "".join(str(c).ljust(80)[:80] for c in header.cards) + "END".ljust(80)
    col = fits.Column(name="Field Header Card", format=f"{len(cards)}A", array=np.array([cards]))
    hdu = fits.BinTableHDU.from_columns([col])
    hdu.header["TDIM1"] = f"(80, {len(cards) // 80})"
    hdu.header["EXTNAME"] = "LDAC_IMHEAD"
    return hdu


def write_catalog(
    tables: list[Table],
    path: str | os.PathLike,
    catalog_type: str = "FITS_1.0",
    headers: list[fits.Header] | None = None,
    overwrite: bool = False,
    protect=(),
) -> Path | None:
    """Write one table per image HDU in a SExtractor catalogue format.

    Parameters
    ----------
    tables : list of Table
        One per image HDU, in file order.
    headers : list of Header, optional
        The image headers (FITS_LDAC stores them in LDAC_IMHEAD).
    """
    ctype = catalog_type.upper()
    if ctype not in CATALOG_TYPES:
        raise ValueError(f"CATALOG_TYPE {catalog_type!r} not supported; use one of {', '.join(CATALOG_TYPES)}")
    if ctype == "NONE":
        return None
    path = Path(path)
    headers = headers or [fits.Header() for _ in tables]
    if ctype in ("FITS_1.0", "FITS_LDAC"):
        hdus = [fits.PrimaryHDU()]
        for t, h in zip(tables, headers, strict=True):
            if ctype == "FITS_LDAC":
                hdus.append(_ldac_imhead(h))
            tab = fits.table_to_hdu(t)
            tab.header["EXTNAME"] = "LDAC_OBJECTS" if ctype == "FITS_LDAC" else "OBJECTS"
            for key in h:
                if key.startswith("MDTRK"):  # frame quality travels with its objects
                    tab.header[key] = (h[key], h.comments[key])
            hdus.append(tab)
        return write_hdulist_atomic(fits.HDUList(hdus), path, overwrite=overwrite, protect=protect)
    t = vstack(tables) if len(tables) > 1 else tables[0]
    lines = []
    if ctype == "ASCII_HEAD":
        col = 1
        for name in t.colnames:
            n = t[name].shape[1] if t[name].ndim > 1 else 1
            unit = f" [{t[name].unit}]" if t[name].unit is not None else ""
            lines.append(f"#{col:4d} {name:<22} {t[name].description or ''}{unit}")
            col += n
    for row in t:
        fields = []
        for name in t.colnames:
            v = row[name]
            for x in np.atleast_1d(v):
                kind = np.asarray(x).dtype.kind
                fields.append(f"{x:d}" if kind in "iu" else str(x) if kind in "US" else f"{x:.7g}")
        lines.append(" ".join(fields))
    if path.exists() and not overwrite:
        raise FileExistsError(exists_message(path))
    with atomic_output(path) as tmp, open(tmp, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def read_catalog(path: str | os.PathLike) -> Table:
    """Read a SExtractor or maxidetect catalogue (FITS_1.0, FITS_LDAC or
    ASCII_HEAD) into one Table; a multi-HDU catalogue gets EXT_NUMBER."""
    path = Path(path)
    with open(path, "rb") as fh:
        is_fits = fh.read(6) == b"SIMPLE"
    if is_fits:
        tables = []
        with fits.open(path) as h:
            for hdu in h[1:]:
                if isinstance(hdu, fits.BinTableHDU) and hdu.name != "LDAC_IMHEAD":
                    tables.append(Table(hdu.data))
        if len(tables) > 1:
            for k, t in enumerate(tables, 1):
                if "EXT_NUMBER" not in t.colnames:
                    t["EXT_NUMBER"] = k
        return vstack(tables) if tables else Table()
    names = []
    with open(path) as fh:
        lines = fh.read().splitlines()
    header = [ln for ln in lines if ln.startswith("#")]
    cols = []
    for ln in header:
        parts = ln[1:].split()
        cols.append((int(parts[0]), parts[1]))
    rows = [ln.split() for ln in lines if ln.strip() and not ln.startswith("#")]
    data = np.array(rows, dtype=object) if rows else np.zeros((0, 0), dtype=object)
    ncol = data.shape[1] if data.size else (cols[-1][0] if cols else 0)
    t = Table()
    for k, (start, name) in enumerate(cols):
        stop = cols[k + 1][0] if k + 1 < len(cols) else ncol + 1
        block = data[:, start - 1 : stop - 1] if data.size else np.zeros((0, stop - start))
        try:
            block = block.astype(np.float64)
        except ValueError:  # a text column (e.g. MD_CLASS)
            block = block.astype(str)
        t[name] = block[:, 0] if block.shape[1] == 1 else block
        names.append(name)
    for name in ("NUMBER", "FLAGS", "IMAFLAGS_ISO", "NIMAFLAGS_ISO", "FLAGS_WEIGHT", "EXT_NUMBER", "ISOAREA_IMAGE"):
        if name in t.colnames:
            t[name] = t[name].astype(np.int64)
    return t
