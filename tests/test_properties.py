"""Invariants checked on many generated inputs (hypothesis), each property in a second or two."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

from data.codec import HeatmapCodec, _dark_margin, get_max_preds
from hrnet.evaluation import metrics as M

FAST = settings(max_examples=40, deadline=None)


# --- metrics ------------------------------------------------------------------------------------

@st.composite
def _hands(draw):
    """(preds (N, J, 2), joints (N, J, 3), bbox (N, 4)) with a random labelled subset per image."""
    n, j = draw(st.integers(1, 4)), draw(st.integers(1, 21))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    gt = rng.uniform(0, 300, (n, j, 2))
    preds = gt + rng.normal(0, draw(st.floats(0.1, 40.0)), (n, j, 2))
    vis = rng.choice([0.0, 1.0, 2.0], (n, j), p=[0.4, 0.2, 0.4])
    bbox = np.concatenate([rng.uniform(0, 50, (n, 2)), rng.uniform(1, 200, (n, 2))], axis=1)
    return preds, np.concatenate([gt, vis[..., None]], axis=2), bbox, rng


@FAST
@given(_hands(), st.sampled_from([np.nan, np.inf, -1e9, 0.0]))
def test_metrics_ignore_the_coordinates_of_unlabelled_joints(case, junk):
    preds, joints, bbox, rng = case
    ref = M.compute_metrics(preds, joints, bbox)
    unlabelled = joints[..., 2] == 0
    joints[unlabelled, :2] = junk  # e.g. NaN: what an annotation without the joint may hold
    preds[unlabelled] = rng.uniform(-1e4, 1e4, (int(unlabelled.sum()), 2))
    got = M.compute_metrics(preds, joints, bbox)
    for key in ("NME", "PCK@0.2", "AUC", "EPE", "failure_rate@0.1", "num_images"):
        assert got[key] == ref[key] or (np.isnan(got[key]) and np.isnan(ref[key])), key
    np.testing.assert_array_equal(got["per_image_NME"], ref["per_image_NME"])
    np.testing.assert_array_equal(got["per_joint_NME"], ref["per_joint_NME"])


@FAST
@given(_hands())
def test_nme_of_an_image_is_the_mean_over_its_labelled_joints(case):
    preds, joints, bbox, _ = case
    per_image = M.nme_per_image(preds, joints, bbox)
    for i in range(len(preds)):
        labelled = joints[i, :, 2] > 0
        if not labelled.any():
            assert np.isnan(per_image[i])
            continue
        dist = np.hypot(*(preds[i, labelled] - joints[i, labelled, :2]).T)
        assert per_image[i] == pytest.approx(dist.sum() / labelled.sum() / bbox[i, 2:].max(), rel=1e-12)
    m = M.compute_metrics(preds, joints, bbox)
    counted = np.isfinite(per_image)
    assert m["num_images"] == counted.sum() and m["num_images_excluded"] == (~counted).sum()
    if counted.any():
        assert m["NME"] == pytest.approx(per_image[counted].mean(), rel=1e-12)


# --- heatmap codec ------------------------------------------------------------------------------

@st.composite
def _joints_in_map(draw):
    """A non-square heatmap size, a sigma and 8 joints anywhere inside it (edges included)."""
    w, h = draw(st.integers(8, 40)), draw(st.integers(8, 40))
    xs = draw(st.lists(st.floats(-0.5, w - 0.5), min_size=8, max_size=8))
    ys = draw(st.lists(st.floats(-0.5, h - 0.5), min_size=8, max_size=8))
    return (w, h), draw(st.sampled_from([1.0, 1.5, 2.0, 3.0])), np.stack([xs, ys], 1)


@FAST
@given(_joints_in_map(), st.sampled_from(["argmax", "dark"]))
def test_encode_then_decode_returns_the_joint_within_the_stated_error(case, method):
    """Per axis: <= 0.25 px where the peak pixel has both neighbours (the quarter shift), <= 0.5 px on
    an edge pixel (no shift); DARK never worse, and < 0.12 px from its margin inwards."""
    size, sigma, joints = case
    codec = HeatmapCodec(size, sigma, method)
    target, weight = codec.encode(joints, np.ones(len(joints)))
    assert weight.tolist() == [1.0] * len(joints)
    hm = torch.from_numpy(target)[None]
    coords = codec.decode(hm)[0][0].numpy()
    peak = get_max_preds(hm)[0][0].numpy()
    err = np.abs(coords - joints)
    limit = np.array(size) - 1
    interior = (peak > 0) & (peak < limit)
    assert (err <= np.where(interior, 0.25, 0.5) + 1e-4).all(), (coords, joints)
    if method == "dark":
        margin = _dark_margin(codec.dark_kernel)
        far = (peak >= margin) & (peak <= limit - margin)
        assert (err[far] < 0.12).all(), (coords, joints)


# --- crop geometry and photometric augmentation --------------------------------------------------

@FAST
@given(st.tuples(st.floats(-500, 2000), st.floats(-500, 2000)), st.tuples(st.floats(1, 3000), st.floats(1, 3000)),
       st.floats(-180, 180), st.tuples(st.integers(1, 512), st.integers(1, 512)), st.booleans())
def test_the_affine_and_its_inverse_compose_to_identity(center, scale, rotation, out_size, flip):
    from data.transforms import get_affine_transform, invert_affine, transform_points

    fwd = get_affine_transform(center, scale, rotation, out_size, flip)
    inv = get_affine_transform(center, scale, rotation, out_size, flip, inverse=True)
    pts = np.array([[0.0, 0.0], [out_size[0] - 1.0, out_size[1] - 1.0], [-0.5, 7.25]])
    np.testing.assert_allclose(transform_points(transform_points(pts, inv), fwd), pts, atol=1e-6)
    img_pts = np.array(center) + np.array([[0.0, 0.0], [scale[0] / 3, -scale[1] / 5]])
    np.testing.assert_allclose(transform_points(transform_points(img_pts, fwd), inv), img_pts,
                               atol=1e-9 * max(scale) + 1e-9)
    np.testing.assert_allclose(invert_affine(inv), fwd, atol=1e-9 * max(1.0, np.abs(fwd).max()))
    # the box centre lands on the output centre, whatever the rotation and flip
    np.testing.assert_allclose(transform_points(np.array([center]), fwd)[0],
                               [(out_size[0] - 1) / 2, (out_size[1] - 1) / 2], atol=1e-6)


# Statistical properties: derandomized, so a run is reproducible (tolerances are 5 standard errors).
STATS = settings(max_examples=10, deadline=None, derandomize=True)


@STATS
@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(0.01, 0.5),
       st.floats(0.0, 30.0), st.floats(0.0, 40.0), st.floats(0.001, 0.1), st.integers(0, 2**32 - 1))
def test_photometric_effects_fire_independently_with_their_own_probability(color, blur, noise, bright, hue, sat,
                                                                            std, seed):
    from data.transforms import PhotometricAug

    aug = PhotometricAug(bright, hue, sat, color, blur, noise, std)
    aug.set_random_state(np.random.default_rng(seed))
    n = 3000
    draws = [aug.draw() for _ in range(n)]
    fired = {k: np.array([k in d for d in draws]) for k in ("alpha", "hue", "ksize", "noise")}
    probs = {"alpha": color, "hue": color, "ksize": blur, "noise": noise}
    for k, p in probs.items():
        assert abs(fired[k].mean() - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-9, k
    keys = list(probs)
    for i, a in enumerate(keys):  # each pair fires together as often as independence says
        for b in keys[i + 1:]:
            pab = probs[a] * probs[b]
            assert abs((fired[a] & fired[b]).mean() - pab) <= 5 * np.sqrt(pab * (1 - pab) / n) + 1e-9, (a, b)
    # every parameter within its documented range
    for d in draws:
        if "alpha" in d:
            assert 1 - bright <= d["alpha"] <= 1 + bright and abs(d["beta"]) <= 255 * bright
        if "hue" in d:
            assert abs(d["hue"]) <= hue and abs(d["sat"]) <= sat and isinstance(d["sat"], int)
        if "ksize" in d:
            assert d["ksize"] in (3, 5) and 0.3 <= d["sigma"] <= 1.5
        if "noise" in d:
            assert 255 * std / 4 <= d["noise"] <= 255 * std and 0 <= d["seed"] < 2**31 - 1


@STATS
@given(st.integers(0, 2**32 - 1))
def test_photometric_parameters_are_uncorrelated(seed):
    """Within an effect (alpha and beta, hue and saturation, kernel and sigma) and across effects,
    the parameters come from separate uniforms: no correlation."""
    from data.transforms import PhotometricAug

    aug = PhotometricAug(0.2, 10, 20, 1.0, 1.0, 1.0, 0.04)
    aug.set_random_state(np.random.default_rng(seed))
    draws = [aug.draw() for _ in range(2000)]
    cols = np.array([[d[k] for k in ("alpha", "beta", "hue", "sat", "ksize", "sigma", "noise")] for d in draws])
    corr = np.corrcoef(cols.T.astype(np.float64))
    off = corr[~np.eye(len(corr), dtype=bool)]
    assert np.abs(off).max() < 5 / np.sqrt(len(draws)), corr.round(3)


@STATS
@given(st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.floats(0.01, 0.5), st.floats(1.0, 45.0), st.integers(0, 2**32 - 1))
def test_geometric_augmentation_draws_are_independent(rot_prob, flip_prob, scale_factor, rot_factor, seed):
    from data.transforms import sample_augmentation

    rng = np.random.default_rng(seed)
    n = 3000
    s, r, f = (np.array(v) for v in zip(*[sample_augmentation(rng, scale_factor, rot_factor, rot_prob, flip_prob)
                                          for _ in range(n)]))
    assert (np.abs(s - 1) <= scale_factor + 1e-12).all() and (np.abs(r) <= rot_factor).all()
    rotated = r != 0
    for frac, p in ((rotated.mean(), rot_prob), (f.mean(), flip_prob), ((rotated & f).mean(), rot_prob * flip_prob)):
        assert abs(frac - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-9
    if rotated.sum() > 100:  # scale and rotation angle from separate uniforms
        assert abs(np.corrcoef(s[rotated], r[rotated])[0, 1]) < 5 / np.sqrt(rotated.sum())
