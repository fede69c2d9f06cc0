"""The ONNX Runtime engine against the Keras network, and engine selection."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from astropy.io import fits

from maxidetect.network.architecture import LAYER_SPECS
from maxidetect.network.inference import Predictor, resolve_engine
from maxidetect.network.normalise import normalise

from .conftest import REPO, assert_masks_agree, assert_probs_agree, real

pytest.importorskip("onnxruntime")


def test_engines_agree_on_real_data_any_size(predictor, keras_predictor):
    assert predictor.engine == "onnxruntime" and keras_predictor.engine == "keras"
    im = normalise(fits.getdata(real("ccdproc_a8280271_saao_raw.fits")))
    # On the tile grid (the fast graph) and off it, down to one pixel.
    for (y, x, h, w) in [(0, 0, 512, 512), (100, 136, 256, 384), (5, 7, 33, 65), (0, 0, 7, 300), (9, 9, 1, 1)]:
        batch = im[None, y : y + h, x : x + w]
        ours, ref = predictor.forward(batch), keras_predictor.forward(batch)
        assert ours.shape == ref.shape == (1, h, w, 14)
        assert_probs_agree(ours, ref)
        assert assert_masks_agree(ours, ref) <= 5, (h, w)


def test_row_strips_equal_the_whole_network(predictor, monkeypatch):
    # The engine runs stem and head in row strips around a whole-tile core;
    # stitched, the strips must equal the network run in one graph.
    import maxidetect.network.onnx_engine as onnxnet

    fwd = predictor._forward
    # The bundled example frame: runs without the shared reference data too.
    x = normalise(fits.getdata(REPO / "examples" / "fitswcs_tpv_ctio_mosaic2.fits"))[None, 40:296, 8:328]
    whole = np.empty((1, 14, 256, 320), np.float32)
    fwd._run("full", {"x": np.arcsinh(x)[:, None]}, {"y": whole})

    def stitched():
        out = np.full_like(whole, np.nan)
        starts = []
        for r0, r1, probs in fwd.iter_rows(x):
            assert probs.shape == (1, 14, r1 - r0, 320)
            out[:, :, r0:r1] = probs
            starts.append(r0)
        return out, starts

    monkeypatch.setattr(onnxnet, "_STRIP_PIXELS", 40 * 320)  # strips of 40 rows
    out, starts = stitched()
    assert starts == list(range(0, 256, 40))
    assert_probs_agree(out, whole)
    # Each halo is needed: a narrower one changes the result.
    for name, narrower in (("STEM_HALO", 0), ("HEAD_HALO", 4)):
        with monkeypatch.context() as m:
            m.setattr(onnxnet, name, narrower)
            assert np.abs(stitched()[0] - whole).max() > 1e-3, name


def test_channel_padding_on_a_narrow_network():
    # width 0.3 gives 10- and 19-channel layers: the ONNX graph pads them to
    # multiples of 8 with zero filters, which must not change the result.
    from maxidetect.network.keras_engine import build_model
    from maxidetect.network.onnx_engine import OnnxForward

    model = build_model(width=0.3)
    rng = np.random.default_rng(3)
    for layer in model.layers:
        k, b = layer.get_weights()
        layer.set_weights([rng.normal(0, 0.3, k.shape).astype(np.float32),
                           rng.normal(0, 0.1, b.shape).astype(np.float32)])
    weights = {layer.name: tuple(layer.get_weights()) for layer in model.layers}
    assert {w[0].shape[3] for w in weights.values()} & {10, 19}
    x = rng.normal(0, 3, (2, 64, 96)).astype(np.float32)
    ref = np.moveaxis(np.asarray(model(x[..., None])), -1, 1)
    ours = OnnxForward(weights)(x)
    assert_probs_agree(ours, ref)


def test_forward_results_are_not_overwritten_by_the_next_call(predictor):
    a = np.zeros((1, 64, 64), np.float32)
    b = np.full((1, 64, 64), 50.0, np.float32)
    first = predictor.forward(a)
    kept = first.copy()
    predictor.forward(b)
    assert np.array_equal(first, kept)


def test_threads_sharing_the_engine_get_their_own_results(predictor, monkeypatch):
    # A Dask worker's threads share one engine; its reused strip buffers
    # must not be shared between them (shared, 11 of these 20 results were
    # wrong in one run).
    from concurrent.futures import ThreadPoolExecutor

    import maxidetect.network.onnx_engine as onnxnet

    monkeypatch.setattr(onnxnet, "_STRIP_PIXELS", 32 * 256)  # 8 strips per call: many chances to race
    rng = np.random.default_rng(5)
    inputs = [rng.normal(0, 3 * (k + 1), (1, 256, 256)).astype(np.float32) for k in range(4)]
    serial = [predictor.forward(x) for x in inputs]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            for got, want in zip(pool.map(predictor.forward, inputs), serial, strict=True):
                assert np.array_equal(got, want)


def test_engine_selection(monkeypatch):
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert resolve_engine() == "onnxruntime"
    from maxidetect.network import openvino_engine

    assert resolve_engine(precision="float16") == "keras"
    assert resolve_engine(precision="bfloat16") == ("openvino" if openvino_engine.available() else "keras")
    assert resolve_engine(precision="mixed") == "openvino"
    assert resolve_engine(precision="int8") == "onnxruntime"
    with pytest.raises(ValueError, match="runs precision"):
        resolve_engine("openvino", precision="int8")
    assert resolve_engine("keras") == "keras"
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert resolve_engine() == "keras"  # the user chose a Keras backend
    with pytest.raises(ValueError, match="engine must be one of"):
        resolve_engine("tensorrt")
    with pytest.raises(ValueError, match="runs precision float32 or int8, not 'float16'"):
        Predictor(engine="onnxruntime", precision="float16")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_engine(precision="int4")


def test_gpu_node_without_keras_backend_is_warned(monkeypatch, tmp_path):
    import maxidetect.network.inference as inference
    from maxidetect.errors import MaxidetectWarning

    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setattr(inference, "_NVIDIA_DEVICE", str(tmp_path / "nvidiactl"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_engine() == "onnxruntime"  # no GPU: silent
    (tmp_path / "nvidiactl").touch()
    with pytest.warns(MaxidetectWarning, match="KERAS_BACKEND=jax"):
        assert resolve_engine() == "onnxruntime"


def test_weight_arrays_need_no_keras():
    from maxidetect.network import weights

    arrays, info = weights.load_weight_arrays()
    assert sum(k.size + b.size for k, b in arrays.values()) == 5_727_944 == info.architecture["parameters"]
    assert list(arrays) == [n for n, _, _ in LAYER_SPECS]

def test_cli_default_run_does_not_start_tensorflow(tmp_path):
    # The point of the engine: no TensorFlow/Keras import (seconds and
    # ~650 MB) on the default path.
    data = np.random.default_rng(0).normal(100, 5, (96, 128)).astype(np.float32)
    fits.writeto(tmp_path / "f.fits", data)
    code = (
        "import sys; from maxidetect.cli import main; rc = main(['mask', sys.argv[1], '-o', sys.argv[2]]); "
        "print('LOADED', sorted(m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules)); sys.exit(rc)"
    )
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "f.fits"), str(tmp_path / "out")],
                         capture_output=True, text=True, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout
    with fits.open(tmp_path / "out" / "f.masks.fits") as hdul:
        assert hdul[0].header["MDENGINE"] == "onnxruntime"
        assert hdul[0].data.shape == (14, 96, 128)


def test_mask_switches_equal_maxunpool_indices(predictor):
    """The index-free pooling (boolean position masks, SpaceToDepth /
    DepthToSpace: what OpenVINO runs) is the same network: identical
    results, ties in flat (zero) regions included."""
    import onnxruntime as ort

    from maxidetect.network.onnx_engine import build_graph

    x = normalise(fits.getdata(REPO / "examples" / "fitswcs_tpv_ctio_mosaic2.fits"))[None, None, :256, :256]
    x = np.arcsinh(x).astype(np.float32)
    x[..., 100:140, 60:120] = 0.0  # flat: every pooling window a tie
    weights = predictor._forward.weights
    out = {}
    for switches in ("indices", "masks"):
        graph = build_graph(weights, part="full", switches=switches)
        out[switches] = ort.InferenceSession(graph, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.array_equal(out["indices"], out["masks"])
    with pytest.raises(ValueError, match="32 px grid"):
        build_graph(weights, shape=(100, 100), switches="masks")


def _openvino_forward(predictor, precision):
    from maxidetect.network.openvino_engine import OpenVinoForward, supports_bf16

    if precision != "float32" and not supports_bf16():
        with pytest.warns(Warning, match="no bfloat16"):
            return OpenVinoForward(predictor._forward.weights, precision=precision)
    return OpenVinoForward(predictor._forward.weights, precision=precision)


@pytest.mark.parametrize("precision,max_fraction", [("float32", 1e-4), ("mixed", 1e-3)])
def test_openvino_engine_agrees_with_onnxruntime(predictor, precision, max_fraction):
    """OpenVINO in float32: masks equal to float32 noise (a near-tie in a
    max-pool window may move one unpooled value: rare pixels); with the deep
    part in bfloat16 ("mixed"), at most 0.1% of mask pixels differ (measured
    0.004-0.03% on simulated and real frames: benchmarks/results/engine_profile.md);
    every run stitches strips and odd sizes as the reference engine does."""
    pytest.importorskip("openvino")
    from maxidetect.classes import ClassConfig
    from maxidetect.priors import modify_priors, prior_factors

    cfg = ClassConfig.default()
    f = prior_factors(cfg.priors)
    thr = np.asarray(cfg.thresholds)[None, :, None, None]
    fwd = _openvino_forward(predictor, precision)
    im = normalise(fits.getdata(real("ccdproc_a8280271_saao_raw.fits")))
    for (y, x, h, w) in [(0, 0, 512, 512), (5, 7, 33, 65)]:  # on the grid (parts), off it (ONNX Runtime fallback)
        batch = im[None, y:y + h, x:x + w]
        ours, ref = fwd(batch), predictor._forward(batch)
        assert ours.shape == ref.shape
        differ = (modify_priors(ours.astype(np.float64), f, axis=1) > thr) != \
            (modify_priors(ref.astype(np.float64), f, axis=1) > thr)
        assert differ.mean() <= max_fraction, (precision, h, w, differ.mean())
        if precision == "float32":
            assert np.percentile(np.abs(ours - ref), 99.9) < 1e-4


def _mask_differ(ours, ref):
    from maxidetect.classes import ClassConfig
    from maxidetect.priors import modify_priors, prior_factors

    cfg = ClassConfig.default()
    f = prior_factors(cfg.priors)
    thr = np.asarray(cfg.thresholds)
    return (modify_priors(ours.astype(np.float64), f, axis=-1) > thr) != \
        (modify_priors(ref.astype(np.float64), f, axis=-1) > thr)


def test_int8_deep_part_agrees_with_float32(predictor):
    """--precision int8 (integer convolutions in the deep part, float32 at
    the ends) on a real frame left out of its calibration: at most 0.1% of
    contaminant mask pixels differ from float32 (measured 0.005-0.05% on
    simulated and real frames, benchmarks/results/engine_profile.md); the
    integer path really ran (probabilities are not float32's), on the grid
    (parts) and off it (one graph)."""
    from maxidetect.classes import CLASS_NAMES

    q = Predictor(precision="int8")
    assert q.engine == "onnxruntime" and q.precision == "int8"
    im = normalise(fits.getdata(real("fitswcs_zpn_ukirt_wfcam.fits")))
    contaminants = [k for k, c in enumerate(CLASS_NAMES) if c != "BG"]
    for (y, x, h, w) in [(0, 0, 512, 512), (5, 7, 300, 333)]:
        batch = im[None, y:y + h, x:x + w]
        ours, ref = q.forward(batch), predictor.forward(batch)
        assert ours.shape == ref.shape
        assert np.abs(ours - ref).max() > 1e-3  # not the float32 graph
        differ = _mask_differ(ours, ref)
        assert differ[..., contaminants].mean() <= 1e-3, (h, w, differ.mean(axis=(0, 1, 2)))
        assert differ.mean() <= 3e-3


def test_int8_ranges_belong_to_the_model_weights(tmp_path, monkeypatch):
    """A model without ranges, or ranges measured on other weights, is a
    clear error naming the model, never a silently wrong network."""
    import json
    import shutil

    from maxidetect.network.quantise import INT8_LAYERS, calibration_path, load_ranges
    from maxidetect.network.weights import weights_dir

    assert set(load_ranges("maximask")) == set(INT8_LAYERS)
    with pytest.raises(ValueError, match="'maxidetect-distill' has no int8 calibration"):
        Predictor("maxidetect-distill", precision="int8")
    shipped = json.loads(calibration_path("maximask").read_text())
    for f in weights_dir().glob("*.json"):
        shutil.copy(f, tmp_path / f.name)
    monkeypatch.setenv("MAXIDETECT_WEIGHTS_DIR", str(tmp_path))
    calibration_path("maximask").write_text(json.dumps({**shipped, "weights_sha256": "0" * 64}))
    with pytest.raises(ValueError, match="other weights than model 'maximask'"):
        load_ranges("maximask")


def test_int8_calibration_ranges():
    """Ranges are the largest value each layer's input and output reach:
    positive, and a layer's input range is the output range of the layer
    feeding it directly."""
    from maxidetect.network.quantise import INT8_LAYERS, calibrate
    from maxidetect.network.weights import load_weight_arrays

    weights, _ = load_weight_arrays(None)
    im = normalise(fits.getdata(real("ccdproc_a8280271_saao_raw.fits")))[:256, :320]
    ranges = calibrate(weights, [im])
    assert list(ranges) == list(INT8_LAYERS)
    assert all(a > 0 and b > 0 for a, b in ranges.values())
    assert ranges["conv3_2"][0] == ranges["conv3_1"][1]
    assert ranges["conv4_2"][0] == ranges["conv4_1"][1]
    with pytest.raises(ValueError, match="no calibration image"):
        calibrate(weights, [im[:16, :16]])
