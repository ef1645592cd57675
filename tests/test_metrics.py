"""hrnet.evaluation.metrics on hand-made cases with known answers."""
import numpy as np
import pytest

from hrnet.evaluation import metrics as M

J = 21


def _case(n=2, w=100.0, h=50.0):
    """n images, all joints labelled (v=2) and predicted exactly; bbox (10, 20, w, h)."""
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 200, (n, J, 2))
    joints = np.concatenate([gt, np.full((n, J, 1), 2.0)], axis=2)
    bbox = np.tile([10.0, 20.0, w, h], (n, 1))
    return gt.copy(), joints, bbox


def test_one_joint_off_by_known_distance():
    preds, joints, bbox = _case()
    preds[0, 3] += [3.0, 4.0]  # 5 px; max(w, h) = 100
    m = M.compute_metrics(preds, joints, bbox, {"FAILURE_THRESHOLD": 0.1, "PCK_THRESHOLD": 0.2,
                                                "AUC_MAX_PX": 30.0})
    np.testing.assert_allclose(m["per_image_NME"], [5.0 / 100 / J, 0.0])
    assert m["NME"] == pytest.approx(5.0 / 100 / J / 2)
    assert m["EPE"] == pytest.approx(5.0 / (2 * J), rel=1e-6)
    assert m["PCK@0.2"] == 1.0  # 5 px < 0.2 * 100
    assert m["failure_rate@0.1"] == 0.0
    expected_joint = np.zeros(J)
    expected_joint[3] = 5.0 / 100 / 2
    np.testing.assert_allclose(m["per_joint_NME"], expected_joint)
    assert m["num_images"] == 2 and m["num_images_excluded"] == 0
    # AUC: 5/30 px -> correct from threshold 0.2 (6 px) on: thresholds 0.2..0.95 = 16 of 20.
    # Perfect joints miss only the 0 threshold; joint 3 of image 0 also misses 0.05..0.15.
    acc = np.full((20, J), 1.0)
    acc[0] = 0.0
    acc[1:4, 3] = 0.5
    assert m["AUC"] == pytest.approx(acc.mean(axis=1).mean())


def test_pck_is_per_keypoint_then_averaged_like_mmpose():
    preds, joints, bbox = _case()
    preds[0, 3] += [18.0, 24.0]  # 30 px > 20 px
    acc, avg, cnt = M.pck_accuracy(preds, joints, bbox, 0.2)
    assert acc[3] == 0.5 and np.all(np.delete(acc, 3) == 1.0)
    assert avg == pytest.approx((20 + 0.5) / J) and cnt == J


def test_pck_normalises_both_axes_by_the_longer_side():
    preds, joints, bbox = _case(w=50.0, h=100.0)
    preds[:, 0, 0] += 15.0  # 15 / max(50, 100) = 0.15 < 0.2 (15 / w = 0.3 would fail)
    assert M.pck_accuracy(preds, joints, bbox, 0.2)[1] == 1.0
    preds[:, 0, 0] += 10.0  # 25 / 100 = 0.25
    assert M.pck_accuracy(preds, joints, bbox, 0.2)[0][0] == 0.0


def test_pck_threshold_is_strict():
    preds, joints, bbox = _case()
    preds[:, 5, 0] += 20.0  # exactly 0.2 * 100: mmpose counts distance < thr only
    assert M.pck_accuracy(preds, joints, bbox, 0.2)[0][5] == 0.0


def test_unlabelled_joints_are_ignored():
    preds, joints, bbox = _case()
    ref = M.compute_metrics(preds, joints, bbox)
    joints[0, 7, 2] = 0
    joints[1, 7, 2] = 0
    preds[:, 7] += 1000.0  # a wild prediction of a joint that is not labelled anywhere
    m = M.compute_metrics(preds, joints, bbox)
    for key in ("NME", "PCK@0.2", "AUC", "EPE", "failure_rate@0.1"):
        assert m[key] == ref[key], key
    assert np.isnan(m["per_joint_NME"][7])
    acc, _, cnt = M.pck_accuracy(preds, joints, bbox, 0.2)
    assert acc[7] == -1 and cnt == J - 1  # as mmpose: -1, left out of the average


