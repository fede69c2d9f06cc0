"""The Keras 3 network against the SavedModel shipped by maximask 1.4.1."""

import numpy as np
import pytest
from astropy.io import fits

from maxidetect.classes import ClassConfig
from maxidetect.masks.priors import modify_priors, prior_factors, threshold
from maxidetect.network.normalise import normalise

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


def test_corrupted_cache_is_rebuilt(tmp_path, monkeypatch):
    from maxidetect.network import weights

    monkeypatch.setenv("MAXIDETECT_CACHE", str(tmp_path))
    info = weights.get_model_info()
    info.cache_file.parent.mkdir(parents=True, exist_ok=True)
    model, _ = weights.load_network()  # converts and caches
    assert info.cache_file.exists()
    # Damage one weight in the cached file: the checksum must catch it.
    model.convs["conv1"].kernel.assign(np.zeros((3, 3, 1, 32), np.float32))
    model.save_weights(str(info.cache_file), overwrite=True)
    model2, _ = weights.load_network()
    assert weights.weights_checksum(model2) == info.sha256
