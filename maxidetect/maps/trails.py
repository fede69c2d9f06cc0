"""Satellite trails, found by their shape and masked end to end.

1. The frame in noise units, its compact sources, saturated stars and
   spikes masked out, binned (2x2 or 4x4) and thresholded at 1 sigma, is
   summed along every line (a Hough transform weighted by the signal):
   a trail of per-pixel S/N 1 across the frame stands out where the network
   sees nothing (``benchmarks/trail_sweep.py``). A short one is a small part
   of its line's chord, and drowns in its sky: the sums over stretches of
   192 px (:func:`_hough_local`) give a few more candidates, each with the
   stretch it stands out on (S/N 1.5-2 over 100 px is found; S/N 1 over
   100 px mostly not). The sums are in units of the residual's own local
   noise (:func:`_excess_noise`: the light left between the masked stars of
   a crowded field is correlated over many pixels) and of their scatter at
   each angle.
2. Every candidate line, and every elongated component of the network's TRL
   mask, is verified at full resolution, the strongest first: its profile
   across the line (a Gaussian: offset and width) and its signal along it in
   windows of ``WINDOW`` px, above the light beside it in the same window. A
   trail is significant in most windows over at least ``min_length`` px; a
   row of stars, a galaxy edge, a crowded field's residual or noise is not.
   A line that fails over its whole chord is verified again over the stretch
   where its light is (:func:`_bright_span`): a trail several times shorter
   than the chord leaves the sky's medians across it.
3. The verified trail is masked from its first to its last significant
   window plus a margin, at 2.5 widths plus 2 px: never in fragments. Two
   stretches of one line, each a trail's length and at most ``JOIN_GAP``
   apart, are one trail (it fades, or the light beside it that it is judged
   against rises); stretches farther along a found trail's line are
   looked for beyond its ends and masked each (a glinting satellite's dashes).
   A trail that runs into a stretch the search left out (a source's
   footprint) is carried on through it while its core stays lit on the frame
   as it is (:func:`_through_masked`). The band reaches as far as the
   trail's measured profile stands above the sky (a real trail has its PSF's
   wings, far above a Gaussian's).
4. Beside the trails found, the search goes on in rounds without their bands
   (:func:`_neighbours`): a satellite train's trails lie 10-40 px apart,
   and each fainter one passes for a part or the surroundings of a brighter
   one beside it. A faint line at a shallow angle to a bright trail is judged
   once the train beside it is found (:func:`_deferred`).

A bright trail through a crowded field is deblended into pieces, each a
compact source; :func:`line_ridges` finds the pixels of lines longer than
any source (a grey opening by line segments) that the caller leaves visible.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from maxidetect.maps.morph import axis_angle, component_shapes, dilate

__all__ = ["Trail", "collinear_pieces", "find_trails", "line_components", "line_ridges", "periodic_flashes",
           "trail_mask", "trail_of_spikes", "trail_on_galaxy", "trail_on_step", "trails_from_header", "WINDOW"]

WINDOW = 32  # px along the line per significance window
#: A window's S/N under 1 ends a trail's run only over this many pixels at least (where a trail of
#: peak S/N 1 per pixel would have S/N 4).
MIN_WINDOW_PIXELS = 16
#: A trail's ends are measured in steps of END_STEP px: a step is lit where its core pixels (at least
#: END_MIN_PIXELS) stand END_SNR above the light beside the line (a trail of peak S/N 1 per pixel:
#: ~4 over 8 px).
END_STEP, END_SNR, END_MIN_PIXELS = 8, 2.0, 6
#: A window is part of a trail only where, as well as significant, its light is spread along it: the
#: core's mean stands LIT_FRACTION of the trail's fitted peak above the light beside the line in
#: LIT_STEPS of its WINDOW // END_STEP = 4 steps of END_STEP px (an end step: its own mean). Over a
#: window's ~200 core pixels a bright column or star crossing the line is significant, and so is a
#: real frame's own structure (0.3-0.9 sigma per pixel over tens of px); runs went on through them
#: past a trail's end (a S/N 1 trail injected into a real frame drawn 60 px on to a hot column it
#: never reached, an 8-sigma one 30 px into the sky). A star or column lights one or two steps of a
#: window.
LIT_FRACTION, LIT_STEPS = 0.25, 3
#: Two stretches of one line at most this far apart [px] are one trail, bridged: where a trail
#: fades (a tumbling satellite) or the light beside it, which it is judged against, rises, its run
#: of windows ends (a 2.7-sigma trail on a crowded frame was found as two pieces 68 px apart, and
#: the second, 470 px to the frame's edge, left unmasked). Farther apart, each is a trail of its own
#: (a glinting satellite's dashes): both masked, the gap not.
JOIN_GAP = 4 * WINDOW
EXCESS_BLOCK = 8  # px: the blocks over which the residual's excess noise is measured
MAX_LINES = 12  # distinct lines tried from the Hough transform
#: The network's other line calls support a line when their major axis is within this of its direction.
LINE_SUPPORT_ANGLE = np.radians(10.0)
MAX_PEAKS = 40  # Hough peaks taken to find them
#: Lines tried from the Hough transform over stretches (:func:`_hough_local`): stretches of
#: 3 x LOCAL_SEGMENT px every LOCAL_SEGMENT px, at LOCAL_THETAS angles.
MAX_LOCAL, LOCAL_SEGMENT, LOCAL_THETAS = 6, 64, 180
MODEL_BIN = 4.0  # px along a trail per amplitude bin of its model
#: The search's S/N image is clipped here (a star on the line weighs no more than a bright trail).
#: A line whose fitted peak reaches CLIPPED_SHARE of it was fitted on a flat top, too broad: its
#: width is judged again on the frame as it is (a S/N 200 trail along a column, FWHM 3.9 px, came
#: out sigma 3.6 and was dropped as a broad line along the grid).
SEARCH_TOP = 50.0
CLIPPED_SHARE = 0.5
#: Rounds of the search for the parallel neighbours of the trails found (a satellite train: trails
#: 10-40 px apart, each hidden from the first round by a brighter one beside it). Each round leaves
#: out the found trails' zero-weight bands widened by NEIGHBOUR_PAD px, and searches within
#: NEIGHBOUR_ANGLE of their directions.
NEIGHBOUR_ROUNDS = 4
NEIGHBOUR_PAD = 3.0
NEIGHBOUR_ANGLE = np.radians(2.0)
NEIGHBOUR_REACH = 64.0  # px: farther lines are searched as well in the first round
#: A line verified only where the network drew it (its whole chord fails) is a trail from this
#: peak S/N per pixel up (the faintest the maps must find is 1; a raw frame's edge row the network
#: calls a spike line fitted at 0.49).
MIN_SPAN_AMPLITUDE = 0.75
_E_W, _E_W2 = 0.2420, 0.4000  # E[z 1{z>1}] and E[z^2 1{z>1}] for z ~ N(0, 1)
#: A fitted trail's zero weight reaches out to where its profile falls to this much of the noise
#: per pixel, and a pixel more (:attr:`Trail.mask_half_width`).
MASK_EDGE_SIGMA = 0.3
#: A trail whose fitted peak is this bright [sigma per pixel] is straightened again on its own light,
#: and its model follows its measured wings (sampled every WING_STEP px).
BRIGHT_TRAIL, WING_STEP = 20.0, 0.5


@dataclass
class Trail:
    """A straight trail: pixels with ``|x cos(theta) + y sin(theta) - rho| <
    half_width`` between ``t0`` and ``t1`` along the direction
    ``(-sin(theta), cos(theta))`` (t measured from the foot of the normal)."""

    theta: float
    rho: float
    sigma: float  # Gaussian width of the profile [pix]
    amplitude: float  # peak S/N per pixel
    t0: float
    t1: float
    significance: float
    source: str  # "hough", "network" (a TRL component) or "network-line" (another line call)
    #: Where its measured profile falls to MASK_EDGE_SIGMA [px from the line] (None: not measured):
    #: a real trail's profile is its PSF's, with wings far above the fitted Gaussian's.
    wings: float | None = None
    #: A bright trail's measured profile beyond its core, over its peak, every WING_STEP px from the
    #: line (the lower of its two sides), for its model (None: the Gaussian's alone).
    wing_profile: tuple | None = None

    @property
    def half_width(self) -> float:
        return 2.5 * self.sigma + 2.0

    @property
    def mask_half_width(self) -> float:
        """The half width of the band the maps give zero weight: out to where the fitted
        profile falls to :data:`MASK_EDGE_SIGMA` of the noise, a pixel more, and never wider
        than :attr:`half_width` (an amplitude of 0, unknown: that). A faint trail's band of
        2.5 sigma + 2 px held twice the pixels its light reaches, and took them out of the
        sky's background meshes: on a simulated frame a S/N 95 star on a nebula beside such a
        band was merged into the nebula as the mesh's sky moved."""
        if self.amplitude <= 0:
            return self.half_width
        reach = self.sigma * np.sqrt(2.0 * np.log(max(self.amplitude / MASK_EDGE_SIGMA, 1.5))) + 1.0
        reach = min(reach, self.half_width)
        return reach if self.wings is None else max(reach, self.wings + 1.0)

    @property
    def length(self) -> float:
        return self.t1 - self.t0

    @property
    def off_grid(self) -> float:
        """Its angle to the nearer pixel axis [deg] (0: along a column or a row)."""
        ang = np.degrees(self.theta) % 90.0
        return min(ang, 90.0 - ang)


#: Flashes on a trail (an aircraft's strobes): at least this many sources centred on its line,
#: one spacing apart each (within FLASH_TOLERANCE px, or 2% of it), of fluxes within a factor
#: FLASH_FLUX_RATIO. Stars fall on a line at random spacings and brightnesses.
FLASH_MIN, FLASH_TOLERANCE, FLASH_FLUX_RATIO = 5, 1.0, 3.0


def periodic_flashes(trail: Trail, x: np.ndarray, y: np.ndarray, flux: np.ndarray, fwhm: float) -> np.ndarray:
    """Indices of the sources (centres ``x``, ``y``; ``flux``) that are flashes of ``trail``: centred
    within half a FWHM (1 px at least) of its line, within its stretch, FLASH_MIN or more at one
    spacing along it (two FWHM at least; each within FLASH_TOLERANCE px or 2% of the spacing of
    where the last one puts it, none missing between) and of like fluxes (FLASH_FLUX_RATIO).
    Each alone is a source by its shape; together they are the trail's (a constructed aircraft's
    strobe flashes, S/N 250 every 70 px on its two wing-light streaks: 30 detections kept)."""
    x, y, flux = (np.asarray(a, np.float64) for a in (x, y, flux))
    dist = x * np.cos(trail.theta) + y * np.sin(trail.theta) - trail.rho
    along = -x * np.sin(trail.theta) + y * np.cos(trail.theta)
    on = np.flatnonzero((np.abs(dist) <= max(1.0, 0.5 * fwhm)) & (along >= trail.t0 - 20)
                        & (along <= trail.t1 + 20) & (flux > 0))
    if len(on) < FLASH_MIN:
        return np.zeros(0, int)
    on = on[np.argsort(along[on])]
    s, f = along[on], flux[on]
    best: list[int] = []
    for i in range(len(on) - FLASH_MIN + 1):
        for j in range(i + 1, len(on)):
            d = s[j] - s[i]
            if d < 2 * fwhm:
                continue
            tol = max(FLASH_TOLERANCE, 0.02 * d)
            run = [i, j]
            while True:  # the next flash one spacing on
                k = np.flatnonzero(np.abs(s - (s[run[-1]] + d)) <= tol)
                if not len(k):
                    break
                run.append(int(k[np.argmin(np.abs(s[k] - (s[run[-1]] + d)))]))
            if len(run) >= max(FLASH_MIN, len(best) + 1) and f[run].max() <= FLASH_FLUX_RATIO * f[run].min():
                best = run
    return on[np.asarray(best, int)]


def trails_from_header(header) -> list[Trail]:
    """The trails recorded in a map's header (MDTRLn cards of the fusion)."""
    out = []
    for k in range(1, 100):
        card = header.get(f"MDTRL{k}") if header is not None else None
        if card is None:
            break
        theta, rho, sigma, t0, t1 = (float(v) for v in str(card).split(","))
        out.append(Trail(theta, rho, sigma, 0.0, t0, t1, 0.0, "header"))
    return out


def _segment(shape, theta, rho, half_width, t0, t1):
    """(ys, xs, dist) of the pixels within ``half_width`` of a line, between
    ``t0`` and ``t1`` along it (only the band around the line is visited)."""
    ys, xs, dist, along = _band(shape, theta, rho, half_width)
    keep = (along >= t0) & (along <= t1)
    return ys[keep], xs[keep], dist[keep]


def trail_mask(shape, trail: Trail, margin: float = 10.0, half_width: float | None = None) -> np.ndarray:
    """The pixels a trail covers, end to end (``margin`` px past them), within ``half_width``
    of its line (None: :attr:`Trail.half_width`), bool (H, W)."""
    mask = np.zeros(shape, bool)
    hw = trail.half_width if half_width is None else half_width
    ys, xs, _ = _segment(shape, trail.theta, trail.rho, hw, trail.t0 - margin, trail.t1 + margin)
    mask[ys, xs] = True
    return mask


