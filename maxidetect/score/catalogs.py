"""Per-detection scores in the catalogues: ``MD_CONTAM`` and ``MD_CLASS``
columns, and the clean catalogue (``--clean``: rows with ``MD_CONTAM``
under the threshold), for the in-process engines (a table at a time) and for
SExtractor's own catalogue (after its run, from its segmentation image).
"""

from __future__ import annotations

import warnings

import numpy as np
from astropy.io import fits
from astropy.table import Table

from maxidetect.errors import MaxidetectWarning
from maxidetect.files import is_image_hdu, open_fits, plane_shape, select_hdus
from maxidetect.maps.frame import measure_frame, pixel_noise
from maxidetect.maps.trails import trails_from_header
from maxidetect.score.features import PsfShape, detection_features
from maxidetect.score.model import ScoreModel

__all__ = ["Scorer", "score_sextractor_catalog", "CONTAM_COLUMN", "CLASS_COLUMN"]

CONTAM_COLUMN, CLASS_COLUMN = "MD_CONTAM", "MD_CLASS"
#: The training range is the simulator's PSF FWHM; the frame's is measured (its Gaussian fits),
#: 5-17% above the simulator's on the bench's frames (the most in crowded ones): a frame is out
#: of range only beyond this factor (the bench's own 4.5 px frames were warned about at 4.58 px).
MEASURED_FWHM_EXCESS = 1.17


class Scorer:
    """Adds the score columns to a detection table; with ``clean`` keeps only
    rows with ``MD_CONTAM`` < ``threshold`` (default: the model's)."""

    def __init__(self, model: ScoreModel, clean: bool = False, threshold: float | None = None):
        self.model = model
        self.clean = clean
        self.threshold = model.threshold if threshold is None else float(threshold)
        self.n_in = self.n_out = 0
        self._warned = False

    def columns(self, image, weight, flag, segmentation, ids, map_header=None):
        """(MD_CONTAM, MD_CLASS) for the objects ``ids`` of ``segmentation``."""
        fwhm = map_header.get("MDFWHM") if map_header is not None else None
        psf = PsfShape.from_header(map_header)
        if not fwhm:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", MaxidetectWarning)
                stats = measure_frame(image)
            for w in caught:
                warnings.warn(str(w.message), MaxidetectWarning, stacklevel=3)
            fwhm, psf = stats.fwhm, PsfShape(stats.psf_q, stats.psf_theta, stats.psf_trail is not None)
        rng = self.model.fwhm_range
        if rng is not None and float(fwhm) > MEASURED_FWHM_EXCESS * rng[1] and not self._warned:
            # Measured with the shipped model: 1.5% of the real S/N > 10 detections of simulated
            # frames at FWHM 4.5-6.5 px scored above the threshold (0.3% in range), 1.6 pt of
            # completeness at 6-10 px on a second generator (faint broad stars called cosmic rays).
            warnings.warn(f"PSF FWHM {float(fwhm):.2f} px is above the score model's training range "
                          f"({rng[0]:g}-{rng[1]:g} px): MD_CONTAM is extrapolated, and --clean may drop "
                          f"1-3% of the real detections", MaxidetectWarning, stacklevel=3)
            self._warned = True
        x = detection_features(image, weight, flag, segmentation, ids, float(fwhm), trails_from_header(map_header),
                               psf=psf)
        return self.model.score(x)

    def __call__(self, table: Table, image, weight, flag, segmentation, map_header=None) -> Table:
        ids = np.arange(1, len(table) + 1)  # the engines number objects in table order
        contam, cls = self.columns(image, weight, flag, segmentation, ids, map_header)
        table[CONTAM_COLUMN] = contam
        table[CONTAM_COLUMN].description = "Probability that the detection is not a real source (maxidetect)"
        table[CLASS_COLUMN] = cls
        table[CLASS_COLUMN].description = "Most likely contaminant class, or none (maxidetect)"
        self.n_in += len(table)
        if self.clean:
            table = table[contam < self.threshold]
        self.n_out += len(table)
        return table


def _segmentation_planes(seg_path):
    with fits.open(seg_path) as h:
        return [np.asarray(x.data) for x in h if x.data is not None and x.data.ndim == 2]


#: Below this pixel noise SExtractor's statistics underflow (measured: noise 1e-21 as at unit
#: scale; at 1e-23 every pixel of the sky was detected).
SEX_NOISE_FLOOR = 1e-22


