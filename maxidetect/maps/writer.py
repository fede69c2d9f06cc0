"""Masks -> SExtractor WEIGHT_IMAGE and FLAG_IMAGE maps.

FLAG_IMAGE (int32): the OR of the registry bit codes of every flagged class.
WEIGHT_IMAGE (float32, for ``WEIGHT_TYPE MAP_WEIGHT``): 0 where a class whose
policy is ``"zero"`` is flagged (optionally grown by N pixels), else 1, or
``1 - p`` with soft weights, times the user's own weight map when given.

SExtractor reads a map HDU by HDU alongside the image, so the maps mirror the
image file's HDU layout: an empty primary stays empty, image HDUs get maps.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from maxidetect.classes import CLASSES
from maxidetect.errors import InputError, MaxidetectWarning
from maxidetect.files import (
    FitsStreamWriter,
    InputSpec,
    exists_message,
    image_header,
    is_image_hdu,
    open_fits,
    output_path,
    parse_input,
    plane_shape,
    read_plane,
    select_hdus,
)
from maxidetect.maps.frame import no_data
from maxidetect.maps.fusion import fuse
from maxidetect.maps.morph import grow
from maxidetect.maps.policy import ACTIONS, MapPolicy
from maxidetect.masks.maker import MASK_SUFFIX, MaskMaker
from maxidetect.timing import stage

__all__ = [
    "MapPolicy",
    "MapSet",
    "ACTIONS",
    "WEIGHT_SUFFIX",
    "FLAG_SUFFIX",
    "compute_maps",
    "maps_from_masks",
    "noise_weight",
    "write_maps",
]


BAND_ROWS = 1024  # weight maps are built and written this many rows at a time
WEIGHT_SUFFIX = ".weight.fits"
FLAG_SUFFIX = ".flag.fits"


@dataclass
class MapSet:
    """Maps for one 2-D image: ``weight`` float32 and ``flag`` int32, (H, W);
    ``report``: what evidence fusion found (None for network-only maps)."""

    weight: np.ndarray
    flag: np.ndarray
    report: object = None

    def header(self, base: fits.Header | None = None) -> fits.Header:
        """``base`` (copied) with the fusion's cards, as ``maxidetect maps``
        writes them (the PSF and the fitted trails the score reads)."""
        hdr = fits.Header() if base is None else base.copy()
        for key, value, comment in (self.report.header_cards() if self.report is not None else []):
            hdr[key] = (value, comment)
        return hdr


def noise_weight(image: np.ndarray, bad: np.ndarray | None = None, mesh: int = 64) -> np.ndarray:
    """``(global rms / local rms)**2`` from a SEP background map, clipped to
    [1/16, 1], float32 (H, W).

    Only noisier-than-typical areas are down-weighted: quieter meshes
    (overscan, saturated plateaus, dead regions) would otherwise get huge
    weights and a threshold near zero."""
    import sep

    data = np.asarray(image, dtype=np.float64)
    bad = ~np.isfinite(data) if bad is None else (bad | ~np.isfinite(data))
    data = np.where(bad, 0.0, data)
    bw = min(mesh, data.shape[1])
    bh = min(mesh, data.shape[0])
    bkg = sep.Background(data, mask=bad, bw=bw, bh=bh)
    rms = bkg.rms()
    with np.errstate(divide="ignore", invalid="ignore"):
        w = (bkg.globalrms / rms) ** 2
    w = np.where(np.isfinite(w) & (rms > 0), w, 1.0)
    return np.clip(w, 1.0 / 16.0, 1.0).astype(np.float32)


def _track_row(maker: MaskMaker, policy: MapPolicy) -> int | None:
    """Row of the CR class among ``maker``'s selected ones when the fusion
    completes cosmic-ray tracks with its probability (fused maps, CR not
    ignored): that one probability plane is kept for it. Else None."""
    if not policy.fuse or policy.actions["CR"] == "none":
        return None
    return next((k for k, ci in enumerate(maker.selected) if CLASSES[ci].abbr == "CR"), None)


def _needs_probabilities(maker: MaskMaker, policy: MapPolicy) -> bool:
    """Whether the maps use probabilities, not only masks (soft weights, the
    fusion's cosmic-ray tracks): then a masks file cannot stand in for the network."""
    return policy.soft or _track_row(maker, policy) is not None


class _Accumulator:
    """Builds the maps from per-class masks, tile by tile.

    With ``keep_flag=False`` the flag map is not kept: :meth:`add` returns
    each tile's flags for the caller to write out (flags are per pixel; only
    the zero-weight masks need the whole frame, for growing)."""

    def __init__(self, shape, maker: MaskMaker, policy: MapPolicy, keep_flag: bool = True, image=None):
        self.policy = policy
        self.shape = tuple(shape)
        sel = list(maker.selected)
        self.rows = [(k, ci, policy.actions[CLASSES[ci].abbr], policy.grow_of(ci)) for k, ci in enumerate(sel)]
        self.flag = np.zeros(shape, np.int32) if keep_flag else None
        self.zero = {}  # growth [pix] -> bool mask
        self.soft = np.ones(shape, np.float32) if policy.soft else None
        # Pixels without data (the image's NaN or zero-filled borders of
        # resampled frames, inf): no measurement there, so weight 0 whatever
        # the policy. Read now: the network may overwrite the image with its
        # normalised version.
        self.missing = no_data(image) if image is not None else None
        self.k_cr = _track_row(maker, policy)
        self.cr_prob = None

    def add(self, ys, xs, masks, probs=None) -> np.ndarray:
        f = self.flag[ys, xs] if self.flag is not None else np.zeros(masks.shape[1:], np.int32)
        zero_rows = []
        for k, ci, act, g in self.rows:
            bit = CLASSES[ci].bit
            if act != "none" and bit:
                f[masks[k]] |= bit
            if act == "zero":
                z = self.zero.setdefault(g, np.zeros(self.shape, bool))
                z[ys, xs] |= masks[k]
                zero_rows.append(k)
        if self.soft is not None and zero_rows and probs is not None:
            self.soft[ys, xs] = 1.0 - probs[zero_rows].max(axis=0)
        if self.k_cr is not None and probs is not None:
            if self.cr_prob is None:
                self.cr_prob = np.zeros(self.shape, np.float32)
            self.cr_prob[ys, xs] = probs[self.k_cr]
        return f

    def fuse(self, image, header=None):
        """Replace the network's zero masks by the fused ones (needs the flags
        and the raw image); returns the :class:`~maxidetect.maps.fusion.FusionReport`."""
        zero, self.flag, report = fuse(image, self.flag, self.policy, header,
                                       missing=False if self.missing is None else self.missing,
                                       cr_probability=self.cr_prob)
        self.zero = {0: zero}
        self.cr_prob = None
        return report

    def weight_bands(self, image=None, user_weight=None, rows: int | None = None):
        """Yield (y0, weight rows y0:y0+n) of the weight map, float32."""
        rows = rows or BAND_ROWS
        zero = np.zeros(self.shape, bool)
        for g in list(self.zero):
            zero |= grow(self.zero.pop(g), g)
        if user_weight is not None:
            user_weight = np.asarray(user_weight)
            if user_weight.shape != self.shape:
                raise ValueError(f"weight image shape {user_weight.shape} != image shape {self.shape}")
        noise = noise_weight(image, zero) if self.policy.noise and image is not None else None
        for y0 in range(0, self.shape[0], rows):
            band = slice(y0, y0 + rows)
            w = self.soft[band] if self.soft is not None else np.ones((zero[band].shape[0], self.shape[1]), np.float32)
            w[zero[band]] = 0.0
            if self.missing is not None:
                w[self.missing[band]] = 0.0
            if noise is not None:
                w *= noise[band]
            if user_weight is not None:
                uw = np.asarray(user_weight[band], dtype=np.float32)
                w *= np.where(np.isfinite(uw), uw, 0.0)
            yield y0, w

    def finish(self, image=None, user_weight=None, header=None) -> MapSet:
        report = self.fuse(image, header) if self.policy.fuse and image is not None else None
        weight = np.empty(self.shape, np.float32)
        for y0, w in self.weight_bands(image, user_weight):
            weight[y0 : y0 + w.shape[0]] = w
        return MapSet(weight=weight, flag=self.flag, report=report)


def compute_maps(
    image, maker: MaskMaker, policy: MapPolicy | None = None, user_weight=None, inplace: bool = False, header=None
) -> MapSet:
    """Weight and flag maps for a raw 2-D image.

    Streams tile by tile (memory: a few image-sized planes, not 14);
    :func:`write_maps` goes further and writes flags and weights out as
    they are made.

    Parameters
    ----------
    image : array, shape (H, W)
    maker : MaskMaker
        Supplies probabilities and thresholds; only its selected classes
        enter the maps.
    user_weight : array, shape (H, W), optional
        Multiplied in; its zeros stay zero.
    inplace : bool
        A native float32 ``image`` may be overwritten by its normalised
        version (saves a full-frame copy; ignored with noise weights, which
        need the raw image).
    """
    policy = policy or MapPolicy()
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"maps need a 2-D image, got shape {image.shape}")
    thresh = maker.config.thresholds[list(maker.selected)].astype(np.float32)[:, None, None]
    acc = _Accumulator(image.shape, maker, policy, image=image)
    for (ys, xs), p in maker.iter_blocks(image, owned=inplace and not (policy.noise or policy.fuse)):
        acc.add(ys, xs, p > thresh, p)
    return acc.finish(image, user_weight, header)


