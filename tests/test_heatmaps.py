"""data.codec: Gaussian targets and their decoding (argmax + quarter shift, DARK)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data.codec import _blurred_log_patch, decode_heatmaps, encode_heatmaps

W = H = 64


def _rotated_gaussian(centre, sigmas, angle_deg, size=(W, H)):
    """(H, W) analytic Gaussian exp(-d^T S^-1 d / 2), S = R diag(sigmas^2) R^T, R rotating by
    ``angle_deg`` (x toward y), peak 1 at the sub-pixel ``centre`` (x, y); independent of the encoder."""
    t = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    precision = np.linalg.inv(rot @ np.diag(np.square(sigmas)) @ rot.T)
    yy, xx = np.mgrid[0:size[1], 0:size[0]].astype(np.float64)
    d = np.stack([xx - centre[0], yy - centre[1]], -1)
    return np.exp(-0.5 * np.einsum("...i,ij,...j->...", d, precision, d))


def _gaussians(centres, sigma=2.0, size=(W, H)):
    """(1, N, H, W) tensor of sigma-2 targets at ``centres`` (N, 2) heatmap pixels."""
    target, weight = encode_heatmaps(centres, np.ones(len(centres)), size, sigma)
    assert weight.all()
    return torch.from_numpy(target)[None]


def test_encode_peak_and_weights():
    joints = np.array([[10.3, 20.7], [5.0, 5.0], [70.0, 3.0], [-0.6, 3.0], [3.0, 63.4]])
    visible = np.array([2, 0, 1, 1, 1])
    target, weight = encode_heatmaps(joints, visible, (W, H), 2.0)
    assert target.shape == (5, H, W) and target.dtype == np.float32
    np.testing.assert_array_equal(weight, [1, 0, 0, 0, 1])  # unlabelled, outside right, outside left
    assert not target[1:4].any()
    # Value at pixel (10, 21): exp(-(0.3^2 + 0.3^2) / 8); the peak pixel is the nearest one.
    assert target[0, 21, 10] == pytest.approx(np.exp(-(0.09 + 0.09) / 8), rel=1e-6)
    assert np.unravel_index(target[0].argmax(), (H, W)) == (21, 10)


def test_argmax_recovers_interior_centres_within_a_quarter_pixel():
    rng = np.random.default_rng(0)
    centres = rng.uniform(1.5, W - 2.5, (2000, 2))
    coords, maxvals = decode_heatmaps(_gaussians(centres), "argmax")
    err = np.abs(coords[0].numpy() - centres)
    assert err.max() <= 0.25 + 1e-4
    assert np.abs((coords[0].numpy() - centres).mean(0)).max() < 0.02  # unbiased
    assert maxvals.shape == (1, 2000) and float(maxvals.max()) <= 1.0


def test_dark_recovers_interior_centres_within_a_tenth_of_a_pixel():
    rng = np.random.default_rng(1)
    centres = rng.uniform(3.5, W - 4.5, (2000, 2))
    coords, _ = decode_heatmaps(_gaussians(centres), "dark")
    err = np.abs(coords[0].numpy() - centres)
    assert err.max() < 0.1
    # Away from the edges (the blur's zero padding is out of reach) DARK is exact on a Gaussian.
    far = (centres > 6.5).all(1) & (centres < W - 7.5).all(1)
    assert err[far].max() < 2e-3


@pytest.mark.parametrize("sigmas", [(3.0, 1.5), (2.5, 1.2), (1.5, 2.8)])
def test_dark_is_exact_on_rotated_anisotropic_gaussians(sigmas):
    """A tilted ellipse has a mixed second derivative: the 2-D Newton step needs it with the right sign
    (its sign flipped, the error reaches ~0.4 px here); DARK recovers every centre within 0.05 px."""
    rng = np.random.default_rng(6)
    centres = rng.uniform(12.0, W - 13.0, (120, 2))
    angles = rng.uniform(0.0, 180.0, 120)
    hm = np.stack([_rotated_gaussian(c, sigmas, a) for c, a in zip(centres, angles)])[None].astype(np.float32)
    coords, _ = decode_heatmaps(hm, "dark")
    err = np.abs(coords[0].numpy() - centres).max(1)
    assert err.max() < 0.05, (err.max(), angles[err.argmax()])
    assert np.abs(decode_heatmaps(hm, "argmax")[0][0].numpy() - centres).max() > 0.1  # the case is not trivial


def test_dark_near_the_edge_is_never_worse_than_the_quarter_shift():
    rng = np.random.default_rng(2)
    xs = np.concatenate([rng.uniform(0.5, 4.5, 1000), rng.uniform(W - 5.5, W - 1.5, 1000)])
    centres = np.stack([xs, rng.uniform(20, 40, 2000)], 1)
    hm = _gaussians(centres)
    dark = np.abs(decode_heatmaps(hm, "dark")[0][0].numpy() - centres)
    assert dark.max() <= 0.25 + 1e-3
    assert dark[:, 1].max() < 2e-3  # the other axis keeps its 1-D Newton step


def test_dark_blur_window_equals_blurring_the_whole_map():
    """The 15x15 window shortcut gives DarkPose's full-map zero-padded blur at the 5x5 stencil."""
    rng = np.random.default_rng(3)
    hm = torch.from_numpy(rng.random((2, 3, 32, 40)).astype(np.float32))
    x = torch.tensor([[0, 5, 39], [20, 38, 1]])
    y = torch.tensor([[0, 31, 16], [2, 29, 30]])
    patch = _blurred_log_patch(hm, x, y, 11)
    sigma = 0.3 * ((11 - 1) * 0.5 - 1) + 0.8
    g = torch.exp(-0.5 * ((torch.arange(11.0) - 5) / sigma) ** 2)
    g = g / g.sum()
    full = F.conv2d(hm.reshape(6, 1, 32, 40), (g[:, None] * g[None, :])[None, None], padding=5)
    full = torch.log(F.pad(full, (2, 2, 2, 2)).clamp_min(1e-10)).reshape(2, 3, 36, 44)
    for b in range(2):
        for j in range(3):
            xi, yi = int(x[b, j]), int(y[b, j])
            ref = full[b, j, yi:yi + 5, xi:xi + 5]  # padded by 2: rows y-2..y+2
            inside = torch.zeros(5, 5, dtype=torch.bool)
            inside[max(0, 2 - yi):min(5, 34 - yi), max(0, 2 - xi):min(5, 42 - xi)] = True
            torch.testing.assert_close(patch[b, j][inside], ref[inside], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["argmax", "dark"])
