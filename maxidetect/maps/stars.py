"""Rule 1: masking never removes a real source.

Before a pixel gets zero weight, every detected object whose core touches
zero-weight candidates, and every group of candidates no such object
reaches (a faint undersampled star is often missing from the frame's own
smoothed catalogue), is tested against models of its stamp, with the
frame's noise:

- *artefact*: a background plane outside the candidate pixels, which are
  free (a cosmic ray, a hot pixel: nothing real there); where the
  candidates are part of a line sharper across than the PSF, the line's
  bright pixels beyond them are free too when that fits better (a track the
  network called in pieces: alone, its missed stretch fits a narrow source);
- *source*: the plane plus a pixel-integrated Gaussian of the frame's PSF
  width or wider (stars and galaxies; nothing real is sharper than the PSF),
  over every pixel, candidates included; elliptical, of the PSF's axis ratio
  and angle, where the frame's PSF is elongated (tracking, optics);
- *source + artefact*: the same source fitted on the pixels outside the
  candidates, which are free (a cosmic ray on a star), unless candidates
  lie far *below* it (an artefact only adds light);
- *source + wings*: the source over every pixel plus two wider Gaussians
  of free, non-negative amplitude (a bright undersampled star's Moffat
  wings are far above any Gaussian of its core's width; a hit has no light
  around it to gain from them);
- *source + track*: the source over every pixel with the candidate pixels
  far above it set free (a cosmic-ray track across a star's core covers
  the whole core): it must stand out of the line the free pixels draw,
  which a track's brightest stretch alone does not;
- *source beside a hit*: a star a few pixels from a cosmic ray in one
  group of candidates, fitted at its own peak in the group with the hit's
  pixels free, where no bridge of light joins the two (along a track it
  does), or where a track ends on the star's wing and runs off on one side
  (the track keeps its zero weight but within a pixel of the peak);
- *source under a hit*: where the candidates' peak is sharper than any
  source, at most two such pixels are free and the source is fitted over
  every other pixel, candidates included (L.A.Cosmic takes a faint
  undersampled star's whole core with a hit on it); the pixels beside the
  hit must hold a round core and no other candidate lie far above the source;
- *source beside a sharp track*: last, where every model above failed, the
  candidates sharper across than any PSF (a cosmic-ray track one pixel
  wide) and one pixel more are left out of the fits and keep their zero
  weight (the pixel more only where the source's model does not explain
  it), and the rest is judged again, where it has a round core of 5
  sigma (a source of 10 sigma at least must win);
- *two sources*: two close stars in one call (no one source fits them,
  or the fainter was the "artefact" beside the brighter): two sources at
  the group's peak and at the peak its fit leaves, neither a line's piece,
  which must explain every candidate (none far above them) and beat the
  artefact as one source does; preferred to a source with an artefact
  beside it where it passes.

The *source* and *source + artefact* models are fitted at two centres,
the candidates' peak and the brightest pixel beside them, tried in the
order of their sources: a source over every pixel first, then the best AIC.

Before any fit, the light the frame's hits spill into their neighbours
(diffusion, inter-pixel capacitance: a fraction measured on the frame's own
hits, :func:`hit_spill`) is taken off the neighbours of the stamp's hits: a
hit and its spill make a compact symmetric blob that fits an undersampled star.

The model with the lowest Akaike information criterion wins, and the
source also wins where a likelihood-ratio test against free candidate
pixels does not reject it at 0.1% (the AIC alone lets noise decide a faint
star under a large group of candidates); a source model must have an
amplitude of 5 sigma or more. When a source wins, the candidate pixels on
its footprint (its core and one pixel more: the detection filter carries a
zero weight one pixel) are released from zero weight to flag-only, and no
cosmic-ray halo grows into it: the object stays in the catalogue, and
IMAFLAGS_ISO still says what the network saw, unless a star's own profile
explains the candidates too (no artefact needed there: the call was the
star; ``explained``, whose cosmic-ray and hot-pixel flags the fusion drops).
The fit allows a fractional model error (real PSFs are not Gaussian), so
bright stars are not rejected for their wings.

On a source too faint to see pixel by pixel (fitted peak under
``FAINT_PEAK`` sigma: a faint galaxy, a nebula's knot) the candidates
sharper than any PSF and far above it stay zero: the source is found
without them, and released they would make a detection of the hit's light.

A group's peak (5 sigma above its surroundings, no steeper than a source,
round, off spikes and fitted lines) that no judgement's stamp holds gets a
judgement of its own: a track that runs into a star is often catalogued
with it as one object centred on the track.

Objects that only the cosmic-ray halo (grown after this rule) would reach
are judged too: a source keeps the halo off its footprint, and its
candidates stay zero.

Evidence that does not come from the object itself (saturation and bleed,
overscan, a fitted column or trail line) is never released here. A fitted
trail or column is released only for the sources on it (a trail's only
where the light left with it subtracted outshines it, and in the source's
core): an object as
elongated as the line and along it is a piece of the line itself, unless
it is so only with a sharp track in it (a trail is never sharper than the
PSF): without the track, a round core is a source beside the track. The
sources on and beside a trail are those found with its model subtracted
(:func:`maxidetect.maps.frame.sources_under`): on the frame itself a star
there is a part of the line's object.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from scipy import ndimage
from scipy.special import erf

from maxidetect.maps.frame import FrameStats, elliptical_gaussian, light_centre, trailed_gaussian
from maxidetect.maps.moffat import measure_moffat
from maxidetect.maps.morph import axis_angle, dilate, grow_labels
from maxidetect.resources import usable_cpus

__all__ = ["ReleaseResult", "protect_sources", "steeper_than_psf", "sharper_across_than_psf", "MODEL_ERROR",
           "MIN_SOURCE_SNR"]

#: Fractional error allowed on the source model (PSF shape, centring).
MODEL_ERROR = 0.15
#: A fit whose amplitude is this significant is refitted with the model error in its weights
#: (:func:`_fit_family`): beyond it the model's mismatch, not the noise, sets the fit.
REFIT_SNR = 100.0
#: A source model must have at least this amplitude significance.
MIN_SOURCE_SNR = 5.0
#: A source whose fitted peak is under this many sigma per pixel (a faint
#: galaxy, a nebula's bump: significant only summed over many pixels) does
#: not need the candidates far above it: they stay zero (see protect_sources).
FAINT_PEAK = 3.0
#: A PSF with a smaller axis ratio is fitted as elongated (tracking errors,
#: coma): a round model narrow enough for its minor axis is too narrow for
#: its major axis, and the stars fail rule 1 (measured: 10 of 435 lost).
ROUND_Q = 0.85
#: A source model over every pixel that a likelihood-ratio test against free
#: candidate pixels does not reject at this level keeps its candidates. At
#: 1% it rejected 1.7% of faint undersampled Moffat stars (peak 5-8 sigma,
#: cores called CR; the Gaussian is not their profile): 0.3% at 0.1% (of 720).
SOURCE_ALPHA = 0.001
#: A fitted line's pixel (its model subtracted) is an object's candidate in rule 1 where it stands
#: this many sigma above the line, or beside such a pixel; the rest are the line's (zero for the
#: line, whatever the object is) and in none of its fits (:func:`_own_on_line`).
LINE_LOUD = 3.0
_WIDTHS = (0.85, 1.0, 1.3, 1.8, 2.6, 3.8)  # x the PSF sigma: stars to compact galaxies
_OFFSETS = np.linspace(-0.5, 0.5, 9)  # sub-pixel centre search around the peak pixel (1/8 px: undersampled PSFs)


@dataclass
class ReleaseResult:
    released: np.ndarray  # bool (H, W): zero-weight candidates given back (flag-only)
    protected: np.ndarray  # bool (H, W): footprints of the sources judged real (no halo grows into them)
    n_tested: int
    n_sources: int  # objects judged real sources
    spill: tuple = (0.0, 0.0)  # fractions of a hit's value in its side and corner neighbours (hit_spill)
    # bool (H, W): the released pixels a source's model explains with them (no hit there)
    explained: np.ndarray | None = None
    n_ahead: int = 0  # objects judged ahead in other processes (_verdicts)
    n_again: int = 0  # of them, judged again as a source released pixels in their stamp first


def _pixel_gauss(offsets: np.ndarray, sigma: float) -> np.ndarray:
    """Pixel-integrated unit Gaussian along one axis: (len(offsets),) for
    pixel centres at ``offsets`` from the profile centre."""
    s = np.sqrt(2.0) * sigma
    return 0.5 * (erf((offsets + 0.5) / s) - erf((offsets - 0.5) / s))


@lru_cache(maxsize=512)  # ~5 MB at most; a frame uses a few hundred
def _axis_profiles(n: int, c: int, sig_psf: float, widths=_WIDTHS) -> np.ndarray:
    """Peak-normalised pixel-integrated Gaussians along one stamp axis of
    ``n`` pixels, for every width and sub-pixel centre around pixel ``c``:
    (n_w, n_off, n), read-only (stamps repeat their sizes and centres)."""
    sig = np.asarray(widths)[:, None, None] * sig_psf
    g = _pixel_gauss(np.arange(n, dtype=np.float64)[None, None, :] - (c + _OFFSETS)[None, :, None], sig)
    g /= g.max(axis=-1, keepdims=True)  # peak 1: the separable product's maximum is the product of maxima
    g.flags.writeable = False
    return g


def _profiles(shape, cy, cx, sig_psf):
    """:func:`_axis_profiles` along y and x: (n_w, n_off, h), (n_w, n_off, w)."""
    return _axis_profiles(shape[0], int(cy), float(sig_psf)), _axis_profiles(shape[1], int(cx), float(sig_psf))


def _trail(psf_shape) -> tuple | None:
    """A PSF shape's (q, theta[, trail]) trail: (core sigma, half-length) or None."""
    return psf_shape[2] if len(psf_shape) > 2 else None


def _centre_profiles(shape, cy, cx, sig_psf: float, psf_shape) -> tuple | np.ndarray:
    """The source's profiles at pixel (cy, cx) of a stamp: elliptical where
    the PSF's axis ratio (``psf_shape`` = (q, theta[, trail])) is under :data:`ROUND_Q`
    (:func:`_elliptical_profiles`), else round (:func:`_profiles`)."""
    if psf_shape[0] < ROUND_Q:
        return _elliptical_profiles(tuple(shape), int(cy), int(cx), float(sig_psf), float(psf_shape[0]),
                                    float(psf_shape[1]), trail=_trail(psf_shape))
    return _profiles(shape, cy, cx, sig_psf)


