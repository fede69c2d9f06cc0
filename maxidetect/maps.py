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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy import ndimage

from .classes import CLASS_NAMES, CLASSES, class_index
from .io import (
    InputError,
    InputSpec,
    image_header,
    is_image_hdu,
    output_path,
    parse_input,
    write_hdulist_atomic,
)
from .masks import MASK_SUFFIX, MaskMaker, MaxidetectWarning

__all__ = [
    "MapPolicy",
    "MapSet",
    "ACTIONS",
    "WEIGHT_SUFFIX",
    "FLAG_SUFFIX",
    "compute_maps",
    "write_maps",
]

ACTIONS = ("zero", "flag", "none")
WEIGHT_SUFFIX = ".weight.fits"
FLAG_SUFFIX = ".flag.fits"


@dataclass
class MapPolicy:
    """What each class does to the maps.

    Parameters
    ----------
    actions : dict
        ``{abbr: "zero" | "flag" | "none"}``; "zero" sets weight 0 (and the
        flag bit), "flag" sets the flag bit only, "none" ignores the class.
        Missing classes take the registry's ``weight_action``.
    grow : int
        Grow zero-weight regions by this many pixels (square structuring
        element), to catch the faint halo of a defect below threshold.
    soft : bool
        Weight ``1 - max p`` over the "zero" classes instead of 0/1.
    """

    actions: dict = field(default_factory=dict)
    grow: int = 0
    soft: bool = False

    def __post_init__(self):
        full = {c.abbr: c.weight_action for c in CLASSES}
        for abbr, act in self.actions.items():
            act = act.lower()
            if act not in ACTIONS:
                raise ValueError(f"class {abbr}: action {act!r} not one of {', '.join(ACTIONS)}")
            full[CLASS_NAMES[class_index(abbr)]] = act
        self.actions = full
        if self.grow < 0:
            raise ValueError(f"grow must be >= 0 pixels, got {self.grow}")

    @classmethod
    def parse(cls, spec: str | None, grow: int = 0, soft: bool = False) -> MapPolicy:
        """From ``"SAT=zero,FR=none"`` overrides of the registry defaults."""
        actions = {}
        for item in (spec or "").split(","):
            if not item.strip():
                continue
            if "=" not in item:
                raise ValueError(f"policy item {item!r} is not CLASS=ACTION")
            abbr, act = item.split("=", 1)
            actions[abbr.strip()] = act.strip()
        return cls(actions, grow=grow, soft=soft)

    def indices(self, action: str) -> list[int]:
        return [i for i, c in enumerate(CLASSES) if self.actions[c.abbr] == action]

    def header_cards(self) -> list[tuple]:
        zero = ",".join(CLASSES[i].abbr for i in self.indices("zero")) or "none"
        flag = ",".join(CLASSES[i].abbr for i in self.indices("flag")) or "none"
        return [
            ("MDWZERO", zero, "classes given weight 0"),
            ("MDWFLAG", flag, "classes only flagged"),
            ("MDWGROW", self.grow, "zero-weight growth [pix]"),
            ("MDWSOFT", self.soft, "soft weights 1-p"),
        ]


@dataclass
class MapSet:
    """Maps for one 2-D image: ``weight`` float32 and ``flag`` int32, (H, W)."""

    weight: np.ndarray
    flag: np.ndarray


def _grow(mask: np.ndarray, n: int) -> np.ndarray:
    if n <= 0 or not mask.any():
        return mask
    return ndimage.binary_dilation(mask, structure=np.ones((3, 3), bool), iterations=n)


