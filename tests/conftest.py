"""Shared fixtures: the real pretrained network is loaded once per session."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"
REAL = DATA / "real"
EXAMPLE = REPO / "examples" / "fitswcs_tpv_ctio_mosaic2.fits"


def real(name: str) -> Path:
    p = REAL / name
    if not p.exists():
        pytest.skip(f"reference data {p} not available")
    return p


@pytest.fixture(scope="session")
def predictor():
    """The default engine (ONNX Runtime where installed)."""
    from maxidetect.network.inference import Predictor

    return Predictor()


@pytest.fixture(scope="session")
def keras_predictor():
    """The Keras 3 network on the configured backend (TensorFlow by default)."""
    from maxidetect.network.inference import Predictor

    return Predictor(engine="keras")


@pytest.fixture(scope="session")
def maker(predictor):
    from maxidetect.masks.maker import MaskMaker

    return MaskMaker(predictor=predictor)


# -- float32 agreement ---------------------------------------------------------
# The same network summed in another order (another engine, thread count or
# instruction-set path) moves a probability by up to 2.2e-5 (Sapphire Rapids,
# AVX-512) and 1.2e-5 (AMD Zen 3, AVX2) between any two of 8 variants
# (benchmarks/float_spread.py, benchmarks/results/float_spread.md); the mean
# difference stays below 1e-7. A wiring or weight error moves probabilities by
# 1e-2 and more. The bounds keep a ~5x margin over the measured spread.
PROB_ATOL = 1e-4
PROB_MEAN_ATOL = 1e-6


def assert_probs_agree(ours, ref, atol: float = PROB_ATOL, mean_atol: float = PROB_MEAN_ATOL) -> None:
    """Two float32 runs of one network agree to float32 accumulation noise."""
    import numpy as np

    d = np.abs(np.asarray(ours, np.float64) - np.asarray(ref, np.float64))
    assert d.max() < atol, f"max |dp| {d.max():.3g} >= {atol:g}"
    assert d.mean() < mean_atol, f"mean |dp| {d.mean():.3g} >= {mean_atol:g} (a systematic difference)"


def assert_masks_agree(ours, ref, axis: int = -1, atol: float = PROB_ATOL) -> int:
    """Thresholded masks (MaxiMask's default priors and thresholds) of two
    runs are identical except at pixels whose prior-modified probability lies
    within the propagated float32 bound of its threshold; returns the number
    of such pixels that differ."""
    import numpy as np

    from maxidetect.classes import ClassConfig
    from maxidetect.priors import modify_priors, prior_factors

    cfg = ClassConfig.default()
    f = prior_factors(cfg.priors)
    shape = [1] * np.ndim(ref)
    shape[axis] = -1
    thr = np.asarray(cfg.thresholds).reshape(shape)
    m_ref = modify_priors(np.asarray(ref, np.float64), f, axis=axis)
    m_our = modify_priors(np.asarray(ours, np.float64), f, axis=axis)
    # d p' / d p = f / (f p + 1 - p)^2 <= max(f, 1/f): the bound after the prior change.
    tol = (atol * np.maximum(f, 1 / f)).reshape(shape)
    differ = (m_ref > thr) != (m_our > thr)
    near = np.abs(m_ref - thr) <= tol
    assert (m_ref > thr).sum() > 0, "no pixel over any threshold: the check would be vacuous"
    assert not (differ & ~near).any(), f"{int((differ & ~near).sum())} mask pixels differ away from a threshold"
    return int(differ.sum())


def run_on_jax(script: str, cwd) -> str:
    """Run ``script`` in a fresh Python on Keras's JAX backend (CPU): the path a GPU node takes,
    apart from the TensorFlow this test process may have loaded. Returns its stdout."""
    import os
    import subprocess
    import sys

    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout
