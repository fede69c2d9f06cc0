import numpy as np
import pytest

from maxidetect.classes import (
    CLASS_NAMES,
    CLASSES,
    ClassConfig,
    parse_class_list,
    read_config_file,
    write_config_file,
)
from maxidetect.priors import bitmask, modify_priors, prior_factors, threshold


def test_registry_matches_maximask_bit_codes_and_order():
    assert CLASS_NAMES == ("CR", "HCL", "DCL", "HP", "DP", "P", "TRL", "FR", "NEB", "SAT", "SP", "OV", "BBG", "BG")
    assert [c.bit for c in CLASSES] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 0]
    assert sum(c.training_prior for c in CLASSES) == pytest.approx(1.152, abs=1e-9)  # multi-label: sums past 1


def test_maximask_shipped_config_files_read_as_registry_defaults():
    from pathlib import Path

    import maximask_and_maxitrack

    d = Path(maximask_and_maxitrack.__file__).parent / "maximask" / "config"
    cfg = ClassConfig.from_dir(d)
    ref = ClassConfig.default()
    assert cfg.selected.all()
    np.testing.assert_array_equal(cfg.priors, ref.priors)
    np.testing.assert_array_equal(cfg.thresholds, ref.thresholds)


def test_config_round_trip_keeps_full_precision(tmp_path):
    cfg = ClassConfig.default()
    cfg.priors[0] = 0.000123456789
    cfg.selected[3] = False
    cfg.to_dir(tmp_path)
    back = ClassConfig.from_dir(tmp_path)
    assert back.priors[0] == 0.000123456789
    assert not back.selected[3] and back.selected.sum() == 13
    np.testing.assert_array_equal(back.thresholds, cfg.thresholds)


def test_config_file_rows_out_of_order_are_refused(tmp_path):
    p = tmp_path / "classes.thresh"
    write_config_file(p, np.full(14, 0.5))
    lines = p.read_text().splitlines()
    lines[0], lines[1] = lines[1], lines[0]
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="order matters"):
        read_config_file(p)
    p.write_text("CR 0.5\n")
    with pytest.raises(ValueError, match="expected 14 rows"):
        read_config_file(p)


def test_parse_class_list():
    sel = parse_class_list("cr, TRL")
    assert sel.sum() == 2 and sel[0] and sel[6]
    with pytest.raises(ValueError, match="unknown contaminant class"):
        parse_class_list("CR,XX")


def test_prior_modification_against_hand_computed_values():
    # CR: PN(c)=0.01, P(c)=5e-4 -> f = (0.01/0.99) * (0.9995/0.0005) = 20.1919...
    f = prior_factors([5e-4], [0.01])
    assert f[0] == pytest.approx((0.01 / 0.99) * (0.9995 / 0.0005), rel=1e-12)
    p = np.array([[0.9], [0.5], [0.0], [1.0]]).T  # classes on axis 0
    out = modify_priors(p, f, axis=0)
    expected = [0.9 / (0.9 + f[0] * 0.1), 0.5 / (0.5 + f[0] * 0.5), 0.0, 1.0]
    np.testing.assert_allclose(out[0], expected, rtol=1e-12)
    # New prior equal to the training prior changes nothing.
    np.testing.assert_allclose(modify_priors(p, prior_factors([0.01], [0.01])), p, rtol=1e-12)


def test_prior_modification_keeps_ranking():
    rng = np.random.default_rng(1)
    p = rng.random((1, 1000))
    out = modify_priors(p, prior_factors([1e-4], [0.2]))
    assert np.array_equal(np.argsort(p[0]), np.argsort(out[0]))
    assert np.all(out <= p)  # a smaller prior lowers every posterior


def test_threshold_is_strict_and_bitmask_ors_codes():
    p = np.array([[[0.43, 0.44]], [[0.99, 0.0]]])  # CR, then HP via class_indices
    m = threshold(p, [0.43, 0.5])
    assert m.tolist() == [[[False, True]], [[True, False]]]
    bits = bitmask(np.array([[[1, 1]], [[1, 0]]]), class_indices=[0, 3])
    assert bits.tolist() == [[1 | 8, 1]]
    assert bits.dtype == np.int32