@lru_cache(maxsize=16)  # float64: ~14 MB for 15 px stamps, ~115 MB if all grown; elongated PSFs only
def _elliptical_profiles(shape, cy: int, cx: int, sig_psf: float, q: float, theta: float,
                         widths=_WIDTHS, trail: tuple | None = None) -> np.ndarray:
    """Peak-normalised elliptical Gaussians of an elongated PSF (axis ratio
    ``q``, major axis at ``theta`` from +x; ``sig_psf`` the geometric mean
    sigma; ``trail``: (core sigma, half-length) of a trailed PSF, whose
    cores are widened instead, see :func:`~maxidetect.maps.frame.trailed_gaussian`)
    for every width (x ``sig_psf``) and sub-pixel centre around pixel (cy, cx):
    (n_w, n_off, n_off, h, w), float32 values held as float64 (the fits'
    precision: no conversion per fit), read-only. Not separable: the pixel
    integration is approximated by a box's variance (1/12 px^2 per axis).
    Cut out of :func:`_elliptical_grid`, kept for small reaches (the offsets
    from the centre are exact in binary: the values are the stamp's own)."""
    h, w = shape
    reach = max(cy, h - 1 - cy, cx, w - 1 - cx)
    if reach <= 24:  # canvases for a few reaches only
        reach = -(-max(reach, 1) // 8) * 8
        canvas = _elliptical_canvas(reach, sig_psf, q, theta, widths, trail)
    else:  # a grown stamp (rare): its own grid, not kept
        canvas = _elliptical_grid(reach, sig_psf, q, theta, widths, trail)
    g = canvas[..., reach - cy:reach - cy + h, reach - cx:reach - cx + w]
    g = (g / g.max(axis=(3, 4), keepdims=True)).astype(np.float32).astype(np.float64)
    g.flags.writeable = False
    return g


def _elliptical_grid(reach: int, sig_psf: float, q: float, theta: float, widths, trail=None) -> np.ndarray:
    """:func:`_elliptical_profiles`' Gaussians, not normalised, over pixel
    shifts -reach..reach from the centre pixel in y and x: (n_w, n_off,
    n_off, 2 reach + 1, 2 reach + 1)."""
    shifts = np.arange(-reach, reach + 1, dtype=np.float64)
    dy = (shifts[None, :] - _OFFSETS[:, None])[:, None, :, None]  # (n_off, 1, n, 1)
    dx = (shifts[None, :] - _OFFSETS[:, None])[None, :, None, :]  # (1, n_off, 1, n)
    if trail is not None:  # a trailed source is a wider core drawn along the PSF's segment, not a longer one
        return np.asarray([trailed_gaussian(dx, dy, (k * trail[0]) ** 2, trail[1], theta) for k in widths])
    return np.asarray([elliptical_gaussian(dx, dy, (k * sig_psf) ** 2, q, theta) for k in widths])


#: Reaches 8, 16, 24 for the source's widths and the three wing components: <= 40 MB.
_elliptical_canvas = lru_cache(maxsize=12)(_elliptical_grid)


#: Wings of the *source + wings* model, x the core's width: two wider
#: Gaussians of free, non-negative amplitude (a Moffat profile's wings,
#: seeing halos: real stars have more light around the core than a Gaussian).
_WING_WIDTHS = (1.7, 3.0)
_WING_CORES = _WIDTHS[:3]  # a star's core is as wide as the PSF (galaxies have the wider Gaussians)


def _wing_profiles(shape, cy: int, cx: int, sig_psf: float, q: float, theta: float, trail=None):
    """Peak-normalised core and wing Gaussians around pixel (cy, cx), for
    every core width (:data:`_WING_CORES`) and sub-pixel centre, per
    component (core, then :data:`_WING_WIDTHS`): the source's own profiles
    at the wider widths. Round (``q`` = 1): a list of the separable pairs
    (along y, along x) of :func:`_axis_profiles`; elongated: an array (1 +
    len(_WING_WIDTHS), n_w * n_off * n_off, h * w) of
    :func:`_elliptical_profiles`, float32, read-only."""
    if q < 1.0:
        return _wing_stack(tuple(shape), int(cy), int(cx), float(sig_psf), float(q), float(theta), trail)
    h, w = shape
    return [(_axis_profiles(h, int(cy), sig_psf, widths), _axis_profiles(w, int(cx), sig_psf, widths))
            for widths in (tuple(f * k for k in _WING_CORES) for f in (1.0, *_WING_WIDTHS))]


@lru_cache(maxsize=32)  # ~1.5 MB each at most, only on frames with an elongated PSF
def _wing_stack(shape, cy: int, cx: int, sig_psf: float, q: float, theta: float, trail) -> np.ndarray:
    """:func:`_wing_profiles` of an elongated PSF."""
    h, w = shape
    stack = np.asarray([_elliptical_profiles(shape, cy, cx, sig_psf, q, theta, tuple(f * k for k in _WING_CORES),
                                             trail)
                        .reshape(-1, h * w) for f in (1.0, *_WING_WIDTHS)], np.float32)
    stack.flags.writeable = False
    return stack


def _wing_normal(d, w0, plane, comps):
    """Normal equations of the *source + wings* models (:func:`_fit_wings`):
    (normal (n_mod, n_par, n_par), rhs (n_par, n_mod), pixels(idx) -> (n_src,
    len(idx), h * w) of those models' components). Separable components
    (round) sum as products of small matrices, as in :func:`_fit_family`."""
    pv = plane.reshape(3, -1)
    n_src = len(comps)
    if isinstance(comps, list):  # separable pairs
        yv, xv = plane[1][:, 0], plane[2][0]
        wd = w0 * d

        def sums(left, m, right):  # sum over pixels of left(y) * m * right(x), every model
            return np.matmul(np.matmul(left, m), np.swapaxes(right, 1, 2)).reshape(-1)

        n_mod = comps[0][0].shape[0] * comps[0][0].shape[1] * comps[0][1].shape[1]
        normal = np.empty((n_mod, n_src + 3, n_src + 3))
        rhs = np.empty((n_src + 3, n_mod))
        for i, (gy, gx) in enumerate(comps):
            for j in range(i, n_src):
                normal[:, i, j] = normal[:, j, i] = sums(gy * comps[j][0], w0, gx * comps[j][1])
            cross = np.stack([sums(gy, w0, gx), sums(gy * yv, w0, gx), sums(gy, w0, gx * xv)], axis=1)
            normal[:, i, n_src:] = normal[:, n_src:, i] = cross
            rhs[i] = sums(gy, wd, gx)
        n_off = comps[0][0].shape[1]

        def pixels(idx):
            k, r = np.divmod(np.asarray(idx), n_off * n_off)
            return np.stack([(gy[k, r // n_off][:, :, None] * gx[k, r % n_off][:, None, :]).reshape(len(k), -1)
                             for gy, gx in comps])
    else:
        prof = comps.astype(np.float64)  # (n_src, n_mod, pixels)
        n_mod = prof.shape[1]
        w0r = w0.ravel()
        wprof = prof * w0r
        normal = np.empty((n_mod, n_src + 3, n_src + 3))
        for i in range(n_src):
            for j in range(i, n_src):
                normal[:, i, j] = normal[:, j, i] = np.einsum("mp,mp->m", wprof[i], prof[j])
        cross = wprof @ pv.T  # (n_src, n_mod, 3)
        normal[:, :n_src, n_src:] = cross.transpose(1, 0, 2)
        normal[:, n_src:, :n_src] = cross.transpose(1, 2, 0)
        rhs = np.empty((n_src + 3, n_mod))
        rhs[:n_src] = wprof @ d.ravel()

        def pixels(idx):
            return prof[:, idx]
    wpv = pv * w0.ravel()
    normal[:, n_src:, n_src:] = wpv @ pv.T
    rhs[n_src:] = (wpv @ d.ravel())[:, None]
    return normal, rhs, pixels


def _weighted_solve(basis, w, dv) -> np.ndarray:
    """Least-squares coefficients, (models, n_par), of ``basis`` (n_par,
    models, pixels) for the data ``dv`` (pixels) with the weights ``w``
    (models, pixels), with a 1e-9 relative ridge against degenerate bases."""
    normal = np.einsum("amp,mp,bmp->mab", basis, w, basis)
    normal += np.eye(len(basis)) * 1e-9 * np.trace(normal, axis1=1, axis2=2)[:, None, None]
    return np.linalg.solve(normal, np.einsum("amp,mp,p->ma", basis, w, dv)[..., None])[..., 0]


def _fit_wings(d, var, use, comps, plane, top=4):
    """Best (chi2 with model error, core amplitude, its S/N, source model) of
    a plane + core + wings (:func:`_wing_profiles`, every amplitude free
    and non-negative) over the grid of core widths and sub-pixel centres,
    fitting only ``use`` pixels; (inf, 0, 0, None) when no model has
    non-negative amplitudes. The normal equations are assembled by blocks
    (:func:`_wing_normal`): the plane's is the same for every model."""
    n_src = len(comps)
    w0 = np.where(use, 1.0 / var, 0.0)
    dv, pv = d.ravel(), plane.reshape(3, -1)
    normal, rhs, pixels = _wing_normal(d, w0, plane, comps)
    n_par = n_src + 3
    normal += np.eye(n_par) * 1e-9 * np.trace(normal, axis1=1, axis2=2)[:, None, None]
    coef = np.linalg.solve(normal, rhs.T[..., None])[..., 0]  # (n_mod, n_par)
    core = coef[:, 0] > 0
    ok = (coef[:, :n_src] >= 0).all(axis=1) & core
    w0 = w0.ravel()
    plain = (w0 * dv * dv).sum() - np.einsum("mp,pm->m", coef, rhs)
    # Refitted once with the model error in the weights: on a bright star
    # the plain fit bends the wings to mend the core's shape, which the
    # model error forgives, and spoils the pixels around it. The best plain
    # fits of non-negative amplitudes, and the best of any wings (bent below
    # zero, they may come out non-negative once refitted: a trailed star of
    # S/N 1000, chi2 366 refitted, where the best non-negative plain fit gave 491).
    first = np.unique(np.r_[np.argsort(np.where(ok, plain, np.inf))[:min(top, int(ok.sum()))],
                            np.argsort(np.where(core & ~ok, plain, np.inf))[:min(top, int((core & ~ok).sum()))]])
    if not len(first):
        return np.inf, 0.0, 0.0, None
    prof = pixels(first)  # (n_src, top, pixels)
    basis = np.concatenate([prof, np.broadcast_to(pv[:, None, :], (3, len(first), dv.size))])
    src = np.einsum("mc,cmp->mp", coef[first, :n_src], prof)
    wm = np.where(use.ravel(), 1.0 / (var.ravel() + (MODEL_ERROR * src) ** 2), 0.0)  # (top, pixels)
    coef_m = _weighted_solve(basis, wm, dv)
    refit = (coef_m[:, :n_src] >= 0).all(axis=1) & (coef_m[:, 0] > 0)
    coef_m = np.where(refit[:, None], coef_m, coef[first])
    src = np.einsum("mc,cmp->mp", coef_m[:, :n_src], prof)
    model = src + coef_m[:, n_src:] @ pv
    var_m = var.ravel() + (MODEL_ERROR * src) ** 2
    chi2 = np.where(use.ravel(), (dv - model) ** 2 / var_m, 0.0).sum(axis=1)
    chi2 = np.where(refit | ok[first], chi2, np.inf)  # negative wings, refitted or not: no source
    if not np.isfinite(chi2).any():
        return np.inf, 0.0, 0.0, None
    j = int(np.argmin(chi2))
    k = int(first[j])
    sig_a = np.sqrt(np.linalg.inv(normal[k])[0, 0])
    return float(chi2[j]), float(coef_m[j, 0]), float(coef_m[j, 0] / sig_a), src[j].reshape(d.shape)


def _light_around(d, var_m, model, use, cy: int, cx: int, fwhm: float, segment=None) -> float:
    """S/N of the light the source ``model`` leaves unexplained 1-3 FWHM
    from (cy, cx) (``segment``: (half-length, angle), from a trailed PSF's
    segment through it, ``fwhm`` its core's): wings a Gaussian lacks are
    positive there, a hit's (nothing around it) negative or none."""
    yy, xx = np.ogrid[0:d.shape[0], 0:d.shape[1]]
    if segment is None:
        r = np.hypot(yy - cy, xx - cx)
    else:
        c, s = np.cos(segment[1]), np.sin(segment[1])
        u, v = (xx - cx) * c + (yy - cy) * s, (yy - cy) * c - (xx - cx) * s
        r = np.hypot(np.maximum(np.abs(u) - segment[0], 0.0), v)
    ring = use & (r >= fwhm) & (r <= 3.0 * fwhm)
    if not ring.any():
        return 0.0
    return float((d - model)[ring].sum() / np.sqrt(var_m[ring].sum()))


@lru_cache(maxsize=64)
def _plane_basis(shape) -> np.ndarray:
    """(3, h, w): the background plane's terms 1, y, x (centred on the
    stamp); read-only (stamps repeat their sizes)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    basis = np.stack([np.ones(shape), yy - yy.mean(), xx - xx.mean()])
    basis.flags.writeable = False
    return basis


def _fit_family(d, var, use, profiles, n_widths, top=4, plane=None, full=False, refit=False):
    """Best (chi2, A, snr_A, source model) of a plane + A * Gaussian over the
    grid of widths and sub-pixel centres, fitting only ``use`` pixels; chi2
    with model error: :func:`_fit_families` of one set of pixels and centre.
    ``full``: also the whole model (plane included) and its variance with
    the model error."""
    fit = _fit_families(d, var, [use], [profiles], [n_widths], top=top, plane=plane, refit=refit)[0]
    return fit if full else fit[:4]


def _fit_families(d, var, uses, profiles, n_widths, top=4, plane=None, refit=False):
    """:func:`_fit_family`'s full result for each set of pixels ``uses[k]``
    and centre ``profiles[k]`` (:func:`_centre_profiles`), the first
    ``n_widths[k]`` widths tried, fitted together: (chi2, A, snr_A, source
    model, model, model variance) each, the whole model with its plane.

    Each fit is a plane + A * Gaussian of every width and sub-pixel centre.
    The plane's block of the 4x4 normal equations is the same for every grid
    model, so each model's amplitude follows from the Schur complement (one
    3x3 inverse per set of pixels, not one 4x4 solve per model). Round
    Gaussians (``profiles`` pairs) are separable: every sum the Gaussian's
    row and column need is a product of small matrices (profile along y,
    weights, profile along x); elliptical ones (arrays of every model's
    pixels, :func:`_elliptical_profiles`) are summed pixel by pixel. The
    ``top`` models by plain chi2 are then scored with the model error, which
    needs their pixels. All sets in one pass of stacked arrays: a stamp's
    fits cost numpy's per-call overhead more than arithmetic (its four fits
    in one pass cost 1.8x one; stacking many stamps' fits gained nothing
    more: tiny matrix products). ``refit``: a best model above REFIT_SNR is
    refitted with the model error in its weights."""
    use = np.asarray(uses, bool)
    n_sets, h, w = use.shape
    plane = _plane_basis((h, w)) if plane is None else plane
    w0 = np.where(use, 1.0 / var, 0.0)  # (K, h, w)
    wd = w0 * d
    wp = plane[None] * w0[:, None]  # (K, 3, h, w)
    c = np.einsum("kaij,bij->kab", wp, plane)  # plane x plane
    c += np.eye(3) * 1e-9 * np.trace(c, axis1=1, axis2=2)[:, None, None]
    r_p = np.einsum("kaij,ij->ka", wp, d)
    c_inv = np.linalg.inv(c)
    u = np.matmul(c_inv, r_p[..., None])[..., 0]  # the plane alone
    base = (wd * d).sum(axis=(1, 2)) - (u * r_p).sum(axis=1)
    n_w = max(n_widths)
    if all(isinstance(p, tuple) for p in profiles):  # separable (a round PSF)
        yv, xv = plane[1][:, 0], plane[2][0]
        gy = np.stack([p[0][:n_w] for p in profiles])  # (K, n_w, n_off, h)
        gx = np.stack([p[1][:n_w] for p in profiles])  # (K, n_w, n_off, w)
        m0, md = w0[:, None], wd[:, None]

        def sums(left, m, right):  # sum over pixels of left(y) * m * right(x), every (width, y offset, x offset)
            return np.matmul(np.matmul(left, m), np.swapaxes(right, -1, -2)).reshape(n_sets, -1)

        gyw = np.matmul(gy, m0)  # (K, n_w, n_off, w): shared by three of the sums
        b = np.stack([np.matmul(gyw, np.swapaxes(gx, -1, -2)).reshape(n_sets, -1),  # Gaussian x plane
                      sums(gy * yv, m0, gx),
                      np.matmul(gyw, np.swapaxes(gx * xv, -1, -2)).reshape(n_sets, -1)], axis=-1)
        a = sums(gy * gy, m0, gx * gx)
        r0 = sums(gy, md, gx)
        n_off = gy.shape[2]

        def pixels(sets, idx):  # (len(sets), top, h, w)
            i, r = np.divmod(idx, n_off * n_off)
            k = sets[:, None]
            return gy[k, i, r // n_off][..., :, None] * gx[k, i, r % n_off][..., None, :]
    else:  # an elongated PSF: every model's pixels, and their squares, once per centre (sets share them)
        own: dict = {}
        for p in profiles:
            if id(p) not in own:
                gp = np.asarray(p[:n_w], np.float64).reshape(-1, h * w)  # (models, px)
                own[id(p)] = (gp, gp * gp)
        gs = [own[id(p)] for p in profiles]
        wpt = wp.reshape(n_sets, 3, -1).swapaxes(1, 2)
        b = np.stack([np.matmul(gk, wpt[k]) for k, (gk, _) in enumerate(gs)])
        a = np.stack([np.matmul(sq, w0[k].reshape(-1, 1))[:, 0] for k, (_, sq) in enumerate(gs)])
        r0 = np.stack([np.matmul(gk, wd[k].reshape(-1, 1))[:, 0] for k, (gk, _) in enumerate(gs)])

        def pixels(sets, idx):
            return np.stack([gs[k][0][idx[j]] for j, k in enumerate(sets)]).reshape(*idx.shape, h, w)
    cb = np.matmul(b, c_inv)
    schur = np.maximum(a - np.einsum("kij,kij->ki", b, cb), 1e-300)
    excess = r0 - np.matmul(b, u[..., None])[..., 0]
    amp = excess / schur
    plain = base[:, None] - amp * excess  # chi2 without model error
    per_width = plain.shape[1] // n_w
    for k, n in enumerate(n_widths):
        plain[k, n * per_width:] = np.inf  # widths not tried for this set
    top = min(top, min(n_widths) * per_width)
    first = np.argpartition(plain, top - 1, axis=1)[:, :top] if plain.shape[1] > top else \
        np.broadcast_to(np.arange(plain.shape[1]), plain.shape)
    sets = np.arange(n_sets)
    amp_f = amp[sets[:, None], first]
    src = amp_f[..., None, None] * pixels(sets, first)  # (K, top, h, w)
    coef = u[:, None, :] - amp_f[..., None] * cb[sets[:, None], first]
    model = src + np.einsum("kta,aij->ktij", coef, plane)
    var_m = var + (MODEL_ERROR * np.maximum(src, 0.0)) ** 2
    chi2 = np.where(use[:, None], (d - model) ** 2 / var_m, 0.0).sum(axis=(2, 3))
    best = np.argmin(chi2, axis=1)
    out = []
    for k, j in enumerate(best):
        m = int(first[k, j])
        a_j = float(amp[k, m])
        snr = float(a_j * np.sqrt(schur[k, m]))
        fit = (float(chi2[k, j]), a_j, snr, src[k, j], model[k, j], var_m[k, j])
        out.append(_refit_bright(d, var, use[k], plane, fit) if refit and snr > REFIT_SNR and a_j > 0 else fit)
    return out


def _refit_bright(d, var, use, plane, fit):
    """A bright source's fit (:func:`_fit_families`' full result) refitted with
    the model error in its weights, where that lowers its chi2: on a bright
    source the plain fit's plane and amplitude follow the core's last per
    cent of mismatch, and the wings pay for it in chi2 (a S/N 1600 Gaussian
    star at FWHM 1.4 px, its core called: chi2 193 over 121 pixels plain,
    and the candidates' free pixels won; rule 1 zeroed the star)."""
    chi2_j, a_j, snr, src_j, model_j, var_j = fit
    shape_j = src_j / a_j
    basis = np.concatenate([shape_j[None], plane]).reshape(4, 1, -1)  # one model
    coef_m = _weighted_solve(basis, np.where(use, 1.0 / var_j, 0.0).reshape(1, -1), d.ravel())[0]
    if coef_m[0] <= 0:
        return fit
    src_m = coef_m[0] * shape_j
    model_m = src_m + np.einsum("a,aij->ij", coef_m[1:], plane)
    var_mm = var + (MODEL_ERROR * np.maximum(src_m, 0.0)) ** 2
    chi2_m = float(np.where(use, (d - model_m) ** 2 / var_mm, 0.0).sum())
    return (chi2_m, float(coef_m[0]), snr, src_m, model_m, var_mm) if chi2_m < chi2_j else fit


def _plane_chi2(d, var, use, plane) -> float:
    """chi2 of the best plane through the ``use`` pixels (the artefact model's background)."""
    wp = plane * np.where(use, 1.0 / var, 0.0)
    c = np.einsum("aij,bij->ab", wp, plane)
    c += np.eye(3) * 1e-9 * np.trace(c)
    r = np.einsum("aij,ij->a", wp, d)
    return float((wp[0] * d * d).sum() - r @ np.linalg.solve(c, r))


@lru_cache(maxsize=256)
def _lrt_limit(dof: int) -> float:
    """chi2 increase that rejects the source model at SOURCE_ALPHA: the chi2
    distribution's quantile, as scipy.stats computes it (importing scipy.stats
    costs ~0.9 s, more than rule 1's fits on a whole frame)."""
    from scipy.special import gammaincinv

    return float(2.0 * gammaincinv(dof / 2, 1.0 - SOURCE_ALPHA))


class Judgement(NamedTuple):
    """:func:`judge_object`'s verdict on one stamp."""
    source: bool
    model: np.ndarray | None = None  # the source's model (None: no source)
    whole: bool = False  # the source's model explains the candidates too: the call was the source
    hit: np.ndarray | None = None  # a track's pixels the verdict's fit took for an artefact beside the source


def judge_object(d, rms, cand, others, sig_psf, shape=(1.0, 0.0), min_snr: float = MIN_SOURCE_SNR,
                 spikes=None, fitted=None, spill=(0.0, 0.0)) -> Judgement:
    """Judge one stamp: a :class:`Judgement`. ``whole`` when the source's
    model explains the candidate pixels too (it won over every pixel: no
    artefact is needed there; the network's call was the source itself);
    ``hit``: where a source beside a hit won with a track's end within reach
    of its peak, the track's pixels (they keep their zero weight: released,
    a track's end on a star's wing made one detection with it, 3 px off
    the star).

    ``d``: background-subtracted pixels, ``rms``: noise, ``cand``: the zero
    candidates, ``others``: pixels of other objects (left out of every fit).
    The background of every model is a plane (diffuse light, gradients).
    ``min_snr``: the amplitude significance a source model needs.
    ``spikes`` (bool like ``d``): pixels on diffraction spikes: candidates
    there have no track's extension (a simulator's spikes are sharper than
    the PSF; cut by a hit's zero weight, a spike left more detections).
    ``fitted`` (bool like ``d``): pixels of a fitted trail or column whose
    model ``d`` has lost: its errors go either way, so candidates there may
    lie below a source without refuting it.
    ``spill``: the fractions of a hit's value its side and corner neighbours
    receive on this frame (:func:`hit_spill`), taken off them before any fit.
    """
    var = np.maximum(rms.astype(np.float64), 1e-12) ** 2
    d = _without_spill(d, cand, rms, sig_psf, spill)
    use_all = ~others
    use_out = use_all & ~cand
    n_cand = int((cand & use_all).sum())
    if use_out.sum() < 8 or n_cand == 0:
        return Judgement(False)
    # Centres tried: the candidates' peak, and the brightest pixel just
    # outside them (a star whose core the candidates cover only in part).
    cy, cx = np.unravel_index(np.argmax(np.where(cand & use_all, d, -np.inf)), d.shape)  # not a neighbour's peak
    # A trailed PSF is as sharp as its minor axis across: its streak's sides are (a round test at
    # the mean width took streaks of FWHM 1.2 px across for hits, bright ones never had their wings fitted).
    trail = _trail(shape)
    sig_peak = sig_psf if trail is None else trail[0]
    smooth_peak = not steeper_than_psf(d[cy, cx] - _side_mean(d)[cy, cx], d[cy, cx], rms[cy, cx], sig_peak)
    # A bright source's fit is refitted with the model error in its weights where the candidates could
    # be a star's core: not where their peak is sharper than any source (the model error forgave a
    # 5000 ADU hit on a 6000 ADU core its excess: one narrow star, flag lost), nor where their light
    # draws a line (a track across a star, fitted as a narrow source on the track: the star zeroed).
    refit = smooth_peak and (_compact(d, cand & use_all) or _trailed_streak(d, cand & use_all, shape))
    ring = dilate(cand, 2) & use_out
    centres = {(cy, cx)}
    if ring.any():
        centres.add(np.unravel_index(np.argmax(np.where(ring, d, -np.inf)), d.shape))
    if trail is not None:  # a flat-topped streak's centre is its light's, not its brightest pixel
        centres.update({tuple(int(v) for v in light_centre(d, m)) for m in (cand & use_all, dilate(cand, 2) & use_all)})
    plane = _plane_basis(tuple(d.shape))
    chi2_art = _plane_chi2(d, var, use_out, plane)
    n_art = n_cand  # the artefact's free pixels
    # The artefact may go on past the candidates: where they draw a line, its bright pixels beyond
    # them (a cosmic-ray track's stretch the network missed) are free too when that fits better (AIC);
    # alone they fit a narrow source, the source outside the candidates.
    on_spike = spikes is not None and bool((spikes & cand).any())
    ext = np.zeros(d.shape, bool) if on_spike else _track_extension(d, cand & use_all, rms, sig_psf) & use_out
    if ext.any():
        chi2_ext = _plane_chi2(d, var, use_out & ~ext, plane)
        if chi2_ext + 2 * (n_cand + int(ext.sum())) < chi2_art + 2 * n_cand:
            use_out, chi2_art, n_art = use_out & ~ext, chi2_ext, n_cand + int(ext.sum())
    aic_art = chi2_art + 2 * (n_art + 3)
    lit = cand & use_all if fitted is None else cand & use_all & ~fitted  # where a deficit refutes a source
    # The first model that beats the artefact with a significant source decides, the centres
    # tried in the order of their sources (see rank).
    over_all = []  # (profiles, fit) of the source over every pixel, per centre
    centres = sorted(centres)
    profiles = [_centre_profiles(d.shape, py, px, sig_psf, shape) for py, px in centres]
    # Over every pixel (every width) and outside the candidates (the five narrowest), at each
    # centre: fitted together (every model is fitted on most stamps: hits).
    kinds = ((use_all, 0, len(_WIDTHS)), (use_out, n_art, 5))
    fits = _fit_families(d, var, [u for u, _, _ in kinds] * len(centres), [p for p in profiles for _ in kinds],
                         [n for _, _, n in kinds] * len(centres), plane=plane, refit=refit)
    per_centre = [list(zip(fits[i * len(kinds):(i + 1) * len(kinds)], kinds, strict=True)) for i in range(len(centres))]

    def beats(fit, extra) -> bool:
        """A significant source that beats the artefact (AIC); or, over every pixel, one the
        likelihood ratio against free candidate pixels does not reject at SOURCE_ALPHA (on a faint
        source a large group of candidates favours the artefact by noise alone about one time in
        six under the AIC)."""
        if fit[1] <= 0 or fit[2] < min_snr:
            return False
        return fit[0] + 2 * (7 + extra) < aic_art or (
            not extra and n_art > 4 and fit[0] - chi2_art < _lrt_limit(n_art - 4))

    def rank(i):
        """A centre whose source over every pixel passes comes first, then one whose source
        outside the candidates does, each by its AIC. In (row, column) order, a star centred above
        its pixel had the brightest pixel beside its called core tried first: the source outside
        the call passed there, the call was never found to be the star, and its flag stayed."""
        return min(((extra > 0, f[0] + 2 * (7 + extra)) for f, (_, extra, _) in per_centre[i] if beats(f, extra)),
                   default=(True, np.inf))

    def or_pair(judgement: Judgement) -> Judgement:
        """Two sources where they explain every candidate (:func:`_source_pair`), rather than
        a source with an artefact beside it (the fainter of two close stars called as one, zeroed
        as that artefact) or nothing: they keep the call's flag."""
        ok, model = _source_pair(d, var, rms, cand & use_all, use_all, plane, (chi2_art, n_art), sig_psf, shape,
                                 min_snr)
        return Judgement(True, model) if ok else judgement

    order = sorted(range(len(centres)), key=rank)
    centres = [centres[i] for i in order]
    for i in order:
        for fit, (_, extra, _) in per_centre[i]:
            if not extra:
                over_all.append((profiles[i], fit))
            if extra and fit[1] > 0 and fit[2] >= min_snr and _light_taken(d, lit, fit[4], fit[5], n_cand):
                continue
            if beats(fit, extra):
                return Judgement(True, fit[3], True) if not extra else or_pair(Judgement(True, fit[3]))
    # A star beside the hit that made the group's peak: its own peak in the group.
    ok, model, hit = _source_beside_hit(d, var, rms, cand & use_all, use_all, plane, aic_art, sig_psf, shape,
                                        min_snr)
    if ok:
        return or_pair(Judgement(True, model, False, hit))
    # Not where the candidates' peak is sharper than any source (a hit, not a
    # star): no wings, no track; a source under the hit, last.
    if not smooth_peak:
        ok, model = _source_under_hit(d, var, rms, cand & use_all, use_all, plane, aic_art, sig_psf, shape, (cy, cx),
                                      min_snr)
        if not ok:
            ok, model = _source_under_sharp_track(d, var, rms, cand & use_all, use_all, plane, aic_art, sig_psf, shape,
                                                  min_snr)
        return Judgement(ok, model)
    # *Source + wings*: a bright undersampled star's Moffat wings are far
    # above any Gaussian of its core's width (S/N 200 at FWHM 1.2 px: chi2
    # twice the artefact's). Wings only add light around the core, so a hit
    # (no light around it) gains nothing; two more parameters than the source.
    n_par = 7 + len(_WING_WIDTHS)
    segment = None if trail is None else (trail[1], shape[1])
    for (py, px), (_, fit) in zip(centres, over_all, strict=True):
        if fit[1] <= 0 or fit[2] < min_snr:
            continue
        if _light_around(d, fit[5], fit[4], use_all, int(py), int(px), 2.3548 * sig_peak, segment) <= 0.0:
            continue  # no light around the core beyond the Gaussian's: no wings to fit
        stack = _wing_profiles(tuple(d.shape), int(py), int(px), float(sig_psf),
                               float(shape[0]) if shape[0] < ROUND_Q else 1.0, float(shape[1]), trail)
        chi2, amp, snr, model = _fit_wings(d, var, use_all, stack, plane)
        if amp > 0 and snr >= min_snr and (chi2 + 2 * n_par < aic_art or (
                n_art > n_par - 3 and chi2 - chi2_art < _lrt_limit(n_art - (n_par - 3)))):
            return Judgement(True, model, True)
    # A track across the core, last (the costliest model).
    for profiles, fit in over_all:
        if fit[1] > 0 and fit[2] >= min_snr:
            ok, model = _source_under_track(d, var, cand & use_all, use_all, profiles, plane, aic_art, sig_psf, fit,
                                            min_snr)
            if ok:
                return or_pair(Judgement(True, model))
    return or_pair(Judgement(False))


#: The widths (x the PSF's sigma) a source of :func:`_source_pair` may take: stars, compact galaxies.
_PAIR_WIDTHS = 3


def _smooth_maxima(img, ys, xs, rms, sig_psf: float) -> np.ndarray:
    """Whether each pixel (``ys``, ``xs``) of ``img`` is a local maximum (3x3, the edge repeated)
    no steeper than a source (:func:`steeper_than_psf`); ``rms``: the noise at those pixels."""
    h, w = img.shape
    v = np.asarray(img[ys, xs], np.float64)
    sides = np.zeros(len(ys))
    for dy, dx in ((-1, 0), (0, -1), (0, 1), (1, 0)):
        sides += 0.25 * img[np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)]
    return _local_maxima(img, ys, xs) & ~steeper_than_psf(v - sides, v, rms, sig_psf)


