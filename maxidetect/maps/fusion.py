"""Evidence fusion: the network's masks, checked and completed by what the
frame itself shows, before anything gets zero weight.

In order (each step is its own module; this one decides):

1. the frame's background, noise, sources and PSF (:mod:`.frame`);
2. satellite trails from their shape (:mod:`.trails`), seeded also by the
   network's elongated TRL components and the spike calls that draw lines
   (away from saturated stars, or not pointing at one), masked end to end (lines longer than
   any source stay visible in the sources' footprints: a bright trail is
   deblended into pieces by the stars it crosses); TRL pixels of the
   network that no fitted trail explains are only flagged;
3. bad columns and rows from their statistics (:mod:`.columns`), trails
   left out, fused with the network's HCL/DCL; a column is one defect
   across rows its statistics cannot measure; dead pixels by their value
   (8 sigma below the sky and their neighbours), zeroed alone, never
   released (no source is darker than the sky);
4. cosmic rays from the network and from L.A.Cosmic (astroscrappy) on an
   edge-padded frame, both flagged, and their wings (neighbours >= 4 sigma,
   not along a spike or trail) flagged too;
5. rule 1 (:mod:`.stars`): zero-weight candidates on real sources are
   released to flag-only, also under a fitted trail or column once its
   profile is subtracted (the issue's exception for fitted lines is not
   taken: a false line must not cost a star either); a trail's pixels only
   where what is left outshines it, the sources on it found again on the
   subtracted frame;
6. cosmic rays by their shape (:mod:`.narrow`): round, smooth sources far
   narrower than the PSF, and elongated ones narrower across than it, that
   nothing zeroed (hits and tracks blurred by charge diffusion pass the
   network, L.A.Cosmic and rule 1) get zero weight;
7. what stays zero gets its halo: cosmic rays grow by one pixel (never
   into a released source).

Saturation and overscan come from the network (overscan also from edge
blocks without sky) and follow the policy (flag and zero by default); they
are never released.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from maxidetect.classes import CLASSES
from maxidetect.errors import MaxidetectWarning
from maxidetect.maps.columns import (
    LineDefect,
    column_model,
    edge_blocks,
    find_column_defects,
    hot_edges,
    on_step,
    step_calls,
)
from maxidetect.maps.frame import (
    GAIN_KEYS,
    Background,
    FrameStats,
    bright_background,
    in_usual_units,
    measure_background,
    measure_frame,
    no_data,
    pixel_noise,
    sources_under,
)
from maxidetect.maps.morph import dilate, grow
from maxidetect.maps.narrow import narrower_than_psf
from maxidetect.maps.policy import MapPolicy
from maxidetect.maps.spikes import network_spikes, on_spikes, spike_stars
from maxidetect.maps.stars import protect_sources, sharper_across_than_psf, steeper_than_psf
from maxidetect.maps.trails import (
    Trail,
    collinear_pieces,
    find_trails,
    line_components,
    line_ridges,
    periodic_flashes,
    trail_mask,
    trail_model,
    trail_of_spikes,
    trail_on_galaxy,
    trail_on_step,
)

__all__ = ["FusionReport", "fuse", "cosmic_rays"]

BIT = {c.abbr: c.bit for c in CLASSES}
CLASS_INDEX = {c.abbr: i for i, c in enumerate(CLASSES)}
#: Network classes whose zero-weight pixels rule 1 may release.
RELEASABLE = ("CR", "HP", "DP", "HCL", "DCL", "P", "TRL")
#: Never released: the evidence does not depend on what lies there.
INDEPENDENT = ("SAT", "OV")


@dataclass
class FusionReport:
    """What the fusion found (for headers, logs and benchmarks)."""

    fwhm: float = 0.0
    fwhm_measured: bool = False
    psf_q: float = 1.0  # the PSF's axis ratio (1: round or not measured)
    psf_theta: float = 0.0  # its major axis from +x [rad]
    psf_trail: tuple | None = None  # (core sigma, half-length) of a trailed PSF (a tracking error)
    trails: list[Trail] = field(default_factory=list)
    columns: list[LineDefect] = field(default_factory=list)
    lacosmic_pixels: int = 0
    explained_pixels: int = 0  # CR/HP calls a source's model explained: flags dropped
    tested: int = 0
    sources_protected: int = 0
    released_pixels: int = 0
    trl_flag_only_pixels: int = 0
    cr_on_spikes: int = 0  # cosmic-ray flags moved to SP: pixels on a visible diffraction spike
    hit_spill: tuple = (0.0, 0.0)  # a hit's value spilt into each side and corner neighbour (measured)
    bbg_vetoed_pixels: int = 0  # the network's bright-background calls where the sky is not bright
    bbg_found_pixels: int = 0  # bright sky the network did not call
    cr_track_pixels: int = 0  # flagged by the network's sub-threshold CR probability beside a hit
    flashes: int = 0  # sources on a trail at one spacing along it (strobes): the trail's
    narrow_hits: int = 0  # sources far narrower than the PSF (tracks: across): cosmic rays by their shape
    step_pixels: int = 0  # calls along a step in the sky (persistence, L.A.Cosmic's hits): dropped
    step_lines: int = 0  # lines fitted along a step in the sky: no trail
    galaxy_lines: int = 0  # lines fitted along one object's major axis (edge-on discs): no trail
    spike_lines: int = 0  # lines through a bright source fading away from it (its spikes): no trail
    sky_steps: bool = False  # steps that look like the detector's (the warning): MDSTEP

    def header_cards(self) -> list[tuple]:
        trails = [(f"MDTRL{k + 1}", f"{t.theta:.6f},{t.rho:.2f},{t.sigma:.2f},{t.t0:.1f},{t.t1:.1f}",
                   "trail th,rho,sig,t0,t1") for k, t in enumerate(self.trails[:99])]
        return [("MDFUSED", True, "maps fused with frame evidence"),
                ("MDFWHM", round(self.fwhm, 3), "PSF FWHM used by rule 1 [pix]"),
                ("MDFWHMOK", self.fwhm_measured, "PSF measured on the frame (else default)"),
                ("MDPSFQ", round(self.psf_q, 3), "PSF axis ratio (1: round)"),
                ("MDPSFTH", round(float(np.degrees(self.psf_theta)), 1), "PSF major axis from +x [deg]"),
                ("MDPSFTR", self.psf_trail is not None, "PSF trailed along its major axis (tracking)"),
                ("MDPSFTL", round(2 * self.psf_trail[1], 2) if self.psf_trail else 0.0, "trailed PSF's length [pix]"),
                ("MDNTRL", len(self.trails), "trails fitted and masked end to end"),
                ("MDNSPKL", self.spike_lines, "lines that are a star's spikes: SP, not TRL"),
                ("MDNCOL", len(self.columns), "bad column/row segments found"),
                ("MDNPROT", self.sources_protected, "sources protected from zero weight"),
                ("MDNREL", self.released_pixels, "pixels released to flag-only"),
                ("MDNEXPL", self.explained_pixels, "released pixels their star explains (no CR/HP)"),
                ("MDSPILL", round(float(self.hit_spill[0]), 4), "hit value spilt per side neighbour"),
                ("MDNNARR", self.narrow_hits, "sources far narrower than the PSF: CR"),
                ("MDSTEP", self.sky_steps, "steps in the sky level (amplifiers?)")] + trails


def _step_message(edge: np.ndarray | None, lines: list[Trail]) -> str:
    """Where the frame's sky steps (``edge``: the step-edge pixels the network called; ``lines``:
    the lines fitted along steps), and what to do about it."""
    where = []
    if edge is not None and edge.any():  # by line, each step apart (a raw frame's prescan and bias rows)
        for axis, name, other in ((0, "column", "y"), (1, "row", "x")):
            held = np.flatnonzero(edge.sum(axis=axis) >= 10)
            for run in np.split(held, np.flatnonzero(np.diff(held) > 1) + 1)[:3] if len(held) else ():
                span = np.flatnonzero((edge[:, run[0]:run[-1] + 1] if axis == 0 else edge[run[0]:run[-1] + 1]).any(
                    axis=1 - axis))
                label = f"{name} {run[0]}" if len(run) == 1 else f"{name}s {run[0]}-{run[-1]}"
                where.append(f"{label} ({other} {span.min()}-{span.max()})")
        if not where:
            ys, xs = np.nonzero(edge)
            where.append(f"x {xs.min()}-{xs.max()}, y {ys.min()}-{ys.max()}")
    for t in lines[:3]:
        mid = (t.t0 + t.t1) / 2
        x = t.rho * np.cos(t.theta) - mid * np.sin(t.theta)
        y = t.rho * np.sin(t.theta) + mid * np.cos(t.theta)
        where.append(f"a line at {np.degrees(t.theta + np.pi / 2) % 180:.1f} deg through ({x:.0f}, {y:.0f})")
    return ("a step in the sky's level along " + "; ".join(where) + ", as of amplifiers read at different "
            "levels: no defect, not masked; subtract each amplifier's level before detection, or its edge may "
            "give false detections")


def _label_max(values: np.ndarray, lab: np.ndarray, n: int) -> np.ndarray:
    """Per-label maximum of ``values`` (index 0: no label, 0), over the
    labelled pixels only: ndimage.maximum visits the whole frame (1 s per
    call on 2048^2 for a few thousand labels; this takes 10 ms)."""
    idx = np.flatnonzero(lab)
    peak = np.full(n + 1, -np.inf)
    np.maximum.at(peak, lab.ravel()[idx], np.asarray(values).ravel()[idx].astype(np.float64))
    peak[0] = 0.0
    return peak


COLD_SIGMA = 8.0  # a dead pixel: this far below the sky and below its neighbours' median


def _cold_pixels(z: np.ndarray, sig_psf: float, sigma: float = COLD_SIGMA) -> np.ndarray:
    """Pixels ``sigma`` below the sky and below the median of their 8
    neighbours by as much, and steeper down than any source of the frame
    could be up (:func:`steeper_than_psf`; a negative residual of a difference
    image is PSF-shaped): no source makes a pixel darker than the sky, and
    the noise does not reach -8 sigma (dead pixels the network misses, and
    the evidence that a called one is dead whatever lies on it)."""
    out = np.zeros(z.shape, bool)
    ys, xs = np.nonzero(z < -sigma)
    if ys.size:
        zp = np.pad(z, 1, mode="edge")
        nbr = np.stack([zp[ys + 1 + dy, xs + 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])
        side = nbr[[1, 3, 4, 6]].mean(axis=0)  # (-1, 0), (0, -1), (0, 1), (1, 0)
        v = z[ys, xs]
        keep = (v < np.median(nbr, axis=0) - sigma) & steeper_than_psf(side - v, -v, 1.0, sig_psf)
        out[ys[keep], xs[keep]] = True
    return out


def _header_float(header, keys, default):
    for k in keys:
        if header is not None and k in header:
            try:
                v = float(header[k])
                if np.isfinite(v) and v > 0:
                    return v
            except (TypeError, ValueError):
                pass
    return default


#: Electrons assumed in a subtracted sky when the header gives no gain (about
#: a raw frame's at 30 ADU of noise and a gain of 1: where the old fixed gain
#: of 1 was right, this is nearly the same).
SKY_ELECTRONS = 1000.0
#: L.A.Cosmic runs on strips of about this many pixels: its arrays (~43 bytes per pixel, a 2x
#: subsampled Laplacian among them) for a whole 4096^2 frame were 0.73 GB, at the maps' peak.
LACOS_STRIP_PIXELS = 2 << 20
#: Rows each strip takes from its neighbours. Every step of it is local (the noise and
#: fine-structure medians, 7 and 5 + 9 px; the Laplacian; two 3x3 dilations; the saturated
#: stars' 5x5 dilations): a pixel's call depends on rows within ~12 px, so every row kept is
#: computed with all of them, and the mask is the whole frame's.
LACOS_OVERLAP = 32
WING_SIGMA = 4.0  # a cosmic ray's flag reaches neighbours at least this far above the sky (and their local level)
# An L.A.Cosmic hit on a source rule 1 released loses its cosmic-ray flag only
# from this peak S/N up: there it is a sharp star core (undersampled frames:
# up to 60 bright stars per 2048^2 frame). Fainter, rule 1 often releases real
# cosmic rays as PSF-like sources (undersampled frames: refuting from 10 sigma
# cost up to 1.5 pt of cosmic-ray recall, from 20 sigma 0.1-0.2 pt).
REFUTE_MIN_PEAK = 20.0
#: The network's cosmic-ray probability that backs weaker evidence, far below
#: the maps' threshold (its calls): it completes a flagged track beside a hit,
#: and keeps L.A.Cosmic's hits in diffuse light at the peak asked elsewhere.
TRACK_PROB = 0.1
TRACK_SIGMA = 5.0  # ... on pixels at least this far above the sky
TRACK_REACH = 2  # ... within this many pixels (square) of a flagged one
TRACK_SHARP = 3.0  # ... and on a real source's footprint, this much sharper than its PSF [sigma]
#: Both (a track's wings and its faint rest) stand that far above their local level too: the
#: median of the square ring this many pixels away (:func:`_above_local_level`).
LOCAL_RING = 4


#: Stars whose spikes are looked for besides the saturated ones: a peak SPIKE_HOST_PEAK times the
#: local noise or more, as broad across as the PSF (SPIKE_HOST_WIDTH of its minor sigma: no hit).
#: The SPIKE_HOSTS brightest of them (spike_stars measures the angle on the largest dozen).
SPIKE_HOST_PEAK, SPIKE_HOST_WIDTH, SPIKE_HOSTS = 100.0, 0.6, 12


def _bright_stars(stats: FrameStats, around_sat: np.ndarray) -> np.ndarray:
    """Discs (radius max(2 px, FWHM / 2)) at the peaks of the frame's bright compact objects
    (:data:`SPIKE_HOST_PEAK`) away from saturated pixels (``around_sat``: a saturated star is its
    own host; a disc merged into it moved its centre and spike lines by a pixel, and 580 true spike
    pixels of an undersampled frame lost their SP flags), bool (H, W): hosts of diffraction spikes
    besides saturated stars."""
    out = np.zeros(stats.rms.shape, bool)
    o = stats.objects
    if not len(o):
        return out
    h, w = out.shape
    iy, ix = np.clip(o["ypeak"].astype(int), 0, h - 1), np.clip(o["xpeak"].astype(int), 0, w - 1)
    peak = o["peak"] / stats.rms[iy, ix]
    keep = np.flatnonzero(stats.compact & (peak >= SPIKE_HOST_PEAK) & (o["b"] >= SPIKE_HOST_WIDTH * stats.sigma_minor)
                          & ~around_sat[iy, ix])
    keep = keep[np.argsort(-peak[keep])[:SPIKE_HOSTS]]  # the angle is measured on the brightest
    out[iy[keep], ix[keep]] = True
    return dilate(out, max(2, int(round(stats.fwhm / 2))))


def cosmic_rays(image: np.ndarray, stats: FrameStats | Background, header=None,
                pad: int = 8) -> np.ndarray | None:
    """L.A.Cosmic (astroscrappy) mask, on a frame padded by reflection so
    the edges are searched too; None if astroscrappy is missing. ``stats``:
    the frame's background, noise and saturation level."""
    try:
        import astroscrappy
    except ImportError:
        return None
    data = np.asarray(image, np.float32)
    finite = np.isfinite(data)
    # Pixels without data get the background: zeros (or inf's float32
    # maximum) beside the sky would make edges of their own for its Laplacian.
    data = data if finite.all() else np.where(finite, data, stats.back)
    sky = float(np.median(stats.back))
    noise = stats.globalrms if stats.globalrms > 0 else float(np.median(stats.rms))
    gain = _header_float(header, GAIN_KEYS, 0.0)
    rdnoise = _header_float(header, ("RDNOISE", "READNOIS", "RON"), 0.0)
    if gain > 0:
        # The header's noise model must give the sky's measured noise. Below it, the sky was
        # subtracted (its photons' noise is still there): the missing variance becomes read noise
        # (a GAIN header on a sky-subtracted simulated frame: modelled 2.5 ADU for 19.6 measured,
        # and L.A.Cosmic's false-positive rate rose from 2e-5 to 3e-3). Far above it, the pixels
        # are not the header's ADU (rescaled, or in e-/s): as without a gain. (Simulated raw frames
        # measure 0.88-1.18 of their model: fringes and nebulae add to the sky's noise.)
        model = np.sqrt(max(sky, 0.0) * gain + rdnoise**2) / gain
        if model < 0.75 * noise:
            rdnoise = float(np.sqrt((noise * gain) ** 2 - max(sky, 0.0) * gain))
        elif model > 1.5 * noise:
            gain = rdnoise = 0.0
    if gain <= 0:
        # Unknown gain: the one that makes the noise model match the sky's
        # measured rms, where there is a sky (5 sigma or more). Without one
        # (subtracted), its noise becomes read noise of a sky of
        # SKY_ELECTRONS. Both scale with the image's unit (a fixed gain of 1
        # made sources' Poisson noise swamp every hit on a frame in e-/s or
        # MJy/sr: L.A.Cosmic found none; and whether sky > rms^2 depends on it).
        if sky > 5.0 * noise:
            gain = sky / noise**2
        else:
            gain = np.sqrt(SKY_ELECTRONS) / noise
            rdnoise = noise * gain
    padded = np.pad(data, pad, mode="reflect")
    # astroscrappy works in electrons: its saturation level is ADU x gain.
    sat = stats.saturation * gain if np.isfinite(stats.saturation) else np.inf
    # sigclip 4.0, not L.A.Cosmic's usual 4.5: the bench's cosmic-ray pixel recall rose 0.953 / 0.950 /
    # 0.939 -> 0.961 / 0.957 / 0.947 (default / undersampled / crowded; faint stretches of tracks) at a
    # false-positive rate still under 1e-4 (3.5 passed it on an undersampled frame).
    mask = np.zeros(padded.shape, bool)
    n = padded.shape[0]
    rows = max(LACOS_STRIP_PIXELS // padded.shape[1], 2 * LACOS_OVERLAP)
    for y0 in range(0, n, rows):
        y1 = min(y0 + rows, n)
        a, b = max(y0 - LACOS_OVERLAP, 0), min(y1 + LACOS_OVERLAP, n)
        strip, _ = astroscrappy.detect_cosmics(padded[a:b], gain=gain, readnoise=rdnoise, satlevel=sat,
                                               sigclip=4.0, sigfrac=0.3, objlim=5.0, niter=1, sepmed=True,
                                               cleantype="meanmask", verbose=False)
        mask[y0:y1] = strip[y0 - a:y1 - a]
    return mask[pad:-pad, pad:-pad]


def _above_local_level(pixels: np.ndarray, z: np.ndarray, nsigma: float, r: int = LOCAL_RING) -> np.ndarray:
    """The ``pixels`` (bool like ``z``, few) that stand ``nsigma`` above their local level
    too: the median of the square ring of pixels ``r`` away (a track crossing it covers a few of
    its 8r pixels). The sky's mesh level is not the level under a hit's neighbours on a nebula,
    a fringe or a galaxy: their light passed for a cosmic ray's wings (the cosmic variant's frame:
    false cosmic-ray pixels off a 1-px halo 978 -> 371, 790 -> 201 of them in diffuse light,
    pixel recall 0.966 -> 0.964)."""
    ys, xs = np.nonzero(pixels)
    if not len(ys):
        return pixels
    h, w = z.shape
    ring = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if max(abs(dy), abs(dx)) == r]
    level = np.median(np.stack([z[np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)] for dy, dx in ring],
                               axis=1), axis=1)
    out = pixels.copy()
    low = z[ys, xs] - level < nsigma
    out[ys[low], xs[low]] = False
    return out