def compute_maps(image, maker: MaskMaker, policy: MapPolicy | None = None, user_weight=None) -> MapSet:
    """Weight and flag maps for a raw 2-D image.

    Streams tile by tile (memory ~ a few image-sized planes, not 14).

    Parameters
    ----------
    image : array, shape (H, W)
    maker : MaskMaker
        Supplies prior-modified probabilities and thresholds; only its
        selected classes enter the maps.
    user_weight : array, shape (H, W), optional
        Multiplied in; its zeros stay zero.
    """
    policy = policy or MapPolicy()
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"maps need a 2-D image, got shape {image.shape}")
    sel = list(maker.selected)
    zero_rows = [k for k, ci in enumerate(sel) if policy.actions[CLASSES[ci].abbr] == "zero"]
    flag_rows = [k for k, ci in enumerate(sel) if policy.actions[CLASSES[ci].abbr] != "none"]
    bits = np.array([CLASSES[ci].bit for ci in sel], dtype=np.int32)
    thresh = maker.config.thresholds[sel].astype(np.float32)[:, None, None]

    flag = np.zeros(image.shape, np.int32)
    zero = np.zeros(image.shape, bool)
    soft = np.ones(image.shape, np.float32) if policy.soft else None
    for (ys, xs), p in maker._blocks(image):
        m = p > thresh
        f = flag[ys, xs]
        for k in flag_rows:
            if bits[k]:
                f[m[k]] |= bits[k]
        if zero_rows:
            zero[ys, xs] = m[zero_rows].any(axis=0)
            if soft is not None:
                soft[ys, xs] = 1.0 - p[zero_rows].max(axis=0)
    zero = _grow(zero, policy.grow)
    if soft is not None:
        weight = soft
        weight[zero] = 0.0
    else:
        weight = (~zero).astype(np.float32)
    if user_weight is not None:
        user_weight = np.asarray(user_weight, dtype=np.float32)
        if user_weight.shape != image.shape:
            raise ValueError(f"weight image shape {user_weight.shape} != image shape {image.shape}")
        weight *= np.where(np.isfinite(user_weight), user_weight, 0.0)
    return MapSet(weight=weight, flag=flag)


# -- files -----------------------------------------------------------------
def _open(path: Path, what: str) -> fits.HDUList:
    if not path.exists():
        raise InputError(f"{path}: {what} does not exist")
    try:
        return fits.open(path, memmap=False)
    except Exception as exc:
        raise InputError(f"{path}: {what} is not a readable FITS file ({exc})") from None


def _select(hdul: fits.HDUList, spec: InputSpec) -> list[tuple[int, object]]:
    """(index, hdu) pairs to map: the selected HDU, or every HDU."""
    if spec.hdu is None:
        return list(enumerate(hdul))
    try:
        return [(hdul.index_of(spec.hdu), hdul[spec.hdu])]
    except (KeyError, IndexError):
        raise InputError(f"{spec.path}[{spec.hdu}]: no such HDU (file has {len(hdul)})") from None


def _cached_masks(mask_path: Path, image_path: Path, index: int, maker: MaskMaker, shape) -> np.ndarray | None:
    """Reuse ``NAME.masks.fits`` when it is newer than the image and was made
    with the same model, classes, priors and thresholds; else None."""
    try:
        if not mask_path.exists() or mask_path.stat().st_mtime < image_path.stat().st_mtime:
            return None
        with fits.open(mask_path, memmap=False) as h:
            hdu = h[index]
            hdr = hdu.header
            if hdr.get("MDOUTPUT") != "MASKS" or hdr.get("MDSHA256") != maker.predictor.info.sha256:
                return None
            if bool(hdr.get("MDPRIOR")) != maker.apply_priors or not hdr.get("MDTHRESH"):
                return None
            names = [hdr.get(f"MDCLS{k + 1}") for k in range(int(hdr.get("MDNCLASS", 0)))]
            if names != maker.class_names:
                return None
            for ci in maker.selected:
                a = CLASSES[ci].abbr
                if hdr.get(f"{a}_TH") != float(maker.config.thresholds[ci]):
                    return None
                if maker.apply_priors and hdr.get(f"{a}_PR") != float(maker.config.priors[ci]):
                    return None
            data = hdu.data
            if data is None or data.shape[1:] != tuple(shape):
                return None
            return np.asarray(data, dtype=bool)
    except (OSError, IndexError, KeyError, ValueError):
        return None


def _maps_from_masks(masks: np.ndarray, maker: MaskMaker, policy: MapPolicy, user_weight) -> MapSet:
    sel = list(maker.selected)
    flag = np.zeros(masks.shape[1:], np.int32)
    zero = np.zeros(masks.shape[1:], bool)
    for k, ci in enumerate(sel):
        act = policy.actions[CLASSES[ci].abbr]
        if act != "none" and CLASSES[ci].bit:
            flag[masks[k]] |= CLASSES[ci].bit
        if act == "zero":
            zero |= masks[k]
    weight = (~_grow(zero, policy.grow)).astype(np.float32)
    if user_weight is not None:
        weight *= np.where(np.isfinite(user_weight), user_weight, 0.0).astype(np.float32)
    return MapSet(weight=weight, flag=flag)