def test_decoding_commutes_with_the_horizontal_flip(method):
    """Mirroring the heatmap (x -> w - 1 - x) mirrors the decoded x exactly: no left/right bias."""
    rng = np.random.default_rng(4)
    centres = rng.uniform(0, W - 1, (500, 2))
    hm = _gaussians(centres) + 0.01 * torch.rand(1, 500, H, W)
    c, s = decode_heatmaps(hm, method)
    cf, sf = decode_heatmaps(torch.flip(hm, dims=[3]), method)
    torch.testing.assert_close(cf[..., 0], W - 1 - c[..., 0], atol=1e-4, rtol=0)
    torch.testing.assert_close(cf[..., 1], c[..., 1], atol=1e-4, rtol=0)
    torch.testing.assert_close(sf, s)


def test_noise_and_flat_maps_decode_as_the_reference_rules():
    rng = np.random.default_rng(5)
    hm = torch.from_numpy(rng.normal(0, 1, (4, 21, H, W)).astype(np.float32))
    hm[0] = 0.0  # all-zero map (e.g. an unlabelled target)
    hm[1] = -1.0
    # argmax: the first maximum in row-major order, moved 0.25 px toward the higher neighbour on
    # each axis where the peak has both neighbours (numpy reference, independent of the code).
    a = hm.numpy().reshape(4, 21, -1)
    idx = a.argmax(-1)
    x, y = idx % W, idx // W
    b, j = np.meshgrid(np.arange(4), np.arange(21), indexing="ij")
    m = hm.numpy()
    dx = np.where((x > 0) & (x < W - 1), np.sign(m[b, j, y, np.minimum(x + 1, W - 1)] - m[b, j, y, np.maximum(x - 1, 0)]), 0)
    dy = np.where((y > 0) & (y < H - 1), np.sign(m[b, j, np.minimum(y + 1, H - 1), x] - m[b, j, np.maximum(y - 1, 0), x]), 0)
    ref = np.stack([x + 0.25 * dx, y + 0.25 * dy], -1)
    coords, maxvals = decode_heatmaps(hm, "argmax")
    np.testing.assert_array_equal(coords.numpy(), ref)
    np.testing.assert_array_equal(maxvals.numpy(), a.max(-1))
    dark, _ = decode_heatmaps(hm, "dark")
    assert torch.isfinite(dark).all()
    # A flat map has no slope: both methods return the integer argmax (pixel 0, 0) unchanged.
    for c in (coords, dark):
        assert (c[:2] == 0).all()


