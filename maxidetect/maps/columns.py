"""Hot and dead columns and rows, found by their statistics.

Each pixel is compared with its neighbours along the row
(the median of the columns two and three away on each side): a bad column stands out of that
comparison over its whole length, a star or a galaxy does not. The
residuals of source-free pixels are summarised per column in bins of
``bin_rows`` rows (medians, robust to what masking missed); bins that lie
``nsigma`` noise units above (hot) or below (dead) zero, in runs of at
least ``min_length`` pixels, are a column segment. Rows are the same on the
transposed image. Three or more adjacent columns together are structure of
the sky, not of the detector. Segments are masked end to end; a source on a
segment is still protected once the segment's offset is subtracted.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["LineDefect", "find_column_defects", "column_model", "edge_blocks", "hot_edges", "step_edges", "step_calls",
           "on_step"]


@dataclass
class LineDefect:
    """A bad column (``axis`` 1: x = ``index``) or row (``axis`` 0: y = ``index``)
    segment ``start:stop`` along it; ``level`` in noise units (+ hot, - dead)."""

    axis: int
    index: int
    start: int
    stop: int
    level: float

    @property
    def hot(self) -> bool:
        return self.level > 0


def _neighbour_median(z: np.ndarray) -> np.ndarray:
    """Median of the columns two and three away on each side (own and
    adjacent columns left out: a bad column, or a pair, never sets its own
    reference); masked (NaN) neighbours count as background, 0. A median of
    four by min/max, fast on large frames; in bands of rows, whose
    temporaries stay in the cache."""
    h, w = z.shape
    pad = np.pad(np.nan_to_num(z, nan=0.0), ((0, 0), (3, 3)), mode="reflect")
    out = np.empty(pad.shape[:1] + (w,), pad.dtype)
    rows = max(1, (1 << 16) // max(w, 1))
    for y0 in range(0, h, rows):
        band = pad[y0:y0 + rows]
        out[y0:y0 + rows] = _median4(*(band[:, 3 + k: 3 + k + w] for k in (-3, -2, 2, 3)))
    return out


def _nanmedian_rows(a: np.ndarray) -> np.ndarray:
    """``np.nanmedian(a, axis=1)`` of a 3-d array, by one sort (NaNs sort
    last; 3-5x faster than numpy's masked-array path on these shapes)."""
    s = np.sort(a, axis=1)
    n = np.isfinite(a).sum(axis=1)
    lo = np.take_along_axis(s, np.maximum((n - 1) // 2, 0)[:, None, :], axis=1)[:, 0]
    hi = np.take_along_axis(s, np.minimum(n // 2, a.shape[1] - 1)[:, None, :], axis=1)[:, 0]
    return np.where(n > 0, 0.5 * (lo + hi), np.nan)


def _median4(a, b, c, d):
    """Element-wise median of four arrays (the mean of the middle two)."""
    return 0.5 * (np.maximum(np.minimum(a, b), np.minimum(c, d)) + np.minimum(np.maximum(a, b), np.maximum(c, d)))


def _segments(z: np.ndarray, valid: np.ndarray, axis_index: int, bin_rows: int, nsigma: float,
              min_length: int, min_level: float) -> list[LineDefect]:
    """Column segments of ``z`` (residuals in noise units, NaN where masked)."""
    h, w = z.shape
    r = z - _neighbour_median(z)
    r[~valid] = np.nan
    nb = h // bin_rows
    if nb == 0:
        return []
    out = []
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        binned = _nanmedian_rows(r[: nb * bin_rows].reshape(nb, bin_rows, w))  # (nb, w)
        counts = np.isfinite(r[: nb * bin_rows]).reshape(nb, bin_rows, w).sum(axis=1)
    # Noise of a bin median: from the spread of all bins (robust), per valid count.
    good = np.isfinite(binned) & (counts >= bin_rows // 3)
    if good.sum() < 10:
        return []
    scaled = np.where(good, binned * np.sqrt(np.maximum(counts, 1)), 0.0)
    # Contrast with the columns two and three away: smooth structure (fringes,
    # gradients, halos) shifts them alike, a bad column only itself.
    pad = np.pad(scaled, ((0, 0), (3, 3)), mode="reflect")
    around = _median4(*(pad[:, k:k + w] for k in (0, 1, 5, 6)))
    scaled = scaled - around
    mad = np.nanmedian(np.abs(scaled[good] - np.nanmedian(scaled[good])))
    sig = 1.4826 * mad if mad > 0 else 1.2533
    zb = np.where(good, scaled / sig, 0.0)
    for x in np.flatnonzero(np.any(np.abs(zb) > nsigma, axis=0)):
        col = zb[:, x]
        for sign in (1, -1):
            hit = sign * col > nsigma
            if not hit.any():
                continue
            # Runs of bins over the threshold, bridging single-bin gaps (a star on the column).
            k = 0
            while k < nb:
                if not hit[k]:
                    k += 1
                    continue
                j = k
                while j + 1 < nb and (hit[j + 1] or (j + 2 < nb and hit[j + 2] and sign * col[j + 1] > 0)):
                    j += 1
                start, stop = k * bin_rows, (j + 1) * bin_rows
                if j == nb - 1:
                    stop = h
                if stop - start >= min_length:
                    level = float(np.nanmedian(r[start:stop, x]))
                    if abs(level) >= min_level:
                        ends = _refine(r[:, x], start, stop, level, bin_rows, min_length)
                        if ends is not None:
                            out.append(LineDefect(axis_index, int(x), *ends, level))
                k = j + 1
    return out


def _refine(col: np.ndarray, start: int, stop: int, level: float, back: int = 32, min_length: int = 20,
            drop: float = 8.0, blind: int = 8) -> tuple[int, int] | None:
    """Move a segment's ends to the change points of the column's level:
    from ``back`` px inside each end outward, the running sum of ``sign *
    col - |level| / 2`` (the log-likelihood ratio of "on the segment" per
    pixel, in noise units) peaks where the offset ends; the scan stops once
    the sum falls ``drop`` below its peak (a real interruption, measured, is
    not bridged). Masked pixels (NaN: sources) say nothing: an end at a
    masked stretch goes half way into it, ``blind`` px at most (a crowded
    field's masks run for a hundred rows). A stretch shorter than
    ``min_length`` (a column measured between a crowded field's masks) keeps
    that length about its middle; None where no pixel holds the offset.
    Windowed medians stopped faint columns early: at 1.8 sigma per pixel an
    8-px window's median falls below half the level about one time in twenty."""
    n = len(col)
    seen = np.isfinite(col)
    gain = np.where(seen, np.sign(level) * col - 0.5 * abs(level), 0.0)

    def reach(g: np.ndarray, measured: np.ndarray) -> int:
        """Pixels of ``g`` (from the scan's origin outward) the segment takes."""
        c = np.cumsum(g)
        fell = np.flatnonzero(c < np.maximum.accumulate(c) - drop)
        stop_at = fell[0] if fell.size else len(c)
        if stop_at == 0:
            return 0
        k = int(np.argmax(c[:stop_at]))
        if c[k] <= 0:
            return 0
        unseen = 0  # the unmeasured stretch just past the peak
        while k + 1 + unseen < len(c) and not measured[k + 1 + unseen]:
            unseen += 1
        return k + 1 + min(unseen // 2, blind)

    o = max(start + 1, stop - back)  # the stop end: scanned down from inside
    stop = o + reach(gain[o:], seen[o:])
    o = min(stop - 1, start + back)  # the start end: scanned up from inside
    start = o - reach(gain[:o][::-1], seen[:o][::-1])
    if stop - start <= 1:
        return None
    pad = max(min_length - (stop - start), 0)
    start = max(0, min(start - pad // 2, n - min_length))
    return start, max(stop, start + min_length)


def _drop_clusters(segs: list[LineDefect], width: int = 3, strong: float = 10.0) -> list[LineDefect]:
    """A detector's bad column is one or two columns wide; three or more
    adjacent columns with overlapping segments of the same sign are a
    structure of the sky (a nebula's edge, a halo) unless they are strong."""
    keep = []
    for s in segs:
        near = {o.index for o in segs if o.axis == s.axis and np.sign(o.level) == np.sign(s.level)
                and o.start < s.stop and s.start < o.stop and abs(o.index - s.index) <= width - 1}
        run = 1
        for k in (1, -1):
            i = s.index + k
            while i in near:
                run += 1
                i += k
        if run < width or abs(s.level) >= strong:
            keep.append(s)
    return keep


def _drop_edge_blocks(z: np.ndarray, valid: np.ndarray, level: float = 10.0) -> None:
    """Columns or rows at an edge of the frame that are not sky at all
    (overscan, prescan, a vignetted border: their median is far from the
    background) are left out, in place: next to them every sky column would
    look hot."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for axis in (0, 1):
            # every 4th pixel along the line: a block of non-sky is far off, medians need no precision
            med = np.nanmedian(z[::4] if axis == 0 else z[:, ::4], axis=axis)
            off = ~np.isfinite(med) | (np.abs(np.nan_to_num(med)) > level)
            n = len(med)
            lo = 0
            while lo < n and off[lo]:
                lo += 1
            hi = n
            while hi > 0 and off[hi - 1]:
                hi -= 1
            for sl in (slice(0, lo), slice(hi, n)):
                idx = (slice(None), sl) if axis == 0 else (sl, slice(None))
                z[idx] = np.nan
                valid[idx] = False


def edge_blocks(image: np.ndarray, noise: float, nsigma: float = 20.0, max_fraction: float = 0.1,
                block: int = 64, step: float = 10.0) -> np.ndarray:
    """Columns and rows at the frame's edges that hold no sky: their median
    lies ``nsigma`` noise units or more *below* the frame's (overscan and
    prescan are bias only; vignetted borders are dark), contiguous from the
    edge, at most ``max_fraction`` of the frame, and ending in a step of
    ``step`` noise units to the lines inside it (a vignetted border fades into
    the sky, and has sky and stars: measured, a raw frame darker by 25% at
    its edges lost 40 border columns and rows to zero weight); within such a
    strip, only its ``block``-px pieces along the edge that hold no sky
    either. bool (H, W).

    Medians are over the pixels with data (NaN, inf left out). The pieces:
    a rotated or mosaicked frame's blank corners (NaN or zero-filled) pull
    the medians of the edge rows through them down, while the rest of those
    rows has sky (measured: the whole bottom 8 rows of a frame with blank
    corners were called overscan and zeroed, and the stars on them lost)."""
    data = np.asarray(image, np.float32)
    finite = np.isfinite(data)
    if not finite.all():
        data = np.where(finite, data, np.nan)
    median = np.median if finite.all() else np.nanmedian
    out = np.zeros(data.shape, bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN lines: no sky
        for axis in (0, 1):
            # every 4th pixel along the line: a block without sky is 20 sigma off
            med = median(data[::4] if axis == 0 else data[:, ::4], axis=axis)
            n = len(med)
            ref = median(med[n // 4: 3 * n // 4])
            low = ~((ref - med) <= nsigma * noise)  # NaN (no data at all): no sky
            cap = int(max_fraction * n)
            lo = 0
            while lo < cap and low[lo]:
                lo += 1
            hi = n
            while n - hi < cap and low[hi - 1]:
                hi -= 1
            # A strip without sky ends in a step (overscan, a blank border);
            # a vignetted border fades into the sky and has sky and stars.
            if 0 < lo < n and not median(med[lo:lo + 4]) - median(med[max(lo - 4, 0):lo]) >= step * noise:
                lo = 0
            if 0 < hi < n and not median(med[max(hi - 4, 0):hi]) - median(med[hi:hi + 4]) >= step * noise:
                hi = n
            for sl in (slice(0, lo), slice(hi, n)):
                for b0 in range(0, data.shape[axis] if sl.stop > sl.start else 0, block):
                    piece = (slice(b0, b0 + block), sl) if axis == 0 else (sl, slice(b0, b0 + block))
                    if not (ref - median(data[piece])) <= nsigma * noise:
                        out[piece] = True
    return out


#: Hot edge lines stand this many pixel-noise units above the sky; at most HOT_EDGE_MAX of them.
HOT_EDGE_SIGMA, HOT_EDGE_MAX = 1.5, 16


def hot_edges(image: np.ndarray, noise: float, nsigma: float = HOT_EDGE_SIGMA,
              max_lines: int = HOT_EDGE_MAX) -> list[LineDefect]:
    """Columns and rows at the frame's edges brighter than the sky over their whole length (a CCD's
    glowing or hot edge columns), as :class:`LineDefect`: contiguous from the edge (past lines
    without data or without sky, as overscan), fewer than ``max_lines``, each ``nsigma`` noise
    units above the four lines just inside them (the widest such block): a step (the glow of an
    amplifier or a bright sky rises gradually). Three or more adjacent bright columns are the sky's
    structure to the column search (:func:`find_column_defects`), and a strip brighter than 10
    sigma is left out of its statistics: at the frame's edge both were hot columns, which the
    network called in pieces (the strip cut into ~25 false sources on 1024^2 frames). Medians of
    the raw image along each line, every 4th pixel."""
    data = np.asarray(image, np.float32)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN lines: no data
        for axis in (0, 1):  # axis 0: each column's median (a column defect)
            med = np.nanmedian(data[::4] if axis == 0 else data[:, ::4], axis=axis)
            n, length = len(med), data.shape[axis]
            if n < 4 * max_lines:
                continue
            ref = float(np.nanmedian(med[n // 4: 3 * n // 4]))
            for way in (1, -1):
                order = list(range(n) if way == 1 else range(n - 1, -1, -1))
                k = 0
                while k < len(order) and not (med[order[k]] - ref >= -20 * noise):  # NaN, or no sky
                    k += 1
                if k + max_lines + 4 > n:
                    continue
                block = []
                for b in range(1, max_lines):  # the widest block above the lines just inside it
                    inside = float(np.nanmedian(med[order[k + b:k + b + 4]]))
                    if all(med[order[k + i]] - inside > nsigma * noise for i in range(b)):
                        block = [(order[k + i], inside) for i in range(b)]
                out += [LineDefect(1 if axis == 0 else 0, int(i), 0, length, float((med[i] - level) / noise))
                        for i, level in block]
    return out


def _merge(segs: list[LineDefect], max_gap: int = 64, valid: np.ndarray | None = None) -> list[LineDefect]:
    """Segments of one column (same sign) closer than ``max_gap`` px are one
    defect: the gaps are stars masked out of the statistics, not a repair.
    So are segments of any gap that ``valid`` (pixels in the statistics)
    mostly leaves out: a column crossing diffuse light or a bright region
    cannot be measured there, and a detector column does not stop and
    restart (measured on simulated frames: a hot column through bright
    background found in three pieces)."""
    def unmeasured(d: LineDefect, a: int, b: int) -> bool:
        if valid is None:
            return False
        gap = valid[a:b, d.index] if d.axis == 1 else valid[d.index, a:b]
        return gap.size > 0 and gap.mean() < 0.5

    out: list[LineDefect] = []
    for s in sorted(segs, key=lambda d: (d.axis, d.index, np.sign(d.level), d.start)):
        last = out[-1] if out else None
        if (last is not None and (last.axis, last.index) == (s.axis, s.index)
                and np.sign(last.level) == np.sign(s.level)
                and (s.start - last.stop <= max_gap or unmeasured(s, last.stop, s.start))):
            n1, n2 = last.stop - last.start, s.stop - s.start
            out[-1] = LineDefect(s.axis, s.index, last.start, max(last.stop, s.stop),
                                 (last.level * n1 + s.level * n2) / (n1 + n2))
        else:
            out.append(s)
    return out


def column_model(shape, segments: list[LineDefect]) -> np.ndarray:
    """The segments' offsets in noise units (for subtraction), float32 (H, W)."""
    out = np.zeros(shape, np.float32)
    for d in segments:
        sl = (slice(d.start, d.stop), d.index) if d.axis == 1 else (d.index, slice(d.start, d.stop))
        out[sl] += d.level
    return out


def find_column_defects(snr: np.ndarray, masked: np.ndarray, nsigma: float = 5.0, min_length: int = 20,
                        bin_rows: int = 32, rows: bool = True, min_level: float = 1.5) -> list[LineDefect]:
    """Bad columns (and rows) of an image in noise units.

    Parameters
    ----------
    snr : float (H, W)
        (image - background) / rms.
    masked : bool (H, W)
        Pixels to leave out of the statistics: the frame's sources (grown),
        saturated pixels.
    nsigma : float
        Significance of a bin median; ``min_length`` the shortest segment [pix];
        ``min_level`` the smallest offset per pixel [noise units] (fainter
        column-like residuals come from fringes and halos, not from the detector).
    """
    z = np.asarray(snr, np.float32).copy()
    valid = ~masked & np.isfinite(z)
    z[~valid] = np.nan
    _drop_edge_blocks(z, valid)
    bin_rows = max(8, min(bin_rows, min_length * 2))
    out = _segments(z, valid, 1, bin_rows, nsigma, min_length, min_level)
    if rows:
        out += _segments(np.ascontiguousarray(z.T), np.ascontiguousarray(valid.T), 0, bin_rows, nsigma, min_length,
                         min_level)
    return [d for d in _merge(_drop_clusters(out), valid=valid) if not _spread_across(z, d)]


#: A detector's line (or pair) holds its offset to itself: the lines just past it hold under this
#: share of it ...
SPREAD_SHARE = 0.35
#: ... or under this many noise units of their medians.
SPREAD_SIGMA = 3.0


def _spread_across(z: np.ndarray, d: LineDefect, reach: int = 3) -> bool:
    """Whether segment ``d``'s offset is not its own: a source's or the sky's light drawn out along
    the grid, or a neighbour's, not a bad column's. ``z``: the image in noise units, NaN where left
    out of the statistics. Across the segment, over its span, the median of each line within
    ``reach``. The line itself must lie off the sky (0) by half its level or more: a line two or
    three from a bright one (a hot column, a streak) looked dead by the contrast alone. Less the
    mean of the two lines ``reach`` away, the line and its brighter neighbour (a pair of bad
    columns) take the offset, and the lines just past that pair must hold under SPREAD_SHARE of
    the line's or be within SPREAD_SIGMA of noise. A star trailed by the telescope's drift along
    the rows (a streak 5-16 px long) gave rows 20 px long at 1.5-2.6 sigma whose neighbours
    across held 0.4-0.8 of the row's light (the PSF's), a bad column's none (measured on the
    second generator's ``drift`` frames); its core was zeroed."""
    img = z if d.axis == 1 else z.T
    lo, hi = d.index - reach, d.index + reach
    if lo < 0 or hi >= img.shape[1]:
        return False
    block = img[d.start:d.stop, lo:hi + 1]
    n = np.isfinite(block).sum(axis=0)
    if n.min() < max(5, (d.stop - d.start) // 3):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        prof = np.sign(d.level) * np.nanmedian(block, axis=0)
    c = reach
    if prof[c] < 0.5 * abs(d.level):
        return True
    e = prof - 0.5 * (prof[0] + prof[-1])
    pair = c + 1 if e[c + 1] > e[c - 1] else c - 1
    outer = max(e[min(c, pair) - 1], e[max(c, pair) + 1])
    noise = 1.2533 / np.sqrt(n.min())
    return bool(outer > SPREAD_SHARE * max(e[c], 0.0) and outer > SPREAD_SIGMA * noise)


#: A column stands this many noise units of its median off both sides' levels to be a bad column.
STEP_SIGMA = 5.0
#: A step's edge lies within this share of the step of one side's level.
STEP_SHARE = 0.2
#: The widest block of calls judged as a step's edge by its sides (the network's persistence band
#: on a step's bright side: 4-7 columns).
MAX_STEP_BLOCK = 16
_SIDE = 3  # columns measured on each side of a block of called columns, past a one-column gap


def _side_levels(image: np.ndarray, rows: np.ndarray, x0: int, x1: int) -> tuple[float, float]:
    """Medians of the raw image over ``rows`` in the ``_SIDE`` columns left of column x0 and right of
    x1 (a pixel's gap), NaN where the frame ends."""
    w = image.shape[1]
    out = []
    for a, b in ((x0 - 1 - _SIDE, x0 - 1), (x1 + 2, x1 + 2 + _SIDE)):
        a, b = max(a, 0), min(b, w)
        vals = image[rows, a:b] if b > a else np.zeros((0,))
        out.append(float(np.nanmedian(vals)) if np.isfinite(vals).any() else np.nan)
    return out[0], out[1]


def _is_step(img: np.ndarray, rms: np.ndarray, rows: np.ndarray, x: int, x0: int, x1: int,
             sided: bool = False) -> bool:
    """Whether column ``x`` of the raw ``img``, over ``rows``, lies at one side's level of the block
    of columns x0..x1 it belongs to (or between them): the edge of a step in the sky (two
    amplifiers' bias, a filter's edge), not a column of its own. False where it holds no data.
    ``sided``: the two sides' levels must also differ (a step is there), by STEP_SIGMA noise units
    of their medians and by a pixel's noise (over a few thousand rows the medians of a smooth sky's
    neighbouring columns differ by many of their own noise units), and the column lie at one of
    them (within STEP_SHARE of the step), not between them (the flank of a spectrum's sky line)."""
    own = img[rows, x]
    if not np.isfinite(own).any():
        return False
    level = float(np.nanmedian(own))
    pixel = float(np.median(rms[rows, x]))
    noise = 1.2533 * pixel * np.sqrt(1.0 / len(rows) + 1.0 / (_SIDE * len(rows)))
    sides = [v for v in _side_levels(img, rows, x0, x1) if np.isfinite(v)]
    if sided:
        rise = abs(sides[0] - sides[1]) if len(sides) == 2 else 0.0
        if rise <= max(STEP_SIGMA * noise, pixel):
            return False
        return min(abs(level - v) for v in sides) <= STEP_SHARE * rise
    diffs = [level - v for v in sides]
    if not diffs:
        return False
    same_sign = all(d > 0 for d in diffs) or all(d < 0 for d in diffs)
    return not (same_sign and min(abs(d) for d in diffs) > STEP_SIGMA * noise)


def step_edges(image: np.ndarray, columns: np.ndarray, rms: np.ndarray, sided: bool = False) -> np.ndarray:
    """The pixels of ``columns`` (bool (H, W): column calls, e.g. the network's HCL and DCL) whose
    column, over the rows it is called, lies at the level of the columns on one side of its block of
    adjacent called columns, measured in the raw ``image`` (:func:`_is_step`): a step's edge, not a
    bad column. A raw frame read by two amplifiers (bias 60 ADU apart): the network called the 19
    columns before the boundary dead, 6800 pixels given zero weight. ``sided``: see
    :func:`_is_step`. bool like ``columns``."""
    out = np.zeros(columns.shape, bool)
    cols = np.flatnonzero(columns.any(axis=0))
    img = np.asarray(image, np.float32)
    for block in np.split(cols, np.flatnonzero(np.diff(cols) > 1) + 1) if len(cols) else ():
        if sided and len(block) > MAX_STEP_BLOCK:
            continue  # a region, whose sides lie far apart: no step's edge
        for x in block:
            rows = np.flatnonzero(columns[:, x])
            if len(rows) >= 2 and _is_step(img, rms, rows, int(x), int(block[0]), int(block[-1]), sided):
                out[rows, x] = True
    return out


def _nanmedian_or_zero(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(np.median(v)) if len(v) else 0.0


def step_calls(calls: np.ndarray, image: np.ndarray, rms: np.ndarray, min_calls: int = 20,
               span: bool = False, sided: bool = True) -> np.ndarray:
    """The ``calls`` (bool (H, W)) that lie along a step in the sky (:func:`step_edges`, ``sided``
    as there), judged per column and per row holding ``min_calls`` or more. ``span``: the calls
    are hits picked by their value (L.A.Cosmic's): a column's (row's) level is measured from its
    first hit to its last, not on the hits, which lie above any level, and the column holds five
    Poisson deviations more hits than the median column (row) with hits within 16 of it (a frame
    full of cosmic rays has dozens in every column)."""
    out = np.zeros(calls.shape, bool)
    for axis in (0, 1):
        c, img, r = (calls, image, rms) if axis == 0 else (calls.T, image.T, rms.T)
        count = c.sum(axis=0)
        many = count >= min_calls
        if span and many.any():  # hits: (columns without any, as where overscan is left out, do not count)
            usual = ndimage.generic_filter(np.where(count > 0, count, np.nan).astype(float), _nanmedian_or_zero,
                                           size=33, mode="nearest")
            many &= count > usual + 5.0 * np.sqrt(usual)
        if not many.any():
            continue
        judged = c & many[None, :]
        if span:
            first = np.argmax(c, axis=0)
            last = c.shape[0] - 1 - np.argmax(c[::-1], axis=0)
            rows = np.arange(c.shape[0])[:, None]
            judged = many[None, :] & (rows >= first[None, :]) & (rows <= last[None, :])
        step = step_edges(img, judged, r, sided=sided) & c
        out |= step if axis == 0 else step.T
    return out


def on_step(image: np.ndarray, d: LineDefect, rms: np.ndarray) -> bool:
    """Whether a found segment ``d`` lies at the raw level of one side of it (:func:`_is_step`):
    found on the background-subtracted image, a step's edge passes for a column (a smoothed
    background cannot follow the step)."""
    img, r = (image, rms) if d.axis == 1 else (image.T, rms.T)
    return _is_step(np.asarray(img, np.float32), r, np.arange(d.start, d.stop), d.index, d.index, d.index)