def trail_model(shape, trail: Trail, snr: np.ndarray | None = None, step: float = 32.0) -> np.ndarray:
    """The trail's Gaussian profile in noise units (for subtraction), float32.

    With ``snr`` (the frame in noise units), the amplitude follows the trail:
    the median of the pixels near the line in 4 px bins along it, then a
    running median over ``step`` px (a star on the trail barely moves it, and
    the trail's end stays a step: the fitted extent ends on a 32 px window and
    reaches past the trail's end, and a piece's median half over the sky left
    the trail's last stretch unsubtracted, released by rule 1 as a faint
    source). A real trail's brightness varies (tumbling, the sky under it); a
    constant amplitude leaves its brighter stretches as compact residuals that
    pass for sources."""
    model = np.zeros(shape, np.float32)
    # 8 sigma: beyond it the profile is below 1e-14 of its peak; a bright trail's measured wings
    # (:attr:`Trail.wing_profile`) beyond 2 sigma where above it: a S/N 1000 star 11 px from a
    # 400-sigma trail sat on the wings a Gaussian left, and was taken for a piece of the trail.
    wing = trail.wing_profile
    reach = 8.0 * trail.sigma if wing is None else max(8.0 * trail.sigma, WING_STEP * (len(wing) - 1))
    ys, xs, dist, along = _band(shape, trail.theta, trail.rho, reach)
    keep = (along >= trail.t0) & (along <= trail.t1)
    ys, xs, dist, along = ys[keep], xs[keep], dist[keep], along[keep]
    profile = np.exp(-0.5 * (dist / trail.sigma) ** 2)
    if wing is not None:
        r = WING_STEP * np.arange(len(wing))
        beyond = np.where(np.abs(dist) > 2.0 * trail.sigma, np.interp(np.abs(dist), r, wing, right=0.0), 0.0)
        profile = np.maximum(profile, beyond)
    amp = np.full(len(ys), trail.amplitude, np.float64)
    if snr is not None and len(ys):
        from numpy.lib.stride_tricks import sliding_window_view

        piece = ((along - trail.t0) // MODEL_BIN).astype(np.int64)
        n = int(piece.max()) + 1
        core = profile > 0.6  # within ~1 sigma of the line
        est = _bin_medians(snr[ys[core], xs[core]] / profile[core], piece[core], n)
        est = np.where(np.bincount(piece[core], minlength=n) >= 3, est, np.nan)
        half = int(step // MODEL_BIN) // 2
        win = sliding_window_view(np.pad(est, half, constant_values=np.nan), 2 * half + 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a stretch without data: the fitted amplitude
            smooth = np.nanmedian(win, axis=1)
        amp = np.where(np.isfinite(smooth), np.clip(smooth, 0.0, None), trail.amplitude)[piece]
    model[ys, xs] = amp * profile
    return model


def _hough(z: np.ndarray, valid: np.ndarray, n_theta: int, only: np.ndarray | None = None):
    """Signal-weighted Hough accumulator of the binned S/N image ``z`` (unit
    noise): (significance (n_theta, n_rho), thetas, rho0). ``only``: bool per
    angle, the angles summed (the others' significance is 0)."""
    h, w = z.shape
    ys, xs = np.nonzero(valid & (z > 1.0))
    wt = np.minimum(z[ys, xs], 5.0)  # a few bright leftovers must not make a line
    thetas = np.linspace(0, np.pi, n_theta, endpoint=False)
    diag = int(np.ceil(np.hypot(h, w)))
    n_rho = 2 * diag + 1
    acc = np.zeros((n_theta, n_rho))
    cos, sin = np.cos(thetas), np.sin(thetas)
    angles = range(n_theta) if only is None else np.flatnonzero(only)
    for k in angles:
        r = np.round(xs * cos[k] + ys * sin[k]).astype(np.int64) + diag
        acc[k] = np.bincount(r, weights=wt, minlength=n_rho)
    # Chord length of each (theta, rho) line inside the image, times the valid fraction.
    rho = np.arange(n_rho) - diag
    length = _chord(w, h, cos[:, None], sin[:, None], rho[None, :]) * valid.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        sig = (acc - _E_W * length) / np.sqrt(_E_W2 * length)
    sig[length < 20] = 0.0
    if only is not None:
        sig[~only] = 0.0
    sig = np.nan_to_num(sig)
    # In units of the accumulator's own scatter at each angle (at least its
    # white-noise unit): the residual light between the masked stars of a
    # crowded field or a cluster core is correlated over many pixels, and its
    # lines spread far wider than white noise does; a trail is one outlier.
    lines = length >= 20
    spread = np.ones(n_theta)
    for k in angles:
        row = sig[k, lines[k]]
        if row.size > 20:
            spread[k] = max(1.0, 1.4826 * float(np.median(np.abs(row - np.median(row)))))
    return sig / spread[:, None], thetas, diag


def _hough_local(z: np.ndarray, valid: np.ndarray, n_theta: int, seg: int, n_seg: int = 3):
    """The Hough transform of :func:`_hough` summed over stretches of ``n_seg * seg`` binned px
    along each line (every ``seg`` px) instead of whole chords: a trail a tenth of the frame long
    is a tenth of its chord, and its sum over the whole chord drowns in the sky's (a 100 px trail
    of peak S/N 1.5-3 on a 1024 px frame made no peak). (significance (n_theta, n_rho): the best
    stretch of each line, in units of the stretches' own scatter at each angle; along (n_theta,
    n_rho): that stretch's middle, binned px from the line's foot; thetas; rho0)."""
    h, w = z.shape
    ys, xs = np.nonzero(valid & (z > 1.0))
    wt = np.minimum(z[ys, xs], 5.0)
    thetas = np.linspace(0, np.pi, n_theta, endpoint=False)
    diag = int(np.ceil(np.hypot(h, w)))
    n_rho = 2 * diag + 1
    fill = valid.mean()
    best = np.zeros((n_theta, n_rho))
    where = np.zeros((n_theta, n_rho))
    if len(ys) == 0:
        return best, where, thetas, diag
    xs, ys = xs.astype(np.float64), ys.astype(np.float64)
    for k, th in enumerate(thetas):
        c, s = np.cos(th), np.sin(th)
        r = np.round(xs * c + ys * s).astype(np.int64) + diag
        t = np.floor((-xs * s + ys * c + diag) / seg).astype(np.int64)
        # Only the lines and stretches that hold data: rows r0..r1; bins t0..t1, padded so that
        # stretches that only begin or end on the data count.
        r0, t0 = r.min(), t.min() - (n_seg - 1)
        nr, nb = r.max() - r0 + 1, t.max() + n_seg - t0
        acc = np.bincount((r - r0) * nb + (t - t0), weights=wt, minlength=nr * nb).reshape(nr, nb)
        csum = np.zeros((nr, nb + 1))
        np.cumsum(acc, axis=1, out=csum[:, 1:])
        sums = csum[:, n_seg:] - csum[:, :-n_seg]  # (lines, stretches)
        starts = (t0 + np.arange(sums.shape[1])) * seg - diag  # each stretch's first px along
        lo, hi = _chord_ends(w, h, c, s, np.arange(r0, r0 + nr) - diag)
        length = np.minimum(hi[:, None], starts[None, :] + n_seg * seg)
        length -= np.maximum(lo[:, None], starts[None, :])
        length *= fill
        lines = length >= 20
        sig = np.zeros(sums.shape)
        sig[lines] = (sums[lines] - _E_W * length[lines]) / np.sqrt(_E_W2 * length[lines])
        row = sig[lines]
        if row.size > 20:
            row = row[::max(1, row.size // 4096)]  # the scatter from a few thousand stretches
            sig /= max(1.0, 1.4826 * float(np.median(np.abs(row - np.median(row)))))
        jj = np.argmax(sig, axis=1)
        best[k, r0:r0 + nr] = sig[np.arange(nr), jj]
        where[k, r0:r0 + nr] = starts[jj] + n_seg * seg / 2
    return best, where, thetas, diag


def _chord_ends(w, h, c, s, rho):
    """(lo, hi): where the line x c + y s = rho enters and leaves [0, w) x [0, h), along
    (-s, c) from its foot (hi < lo where it misses)."""
    eps = 1e-9
    px, py = rho * c, rho * s
    dx, dy = -s, c
    with np.errstate(divide="ignore", invalid="ignore"):
        tx0 = np.where(np.abs(dx) > eps, (0 - px) / dx, -np.inf)
        tx1 = np.where(np.abs(dx) > eps, (w - 1 - px) / dx, np.inf)
        ty0 = np.where(np.abs(dy) > eps, (0 - py) / dy, -np.inf)
        ty1 = np.where(np.abs(dy) > eps, (h - 1 - py) / dy, np.inf)
    lo = np.maximum(np.minimum(tx0, tx1), np.minimum(ty0, ty1))
    hi = np.minimum(np.maximum(tx0, tx1), np.maximum(ty0, ty1))
    inside = ((np.abs(dx) > eps) | ((px >= 0) & (px <= w - 1))) & ((np.abs(dy) > eps) | ((py >= 0) & (py <= h - 1)))
    return np.where(inside, lo, 0.0), np.where(inside, hi, -1.0)


def _chord(w, h, c, s, rho):
    """Length of the line x c + y s = rho inside [0, w) x [0, h)."""
    lo, hi = _chord_ends(w, h, c, s, rho)
    return np.maximum(hi - lo, 0.0)


def _peaks(sig, thetas, diag, bin_, nsigma, max_lines=12):
    """(theta, rho) in full-resolution pixels of the accumulator's maxima."""
    out = []
    s = sig.copy()
    for _ in range(max_lines):
        k = np.unravel_index(np.argmax(s), s.shape)
        if s[k] < nsigma:
            break
        theta = thetas[k[0]]
        rho_b = k[1] - diag
        # A binned pixel (i, j) is full-resolution (b i + (b-1)/2, ...).
        rho = bin_ * rho_b + (bin_ - 1) / 2 * (np.cos(theta) + np.sin(theta))
        out.append((float(theta), float(rho), float(s[k])))
        # Suppress the neighbourhood (the same trail at nearby angles and
        # offsets); theta wraps at pi with rho -> -rho.
        n_t, n_r = s.shape
        for dt in range(-6, 7):
            i = k[0] + dt
            j = k[1]
            if i < 0 or i >= n_t:
                i, j = i % n_t, 2 * diag - k[1]
            s[i, max(j - 8, 0):j + 9] = 0
    return out


def _band(shape, theta, rho, band):
    """Pixels within ``band`` of a line, without scanning the whole frame:
    (ys, xs, dist, along). Whole pixels from the one below the line's crossing:
    rounding each ``crossing + k`` to even took every other column of a line at
    a half-pixel offset along the grid, each twice."""
    h, w = shape
    c, s = np.cos(theta), np.sin(theta)
    if abs(s) >= abs(c):  # more horizontal than vertical: a band of rows per column
        xs = np.arange(w)
        yc = (rho - xs * c) / s
        half = np.ceil(band / abs(s) + 1)
        ys = (np.floor(yc)[:, None] + np.arange(-half, half + 2)[None, :]).astype(int)
        xs = np.broadcast_to(xs[:, None], ys.shape)
    else:
        ys = np.arange(h)
        xc = (rho - ys * s) / c
        half = np.ceil(band / abs(c) + 1)
        xs = (np.floor(xc)[:, None] + np.arange(-half, half + 2)[None, :]).astype(int)
        ys = np.broadcast_to(ys[:, None], xs.shape)
    ys, xs = ys.ravel(), xs.ravel()
    keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    ys, xs = ys[keep], xs[keep]
    dist = xs * c + ys * s - rho
    inside = np.abs(dist) <= band
    ys, xs, dist = ys[inside], xs[inside], dist[inside]
    return ys, xs, dist, -xs * s + ys * c


def _refine_line(z, valid, theta, rho, band=30.0, half=2.5, span=None, top=10.0):
    """Straighten a candidate (a 1 deg error is 17 px at the end of a 1000 px
    trail): the angle and offset, turned about the candidate's middle, that
    maximise the matched-filter S/N of a strip ``2 half`` px wide (coordinate ascent).
    ``span``: (t0, t1) along the line, only that stretch (a short trail: turned about
    the chord's middle, far from it, its angle and offset move together). Pixels are
    clipped at ``top`` (stars on the line)."""
    ys, xs, dist, along = _band(z.shape, theta, rho, band)
    ok = valid[ys, xs]
    if span is not None:
        ok &= (along >= span[0]) & (along <= span[1])
    ys, xs, along = ys[ok], xs[ok], along[ok]
    if len(ys) < 100:
        return theta, rho
    v = np.clip(z[ys, xs], -5, top).astype(np.float64)
    t_mid = float(np.median(along))
    xc, yc = rho * np.cos(theta) - t_mid * np.sin(theta), rho * np.sin(theta) + t_mid * np.cos(theta)
    xs, ys = xs - xc, ys - yc

    proj, seen = {}, {}  # the projections at each angle tried, and each (angle, offset)'s score:
    # the ascent moves the offset at a fixed angle, and steps back onto points it has scored

    def score(th, off):
        if (th, off) not in seen:
            if th not in proj:
                proj[th] = xs * np.cos(th) + ys * np.sin(th)
            core = np.abs(proj[th] - off) < half
            n = np.count_nonzero(core)
            seen[th, off] = v[core].sum() / np.sqrt(n) if n > 20 else -np.inf
        return seen[th, off]

    th, off = theta, 0.0
    best = score(th, off)
    for step_th, step_off in ((np.radians(1.0), 4.0), (np.radians(0.25), 1.0), (np.radians(0.06), 0.25)):
        improved = True
        while improved:
            improved = False
            for dth, doff in ((step_th, 0), (-step_th, 0), (0, step_off), (0, -step_off)):
                sc = score(th + dth, off + doff)
                if sc > best:
                    best, th, off, improved = sc, th + dth, off + doff, True
    rho = xc * np.cos(th) + yc * np.sin(th) + off
    if th < 0:
        th, rho = th + np.pi, -rho
    elif th >= np.pi:
        th, rho = th - np.pi, -rho
    return float(th), float(rho)


def _excess_noise(z: np.ndarray, valid: np.ndarray, block: int = EXCESS_BLOCK, reach: int = 8) -> np.ndarray:
    """How much noisier than white the unmasked residual is, on the scale of a
    trail's window, per ``block`` px block: the robust scatter (within ``reach``
    blocks) of the blocks' means in units of their white-noise error, at least 1.
    Star wings and unresolved stars between the masked sources of a crowded
    field or a cluster core are correlated over many pixels: a line through
    their brightest clumps is "significant" by the white-noise error of its
    windows (measured: 10-20 sigma per window on a globular cluster)."""
    h, w = z.shape
    hb, wb = -(-h // block), -(-w // block)
    zz = np.zeros((hb * block, wb * block), np.float32)
    vv = np.zeros((hb * block, wb * block), np.float32)
    zz[:h, :w] = np.where(valid, z, 0.0)
    vv[:h, :w] = valid
    sums = zz.reshape(hb, block, wb, block).sum(axis=(1, 3))
    n = vv.reshape(hb, block, wb, block).sum(axis=(1, 3))
    x = np.where(n >= block * block / 4, sums / np.sqrt(np.maximum(n, 1)), 0.0)  # unit variance if white
    size = 2 * reach + 1
    med = _median_smooth(x, size, step=1, mode="symmetric")  # scipy's "reflect"
    spread = _median_smooth(np.abs(x - med), size, step=1, mode="symmetric") / 0.6745
    return np.maximum(spread, 1.0)


#: Widths [px] of the Gaussian across a candidate line, first tried (then refined).
PROFILE_SIGMAS = (0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 3.6)


def _across_profile(dist, values, band, counts: bool = False):
    """The profile across a line: medians of ``values`` in 0.5 px bins of
    ``dist`` within ``band``: (the mean distance of each bin holding pixels, its
    median); with ``counts``, every bin's centre and median (0 where empty) and
    count. (A line exactly along the pixel grid has all its pixels at whole-pixel
    distances: every other bin is empty, and each pixel a quarter pixel from its
    bin's centre. With the zeros of the empty bins, a FWHM 3 px trail along a
    column was fitted 0.5 px sigma: a bad column.)"""
    edges = np.arange(-band, band + 0.5, 0.5)
    centres = edges[:-1] + 0.25
    bins = np.digitize(dist, edges) - 1
    prof = _bin_medians(values, bins, len(centres))
    inside = (bins >= 0) & (bins < len(centres))
    n = np.bincount(bins[inside], minlength=len(centres))
    if counts:
        return centres, prof, n
    held = n > 0
    mean = np.bincount(bins[inside], weights=dist[inside], minlength=len(centres))[held] / n[held]
    return mean, prof[held]


def _side_levels(dist: np.ndarray, prof: np.ndarray, r: np.ndarray, ways: tuple = (1, -1)) -> list:
    """A profile (``prof`` at offsets ``dist``) at distances ``r`` from its line on each side
    (``ways``: +1 and/or -1), the nearer side's bins; NaN beyond them."""
    levels = []
    for side in (w * dist for w in ways):
        order = np.argsort(side)
        levels.append(np.interp(r, side[order], prof[order], left=np.nan, right=np.nan))
    return levels


def _fit_profile(centres, prof, sigmas, offsets):
    """Least-squares Gaussian (amplitude free, positive) to the profile ``prof``
    at ``centres``, over the grid of ``sigmas`` x ``offsets``: (residual,
    amplitude, offset, sigma) of the best, or None when no amplitude is positive.
    A Gaussian with no points under it (where the profile's bins are empty, its
    pixels left out) fits nothing."""
    g = np.exp(-0.5 * ((centres[None, None, :] - offsets[None, :, None]) / sigmas[:, None, None]) ** 2)
    gg = (g * g).sum(axis=-1)
    held = gg > 0.1  # (a full profile, 0.5 px bins, has gg >= 1.7 for any width tried)
    a = np.where(held, g @ prof, 0.0) / np.where(held, gg, 1.0)
    r = (prof * prof).sum() - a * a * gg  # the residual sum of squares at the best amplitude
    r = np.where(a > 0, r, np.inf)
    i, j = np.unravel_index(np.argmin(r), r.shape)
    if not np.isfinite(r[i, j]):
        return None
    return float(r[i, j]), float(a[i, j]), float(offsets[j]), float(sigmas[i])


def _verify(z, valid, theta, rho, min_length, window_snr, source, band=24.0, excess=None,
            span=None) -> Trail | None:
    """Fit the profile across a candidate line and find its extent along it.
    ``excess``: :func:`_excess_noise` of the frame, by which each window's
    S/N is divided. ``span``: (t0, t1), only that stretch of the line.

    A trail that ends inside the frame is fitted again over its own extent
    (plus a window each side): the profile's medians over the whole chord
    are the sky's where the trail covers less than half of it (a 10-sigma
    trail over a quarter of the frame came out 0.5 sigma and 3.6 px wide)."""
    ys, xs, dist, along = _band(z.shape, theta, rho, band)
    near = valid[ys, xs]
    if span:
        near &= (along >= span[0]) & (along <= span[1])
    if near.sum() < min_length:
        return None
    d, t, v = dist[near], along[near], z[ys[near], xs[near]]
    yn, xn = ys[near], xs[near]
    # Across: medians in 0.5 px bins, then a Gaussian (offset, width, amplitude).
    # (No constant under it: the light beside the line is subtracted per
    # window below; with a constant, the narrow core of a broad line along
    # the grid -- a spectrum's trace -- passed for a trail.)
    centres, prof = _across_profile(d, v, band)
    best = _fit_profile(centres, prof, np.array(PROFILE_SIGMAS), np.arange(-3.0, 3.01, 0.25))
    if best is None:
        return None
    _, amp, off, sigma = best
    # A trail is one line: the profile away from it (beyond 3 widths) must
    # be flat, not the stripes of a fringe pattern.
    away = np.abs(centres - off) > 3 * sigma + 2
    if away.any() and amp < 3.0 * np.std(prof[away]) + 1e-6:
        return None
    rho = rho + off
    core = np.abs(d - off) <= max(1.0, 1.5 * sigma)
    tc, vc = t[core], v[core]
    if len(tc) < min_length:
        return None
    # Along: windows of WINDOW px; S/N of each window's mean above the light
    # beside the line in that window (a trail stands above its surroundings: the
    # residual light of a crowded field or a cluster core, 0.3-0.6 sigma per
    # pixel over whole regions, is no line; none where too little is beside it).
    lo, hi = tc.min(), tc.max()
    nwin = max(int(np.ceil((hi - lo) / WINDOW)), 1)
    k = np.minimum(((tc - lo) / WINDOW).astype(int), nwin - 1)
    n = np.bincount(k, minlength=nwin)
    flank = np.abs(d - off) >= 3 * sigma + 3
    kf = np.clip(((t[flank] - lo) / WINDOW).astype(int), -1, nwin)
    inside_f = (kf >= 0) & (kf < nwin)
    local = _bin_medians(v[flank][inside_f], kf[inside_f], nwin)
    n_f = np.bincount(kf[inside_f], minlength=nwin)
    local = np.where(n_f >= 20, local, 0.0)
    tot = np.bincount(k, weights=vc, minlength=nwin) - n * local
    bright = _spread_along(tc, vc, lo, local, nwin, amp)
    f = None  # each window's excess noise where its core pixels are
    if excess is not None:
        kb = (yn[core] // EXCESS_BLOCK) * excess.shape[1] + xn[core] // EXCESS_BLOCK
        f = np.bincount(k, weights=excess.ravel()[kb], minlength=nwin) / np.maximum(n, 1)
        tot = tot / np.maximum(f, 1.0)
    snr = np.where(n > 3, tot / np.sqrt(np.maximum(n, 1)), np.nan)
    # A window of fewer than MIN_WINDOW_PIXELS (nearly all masked) may bridge a gap but neither
    # end nor make the run: its S/N says little of the trail (a 4-px window of a 3.5-sigma trail at a
    # nebula's masked edge, S/N 0.7, ended a trail's run halfway).
    measured = n >= MIN_WINDOW_PIXELS
    hit = (np.nan_to_num(snr) > window_snr) & measured & bright
    if not hit.any():
        return None
    # The longest run of significant windows, bridging up to 2 windows that
    # are not (a star on the trail) and any number without data (masked:
    # saturated stars, diffuse light). A window with no signal at all (S/N
    # under 1) ends the run: a line through unrelated objects (a galaxy's
    # wings, aligned stars) vanishes and reappears; runs are joined below only
    # where each is a trail's length.
    runs, start, gap = [], None, 0
    for i in range(nwin):
        if hit[i]:
            start = i if start is None else start
            last, gap = i, 0
        elif start is not None and np.isfinite(snr[i]):
            gap += 1
            if gap > 2 or (snr[i] < 1.0 and measured[i]):
                runs.append((start, last))
                start, gap = None, 0
    if start is not None:
        runs.append((start, last))
    # Two runs each a trail's length (a line through two objects is not: their pieces are short)
    # and at most JOIN_GAP apart are one trail.
    joined = [runs[0]]
    for r in runs[1:]:
        long_ = min(r[1] - r[0], joined[-1][1] - joined[-1][0]) + 1 >= min_length / WINDOW
        if long_ and (r[0] - joined[-1][1] - 1) * WINDOW <= JOIN_GAP:
            joined[-1] = (joined[-1][0], r[1])
        else:
            joined.append(r)
    a, b = max(joined, key=lambda r: r[1] - r[0])
    # A run's end may lie in a window nearly all masked (a trail's end under a star): one such
    # window significant on its few pixels extends it, and is no evidence either.
    few = ~measured & (np.nan_to_num(snr) > window_snr)
    a -= bool(a > 0 and few[a - 1])
    b += bool(b < nwin - 1 and few[b + 1])
    inside = snr[a:b + 1][measured[a:b + 1]]
    frac = float(np.mean(inside > window_snr)) if len(inside) else 0.0
    t0, t1 = lo + a * WINDOW, lo + (b + 1) * WINDOW
    # The windows fall where the chord starts, not where the trail does: a trail's end lights part
    # of a window, too little of it to be significant (a 100 px trail spans 3-4 windows and its run
    # was often 3 of them, 96 px: short of 100). Its ends are measured in END_STEP px steps.
    t0 -= _lit_end(tc, vc, local, f, lo, a, -1, amp)
    t1 += _lit_end(tc, vc, local, f, lo, b, +1, amp)
    if t1 - t0 < min_length - END_STEP or frac < 0.5:
        return None
    total = float(np.nansum(tot[a:b + 1]) / np.sqrt(max(n[a:b + 1].sum(), 1)))
    if not span and t1 - t0 < 0.7 * (hi - lo):
        again = _verify(z, valid, theta, rho - off, min_length, window_snr, source, band, excess,
                        span=(t0 - WINDOW, t1 + WINDOW))
        if again is not None:
            return again
    if t1 - t0 < 0.7 * (hi - lo):
        # The profile again over the lit stretch alone: the medians over a stretch twice a short
        # trail's length are half the sky's (a 100 px trail of peak S/N 1.5 came out 0.57 and
        # was dropped as too faint).
        lit = (t >= t0) & (t <= t1)
        fit = _fit_profile(*_across_profile(d[lit] - off, v[lit], band), np.array(PROFILE_SIGMAS),
                           np.arange(-1.0, 1.01, 0.25))
        if fit is not None:
            _, amp, shift, sigma = fit
            rho += shift
    return Trail(theta=float(theta), rho=float(rho), sigma=float(sigma), amplitude=float(amp), t0=float(t0),
                 t1=float(t1), significance=total, source=source)


def _lit_end(tc, vc, local, excess, lo: float, k: int, way: int, amp: float) -> float:
    """How far [px] a run of windows ending with window ``k`` goes on (``way``: -1 before its
    start, +1 past its end): the END_STEP px steps beyond it whose core pixels (along ``tc``,
    values ``vc``) stand END_SNR above the light beside the line (``local``, per window; and
    ``excess``, the windows' excess noise) and LIT_FRACTION of the trail's peak ``amp`` on
    average, while each holds END_MIN_PIXELS, up to one window."""
    nwin = len(local)
    j = k + way if 0 <= k + way < nwin else k  # the window the steps fall in (its flanks, its noise)
    edge = lo + (k if way < 0 else k + 1) * WINDOW
    near = (tc >= edge - WINDOW) & (tc < edge + WINDOW)  # the steps' window: not the whole line per step
    tc, vc = tc[near], vc[near]
    reach = 0.0
    for _ in range(WINDOW // END_STEP):
        a, b = (edge - reach - END_STEP, edge - reach) if way < 0 else (edge + reach, edge + reach + END_STEP)
        sel = (tc >= a) & (tc < b)
        n = int(np.count_nonzero(sel))
        if n < END_MIN_PIXELS:
            break
        above = vc[sel].sum() - n * local[j]
        if above < LIT_FRACTION * amp * n:
            break
        snr = above / np.sqrt(n)
        if excess is not None:
            snr /= max(float(excess[j]), 1.0)
        if snr <= END_SNR:
            break
        reach += END_STEP
    return reach


def _bright_span(z, valid, theta, rho, band: float = 24.0, core: float = 3.0, peak: float = 4.0):
    """The stretch (t0, t1) of a candidate line where its light is, or None.
    Over a chord several times longer than a trail, the medians across the
    line are the sky's (a 100 px, 3-sigma trail on a 1024 px frame failed
    every Hough candidate on its line). Windows of WINDOW px: the mean within
    ``core`` px of the line above the median of the flanks (>= 3 core widths
    off), in noise units; the brightest window must reach ``peak`` sigma,
    and the run around it goes on while windows stay above 1, one window
    more each side."""
    ys, xs, dist, along = _band(z.shape, theta, rho, band)
    ok = valid[ys, xs]
    d, t, v = dist[ok], along[ok], z[ys[ok], xs[ok]]
    if len(t) == 0:
        return None
    lo = t.min()
    k = ((t - lo) / WINDOW).astype(int)
    nwin = int(k.max()) + 1
    inner, flank = np.abs(d) <= core, np.abs(d) >= 3 * core
    n = np.bincount(k[inner], minlength=nwin)
    sky = np.where(np.bincount(k[flank], minlength=nwin) >= 20, _bin_medians(v[flank], k[flank], nwin), 0.0)
    snr = (np.bincount(k[inner], weights=v[inner], minlength=nwin) - n * sky) / np.sqrt(np.maximum(n, 1))
    snr = np.where(n >= MIN_WINDOW_PIXELS, snr, 0.0)
    i = int(np.argmax(snr))
    if snr[i] < peak:
        return None
    a = b = i
    while a > 0 and snr[a - 1] > 1.0:
        a -= 1
    while b < nwin - 1 and snr[b + 1] > 1.0:
        b += 1
    return lo + (a - 1) * WINDOW, lo + (b + 2) * WINDOW


def _final_profile(snr: np.ndarray, valid: np.ndarray, t: Trail, band: float = 24.0, side: int = 0,
                   clipped: bool = False) -> Trail:
    """The found trail's width, offset and amplitude fitted again on the S/N
    image as it is (``snr``; the search's is high-passed by a 40 px median,
    which a line several pixels wide lifts where it runs: its wings came out
    negative and a 7 px wide trail 10% narrow, and the wings the model missed
    were released by rule 1 as faint sources), over its own extent, above the
    median level beyond its wings. ``side`` (+1 or -1: of ``dist``): its core and
    that side alone (a train's trail with its neighbour on the other side).
    ``clipped``: the search's profile had a flat top, its width is only an upper
    bound (widths from PROFILE_SIGMAS' narrowest up are tried)."""
    ys, xs, dist, along = _band(snr.shape, t.theta, t.rho, band)
    keep = valid[ys, xs] & (along >= t.t0) & (along <= t.t1)
    if keep.sum() < 50:
        return t
    d = dist[keep]
    # No upper clip: the profile is of medians, and a trail brighter than the clip came out
    # flat-topped, fitted too broad, and its band zeroed a S/N 27 star 16 px from its line.
    v = np.maximum(np.asarray(snr[ys[keep], xs[keep]], np.float32), -10)
    centres, prof = _across_profile(d, v, band)
    beyond = np.abs(centres) > 3 * t.sigma + 4
    use = np.ones(len(centres), bool) if not side else side * centres >= -2 * t.sigma
    beyond &= use
    if beyond.sum() < 8:
        return t
    prof = prof - np.median(prof[beyond])
    sigmas = t.sigma * np.exp(np.linspace(-0.5, 0.5, 41))
    if clipped:
        sigmas = np.exp(np.linspace(np.log(PROFILE_SIGMAS[0]), np.log(sigmas[-1]), 61))
    best = _fit_profile(centres[use], prof[use], sigmas, np.arange(-1.0, 1.01, 0.1))
    if best is None:
        return t
    _, amp, off, sigma = best
    ways = (1, -1) if not side else (side,)
    wings = _wing_reach(centres - off, prof, sigma, ways=ways)
    shape = None
    if wings is not None and amp >= BRIGHT_TRAIL:
        sides = _side_levels(centres - off, prof, np.arange(0.0, band - 1.0, WING_STEP), ways)
        shape = tuple(float(v) for v in np.clip(np.nan_to_num(np.fmin.reduce(sides)) / amp, 0.0, 1.0))
    return replace(t, rho=t.rho + off, sigma=sigma, amplitude=amp, wings=wings, wing_profile=shape)


def _wing_reach(dist: np.ndarray, prof: np.ndarray, sigma: float, top: float = 16.0,
                ways: tuple = (1, -1)) -> float | None:
    """How far [px, at most ``top``] from the line a trail's measured profile (``prof``, medians
    at offsets ``dist``, the sky's level 0) stays MASK_EDGE_SIGMA above the sky on both sides,
    out from 2.5 of its widths; None where it falls below there already. A bright trail's wings
    are its PSF's, a power law far above the fitted Gaussian: left out of the zero-weight band,
    they were detected in fragments along it (constructed trails of peak S/N 40-400 with Moffat
    wings: 4-5 spurious detections each)."""
    r = np.arange(2.5 * sigma, top + 0.25, 0.5)
    levels = _side_levels(dist, prof, r, ways)
    low = np.fmin.reduce(levels) if all(np.isfinite(lv).any() for lv in levels) else None
    if low is None or not low[0] >= MASK_EDGE_SIGMA:
        return None
    below = np.flatnonzero(~(low >= MASK_EDGE_SIGMA))
    return float(r[below[0] - 1] if len(below) else r[-1])


def _through_masked(snr: np.ndarray, masked: np.ndarray, t: Trail, band: float = 24.0) -> Trail:
    """A found trail carried on beyond its ends over stretches the search left out (``masked``):
    the verification sees no pixels there, so a trail ended where it entered a source's footprint (on
    a crowded frame its last 227 px to the edge lay in one object's, which took in a bright-background
    corner, and stayed unmasked). On the S/N image as it is (``snr``), END_STEP px at a time, while
    the step's core is mostly left out of the search and stands 0.35 of the trail's peak above the
    median beside it (a trail's core averages ~0.7 of its peak). A step brighter than four times
    the peak, or broad (the light just beside the core, within the trail's wings, at least half the
    core's), has a source across the line: up to a window of those is bridged (a star on the trail's
    last stretch stopped it 150 px short of the edge), and one dark step (noise) where two lit ones
    follow; the trail ends at its last lit step, never in a galaxy it runs into."""
    ys, xs, dist, along = _band(snr.shape, t.theta, t.rho, band)
    # clipped above a star's test (four times the peak), never on the trail's own light
    v = np.clip(np.asarray(snr[ys, xs], np.float32), -10, max(50.0, 5.0 * t.amplitude))
    off = masked[ys, xs]
    inner = max(1.0, 1.5 * t.sigma)
    core = np.abs(dist) <= inner
    shoulder = (np.abs(dist) > inner + 1) & (np.abs(dist) < 3 * t.sigma + 3)
    flank = np.abs(dist) >= 3 * t.sigma + 3
    ends = [t.t0, t.t1]
    for way in (-1, 1):
        edge = ends[way > 0]
        reach, lit, dark, crossed, run = 0.0, 0.0, 0, 0, 0
        while dark <= 1 and crossed <= WINDOW // END_STEP:
            a, b = (edge - reach - END_STEP, edge - reach) if way < 0 else (edge + reach, edge + reach + END_STEP)
            step = (along >= a) & (along < b)
            c = step & core
            n = int(np.count_nonzero(c))
            if n < END_MIN_PIXELS or off[c].mean() < 0.5:
                break  # the frame's edge, or a stretch the verification saw
            mid = 0.5 * (a + b)
            beside = flank & (np.abs(along - mid) < WINDOW / 2)
            local = float(np.median(v[beside])) if beside.any() else 0.0
            above = float(v[c].mean()) - local
            sh = step & shoulder
            wide = float(v[sh].mean()) - local if sh.any() else 0.0
            reach += END_STEP
            bright = above >= 0.35 * t.amplitude and above * np.sqrt(n) > END_SNR
            if bright and (above > 4 * t.amplitude or wide >= 0.5 * above):
                crossed += 1  # a source across the line: no evidence either way
            elif bright:
                run, crossed = run + 1, 0
                if dark == 0 or run >= 2:  # past a dark step, two lit ones (a faint star lights one)
                    lit, dark = reach, 0
            else:
                dark, run = dark + 1, 0
        ends[way > 0] = edge + way * lit
    return replace(t, t0=float(ends[0]), t1=float(ends[1])) if ends != [t.t0, t.t1] else t


def _sorted_by_bin(values: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """``values`` sorted by (bin, value). float32 values are packed with their
    bin into one uint64 key (the float's bits made order-preserving) and
    sorted in one pass: exact, and many times faster than a two-key lexsort."""
    if values.dtype != np.float32:
        return values[np.lexsort((values, bins))]
    bits = values.view(np.uint32)
    key = np.where(bits & np.uint32(0x80000000), ~bits, bits | np.uint32(0x80000000)).astype(np.uint64)
    key |= bins.astype(np.uint64) << np.uint64(32)
    low = (np.sort(key) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    return np.where(low & np.uint32(0x80000000), low ^ np.uint32(0x80000000), ~low).view(np.float32)


def _spread_along(tc, vc, lo: float, local, nwin: int, amp: float) -> np.ndarray:
    """Per window (of WINDOW px from ``lo`` along ``tc``; values ``vc``): whether LIT_STEPS of its
    END_STEP px steps that hold END_MIN_PIXELS have a mean LIT_FRACTION of ``amp`` above ``local``."""
    per = WINDOW // END_STEP
    step = np.minimum(((tc - lo) // END_STEP).astype(np.int64), nwin * per - 1)
    count = np.bincount(step, minlength=nwin * per)
    above = np.bincount(step, weights=vc, minlength=nwin * per) - count * np.repeat(local, per)
    measured = count >= END_MIN_PIXELS
    lit = measured & (above >= LIT_FRACTION * amp * count)
    n_measured = measured.reshape(nwin, per).sum(axis=1)
    # all but one where a masked step leaves fewer (a trail's last window, half under a star)
    need = np.where(n_measured < per, np.maximum(n_measured - 1, 1), LIT_STEPS)
    return (n_measured > 0) & (lit.reshape(nwin, per).sum(axis=1) >= need)


def _bin_medians(values: np.ndarray, bins: np.ndarray, n: int) -> np.ndarray:
    """Median of ``values`` in each of bins ``0 .. n-1`` (0 where empty; other bin numbers ignored)."""
    ok = (bins >= 0) & (bins < n)
    values, bins = values[ok], bins[ok]
    v = _sorted_by_bin(values, bins)
    count = np.bincount(bins, minlength=n)
    start = np.concatenate(([0], np.cumsum(count)[:-1]))
    if len(v) == 0:
        return np.zeros(n)
    lo = np.minimum(start + (count - 1) // 2, len(v) - 1)
    hi = np.minimum(start + count // 2, len(v) - 1)
    return np.where(count > 0, 0.5 * (v[lo].astype(np.float64) + v[hi]), 0.0)


def _median_smooth(a: np.ndarray, size: int, step: int = 2, mode: str = "edge") -> np.ndarray:
    """``median_filter(a, size)`` (``mode``: numpy's padding; "edge" is
    scipy's "nearest", "symmetric" its "reflect") evaluated every ``step``
    pixels and repeated: with a step it only removes structure broader than
    ``size`` (4x less work; scipy's filter was a tenth of the maps' time).
    An odd ``size``'s median is one element, which a partition finds (5x
    faster than np.median, 2-3x faster than scipy's rank filter, the same
    values); rows go in chunks of ~16 MB of windows."""
    from numpy.lib.stride_tricks import sliding_window_view

    r, k = size // 2, size * size // 2
    win = sliding_window_view(np.pad(a, r, mode=mode), (size, size))[::step, ::step]
    med = np.empty(win.shape[:2], a.dtype)
    rows = max(1, (16 << 20) // max(1, win.shape[1] * size * size * a.itemsize))
    for i in range(0, win.shape[0], rows):
        chunk = win[i:i + rows].reshape(-1, win.shape[1], size * size)
        if size % 2:
            med[i:i + rows] = np.partition(chunk, k, axis=-1)[..., k]
        else:
            med[i:i + rows] = np.median(chunk, axis=-1)
    if step == 1:
        return med
    return np.repeat(np.repeat(med, step, axis=0), step, axis=1)[:a.shape[0], :a.shape[1]]


#: The line opening that finds trails inside sources' footprints: 3x3 px bin means, segments of
#: 9 bins (27 px: longer than any star's core above the sky), 2 sigma above its local median.
RIDGE_BIN, RIDGE_LINE, RIDGE_SIGMA = 3, 9, 2.0


def _line_footprint(n: int, theta: float) -> np.ndarray:
    """A one-pixel line of ``n`` pixels at ``theta`` (from +x), centred in an n x n footprint."""
    r = n // 2
    t = np.linspace(-r, r, 4 * n)
    fp = np.zeros((n, n), bool)
    fp[np.round(t * np.sin(theta)).astype(int) + r, np.round(t * np.cos(theta)).astype(int) + r] = True
    return fp


def _component_axes(lab: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """RMS extent along the major and minor axes of each labelled component, index 0..n."""
    return component_shapes(lab, n)[2:4]


def line_components(mask: np.ndarray, min_length: float = 30.0, ratio: float = 4.0) -> np.ndarray:
    """The connected components (8-connected) of ``mask`` that are lines: at
    least ``min_length`` px long and ``ratio`` times longer than wide."""
    lab, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if not n:
        return np.zeros(mask.shape, bool)
    major, minor = _component_axes(lab, n)
    keep = (major >= min_length / np.sqrt(12)) & (major >= ratio * minor)
    keep[0] = False
    return keep[lab]


#: Pieces of one line: elongated calls at least PIECE_LENGTH px long and PIECE_RATIO times longer
#: than wide, their centres off each other's axis by at most PIECE_OFFSET px + PIECE_SLOPE x their
#: distance, less than twice the longer one's length apart; the line is lit (pieces, or light of
#: GAP_SIGMA, median over 5 px) over PIECE_SPAN px at least.
PIECE_LENGTH, PIECE_OFFSET, PIECE_SLOPE, PIECE_SPAN, GAP_SIGMA = 8.0, 2.0, 0.08, 60.0, 2.0
PIECE_RATIO = 2.5


def collinear_pieces(mask: np.ndarray, snr: np.ndarray) -> np.ndarray:
    """Lines drawn through groups of ``mask``'s elongated components that lie
    on one line with light between them (bool like ``mask``: each group's
    1-px segment where it is lit).

    A short narrow trail (FWHM about the PSF's, bright) is called a cosmic
    ray by the network in pieces (second generator: 100 px trails of FWHM
    2 px at peak S/N 5-10, 23-55% of their pixels called CR, none TRL); as
    cosmic rays those pieces are hidden from the trail search. Two cosmic
    rays that happen to line up have sky between them, a trail has its own
    light: the line is where it is lit (pieces, or ``snr``'s median over
    5 px along it at GAP_SIGMA or more), beyond the pieces too."""
    out = np.zeros(mask.shape, bool)
    lab, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n < 2:
        return out
    cy, cx, major, minor, theta = component_shapes(lab, n)
    length = major * np.sqrt(12)
    k = np.flatnonzero((length >= PIECE_LENGTH) & (major >= PIECE_RATIO * minor))
    k = k[k > 0]
    if len(k) < 2:
        return out
    pts = np.c_[cx[k], cy[k]]
    pairs = cKDTree(pts).query_pairs(r=3.0 * float(length[k].max()) + 10.0, output_type="ndarray")
    if not len(pairs):
        return out
    i, j = pairs[:, 0], pairs[:, 1]
    v = pts[j] - pts[i]
    dist = np.hypot(v[:, 0], v[:, 1])
    ui = np.c_[np.cos(theta[k[i]]), np.sin(theta[k[i]])]
    uj = np.c_[np.cos(theta[k[j]]), np.sin(theta[k[j]])]
    off_i = np.abs(v[:, 0] * ui[:, 1] - v[:, 1] * ui[:, 0])  # j's centre off i's axis
    off_j = np.abs(v[:, 0] * uj[:, 1] - v[:, 1] * uj[:, 0])
    reach = PIECE_OFFSET + PIECE_SLOPE * dist
    gap = dist - 0.5 * (length[k[i]] + length[k[j]])
    ok = (off_i <= reach) & (off_j <= reach) & (gap <= 2.0 * np.maximum(length[k[i]], length[k[j]]) + 10.0)
    if not ok.any():
        return out
    m = len(k)
    graph = coo_matrix((np.ones(int(ok.sum())), (i[ok], j[ok])), shape=(m, m))
    n_groups, group = connected_components(graph, directed=False)
    size = np.bincount(group, minlength=n_groups)
    h, w = mask.shape
    boxes = ndimage.find_objects(lab)
    for g in np.flatnonzero(size >= 2):
        members = k[group == g]
        y0 = max(min(boxes[c - 1][0].start for c in members) - 2, 0)
        y1 = min(max(boxes[c - 1][0].stop for c in members) + 2, h)
        x0 = max(min(boxes[c - 1][1].start for c in members) - 2, 0)
        x1 = min(max(boxes[c - 1][1].stop for c in members) + 2, w)
        piece = np.isin(lab[y0:y1, x0:x1], members)
        ys, xs = np.nonzero(piece)
        pts_g = np.c_[xs + x0, ys + y0].astype(float)
        mean = pts_g.mean(axis=0)
        u = np.linalg.eigh(np.cov((pts_g - mean).T))[1][:, 1]
        t = (pts_g - mean) @ u
        # The line through them, on beyond them both ways (a trail's stretches the network did
        # not call at all)
        (xa, ya), (xb, yb) = np.round(mean + (t.min() - PIECE_SPAN) * u), np.round(mean + (t.max() + PIECE_SPAN) * u)
        steps = np.linspace(0.0, 1.0, int(max(abs(xb - xa), abs(yb - ya))) + 1)  # one pixel a step
        rr = np.round(ya + steps * (yb - ya)).astype(int)
        cc = np.round(xa + steps * (xb - xa)).astype(int)
        inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        rr, cc = rr[inside], cc[inside]
        # Along the line: lit where a piece is or the light (median over 5 px) reaches GAP_SIGMA;
        # the lit run (bridging 3 px) holding most of the pieces is the line if it joins two of them
        # over PIECE_SPAN px.
        which = lab[rr, cc]
        on_piece = np.isin(which, members)
        glow = ndimage.median_filter(np.nan_to_num(np.asarray(snr[rr, cc], np.float64)), size=5, mode="nearest")
        seen = on_piece | (glow >= GAP_SIGMA)
        lit = seen | ndimage.binary_closing(seen, structure=np.ones(4, bool))  # (the closing erodes ends)
        runs, n_runs = ndimage.label(lit)
        if not n_runs:
            continue
        best = 1 + int(np.argmax(np.bincount(runs[on_piece], minlength=n_runs + 1)[1:]))  # the pieces' run
        sel = runs == best
        if sel.sum() < PIECE_SPAN or len(np.unique(which[sel & on_piece])) < 2:
            continue
        out[rr[sel], cc[sel]] = True
    return out


def line_ridges(snr: np.ndarray, segmentation: np.ndarray, peaks: np.ndarray, fwhm: float,
                n_angles: int = 12) -> np.ndarray:
    """Pixels of a line longer than any source (bool like ``snr``).

    A bright trail through a crowded field or a cluster is deblended into
    pieces, each a compact object of its own; masked as sources they hid it
    from the search (an 11-sigma trail across m13: 1% of it found). Where a
    segment of ``RIDGE_LINE`` bins fits above ``RIDGE_SIGMA`` over the local
    median (the largest grey opening by segments at ``n_angles`` angles),
    in components at least 48 px long, four times longer than wide and
    spread over more than one object (an edge-on galaxy's ridge lies in its
    own footprint), less the pixels within 1 FWHM (taxicab) of the objects'
    ``peaks`` ((y, x) pairs: stars on the line stay masked)."""
    h, w = snr.shape
    b = RIDGE_BIN
    hb, wb = h // b, w // b
    if min(hb, wb) < RIDGE_LINE:
        return np.zeros((h, w), bool)
    zb = np.asarray(snr[:hb * b, :wb * b], np.float32).reshape(hb, b, wb, b).mean(axis=(1, 3))
    top = np.full(zb.shape, -np.inf, np.float32)
    for theta in np.arange(n_angles) * np.pi / n_angles:
        np.maximum(top, ndimage.grey_opening(zb, footprint=_line_footprint(RIDGE_LINE, theta), mode="nearest"),
                   out=top)
    ridge = top - _median_smooth(top, 2 * (30 // (2 * b)) + 1) > RIDGE_SIGMA  # median over ~30 px
    lab, n = ndimage.label(ridge, structure=np.ones((3, 3), bool))
    if not n:
        return np.zeros((h, w), bool)
    major, minor = _component_axes(lab, n)
    keep = (major * b >= 48 / np.sqrt(12)) & (major >= 4 * minor)  # a uniform line of length l: l / sqrt(12)
    keep[0] = False
    # The kept components at full resolution (their labels: a block repeat keeps them apart).
    full = np.zeros((h, w), np.int32)
    full[:hb * b, :wb * b] = np.repeat(np.repeat(np.where(keep[lab], lab, 0), b, axis=0), b, axis=1)
    out = full > 0
    for i, sl in enumerate(ndimage.find_objects(full), 1):
        if sl is None:
            continue
        under = segmentation[sl][full[sl] == i]
        _, cnt = np.unique(under[under > 0], return_counts=True)
        if len(cnt) and cnt.max() > 0.6 * under.size:  # mostly one object's: its own shape
            out[sl][full[sl] == i] = False
    if len(peaks):
        core = np.zeros((h, w), bool)
        core[np.clip(peaks[:, 0], 0, h - 1), np.clip(peaks[:, 1], 0, w - 1)] = True
        out &= ~dilate(core, max(1, int(round(fwhm))))
    return out


def _is_column(trail: Trail, z: np.ndarray, valid: np.ndarray, psf_sigma: float | None = None) -> bool:
    """A one-pixel line along a column or a row: the column search's business.
    Fitted so (within 1 deg of the grid, sigma under 0.8 px), or within 6
    deg with its light, summed along the grid over its pixels, nearly all
    (80%) in one column or row (the fit tilts and widens a bad column: a
    vertical 1-px column fitted 0.75 deg off, sigma 1.0 px; a 200 px line
    1.75 deg across a 3-sigma hot column drew 80% of its light from it). A short line
    drifting across the grid by less than its half width over its length is
    along it, whatever its angle (a 96 px stretch of a hot column fitted 1.25
    deg off, sigma 0.3 px; one 1.75 deg across a column, sigma 1.0). A
    trail, even one along the grid, spreads over its PSF's width: one as narrow as a
    column, in good seeing (``psf_sigma``, the frame's), is judged by its light's share.
    (A FWHM 1.6 px trail of S/N 8 along a column was left to the column search, which
    measures a column against those two and three away, where the trail's light was,
    and found nothing.)"""
    off = trail.off_grid
    # (a short line drifting across the grid by less than its half width is as good as on it)
    along_grid = trail.length * np.sin(np.radians(off)) <= trail.half_width
    like_psf = psf_sigma is not None and trail.sigma >= 0.75 * psf_sigma
    if (off < 1.0 or along_grid) and trail.sigma < 0.8 and not like_psf:
        return True
    if off >= 6.0 and not along_grid:
        return False
    box = _band_box(trail, z, valid)
    if box is None:
        return False
    m, z, sums, axis, _ = box
    if sums.sum() > 0 and sums.max() >= 0.8 * sums.sum():
        return True
    if off >= 1.5 and not along_grid:
        return False
    # A faint broad line fitted beside a bright column it only grazes (its light summed with the
    # sky's over the whole band): a one-pixel column, at least 3 sigma, three times the line's
    # peak and three times the columns on either side along its rows in the band, is the line (a
    # second generator's 15-sigma hot column was fitted 4.6 px off it, 0.5 deg tilted, 0.7
    # sigma, and 3000 pixels beside it zeroed). A spike or a trail along the grid spreads over
    # its PSF's width.
    n = m.sum(axis=axis)
    line = np.flatnonzero(n >= 0.5 * n.max())
    if not len(line):
        return False
    k = int(line[np.argmax(sums[line] / n[line])])
    lane = m[:, k] if axis == 0 else m[k, :]
    zz = z if axis == 0 else z.T

    def level(j):
        return float(np.median(zz[lane, j])) if 0 <= j < zz.shape[1] else 0.0

    top = level(k)
    return top >= max(3.0, 3.0 * trail.amplitude, 3.0 * level(k - 1), 3.0 * level(k + 1))


def _band_box(trail: Trail, z: np.ndarray, valid: np.ndarray):
    """A line's band (its half width, its extent) over the band's box, a pixel wider each side (the
    columns beside the brightest one): (valid band pixels, ``z`` over the box, the light summed
    along the grid per column -- or row, ``axis`` 1 -- clipped at 0, axis, the box's (y0, x0)),
    or None where the band holds no valid pixel."""
    ys, xs, _ = _segment(z.shape, trail.theta, trail.rho, trail.half_width, trail.t0, trail.t1)
    if not len(ys):
        return None
    y0, y1 = max(int(ys.min()) - 1, 0), min(int(ys.max()) + 2, z.shape[0])
    x0, x1 = max(int(xs.min()) - 1, 0), min(int(xs.max()) + 2, z.shape[1])
    m = np.zeros((y1 - y0, x1 - x0), bool)
    m[ys - y0, xs - x0] = True
    m &= valid[y0:y1, x0:x1]
    if not m.any():
        return None
    zc = z[y0:y1, x0:x1]
    axis = 0 if abs(np.cos(trail.theta)) > abs(np.sin(trail.theta)) else 1  # normal along x: sum rows per column
    sums = np.clip(np.where(m, zc, 0.0).sum(axis=axis), 0.0, None)
    return m, zc, sums, axis, (y0, x0)


def _without_column(valid: np.ndarray, z: np.ndarray, t: Trail) -> np.ndarray:
    """``valid`` without the column (or row) that a line judged a column (:func:`_is_column`)
    draws its light from, and the one on either side, over the line's extent: the grid line
    holding most of the light in its band (the fit tilts a column by a degree or more)."""
    box = _band_box(t, z, valid)
    if box is None:
        return valid
    m, _, sums, axis, (y0, x0) = box
    k = int(np.argmax(sums))
    along = np.flatnonzero(m.any(axis=1 - axis))
    out = valid.copy()
    if axis == 0:
        lo, hi, k = y0 + along[0], y0 + along[-1] + 1, x0 + k
        out[lo:hi, max(k - 1, 0):k + 2] = False
    else:
        lo, hi, k = x0 + along[0], x0 + along[-1] + 1, y0 + k
        out[max(k - 1, 0):k + 2, lo:hi] = False
    return out


def _points(t: Trail, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(along, x, y) of ``n`` points evenly spread over a trail's stretch."""
    ts = np.linspace(t.t0, t.t1, n)
    return ts, t.rho * np.cos(t.theta) - ts * np.sin(t.theta), t.rho * np.sin(t.theta) + ts * np.cos(t.theta)


def _same(a: Trail, b: Trail) -> bool:
    """The same trail found twice: nearly parallel, and close at a's middle and all along the
    stretch of a beside b (two trails crossing at 3 deg are close at a middle near the
    crossing: the fainter one, 900 px long, was dropped as the brighter one found again)."""
    dtheta = axis_angle(a.theta, b.theta)
    if dtheta > np.radians(5.0):
        return False
    _, xs, ys = _points(a, 17)
    dist = np.abs(xs * np.cos(b.theta) + ys * np.sin(b.theta) - b.rho)
    along = -xs * np.sin(b.theta) + ys * np.cos(b.theta)
    beside = (along >= b.t0) & (along <= b.t1)
    beside[8] = True  # the middle, as before: a's rest beyond b's end is judged by _continues
    return bool((dist[beside] < a.half_width + b.half_width + 10).all())


def _continues(a: Trail, b: Trail) -> tuple[float, float] | None:
    """``b`` on ``a``'s line beyond its ends: the stretch (t0, t1) along ``a``
    that covers both when they are at most JOIN_GAP px apart; (nan, nan) when
    ``b`` lies on the line but farther; None when ``b`` is not on ``a``'s line
    or overlaps it (found twice)."""
    dtheta = axis_angle(a.theta, b.theta)
    if dtheta > np.radians(1.5):
        return None
    ends = []
    for tb in (b.t0, b.t1):  # b's ends in a's frame: along and off its line
        x = b.rho * np.cos(b.theta) - tb * np.sin(b.theta)
        y = b.rho * np.sin(b.theta) + tb * np.cos(b.theta)
        if abs(x * np.cos(a.theta) + y * np.sin(a.theta) - a.rho) > a.half_width + b.half_width:
            return None
        ends.append(-x * np.sin(a.theta) + y * np.cos(a.theta))
    lo, hi = min(ends), max(ends)
    gap = max(lo - a.t1, a.t0 - hi)
    if gap <= 0:
        return None
    return (min(a.t0, lo), max(a.t1, hi)) if gap <= JOIN_GAP else (np.nan, np.nan)


def _same_line(theta_a: float, rho_a: float, theta_b: float, rho_b: float, deg: float = 1.0,
               px: float = 3.0) -> bool:
    """Two straightened candidates on one line (within ``deg`` and ``px``; theta wraps at pi)."""
    d = abs(theta_a - theta_b)
    if d > np.pi / 2:
        d, rho_b = np.pi - d, -rho_b
    return d < np.radians(deg) and abs(rho_a - rho_b) < px


def _plausible(t: Trail, z, valid, network_trl, diffuse, psf_sigma, lines=None, unclipped: bool = False,
               width_only: bool = False) -> bool:
    """A verified line that is a satellite trail: no bad column, no broad line
    along the pixel grid, no faint broad filament nobody else sees. ``lines``:
    (labels, major-axis angle per label) of the network's other line calls,
    which support the line only where they run along it (a broad band of
    spike calls on a trail is no support for a line that crosses it).
    A line bright enough to be clipped in the search is judged broad along the
    grid only with its width fitted on the frame as it is (``unclipped``).
    ``width_only``: a line judged again with its final width, as a column and
    as a faint filament only (a S/N 8 trail 1.8 deg off the rows, its final
    profile 2.4x the PSF's width, was dropped as a sky line)."""
    if _is_column(t, z, valid, psf_sigma):
        return False
    core = None
    if network_trl is not None or (diffuse is not None and diffuse.any()):  # the line's own pixels
        core = trail_mask(z.shape, Trail(t.theta, t.rho, min(t.sigma, 1.0), 0, t.t0, t.t1, 0, ""), margin=0)
    support = 0.0
    if network_trl is not None and core.any():
        on = network_trl[core]
        if lines is not None:  # the network's other line calls: those along this line
            lab, angle = lines
            k = lab[core]
            turn = axis_angle(angle[k], t.theta + np.pi / 2)
            on = on | ((k > 0) & (turn < LINE_SUPPORT_ANGLE))
        support = on.mean()
    # along the grid: it drifts sideways by less than its width (FWHM) over its length. Bleeds,
    # glows and sky lines run exactly along it; a satellite defocused to 1.6x the stars' width,
    # 2 deg off the rows (drifting 2.8 widths over 384 px), was taken for one and left unmasked.
    on_grid = t.length * np.sin(np.radians(t.off_grid)) < 2.355 * t.sigma
    on_grid &= unclipped or t.amplitude < CLIPPED_SHARE * SEARCH_TOP
    on_grid &= not width_only
    # A broad line along the pixel grid: bleeding, halos, amplifier structure. Broad beside the
    # frame's PSF (a trail is at least as wide): a fixed 1.5 px left every trail near the grid
    # unmasked in 4.5 px seeing. Near the grid and drifting across it, not along it: a 10 px wide
    # trail 2 deg off a column crossed 34 px of it over the frame, and was never masked.
    if t.off_grid < 6.0 and on_grid and t.sigma > max(1.5, 1.5 * (psf_sigma or 0.0)) \
            and support < 0.1:
        return False
    if psf_sigma and on_grid and t.sigma > 2.0 * psf_sigma:
        return False  # on the grid and twice the PSF's width: a sky line, bleed or glow, whatever the network says
    if t.sigma >= 3.0 and support < 0.1 and t.significance < BROAD_FAINT and not _even_line(t, z, valid):
        return False  # broad and faint, and the network sees nothing: a filament or a halo's edge
    if diffuse is not None and diffuse.any() and not width_only:
        in_diffuse = diffuse[core].mean() if core.any() else 0.0
        if in_diffuse > 0.5 and support < 0.1 and t.sigma >= 2.5:
            return False
    return True


#: A diffraction spike is a line through a bright source's centre whose light falls away from it (as the
#: inverse square of the distance); a trail that crosses or ends at a star is as bright far from it as
#: near. A line whose core passes within SPIKE_ON px (or a sigma more) of a source SPIKE_HOST times its
#: amplitude or more (SPIKE_PEAK sigma at least) is a spike where the line's level over the light beside
#: it (at the same distance from the source), in the middle third of its stretch from that source, is
#: under SPIKE_FADE of that in its nearest third (as 1/r^2 from 5 px over 25 px thirds: 0.17), and that
#: third's farther half under SPIKE_FADE_NEAR of its nearer half.
#: The source may lie up to SPIKE_END px (and 3 sigma) past the line's ends.
SPIKE_ON, SPIKE_HOST, SPIKE_PEAK, SPIKE_FADE, SPIKE_FADE_NEAR, SPIKE_END = 1.5, 10.0, 30.0, 0.5, 0.8, 20.0


def trail_of_spikes(snr: np.ndarray, t: Trail, valid: np.ndarray) -> bool:
    """Whether the fitted line ``t`` is the spikes of a bright source on it or at its end (see
    :data:`SPIKE_FADE`; ``snr``: the frame in noise units; ``valid``: the pixels the search saw). A
    reflector's spider puts four on every bright star, saturated or not, and the search took each
    pair for a trail (on the second generator's ``spikes`` variant, 6 of 7 lines found on a frame
    with no trail, centred on stars of S/N 900-2100, the stars' flux cut by their zero weight)."""
    ys, xs, dist, along = _band(snr.shape, t.theta, t.rho, 2.5 * t.sigma + 8.0)
    # the source's own footprint is left out of the search: a one-sided spike ends at its edge
    reach = SPIKE_END + 3.0 * t.sigma
    inside = (along >= t.t0 - reach) & (along <= t.t1 + reach)
    v = np.asarray(snr[ys, xs], np.float32)
    on = inside & (np.abs(dist) <= SPIKE_ON + t.sigma) & np.isfinite(v)
    if not on.any():
        return False
    k = np.flatnonzero(on)[np.argmax(v[on])]
    if v[k] < max(SPIKE_PEAK, SPIKE_HOST * t.amplitude):
        return False
    # distances from the source, the line's and the light beside it compared at the same one: its
    # wings (a star on a faint trail) raise the line's pixels more than those a few px off it
    r = np.hypot(along - along[k], dist)
    stretch = valid[ys, xs] & (along >= t.t0) & (along <= t.t1)  # the line's light, as fitted
    core = stretch & (np.abs(dist) <= max(1.0, t.sigma))
    side = stretch & (np.abs(dist) >= 2.5 * t.sigma + 3.0)
    if core.sum() < 40:
        return False
    lo, hi = float(r[core].min()), float(r[core].max())
    third = (hi - lo) / 3.0
    if third < 8.0:
        return False
    level = []
    # the nearest third's halves and the middle third: a fitted stretch reaches past a trail's end
    # (its last window), and the farthest third of a short trail beside a star was half sky; the
    # fade goes on within the nearest third too (a S/N 3 trail's middle third half past its end
    # held 0.58 of its nearest, whose halves are alike)
    for a, b in ((lo, lo + third / 2), (lo + third / 2, lo + third), (lo, lo + third), (lo + third, lo + 2 * third)):
        c, d = core & (r >= a) & (r <= b), side & (r >= a) & (r <= b)
        if c.sum() < 10 or d.sum() < 10:
            return False
        level.append(float(np.median(v[c])) - float(np.median(v[d])))
    first, second, near, middle = level
    return bool(near > 0 and first > 0 and middle < SPIKE_FADE * near and second < SPIKE_FADE_NEAR * first)


#: A broad faint line is a trail on its own evidence where, in EVEN_SEGMENTS stretches of at least
#: WINDOW px along it, the profile's centre (a Gaussian of its fitted width, the light beside it
#: subtracted) stays within EVEN_OFFSET px (or EVEN_OFFSET_WIDTHS of its sigma) of a straight line, and
#: every stretch stands EVEN_SNR above the noise, within a factor EVEN_SHARE of the stretches' median
#: amplitude. A halo's edge curves off any chord (a 100 px chord of a 300 px radius lies 4 px off it at
#: its middle) and a filament's light comes and goes; a satellite is as bright all along.
EVEN_SEGMENTS, EVEN_OFFSET, EVEN_OFFSET_WIDTHS, EVEN_SNR, EVEN_SHARE = (3, 8), 1.0, 0.3, 3.0, 0.6
#: ... judged so up to this significance (a filament of ~65 and a 96 px line across a hot column and
#: a saturated star, of 54, passed as trails when lines up to 50 were judged).
BROAD_FAINT = 100.0


def _even_line(t: Trail, z: np.ndarray, valid: np.ndarray) -> bool:
    """Whether a fitted line is straight and about as bright all along (see :data:`EVEN_SEGMENTS`):
    the network calls broad faint trails nothing (measured on the second generator: FWHM 7-10 px,
    peak S/N 1-3 per pixel, 0% TRL), and only their shape tells them from a nebula's filament."""
    inner = 2.5 * t.sigma + 2.0
    ys, xs, dist, along = _band(z.shape, t.theta, t.rho, inner + 6.0)
    ok = valid[ys, xs] & (along >= t.t0) & (along <= t.t1)
    dist, along, v = dist[ok], along[ok], np.asarray(z[ys[ok], xs[ok]], np.float64)
    m = int(np.clip(t.length // WINDOW, *EVEN_SEGMENTS))
    k = np.minimum(((along - t.t0) / max(t.length, 1.0) * m).astype(int), m - 1)
    flank = np.abs(dist) > inner
    if np.bincount(k[flank], minlength=m).min() < 20 or np.bincount(k[~flank], minlength=m).min() < 20:
        return False  # a stretch nearly all masked: not judged
    level = _bin_medians(v[flank], k[flank], m)
    core = ~flank
    d, kc, vc = dist[core], k[core], v[core] - level[k[core]]
    offsets = np.arange(-2.0, 2.01, 0.25) * max(1.0, t.sigma / 2)
    g = np.exp(-0.5 * ((d[None, :] - offsets[:, None]) / t.sigma) ** 2)  # (offsets, pixels)
    num = np.stack([np.bincount(kc, weights=gi * vc, minlength=m) for gi in g])
    den = np.stack([np.bincount(kc, weights=gi * gi, minlength=m) for gi in g])
    best = np.argmax(np.where(num > 0, num * num / np.maximum(den, 1e-9), -1.0), axis=0)
    cols = np.arange(m)
    amp, snr = num[best, cols] / den[best, cols], num[best, cols] / np.sqrt(den[best, cols])
    centre = offsets[best]
    x = cols - (m - 1) / 2
    resid = centre - np.polyval(np.polyfit(x, centre, 1), x)
    med = float(np.median(amp))
    return bool(med > 0 and np.abs(resid).max() <= max(EVEN_OFFSET, EVEN_OFFSET_WIDTHS * t.sigma)
                and (snr >= EVEN_SNR).all() and (amp >= EVEN_SHARE * med).all() and (amp * EVEN_SHARE <= med).all())


#: A trail's core stands SIDE_SIGMA noise units (of the medians) above each side's strip (SIDE_STRIP
#: px wide) in the raw frame, and above the brighter side by SIDE_SHARE of its height above the darker.
SIDE_SIGMA, SIDE_SHARE, SIDE_STRIP = 3.0, 0.3, 6.0


def trail_on_step(image: np.ndarray, rms: np.ndarray, t: Trail, others: tuple = ()) -> bool:
    """Whether a fitted line is the edge of a step in the sky (two amplifiers' levels, a filter's or
    a shadow's edge), not a trail: in the raw ``image`` (no background subtracted: a smoothed
    background cannot follow a step, and the residual it leaves on the step's bright side is a
    ridge to the search), the median of its core is not above both sides' medians (SIDE_STRIP px
    strips beyond 3 sigma + 3 px), or stands far less above the brighter side than above the
    darker one. A satellite trail stands above both. False where a side has too few pixels.
    The bands of the ``others`` trails are no side (a train's trail 12 px beside a brighter one
    had it in its side strip, and was dropped as a step's edge)."""
    inner = 3.0 * t.sigma + 3.0
    ys, xs, dist, along = _band(image.shape, t.theta, t.rho, inner + SIDE_STRIP)
    on = (along >= t.t0) & (along <= t.t1)
    ys, xs, dist = ys[on], xs[on], dist[on]
    vals = np.asarray(image[ys, xs], np.float64)
    ok = np.isfinite(vals)
    for o in others:
        ok &= np.abs(xs * np.cos(o.theta) + ys * np.sin(o.theta) - o.rho) > o.mask_half_width
    parts = [ok & (np.abs(dist) <= max(1.0, 1.5 * t.sigma)), ok & (dist <= -inner), ok & (dist >= inner)]
    n = [int(m.sum()) for m in parts]
    if min(n) < 20:
        return False
    core, left, right = (float(np.median(vals[m])) for m in parts)
    noise = 1.2533 * float(np.median(rms[ys[parts[0]], xs[parts[0]]])) * np.sqrt(1.0 / n[0] + 1.0 / min(n[1:]))
    low, high = sorted((core - left, core - right))
    return bool(low < max(SIDE_SIGMA * noise, SIDE_SHARE * high))


#: A line is one object's major axis when, in GALAXY_BINS bins along its lit stretch and GALAXY_REACH
#: of its length past each end (within the frame), its core's light peaks away from the ends at
#: GALAXY_PEAK times the median bin or more, fewer than half of the bins lie within a factor
#: GALAXY_FLAT of the median, and on each side of the peak the outer half of the bins holds under
#: GALAXY_FALL of the inner half's light; and it is fitted GALAXY_WIDTH times broader than the PSF
#: or more (a disc's height; a short faint trail in a longer fitted stretch is peaked that way too).
GALAXY_BINS, GALAXY_REACH, GALAXY_PEAK, GALAXY_FLAT, GALAXY_FALL, GALAXY_WIDTH = 12, 0.2, 2.0, 1.5, 0.6, 1.5


def trail_on_galaxy(snr: np.ndarray, t: Trail, psf_sigma: float) -> bool:
    """Whether a fitted line is the major axis of one extended object (an edge-on disc galaxy), not
    a trail: along it (``snr``: the frame in noise units, sources not masked) the median of its core
    per bin rises to one peak and falls away on both sides, as a disc's exponential profile does,
    with no flat stretch (120 px discs of axis ratio 0.06-0.14 were fitted as trails and 50-90% of
    them zeroed). A trail is about as bright all along: a glint or a star crossed is one bin, a
    trail fading into the Earth's shadow fades at one end only, and one that crosses a galaxy is
    lit past it on both sides. Lines on a meteor's rise and fall are left to the network's calls.
    ``psf_sigma``: the frame's PSF sigma [px]."""
    if not t.sigma >= GALAXY_WIDTH * psf_sigma:
        return False
    ys, xs, dist, along = _band(snr.shape, t.theta, t.rho, max(1.0, 1.5 * t.sigma))
    if not len(along):
        return False
    length = t.t1 - t.t0
    lo, hi = max(t.t0 - GALAXY_REACH * length, along.min()), min(t.t1 + GALAXY_REACH * length, along.max())
    k = np.floor((along - lo) / max(hi - lo, 1.0) * GALAXY_BINS).astype(np.int64)
    vals = np.asarray(snr[ys, xs], np.float64)
    ok = (k >= 0) & (k < GALAXY_BINS) & np.isfinite(vals)
    if np.bincount(k[ok], minlength=GALAXY_BINS).min() < 8:
        return False  # a stretch without data (a blank region): not judged
    prof = _bin_medians(vals[ok], k[ok], GALAXY_BINS)
    peak, med = int(np.argmax(prof)), float(np.median(prof))
    if not (2 <= peak <= GALAXY_BINS - 3 and med > 0 and prof[peak] >= GALAXY_PEAK * med):
        return False
    if np.mean(np.abs(np.log(np.clip(prof, 1e-3 * med, None) / med)) < np.log(GALAXY_FLAT)) >= 0.5:
        return False  # flat over half its length: a trail with a bright spot
    for side in (prof[peak - 1::-1], prof[peak + 1:]):
        half = (len(side) + 1) // 2
        inner, outer = float(np.mean(side[:half])), float(np.mean(side[half:]))
        if inner <= 0 or outer >= GALAXY_FALL * inner:
            return False
    return True


def _alongside(o: Trail, theta: float, rho: float, band: float = 30.0) -> bool:
    """The line (theta, rho) runs within 5 deg of trail ``o`` and within ``band`` px plus o's
    half width of it somewhere along o, and is not o itself (within 1.5 deg, and within o's
    half width all along it): o lies in the strip the line is straightened over."""
    dtheta = axis_angle(theta, o.theta)
    if dtheta > np.radians(5.0):
        return False
    _, xs, ys = _points(o, 17)
    dist = np.abs(xs * np.cos(theta) + ys * np.sin(theta) - rho)
    if dtheta <= np.radians(1.5) and (dist <= o.half_width).all():
        return False  # o found again: its own light is the line's
    return bool((dist <= band + o.half_width).any())


def _bands(shape, trails: list[Trail], beside: bool = False) -> np.ndarray:
    """The trails' pixels and wings, 20 px past their ends, bool (H, W): as the search leaves a
    found one out (half width + 8 px), or ``beside``: its zero-weight band + NEIGHBOUR_PAD px (the
    rounds beside found trails)."""
    out = np.zeros(shape, bool)
    for t in trails:
        hw = t.mask_half_width + NEIGHBOUR_PAD if beside else t.half_width + 8
        ys, xs, _ = _segment(shape, t.theta, t.rho, hw, t.t0 - 20, t.t1 + 20)
        out[ys, xs] = True
    return out


def _without(valid: np.ndarray, trails: list[Trail]) -> np.ndarray:
    """``valid`` without the trails' pixels and wings (as the search leaves a found one out)."""
    return valid & ~_bands(valid.shape, trails)


def _where_span(theta: float, where) -> tuple[float, float]:
    """The stretch (t0, t1) along a line at ``theta`` of a candidate's ``where`` ((middle x, y),
    half length), a window more each side."""
    (mx, my), half = where
    tc = -mx * np.sin(theta) + my * np.cos(theta)
    return tc - half - WINDOW, tc + half + WINDOW


def _search(candidates, z, valid, excess, network_trl, diffuse, psf_sigma, lines) -> list[Trail]:
    """Each candidate line straightened and verified; the trails found, the strongest first."""
    # Every candidate straightened first: the Hough peaks around one broad feature (a frame's top
    # rows with a ramp) straighten onto the same line and count once, or they used up the search
    # (twelve peaks on such rows, and a 2.4-sigma trail beside them was never tried).
    seen: list[tuple[float, float, int]] = []
    found = []
    n_hough = 0

    def attempt(theta, rho, source, length, where):
        """The candidate verified over its chord, else where its light is; (trail or None, span,
        theta, rho)."""
        nonlocal valid
        span = None
        t = _verify(z, valid, theta, rho, length, 3.0, source, excess=excess)
        if t is None and where is not None:
            # The network's line, where it drew it: over the whole chord the sky's medians hide
            # a short trail's profile.
            span = _where_span(theta, where)
            t = _verify(z, valid, theta, rho, length, 3.0, source, excess=excess, span=span)
        elif t is None:
            # A Hough line, where its light is: a short trail's profile is lost over a long chord.
            span = _bright_span(z, valid, theta, rho)
            if span is not None:
                t = _verify(z, valid, theta, rho, length, 3.0, source, excess=excess, span=span)
        if t is not None and (span is not None or source == "network-line") and t.amplitude < MIN_SPAN_AMPLITUDE:
            t = None
        if t is not None and t.sigma >= 2.0:
            # A broad trail straightened again with a strip as wide as it: a 5 px strip turns within
            # it (a 10 px wide trail came out 1.3 deg off, its ends' wings released as sources); over
            # its own stretch, its ends within a step (a window more each side turned a 100 px one 1.25 deg).
            th2, r2 = _refine_line(z, valid, theta, rho, half=1.5 * t.sigma, span=(t.t0 - END_STEP, t.t1 + END_STEP))
            t2 = _verify(z, valid, th2, r2, length, 3.0, source, excess=excess, span=span)
            if t2 is not None and t2.significance > t.significance:
                theta, rho, t = th2, r2, t2
        if t is not None and _is_column(t, z, valid, psf_sigma):
            # A bad column's light is no trail's either: lines crossing it at a shallow angle
            # are judged without it (in a crowded bulge a line 3.6 deg across a 17-sigma column
            # segment passed on its light). The column itself, not a band as wide as a trail's:
            # the light beside other lines is judged as before (with one, a spectrum's trace
            # 23 px from a column stood out of its flanks).
            valid = _without_column(valid, z, t)
            t = None
        if t is not None and not _plausible(t, z, valid, network_trl, diffuse, psf_sigma, lines):
            t = None
        return t, span, theta, rho

    for theta, rho, source, length, where in candidates:
        whole = source == "hough" and where is None  # (a Hough line over a stretch: _local_candidates)
        if whole and n_hough >= MAX_LINES:
            continue
        theta0, rho0 = theta, rho
        if source == "hough" and where is not None:  # straightened over its stretch alone
            theta, rho = _refine_line(z, valid, theta, rho, span=_where_span(theta, where))
        else:
            theta, rho = _refine_line(z, valid, theta, rho)
        t = span = None
        # (a shorter minimum length -- the network's candidates -- is a new try on the same line)
        if not any(_same_line(theta, rho, th, r) and n <= length for th, r, n in seen):
            seen.append((theta, rho, length))
            n_hough += whole
            t, span, theta, rho = attempt(theta, rho, source, length, where)
        beside = [f[5] for f in found if _alongside(f[5], theta0, rho0)]
        if beside:
            # Straightened again without the trails verified so far that run in its strip: a
            # brighter one crossing it at a shallow angle pulls it onto itself (a S/N 2 trail
            # crossing a S/N 30 one at 3 deg turned 1.75 deg towards it, and only a piece of it
            # was verified). That line stands where it is a trail far longer than the first.
            th_b, rho_b = _refine_line(z, _without(valid, beside), theta0, rho0)
            if not any(_same_line(th_b, rho_b, th, r) and n <= length for th, r, n in seen):
                seen.append((th_b, rho_b, length))
                n_hough += whole and t is None
                got = attempt(th_b, rho_b, source, length, where)
                # (verified on the light of a trail it was straightened without, it is that one, askew)
                if got[0] is not None and not any(_same(got[0], o) for o in beside) \
                        and (t is None or (got[0].length >= 1.5 * t.length and got[0].length - t.length >= 2 * WINDOW)):
                    t, span, theta, rho = got
        if t is not None:
            found.append((t.significance, theta, rho, source, length, t, span))
            # The rest of its line: a verification keeps one stretch (the longest), so a trail's
            # other dashes farther than JOIN_GAP along it are looked for beyond its ends.
            rests = [(-np.inf, t.t0 - JOIN_GAP), (t.t1 + JOIN_GAP, np.inf)]
            while rests and len(found) < 4 * MAX_LINES:
                rest = rests.pop()
                p = _verify(z, valid, theta, rho, length, 3.0, source, excess=excess, span=rest)
                if p is not None and _plausible(p, z, valid, network_trl, diffuse, psf_sigma, lines):
                    found.append((p.significance, theta, rho, source, length, p, rest))
                    rests += [(rest[0], p.t0 - JOIN_GAP), (p.t1 + JOIN_GAP, rest[1])]
    # The strongest first, each judged again without the pixels of those already found: a line
    # crossing a brighter trail borrows its light where they cross (a 0.55-sigma "trail" in a
    # crowded field, significant only in the windows where it crossed an 8-sigma one).
    trails: list[Trail] = []
    valid = valid.copy()
    for _, theta, rho, source, length, first, span in sorted(found, key=lambda f: -f[0]):
        if trails:  # judged again: pixels are now left out (the strongest stands as first judged)
            if any(_alongside(o, theta, rho) and o.amplitude >= 1.5 * first.amplitude for o in trails):
                # straightened again without it: a brighter trail in the strip it was straightened in
                # pulls its angle (a satellite train: 0.7 deg off, the ends of a S/N 9 trail unmasked)
                theta, rho = _refine_line(z, valid, theta, rho)
            t = _verify(z, valid, theta, rho, length, 3.0, source, excess=excess, span=span)
            if t is None or not _plausible(t, z, valid, network_trl, diffuse, psf_sigma, lines):
                continue
            joins = [_continues(o, t) for o in trails]
            i = next((k for k, j in enumerate(joins) if j is not None and np.isfinite(j[0])), None)
            if i is not None:  # the rest of a trail found already: one trail, bridged over the gap
                o = trails[i]
                trails[i] = t = replace(o, t0=float(joins[i][0]), t1=float(joins[i][1]),
                                        significance=float(np.hypot(o.significance, t.significance)))
            elif any(_same(t, o) and j is None for o, j in zip(trails, joins, strict=True)):
                k = next(k for k, (o, j) in enumerate(zip(trails, joins, strict=True)) if _same(t, o) and j is None)
                o = trails[k]
                if t.length < 1.5 * o.length or t.length - o.length < 2 * WINDOW:
                    continue
                # found before over a stretch of it only (a piece near a brighter trail it crosses,
                # significant over fewer pixels): the whole trail stands for it
                trails[k] = t
            else:
                trails.append(t)
        else:
            t = first
            trails.append(t)
        # Its pixels (and wings) are explained: later, weaker candidates near it are not new trails.
        ys, xs, _ = _segment(z.shape, t.theta, t.rho, t.half_width + 8, t.t0 - 20, t.t1 + 20)
        valid[ys, xs] = False
    return trails


def _apart(t: Trail, known: list[Trail], z: np.ndarray) -> bool:
    """``t``, found beside trails ``known`` already, is a trail of its own: where it runs along one
    of them, it lies beyond that one's zero-weight band and two of its own widths, and the light
    between the two lines (z, medians in 1 px strips over their common stretch) falls somewhere
    under half of ``t``'s peak (a bright trail's wings beyond its band fall steadily away from it:
    no dip between)."""
    for o in known:
        dtheta = axis_angle(t.theta, o.theta)
        if dtheta > NEIGHBOUR_ANGLE / 2:
            continue  # a line across o, not along it: no wing of o
        # t's stretch seen from o's line: where both run side by side
        _, xs, ys = _points(t, 64)
        dist = xs * np.cos(o.theta) + ys * np.sin(o.theta) - o.rho
        along = -xs * np.sin(o.theta) + ys * np.cos(o.theta)
        side = (along >= o.t0 - 20) & (along <= o.t1 + 20)
        if not side.any():
            continue  # beyond o's ends: a dash of its own
        d = float(np.median(dist[side]))
        if abs(d) < o.mask_half_width + NEIGHBOUR_PAD + 2 * t.sigma:
            return False
        lo, hi = float(along[side].min()), float(along[side].max())
        ys_b, xs_b, dist_b, along_b = _band(z.shape, o.theta, o.rho, abs(d))
        between = (along_b >= lo) & (along_b <= hi) & (np.sign(dist_b) == np.sign(d))
        off = np.abs(dist_b[between])
        strip = np.floor(off - o.mask_half_width).astype(np.int64)
        n = int(np.floor(abs(d) - 2 * t.sigma - o.mask_half_width))
        if n < 1:
            return False
        keep = (strip >= 0) & (strip < n)
        count = np.bincount(strip[keep], minlength=n)
        med = _bin_medians(z[ys_b[between][keep], xs_b[between][keep]], strip[keep], n)
        if not (count >= 20).any() or float(med[count >= 20].min()) >= 0.5 * t.amplitude:
            return False
    return True


def _beside(candidate, trails: list[Trail]) -> bool:
    """A candidate line (theta, rho, source, length, where) runs beside one of ``trails``: nearly
    parallel, off its zero-weight band and within NEIGHBOUR_REACH px of its line (at the
    candidate's middle where known, else at the trail's)."""
    theta, rho, _, _, where = candidate
    c, s = np.cos(theta), np.sin(theta)
    for o in trails:
        if axis_angle(theta, o.theta) > NEIGHBOUR_ANGLE:
            continue
        if where is not None:
            (mx, my), _ = where
            d = abs(mx * np.cos(o.theta) + my * np.sin(o.theta) - o.rho)
        else:
            tm = 0.5 * (o.t0 + o.t1)
            xm, ym = o.rho * np.cos(o.theta) - tm * np.sin(o.theta), o.rho * np.sin(o.theta) + tm * np.cos(o.theta)
            d = abs(xm * c + ym * s - rho)
        if o.mask_half_width + NEIGHBOUR_PAD < d <= NEIGHBOUR_REACH:
            return True
    return False


def _neighbours(trails, z, valid, excess, bin_, eb, n_theta, nsigma, min_length, net_candidates,
                judge) -> list[Trail]:
    """The trails beside and parallel to those found (``trails``), in NEIGHBOUR_ROUNDS rounds at
    most, each without the zero-weight bands of every trail found before (widened by
    NEIGHBOUR_PAD px): a satellite train's trails lie 10-40 px apart, and the first round's Hough
    peaks, profiles and flanks take each fainter one for a part or the surroundings of a brighter
    one (constructed train of seven, 22-40 px apart, S/N 3-12: three left unmasked)."""
    network_trl, diffuse, psf_sigma, lines = judge
    h, w = z.shape
    hb, wb = h // bin_, w // bin_
    thetas = np.linspace(0, np.pi, n_theta, endpoint=False)
    out: list[Trail] = []
    new = trails
    for _ in range(NEIGHBOUR_ROUNDS):
        if not new:
            break
        known = trails + out
        excl = _bands(z.shape, known, beside=True)
        valid_r = valid & ~excl
        z_r = np.where(excl, np.float32(0.0), z)
        zb = z_r[:hb * bin_, :wb * bin_].reshape(hb, bin_, wb, bin_).sum(axis=(1, 3)) / bin_
        vb = valid_r[:hb * bin_, :wb * bin_].reshape(hb, bin_, wb, bin_).mean(axis=(1, 3)) > 0.5

        def parallel(theta, ref=new):
            return any(axis_angle(theta, t.theta) <= NEIGHBOUR_ANGLE for t in ref)

        only = np.array([parallel(th) for th in thetas])
        sig, _, diag = _hough(zb / eb, vb, n_theta, only=only)
        cands = [(th, r, "hough", min_length, None) for th, r, _ in _peaks(sig, thetas, diag, bin_, nsigma, MAX_PEAKS)]
        cands += [c for c in net_candidates if parallel(c[0])]
        # Only lines beside a trail found in the last round: farther ones were tried as they are in
        # the first, and the pieces of the found trails themselves are no neighbours.
        cands = [c for c in cands if _beside(c, new)]
        found = _search(cands, z_r, valid_r, excess, network_trl, diffuse, psf_sigma, lines)
        new = []
        for t in found:
            if _apart(t, known + new, z):
                new.append(t)
        out += new
    return out


def _deferred(trails: list[Trail]) -> tuple[list[Trail], list[Trail]]:
    """``trails`` (the strongest first) split into those that stand and those judged only once
    every other trail is found: a line under half as bright as a stronger trail that it passes
    within NEIGHBOUR_REACH px of, at 1-5 deg to it. Such a line across a satellite train gathers
    the light of the train's trails not found yet (a 1.2-sigma, 264 px "trail" at 3 deg across a train of
    S/N 9-39, which then cut the stretch it covered out of a S/N 29 trail's search)."""
    firm, deferred = [], []
    for t in trails:
        _, xs, ys = _points(t, 17)
        for o in firm:
            dtheta = axis_angle(t.theta, o.theta)
            if not (NEIGHBOUR_ANGLE / 2 < dtheta <= np.radians(5.0) and t.amplitude < 0.5 * o.amplitude):
                continue
            dist = np.abs(xs * np.cos(o.theta) + ys * np.sin(o.theta) - o.rho)
            along = -xs * np.sin(o.theta) + ys * np.cos(o.theta)
            if ((dist <= NEIGHBOUR_REACH + o.half_width) & (along >= o.t0) & (along <= o.t1)).any():
                deferred.append(t)
                break
        else:
            firm.append(t)
    return firm, deferred


def _rejudged(trails: list[Trail], later: list[Trail], z, valid, excess, min_length: int, judge,
              all_of: bool = False) -> list[Trail]:
    """The ``trails`` that still stand once ``later`` are known: each that runs into one of
    those is verified again over its own stretch without their bands (and, as in the first
    round, without the stronger ones of ``trails`` kept). A faint broad line across a satellite
    train at a shallow angle gathers the light of the train's trails not found yet; with them
    found, none is left for it. ``all_of``: each is verified again, without every band of
    ``later`` (the deferred lines, :func:`_deferred`)."""
    network_trl, diffuse, psf_sigma, lines = judge
    shape = z.shape
    late = _bands(shape, later, beside=True)
    kept: list[Trail] = []
    for t in trails:
        ys, xs, _ = _segment(shape, t.theta, t.rho, t.half_width + 8, t.t0 - 20, t.t1 + 20)
        if all_of or late[ys, xs].any():
            v = _without(valid & ~late, kept)  # and the stronger ones, as the first round left them out
            length = min_length if t.source == "hough" else max(30, min_length // 3)
            again = _verify(z, v, t.theta, t.rho, length, 3.0, t.source, excess=excess,
                            span=(t.t0 - WINDOW, t.t1 + WINDOW))
            if again is None or not _plausible(again, z, v, network_trl, diffuse, psf_sigma, lines):
                continue
        kept.append(t)
    return kept


def _local_candidates(zb, vb, bin_: int, nsigma: float, min_length: int, known: list) -> list:
    """Candidate lines (as :func:`_network_candidates`' , source "hough") from the peaks of
    :func:`_hough_local` on the binned S/N image ``zb`` (valid ``vb``) that are no line of
    ``known`` (within 2 deg and 8 px), at most MAX_LOCAL: each with the stretch it stands out
    on, where it is verified when its whole chord fails."""
    seg = max(LOCAL_SEGMENT // bin_, 4)
    sig, along, thetas, diag = _hough_local(zb, vb, LOCAL_THETAS, seg)
    out = []
    for theta, rho, _ in _peaks(sig, thetas, diag, bin_, nsigma, MAX_PEAKS):
        if any(_same_line(theta, rho, k[0], k[1], deg=2.0, px=8.0) for k in known + out):
            continue
        i = int(np.argmin(np.abs(thetas - theta)))
        j = int(round((rho - (bin_ - 1) / 2 * (np.cos(theta) + np.sin(theta))) / bin_)) + diag
        # the stretch's middle, full-resolution px along the line (binned px k is b k + (b - 1) / 2)
        tm = bin_ * along[i, j] + (bin_ - 1) / 2 * (np.cos(theta) - np.sin(theta))
        mid = np.array([rho * np.cos(theta) - tm * np.sin(theta), rho * np.sin(theta) + tm * np.cos(theta)])
        out.append((theta, rho, "hough", min_length, (mid, 1.5 * LOCAL_SEGMENT)))
        if len(out) >= MAX_LOCAL:
            break
    return out


def _network_candidates(network_trl, network_lines, min_length: int) -> list:
    """Candidate lines (theta, rho, source, minimum length, (middle, half length)) through the
    elongated components of the network's TRL calls and its other line calls."""
    candidates = []
    for seeds, kind in ((network_trl, "network"), (network_lines, "network-line")):
        if seeds is None or not seeds.any():
            continue
        lab, n = ndimage.label(seeds, structure=np.ones((3, 3)))
        for sl in ndimage.find_objects(lab):
            ys, xs = np.nonzero(lab[sl] > 0)
            if len(ys) < 10:
                continue
            pts = np.c_[xs + sl[1].start, ys + sl[0].start].astype(float)
            mean = pts.mean(axis=0)
            evals, evecs = np.linalg.eigh(np.cov((pts - mean).T))
            if evals[1] < 16 * max(evals[0], 0.25) or np.sqrt(12 * evals[1]) < 30:
                continue  # not elongated, or shorter than 30 px
            dx, dy = evecs[:, 1]  # along the component
            theta = np.arctan2(dx, -dy) % np.pi  # the normal (cos, sin) is perpendicular to (dx, dy)
            rho = mean[0] * np.cos(theta) + mean[1] * np.sin(theta)
            candidates.append((theta, rho, kind, max(30, min_length // 3), (mean, np.sqrt(3 * evals[1]))))
    return candidates


def find_trails(snr: np.ndarray, masked: np.ndarray, network_trl: np.ndarray | None = None,
                min_length: int = 100, nsigma: float = 6.0, diffuse: np.ndarray | None = None,
                psf_sigma: float | None = None, network_lines: np.ndarray | None = None) -> list[Trail]:
    """Trails of an image in noise units.

    Parameters
    ----------
    snr : float (H, W)
        (image - background) / rms.
    masked : bool (H, W)
        Left out: compact sources (grown), saturated stars and their spikes and bleeds.
    network_trl : bool (H, W), optional
        The network's TRL pixels: elongated components seed candidate lines
        (verified like the others, over ``min_length / 3`` px at least).
    network_lines : bool (H, W), optional
        Other calls of the network that support a found line along them as
        its TRL pixels do (the spike calls that draw lines away from
        saturated stars: it calls broad and faint trails spikes); as seeds,
        a line found from them must be at least MIN_SPAN_AMPLITUDE bright.
        A network seed whose whole chord fails is verified again over the
        stretch the network drew (a short trail's profile is lost in the
        sky's medians over a long chord).
    diffuse : bool (H, W), optional
        Diffuse light (nebulae, fringes): its filaments and stripes can pass
        for a broad line, so a broad line (sigma >= 2.5 px) found there by
        its shape alone, with no TRL support from the network, is not taken
        for a trail.
    psf_sigma : float, optional
        The frame's PSF sigma: a line along the pixel grid (drifting sideways
        by less than its width over its length) and more than twice
        as broad is a sky line of a spectrum, a bleed or an amplifier glow,
        not a satellite (whose trail is about as wide as the PSF), even where
        the network calls it TRL (it does, on spectra).
    """
    z = np.where(masked, 0.0, np.clip(np.asarray(snr, np.float32), -10, SEARCH_TOP)).astype(np.float32)
    valid = ~masked
    lines = None
    if network_lines is not None and network_lines.any():
        lab, n = ndimage.label(network_lines, structure=np.ones((3, 3), bool))
        lines = (lab, component_shapes(lab, n)[4])
        network_trl = np.zeros(z.shape, bool) if network_trl is None else network_trl
    h, w = z.shape
    bin_ = 4 if min(h, w) >= 1024 else 2
    hb, wb = h // bin_, w // bin_
    if hb < 2 or wb < 2:
        return []  # a frame a pixel or two wide holds no line to search (and no median to pad)
    zb = z[:hb * bin_, :wb * bin_].reshape(hb, bin_, wb, bin_).sum(axis=(1, 3)) / bin_  # unit noise
    # High-pass: structure broader than ~40 px (nebulae, halos, gradients) is
    # not a trail; a trail (<= 10 px wide) passes the median untouched.
    size = max(3, int(round(40 / bin_)) | 1)
    smooth = _median_smooth(zb, size)
    zb = zb - smooth
    up = np.repeat(np.repeat(smooth / bin_, bin_, axis=0), bin_, axis=1)
    z[:up.shape[0], :up.shape[1]] -= up
    z[masked] = 0.0
    vb = valid[:hb * bin_, :wb * bin_].reshape(hb, bin_, wb, bin_).mean(axis=(1, 3)) > 0.5
    n_theta = 360 if max(hb, wb) <= 600 else 720
    excess = _excess_noise(z, valid)
    # The Hough sums in units of the residual's own local noise: a region of excess noise (a
    # frame's top rows with a ramp, a cluster core) otherwise makes every line through it a peak.
    rep = EXCESS_BLOCK // bin_
    eb = np.repeat(np.repeat(excess, rep, axis=0), rep, axis=1)[:hb, :wb]
    zn = zb / eb
    sig, thetas, diag = _hough(zn, vb, n_theta)
    candidates = [(t, r, "hough", min_length, None) for t, r, _ in _peaks(sig, thetas, diag, bin_, nsigma, MAX_PEAKS)]
    candidates += _local_candidates(zn, vb, bin_, nsigma, min_length, candidates)
    candidates += _network_candidates(network_trl, network_lines, min_length)
    trails = _search(candidates, z, valid, excess, network_trl, diffuse, psf_sigma, lines)
    judge = (network_trl, diffuse, psf_sigma, lines)
    trails, deferred = _deferred(trails)
    later = _neighbours(trails, z, valid, excess, bin_, eb, n_theta, nsigma, min_length,
                        _network_candidates(network_trl, network_lines, min_length), judge)
    if later:
        trails = _rejudged(trails, later, z, valid, excess, min_length, judge) + later
    if deferred:
        trails += _rejudged(deferred, trails, z, valid, excess, min_length, judge, all_of=True)
    # Judged again as a column with its final width: a hot column segment verified over its own
    # stretch was fitted 1.0 px wide on the high-passed grid, 0.61 px on the frame as it is.
    final = []
    for t in trails:
        # a line clipped in the search is judged along the grid with its width on the frame as it is
        # (off the grid its width decides nothing: the band follows its measured wings)
        clipped = t.amplitude >= CLIPPED_SHARE * SEARCH_TOP and t.off_grid < 6.0
        f = _straightened(snr, ~masked, _final_profile(snr, ~masked, t, clipped=clipped))
        # Every line judged again with its final width (_plausible judges the column first): a line
        # fitted narrower in the search came out 6 px wide at S/N 0.9 on a galaxy's light, and stood.
        if _plausible(f, z, ~masked, *judge, unclipped=True, width_only=not clipped):
            final.append(f)
    for t in list(final):  # a second peak across a trail's profile, unless found already
        for c in _companions(snr, ~masked, t):
            if not any(_same_line(c.theta, c.rho, o.theta, o.rho, px=max(3.0, 2 * o.sigma)) for o in final):
                final.append(c)
    return [_through_masked(snr, masked, t) for t in final]


def _companions(snr: np.ndarray, valid: np.ndarray, t: Trail, band: float = 24.0) -> list[Trail]:
    """Parallel trails within ``band`` px of a found one ``t``, over its stretch: a second peak
    of the profile across it (medians of the frame as it is, 0.5 px bins) beyond its core, with a
    dip between of at least half its height, 1 sigma per pixel and 8 times the medians' noise, and
    a width within 1.5x of ``t``'s; fitted on its core and far side, wings included. A satellite
    train's trails 9-10 px apart: the second lay within the first's band widened for the neighbour
    search (wings of 60 sigma reach 9 px) and was never masked; a defocused satellite's trail has
    two such ridges. A bright trail's wings fall steadily: no second peak."""
    ys, xs, dist, along = _band(snr.shape, t.theta, t.rho, band)
    keep = valid[ys, xs] & (along >= t.t0) & (along <= t.t1)
    if keep.sum() < 50:
        return []
    v = np.maximum(np.asarray(snr[ys[keep], xs[keep]], np.float32), -10)
    centres, prof, count = _across_profile(dist[keep], v, band, counts=True)
    noise = 1.2533 / np.sqrt(np.maximum(count, 1))  # a median's, in noise units
    ok = np.isfinite(prof) & (count >= 20)
    prof = np.where(ok, prof, -np.inf)
    win = max(4, int(round(2 * t.sigma)))  # bins (0.5 px): a local peak within +-sigma
    peak_here = prof >= ndimage.maximum_filter(prof, size=2 * win + 1, mode="nearest")
    out = []
    for sign in (-1, 1):
        side = (sign * centres >= 2.5 * t.sigma + 2) & ok & peak_here
        best = None
        for j in np.flatnonzero(side):
            between = ok & (sign * centres >= t.sigma) & (sign * centres < sign * centres[j])
            if not between.any():
                continue
            dip = float(prof[between].min())
            rise = float(prof[j]) - dip
            tall = rise >= max(1.0, 0.5 * float(prof[j]), 8 * float(noise[j]))
            if tall and (best is None or prof[j] > prof[best[0]]):
                best = (j, dip)
        if best is None:
            continue
        j, dip = best
        near = ok & (np.abs(centres - centres[j]) <= 2.5 * t.sigma)
        fit = _fit_profile(centres[near] - centres[j], prof[near] - dip, t.sigma * np.exp(np.linspace(-0.7, 0.7, 29)),
                           np.arange(-1.0, 1.01, 0.1))
        if fit is None:
            continue
        _, amp, off, sigma = fit
        if not 1 / 1.5 <= sigma / t.sigma <= 1.5:
            continue  # a train's satellites are alike; a broad rise beside a ridge is the sky's (a step's plateau)
        c = replace(t, rho=t.rho + float(centres[j]) + off, sigma=sigma, amplitude=amp, wings=None,
                    wing_profile=None, significance=t.significance * amp / max(t.amplitude, 1e-6))
        out.append(_final_profile(snr, valid, c, band, side=sign))  # its wings: on its far side
    return out


def _straightened(snr: np.ndarray, valid: np.ndarray, t: Trail) -> Trail:
    """A bright trail (:data:`BRIGHT_TRAIL`) straightened again over its own stretch on the
    frame as it is, clipped at twice its peak, and its profile fitted again. The search clips
    its pixels at 10 sigma, where a bright trail's core is a plateau wider than the strip that
    straightens it: a 900-sigma trail came out 0.6 deg off, its band 3.5 px too wide at its ends."""
    if t.amplitude < BRIGHT_TRAIL:
        return t
    th, rho = _refine_line(snr, valid, t.theta, t.rho, half=max(2.5, 1.5 * t.sigma), span=(t.t0, t.t1),
                           top=2.0 * t.amplitude)
    if (th, rho) == (t.theta, t.rho):
        return t
    # its ends where they were, measured along the new line
    ends = [(t.rho * np.cos(t.theta) - a * np.sin(t.theta), t.rho * np.sin(t.theta) + a * np.cos(t.theta))
            for a in (t.t0, t.t1)]
    t0, t1 = sorted(-x * np.sin(th) + y * np.cos(th) for x, y in ends)
    return _final_profile(snr, valid, replace(t, theta=th, rho=rho, t0=float(t0), t1=float(t1)))