def test_numpy_input_batch_shape_and_errors():
    hm = np.zeros((2, 3, 16, 24), dtype=np.float32)
    hm[1, 2, 5, 7] = 1.0
    coords, maxvals = decode_heatmaps(hm, "dark")
    assert coords.shape == (2, 3, 2) and maxvals.shape == (2, 3)
    assert coords[1, 2].tolist() == [7.0, 5.0]  # a single hot pixel: symmetric, no shift
    with pytest.raises(ValueError, match="unknown heatmap decoding"):
        decode_heatmaps(hm, "soft-argmax")
    with pytest.raises(ValueError, match="odd"):
        decode_heatmaps(hm, "dark", dark_kernel=10)
    with pytest.raises(ValueError, match=r"\(B, J, H, W\)"):
        decode_heatmaps(hm[0], "argmax")


# --- mutation-tested edges (tools/mutation.py codec) -----------------------------------------------

def test_encode_keeps_joints_in_the_half_pixel_at_each_edge():
    """Pixel 0 covers [-0.5, 0.5): a joint at -0.5 .. w - 0.5 is inside (weight 1, peak on the edge
    pixel); a joint beyond that half pixel is outside (weight 0, zero target). Both axes, non-square."""
    w, h = 24, 16
    inside = np.array([[-0.5, 5.0], [w - 0.5, 5.0], [5.0, -0.5], [5.0, h - 0.5], [-0.25, -0.25]])
    outside = np.array([[-0.51, 5.0], [w - 0.49, 5.0], [5.0, -0.51], [5.0, h - 0.49], [5.0, -1.2]])
    target, weight = encode_heatmaps(np.concatenate([inside, outside]), np.ones(10), (w, h), 2.0)
    assert target.shape == (10, h, w) and weight.dtype == np.float32
    np.testing.assert_array_equal(weight, [1] * 5 + [0] * 5)
    peaks = [np.unravel_index(t.argmax(), (h, w)) for t in target[:5]]
    assert peaks == [(5, 0), (5, w - 1), (0, 5), (h - 1, 5), (0, 0)]
    assert not target[5:].any()


def test_encode_a_nan_joint_drops_only_that_joint():
    """An unlabelled (or broken) joint with NaN coordinates: weight 0, an all-zero finite target,
    and the other joints keep theirs."""
    joints = np.array([[np.nan, np.nan], [10.0, 12.0], [np.nan, 3.0], [4.0, 5.0]])
    target, weight = encode_heatmaps(joints, np.array([0, 2, 2, 1]), (W, H), 2.0)
    np.testing.assert_array_equal(weight, [0, 1, 0, 1])
    assert np.isfinite(target).all() and not target[[0, 2]].any()
    assert target[1, 12, 10] == 1.0 and target[3, 5, 4] == 1.0


def _one_peak(x, y, size=(W, H), sigma=2.0):
    return _gaussians(np.array([[x, y]], dtype=np.float64), sigma, size)


def test_quarter_shift_at_and_next_to_every_edge():
    """No shift on an edge pixel (one neighbour only); next to an edge both neighbours are read."""
    w, h = 24, 16
    cases = {(0.3, 0.3): (0.0, 0.0), (w - 1.3, h - 1.3): (w - 1.0, h - 1.0),  # corners: no shift
             (1.2, 1.2): (1.25, 1.25), (0.8, 0.8): (0.75, 0.75),  # next to the top-left edges
             (w - 2.2, h - 2.2): (w - 2.25, h - 2.25), (w - 1.8, h - 1.8): (w - 1.75, h - 1.75)}
    for (x, y), want in cases.items():
        got = decode_heatmaps(_one_peak(x, y, (w, h)), "argmax")[0][0, 0].tolist()
        assert got == list(want), ((x, y), got)


