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

from maxidetect.classes import CLASSES, ClassConfig
from maxidetect.errors import InputError, MaxidetectWarning
from maxidetect.files import (
    FitsStreamWriter,
    InputSpec,
    exists_message,
    image_header,
    is_image_hdu,
    open_fits,
    output_path,
    read_plane,
    select_hdus,
)
from maxidetect.network.inference import DEFAULT_MARGIN, Predictor
from maxidetect.network.normalise import check_background, normalise
from maxidetect.priors import bitmask, modify_priors, prior_factors
from maxidetect.timing import stage, timed
from maxidetect.version import __version__

__all__ = ["MaskMaker", "MaxidetectWarning", "predict", "compute_masks", "maps_background", "MASK_SUFFIX"]

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


def maps_background(model_background: str) -> str:
    """The normalisation maps of the masks that make weight and flag maps:
    ``"centred"`` where the model's are MaxiMask's (the same meshes without
    their sag towards the edges), else the model's. MaxiMask's maps sag
    towards the zeros beyond the frame, so the network's calls depended on
    the sky level left in it: the same 512 px real frame raw or sky-subtracted
    got 43 or 128 cosmic-ray pixels and 60063 or 6986 of bright background
    (CTIO); on centred maps the same masks either way. ``mask`` keeps the
    model's own (MaxiMask's masks, pixel for pixel)."""
    return "centred" if model_background == "maximask" else model_background


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
    tile, margin, batch_size, precision, engine, threads
        Passed to :class:`~maxidetect.network.inference.Predictor`.
    background : {"maximask", "centred", "sep"}, optional
        Normalisation maps (:func:`~maxidetect.network.normalise.normalise`); default:
        the model's own (manifest), or :func:`maps_background` of it with ``for_maps``.
    for_maps : bool
        Masks for the weight and flag maps: the catalogue's classes and
        thresholds (:meth:`ClassConfig.catalogue`, when ``config`` is not
        given) and :func:`maps_background`.
    """

    def __init__(
        self,
        model: str | None = None,
        config: ClassConfig | None = None,
        apply_priors: bool = True,
        apply_threshold: bool = True,
        tile: int | None = None,
        margin: int = DEFAULT_MARGIN,
        batch_size: int = 1,
        precision: str = "float32",
        predictor: Predictor | None = None,
        engine: str = "auto",
        threads: int | None = None,
        background: str | None = None,
        for_maps: bool = False,
    ):
        self.predictor = predictor or Predictor(
            model, tile=tile, margin=margin, batch_size=batch_size, precision=precision,
            engine=engine, threads=threads,
        )
        self.normalisation = dict(self.predictor.normalisation)
        if background is None and for_maps:
            background = maps_background(self.normalisation["background"])
        if background is not None:
            self.normalisation["background"] = check_background(background)
        self.config = config or (ClassConfig.catalogue() if for_maps else ClassConfig.default())
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
        self.progress = None  # callable(fraction of pixels done), see iter_blocks

    @property
    def class_names(self) -> list[str]:
        return [CLASSES[i].abbr for i in self.selected]

    # -- arrays -----------------------------------------------------------
    def iter_blocks(self, image: np.ndarray, owned: bool = False):
        """Stream a raw 2-D image through the network.

        Yields ``((rows, cols), probs)``: slices of the image and the
        (prior-modified, if enabled) probabilities of the selected classes
        there, float32 ``(n_selected, rows, cols)``. The blocks partition the
        image; ``probs`` may be a view of a reused buffer, so use or copy it
        before the next block. ``owned``: the caller's native float32 image
        may be normalised in place (saves a copy). After each block
        ``self.progress`` (if set) is called with the fraction of pixels done.
        """
        yield from self._blocks(image, owned, None)

    def _masks_forward(self):
        """The predictor's forward pass that thresholds where the network runs, or None."""
        return self.predictor.masks_forward(self.selected, self._factors if self.apply_priors else None,
                                            self._thresh)

    def _blocks(self, image, owned: bool, forward):
        """:meth:`iter_blocks`' blocks; with ``forward`` (:meth:`_masks_forward`) the
        blocks are its masks of the selected classes, prior-modified and thresholded."""
        with stage("normalise"):
            norm = normalise(image, copy=not owned, **self.normalisation)
        if not norm.any():
            warnings.warn("image is all zero or non-finite: masks are empty", MaxidetectWarning, stacklevel=3)
            return
        every = self.selected.size == self.predictor.n_classes  # no copy for the usual case
        done, total = 0, norm.size
        for t in timed(self.predictor.iter_tiles(norm, forward=forward), "network"):
            p = t.probs if every or forward is not None else t.probs[self.selected]
            if self.apply_priors and forward is None:
                with stage("priors"):
                    modify_priors(p, self._factors, axis=0, out=p)
            yield (slice(t.y0, t.y1), slice(t.x0, t.x1)), p
            done += (t.y1 - t.y0) * (t.x1 - t.x0)
            if self.progress is not None:
                self.progress(done / total)

    def probabilities(self, image) -> np.ndarray:
        """Probabilities (prior-modified if enabled), float32 (n_selected, H, W)."""
        image = _as_2d(image)
        out = np.zeros((self.selected.size,) + image.shape, dtype=np.float32)
        for (ys, xs), p in self._blocks(image, False, None):
            out[:, ys, xs] = p
        return out

    def masks(self, image) -> np.ndarray:
        """Thresholded masks, uint8 (n_selected, H, W), 1 where flagged."""
        image = _as_2d(image)
        out = np.zeros((self.selected.size,) + image.shape, dtype=np.uint8)
        t = self._thresh[:, None, None]
        forward = self._masks_forward()
        for (ys, xs), p in self._blocks(image, False, forward):
            out[:, ys, xs] = p if forward is not None else p > t
        return out

    def bitmask(self, image) -> np.ndarray:
        """One int32 image: OR of the bit codes of the flagged selected classes."""
        image = _as_2d(image)
        out = np.zeros(image.shape, dtype=np.int32)
        t = self._thresh[:, None, None]
        forward = self._masks_forward()
        for (ys, xs), p in self._blocks(image, False, forward):
            out[ys, xs] = bitmask(p if forward is not None else p > t, self.selected)
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
            ("MDTILE", self.predictor.tile, "inference tiles hold <= MDTILE**2 pix"),
            ("MDMARGIN", self.predictor.margin, "inference tile margin [pix]"),
            ("MDENGINE", self.predictor.engine, "what ran the network"),
            ("MDPREC", self.predictor.precision, "network compute precision"),
            ("MDBACKG", self.normalisation["background"], "normalisation background maps"),
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

    def made_these_masks(self, header) -> bool:
        """True if ``header`` (of a ``NAME.masks.fits`` HDU) was written by
        :meth:`header_cards` for thresholded masks with this maker's model,
        classes, priors and thresholds: the reader of those cards."""
        hdr = header
        if hdr.get("MDOUTPUT") != "MASKS" or hdr.get("MDSHA256") != self.predictor.info.sha256:
            return False
        if hdr.get("MDBACKG") != self.normalisation["background"]:  # other normalisation maps, other masks
            return False
        if bool(hdr.get("MDPRIOR")) != self.apply_priors or not hdr.get("MDTHRESH"):
            return False
        names = [hdr.get(f"MDCLS{k + 1}") for k in range(int(hdr.get("MDNCLASS", 0)))]
        if names != self.class_names:
            return False
        for ci in self.selected:
            a = CLASSES[ci].abbr
            if hdr.get(f"{a}_TH") != float(self.config.thresholds[ci]):
                return False
            if self.apply_priors and hdr.get(f"{a}_PR") != float(self.config.priors[ci]):
                return False
        return True

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

        The output is written tile by tile as it is computed, so memory is
        bounded by the tile size and one input plane (4 bytes per pixel),
        not by the output (14 planes). Returns the output path. Raises
        :class:`InputError` naming the file, HDU and problem on bad input.
        """
        if not isinstance(spec, InputSpec):
            from maxidetect.files import parse_input

            spec = parse_input(str(spec))
        kind = OutputKind(probs=probs, single=single)
        if single and not self.apply_threshold:
            raise ValueError("a single bit-coded mask needs thresholds")
        out = Path(output) if output is not None else output_path(spec, MASK_SUFFIX, out_dir)
        if out.exists() and not overwrite:  # fail before the costly inference
            raise FileExistsError(exists_message(out))
        extra = list(extra_cards)
        with open_fits(spec.path) as hdul:
            pairs = select_hdus(hdul, spec)
            with FitsStreamWriter(out, overwrite=overwrite, protect=[spec.path]) as writer:
                n_images = 0
                for index, hdu in pairs:
                    if is_image_hdu(hdu):
                        self._stream_hdu(writer, spec.path, index, hdu, kind, extra)
                        n_images += 1
                    elif spec.hdu is not None:
                        raise InputError(f"{spec.path}[{spec.hdu}]: not a 2-D or 3-D image HDU")
                    elif index == 0 or isinstance(hdu, fits.CompImageHDU):
                        writer.add_hdu((fits.PrimaryHDU if index == 0 else fits.ImageHDU)(header=image_header(hdu)))
                    else:
                        writer.add_hdu(hdu.copy())
                if n_images == 0:
                    raise InputError(f"{spec.path}: no 2-D or 3-D image HDU to process")
        return out

    def _stream_hdu(self, writer: FitsStreamWriter, path: Path, index: int, hdu, kind: OutputKind, extra) -> None:
        where = f"{path}[{index}]"
        shape = tuple(hdu.shape)
        if any(n == 0 for n in shape):
            raise InputError(f"{where}: image HDU has no data (shape {shape})")
        if hdu.header.get("ZBITPIX", hdu.header.get("BITPIX")) not in (8, 16, 32, 64, -32, -64):
            raise InputError(f"{where}: unsupported BITPIX {hdu.header.get('BITPIX')}")
        what = kind.name(self.apply_threshold)
        n = self.selected.size
        lead_planes = [()] if len(shape) == 2 else [(i,) for i in range(shape[0])]
        out_shape = shape if what == "BITMASK" else shape[:-2] + (n,) + shape[-2:]
        dtype = {"BITMASK": np.int32, "MASKS": np.uint8, "PROBS": np.float32}[what]
        slot = writer.add_image(self._header(hdu, kind, len(out_shape), extra), out_shape, dtype)
        t = self._thresh[:, None, None]
        for lead in lead_planes:
            try:
                with stage("read"):
                    image = read_plane(hdu, lead)
            except Exception as exc:
                raise InputError(f"{where}: cannot read image data ({exc})") from None
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", MaxidetectWarning)
                for (ys, xs), p in self.iter_blocks(image, owned=True):
                    with stage("masks_write"):
                        if what == "BITMASK":
                            slot.write(lead, ys.start, xs.start, bitmask(p > t, self.selected))
                            continue
                        planes = (p > t).view(np.uint8) if what == "MASKS" else p
                        for k in range(n):
                            slot.write(lead + (k,), ys.start, xs.start, planes[k])
            for w in caught:
                warnings.warn(f"{where}: {w.message}", MaxidetectWarning, stacklevel=2)
            del image

    def _header(self, hdu, kind: OutputKind, out_ndim: int, extra: list | None = None) -> fits.Header:
        hdr = image_header(hdu)
        if out_ndim > len(hdu.shape) and "WCSAXES" not in hdr:
            # The class axis is appended as NAXIS3: keep the WCS 2-D.
            wcs_keys = [k for k in hdr.keys() if k[:5] in ("CTYPE", "CRPIX", "CRVAL", "CDELT", "CD1_1", "PC1_1")]
            if wcs_keys:
                hdr.insert(wcs_keys[0], ("WCSAXES", len(hdu.shape), "number of WCS axes"))
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
    maker = _maker(model)
    return maker.predictor.predict(image if normalised else normalise(image, **maker.normalisation))


def compute_masks(image, model: str | None = None, config: ClassConfig | None = None) -> np.ndarray:
    """Prior-modified, thresholded masks for a 2-D image: uint8 (n_selected, H, W)."""
    if config is None:
        return _maker(model).masks(image)
    return MaskMaker(model, config=config, predictor=_maker(model).predictor).masks(image)