def _source_pair(d, var, rms, cand, use_all, plane, art: tuple, sig_psf: float, shape,
                 min_snr: float) -> tuple[bool, np.ndarray | None]:
    """*Two sources*: two close stars called as one group (second generator, FWHM 1.3 px:
    S/N 36 and 19 stars 2.9 px apart, the network's cosmic-ray call over both, zeroed and
    lost: no one source fits the pair; or the fainter was zeroed as an artefact beside the
    brighter). The first is centred on the group's (and its rim's) brightest local maximum of
    APART_PEAK sigma or more, no steeper than a source; the second on the brightest such peak
    of the light the first's fit leaves, two pixels or more from it. Each is fitted on the
    light the other leaves (twice); neither may be a line's piece there (:func:`_line_piece`).
    Both amplitudes are then fitted together with the plane (and with wings). Both must be
    significant, no candidate pixel may lie OUTLIER_SIGMA above the pair (a star and a track's
    piece fitted as a pair freed the track), and the pair must beat the artefact ``art`` =
    (chi2, free pixels) as a single source does: by the AIC, or, over a large group, not be
    rejected by the likelihood ratio at SOURCE_ALPHA. (ok, the pair's model)."""
    chi2_art, n_art = art
    aic_art = chi2_art + 2 * (n_art + 3)
    near = dilate(cand, 1) & use_all
    ys, xs = np.nonzero(near)
    v = d[ys, xs]
    r = rms[ys, xs]
    peak = (v >= APART_PEAK * r) & _smooth_maxima(d, ys, xs, r, sig_psf)
    if not peak.any():
        return False, None
    k = int(np.argmax(np.where(peak, v, -np.inf)))
    ay, ax = int(ys[k]), int(xs[k])
    pa = _centre_profiles(d.shape, ay, ax, sig_psf, shape)
    src_a = _pair_fit(d, var, use_all, pa, plane)
    if src_a is None:
        return False, None
    # The second: a peak of APART_PEAK sigma or more, no steeper than a source, in the light the
    # first leaves (most stamps have none: a lone star, a hit beside it).
    rest = d - src_a
    left = rest[ys, xs]
    second = ((np.maximum(np.abs(ys - ay), np.abs(xs - ax)) >= 2) & (left >= APART_PEAK * r)
              & _smooth_maxima(rest, ys, xs, r, sig_psf))
    if not second.any():
        return False, None
    k = int(np.argmax(np.where(second, left, -np.inf)))
    pb = _centre_profiles(d.shape, int(ys[k]), int(xs[k]), sig_psf, shape)
    src_b = None
    for _ in range(2):
        src_b = _pair_fit(d - src_a, var, use_all, pb, plane)
        if src_b is None:
            return False, None
        src_a = _pair_fit(d - src_b, var, use_all, pa, plane)
        if src_a is None:
            return False, None
    # Neither a line's piece in the light the other leaves: a faint cosmic-ray track (5-6 sigma
    # per pixel, FWHM 2 px) was fitted as two sources along it.
    yy, xx = np.indices(d.shape)
    for (py, px), other in (((ay, ax), src_b), ((int(ys[k]), int(xs[k])), src_a)):
        if _line_piece(d - other, np.hypot(yy - py, xx - px) <= 2.5, rms):
            return False, None
    # Both amplitudes fitted together with the plane; then with wings (two round Gaussians 1.7
    # and 3 times each core's width at its centre, amplitudes free, a negative one dropped: a
    # bright undersampled star's Moffat wings are far above a Gaussian's, see judge_object).
    w0 = np.where(use_all, 1.0 / var, 0.0).reshape(1, -1)
    cores = [src_a, src_b]
    for wings in (False, True):
        comps = cores + [g for m in cores for g in _round_wings(m)] if wings else cores
        while True:
            basis = np.concatenate([np.stack(comps), plane]).reshape(len(comps) + 3, 1, -1)
            coef = _weighted_solve(basis, w0, d.ravel())[0]
            neg = set(np.flatnonzero(coef[2:len(comps)] < 0).tolist())
            if not neg:
                break
            comps = cores + [c for i, c in enumerate(comps[2:]) if i not in neg]
        n_par = 11 + len(comps) - 2
        if coef[0] <= 0 or coef[1] <= 0 or (wings and n_par == 11):
            continue
        normal = np.einsum("ap,p,bp->ab", basis[:, 0], w0[0], basis[:, 0])
        snr = coef[:2] / np.sqrt(np.diag(np.linalg.inv(normal))[:2])
        if snr.min() < min_snr:
            continue
        src = np.einsum("a,aij->ij", coef[:len(comps)], np.stack(comps))
        model = src + np.einsum("a,aij->ij", coef[len(comps):], plane)
        var_m = var + (MODEL_ERROR * np.maximum(src, 0.0)) ** 2
        chi2 = float(np.where(use_all, (d - model) ** 2 / var_m, 0.0).sum())
        if ((d - model)[cand] > OUTLIER_SIGMA * np.sqrt(var_m[cand])).any():
            continue  # the pair is the whole call or none: a track's piece is no star
        if chi2 + 2 * n_par < aic_art or (n_art > n_par - 3 and chi2 - chi2_art < _lrt_limit(n_art - (n_par - 3))):
            return True, src
    return False, None


