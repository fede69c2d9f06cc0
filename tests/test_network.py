"""The Keras 3 network against the SavedModel shipped by maximask 1.4.1."""

import numpy as np
import pytest
from astropy.io import fits

from maxidetect.classes import ClassConfig
from maxidetect.network.normalise import normalise
from maxidetect.priors import modify_priors, prior_factors, threshold

from .conftest import assert_masks_agree, assert_probs_agree, real


@pytest.fixture(scope="module")
def savedmodel():
    tf = pytest.importorskip("tensorflow")
    from maxidetect.network.weights import maximask_savedmodel_dir

    fn = tf.saved_model.load(str(maximask_savedmodel_dir())).signatures["serving_default"]

    def run(batch):
        n = 14
        out = fn(
            input_1=tf.constant(batch[..., None]),
            input_2=tf.range(n, dtype=tf.int32),  # all classes
            input_3=tf.zeros(n),  # no prior modification
            input_4=tf.zeros(n),  # no threshold
            input_5=tf.zeros(n),
        )
        return out["output_1"].numpy()

    return run


def _tiles():
    a = normalise(fits.getdata(real("fitswcs_tpv_ctio_mosaic2.fits")))
    b = normalise(fits.getdata(real("ccdproc_a8280271_saao_raw.fits")))
    c = normalise(fits.getdata(real("fitswcs_zpn_ukirt_wfcam.fits")))
    # Saturated star + CRs; raw frame with overscan on the right; crowded IR field.
    return np.stack([a[:400, :400], b[100:500, 136:536], c[50:450, 80:480]]).astype(np.float32)


@pytest.mark.parametrize("engine", ["keras", "onnxruntime"])
def test_network_equals_savedmodel_on_real_tiles(engine, request, savedmodel):
    # 400 px tiles are off the 32 px grid: odd sizes at the deepest poolings.
    predictor = request.getfixturevalue("keras_predictor" if engine == "keras" else "predictor")
    assert predictor.engine == engine
    batch = _tiles()
    ref = savedmodel(batch)
    ours = predictor.forward(batch)
    assert ours.shape == ref.shape == (3, 400, 400, 14)
    assert_probs_agree(ours, ref)
    cfg = ClassConfig.default()
    m_ref = threshold(modify_priors(ref, prior_factors(cfg.priors), axis=-1), cfg.thresholds, axis=-1)
    assert m_ref.sum() > 1000  # the check is not vacuous
    assert assert_masks_agree(ours, ref) <= 5  # a few pixels at most sit on a threshold


def test_parameter_count_and_weight_checksum(keras_predictor):
    from maxidetect.network.weights import get_model_info, weights_checksum

    assert keras_predictor.model.count_params() == 5_727_944
    assert weights_checksum(keras_predictor.model) == get_model_info("maximask").sha256


def test_pooling_ties_go_to_first_position():
    # Flat (tied) windows must unpool to the top-left pixel, as TF's argmax does.
    from keras import ops

    from maxidetect.network.keras_engine import _pool_with_switches, _unpool

    x = np.zeros((1, 4, 4, 1), np.float32)
    x[0, 2:, 2:, 0] = [[1.0, 3.0], [3.0, 2.0]]
    pooled, sw = _pool_with_switches(ops.convert_to_tensor(x))
    up = ops.convert_to_numpy(_unpool(ops.ones_like(pooled), sw))[0, :, :, 0]
    assert up.tolist() == [[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0]]


def test_damaged_weights_are_refused(tmp_path, monkeypatch):
    # A weight file that does not match the manifest's checksum is refused,
    # naming the file; the shipped one loads.
    import shutil

    from maxidetect.errors import WeightsError
    from maxidetect.network import weights

    src = weights.weights_dir()
    shutil.copy(src / "manifest.json", tmp_path)
    arrays = weights.read_arrays(src / "maximask.npz")
    k, b = arrays["conv1"]
    arrays["conv1"] = (k + np.float32(1e-3), b)
    weights.save_arrays(tmp_path / "maximask.npz", arrays)
    monkeypatch.setenv("MAXIDETECT_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsError, match="maximask.npz: checksum"):
        weights.load_weight_arrays("maximask")
    (tmp_path / "maximask.npz").unlink()
    with pytest.raises(WeightsError, match="maximask.npz: weights file missing"):
        weights.load_weight_arrays("maximask")
    monkeypatch.delenv("MAXIDETECT_WEIGHTS_DIR")
    got, info = weights.load_weight_arrays("maximask")
    assert weights.arrays_checksum(got.items()) == info.sha256


def test_shipped_arrays_equal_a_fresh_conversion(tmp_path):
    # What maxidetect ships is what the maximask package holds.
    pytest.importorskip("tensorflow")
    pytest.importorskip("maximask_and_maxitrack")
    from maxidetect.network import weights

    paths = weights.convert_pretrained(tmp_path)
    for name, p in paths.items():
        a, b = weights.read_arrays(p), weights.read_arrays(weights.weights_dir() / f"{name}.npz")
        assert list(a) == list(b)
        assert all(np.array_equal(x, y) for k in a for x, y in zip(a[k], b[k], strict=True))


def test_weight_storage_is_lossless_and_deltas_need_their_base(tmp_path):
    """Byte planes and XOR deltas give back every bit (NaN payloads, signed
    zeros, denormals included); a delta whose base is gone is refused,
    naming the base."""
    from maxidetect.errors import WeightsError
    from maxidetect.network import weights

    rng = np.random.default_rng(3)
    special = np.array([0.0, -0.0, np.inf, -np.inf, 1e-45, -3e-39], np.float32)
    nan = np.array([0x7FC00001, 0xFFF00002], np.uint32).view(np.float32)
    base = {"a": (rng.normal(0, 0.1, (3, 3, 4, 8)).astype(np.float32), rng.normal(0, 1, 8).astype(np.float32)),
            "b": (np.concatenate([special, nan]),)}
    tuned = {"a": (base["a"][0] * np.float32(1.001), base["a"][1]), "b": (base["b"][0][::-1].copy(),),
             "c": (np.arange(5, dtype=np.float32),)}  # a layer the base lacks: stored whole
    weights.save_arrays(tmp_path / "base.npz", base)
    weights.save_arrays(tmp_path / "tuned.npz", tuned, base=tmp_path / "base.npz")
    for want, path in ((base, "base.npz"), (tuned, "tuned.npz")):
        got = weights.read_arrays(tmp_path / path)
        assert list(got) == list(want)
        for name in want:
            for g, w in zip(got[name], want[name], strict=True):
                assert g.dtype == np.float32 and g.shape == w.shape
                assert np.array_equal(g.view(np.uint32), w.view(np.uint32))
    with np.load(tmp_path / "tuned.npz") as z:
        assert "a/0@xor" in z.files and "c/0@planes" in z.files
    with np.load(weights.weights_dir() / "maxidetect-distill.npz") as z:  # shipped as a delta on maximask
        assert str(z["@base"].ravel()[0]) == "maximask.npz"
    (tmp_path / "base.npz").unlink()
    with pytest.raises(WeightsError, match="base.npz: weights file missing"):
        weights.read_arrays(tmp_path / "tuned.npz")