def test_dark_near_the_top_and_bottom_edges_mirrors_the_left_and_right():
    """As test_dark_near_the_edge_is_never_worse_than_the_quarter_shift, for y: within 3 px of an edge
    the quarter shift (<= 0.25 px) while x keeps its 1-D Newton step; on the 3rd pixel DARK itself (0.11 px)."""
    rng = np.random.default_rng(7)
    ys = np.concatenate([rng.uniform(0.5, 2.5, 300), rng.uniform(H - 3.5, H - 1.5, 300)])
    centres = np.stack([rng.uniform(20, 40, 600), ys], 1)
    dark = np.abs(decode_heatmaps(_gaussians(centres), "dark")[0][0].numpy() - centres)
    assert dark[:, 1].max() <= 0.25 + 1e-3 and dark[:, 0].max() < 2e-3
    for lo in (2.5, H - 4.5, ):  # peaks on pixel 3 and on pixel H - 4: DARK, not the quarter shift
        for axis in (0, 1):
            centres = rng.uniform(20, 40, (300, 2))
            centres[:, axis] = rng.uniform(lo, lo + 1.0, 300)
            err = np.abs(decode_heatmaps(_gaussians(centres), "dark")[0][0].numpy() - centres)
            assert err[:, axis].max() < 0.12, (lo, axis)


def test_dark_on_a_ridge_refines_across_it_and_keeps_the_pixel_along_it():
    """A ridge flat along one axis (no curvature there, a singular Hessian): the 1-D step across the
    ridge, no shift along it, and no NaN from a 0/0 step."""
    profile = torch.exp(-0.5 * ((torch.arange(32.0, dtype=torch.float64) - 12.3) / 2.0) ** 2).float()
    for axis in (0, 1):
        hm = (profile[None, :].repeat(32, 1) if axis == 0 else profile[:, None].repeat(1, 32)).clone()
        peak = (16, 12) if axis == 0 else (12, 16)  # one ulp higher: the first maximum, off the edge
        hm[peak] = torch.nextafter(hm[peak], torch.tensor(2.0))
        coords = decode_heatmaps(hm[None, None], "dark")[0][0, 0]
        across, along = coords[axis].item(), coords[1 - axis].item()
        assert abs(across - 12.3) < 0.01 and along == 16.0, (axis, coords)


def test_dark_at_a_minimum_of_the_blurred_map_falls_back_to_the_quarter_shift():
    """A one-pixel spike in a dip: the blurred log-heatmap has a minimum there (positive curvature),
    where a Newton step would run toward the dip; DARK keeps the quarter shift instead."""
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    hm = 1 - 0.9 * torch.exp(-0.5 * (((xx - 16.5) / 2) ** 2 + ((yy - 16.3) / 2) ** 2))
    hm[16, 16] = 1.2
    for m in (hm, hm.T.contiguous()):
        torch.testing.assert_close(decode_heatmaps(m[None, None], "dark")[0],
                                   decode_heatmaps(m[None, None], "argmax")[0], rtol=0, atol=0)


def test_dark_steps_are_clamped_to_one_pixel():
    hm = torch.from_numpy(np.random.default_rng(5).normal(0, 1, (4, 21, H, W)).astype(np.float32))
    from data.codec import get_max_preds

    offset = decode_heatmaps(hm, "dark")[0] - get_max_preds(hm)[0]
    assert offset.abs().max() == 1.0  # noise has steps far beyond 1 px: both signs reach the clamp
    assert (offset == 1.0).any() and (offset == -1.0).any()


def test_decode_dtypes_defaults_and_device():
    hm = _one_peak(20.3, 30.6)
    ref, _ = decode_heatmaps(hm)  # the default method is argmax
    assert ref.dtype == torch.float32 and ref[0, 0].tolist() == [20.25, 30.75]
    # half precision (AMP) and integer maps decode in float32; float64 stays float64
    for dtype in (torch.float16, torch.bfloat16):
        for method in ("argmax", "dark"):
            coords, maxvals = decode_heatmaps(hm.to(dtype), method)
            assert coords.dtype == maxvals.dtype == torch.float32
            assert (coords - decode_heatmaps(hm, method)[0]).abs().max() < 0.05
    from data.codec import get_max_preds

    assert get_max_preds((hm * 100).to(torch.uint8))[0].dtype == torch.float32
    for method in ("argmax", "dark"):
        c64, m64 = decode_heatmaps(hm.double(), method)
        assert c64.dtype == m64.dtype == torch.float64
        torch.testing.assert_close(c64.float(), decode_heatmaps(hm, method)[0], rtol=0, atol=1e-4)
    assert get_max_preds(hm.double())[0].dtype == torch.float64
    # every intermediate lives on the heatmaps' device ('meta': shapes only, no CPU tensor may enter)
    meta = torch.empty(2, 3, 16, 24, device="meta")
    for method in ("argmax", "dark"):
        coords, maxvals = decode_heatmaps(meta, method)
        assert coords.device.type == "meta" and coords.shape == (2, 3, 2) and maxvals.shape == (2, 3)