def _lacosmic_false_alarms(alone: np.ndarray, z: np.ndarray, col_lines: np.ndarray, diffuse: np.ndarray,
                           named: np.ndarray, dead: np.ndarray, min_peak: float = 5.0,
                           min_peak_diffuse: float = 8.0, support: np.ndarray | None = None) -> np.ndarray:
    """The L.A.Cosmic hits the network does not share that other evidence
    explains (measured on simulated frames: most of its false alarms): the
    rings its Laplacian leaves within 2 px of a bad column or row, of a
    block without sky (overscan) or of a dead pixel (``dead``: its
    neighbours look sharp, and on a star's core they cost the star), pixels
    the network names hot or dead,
    pixels not above the sky (under 1.5 sigma: its growth step reaches into
    the noise; a cosmic ray's faint wings get the 1-px halo anyway),
    components whose peak is under ``min_peak`` sigma of the frame's noise
    (its own noise model trusts the header's gain), and, inside diffuse light
    (fringes, nebulae, bright background, whose filaments pass its
    fine-structure test), under ``min_peak_diffuse`` unless the network's
    faint evidence (``support``, bool like ``z``) touches the component:
    then ``min_peak`` as elsewhere."""
    ring = alone & dilate(col_lines | dead, 2)
    out = ring | (alone & (named | (z < 1.5)))
    rest = alone & ~out
    if rest.any():
        lab, n = ndimage.label(rest, structure=np.ones((3, 3), bool))
        peak = _label_max(z, lab, n)
        ys, xs = np.nonzero(rest)  # the frame's few thousand hits, not its every pixel
        need = np.where(diffuse[ys, xs], min_peak_diffuse, min_peak)
        if support is not None:
            backed = np.zeros(n + 1, bool)
            backed[lab[rest & support]] = True
            need = np.where(backed[lab[ys, xs]], min_peak, need)
        faint = peak[lab[ys, xs]] < need
        out[ys[faint], xs[faint]] = True
        # A hit that reaches into the ring zone is one event: its bright pixels
        # there stay (cut off, its remainder passed rule 1 for a star).
        kept = alone & ~out
        if kept.any() and ring.any():
            into = ring & ~named & ~col_lines & ~dead & (z >= min_peak)
            back = ndimage.binary_propagation(kept, structure=np.ones((3, 3), bool), mask=kept | into)
            out &= ~(back & into)
    return out


