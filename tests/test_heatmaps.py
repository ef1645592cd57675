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