def write_maps(
    spec: InputSpec | str,
    maker: MaskMaker,
    policy: MapPolicy | None = None,
    out_dir=None,
    weight_image: str | os.PathLike | None = None,
    overwrite: bool = False,
    reuse_masks: bool = True,
) -> tuple[Path, Path]:
    """Write ``NAME.weight.fits`` and ``NAME.flag.fits`` for a FITS image.

    The maps mirror the image's HDU layout (or are single-HDU for an
    ``file.fits[N]`` selection), keep each image header and WCS, and carry
    the provenance and policy keywords. Both are written only once both are
    computed (atomic renames), never over an input.

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
            raise FileExistsError(f"{p}: output exists (use --overwrite to replace it)")
    mask_path = output_path(spec, MASK_SUFFIX, out_dir)
    user = None
    if weight_image is not None:
        user = _open(Path(weight_image), "weight image")
    hdul = _open(spec.path, "image")
    w_out: list = []
    f_out: list = []
    try:
        pairs = _select(hdul, spec)
        n_maps = 0
        for index, hdu in pairs:
            where = f"{spec.path}[{index}]"
            single = spec.hdu is not None
            if not is_image_hdu(hdu):
                if single:
                    raise InputError(f"{where}: not a 2-D image HDU")
                if index == 0:
                    w_out.append(fits.PrimaryHDU(header=image_header(hdu)))
                    f_out.append(fits.PrimaryHDU(header=image_header(hdu)))
                continue  # SExtractor reads image HDUs only
            data = hdu.data
            if data is None or data.ndim != 2:
                raise InputError(f"{where}: maps need 2-D images (shape {None if data is None else data.shape})")
            uw = None
            if user is not None:
                uw = _user_weight(user, weight_image, index if not single else None, data.shape, len(pairs))
            masks = _cached_masks(mask_path, spec.path, 0 if single else index, maker, data.shape) \
                if reuse_masks and not policy.soft else None
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", MaxidetectWarning)
                if masks is not None:
                    ms = _maps_from_masks(masks, maker, policy, uw)
                else:
                    ms = compute_maps(data, maker, policy, uw)
            for w in caught:
                warnings.warn(f"{where}: {w.message}", MaxidetectWarning, stacklevel=2)
            hdr = image_header(hdu)
            for key, value, comment in maker.header_cards_common() + policy.header_cards():
                hdr[key] = (value, comment)
            first = single or index == 0
            cls = fits.PrimaryHDU if first else fits.ImageHDU
            whdr, fhdr = hdr.copy(), hdr.copy()
            whdr["MDMAP"] = ("WEIGHT", "maxidetect map: MAP_WEIGHT")
            fhdr["MDMAP"] = ("FLAG", "maxidetect map: OR of class bit codes")
            w_out.append(cls(data=ms.weight, header=whdr))
            f_out.append(cls(data=ms.flag, header=fhdr))
            n_maps += 1
        if n_maps == 0:
            raise InputError(f"{spec.path}: no 2-D image HDU to map")
    finally:
        hdul.close()
        if user is not None:
            user.close()
    protect = [spec.path] + ([Path(weight_image)] if weight_image else [])
    write_hdulist_atomic(fits.HDUList(w_out), wpath, overwrite=overwrite, protect=protect)
    write_hdulist_atomic(fits.HDUList(f_out), fpath, overwrite=overwrite, protect=protect)
    return wpath, fpath


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


def sextractor_args(weight_path: Path, flag_path: Path) -> list[str]:
    """The SExtractor arguments that use the maps."""
    return [
        "-WEIGHT_TYPE", "MAP_WEIGHT",
        "-WEIGHT_IMAGE", str(weight_path),
        "-FLAG_IMAGE", str(flag_path),
        "-FLAG_TYPE", "OR",
        "-INTERP_TYPE", "NONE",
    ]