def maps_from_masks(masks: np.ndarray, maker: MaskMaker, policy: MapPolicy | None = None, user_weight=None,
                    image=None, header=None, probs=None) -> MapSet:
    """Maps from ready masks (bool, ``(n_selected, H, W)`` in ``maker``'s
    class order); ``image`` is needed for noise weights and evidence fusion
    (without it the network's masks are used alone). ``probs``, the
    probabilities the masks were thresholded from (same shape), is needed for
    the maps :func:`compute_maps` makes (soft weights; the fusion's
    cosmic-ray tracks); without it those steps are skipped."""
    policy = policy or MapPolicy()
    masks = np.asarray(masks, bool)
    if probs is not None and np.shape(probs) != masks.shape:
        raise ValueError(f"probabilities shape {np.shape(probs)} != masks shape {masks.shape}")
    acc = _Accumulator(masks.shape[1:], maker, policy, image=image)
    acc.add(slice(None), slice(None), masks, probs)
    return acc.finish(image, user_weight, header)


# -- files -----------------------------------------------------------------
def _cached_masks(mask_path: Path, image_path: Path, index: int, maker: MaskMaker, shape) -> np.ndarray | None:
    """Reuse ``NAME.masks.fits`` when it is newer than the image and was made
    with the same model, classes, priors and thresholds; else None."""
    try:
        if not mask_path.exists() or mask_path.stat().st_mtime < image_path.stat().st_mtime:
            return None
        with fits.open(mask_path, memmap=False) as h:
            hdu = h[index]
            if not maker.made_these_masks(hdu.header):
                return None
            data = hdu.data
            if data is None or data.shape[1:] != tuple(shape):
                return None
            return np.asarray(data, dtype=bool)
    except (OSError, IndexError, KeyError, ValueError):
        return None


