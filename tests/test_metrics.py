"""hrnet.evaluation.metrics on hand-made cases with known answers."""
import warnings

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


# --- mutation-tested edges (tools/mutation.py metrics) ---------------------------------------------

def test_bad_shapes_name_the_expected_shape():
    preds, joints, bbox = _case()
    with pytest.raises(ValueError, match=r"preds must be \(N, J, 2\), got shape \(2, 21, 3\)"):
        M.compute_metrics(joints, joints, bbox)  # ndim 3 but 3 coordinates
    with pytest.raises(ValueError, match="preds must be"):
        M.compute_metrics(preds[0], joints, bbox)  # ndim 2
    with pytest.raises(ValueError, match=r"joints must be \(N, J, 3\) = \(2, 21, 3\), got shape \(2, 20, 3\)"):
        M.compute_metrics(preds, joints[:, :20], bbox)
    with pytest.raises(ValueError, match=r"bbox must be \(N, 4\) = \(2, 4\) xywh, got shape \(1, 4\)"):
        M.compute_metrics(preds, joints, bbox[:1])


def test_threshold_errors_name_the_culprit():
    preds, joints, bbox = _case()
    with pytest.raises(TypeError, match="a mapping or None, got int"):
        M.compute_metrics(preds, joints, bbox, 3)
    with pytest.raises(KeyError, match="missing key TEST.AUC_MAX_PX"):
        M.compute_metrics(preds, joints, bbox, {"FAILURE_THRESHOLD": 0.1, "PCK_THRESHOLD": 0.2})


def test_visibility_1_counts_as_labelled():
    """COCO v=1 (labelled, occluded) counts like v=2; only v=0 is left out."""
    preds, joints, bbox = _case(n=1)
    joints[0, :, 2] = 1.0
    preds[0, 0] += [3.0, 4.0]
    assert M.compute_metrics(preds, joints, bbox)["NME"] == pytest.approx(5.0 / 100 / J)


def test_nme_divides_by_the_labelled_count_of_each_image():
    preds, joints, bbox = _case(n=2)
    joints[0, 1:, 2] = 0  # image 0: one labelled joint, 5 px off
    preds[0, 0] += [3.0, 4.0]
    joints[1, 2:, 2] = 0  # image 1: two labelled joints, one 10 px off
    preds[1, 1] += [6.0, 8.0]
    m = M.compute_metrics(preds, joints, bbox)
    np.testing.assert_allclose(m["per_image_NME"], [0.05, 0.05])
    assert m["NME"] == pytest.approx(0.05)
    # per joint: joint 0 labelled in both images (5 px and 0), joint 1 only in image 1 (10 px)
    np.testing.assert_allclose(m["per_joint_NME"][:2], [0.025, 0.1])
    assert np.isnan(m["per_joint_NME"][2:]).all()
    assert M.epe(preds[:1], joints[:1]) == pytest.approx(5.0)  # one labelled joint: its own distance


def test_a_box_under_one_pixel_still_counts():
    preds, joints, bbox = _case(n=1, w=0.5, h=0.25)
    preds[0, 0] += [0.05, 0.0]
    m = M.compute_metrics(preds, joints, bbox)
    assert m["num_images"] == 1 and m["NME"] == pytest.approx(0.1 / J)


def test_excluded_images_give_nan_without_numpy_warnings():
    preds, joints, bbox = _case(n=2)
    bbox[:, 2:] = 0.0  # every box empty: nothing counts
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a division by zero or a mean of nothing would warn
        m = M.compute_metrics(preds, joints, bbox)
        acc, avg, cnt = M.pck_accuracy(preds, joints, bbox, 0.2)
        assert M.auc(preds, joints * [1, 1, 0]) == 0.0 and M.epe(preds, joints * [1, 1, 0]) == 0.0
        assert M.failure_rate(np.array([np.nan])) != M.failure_rate(np.array([np.nan]))  # NaN
        x, y = M.ced_curve(np.array([np.nan]), 0.1, num=5)
    assert np.isnan(m["NME"]) and m["num_images"] == 0 and m["num_images_excluded"] == 2
    assert np.isnan(m["per_image_NME"]).all() and np.isnan(m["failure_rate@0.1"])
    assert avg == 0.0 and cnt == 0 and (acc == -1).all()  # as mmpose: nothing to average
    np.testing.assert_array_equal(y, np.zeros(5))