def _image_planes(spec, maps):
    """(image, weight, flag, map header) per image HDU, in SExtractor's order."""
    out = []
    with open_fits(spec.path, "image") as hdul:
        wm = open_fits(maps[0], "weight map") if maps else None
        fm = open_fits(maps[1], "flag map") if maps else None
        try:
            k = 0
            for index, hdu in select_hdus(hdul, spec):
                shape = plane_shape(hdu)
                if shape is None or not is_image_hdu(hdu):
                    if wm is not None and (index == 0 or len(wm) == len(hdul)):
                        k += 1
                    continue
                data = np.asarray(hdu.data, np.float32).reshape(shape)
                if wm is not None:
                    out.append((data, wm[k].data, fm[k].data, fm[k].header))
                    k += 1
                else:
                    out.append((data, None, None, None))
        finally:
            for h in (wm, fm):
                if h is not None:
                    h.close()
    return out


def score_sextractor_catalog(path, ctype: str, seg_path, spec, maps, scorer: Scorer) -> None:
    """Add the score columns to SExtractor's catalogue at ``path`` (in place,
    same format), from its segmentation image; drop rows with ``clean``."""
    planes = _image_planes(spec, maps)
    for k, plane in enumerate(planes):
        noise = pixel_noise(plane[0])
        if 0 < noise < SEX_NOISE_FLOOR:
            warnings.warn(f"{spec} (image plane {k + 1}): pixel noise {noise:.1e}: SExtractor's single-precision "
                          "sums of squares underflow, its detections here are noise; scale the image up",
                          MaxidetectWarning, stacklevel=2)
    segs = _segmentation_planes(seg_path)
    if len(segs) != len(planes):
        raise ValueError(f"{spec}: {len(segs)} segmentation plane(s) for {len(planes)} image HDU(s)")
    ctype = ctype.upper()
    if ctype.startswith("FITS"):
        with fits.open(path) as h:
            hdus = [x.copy() for x in h]
        tabs = [i for i, x in enumerate(hdus) if isinstance(x, fits.BinTableHDU) and x.name != "LDAC_IMHEAD"]
        for i, (image, weight, flag, mhdr), seg in zip(tabs, planes, segs, strict=True):
            t = Table(hdus[i].data)
            ids = np.asarray(t["NUMBER"]) if "NUMBER" in t.colnames else np.arange(1, len(t) + 1)
            t = _apply(scorer, t, image, weight, flag, seg, ids, mhdr)
            new = fits.table_to_hdu(t)
            for key in hdus[i].header:
                if key not in new.header and not key.startswith(("TTYPE", "TFORM", "TUNIT", "TDIM", "TNULL",
                                                                   "TDISP", "TZERO", "TSCAL", "NAXIS")):
                    new.header[key] = hdus[i].header[key]
            hdus[i] = new
        fits.HDUList(hdus).writeto(path, overwrite=True)
        return
    from maxidetect.extract.catalog import read_catalog, write_catalog

    t = read_catalog(path)
    if "NUMBER" in t.colnames:
        # One block per image HDU: SExtractor numbers each extension from 1.
        starts = np.r_[0, np.flatnonzero(np.diff(np.asarray(t["NUMBER"])) < 0) + 1, len(t)]
    else:
        starts = np.array([0, len(t)])
    if len(starts) - 1 != len(planes):
        raise ValueError(f"{path}: cannot pair ASCII catalogue rows with {len(planes)} image HDU(s) (add NUMBER)")
    parts = []
    for (a, b), (image, weight, flag, mhdr), seg in zip(zip(starts[:-1], starts[1:], strict=True), planes, segs,
                                                       strict=True):
        part = t[a:b]
        ids = np.asarray(part["NUMBER"]) if "NUMBER" in part.colnames else np.arange(1, len(part) + 1)
        parts.append(_apply(scorer, part, image, weight, flag, seg, ids, mhdr))
    from astropy.table import vstack

    write_catalog([vstack(parts)] if parts else [t], path, "ASCII_HEAD", overwrite=True)


def _apply(scorer: Scorer, t: Table, image, weight, flag, seg, ids, mhdr) -> Table:
    contam, cls = scorer.columns(image, weight, flag, seg, ids, mhdr)
    t[CONTAM_COLUMN] = contam
    t[CLASS_COLUMN] = cls
    scorer.n_in += len(t)
    if scorer.clean:
        t = t[contam < scorer.threshold]
    scorer.n_out += len(t)
    return t