def test_image_without_labelled_joint_is_excluded_and_counted():
    preds, joints, bbox = _case(n=3)
    joints[2, :, 2] = 0
    preds[2] += 500.0
    preds[0, 0] += [6.0, 8.0]
    m = M.compute_metrics(preds, joints, bbox)
    assert m["num_images"] == 2 and m["num_images_excluded"] == 1
    assert np.isnan(m["per_image_NME"][2])
    assert m["NME"] == pytest.approx((10.0 / 100 / J) / 2)


def test_auc_of_a_perfect_prediction_is_0_95():
    preds, joints, bbox = _case()
    assert M.auc(preds, joints) == pytest.approx(0.95)  # threshold 0 never holds (d < 0)
    preds += [1.6, 0.0]  # misses thresholds 0 and 1.5 px, hits 3 .. 28.5 px
    assert M.auc(preds, joints) == pytest.approx(0.9)
    assert M.auc(preds + 100.0, joints) == 0.0


def test_failure_rate_and_names_follow_the_thresholds():
    preds, joints, bbox = _case(n=3)
    preds[0] += [5.0, 0.0]   # NME 0.05
    preds[1] += [20.0, 0.0]  # NME 0.2
    preds[2] += [15.0, 0.0]  # NME 0.15
    th = {"FAILURE_THRESHOLD": 0.1, "PCK_THRESHOLD": 0.1, "AUC_MAX_PX": 30.0}
    m = M.compute_metrics(preds, joints, bbox, th)
    assert m["failure_rate@0.1"] == pytest.approx(2 / 3)
    assert m["PCK@0.1"] == pytest.approx(1 / 3)
    th["FAILURE_THRESHOLD"] = 0.16
    assert M.compute_metrics(preds, joints, bbox, th)["failure_rate@0.16"] == pytest.approx(1 / 3)


def test_config_and_defaults_give_the_documented_keys():
    from conftest import make_cfg

    preds, joints, bbox = _case()
    m = M.compute_metrics(preds, joints, bbox, make_cfg())
    assert set(m) >= {"NME", "failure_rate@0.1", "PCK@0.2", "AUC", "EPE", "num_images", "per_joint_NME",
                      "per_image_NME"}
    assert m["per_joint_NME"].shape == (J,) and m["per_image_NME"].shape == (2,)
    assert M.compute_metrics(preds, joints, bbox)["PCK@0.2"] == 1.0


def test_zero_size_box_is_excluded():
    preds, joints, bbox = _case()
    bbox[1, 2:] = 0.0
    m = M.compute_metrics(preds + 1.0, joints, bbox)
    assert m["num_images"] == 1 and m["num_images_excluded"] == 1
    assert M.pck_accuracy(preds, joints, bbox, 0.2)[1] == 1.0  # mmpose drops it as well


def test_ced_curve():
    x, y = M.ced_curve(np.array([0.01, 0.02, np.nan, 0.2]), 0.1, num=11)
    assert x[0] == 0 and x[-1] == pytest.approx(0.1)
    assert y[0] == 0 and y[1] == pytest.approx(1 / 3) and y[2] == pytest.approx(2 / 3) and y[-1] == pytest.approx(2 / 3)
    assert np.all(np.diff(y) >= 0)


def test_bad_shapes_are_reported():
    preds, joints, bbox = _case()
    with pytest.raises(ValueError, match="joints must be"):
        M.compute_metrics(preds, joints[:, :20], bbox)
    with pytest.raises(ValueError, match="bbox must be"):
        M.compute_metrics(preds, joints, bbox[:1])