def test_a_negative_box_is_a_perfect_pck_like_mmpose():
    """mmpose replaces a negative normaliser with 1e6 (every distance ~0); NME excludes the image."""
    preds, joints, bbox = _case(n=1)
    bbox[0, 2:] = -10.0
    preds[0] += 50.0
    assert M.pck_accuracy(preds, joints, bbox, 0.2)[1] == 1.0
    assert M.compute_metrics(preds, joints, bbox)["num_images"] == 0


def test_thresholds_are_strict_in_float32_like_mmpose():
    """A distance of exactly thr * size misses even where float32(thr) < thr (0.7, 0.35)."""
    preds, joints, bbox = _case(n=1)
    preds[0, 4, 0] += 70.0  # 70 / 100 = 0.7 exactly
    assert M.pck_accuracy(preds, joints, bbox, 0.7)[0][4] == 0.0
    preds, joints, _ = _case(n=1)
    preds[0, :, 0] += 10.5  # 10.5 / 30 = 0.35 = threshold 7 of 20: a miss there, hits from 0.4 on
    assert M.auc(preds, joints) == pytest.approx(12 / 20)


def test_pck_counts_a_labelled_keypoint_that_is_always_missed():
    preds, joints, bbox = _case()
    preds[:, 2] += 50.0
    acc, avg, cnt = M.pck_accuracy(preds, joints, bbox)  # default thr 0.2
    assert acc[2] == 0.0 and cnt == J and avg == pytest.approx((J - 1) / J)
    preds[:, 2] -= 50.0
    preds[:, 3] += 30.0  # 0.3: a miss at the default 0.2
    assert M.pck_accuracy(preds, joints, bbox)[0][3] == 0.0


def test_defaults_of_the_metric_functions():
    preds, joints, _ = _case()
    assert M.auc(preds + [1.52, 0.0], joints) == pytest.approx(0.9)  # 30 px: misses 0 and 1.5 px
    assert M.failure_rate(np.array([0.05, 0.11])) == 0.5  # threshold 0.1
    assert M.failure_rate(np.array([0.1, 0.2]), 0.1) == 0.5  # strictly greater fails
    x, y = M.ced_curve(np.array([0.05]), 0.1)
    assert len(x) == len(y) == 201
    assert y[0] == 0.0 and y[100] == 1.0 and y[99] == 0.0  # one image: a step at 0.05


def test_auc_max_px_reaches_the_auc():
    preds, joints, bbox = _case()
    preds += [4.0, 0.0]
    th = {"FAILURE_THRESHOLD": 0.1, "PCK_THRESHOLD": 0.2, "AUC_MAX_PX": 60.0}
    assert M.compute_metrics(preds, joints, bbox, th)["AUC"] == pytest.approx(M.auc(preds, joints, 60.0))
    assert M.auc(preds, joints, 60.0) != pytest.approx(M.auc(preds, joints, 30.0))


def test_nme_is_the_mean_over_images_not_the_median():
    """Three images with per-image errors 0, 1 and 5 (x 1/(100 J)): the mean 2, the median would be 1."""
    preds, joints, bbox = _case(n=3)
    preds[1, 0] += [1.0, 0.0]
    preds[2, 0] += [3.0, 4.0]
    m = M.compute_metrics(preds, joints, bbox)
    np.testing.assert_allclose(m["per_image_NME"], np.array([0.0, 1.0, 5.0]) / 100 / J)
    assert m["NME"] == pytest.approx(2.0 / 100 / J)
