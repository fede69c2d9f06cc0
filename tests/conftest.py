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
    from maxidetect.inference import Predictor

    return Predictor()


@pytest.fixture(scope="session")
def keras_predictor():
    """The Keras 3 network on the configured backend (TensorFlow by default)."""
    from maxidetect.inference import Predictor

    return Predictor(engine="keras")


@pytest.fixture(scope="session")
def maker(predictor):
    from maxidetect.masks import MaskMaker

    return MaskMaker(predictor=predictor)