def _line_piece(d, pixels, rms) -> bool:
    """Whether the pixels 2 sigma bright joined to the brightest of ``pixels`` are three or more
    and no rounder than a line (:data:`MIN_LINE_ELONGATION`; fewer draw no line)."""
    bright = pixels & (d > 2.0 * rms)
    if bright.sum() < 3:
        return False
    lab, _ = ndimage.label(bright, structure=np.ones((3, 3), bool))
    core = lab == lab.flat[np.argmax(np.where(bright, d / rms, -np.inf))]
    a, b, *_ = _moments(d, core)
    return core.sum() >= 3 and a >= MIN_LINE_ELONGATION * max(b, 1e-6)


def _pair_fit(light, var, use, profiles, plane) -> np.ndarray | None:
    """:func:`_source_pair`'s one source fitted to ``light``: its model, or None (no positive source)."""
    fit = _fit_family(light, var, use, profiles, _PAIR_WIDTHS, plane=plane)
    return fit[3] if fit[1] > 0 else None


def _round_wings(model) -> list:
    """Two round pixel-integrated Gaussians, :data:`_WING_WIDTHS` times the width of the
    Gaussian ``model`` (from its moments, less a pixel's own 1/12 px^2), at its centroid."""
    m = np.maximum(model, 0.0)
    total = m.sum()
    yy, xx = np.indices(m.shape)
    cy, cx = (m * yy).sum() / total, (m * xx).sum() / total
    sig = np.sqrt(max((m * ((yy - cy) ** 2 + (xx - cx) ** 2)).sum() / total / 2.0 - 1.0 / 12.0, 0.05))
    iy, ix = np.arange(m.shape[0]) - cy, np.arange(m.shape[1]) - cx
    return [np.outer(_pixel_gauss(iy, f * sig), _pixel_gauss(ix, f * sig)) for f in _WING_WIDTHS]


def _track_extension(d, cand, rms, sig_psf: float, half_width: float = 1.0, nsigma: float = 4.0) -> np.ndarray:
    """Pixels 2 sigma bright within ``half_width`` of the axis of the
    candidates' event, outside the candidates, where that event is a line
    sharper across than any source (a cosmic-ray track): the candidates and
    the 3-sigma pixels joined to them, whose bright pixels are elongated (as
    :func:`_source_under_track` tells a line) and, summed over them, stand
    ``nsigma`` above their neighbours across the line beyond what the
    frame's PSF allows (:func:`_excess_across`; a diffraction spike or a
    trail is as wide as the PSF; summed over a line, the PSF's own width
    tells a track even in good seeing, where the narrowest Gaussian rule 1
    fits is nearly as sharp as one). A track goes on past what the network
    called (on undersampled frames most of the tracks left as detections
    were called in pieces). bool like ``d`` (none without such a line)."""
    none = np.zeros(d.shape, bool)
    lab, n = ndimage.label(cand | (d > 3.0 * rms), structure=np.ones((3, 3), bool))
    joined = np.zeros(n + 1, bool)
    joined[lab[cand]] = True  # the components holding candidates (never label 0)
    bright = joined[lab] & (d > 3.0 * rms)
    if bright.sum() < 4:  # most hits: no line to measure
        return none
    a, b, theta, my, mx = _moments(np.ones(d.shape), bright)
    if a < 2.0 * max(b, 0.5):
        return none
    # the pair of neighbours most nearly across the line
    k = int(np.argmax([abs(np.sin(np.arctan2(dy, dx) - theta)) for (dy, dx), _ in _ACROSS]))
    excess = _excess_across(d, sig_psf, 1.0, pairs=_ACROSS[k:k + 1], at=np.nonzero(bright))[0]
    if excess.sum() <= nsigma * np.sqrt(1.5 * (rms[bright] ** 2).sum()):
        return none
    yy, xx = np.indices(d.shape)
    across = np.abs(-(xx - mx) * np.sin(theta) + (yy - my) * np.cos(theta))
    return (across <= half_width) & ~cand & (d > 2.0 * rms)


#: A candidate pixel this many sigma below the sky reads no light at all (dead).
DEAD_SIGMA = 3.0


def _light_taken(d, cand, model, var_m, n_cand: int) -> bool:
    """Whether the candidate pixels are too far *below* a source fitted
    around them (``model``: plane included, ``var_m``: its variance with the
    model error) for an artefact on that source: a cosmic ray or hot pixel
    only adds light. Rejected at SOURCE_ALPHA as the chi2 of the deficits
    alone over ``n_cand`` pixels (a conservative test: only about half of them
    can fall below by noise). A cosmic-ray track's pixel the network missed
    fits a narrow source on its own, whose core then lies on the candidates
    beside the track, at the sky (measured: most cosmic-ray tracks left as
    detections on undersampled frames were released so). Dead pixels
    (:data:`DEAD_SIGMA` below the sky) take light away: not counted."""
    lit = cand & (d > -DEAD_SIGMA * np.sqrt(var_m))  # a dead pixel under a source reads far below it, rightly
    r = np.minimum(d - model, 0.0)[lit]
    return bool((r * r / var_m[lit]).sum() > _lrt_limit(max(n_cand, 1)))


#: A candidate pixel this many sigma above the source model is the artefact's.
OUTLIER_SIGMA = 4.0


def _free_outliers(d, var, cand, use_all, profiles, plane, free, fit=None, model_error=False):
    """The source fitted over the ``use_all`` pixels but the ``free`` ones,
    the candidate pixels far above it (``OUTLIER_SIGMA``; with the model
    error too where ``model_error``) set free in turn, until none is added:
    ((chi2, amp, snr, source model), free, pixels used), or None when the
    amplitude is not positive or four rounds do not settle it. ``fit``:
    :func:`_fit_family`'s full result of the first round, when made."""
    for it in range(4):
        use = use_all & ~free
        chi2, amp, snr, src, full, var_m = fit if not it and fit is not None else \
            _fit_family(d, var, use, profiles, len(_WIDTHS), plane=plane, full=True)
        if amp <= 0:
            return None
        grown = free | (cand & ((d - full) > OUTLIER_SIGMA * np.sqrt(var_m if model_error else var)))
        if (grown == free).all():
            return (chi2, amp, snr, src), free, use
        free = grown
    return None  # not settled: no verdict for the source


def _source_under_track(d, var, cand, use_all, profiles, plane, aic_art, sig_psf, fit,
                        min_snr: float = MIN_SOURCE_SNR, beside: bool = False):
    """*Source + track*: a cosmic-ray track across a source's core
    covers the core and the track alike, so neither the source over every
    pixel (the track spoils it) nor the source outside the candidates (none
    of it is left) fits. The source is fitted over every pixel with the
    candidate pixels far above it (the track) set free, iteratively; it wins
    when it is significant on the pixels kept, explains them better than a
    plane with the same pixels free and beats the artefact model (AIC), and
    stands out of the line the free pixels draw (:func:`_bump_on_line`).
    ``fit``: :func:`_fit_family`'s full result over every pixel, the first step
    (None: fitted here). ``beside``: see :func:`_bump_on_line`."""
    a, b, *_ = _moments(np.ones(d.shape), cand)
    if a < 2.0 * max(b, 0.5):
        return False, None  # no track (see _bump_on_line): spares the fits on most hits
    got = _free_outliers(d, var, cand, use_all, profiles, plane, np.zeros(d.shape, bool), fit=fit)
    if got is None:
        return False, None
    (chi2, _, snr, src), free, use = got
    n_free = int(free.sum())
    if not n_free or n_free >= int(cand.sum()) or snr < min_snr:
        return False, None
    if chi2 + 2 * (7 + n_free) >= aic_art or chi2 + 2 * 4 >= _plane_chi2(d, var, use, plane):
        return False, None
    return (True, src) if _bump_on_line(d, var, free, src, sig_psf, beside=beside) else (False, None)


#: The light off a sharp track (3x3 means) must peak at this many sigma of its noise for a
#: source under it to be fitted.
BESIDE_TRACK_SIGMA = 3.0


def _source_under_sharp_track(d, var, rms, cand, use_all, plane, aic_art, sig_psf, shape,
                              min_snr: float = MIN_SOURCE_SNR):
    """*Source under a sharp track*: a cosmic-ray track brighter than the
    faint star it crosses makes the candidates' peak, sharper than any
    source, and neither a hit's model (too many sharp pixels) nor the track
    model fitted at that peak (a pixel anywhere along the track) finds the
    star. Its centre is the brightest spot next to the candidates with the
    track's pixels (sharper across than any PSF) left out (3x3 means): it
    must be a peak of that light (on a slope it is the wing of a source
    beside the track, whose own judgement frees its core, not the track)
    and BESIDE_TRACK_SIGMA bright. There the source is fitted as in
    :func:`_source_under_track` and must light both sides of the track
    (``beside``; the track's own pixels, deposited unevenly, hide a faint
    star's bump in their spread). Constructed frames (stars of peak 6-10
    sigma at FWHM 1.8-3.7 px under 25-sigma tracks; outside that, 12 and
    50 sigma, 40 px, bilinear deposits, FWHM 2.2-4.5 px): 21 -> 32 of 72 and
    78 -> 91 of 216 stars detected, no bare track released."""
    track = np.zeros(d.shape, bool)
    at = np.nonzero(cand)
    track[at] = sharper_across_than_psf(d, rms, sig_psf, at=at)
    if track.sum() < 3:
        return False, None  # a hit or two: _source_under_hit's
    valid = use_all & ~track
    num = ndimage.uniform_filter(np.where(valid, d, 0.0), 3, mode="constant")
    den = ndimage.uniform_filter(valid.astype(np.float64), 3, mode="constant")
    smooth = np.where((den > 0.3) & use_all, num / np.maximum(den, 1e-9), -np.inf)
    near = dilate(cand, 1) & np.isfinite(smooth)
    if not near.any():
        return False, None
    py, px = np.unravel_index(np.argmax(np.where(near, smooth, -np.inf)), d.shape)
    if smooth[py, px] < smooth[max(py - 2, 0):py + 3, max(px - 2, 0):px + 3].max():
        return False, None  # on a slope: a source beside the track (its wings crossed), not under it
    if smooth[py, px] < BESIDE_TRACK_SIGMA * rms[py, px] / np.sqrt(9.0 * den[py, px]):
        return False, None  # no light off the track there (most bare tracks: spares the fits)
    profiles = _centre_profiles(d.shape, int(py), int(px), sig_psf, shape)
    return _source_under_track(d, var, cand, use_all, profiles, plane, aic_art, sig_psf, None, min_snr, beside=True)


#: At most this many candidate pixels sharper than any source make a hit on a source's core.
HIT_PIXELS = 2


def hit_spill(image_sub: np.ndarray, candidates: np.ndarray, rms: np.ndarray, sig_psf: float,
              min_peak: float = 30.0, min_hits: int = 10) -> tuple[float, float]:
    """The fractions of a hit's value that its side and corner neighbours
    receive on this frame (charge diffusion, inter-pixel capacitance): the
    medians, over the candidates sharper than any source and ``min_peak``
    sigma or more with nothing 3 sigma bright two pixels away (single
    events), of the second faintest side and corner neighbour over the
    hit (not the brightest two: a track's own pixels run along two sides;
    the median: few hits fall on a star). (0, 0) with fewer than ``min_hits``."""
    d = np.asarray(image_sub, np.float64)
    ys, xs = np.nonzero(candidates[2:-2, 2:-2])
    ys, xs = ys + 2, xs + 2
    v = d[ys, xs]
    keep = v >= min_peak * rms[ys, xs]
    ys, xs, v = ys[keep], xs[keep], v[keep]
    if not len(ys):
        return 0.0, 0.0
    side = np.stack([d[ys - 1, xs], d[ys + 1, xs], d[ys, xs - 1], d[ys, xs + 1]])
    corner = np.stack([d[ys - 1, xs - 1], d[ys - 1, xs + 1], d[ys + 1, xs - 1], d[ys + 1, xs + 1]])
    top = (v >= side.max(axis=0)) & (v >= corner.max(axis=0))
    top &= steeper_than_psf(v - side.mean(axis=0), v, rms[ys, xs], sig_psf)
    # Single events only: nothing bright two pixels away (a track goes on, and deposits
    # bilinearly into three or four of the sides: 10-13% "spill" on a second generator's frames).
    ring = np.stack([d[ys + dy, xs + dx] / rms[ys + dy, xs + dx] for dy in range(-2, 3) for dx in range(-2, 3)
                     if max(abs(dy), abs(dx)) == 2])
    top &= ring.max(axis=0) < 3.0
    if top.sum() < min_hits:
        return 0.0, 0.0
    f_side = float(np.median(np.sort(side, axis=0)[1][top] / v[top]))
    f_corner = float(np.median(np.sort(corner, axis=0)[1][top] / v[top]))
    return max(f_side, 0.0), max(f_corner, 0.0)


def _own_on_line(d, rms, cand, fitted, core) -> np.ndarray:
    """An object's candidates where they lie on a fitted line (``fitted``, its model subtracted
    from ``d``): the pieces standing :data:`LINE_LOUD` sigma above the line, or off it, that
    reach ``core`` (the object's core and footprint), and their neighbours. The line's other
    candidates are the line's, zero whatever the object is, and no model's data: its model's
    errors are no sky (a 860-sigma trail's residual, a step of -2 sigma, made a 1-sigma broad
    "source" of a faint track at the band's edge). As the artefact's free pixels its quiet
    pixels cost it 2 each in the AIC: a cosmic-ray hit at a broad trail's edge (second
    generator: 1 to 2 per trail) won as a narrow source over every pixel and was detected."""
    loud = cand & (~fitted | (d > LINE_LOUD * rms))
    lab, _ = ndimage.label(loud, structure=np.ones((3, 3), bool))
    mine = np.isin(lab, np.unique(lab[loud & core])) & (lab > 0)
    return dilate(mine, 1, square=True) & cand


def _without_spill(d, cand, rms, sig_psf: float, spill) -> np.ndarray:
    """``d`` less the light the candidates sharper than any source (hits) spill
    into their neighbours on this frame (``spill``: :func:`hit_spill`): a
    hit's spill is no source's light around it."""
    if spill[0] <= 0 and spill[1] <= 0:
        return d
    hits = cand & steeper_than_psf(d - _side_mean(d), d, rms, sig_psf)
    if not hits.any():
        return d
    e, c = spill
    return d - ndimage.convolve(np.where(hits, d, 0.0), np.array([[c, e, c], [e, 0.0, e], [c, e, c]]),
                                mode="constant")


def _source_under_hit(d, var, rms, cand, use_all, plane, aic_art, sig_psf, shape, peak,
                      min_snr: float = MIN_SOURCE_SNR):
    """*Source under a hit*: a hot pixel or single-pixel cosmic ray on the
    core of a faint undersampled star. L.A.Cosmic's neighbour growth takes
    the star's whole core with the hit (its pixels are sharp beside the
    sky, not beside the hit), so no source is left outside the candidates,
    and the hit spoils the source over every pixel (measured: a star of S/N
    23 at FWHM 1.7 px with a hot pixel on its core zeroed with its 3x3 core in
    9 of 24 cases). The hit's pixels -- the candidates' peak ``peak`` sharper
    than any source, and at most HIT_PIXELS such -- are free; the source is
    fitted over every other pixel (candidates included) at the peak; no
    further candidate may lie far above it (a track or a hit's bright
    spill, not a star's core), the pixels beside the hit must hold a round
    core of MIN_SOURCE_SNR sigma, and the source must beat the artefact model
    (AIC) at ``min_snr`` sigma or more."""
    sharp = cand & steeper_than_psf(d - _side_mean(d), d, rms, sig_psf)
    n_hit = int(sharp.sum())
    if not sharp[peak] or n_hit > HIT_PIXELS:
        return False, None
    near = use_all & ~sharp & (np.hypot(*(np.indices(d.shape) - np.array(peak)[:, None, None])) <= 2.5)
    if not _round_core(d, near, rms, peak=MIN_SOURCE_SNR):
        return False, None
    profiles = _centre_profiles(d.shape, int(peak[0]), int(peak[1]), sig_psf, shape)
    got = _free_outliers(d, var, cand, use_all, profiles, plane, sharp, model_error=True)
    if got is None:
        return False, None
    (chi2, _, snr, src), free, _ = got
    if (free & ~sharp).any() or snr < min_snr or chi2 + 2 * (7 + n_hit) >= aic_art:
        return False, None
    return True, src


#: Candidates this far (x FWHM, at least 2 px) from a peak of their group
#: may be a hit beside a source there (:func:`_source_beside_hit`).
BESIDE_MIN_FWHM = 1.0
#: ... when the peak and the hit are at least this many sigma above the background,
BESIDE_MIN_PEAK = 10.0
#: ... and no pixels this fraction of the peak's brightness join them.
BESIDE_GAP = 0.3


def _source_beside_hit(d, var, rms, cand, use_all, plane, aic_art, sig_psf, shape,
                       min_snr: float = MIN_SOURCE_SNR):
    """*Source beside a hit*: a star a few pixels from a cosmic ray whose
    candidates make one group with it (the network's call and halo cover
    both): the group's brightest pixel may be the hit's, and every model
    above has the hit's pixels or the star's core in its way. Tried at the
    two brightest local maxima of the candidates that are no sharper than
    the PSF and :data:`BESIDE_MIN_PEAK` sigma bright: the bright candidates
    at least :data:`BESIDE_MIN_FWHM` FWHM (2 px) from it (the hit; there
    must be some) are free, then, iteratively, those far above the source
    (with its model error: a bright star's own pixels are not outliers for a
    Gaussian's shape). It wins only where none of the free pixels is within
    that distance of its centre (a hit's own pixel fits a narrow source
    once its neighbours are free), and where the source, or the source with
    wings (:func:`_fit_wings`), with the hit free beats the artefact model
    (AIC) at 5 sigma or more. Within that distance only the end of a track
    running off on one side may be free (:func:`_track_ends_beside`).
    Returns (ok, model, that track's pixels or None)."""
    bright = cand & use_all & (d >= BESIDE_MIN_PEAK * np.sqrt(var))
    if bright.sum() < 2:
        return False, None, None
    top = bright & (d >= ndimage.maximum_filter(d, size=3, mode="nearest"))
    top &= ~steeper_than_psf(d - _side_mean(d), d, rms, sig_psf)
    reach = max(2.0, BESIDE_MIN_FWHM * 2.3548 * sig_psf)
    yy, xx = np.indices(d.shape)
    q = float(shape[0]) if shape[0] < ROUND_Q else 1.0  # the wings' shape
    peaks = np.argwhere(top)
    for k in np.argsort(-d[top])[:2]:
        py, px = peaks[k]
        away = cand & (np.hypot(yy - py, xx - px) >= reach)
        free = away & (d > OUTLIER_SIGMA * np.sqrt(var))
        # The hit is apart from the peak: no bridge of pixels a third as bright
        # joins them (along a track the light runs on: the track model's), unless
        # the track ends beside the peak (below).
        lab, _ = ndimage.label(cand & (d >= BESIDE_GAP * d[py, px]), structure=np.ones((3, 3), bool))
        bridged = not (free & bright & (lab != lab[py, px])).any()
        if not (free & bright).any():
            continue
        profiles = _centre_profiles(d.shape, py, px, sig_psf, shape)
        got = _free_outliers(d, var, cand, use_all, profiles, plane, free, model_error=True)
        if got is None:
            continue
        (chi2, _, snr, src), free, use = got
        n_free = int(free.sum())
        track = None
        if (free & ~away).any():
            track = _track_ends_beside(d, rms, free, away, py, px, reach, src, var, use)
            if track is None:
                continue  # pixels of its own core free: a hit's
        elif bridged:
            continue
        if n_free >= int(cand.sum()):
            continue
        if snr >= min_snr and chi2 + 2 * (7 + n_free) < aic_art \
                and chi2 + 2 * 4 < _plane_chi2(d, var, use, plane):
            return True, src, track
        stack = _wing_profiles(tuple(d.shape), int(py), int(px), float(sig_psf), q, float(shape[1]), _trail(shape))
        chi2, amp, snr, model = _fit_wings(d, var, use, stack, plane)
        if amp > 0 and snr >= min_snr and chi2 + 2 * (7 + len(_WING_WIDTHS) + n_free) < aic_art:
            return True, model, track
    return False, None, None


def _track_ends_beside(d, rms, free, away, py: int, px: int, reach: float, src, var, use) -> np.ndarray | None:
    """The track's pixels (its free pixels joined to those within reach), where
    the free pixels within ``reach`` of a source's peak (``~away``) are the end
    of a track that runs away from it on one side (a cosmic ray
    ending on a star's wing: a second generator's S/N 64 star at FWHM 1.35 px
    was zeroed so), not a hit's own neighbours: none is the peak or beside it,
    each joins free pixels out of reach, all of their tracks' pixels lie on one
    side of the peak (a track through the peak frees pixels on both), the
    pixels within 2.5 px left to the source hold a round core of
    :data:`BESIDE_MIN_PEAK` sigma (a track's end pixel has only its spill),
    and none of the pixels its fit used (``use``) within twice that reach,
    nor any on the side away from the track, lies far above its model
    ``src`` (a track's pixel next to a stretch the network did not call or
    called in another group: never free, the track goes on there). None
    otherwise."""
    yy, xx = np.indices(d.shape)
    r = np.hypot(yy - py, xx - px)
    near = free & ~away
    if (near & (r < 1.2)).any():
        return None
    lab, _ = ndimage.label(free, structure=np.ones((3, 3), bool))
    ids = np.unique(lab[near])
    if any(not (away & free & (lab == i)).any() for i in ids):
        return None
    track = np.isin(lab, ids)
    ty, tx = np.nonzero(track)
    oy, ox = ty - py, tx - px
    my, mx = oy.mean(), ox.mean()
    if ((oy * my + ox * mx) <= 0).any():
        return None
    if not _round_core(d, (r <= 2.5) & ~free, rms, peak=BESIDE_MIN_PEAK):
        return None
    # ... nor any other pixel on the far side (another group's candidates: the track goes on).
    close = (r <= 2.0 * reach) & ~free & (use | ((yy - py) * my + (xx - px) * mx < 0))
    if (d - src > OUTLIER_SIGMA * np.sqrt(var + (MODEL_ERROR * np.maximum(src, 0.0)) ** 2))[close].any():
        return None
    return track


#: With the light beside a track, each side must show the source at this many sigma.
SIDE_SIGMA = 2.0


def _bump_on_line(d, var, free, src, sig_psf, nsigma=5.0, beside: bool = False) -> bool:
    """Whether the source stands out of the line the free pixels draw (a
    track): the light summed across the line, per pixel along it, at the
    source against elsewhere on the line, beyond the line's own
    pixel-to-pixel variation (a cosmic ray deposits unevenly) and the
    noise. A track's brightest stretch alone fits a narrow source as well as
    a star on it does; only a star adds light the track has nowhere else.
    Without a line (a compact hit) no: its core fits a narrow source once its
    edges are free (measured: every such release on simulated frames was a
    cosmic ray). ``beside``: the light beside the track only, from 1 px off
    its axis to a PSF's FWHM past the band, the free pixels left out (a sharp
    track's own pixels, deposited unevenly, hide a faint star's bump in
    their spread), on each side of it."""
    a, b, theta, *_ = _moments(d, free)
    if free.sum() < 6 or a < 2.0 * max(b, 0.5):
        return False  # no line: a hit's own core fits a narrow source once its edges are free
    ys, xs = np.nonzero(free)
    wt = np.clip(d[ys, xs], 0.0, None) + 1e-12
    my, mx = (wt * ys).sum() / wt.sum(), (wt * xs).sum() / wt.sum()
    cy, cx = np.unravel_index(np.argmax(src), src.shape)
    yy, xx = np.mgrid[0:d.shape[0], 0:d.shape[1]]
    ux, uy = np.cos(theta), np.sin(theta)
    along = np.rint((xx - cx) * ux + (yy - cy) * uy).astype(int)
    signed = -(xx - mx) * uy + (yy - my) * ux
    perp = np.abs(signed)
    fwhm = 2.3548 * sig_psf
    track = free & (perp <= 1.5)

    def stands_out(band, nsig):
        if not band.any():
            return False
        lo = min(along[band].min(), along[track].min()) if track.any() else along[band].min()
        sums = np.bincount((along - lo)[band], weights=d[band], minlength=int(along[band | track].max() - lo + 1))
        noise = np.sqrt(np.bincount((along - lo)[band], weights=var[band], minlength=sums.size))
        on_track = np.bincount((along - lo)[track], minlength=sums.size) > 0
        t = np.arange(sums.size) + lo
        bump = np.abs(t) <= max(1.0, fwhm)
        ref = on_track & (np.abs(t) > fwhm + 1.0)
        if ref.sum() < 3:
            return False  # too little of the line to tell: the artefact's
        level = np.median(sums[ref])
        spread = 1.4826 * np.median(np.abs(sums[ref] - level))
        excess = (sums[bump] - level).sum()
        return bool(excess > nsig * np.sqrt(bump.sum()) * max(spread, float(np.median(noise[ref]))))

    if not beside:
        return stands_out(perp <= 1.5, nsigma)
    # A source under the track lights both sides of it; a source beside it (the
    # track across its wing) one side only: each side must show it at SIDE_SIGMA.
    side = (perp > 1.0) & (perp <= 1.5 + fwhm) & ~free
    return stands_out(side, nsigma) and all(stands_out(side & (signed * sign > 0), SIDE_SIGMA) for sign in (1.0, -1.0))


#: An object is a piece of a fitted line (not a source on it) when it is at
#: least this elongated (a/b) and within MAX_LINE_ANGLE of the line.
MIN_LINE_ELONGATION = 3.0
MAX_LINE_ANGLE = np.radians(15.0)