def write_maps(
    spec: InputSpec | str,
    maker: MaskMaker,
    policy: MapPolicy | None = None,
    out_dir=None,
    weight_image: str | os.PathLike | None = None,
    overwrite: bool = False,
    reuse_masks: bool = True,
    extra_cards=(),
) -> tuple[Path, Path]:
    """Write ``NAME.weight.fits`` and ``NAME.flag.fits`` for a FITS image.

    The maps mirror the image's HDU layout (or are single-HDU for an
    ``file.fits[N]`` selection), keep each image header and WCS, and carry
    the provenance and policy keywords. Both are written only once both are
    computed (atomic renames), never over an input. ``extra_cards``
    (key, value, comment) go into every map header (e.g. MaxiTrack's score).
    With ``reuse_masks``, an up-to-date ``NAME.masks.fits`` made with the
    same model and settings stands in for the network, only where the maps
    need no probabilities (not with soft weights, nor with fused maps that
    flag cosmic rays: their tracks are completed from the CR probability).

    Returns
    -------
    (weight_path, flag_path)
    """
    if not isinstance(spec, InputSpec):
        spec = parse_input(str(spec))
    policy = policy or MapPolicy()
    wpath = output_path(spec, WEIGHT_SUFFIX, out_dir)
    fpath = output_path(spec, FLAG_SUFFIX, out_dir)
    for p in (wpath, fpath):
        if p.exists() and not overwrite:
            raise FileExistsError(exists_message(p))
    mask_path = output_path(spec, MASK_SUFFIX, out_dir)
    user = None
    if weight_image is not None:
        user = open_fits(weight_image, "weight image")
    hdul = open_fits(spec.path, "image")
    protect = [spec.path] + ([Path(weight_image)] if weight_image else [])
    # Each HDU's maps go to disk as soon as they are made (a mosaic is never
    # held whole); both files are renamed into place only when both are complete.
    try:
        with FitsStreamWriter(wpath, overwrite, protect) as w_out, FitsStreamWriter(fpath, overwrite, protect) as f_out:
            pairs = select_hdus(hdul, spec)
            n_maps = 0
            for index, hdu in pairs:
                where = f"{spec.path}[{index}]"
                single = spec.hdu is not None
                shape = plane_shape(hdu)
                if shape is None and not is_image_hdu(hdu):
                    if single:
                        raise InputError(f"{where}: not a 2-D image HDU")
                    # SExtractor pairs image and map HDUs by position, tables
                    # included: a header-only stand-in keeps the count.
                    for out in (w_out, f_out):
                        out.add_hdu(fits.PrimaryHDU(header=image_header(hdu)) if index == 0 else _stand_in(hdu))
                    continue
                if shape is None:
                    raise InputError(f"{where}: maps need 2-D images (shape {tuple(hdu.shape)})")
                try:
                    with stage("read"):
                        data = read_plane(hdu, (0,) * (len(hdu.shape) - 2))  # length-1 axes dropped, as SExtractor does
                except Exception as exc:
                    raise InputError(f"{where}: cannot read image data ({exc})") from None
                uw = None
                if user is not None:
                    uw = _user_weight(user, weight_image, index if not single else None, data.shape, len(pairs))
                masks = _cached_masks(mask_path, spec.path, 0 if single else index, maker, data.shape) \
                    if reuse_masks and not _needs_probabilities(maker, policy) else None
                hdr = image_header(hdu)
                for key, value, comment in maker.header_cards_common() + policy.header_cards() + list(extra_cards):
                    hdr[key] = (value, comment)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", MaxidetectWarning)
                    with stage("maps"):
                        _stream_maps(data, maker, policy, uw, masks, w_out, f_out, hdr, hdu.header)
                for w in caught:
                    warnings.warn(f"{where}: {w.message}", MaxidetectWarning, stacklevel=2)
                del data, masks, uw
                n_maps += 1
            if n_maps == 0:
                raise InputError(f"{spec.path}: no 2-D image HDU to map")
    finally:
        hdul.close()
        if user is not None:
            user.close()
    return wpath, fpath


