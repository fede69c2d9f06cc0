"""Diffraction spikes: the frame's spike angle, the distance to the spike
lines, and which pixels sit on a spike that is there."""

import numpy as np
import pytest

from maxidetect.maps.fusion import BIT, fuse
from maxidetect.maps.policy import MapPolicy
from maxidetect.maps.spikes import on_spikes, spike_angle, spike_distance

N, CY, CX, FWHM = 301, 150.0, 150.0, 3.0


def _saturated_star(with_spikes=True, seed=5, length=np.inf):
    """A saturated star's halo, four spikes at 30 degrees (mod 90) fading
    over ~60 px (ending at ``length``), neighbours in the annulus and noise
    (sigma 5)."""
    yy, xx = np.mgrid[:N, :N]
    dy, dx = yy - CY, xx - CX
    r = np.hypot(dy, dx)
    img = 5e4 / (1 + (r / 3) ** 2) ** 1.5
    if with_spikes:
        for k in range(4):
            a = np.radians(30 + 90 * k)
            along = dx * np.cos(a) + dy * np.sin(a)
            across = -dx * np.sin(a) + dy * np.cos(a)
            profile = 300 * np.exp(-0.5 * (across / 0.8) ** 2) * np.exp(-along / 60)
            img += np.where((along > 0) & (along < length), profile, 0)
    rng = np.random.default_rng(seed)
    for _ in range(15):
        sy, sx = rng.uniform(100, 200, 2)
        img += 800 * np.exp(-0.5 * ((yy - sy) ** 2 + (xx - sx) ** 2) / 1.3**2)
    return img + rng.normal(0, 5, (N, N)), r <= 6


def _at(angle_deg, radius):
    return CX + radius * np.cos(np.radians(angle_deg)), CY + radius * np.sin(np.radians(angle_deg))


def test_spike_angle_and_distance_on_a_constructed_saturated_star():
    """Four spikes at 30 degrees (mod 90) around a saturated star are found
    whatever the neighbours; a point on a spike is near one, a point at the
    same distance between spikes is not; a star without spikes gives none."""
    img, sat = _saturated_star()
    phi = spike_angle(img, [(CY, CX, 6.0)], FWHM)
    assert phi is not None and abs(np.degrees(phi) - 30.0) < 3
    assert spike_angle(_saturated_star(with_spikes=False)[0], [(CY, CX, 6.0)], FWHM) is None
    on, off = _at(120, 40), _at(75, 40)
    d = spike_distance(img, sat, np.array([on[0], off[0]]), np.array([on[1], off[1]]), FWHM)
    assert d[0] < 2 and d[1] > 20


def test_pixels_on_a_visible_spike_and_not_past_its_end():
    """On the spike (20-50 px out): yes; between spikes, or on the line's
    extension past the spike's end (at 60 px; 90 px out, within the reach of
    spike_distance): no."""
    img, sat = _saturated_star(length=60)
    pts = [_at(120, 20), _at(210, 35), _at(300, 50), _at(75, 40), _at(30, 90)]
    x = np.array([round(p[0]) for p in pts])
    y = np.array([round(p[1]) for p in pts])
    assert spike_distance(img, sat, x.astype(float), y.astype(float), FWHM)[-1] < 2
    got = on_spikes(img, np.full(img.shape, 5.0), sat, y, x, FWHM)
    assert got.tolist() == [True, True, True, False, False]


@pytest.mark.filterwarnings("ignore:PSF not measurable")
def test_cosmic_ray_flags_on_a_spike_become_spike_flags():
    """The network calls a sharp spike's pixels cosmic rays: they keep their
    zero weight but are flagged SP, not CR; a real cosmic ray beside the
    spikes keeps its CR flag."""
    img, sat = _saturated_star()
    img = (img + 1000.0).astype(np.float32)
    img[sat] = 60000.0
    flags = np.zeros(img.shape, np.int32)
    flags[sat] |= BIT["SAT"]
    spike_px = [(round(p[1]), round(p[0])) for p in (_at(120, r) for r in range(15, 50, 5))]
    for yx in spike_px:
        flags[yx] |= BIT["CR"]
    img[250, 60] += 3000  # a cosmic ray off the spikes, found by the network
    flags[250, 60] |= BIT["CR"]
    zero, flags, report = fuse(img, flags, MapPolicy())
    assert report.cr_on_spikes >= len(spike_px)
    assert all(flags[yx] & BIT["SP"] and not flags[yx] & BIT["CR"] for yx in spike_px)
    assert flags[250, 60] & BIT["CR"] and zero[250, 60]


def test_calls_beside_a_thin_spike_axis_are_on_it():
    """An undersampled spike is a pixel or two wide and the network's calls
    spread a pixel or two off its axis: those are on the spike too (sampled
    along a line through themselves, two thirds of them were missed), while
    a point as far off the axis between the spikes is not."""
    yy, xx = np.mgrid[:N, :N]
    dy, dx = yy - CY, xx - CX
    r = np.hypot(dy, dx)
    img = 5e4 / (1 + (r / 1.5) ** 2) ** 1.5
    for k in range(4):
        a = np.radians(30 + 90 * k)
        along = dx * np.cos(a) + dy * np.sin(a)
        across = -dx * np.sin(a) + dy * np.cos(a)
        img += np.where(along > 0, 120 * np.exp(-0.5 * (across / 0.6) ** 2) * np.exp(-along / 60), 0)
    img += np.random.default_rng(3).normal(0, 5, (N, N))
    sat = r <= 4
    pts = []
    for k, off in ((0, 1.5), (1, -1.5), (2, 2.0), (3, 1.0)):  # beside each spike, 10-45 px out
        a = np.radians(30 + 90 * k)
        for rad in range(10, 46, 5):
            pts.append((CY + rad * np.sin(a) + off * np.cos(a), CX + rad * np.cos(a) - off * np.sin(a)))
    y = np.array([round(p[0]) for p in pts])
    x = np.array([round(p[1]) for p in pts])
    got = on_spikes(img, np.full(img.shape, 5.0), sat, y, x, 1.8)
    assert got.all()
    between = [_at(75, 30), _at(165, 25)]
    assert not on_spikes(img, np.full(img.shape, 5.0), sat, np.array([round(p[1]) for p in between]),
                         np.array([round(p[0]) for p in between]), 1.8).any()