def _compact(d: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the light of ``d`` in ``mask`` draws no line (major axis under twice the minor)."""
    a, b = _moments(d, mask)[:2]
    return a < 2.0 * max(b, 0.5)


def _trailed_streak(d: np.ndarray, mask: np.ndarray, shape) -> bool:
    """Whether the light of ``d`` in ``mask`` draws the line of a trailed PSF (``shape``): along
    its major axis (within :data:`MAX_LINE_ANGLE`) and no longer (rms length under 1.5x its)."""
    if _trail(shape) is None:
        return False
    core, half = _trail(shape)
    a, _, theta = _moments(d, mask)[:3]
    off = axis_angle(theta, shape[1])
    return 0 < a < 1.5 * np.sqrt(core**2 + half**2 / 3) and off < MAX_LINE_ANGLE


def _moments(d: np.ndarray, mask: np.ndarray) -> tuple[float, float, float, float, float]:
    """(a, b, theta, y, x): rms lengths of the major and minor axes, the major
    axis' angle from +x and the centre, of the positive pixels of ``d`` in
    ``mask`` (all 0 where there are fewer than 3 or no light)."""
    ys, xs = np.nonzero(mask)
    v = np.clip(d[ys, xs], 0, None)
    tot = v.sum()
    if tot <= 0 or len(v) < 3:
        return 0.0, 0.0, 0.0, 0.0, 0.0
    my, mx = (v * ys).sum() / tot, (v * xs).sum() / tot
    vyy = (v * (ys - my) ** 2).sum() / tot
    vxx = (v * (xs - mx) ** 2).sum() / tot
    vxy = (v * (xs - mx) * (ys - my)).sum() / tot
    half, diff = 0.5 * (vxx + vyy), np.hypot(0.5 * (vxx - vyy), vxy)
    theta = float(0.5 * np.arctan2(2 * vxy, vxx - vyy))
    return float(np.sqrt(half + diff)), float(np.sqrt(max(half - diff, 0.0))), theta, float(my), float(mx)


def _along_line(d, own_pixels, lines, rms=None) -> np.ndarray | None:
    """The stamp's line pixels (bool) an object lies along, or None
    (``lines``: (stamp mask, direction) of the lines in the stamp). Judged on the
    line-subtracted stamp ``d`` over the object's pixels: a piece of a trail
    or column (a glint, a brighter stretch) stays as elongated as the line
    and along it; a star on the line is round once the line is subtracted.
    Its own line is never a source (the pieces it left would be false
    detections; measured: most spurious detections left on trails). A piece
    lies on its line: an elongated object whose light is centred off the
    line's mask is beside it (a S/N 48 galaxy of axis ratio 3, 7 px from a
    trail's axis and nearly parallel to it, was taken for a piece and lost).
    With ``rms``, an object whose pixels 2 sigma above the line peak at 5
    sigma or more and are round is a source on the line, not a piece of it:
    the noise of a long stretch of the line in a star's footprint, clipped at
    zero, outweighed a S/N 67 star's core in the second moments."""
    a, b, theta, my, mx = _moments(d, own_pixels)
    if a <= 0 or a < MIN_LINE_ELONGATION * max(b, 1e-6):
        return None
    if rms is not None and _round_core(d, own_pixels, rms, connected=False):
        return None
    cy, cx = int(round(my)), int(round(mx))
    found = None
    for mask, direction in lines:
        if axis_angle(theta, direction) <= MAX_LINE_ANGLE and mask[cy, cx]:
            found = mask if found is None else (found | mask)
    return found


def _round_core(d, pixels, rms, peak: float = 5.0, connected: bool = True) -> bool:
    """Whether the brightest of ``pixels`` peaks at ``peak`` sigma or more and
    the pixels 2 sigma above the background (``connected``: only those joined
    to the brightest) are rounder than a line (:data:`MIN_LINE_ELONGATION`):
    a source's core, not a piece of a line. Connected pixels beside a sharp
    track: the noise of a long strip of the object's footprint, scattered
    along it, would make any core elongated."""
    bright = pixels & (d > 2.0 * rms)
    if bright.sum() < 3:
        return False
    k = np.argmax(np.where(bright, d / rms, -np.inf))
    if (d / rms).flat[k] < peak:
        return False
    core = bright
    if connected:
        lab, _ = ndimage.label(bright, structure=np.ones((3, 3), bool))
        core = lab == lab.flat[k]
    a, b, *_ = _moments(d, core)
    return core.sum() >= 3 and a < MIN_LINE_ELONGATION * max(b, 1e-6)


def _side_mean(d: np.ndarray) -> np.ndarray:
    """The mean of each pixel's four side neighbours (edges repeated)."""
    return 0.25 * (_shifted(d, 1, 0) + _shifted(d, -1, 0) + _shifted(d, 0, 1) + _shifted(d, 0, -1))


def _shifted(d: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``d`` moved by (``dy``, ``dx``) pixels (each -1, 0 or 1), its edge repeated where
    nothing comes in: ``np.pad(d, 1, mode="edge")``'s view, without the padding's cost (a
    stamp's few hundred pixels cost less than ``np.pad``'s own overhead)."""
    if dy:
        d = d[_shift_index(d.shape[0], dy)]
    return d[:, _shift_index(d.shape[1], dx)] if dx else d


@lru_cache(maxsize=512)
def _shift_index(n: int, k: int) -> np.ndarray:
    """Indices of an axis of ``n`` moved by ``k``, clipped to it (cached: a stamp's sizes recur)."""
    return np.clip(np.arange(n) - k, 0, n - 1)


def steeper_than_psf(excess, level, rms, sig_psf: float, nsigma: float = 5.0):
    """Whether a pixel ``level`` above the background (or, negated, below it)
    and ``excess`` above the mean of its four side neighbours is steeper than
    any source of the frame can be (a Gaussian of the smallest width rule 1
    fits, centred on the pixel), by ``nsigma`` times the excess' noise
    (``rms`` x sqrt(1 + 1/4)): no source, a hot or dead pixel."""
    return excess > (1.0 - _fall(_WIDTHS[0] * sig_psf)) * np.maximum(level, 0.0) + nsigma * np.sqrt(1.25) * rms


@lru_cache(maxsize=64)
def _fall(sigma: float) -> float:
    """A centred pixel-integrated Gaussian's value one pixel from its peak, over its peak's."""
    g = _pixel_gauss(np.array([0.0, 1.0]), sigma)
    return float(g[1] / g[0])


#: The four pairs of neighbours across a pixel (dy, dx of one of them) and their squared distance.
_ACROSS = (((0, 1), 1), ((1, 0), 1), ((1, 1), 2), ((1, -1), 2))


def _excess_across(d, sig_psf: float, width: float = _WIDTHS[0], pairs=_ACROSS, at=None):
    """Per pair of neighbours (``pairs``, by default :data:`_ACROSS`), each pixel's excess over
    their mean beyond what a Gaussian of ``width`` x the PSF's sigma (by
    default the smallest rule 1 fits), centred on it, would show: (len(pairs), H, W),
    positive where sharper than any source of the frame could be. With ``at``
    (ys, xs), at those pixels only: (len(pairs), len(ys))."""
    if at is None:
        d64 = np.asarray(d, np.float64)

        def take(dy, dx):  # the value (dy, dx) away, the edge repeated
            return _shifted(d64, -dy, -dx) if dy or dx else d64
    else:
        # Gathered with the indices clipped (the edge padding's values): no frame-sized copy.
        h, w = np.shape(d)
        ys, xs = (np.asarray(a) for a in at)

        def take(dy, dx):
            return np.asarray(d[_shift_index(h, -dy)[ys], _shift_index(w, -dx)[xs]], np.float64)
    c = take(0, 0)
    f1 = _fall(width * sig_psf)
    fall = {1: 1.0 - f1, 2: 1.0 - f1 ** 2}  # by squared distance: a diagonal's
    out = np.empty((len(pairs),) + c.shape)
    for k, ((dy, dx), r2) in enumerate(pairs):
        out[k] = c - 0.5 * (take(dy, dx) + take(-dy, -dx)) - fall[r2] * np.maximum(c, 0.0)
    return out


def sharper_across_than_psf(d, rms, sig_psf: float, nsigma: float = 5.0, at=None) -> np.ndarray:
    """Pixels sharper than any source of the frame across some direction: the
    excess over the mean of the two neighbours on a row, a column or a
    diagonal beats that of a Gaussian of the smallest width rule 1 fits by
    ``nsigma`` noise (``rms`` x sqrt(1 + 1/2)). A cosmic-ray track one pixel
    wide passes on most of its pixels (its neighbours along it are as bright
    as it, which hides it from :func:`steeper_than_psf`). bool like ``d``;
    with ``at`` (ys, xs), those pixels' answers only (``rms`` taken there too)."""
    if at is not None:
        rms = np.asarray(rms)[at] if np.ndim(rms) else rms
    return (_excess_across(d, sig_psf, at=at) > nsigma * np.sqrt(1.5) * rms).any(axis=0)


#: A source's model whose core is at most as wide as a pixel-integrated Gaussian of
#: this many times the PSF's sigma (:func:`_core_width`; the widths rule 1 fits
#: for stars: 0.85, 1.0, 1.3) may explain the calls on it (protect_sources'
#: ``explained``); a broader one may be a blend of a star and a track beside it
#: (a second generator's dense field: deposits of 5-65 sigma on 64 such pixels
#: lost their flag without this test).
EXPLAINED_MAX_WIDTH = 1.35

#: A source found beside a sharp track (the track's pixels left out) must be
#: this significant: a track's own halo fits a faint Gaussian.
TRACK_SOURCE_SNR = 10.0


def _artefacts_on_wings(d, cand, rms, sig_psf, r_core: float, nsigma: float = 5.0) -> np.ndarray:
    """Candidate pixels, in groups of one or two, that are sharper than any
    source of the frame could make them (their excess over the mean of their
    four side neighbours beats that of a Gaussian of the smallest width rule
    1 fits, centred on the pixel, by ``nsigma`` noise) and lie on a slope,
    not on a peak: with them replaced by their neighbours' mean, no local
    maximum above 3 sigma is within ``r_core``. bool like ``d``."""
    side = _side_mean(d)
    sharp = cand & steeper_than_psf(d - side, d, rms, sig_psf, nsigma)
    if not sharp.any():
        return sharp
    lab, n = ndimage.label(sharp, structure=np.ones((3, 3), bool))
    sharp &= (np.bincount(lab.ravel(), minlength=n + 1) <= 2)[lab]  # whole components go: labels stay valid
    repaired = np.where(sharp, side, d)
    peaks = (repaired >= ndimage.maximum_filter(repaired, size=3, mode="nearest")) & (repaired > 3 * rms) & ~sharp
    rr = int(np.ceil(r_core))
    disk = np.hypot(*np.mgrid[-rr:rr + 1, -rr:rr + 1]) <= r_core
    on_peak = ndimage.binary_dilation(peaks, structure=disk)
    core = np.zeros(n + 1, bool)
    core[np.unique(lab[sharp & on_peak])] = True
    core[0] = False
    return sharp & ~core[lab]


def _labels_around(lab: np.ndarray, iy: np.ndarray, ix: np.ndarray, disk: np.ndarray) -> np.ndarray:
    """(n, disk pixels): the labels of ``lab`` on ``disk`` (odd square, centred) around each (iy, ix)."""
    r = disk.shape[0] // 2
    padded = np.pad(lab, r)
    return np.stack([padded[iy + dy, ix + dx] for dy, dx in zip(*np.nonzero(disk), strict=True)], axis=1)


def _in_groups(lab: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``np.isin(lab, groups)``, by one comparison for the usual single group."""
    return lab == groups[0] if len(groups) == 1 else np.isin(lab, groups)


def _core_width(profile) -> float:
    """A profile's core width: the sigma [px] of the Gaussian whose log has
    the profile's curvature at its peak pixel (the second difference of the
    log along y and along x, geometric mean; wings left out). A sampled
    Gaussian gives its sigma wherever its centre falls within the pixel; the
    ratio of the side neighbours to the peak read an undersampled star's
    PSF-wide model half a pixel off centre as 1.6 PSF sigma wide."""
    m = np.asarray(profile, np.float64)
    cy, cx = np.unravel_index(np.argmax(m), m.shape)
    if m[cy, cx] <= 0 or not (0 < cy < m.shape[0] - 1 and 0 < cx < m.shape[1] - 1):
        return np.inf
    sides = np.array([m[cy - 1, cx], m[cy + 1, cx], m[cy, cx - 1], m[cy, cx + 1]])
    if (sides <= 0).any():
        return np.inf
    curv = np.log(sides).reshape(2, 2).sum(axis=1) - 2.0 * np.log(m[cy, cx])  # y, x: -1 / sigma^2
    return float((curv[0] * curv[1]) ** -0.25) if (curv < 0).all() else np.inf


def _width_across(profile, theta: float) -> float:
    """:func:`_core_width` across a trailed profile (its top is flat along ``theta``): from the
    log's second difference at the peak pixel one pixel either side perpendicular to it
    (interpolated bilinearly)."""
    m = np.asarray(profile, np.float64)
    cy, cx = np.unravel_index(np.argmax(m), m.shape)
    ny, nx = np.cos(theta), -np.sin(theta)  # the unit vector across
    at = np.array([[cy + ny, cy - ny], [cx + nx, cx - nx]])
    if m[cy, cx] <= 0 or (at < 0).any() or (at[0] > m.shape[0] - 1).any() or (at[1] > m.shape[1] - 1).any():
        return np.inf
    sides = ndimage.map_coordinates(m, at, order=1)
    if (sides <= 0).any():
        return np.inf
    curv = np.log(sides).sum() - 2.0 * np.log(m[cy, cx])  # -1 / sigma^2
    return float((-curv) ** -0.5) if curv < 0 else np.inf


@lru_cache(maxsize=16)
def _trailed_limit(trail: tuple, theta: float) -> float:
    """:func:`_width_across` of a trailed profile of EXPLAINED_MAX_WIDTH times the PSF's core,
    as :func:`_explained_limit` is for a round PSF."""
    yy, xx = np.mgrid[-12:13, -12:13].astype(np.float64)
    return _width_across(trailed_gaussian(xx, yy, (EXPLAINED_MAX_WIDTH * trail[0]) ** 2, trail[1], theta), theta)


def _as_narrow_as_psf(model, stats: FrameStats) -> bool:
    """Whether a source model's core is no broader than EXPLAINED_MAX_WIDTH times the PSF's
    (across it, where the PSF is trailed)."""
    if stats.psf_trail is None:
        return _core_width(model) <= _explained_limit(float(stats.sigma))
    return _width_across(model, stats.psf_theta) <= _trailed_limit(stats.psf_trail, stats.psf_theta)


@lru_cache(maxsize=64)
def _explained_limit(sig_psf: float) -> float:
    """:func:`_core_width` of a pixel-integrated Gaussian EXPLAINED_MAX_WIDTH
    times the PSF's sigma wide (pixel integration widens a sharp core)."""
    g = _pixel_gauss(np.arange(-8.0, 9.0), EXPLAINED_MAX_WIDTH * sig_psf)
    return _core_width(np.outer(g, g))


def _over_model(d, model, clear):
    """The stamp's pixels above a source model and the median of its ``clear`` pixels (the sky)."""
    return d - model - (np.median(d[clear]) if clear.any() else 0.0)


#: Fractional error of the frame's measured Moffat: its FWHM comes out a few % off (1.26 px for 1.30
#: from 27 stars of peak 20-40 sigma), which leaves up to 2% of an undersampled core's peak pixel;
#: twice that, for a real PSF's departures from the profile. A hit of a sixth of its pixel's value
#: or less may then pass for the star (4 sigma of this error).
SHAPE_ERROR = 0.04
#: ... fitted to sources whose Gaussian peaks this far above the noise: fainter, a Moffat and a
#: Gaussian of one core differ by little more than the noise (a bench frame with 6000 cosmic rays:
#: 255 fits without this bound, most on hits by faint sources; 17 with it).
MOFFAT_MIN_PEAK = 20.0


def _explained_by_moffat(image_sub, stats: FrameStats, refits, explained: np.ndarray) -> None:
    """Adds to ``explained`` the freed pixels of each source in ``refits`` ((stamp slices, freed
    pixels, pixels to fit, pixels to test, (x, y) start) each) when the frame's Moffat, fitted to
    it, leaves every pixel tested (its candidates and those it frees) no more than OUTLIER_SIGMA
    of the noise above it, with SHAPE_ERROR of the model in the noise (a bright star's own core
    and wings lay tens of sigma off its best Gaussian: second generator, Moffat stars of FWHM
    1.1-2 px, 10% of the stars of S/N > 20 kept a cosmic-ray flag so). Every one, not pixel by
    pixel: fitted over a track across or beside a star, the Moffat takes the track's light for
    the star's where the track meets the core. Nothing without a measured locus (no
    ``psf_stars`` then)."""
    if stats.psf_trail is None:
        psf = measure_moffat(image_sub, stats.rms, stats.psf_stars, stats.fwhm, stats.psf_q, stats.psf_theta)
    else:  # a trailed PSF: its round core's Moffat drawn along the segment (its flat top, its steep ends)
        psf = measure_moffat(image_sub, stats.rms, stats.psf_stars, 2.3548 * stats.psf_trail[0], 1.0,
                             stats.psf_theta, half=stats.psf_trail[1])
    if psf is None:
        return
    for sl, free, use, tested, (x0, y0) in refits:
        d = np.asarray(image_sub[sl], np.float64)
        rms = np.asarray(stats.rms[sl], np.float64)
        fit = psf.fit(d, np.maximum(rms, 1e-12) ** 2, use, x0, y0, SHAPE_ERROR)
        if fit is not None:
            shape_error = SHAPE_ERROR * np.maximum(fit[0] - fit[1][3], 0.0)
            if ((d - fit[0])[tested] <= OUTLIER_SIGMA * np.sqrt(rms**2 + shape_error**2)[tested]).all():
                explained[sl] |= free


@dataclass
class _Verdict:
    """One judgement of rule 1: its stamp's ``bounds`` (y0, y1, x0, x1); for a source, its
    ``footprint`` (protected from the halo), the candidates it ``free``s (None: it releases
    none) and those its model ``explained`` (None: none), each bool over the stamp; ``refit``:
    (pixels to fit, its candidates and those it frees, (x, y) in the stamp) of a source whose
    Gaussian left some of those it frees unexplained, for the frame's Moffat
    (:func:`protect_sources`)."""
    bounds: tuple
    source: bool = False
    footprint: np.ndarray | None = None
    free: np.ndarray | None = None
    explained: np.ndarray | None = None
    refit: tuple | None = None


#: Rule 1 judges in parallel from this many objects (~1 ms each): a pool of two forks of a
#: process holding 2 GB started, ran 20 jobs and stopped in 15-25 ms (this 2-core Xeon).
PARALLEL_MIN = 200
_CHUNK = 64  # judgements per parallel job
MAX_PROCESSES = 8  # a cap on the forks per frame (measured on 2 cores only; a frame holds 10-130 chunks)
_FORKED = None  # (judge, tasks, shape): what the forked processes judge


def judging_processes() -> int:
    """How many processes judge rule 1's objects here: the CPUs this process may use (its
    affinity and its container's quota), bounded by ``OMP_NUM_THREADS`` (the runner sets it
    for its workers), and 1 where forking is not safe: off Linux, in a daemonic process
    (Dask's workers, which may not have children) or beside other Python threads (a lock
    one of them holds would stay held in the child), but tqdm's monitor (it wakes every few
    seconds to look at its bars, under tqdm's own lock, which the children never take; a
    progress bar leaves it running)."""
    others = [t for t in threading.enumerate()
              if t is not threading.current_thread() and type(t).__name__ != "TMonitor"]
    if not sys.platform.startswith("linux") or multiprocessing.current_process().daemon or others:
        return 1
    n = usable_cpus()
    bound = os.environ.get("OMP_NUM_THREADS", "")
    return max(1, min(n, int(bound))) if bound.isdigit() else n


def _judge_chunk(start: int, stop: int) -> list:
    """The verdicts of tasks ``start:stop`` as if nothing were released yet (a forked process)."""
    judge, tasks, shape = _FORKED
    blank = np.zeros(shape, bool)
    return [judge(tasks[k], blank) for k in range(start, stop)]


def _verdicts(judge, tasks, released: np.ndarray, processes: int | None, counts: dict):
    """Each task's verdict, in order, as ``judge(task, released)`` gives it with ``released``
    as the caller leaves it after the verdicts before (it applies each before the next).

    With two processes or more, the tasks are judged ahead in forked processes as if nothing
    were released; a verdict stands where nothing was released in its stamp by the time it
    is reached (its inputs are then the same), and is judged again here where something was
    (a source's released core beside it): the result does not depend on the processes.
    ``counts``: its "ahead" and "again" count the verdicts judged ahead and judged again."""
    processes = judging_processes() if processes is None else processes
    processes = min(processes, MAX_PROCESSES, -(-len(tasks) // _CHUNK))  # no idle forks
    k = 0
    if processes > 1 and len(tasks) >= PARALLEL_MIN:
        global _FORKED
        _FORKED = (judge, tasks, released.shape)
        ex = None
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns of fork beside native threads (an inference engine's idle
                # pool): the children only run numpy and scipy on the parent's arrays.
                warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
                ex = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork"))
                jobs = [ex.submit(_judge_chunk, a, min(a + _CHUNK, len(tasks))) for a in range(0, len(tasks), _CHUNK)]
            for job in jobs:
                for v in job.result():
                    y0, y1, x0, x1 = v.bounds
                    if released[y0:y1, x0:x1].any():
                        v = judge(tasks[k], released)
                        counts["again"] += 1
                    counts["ahead"] += 1
                    yield v
                    k += 1
        except Exception as exc:  # no fork (memory, limits), a judge killed: the rest judged here
            # (a fault of judge itself is raised again there, on the same task)
            warnings.warn(f"rule 1 judged in one process ({type(exc).__name__}: {exc})", RuntimeWarning,
                          stacklevel=2)
        finally:
            _FORKED = None
            if ex is not None:
                ex.shutdown(cancel_futures=True)
    for task in tasks[k:]:
        yield judge(task, released)


#: The significance [sigma] of a peak in a group of candidates that gets a judgement of its own
#: where none is centred near it (:func:`_peaks_apart`).
APART_PEAK = 5.0


def _peaks_apart(image_sub, stats: FrameStats, lab, tasks, reach: int, limit: int, on_lines) -> list:
    """Judgements centred on the peaks of candidate groups (``lab``) that no judgement of
    ``tasks`` reaches: a local maximum of APART_PEAK sigma or more in a group, no steeper than
    a source, off ``on_lines`` (bool (H, W): diffraction spikes, fitted trails and columns, whose
    own bumps these judgements took for stars: spikes' pieces were released), a core rounder
    than a line, farther than ``reach`` px (in x or y) from every centre judging its group. A
    cosmic-ray track that runs into a star is often catalogued with it as one object, its
    centroid the track's: the stamp around that centre left the star's core out (second
    generator, FWHM 1.3 px: a S/N 25 star 7 px from such a centroid, zeroed and lost).
    A star beside a track far brighter than it is no local maximum while the track is there:
    the peaks are looked for again with the group's pixels sharper across than any PSF, and one
    more, taken off (:func:`_track_pixels`; second generator, elongated PSF: a S/N 42 star beside a
    100-sigma track, the blend's centroid 9 px off, zeroed and lost), where the PSF is sampled
    (:data:`BESIDE_TRACK_MIN_SIGMA`).
    At most ``limit``, brightest first (those beside a track after the rest); each judged like a
    catalogued object on its group."""
    if limit <= 0:
        return []
    h, w = lab.shape
    ys, xs = np.nonzero(lab)
    v = np.asarray(image_sub, np.float64)[ys, xs]
    rms = np.asarray(stats.rms, np.float64)[ys, xs]
    keep = v >= APART_PEAK * rms
    ys, xs, v, rms = ys[keep], xs[keep], v[keep], rms[keep]
    if not len(ys):
        return []
    img = np.asarray(image_sub)
    peak = _smooth_maxima(img, ys, xs, rms, stats.sigma_minor)
    new = np.zeros(len(ys), bool)  # the peaks found beside a track (its pixels out of their core's test)
    sampled = stats.sigma_minor >= BESIDE_TRACK_MIN_SIGMA
    track = _track_pixels(img, stats, lab, ys, xs) if sampled else None
    if track is not None:
        # No steepness test there (a pixel beside the track taken off has the sky for a neighbour);
        # only a peak far fainter than the track beside it (a star as bright is a maximum of its own).
        new = ~peak & ~track[ys, xs] & _local_maxima(img, ys, xs, off=track)
        if new.any():
            new[new] = v[new] <= BESIDE_TRACK_SHARE * _track_beside(img, track, ys[new], xs[new])
            peak |= new
    ys, xs, v, rms, new = ys[peak], xs[peak], v[peak], rms[peak], new[peak]
    # A peak of its own: APART_PEAK sigma above the median of a ring 1.5 FWHM out (a noise peak
    # on a plateau of light, a persistence blob's, is none).
    r_ring = max(2.0, 1.5 * float(stats.fwhm))
    ang = np.linspace(0.0, 2.0 * np.pi, 16, endpoint=False)
    ring = np.median([img[np.clip(np.round(ys + r_ring * np.sin(a)).astype(int), 0, h - 1),
                          np.clip(np.round(xs + r_ring * np.cos(a)).astype(int), 0, w - 1)] for a in ang], axis=0)
    peak = (v - ring >= APART_PEAK * rms) & ~on_lines[ys, xs]
    ys, xs, v, new = ys[peak], xs[peak], v[peak], new[peak]
    if not len(ys):
        return []
    centres: dict[int, list] = {}  # group label: the centres judging it
    for cy, cx, _, group, _, _, groups, release in tasks:
        if release:
            for g in ([group] if group else groups):
                centres.setdefault(int(g), []).append((int(cy), int(cx)))
    seg = stats.segmentation
    out = []
    for k in np.lexsort((-v, new)):  # brightest first, those beside a track after the rest
        py, px, g = int(ys[k]), int(xs[k]), int(lab[ys[k], xs[k]])
        near = centres.setdefault(g, [])
        if any(max(abs(py - cy), abs(px - cx)) <= reach for cy, cx in near):
            continue
        win = (slice(max(py - 3, 0), py + 4), slice(max(px - 3, 0), px + 4))
        pixels = ~track[win] if new[k] else np.ones(img[win].shape, bool)
        if not _round_core(np.asarray(img[win], np.float64), pixels, stats.rms[win]):
            continue  # a piece of a line (a track's own bump)
        near.append((py, px))
        out.append((py, px, int(seg[py, px]), 0, float(py), float(px), np.array([g], lab.dtype), True))
        if len(out) >= limit:
            break
    return out


def _local_maxima(img, ys, xs, off=None) -> np.ndarray:
    """Whether each pixel (``ys``, ``xs``) of ``img`` is a local maximum (3x3, the edge repeated),
    the pixels of ``off`` (bool like ``img``) taken for the sky (0)."""
    h, w = img.shape
    v = img[ys, xs]
    ok = np.ones(len(ys), bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                yy, xx = np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)
                ok &= v >= (img[yy, xx] if off is None else np.where(off[yy, xx], 0, img[yy, xx]))
    return ok


#: The peaks beside a track (:func:`_peaks_apart`) are looked for only where the PSF's core is
#: sampled (FWHM across it >= 2 px): sharper, a knot of a track two pixels wide is as round and as
#: sharp as a star (second generator, FWHM 1.1-1.6 px: two such knots freed on 72 frames, one
#: detected; no star rescued there).
BESIDE_TRACK_MIN_SIGMA = 2.0 / 2.3548

#: A peak found with a track's sharp pixels taken off (:func:`_peaks_apart`) is a star's where it is
#: at most this share of the brightest of those pixels within 2 px: a star far fainter than the
#: track it lies beside (a S/N 42 star's 12-sigma peak beside a 100-sigma track).
BESIDE_TRACK_SHARE = 0.5


def _track_beside(img, track, ys, xs, r: int = 2) -> np.ndarray:
    """The brightest pixel of ``track`` within ``r`` px (square) of each (``ys``, ``xs``); 0 for none."""
    h, w = img.shape
    top = np.zeros(len(ys))
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            yy, xx = np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)
            top = np.maximum(top, np.where(track[yy, xx], img[yy, xx], 0.0))
    return top


def _track_pixels(img, stats: FrameStats, lab, ys, xs) -> np.ndarray | None:
    """The candidates of ``lab`` sharper across than any PSF (tested at ``ys``, ``xs``) and one
    pixel more (bool like ``img``): a track's, taken off to find what lies beside it; None
    where there are none."""
    sharp = sharper_across_than_psf(img, stats.rms, stats.sigma_minor, at=(ys, xs))
    if not sharp.any():
        return None
    track = np.zeros(img.shape, bool)
    track[ys[sharp], xs[sharp]] = True
    return dilate(track, 1, square=True) & (lab > 0)


@lru_cache(maxsize=64)
def _smoothed_noise(sig: float) -> float:
    """The noise of white noise of unit sigma smoothed by a Gaussian of ``sig`` px (ndimage's)."""
    delta = np.zeros((41, 41))
    delta[20, 20] = 1.0
    return float(np.sqrt((ndimage.gaussian_filter(delta, sig) ** 2).sum()))


def _brighter_neighbours(d, rms, group, ref, sig_psf: float) -> np.ndarray:
    """The light of objects brighter than a group of candidates and apart from it: the pixels of
    the PSF-smoothed stamp 2 sigma above its noise that are nearer to one of its local maxima than
    to the group, maxima (the stamp's edge included: a neighbour's peak may lie beyond it) 5 sigma
    bright, above the group's brightest smoothed pixel, more than 1 FWHM from the group and 2 from
    the object judged (``ref``: its own core, wherever the group lies on it)."""
    if not group.any():
        return np.zeros(d.shape, bool)
    reach = 2 * 2.3548 * sig_psf
    yy, xx = np.indices(d.shape)
    to_group = ndimage.distance_transform_edt(~group)
    top = (to_group > reach / 2) & (np.hypot(yy - ref[0], xx - ref[1]) > reach) & (d >= 5.0 * rms)
    if not top.any():  # most stamps: nothing bright apart (spares the smoothing)
        return top
    sm = ndimage.gaussian_filter(d, sig_psf)
    top &= (sm > sm[group].max()) & (sm >= ndimage.maximum_filter(sm, size=3))
    if not top.any():
        return np.zeros(d.shape, bool)
    ys, xs = np.nonzero(top)
    to_peak = np.min(np.hypot(yy[..., None] - ys, xx[..., None] - xs), axis=-1)
    return (to_peak < to_group) & (sm > 2.0 * _smoothed_noise(sig_psf) * rms)


def protect_sources(image_sub: np.ndarray, stats: FrameStats, candidates: np.ndarray,
                    lines=(), max_objects: int = 20000, exclude: np.ndarray | None = None,
                    spikes: np.ndarray | None = None, halo: int = 0,
                    line_light: np.ndarray | None = None, processes: int | None = None) -> ReleaseResult:
    """Release the zero-weight ``candidates`` (bool (H, W)) that sit on real
    sources of the frame (see the module docstring).

    Two kinds of objects are judged: the frame's catalogued objects
    (``stats.objects``) with a candidate within ``r_core`` of their centre,
    and every connected group of candidates none of those reaches, centred
    on its brightest pixel (a faint undersampled star whose core the
    candidates cover is often too sharp for the catalogue's smoothed
    threshold, yet the catalogue run at its own threshold finds it).

    ``lines``: ``(mask, direction)`` of each fitted trail or column (bool
    (H, W), radians from +x): an object elongated along one is a piece of
    it, and that line's pixels are not released for it. ``exclude`` (bool
    (H, W)): pixels with no sky (overscan) left out of every fit: a step of
    tens of sigma in a stamp decides nothing about the object next to it.
    ``spikes`` (bool (H, W)): diffraction spikes of saturated stars, never
    taken for a cosmic-ray track's extension (:func:`judge_object`).
    ``halo`` (px): how far the caller grows the candidates left zero (the
    cosmic-ray halo); objects are looked up that much further out, so that
    no halo reaches the core of an object that was never judged (a star of a
    blend 4 px from a track, its centroid the blend's, lost so).
    ``line_light`` (float (H, W), image units): the fitted trails' model,
    which ``image_sub`` has lost; where it is positive, a pixel is released
    only where the light left is at least the trail's, or in the source's core.
    ``processes``: how many processes judge the objects (None: :func:`judging_processes`); the
    result is the same for any number."""
    released = np.zeros(candidates.shape, bool)
    protected = np.zeros(candidates.shape, bool)
    explained = np.zeros(candidates.shape, bool)
    if not candidates.any():
        return ReleaseResult(released, protected, 0, 0, explained=explained)
    objs = stats.objects
    h, w = candidates.shape
    r_core = max(1.0, 0.75 * stats.fwhm)
    rr = int(np.ceil(r_core))
    disk = np.hypot(*np.mgrid[-rr:rr + 1, -rr:rr + 1]) <= r_core
    hs = max(4, int(np.ceil(2.0 * stats.fwhm)) + 2)
    seg = stats.segmentation
    n_src = 0
    spill = hit_spill(image_sub, candidates, stats.rms, stats.sigma_minor)
    # Each line's bounding box (y0, y1, x0, x1): a stamp looks only at the lines that reach it
    # (thousands of stamps on a frame with many cosmic rays, each slicing every line's mask).
    boxes = []
    for m, _ in lines:
        ys, xs = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        boxes.append((ys[0], ys[-1] + 1, xs[0], xs[-1] + 1) if len(ys) else (0, 0, 0, 0))

    def judge(task, released):
        """Judge one object, ``task`` = (cy, cx, own, group, ref_y, ref_x, groups, release): at
        pixel (cy, cx), ``own`` its segmentation label (0: none); it may release the stamp's
        candidates on a source, only those of label ``group`` of ``lab`` when not 0; its fits
        set free the candidates of ``groups`` (None: the same), the stamp's others are left out
        of them. ``release=False``: a source only gets its footprint protected (from the halo).
        ``released``: the candidates released so far (read in the stamp only). Returns
        the :class:`_Verdict` (nothing written: :func:`_verdicts` may judge ahead)."""
        cy, cx, own, group, ref_y, ref_x, groups, release = task

        def cand_of(sl):
            return lab[sl] == group if group else candidates[sl]

        fit_of = None if groups is None else (lambda sl: _in_groups(lab[sl], groups))
        for grow in (1, 2, 3):
            # The stamp grows (twice, three times) while candidates cover more than half of it:
            # a trail's band 12 px wide filled a 13 px stamp, and a S/N 52 star on it could not
            # be told from a hit for want of sky around it.
            y0, y1 = max(cy - grow * hs, 0), min(cy + grow * hs + 1, h)
            x0, x1 = max(cx - grow * hs, 0), min(cx + grow * hs + 1, w)
            sl = (slice(y0, y1), slice(x0, x1))
            s = seg[sl]
            others = (s > 0) & (s != own) if own else (s > 0)
            cand = cand_of(sl)
            mine = cand if fit_of is None else fit_of(sl)
            others = others | (candidates[sl] & ~mine & ~released[sl])  # other groups' pixels: not this object
            if exclude is not None:
                others = others | exclude[sl]
            if candidates[sl].mean() <= 0.5:
                break
        cand, mine = cand & ~released[sl], mine & ~released[sl]
        d = np.asarray(image_sub[sl], np.float64)
        rms = stats.rms[sl]
        # A brighter object's light, no part of the object judged (merged with it in the frame's
        # catalogue: a S/N 318 star 10 px from a S/N 2040 galaxy), is no plane's: it decided every
        # fit (chi2 5e7, negative amplitudes) and the star's core was zeroed. Left out of the fits
        # as another object's pixels are.
        others = others | (_brighter_neighbours(d, rms, cand | mine, (ref_y - y0, ref_x - x0), stats.sigma)
                           & ~cand & ~mine)
        spikes_sl = spikes[sl] if spikes is not None else None
        on = [(m[sl], direction) for (m, direction), (ly0, ly1, lx0, lx1) in zip(lines, boxes, strict=True)
              if ly0 < y1 and y0 < ly1 and lx0 < x1 and x0 < lx1 and m[sl].any()]  # the lines in the stamp
        fitted = np.logical_or.reduce([m for m, _ in on]) if on else None

        def sharp_across():
            """Candidates sharper across than any PSF (a cosmic-ray track's pixels)."""
            t = np.zeros(d.shape, bool)
            at = np.nonzero(cand)  # tested at the candidates only
            t[at] = sharper_across_than_psf(d, rms, stats.sigma_minor, at=at)
            return t

        def sharp_track(min_sharp: int = 1):
            """Candidates sharper across than any PSF (a cosmic-ray track), and one pixel more,
            in pieces holding ``min_sharp`` sharp pixels or more (3: a track, not a hit on a
            core, whose neighbours are the star's)."""
            t = sharp_across()
            if t.sum() < max(min_sharp, 1):
                return np.zeros(d.shape, bool)
            grown = dilate(t, 1, square=True) & cand
            if min_sharp <= 1:
                return grown
            tl, tn = ndimage.label(grown, structure=np.ones((3, 3), bool))
            return grown & (np.bincount(tl[t], minlength=tn + 1) >= min_sharp)[tl]

        track = None
        if on:
            own_px = (s == own) if own else cand
            along = _along_line(d, own_px, on, rms)
            if along is not None:  # stamp-sized: no full-frame work per object
                # An object along the line only with a sharp track in it is the track's
                # neighbour, not a piece of the line (a trail is never sharper than the PSF).
                track = sharp_track()
                if not track.any() or not _round_core(d, own_px & ~track, rms):
                    cand, mine, track = cand & ~along, mine & ~along, None
        bounds = (y0, y1, x0, x1)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        r_ref = np.hypot(yy - ref_y, xx - ref_x)  # distance from the object's centre
        own_seg = (s == own) if own else np.zeros(s.shape, bool)  # its segmentation footprint
        if fitted is not None and (mine & fitted).any():
            # Its own: what reaches its core or lies in its footprint (a blend's centroid, 12 px
            # off a S/N 1000 galaxy on a bright trail's wings, had no loud pixel in its core).
            judged = _own_on_line(d, rms, mine, fitted, (r_ref <= r_core) | own_seg)
            others, mine = others | (mine & ~judged), judged  # the line's, other objects': in no fit
            if track is not None and not (track & mine).any():
                track = None  # a sharp track on the line, apart from the object: judged whole
        if not mine.any():
            return _Verdict(bounds)
        psf_shape = stats.psf_shape
        ok = whole = False
        hit = None
        if track is None:  # judged whole first, unless a track made it look like a piece of a line
            ok, model, whole, hit = judge_object(d, rms, mine, others, stats.sigma, psf_shape, spikes=spikes_sl,
                                                 fitted=fitted, spill=spill)
            if not ok and own and stats.psf_trail is not None:
                # On a trailed frame the catalogue's other objects on its candidates may be pieces
                # of it: a trailed star (FWHM 1.3 px, drift 10 px) deblended in two, each judged
                # with the other left out, is no trailed PSF (a S/N 139 star zeroed whole so);
                # and so may the other groups of candidates on its own footprint (a S/N 23 streak
                # called in two pieces, the one beyond its core left out). Judged again with them
                # in. (Not on other frames: a track beside a star, judged with the star in, freed
                # its own stretch beside the star.)
                extra = candidates[sl] & own_seg & ~mine & ~released[sl]
                mine_j = mine | extra
                joined = np.unique(s[mine_j & (s > 0) & (s != own)])
                if len(joined) or extra.any():
                    others_j = others & ~extra & ~(np.isin(s, joined) & ~(candidates[sl] & ~mine_j))
                    ok, model, whole, hit = judge_object(d, rms, mine_j, others_j, stats.sigma, psf_shape,
                                                         spikes=spikes_sl, fitted=fitted, spill=spill)
        if not ok:
            # *Source beside a sharp track*: a cosmic-ray track sharper across than any PSF in one
            # group of candidates with a source spoils every model above (a second generator's
            # S/N 48 galaxy beside a 70-sigma track, both in a trail's band: the group's peak is
            # the track's). The track's pixels and one more are left out of the fits and keep
            # their zero weight; the rest must hold a source of TRACK_SOURCE_SNR.
            track = sharp_track() if track is None else track
            if not (track & mine).any() or not _round_core(d, ((s == own) if own else mine) & ~track, rms):
                return _Verdict(bounds)  # no track, or no source's core beside it (most hits: spares the fits)
            ok, model, _, hit = judge_object(d, rms, mine & ~track, others | track, stats.sigma, psf_shape,
                                             min_snr=TRACK_SOURCE_SNR, spikes=spikes_sl, fitted=fitted, spill=spill)
            if not ok:
                return _Verdict(bounds)
            # The pixel kept beside each of the track's sharp pixels is the source's where its
            # model explains it (no more than OUTLIER_SIGMA above): a S/N 23 star 1 px from a
            # two-pixel-wide track kept 3 of its 4 core pixels at zero weight and was lost.
            track = track & (sharp_across() | (_over_model(d, model, ~cand & ~others) > OUTLIER_SIGMA * rms))
        else:
            track = np.zeros(d.shape, bool)
        # Its footprint reaches one pixel past its core: the detection filter
        # carries a zero-weight pixel's infinite noise one pixel (3x3 kernel),
        # enough to erase a faint undersampled core next to it; and 3.5 px at
        # least, or an undersampled core keeps fewer pixels than the minimum
        # area (FWHM 1.5 px: 4 left within FWHM + 1).
        r_near = max(stats.fwhm + 1.0, 3.5)
        my, mx = np.unravel_index(np.argmax(model), model.shape)
        if stats.psf_trail is not None:
            # A trailed model's top is flat along its segment: its peak is the top's pixel nearest
            # the object (the brightest, noise's choice along it, lay 6 px off a S/N 21 streak's
            # centroid, taken for another object beside it: nothing released, the star lost).
            top = model >= 0.9 * model.max()
            my, mx = np.unravel_index(np.argmin(np.where(top, r_ref, np.inf)), model.shape)
        if r_ref[my, mx] > r_near and not own_seg[my, mx]:
            # The source that won is another object beside this one (a star, for a track
            # ending on its wing: its pixels outside the track's candidates): that object's own
            # judgement releases it, and this disc would free the track, detected with the star.
            return _Verdict(bounds)
        footprint = (model > 0.5 * rms) | (r_ref <= r_near)
        # Its light is one piece with that disc or its own footprint: a lobe of the model apart
        # from both is no part of this object (a fit that won on a hot column's brightest pixel, at
        # the corner of a stamp grown over a trail's band, freed 5 px of the column 25 px off: a
        # false detection). A blend's centroid may lie off its source (a track beside a galaxy).
        lab_f, n_f = ndimage.label(footprint, structure=np.ones((3, 3), bool))
        if n_f > 1:
            footprint = np.isin(lab_f, np.unique(lab_f[((r_ref <= r_near) | own_seg) & footprint]))
        # The disc is the source's own too where its peak is in that piece and the object's
        # centroid (a blend's: a star and the track ending on it) lies off it: a S/N 64 star 3.8 px
        # from such a centroid kept zero pixels 2 px from its peak, whose halo erased it from
        # detection.
        if footprint[my, mx]:
            footprint |= np.hypot(yy - (y0 + my), xx - (x0 + mx)) <= r_near
        # One or two candidate pixels sharper than any PSF of the frame could
        # make them on a source's slope, off its peak (a hot pixel on a bright
        # star's wing, often deblended as an object of its own) are the
        # artefact on the source: they keep their zero weight, which costs
        # the source those pixels only, and their light stays out of its
        # photometry. On a core, the hit is released (its flag stays).
        artefact = _artefacts_on_wings(d, cand, rms, stats.sigma_minor, r_core)
        if hit is not None:
            # A track ending beside the source, as its fit found it, keeps its zero weight
            # (released, a track's end on a S/N 64 star's wing made one detection with it, 3 px
            # off the star), but not within a pixel of the source's peak: the detection filter
            # carries a zero weight's infinite noise one pixel, and the peak is detected no more.
            beside_peak = np.maximum(np.abs(yy - (y0 + my)), np.abs(xx - (x0 + mx))) < 2  # the stamp's grid
            artefact = artefact | (hit & cand & ~beside_peak)
        # A source too faint to be seen pixel by pixel is found without the
        # candidates sharper than any PSF far above it: those are a hit on it
        # (or the hit is the detection and the "source" a nebula's bump under
        # it, whose noise passes for a peak next to the hit), and released
        # they would make a detection of the hit's light (measured on crowded
        # simulated frames: single-pixel cosmic rays of 20-100 sigma on
        # nebulae released so). A bright undersampled star fitted on its
        # wings alone has as faint a model, but its core is no sharper than the PSF.
        # A track one pixel wide is sharp across it only (its neighbours along it are
        # as bright): a 25 px cosmic-ray track of 10-20 sigma on a fringed sky was
        # released whole for a 1.5-sigma bump of the fringes beside it, and detected.
        if model.max() < FAINT_PEAK * float(np.median(rms)):
            sharp = steeper_than_psf(d - _side_mean(d), d, rms, stats.sigma_minor) | sharp_track(3)
            artefact = artefact | (cand & sharp & (_over_model(d, model, ~cand & ~others) > OUTLIER_SIGMA * rms))
        elif (cand & (r_ref > r_near)).any():
            # A track across a source's wings, past the disc kept for its detection, far above
            # its model, is the track there: freed, it was deblended as a detection of its own.
            wing = cand & (r_ref > r_near) & (_over_model(d, model, ~cand & ~others) > OUTLIER_SIGMA * rms)
            if wing.any():
                artefact = artefact | (wing & sharp_track(3))
        free = explained = refit = None
        if release:
            free = cand & footprint & ~artefact & ~track
            if line_light is not None and (line_light[sl] > 0).any():
                # A trail's pixel freed where the trail outshines the source makes its
                # detection measure the trail: a star 5 px beside a trail freed a stretch
                # of it, and the detection's centroid moved onto the trail (crowded
                # simulated frames: two stars so; a knot on a trail judged a source
                # freed a disc of the trail itself). A trail's pixel is freed where the
                # light left with the trail subtracted (3x3 mean, for the noise) is at
                # least the trail's, not the source model's: the model may be a broad
                # profile of a star blended with the trail's residual (second
                # generator: 20 ADU peak for a 190 ADU star, which kept only its core).
                # Its core (r_core) is freed still: a S/N 20 star centred on a 5-sigma trail
                # outshines it on too few pixels to be detected (constructed frames: freed
                # within half the FWHM, 6 of 6 such stars lost). Its disc (r_near, as the
                # footprint's) where its peak is above the trail model's error there: on a
                # 20-60 sigma trail a core of 0.75 FWHM kept ~5 pixels clear of the detection
                # filter's reach of zero weight, under the minimum area (27 of 80 stars lost;
                # disc: 2); a "source" of a 400-sigma trail's residual freed so is detected.
                ll = line_light[sl]
                at = tuple(np.clip(np.round([ref_y - y0, ref_x - x0]).astype(int), 0, np.array(ll.shape) - 1))
                core = r_ref <= (r_near if model.max() >= MODEL_ERROR * ll[at] else r_core)
                free &= (ll <= 0) | (ndimage.uniform_filter(d, 3, mode="nearest") >= ll) | core
            if whole and _as_narrow_as_psf(model, stats):
                # A star's own profile (no broader: a track beside a star fitted as one broad
                # source with it is no star) explains the call's pixels, each no more than
                # OUTLIER_SIGMA of the noise above it (a hit on a bright star hides in the
                # fit's model error): the call was the star.
                over = _over_model(d, model, ~cand & ~others & (model <= 0.5 * rms))
                explained = free & (over <= OUTLIER_SIGMA * rms)
            if (free.any() and (explained is None or (free & ~explained).any())
                    and (model > MOFFAT_MIN_PEAK * rms).any()):
                # A Gaussian's wings are not a star's, nor its peak an undersampled core's (a bright
                # star's Gaussian over every pixel lost to one with an artefact on its core): the
                # frame's Moffat is fitted too, over every pixel (after the verdicts, once per frame).
                core = np.where(model > 0.05 * model.max(), model, 0.0)
                yy, xx = np.indices(d.shape)
                refit = (~others, free | (cand & ~others),
                         (float((core * xx).sum() / core.sum()), float((core * yy).sum() / core.sum())))
        return _Verdict(bounds, True, footprint, free, explained, refit)

    reached = np.zeros(candidates.shape, bool)  # candidate pixels some catalogued object's test covered
    lab, n = ndimage.label(candidates, structure=np.ones((3, 3), bool))
    tasks = []  # every judgement, in order (see judge)
    if len(objs):
        iy = np.clip(np.round(objs["y"]).astype(int), 0, h - 1)
        ix = np.clip(np.round(objs["x"]).astype(int), 0, w - 1)
        # Objects with a candidate within r_core of their centre: looked up at
        # the centres only (a full-frame dilation cost more than the lookups).
        # Its fits free the groups of candidates within r_core of its centre;
        # another group in its stamp (a cosmic ray beside a star) is no part
        # of it (measured: a S/N 49 star at FWHM 1.3 px lost to a hit 4 px
        # away that its Gaussian had to fit), though its footprint may still
        # release it (see judge).
        groups = _labels_around(lab, iy, ix, disk)
        idx = np.flatnonzero((groups > 0).any(axis=1))[:max_objects]
        for i in idx:
            reached[max(iy[i] - rr, 0):iy[i] + rr + 1, max(ix[i] - rr, 0):ix[i] + rr + 1] = True
            tasks.append((iy[i], ix[i], i + 1, 0, objs["y"][i], objs["x"][i], np.unique(groups[i][groups[i] > 0]),
                          True))
        if halo > 0:
            # Objects only the halo would reach (square growth, as the caller's; within r_core
            # of their centre, rounded to a pixel: 0.71 px more): judged with the groups it grows
            # from, and a source's footprint is protected from the halo; their candidates stay.
            look = np.hypot(*np.mgrid[-rr - 1:rr + 2, -rr - 1:rr + 2]) <= r_core + 0.71
            grown = _labels_around(grow_labels(lab, halo), iy, ix, look)
            tested = np.zeros(len(iy), bool)
            tested[idx] = True
            extra = np.flatnonzero((grown > 0).any(axis=1) & ~tested)[:max(max_objects - len(idx), 0)]
            tasks += [(iy[i], ix[i], i + 1, 0, objs["y"][i], objs["x"][i], np.unique(grown[i][grown[i] > 0]), False)
                      for i in extra]
    # Groups of candidates no catalogued object reaches: judged on their own.
    if n:
        hit = np.zeros(n + 1, bool)
        hit[lab[reached & candidates]] = True
        alone = np.flatnonzero(~hit[1:]) + 1
        if len(alone):
            flat = np.flatnonzero(np.isin(lab, alone))
            vals = np.asarray(image_sub).ravel()[flat]
            order = np.lexsort((-vals, lab.ravel()[flat]))  # by group, brightest first
            first = flat[order][np.r_[True, np.diff(lab.ravel()[flat][order]) != 0]]
            for k in first[:max_objects]:
                cy, cx = divmod(int(k), w)
                tasks.append((cy, cx, int(seg[cy, cx]), int(lab[cy, cx]), cy, cx, None, True))
        on_lines = np.zeros(candidates.shape, bool) if spikes is None else spikes.copy()
        for m, _ in lines:
            on_lines |= m
        tasks += _peaks_apart(image_sub, stats, lab, tasks, hs - 2, max(max_objects - len(tasks), 0), on_lines)
    n_tested = len(tasks)
    counts = {"ahead": 0, "again": 0}
    refits = []
    for v in _verdicts(judge, tasks, released, processes, counts):
        if v.source:
            y0, y1, x0, x1 = v.bounds
            sl = (slice(y0, y1), slice(x0, x1))
            n_src += 1
            protected[sl] |= v.footprint
            if v.free is not None:
                released[sl] |= v.free
            if v.explained is not None:
                explained[sl] |= v.explained
            if v.refit is not None:
                refits.append((sl, v.free, *v.refit))
    if refits:
        _explained_by_moffat(image_sub, stats, refits, explained)
    return ReleaseResult(released, protected, int(n_tested), int(n_src), spill, explained,
                         n_ahead=counts["ahead"], n_again=counts["again"])
