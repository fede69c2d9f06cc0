"""The in-process engines over a FITS file: every image HDU (or the
selected one) with its maps -> one catalogue in SExtractor's formats."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from maxidetect.errors import InputError, MaxidetectWarning
from maxidetect.extract.catalog import CATALOG_TYPES, write_catalog
from maxidetect.extract.config import SexConfig, read_param_file
from maxidetect.extract.sep_engine import detect
from maxidetect.extract.sextractor import catalog_target
from maxidetect.files import (
    InputSpec,
    exists_message,
    image_header,
    is_image_hdu,
    open_fits,
    parse_input,
    plane_shape,
    select_hdus,
)
from maxidetect.timing import stage

__all__ = ["detect_file", "ENGINES"]


def _photutils():
    from maxidetect.extract.photutils_engine import detect_photutils  # photutils is an optional extra

    return detect_photutils


#: The in-process engines (loaders, so photutils is imported only when used).
ENGINES = {"sep": lambda: detect, "photutils": _photutils}


def _as_spec(spec) -> InputSpec:
    return spec if isinstance(spec, InputSpec) else parse_input(str(spec))


def detect_file(
    spec,
    config: SexConfig | None = None,
    maps: tuple[Path, Path] | None = None,
    out_dir=None,
    overwrite: bool = False,
    extra_cards=(),
    catalog: Path | None = None,
    on_table=None,
    engine: str = "sep",
) -> Path | None:
    """Run an in-process engine (``engine``: "sep" or "photutils") on every
    image HDU (or the selected one) of a file.

    ``maps`` are (weight, flag) files laid out like the image, as written
    by :func:`maxidetect.maps.writer.write_maps`. The catalogue goes to
    ``catalog`` if given, else CATALOG_NAME, else ``NAME[.nomask].sep.cat.fits``.
    ``on_table(table, image, weight, flag, segmentation, map_header)``, if
    given, may add columns to (or drop rows of) each HDU's table before it is
    written (the pipeline's per-detection score). Returns the catalogue path.
    """
    spec = _as_spec(spec)
    cfg = config or SexConfig()
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    run = ENGINES[engine]()
    target, ctype = catalog_target(spec, cfg, out_dir, "sep" if engine == "sep" else "phot", maps is None)
    catalog = Path(catalog) if catalog is not None else target
    if ctype not in CATALOG_TYPES:
        raise InputError(f"CATALOG_TYPE {ctype} not supported by the SEP engine ({', '.join(CATALOG_TYPES)})")
    if catalog.exists() and not overwrite and ctype != "NONE":
        raise FileExistsError(exists_message(catalog))
    params = read_param_file(cfg.resolve("PARAMETERS_NAME", "default.param")) or None
    hdul = open_fits(spec.path, "image")
    wmaps = open_fits(maps[0], "weight map") if maps else None
    fmaps = open_fits(maps[1], "flag map") if maps else None
    tables, headers = [], []
    try:
        pairs = select_hdus(hdul, spec)
        k_map = 0
        for index, hdu in pairs:
            where = f"{spec.path}[{index}]"
            shape = plane_shape(hdu)
            if shape is None and not is_image_hdu(hdu):
                if spec.hdu is not None:
                    raise InputError(f"{where}: not a 2-D image HDU")
                # Maps keep the primary, and since 0.2.0 a stand-in for every other non-image HDU.
                if wmaps is not None and (index == 0 or len(wmaps) == len(hdul)):
                    k_map += 1
                continue
            if shape is None:
                raise InputError(f"{where}: the detection engine needs 2-D images, got shape {hdu.shape}")
            with stage("read"):
                data = hdu.data.reshape(shape)  # length-1 axes dropped, as SExtractor does
            weight = flag = None
            if wmaps is not None:
                if k_map >= len(wmaps) or k_map >= len(fmaps):
                    raise InputError(f"{maps[0]}: has no map for image HDU {index}")
                with stage("read"):
                    weight, flag = wmaps[k_map].data, fmaps[k_map].data
                for arr, name in ((weight, maps[0]), (flag, maps[1])):
                    if arr is None or arr.shape != shape:
                        got = None if arr is None else arr.shape
                        raise InputError(f"{name}[{k_map}]: map shape {got} does not match {where} {shape}")
                k_map += 1
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", MaxidetectWarning)
                try:
                    with stage("extract"):
                        det = run(data, cfg, weight=weight, flag=flag, header=hdu.header, params=params)
                except ValueError as exc:
                    raise InputError(f"{where}: {exc}") from None
            for w in caught:
                if issubclass(w.category, MaxidetectWarning):
                    warnings.warn(f"{where}: {w.message}", w.category, stacklevel=2)
            t = det.catalog
            if on_table is not None:
                with stage("score"):
                    t = on_table(t, data, weight, flag, det.segmentation, fmaps[k_map - 1].header if fmaps else None)
            if params and "EXT_NUMBER" in [p.upper() for p in params]:
                t["EXT_NUMBER"] = np.full(len(t), index, np.int16)
            t.meta["EXTNUM"] = index
            tables.append(t)
            hdr = image_header(hdu)
            for key, value, comment in extra_cards:
                hdr[key] = (value, comment)
            headers.append(hdr)
            # Drop this HDU's pixels before the next: a mosaic is never held whole.
            data = weight = flag = None
            for h in [hdu] + ([wmaps[k_map - 1], fmaps[k_map - 1]] if wmaps is not None else []):
                _release(h)
        if not tables:
            raise InputError(f"{spec.path}: no 2-D image HDU to detect on")
    finally:
        hdul.close()
        for h in (wmaps, fmaps):
            if h is not None:
                h.close()
    protect = [spec.path] + (list(maps) if maps else [])
    with stage("catalog_write"):
        return write_catalog(tables, catalog, ctype, headers=headers, overwrite=overwrite, protect=protect)


def _release(hdu) -> None:
    try:
        del hdu.data
    except (AttributeError, TypeError):
        pass