def _stream_maps(image, maker: MaskMaker, policy: MapPolicy, user_weight, masks, w_out, f_out, hdr,
                 input_header=None) -> None:
    """Maps of one image into the output files. Network-only maps stream:
    flags tile by tile, weights band by band (kept whole: only the zero
    masks and, with noise weights, the raw image). Fused maps need the
    whole frame: its flags are kept, fused, then written with the fusion's
    header cards."""
    acc = _Accumulator(image.shape, maker, policy, keep_flag=policy.fuse, image=image)
    slots = None

    def open_slots(extra=()):
        whdr, fhdr = hdr.copy(), hdr.copy()
        for key, value, comment in extra:
            whdr[key] = fhdr[key] = (value, comment)
        whdr["MDMAP"] = ("WEIGHT", "maxidetect map: MAP_WEIGHT")
        fhdr["MDMAP"] = ("FLAG", "maxidetect map: OR of class bit codes")
        return w_out.add_image(whdr, image.shape, np.float32), f_out.add_image(fhdr, image.shape, np.int32)

    if not policy.fuse:
        slots = open_slots()
    if masks is not None:
        f = acc.add(slice(None), slice(None), masks)
        if slots:
            slots[1].write((), 0, 0, f)
    else:
        thresh = maker.config.thresholds[list(maker.selected)].astype(np.float32)[:, None, None]
        for (ys, xs), p in maker.iter_blocks(image, owned=not (policy.noise or policy.fuse)):
            f = acc.add(ys, xs, p > thresh, p)
            if slots:
                with stage("maps_write"):
                    slots[1].write((), ys.start, xs.start, f)
    if policy.fuse:
        with stage("fusion"):
            report = acc.fuse(image, input_header)
        with stage("maps_write"):
            slots = open_slots(report.header_cards())
            slots[1].write((), 0, 0, acc.flag)
    for y0, w in acc.weight_bands(image if policy.noise else None, user_weight):
        with stage("maps_write"):
            slots[0].write((), y0, 0, w)


