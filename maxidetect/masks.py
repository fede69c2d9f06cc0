"""Image -> per-class contaminant masks: normalise, infer, priors, thresholds.

:class:`MaskMaker` holds a loaded network and turns arrays or FITS files
into masks; the functions :func:`predict` and :func:`compute_masks` are
one-call conveniences around it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from . import __version__
from .classes import CLASSES, ClassConfig
from .inference import DEFAULT_MARGIN, DEFAULT_TILE, Predictor
from .io import (
    InputError,
    InputSpec,
    MaxidetectWarning,
    image_header,
    is_image_hdu,
    output_path,
    write_hdulist_atomic,
)
from .normalise import normalise
from .priors import bitmask, modify_priors, prior_factors

__all__ = ["MaskMaker", "MaxidetectWarning", "predict", "compute_masks", "MASK_SUFFIX"]

MASK_SUFFIX = ".masks.fits"


@dataclass
class OutputKind:
    probs: bool = False
    single: bool = False

    def name(self, thresholded: bool) -> str:
        """BITMASK, PROBS or MASKS: what :meth:`MaskMaker.compute` returns."""
        if self.single:
            return "BITMASK"
        return "MASKS" if thresholded and not self.probs else "PROBS"


class MaskMaker:
    """Computes contaminant masks with one loaded network.

    Parameters
    ----------
    model : str or None
        Model name from ``weights/manifest.json`` (default: its first entry).
    config : ClassConfig, optional
        Class selection, priors and thresholds (default: MaxiMask 1.4.1's).
    apply_priors : bool
        Apply Bayesian prior modification with ``config.priors``.
    apply_threshold : bool
        Threshold probabilities with ``config.thresholds`` (strict ``>``).
    tile, margin, batch_size, precision
        Passed to :class:`~maxidetect.inference.Predictor`.
    """

    def __init__(
        self,
        model: str | None = None,
        config: ClassConfig | None = None,
        apply_priors: bool = True,
        apply_threshold: bool = True,
        tile: int = DEFAULT_TILE,
        margin: int = DEFAULT_MARGIN,
        batch_size: int = 1,
        precision: str = "float32",
        predictor: Predictor | None = None,
    ):
        self.predictor = predictor or Predictor(
            model, tile=tile, margin=margin, batch_size=batch_size, precision=precision
        )
        self.config = config or ClassConfig.default()
        self.config.validate()
        self.apply_priors = apply_priors
        self.apply_threshold = apply_threshold
        info = self.predictor.info
        self.training_priors = np.asarray(info.training_priors, dtype=np.float64)
        self.selected = np.flatnonzero(self.config.selected)
        if self.selected.size == 0:
            raise ValueError("no contaminant class selected")
        self._factors = prior_factors(self.config.priors, self.training_priors)[self.selected]
        self._thresh = self.config.thresholds[self.selected].astype(np.float32)

    @property
    def class_names(self) -> list[str]:
        return [CLASSES[i].abbr for i in self.selected]

    # -- arrays -----------------------------------------------------------
    def _blocks(self, image: np.ndarray):
        """Yield (block slices, adjusted probabilities) over a raw 2-D image."""
        norm = normalise(image)
        if not norm.any():
            warnings.warn("image is all zero or non-finite: masks are empty", MaxidetectWarning, stacklevel=3)
            return
        for t in self.predictor.iter_tiles(norm):
            p = t.probs[self.selected]
            if self.apply_priors:
                modify_priors(p, self._factors, axis=0, out=p)
            yield (slice(t.y0, t.y1), slice(t.x0, t.x1)), p

    def probabilities(self, image) -> np.ndarray:
        """Probabilities (prior-modified if enabled), float32 (n_selected, H, W)."""
        image = _as_2d(image)
        out = np.zeros((self.selected.size,) + image.shape, dtype=np.float32)
        for (ys, xs), p in self._blocks(image):
            out[:, ys, xs] = p
        return out

    def masks(self, image) -> np.ndarray:
        """Thresholded masks, uint8 (n_selected, H, W), 1 where flagged."""
        image = _as_2d(image)
        out = np.zeros((self.selected.size,) + image.shape, dtype=np.uint8)
        t = self._thresh[:, None, None]
        for (ys, xs), p in self._blocks(image):
            out[:, ys, xs] = p > t
        return out

    def bitmask(self, image) -> np.ndarray:
        """One int32 image: OR of the bit codes of the flagged selected classes."""
        image = _as_2d(image)
        out = np.zeros(image.shape, dtype=np.int32)
        t = self._thresh[:, None, None]
        for (ys, xs), p in self._blocks(image):
            out[ys, xs] = bitmask(p > t, self.selected)
        return out

    def compute(self, image, kind: OutputKind) -> np.ndarray:
        """2-D or 3-D (cube) image -> output array of the requested kind."""
        data = np.asarray(image)
        if data.ndim == 3:
            return np.stack([self.compute(plane, kind) for plane in data])
        what = kind.name(self.apply_threshold)
        if what == "BITMASK":
            return self.bitmask(data)
        return self.probabilities(data) if what == "PROBS" else self.masks(data)

    # -- files ------------------------------------------------------------
    def header_cards(self, kind: OutputKind) -> list[tuple]:
        """Provenance keywords for output headers."""
        info = self.predictor.info
        what = kind.name(self.apply_threshold)
        cards = [
            ("MDVERSN", __version__, "maxidetect version"),
            ("MDMODEL", info.name, "maxidetect model name"),
            ("MDSHA256", info.sha256, ""),  # 64 chars: no room for a comment
            ("MDOUTPUT", what, "MASKS (uint8 per class), PROBS or BITMASK"),
            ("MDPRIOR", bool(self.apply_priors), "prior modification applied"),
            ("MDTHRESH", bool(self.apply_threshold and what != "PROBS"), "thresholds applied"),
            ("MDTILE", self.predictor.tile, "inference tile size [pix]"),
            ("MDMARGIN", self.predictor.margin, "inference tile margin [pix]"),
            ("MDNCLASS", int(self.selected.size), "number of classes in output"),
        ]
        for k, ci in enumerate(self.selected):
            c = CLASSES[ci]
            if what != "BITMASK":
                cards.append((f"MDCLS{k + 1}", c.abbr, f"plane {k + 1}: {c.name}"))
            cards.append((f"{c.abbr}_BIT", c.bit, f"{c.abbr} FLAG_IMAGE bit code"))
            cards.append((f"{c.abbr}_TPR", float(self.training_priors[ci]), f"{c.abbr} training prior"))
            if self.apply_priors:
                cards.append((f"{c.abbr}_PR", float(self.config.priors[ci]), f"{c.abbr} prior"))
            if self.apply_threshold:
                cards.append((f"{c.abbr}_TH", float(self.config.thresholds[ci]), f"{c.abbr} threshold"))
        return cards

    def header_cards_common(self) -> list[tuple]:
        """Provenance keywords for derived products (maps, catalogues)."""
        return [c for c in self.header_cards(OutputKind(single=True)) if c[0] != "MDOUTPUT"]

    def process_file(
        self,
        spec: InputSpec | str,
        out_dir=None,
        overwrite: bool = False,
        probs: bool = False,
        single: bool = False,
        output: str | Path | None = None,
        extra_cards=(),
    ) -> Path:
        """Compute masks for every image HDU of a FITS file and write
        ``NAME.masks.fits`` (same HDU structure; other HDUs copied through).

        Returns the output path. Raises :class:`InputError` naming the file,
        HDU and problem on bad input.
        """
        if not isinstance(spec, InputSpec):
            from .io import parse_input

            spec = parse_input(str(spec))
        kind = OutputKind(probs=probs, single=single)
        if single and not self.apply_threshold:
            raise ValueError("a single bit-coded mask needs thresholds")
        out = Path(output) if output is not None else output_path(spec, MASK_SUFFIX, out_dir)
        if out.exists() and not overwrite:  # fail before the costly inference
            raise FileExistsError(f"{out}: output exists (use --overwrite to replace it)")
        hdul_out = self._process_hdus(spec, kind, list(extra_cards))
        return write_hdulist_atomic(hdul_out, out, overwrite=overwrite, protect=[spec.path])

    def _process_hdus(self, spec: InputSpec, kind: OutputKind, extra: list | None = None) -> fits.HDUList:
        path = spec.path
        if not path.exists():
            raise InputError(f"{path}: file does not exist")
        try:
            hdul = fits.open(path, memmap=False)
        except Exception as exc:
            raise InputError(f"{path}: not a readable FITS file ({exc})") from None
        with hdul:
            if spec.hdu is not None:
                try:
                    hdu = hdul[spec.hdu]
                    index = hdul.index_of(spec.hdu)
                except (KeyError, IndexError):
                    raise InputError(f"{path}[{spec.hdu}]: no such HDU (file has {len(hdul)})") from None
                if not is_image_hdu(hdu):
                    raise InputError(f"{path}[{spec.hdu}]: not a 2-D or 3-D image HDU")
                data = self._hdu_result(path, index, hdu, kind)
                return fits.HDUList([fits.PrimaryHDU(data=data, header=self._header(hdu, kind, data, extra))])
            out = []
            n_images = 0
            for index, hdu in enumerate(hdul):
                if is_image_hdu(hdu):
                    n_images += 1
                    data = self._hdu_result(path, index, hdu, kind)
                    header = self._header(hdu, kind, data, extra)
                    cls = fits.PrimaryHDU if index == 0 else fits.ImageHDU
                    out.append(cls(data=data, header=header))
                elif index == 0:
                    out.append(fits.PrimaryHDU(header=image_header(hdu)))
                elif isinstance(hdu, fits.CompImageHDU):
                    out.append(fits.ImageHDU(header=image_header(hdu)))
                else:
                    out.append(hdu.copy())
            if n_images == 0:
                raise InputError(f"{path}: no 2-D or 3-D image HDU to process")
            return fits.HDUList(out)

    def _hdu_result(self, path: Path, index: int, hdu, kind: OutputKind) -> np.ndarray:
        where = f"{path}[{index}]"
        try:
            data = hdu.data
        except Exception as exc:
            raise InputError(f"{where}: cannot read image data ({exc})") from None
        if data is None:
            raise InputError(f"{where}: image HDU has no data")
        if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
            raise InputError(f"{where}: unsupported data type {data.dtype}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MaxidetectWarning)
            result = self.compute(data, kind)
        for w in caught:
            warnings.warn(f"{where}: {w.message}", MaxidetectWarning, stacklevel=2)
        return result

    def _header(self, hdu, kind: OutputKind, data: np.ndarray, extra: list | None = None) -> fits.Header:
        hdr = image_header(hdu)
        if data.ndim > hdu.data.ndim and "WCSAXES" not in hdr:
            # The class axis is appended as NAXIS3: keep the WCS 2-D.
            wcs_keys = [k for k in hdr.keys() if k[:5] in ("CTYPE", "CRPIX", "CRVAL", "CDELT", "CD1_1", "PC1_1")]
            if wcs_keys:
                hdr.insert(wcs_keys[0], ("WCSAXES", hdu.data.ndim, "number of WCS axes"))
        for key, value, comment in self.header_cards(kind) + (extra or []):
            hdr[key] = (value, comment)
        return hdr


def _as_2d(image) -> np.ndarray:
    data = np.asarray(image)
    if data.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {data.shape}")
    return data


_DEFAULT_MAKER: dict = {}


def _maker(model: str | None) -> MaskMaker:
    key = model or "__default__"
    if key not in _DEFAULT_MAKER:
        _DEFAULT_MAKER[key] = MaskMaker(model)
    return _DEFAULT_MAKER[key]


def predict(image, model: str | None = None, normalised: bool = False) -> np.ndarray:
    """Raw network probabilities PN(c|x) for a 2-D image: float32 (14, H, W).

    The image is normalised first unless ``normalised`` is True.
    """
    image = _as_2d(image)
    pred = _maker(model).predictor
    return pred.predict(image if normalised else normalise(image))


def compute_masks(image, model: str | None = None, config: ClassConfig | None = None) -> np.ndarray:
    """Prior-modified, thresholded masks for a 2-D image: uint8 (n_selected, H, W)."""
    if config is None:
        return _maker(model).masks(image)
    return MaskMaker(model, config=config, predictor=_maker(model).predictor).masks(image)