#: A saturated region is a star's core where at least SAT_LIT_PIXELS of the pixels touching it hold
#: SAT_LIT_SHARE of its brightest pixel's light (above the sky). A star's wings fall slowly: in 1.2 px
#: seeing the pixels beside a saturated peak hold 15% of it or more. A hot pixel or a cosmic ray
#: at the saturation level has the sky around it.
SAT_LIT_PIXELS, SAT_LIT_SHARE = 3, 0.05


def _lit_around(bare: np.ndarray, lab: np.ndarray, which: np.ndarray) -> np.ndarray:
    """Per label ``0 .. n`` of the saturated regions ``lab`` in the sky-subtracted frame ``bare``:
    whether their light spreads past them as a star's does (:data:`SAT_LIT_PIXELS`,
    :data:`SAT_LIT_SHARE`); only the labels ``which`` (bool per label) are looked at."""
    out = np.zeros(len(which), bool)
    h, w = lab.shape
    for k, sl in enumerate(ndimage.find_objects(lab, max_label=len(which) - 1), 1):
        if sl is None or not which[k]:
            continue
        ys = slice(max(sl[0].start - 1, 0), min(sl[0].stop + 1, h))
        xs = slice(max(sl[1].start - 1, 0), min(sl[1].stop + 1, w))
        own = lab[ys, xs] == k
        ring = ndimage.binary_dilation(own, structure=np.ones((3, 3), bool)) & (lab[ys, xs] == 0)
        b = np.nan_to_num(bare[ys, xs])
        out[k] = np.count_nonzero(b[ring] >= SAT_LIT_SHARE * b[own].max()) >= SAT_LIT_PIXELS
    return out