def _stand_in(hdu) -> fits.ImageHDU:
    """A data-less HDU in place of a non-image extension (a table)."""
    out = fits.ImageHDU()
    if hdu.name:
        out.header["EXTNAME"] = hdu.name
    out.header["MDMAP"] = ("NONE", "input HDU is not an image: no map")
    return out


def _user_weight(user: fits.HDUList, name, index, shape, n_hdus) -> np.ndarray:
    """The user's weight plane matching image HDU ``index`` (None: single)."""
    if index is None or len(user) == 1:
        hdu = user[0] if user[0].data is not None else (user[1] if len(user) > 1 else user[0])
        where = f"{name}[{user.index_of(hdu)}]"
    else:
        if index >= len(user):
            raise InputError(f"{name}: weight image has {len(user)} HDUs, image HDU {index} has no match")
        hdu, where = user[index], f"{name}[{index}]"
    if hdu.data is None or hdu.data.shape != tuple(shape):
        got = None if hdu.data is None else hdu.data.shape
        raise InputError(f"{where}: weight image shape {got} does not match the image's {tuple(shape)}")
    return np.asarray(hdu.data, dtype=np.float32)


def sextractor_args(weight_path, flag_path, interp_none: bool = True) -> list[str]:
    """The SExtractor arguments that use the maps (absolute paths).

    ``-INTERP_TYPE NONE`` keeps zero-weight pixels out: SExtractor's default
    ``ALL`` refills them from their neighbours.
    """
    args = [
        "-WEIGHT_TYPE", "MAP_WEIGHT",
        "-WEIGHT_IMAGE", str(Path(weight_path).absolute()),
        "-FLAG_IMAGE", str(Path(flag_path).absolute()),
        "-FLAG_TYPE", "OR",
    ]
    return args + ["-INTERP_TYPE", "NONE"] if interp_none else args