def fuse(image: np.ndarray, flags: np.ndarray, policy: MapPolicy,
         header=None, missing=None, cr_probability=None) -> tuple[np.ndarray, np.ndarray, FusionReport]:
    """Fuse the network's masks with the frame's own evidence.

    Parameters
    ----------
    image : (H, W) raw image
    flags : int32 (H, W)
        The network's FLAG map (OR of class bits; every class whose policy is
        not "none"); completed in place with the found trails, columns and
        cosmic rays.
    policy : MapPolicy
        Per-class actions and growth: a class the policy does not zero gets
        flags only, whatever the evidence.
    missing : bool (H, W), False or None
        The image's pixels without data (:func:`~maxidetect.maps.frame.no_data`)
        when the caller has them (False: none); None: found here.
    cr_probability : float (H, W), optional
        The network's cosmic-ray probability (the plane its CR flags were
        thresholded from). Where it exceeds :data:`TRACK_PROB` beside a
        flagged hit, on pixels >= :data:`TRACK_SIGMA` above the sky, the
        track's flag is completed (flags only); on an L.A.Cosmic hit in
        diffuse light, the hit needs no more than elsewhere. None: both
        steps are skipped.

    Returns
    -------
    (zero, flags, report): the final zero-weight pixels, the flags, what was found.
    """
    report = FusionReport()
    image = np.asarray(image)
    blank = no_data(image) if missing is None else (missing if missing is not False else None)
    if blank is not None and not (blank <= ~np.isfinite(image)).all():
        # A zero-filled blank region is no data, as NaN is: left out of every statistic and search
        # (its edges are no trail or dead row).
        image = np.where(blank, np.float32(np.nan), np.asarray(image, np.float32))
    noise = pixel_noise(image)
    scaled, header = in_usual_units(image, header, noise)
    if scaled is not image:
        image, noise = scaled, pixel_noise(scaled)
    act = policy.actions

    def net(abbr):
        return (flags & BIT[abbr]) != 0

    net_cr = net("CR")  # the network's own calls: flags gains L.A.Cosmic's below
    # Its faint CR evidence, far below its calls (backs L.A.Cosmic's hits and completes tracks).
    faint_cr = np.asarray(cr_probability) > TRACK_PROB if cr_probability is not None else None
    sharp = net_cr | net("HP")
    # Overscan left in the background meshes makes the spline ring along the
    # frame's columns: column-like residuals over its whole height. The
    # network's OV pixels, and edge blocks with no sky by their statistics.
    sky_free = edge_blocks(image, noise)
    if act["OV"] != "none":
        flags[sky_free] |= BIT["OV"]
    overscan = net("OV") | sky_free
    overscan = dilate(overscan, 3)
    background = measure_background(image, bad=sharp | overscan, header=header)
    # L.A.Cosmic needs only the frame's background and noise: it runs in a
    # thread while the sources, PSF, trails and columns are measured
    # (astroscrappy releases the GIL for much of its work; same result, ~1 s
    # less on a 2048^2 frame).
    pool = ThreadPoolExecutor(max_workers=1) if act["CR"] != "none" else None
    lacos_job = pool.submit(cosmic_rays, image, background, header) if pool is not None else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MaxidetectWarning)
        stats = measure_frame(image, bad=sharp | overscan, header=header, background=background)
    for w in caught:
        warnings.warn(str(w.message), MaxidetectWarning, stacklevel=2)
    report.fwhm, report.fwhm_measured = stats.fwhm, stats.fwhm_measured
    report.psf_q, report.psf_theta, report.psf_trail = stats.psf_shape
    # -- bright background: where the sky itself is bright, by its statistics. The network's
    # calls stand there only: on the bodies of bright galaxies and stars they are their light,
    # not background (real frames: every bright galaxy of a CTIO frame flagged, 97% of a
    # crowded UKIRT frame's detections), and it misses broad glows (simulated frames: 0.4-1.4%
    # of a glow's pixels called, 14-20% of its calls on one). L.A.Cosmic's test below still
    # takes every call as diffuse light (a galaxy's structure passes its test too).
    bbg_called = net("BBG")
    if act["BBG"] != "none":
        bright_sky = bright_background(image, stats, bad=sharp | overscan)
        report.bbg_vetoed_pixels = int((bbg_called & ~bright_sky).sum())
        report.bbg_found_pixels = int((bright_sky & ~bbg_called).sum())
        flags[bbg_called & ~bright_sky] &= ~BIT["BBG"]
        flags[bright_sky] |= BIT["BBG"]

    z = stats.snr(image)
    saturated = net("SAT") | (np.isfinite(stats.saturation) & (np.nan_to_num(image) >= stats.saturation))
    around_sat = dilate(saturated, 5)
    # Spikes come out of bright (saturated) stars: the network's SP components
    # that touch one and point at it are left out of the trail search; elsewhere
    # the network calls a trail a spike as often (measured), and the search decides.
    spikes = dilate(network_spikes(net("SP"), saturated, stats.fwhm, snr=z), 3)
    source = stats.source_mask(2, snr=z)
    not_sources = around_sat | spikes | overscan | sharp
    masked = source | not_sources
    # Diffuse light the network found (fringes, nebulae) has stripes and kinks
    # that pass for columns: left out of their search (trails are checked for
    # being one isolated line instead).
    diffuse = net("FR") | net("NEB")

    # -- trails (before the columns: a steep trail crossing columns would
    # otherwise pass for many short column segments)
    # A bright trail deblended into pieces by the stars it crosses is in the source mask: its
    # line, longer than any source, stays visible to the search (stars on it stay masked).
    on_lines = np.zeros(flags.shape, bool)
    if len(stats.objects):
        peaks = np.c_[stats.objects["ypeak"], stats.objects["xpeak"]].astype(int)
        on_lines = line_ridges(z, stats.segmentation, peaks, stats.fwhm) & source & ~not_sources
    # Away from saturated stars the network's spike calls that draw a line are trail evidence: it
    # calls a broad or faint trail a spike more often than a trail (measured on the second
    # generator: 90-100% SP on trails 7-10 px wide, 0% TRL); its blobs of SP calls on a real
    # frame's bright star are none.
    # A short narrow trail the network calls a cosmic ray in pieces along one line: those pieces
    # and the light between them stay visible to the search, and the line drawn through them
    # seeds it (verified like any line; two cosmic rays in a row have sky between them).
    bare = np.nan_to_num(image).astype(np.float32) - stats.back  # sky-subtracted: the spike test here, rule 1 below
    search_mask = masked & ~on_lines
    pieces = collinear_pieces(net_cr & ~spikes & ~around_sat, z)
    if pieces.any() and saturated.any():
        # A spike the network calls a cosmic ray in pieces, and not a spike, is a spike still.
        lab_p, n_p = ndimage.label(pieces, structure=np.ones((3, 3), bool))
        ys, xs = np.nonzero(pieces)
        on = on_spikes(bare, stats.rms, saturated, ys, xs, stats.fwhm)
        share = np.bincount(lab_p[ys, xs], on, n_p + 1) / np.maximum(np.bincount(lab_p[ys, xs], None, n_p + 1), 1)
        pieces &= ~(share > 0.5)[lab_p]
    if pieces.any():
        search_mask &= ~(dilate(pieces, 3) & ~(around_sat | spikes | overscan))
    report.trails = find_trails(z, search_mask, network_trl=net("TRL"), diffuse=diffuse, psf_sigma=stats.sigma,
                                network_lines=line_components(net("SP") & ~spikes) | pieces)
    # A step in the sky leaves a ridge on its bright side once a smooth background is subtracted:
    # judged in the raw frame, such a line is no trail (two amplifiers 6 sigma apart: a "trail"
    # 17 px wide zeroed along the boundary, the step's residual beside it cut into 60 sources).
    # Judged again beside the lines that are no step: a train's trail has its neighbour in a side strip.
    alone = {id(t) for t in report.trails if trail_on_step(image, stats.rms, t)}
    not_steps = tuple(t for t in report.trails if id(t) not in alone)
    on_steps = [t for t in report.trails if id(t) in alone
                and trail_on_step(image, stats.rms, t, others=tuple(o for o in not_steps if o is not t))]
    report.step_lines = len(on_steps)
    # An edge-on disc galaxy is a bright straight line a few hundred pixels long too: its light
    # peaks in the middle and fades to both ends (the network calls it TRL or SP as well).
    on_galaxies = [t for t in report.trails if trail_on_galaxy(z, t, stats.sigma)]
    report.galaxy_lines = len(on_galaxies)
    # A bright star's diffraction spikes (a reflector's spider: saturated or not) are a line through
    # it whose light fades away from it: flagged, never zeroed (the star and any source on them stay).
    galaxy_ids = {id(t) for t in on_galaxies}
    of_spikes = [t for t in report.trails if id(t) not in galaxy_ids and trail_of_spikes(z, t, ~search_mask)]
    report.spike_lines = len(of_spikes)
    if act["SP"] != "none":  # with SP=zero, zeroed below as the network's spike calls (read from the flags)
        for t in of_spikes:
            flags[trail_mask(flags.shape, t, margin=0.0, half_width=t.mask_half_width)] |= BIT["SP"]
    no_trail = {id(t) for t in on_steps + on_galaxies + of_spikes}
    report.trails = [t for t in report.trails if id(t) not in no_trail]
    trl_mask = np.zeros(flags.shape, bool)
    model = np.zeros(flags.shape, np.float32)
    lines = []  # (pixels, direction) of each fitted line: its own fragments are never sources
    for t in report.trails:
        m = trail_mask(flags.shape, t, half_width=t.mask_half_width)
        trl_mask |= m
        lines.append((m, t.theta + np.pi / 2))
        model += trail_model(flags.shape, t, z)
    if act["TRL"] != "none":
        flags[trl_mask] |= BIT["TRL"]
    net_trl_only = net("TRL") & ~trl_mask
    report.trl_flag_only_pixels = int(net_trl_only.sum())

    # -- columns and rows
    col_mask = np.zeros(flags.shape, bool)
    col_lines = np.zeros(flags.shape, bool)  # every segment found, whatever the policy does with it
    # A step in the sky (two amplifiers' bias levels) is no column: the network's column calls and
    # the segments found beside one, at the raw level of one side, go.
    # Judged per column (row) holding 20 calls or more, in runs or not: a step's calls are broken
    # by the sources on it (runs of 20+ only left 914 of 6808 such pixels zeroed).
    step = step_calls(net("HCL") | net("DCL"), image, stats.rms, sided=False)
    flags[step] &= ~(BIT["HCL"] | BIT["DCL"])
    # The network also calls the bright side of such a step persistence, in a band a few columns
    # wide along it (two amplifiers 3-6 sigma apart: 2300-4200 pixels zeroed, and the step's
    # residual cut into ~50 false sources beside them). A real persistence's blob or bleed stands
    # above both sides; here the sides must also differ.
    on_edge = step_calls(net("P") & ~overscan, image, stats.rms)  # overscan's edge is a step of its own
    flags[on_edge] &= ~BIT["P"]
    report.columns = [d for d in find_column_defects(z, masked | diffuse | trl_mask)
                      if not on_step(image, d, stats.rms)]
    edges = hot_edges(image, noise)  # end to end: a segment found on such a line gives way
    on_edges = {(d.axis, d.index) for d in edges}
    report.columns = [d for d in report.columns if (d.axis, d.index) not in on_edges] + edges
    for d in report.columns:
        sl = (slice(d.start, d.stop), d.index) if d.axis == 1 else (d.index, slice(d.start, d.stop))
        col_lines[sl] = True
        m = np.zeros(flags.shape, bool)
        m[sl] = True
        lines.append((m, np.pi / 2 if d.axis == 1 else 0.0))
        cls = "HCL" if d.hot else "DCL"
        if act[cls] != "none":
            flags[sl] |= BIT[cls]
        if act[cls] == "zero":
            col_mask[sl] = True
    # -- dead pixels by their value (the network's DP calls on them included):
    # independent of what lies there, zeroed alone, never grown.
    cold = _cold_pixels(z, stats.sigma_minor) & ~(col_lines | net("DCL") | overscan | saturated)
    if act["DP"] != "none":
        flags[cold] |= BIT["DP"]
    trl_line = trl_mask.copy()
    if act["TRL"] != "zero":
        trl_mask[:] = False

    # -- cosmic rays: network and L.A.Cosmic
    lacos = lacos_job.result() if lacos_job is not None else None
    if pool is not None:
        pool.shutdown()
    if lacos is not None:
        lacos &= ~saturated
        # Its hits along a step's edge (~50 on a 512 px column at a 6-sigma step) are the step's.
        lacos_edge = step_calls(lacos & ~overscan & ~col_lines, image, stats.rms, min_calls=10, span=True)
        lacos &= ~lacos_edge
        on_edge |= lacos_edge
        # In diffuse light a hit needs 8 sigma, or the network's faint CR probability on it: two
        # weak kinds of evidence (the bench's frames: CR pixel recall +0.3-0.7 pt for 1 false pixel).
        lacos &= ~_lacosmic_false_alarms(lacos & ~net_cr, z, col_lines | sky_free, diffuse | bbg_called,
                                         net("HP") | net("DP") | net("HCL") | net("DCL"), net("DP") | cold,
                                         support=faint_cr)
        report.lacosmic_pixels = int(lacos.sum())
        flags[lacos] |= BIT["CR"]
    report.step_pixels = int(on_edge.sum())
    # Told where it looks like the detector's (along the grid, over half the frame or more); a
    # nebula's edge the search also fits is dropped without a word.
    long_ = [t for t in on_steps if t.off_grid <= 1.0 and t.length >= 0.5 * min(image.shape)]
    report.sky_steps = bool(report.step_pixels or long_)
    if report.sky_steps:
        warnings.warn(_step_message(on_edge, long_), MaxidetectWarning, stacklevel=2)

    # -- zero-weight candidates and rule 1
    def class_zero(a):  # the network's own calls (CR: before L.A.Cosmic's were added to the flags)
        if act[a] != "zero":
            return np.zeros(flags.shape, bool)
        return grow(net_cr if a == "CR" else net(a), policy.grow_of(CLASS_INDEX[a]))

    releasable = np.zeros(flags.shape, bool)
    point = np.zeros(flags.shape, bool)  # the point-like calls (cosmic rays, hot and dead pixels)
    for a in RELEASABLE:  # the network's TRL counts only where a fitted trail confirms it
        if a != "TRL":
            z_a = class_zero(a)
            releasable |= z_a
            if a in ("CR", "HP", "DP"):
                point |= z_a
    by_network = releasable.copy()
    lacos_zero = lacos is not None and act["CR"] == "zero"
    if lacos_zero:
        lacos_grown = grow(lacos, policy.grow_of(CLASS_INDEX["CR"])).copy()  # grow(m, 0) is m itself
        releasable |= lacos_grown
    independent = np.zeros(flags.shape, bool)
    for a in INDEPENDENT:
        independent |= class_zero(a)
    if act["OV"] == "zero":
        independent |= sky_free
    if act["DP"] == "zero":
        independent |= cold
    other = np.zeros(flags.shape, bool)  # what else the policy zeroes (e.g. SP=zero): as the network made it
    for a in BIT:
        if BIT[a] and a not in RELEASABLE and a not in INDEPENDENT:
            other |= class_zero(a)
    # Sources under a fitted trail or column are judged with its profile subtracted.
    # Rule 1 frees a trail's pixels only where what is left outshines it; a column's as
    # before (the real star below).
    trail_light = model * stats.rms
    model += column_model(flags.shape, report.columns)
    sub = bare - model * stats.rms
    # The saturated stars and their spikes' angle on it, found once for both spike tests below.
    sub_stars = spike_stars(sub, saturated, stats.fwhm) if saturated.any() else None
    candidates = (releasable | trl_mask | col_mask) & ~independent
    on_spike = spikes
    if saturated.any():  # candidates on a spike of a saturated star the network did not call one
        ys, xs = np.nonzero(candidates & ~spikes)
        on = on_spikes(sub, stats.rms, saturated, ys, xs, stats.fwhm, stars=sub_stars)
        if on.any():
            on_spike = spikes.copy()
            on_spike[ys[on], xs[on]] = True
    # The sources on and beside a fitted trail are found again with its model subtracted.
    # Not a column's: a short false row segment through a real star (real crowded frame)
    # takes the star's light into its model, and the star found without it is no PSF.
    rule_stats = (sources_under(stats, sub, dilate(trl_mask, int(np.ceil(stats.fwhm)) + 2))
                  if trl_mask.any() else stats)
    # What the searches needed goes before rule 1 and its forks: held to the end, the frame's
    # masks and models were a quarter of the fusion's peak memory.
    del image, model, masked, source, not_sources, on_lines, search_mask, pieces, releasable, diffuse, cold
    del on_edge, bbg_called
    result = protect_sources(sub, rule_stats, candidates, lines=lines, exclude=overscan, spikes=on_spike,
                             halo=1 if act["CR"] == "zero" else 0, line_light=trail_light)
    released = result.released
    report.hit_spill = tuple(float(f) for f in result.spill)
    if saturated.any():
        # A saturated star is a real source that rule 1 cannot fit (its top is
        # flat): the cosmic-ray and pixel calls on it are released
        # whole, flag-only (on a crowded real frame its zeroed cores left
        # saturated stars as rings, which --clean then dropped). SAT=zero
        # still zeroes the saturated pixels themselves. A saturated region of
        # more than 5% of the frame is no star (a blank or burnt-out frame).
        sat_lab, n_sat = ndimage.label(saturated)
        area = np.bincount(sat_lab.ravel(), minlength=n_sat + 1)
        stars = (area <= 0.05 * saturated.size) & (np.arange(n_sat + 1) > 0)
        # Point-like calls only: a column or trail crossing the star stays a line.
        if lacos_zero:
            point |= lacos_grown
        comp, n = ndimage.label(point & ~independent, structure=np.ones((3, 3), bool))
        if n and stars.any():
            near = np.zeros(n_sat + 1, bool)  # the regions a call touches (only those are looked at)
            near[sat_lab[dilate(comp > 0, 2) & (sat_lab > 0)]] = True
            stars &= _lit_around(bare, sat_lab, stars & near)
            touch = np.zeros(n + 1, bool)
            touch[comp[dilate(stars[sat_lab], 2) & (comp > 0)]] = True
            touch[0] = False
            released = released | touch[comp]
        del sat_lab, comp
    del lines, trail_light
    report.tested, report.sources_protected = result.n_tested, result.n_sources
    report.released_pixels = int(released.sum())

    zero = (candidates & ~released) | independent | other
    del candidates
    if act["CR"] != "none" and stats.fwhm_measured:
        # Cosmic rays by their shape: round, smooth sources far narrower than the PSF, and tracks
        # narrower across than it (hits and tracks blurred by charge diffusion look like stars to
        # L.A.Cosmic and to rule 1's sources, and the network calls them only in part: a second
        # generator's thick-CCD frame kept 218 of 256), backed by the network's faint CR evidence.
        # Those already zero were judged (a star under a hit keeps what rule 1 gave it); not where
        # a saturated star, a spike, a fitted line or overscan shapes the light.
        narrow_ids, narrow = narrower_than_psf(bare, stats.rms, stats.objects, stats.segmentation,
                                               stats.sigma_minor, support=faint_cr if faint_cr is not None else sharp,
                                               skip=zero | around_sat | on_spike | overscan | trl_line | col_lines)
        report.narrow_hits = len(narrow_ids)
        flags[narrow] |= BIT["CR"]
        if act["CR"] == "zero":
            zero |= narrow
    if report.trails and len(rule_stats.objects) and act["TRL"] != "none":
        # A trail's flashes (an aircraft's strobes) are sources one by one, and rule 1 kept them;
        # a row of them at one spacing on its line is the trail's (evidence rule 1 cannot see).
        obj = rule_stats.objects
        flash = np.zeros(len(obj), bool)
        for t in report.trails:
            flash[periodic_flashes(t, obj["x"], obj["y"], obj["flux"], stats.fwhm)] = True
        if flash.any():
            report.flashes = int(flash.sum())
            seg = rule_stats.segmentation
            on = np.concatenate(([False], flash))[seg]
            flags[on] |= BIT["TRL"]
            if act["TRL"] == "zero":
                zero |= on
    if lacos is not None:
        # L.A.Cosmic alone, refuted by rule 1 or explained by a fitted line: not a cosmic ray at all
        # (on undersampled frames its hits on star cores were most of the false cosmic-ray flags).
        # A hit touching one of the network's own is the same event, extended: kept.
        refuted = lacos & ~net_cr & (released | trl_line | col_mask)
        if refuted.any():
            lab, n = ndimage.label(lacos | net_cr, structure=np.ones((3, 3), bool))
            keep = np.zeros(n + 1, bool)
            keep[np.unique(lab[net_cr])] = True
            peak = _label_max(z, lab, n)
            keep |= peak < REFUTE_MIN_PEAK
            keep[0] = False
            refuted &= ~(keep[lab] & ~(trl_line | col_mask))
            # One hit is one event: a component rule 1 released in part (its
            # footprint stops short of a corner) is refuted, and given back, whole.
            whole = np.zeros(n + 1, bool)
            whole[np.unique(lab[refuted & released])] = True
            whole &= ~keep  # a kept hit's pixels on a fitted line are refuted alone
            whole[0] = False
            refuted |= whole[lab] & lacos & ~net_cr
        if refuted.any() and lacos_zero:
            # What only the refuted hits (and their growth) made zero gets its weight back.
            dropped = lacos_grown & ~grow(lacos & ~refuted, policy.grow_of(CLASS_INDEX["CR"]))
            zero &= ~(dropped & ~by_network & ~trl_mask & ~col_mask & ~independent & ~other)
        flags[refuted] &= ~BIT["CR"]
        lacos &= ~refuted
    # A call on a star whose own profile explains its pixels too (rule 1's source won over
    # every pixel, the call's included, no hit needed there) was the star: its cosmic-ray and
    # hot-pixel flags go. A catalogue kept to IMAFLAGS_ISO == 0 lost such stars: on a second
    # generator's frame in good seeing (FWHM 1.8 px) 30 of 172 sources of S/N 5-20 and 9 of 66
    # of S/N 20-100 carried a false cosmic-ray flag on their cores (now 6 and 3). A hit on a
    # star needs free pixels to be fitted, and keeps its flag.
    explained = result.explained & ~independent
    called_cr = explained & ((flags & BIT["CR"]) != 0)  # still a spike's, below, if on one
    flags[explained] &= ~(BIT["CR"] | BIT["HP"])
    report.explained_pixels = int(explained.sum())
    # Cosmic rays keep a one-pixel halo (their faint wings), never over a protected source
    # (its footprint: a pixel left zero on a faint star's wing must not grow into its core).
    cr_zero = zero & (net("CR") | (lacos if lacos is not None else False))
    if cr_zero.any() and act["CR"] == "zero":
        zero |= (dilate(cr_zero, 1, square=True) & ~released & ~result.protected
                 & ~saturated)
    if act["CR"] != "none":
        # A track's bright wings: both finders stop short of pixels still well
        # above the sky next to a hit (measured on simulated frames: most
        # cosmic-ray pixels >= 5 sigma they miss touch a flagged one). Flagged
        # only, and not along other bright structures the network names
        # (spikes and trails, which it also calls cosmic rays in places).
        cr = net("CR")
        other_lines = net("SP") | net("TRL") | trl_line
        # Nor into a source rule 1 released: its brightness is the source's.
        wings = (dilate(cr & ~other_lines, 1, square=True) & ~cr & ~other_lines
                 & (z >= WING_SIGMA) & ~saturated & ~released)
        flags[_above_local_level(wings, z, WING_SIGMA)] |= BIT["CR"]
        if faint_cr is not None:
            # The rest of a track the network half sees: its probability well below the
            # maps' threshold, beside a flagged hit, bright (measured on the bench's frames:
            # about a fifth of the cosmic-ray pixels >= 5 sigma both finders miss, at ~1e-5
            # false-positive rate). Flags only, as the wings. In good seeing the network's faint
            # CR probability covers star cores: not on rule 1's released pixels, and on a
            # source it judged real only where sharper than its PSF allows (a track crossing
            # it; the second generator's sharp frames: 22 of 244 bright stars' cores flagged else).
            cr_now = (flags & BIT["CR"]) != 0
            track = faint_cr & ~cr_now & (z >= TRACK_SIGMA)
            track &= dilate(cr_now, TRACK_REACH, square=True) & ~other_lines & ~saturated & ~released
            ys, xs = np.nonzero(track & result.protected)
            if len(ys):
                blunt = ~sharper_across_than_psf(sub, stats.rms, stats.sigma_minor, TRACK_SHARP, at=(ys, xs))
                track[ys[blunt], xs[blunt]] = False
            track = _above_local_level(track, z, TRACK_SIGMA)
            flags[track] |= BIT["CR"]
            report.cr_track_pixels = int(track.sum())
    hosts = saturated | _bright_stars(stats, around_sat) if act["CR"] != "none" else saturated
    if act["CR"] != "none" and hosts.any():
        # The sharp pixels of diffraction spikes pass for cosmic rays (the
        # network's and L.A.Cosmic's; measured on undersampled frames: half the
        # false cosmic-ray flags). On a spike that is there, the flag says SP;
        # the weight stays as it was. A bright star below saturation has its
        # spikes too (a reflector's spider).
        ys, xs = np.nonzero(((flags & BIT["CR"]) != 0) | called_cr)
        stars = sub_stars
        more = spike_stars(sub, hosts, stats.fwhm) if (hosts & ~saturated).any() else None
        if more is not None:  # the saturated stars' angle where they give one; every host's spikes
            stars = more if sub_stars is None else (sub_stars[0], more[1])
        on = on_spikes(sub, stats.rms, hosts, ys, xs, stats.fwhm, stars=stars)
        if on.any():
            flags[ys[on], xs[on]] &= ~BIT["CR"]
            if act["SP"] != "none":
                flags[ys[on], xs[on]] |= BIT["SP"]
            report.cr_on_spikes = int(on.sum())
    return zero, flags, report
