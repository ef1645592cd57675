"""data.codec.HeatmapCodec: one object for sigma, heatmap size, decoding method and DARK kernel."""
import numpy as np
import pytest
import torch

from conftest import make_cfg
from data.codec import HeatmapCodec, dark_kernel_size, decode_heatmaps


@pytest.mark.parametrize("sigma, kernel", [(1.0, 5), (1.5, 9), (2.0, 11), (2.5, 15), (3.0, 17), (0.3, 3)])
def test_dark_kernel_follows_sigma(sigma, kernel):
    # DarkPose / mmpose: 11 taps for sigma 2, i.e. 6 sigma - 1, made odd.
    assert dark_kernel_size(sigma) == kernel
    assert HeatmapCodec((16, 16), sigma, "dark").dark_kernel == kernel


@pytest.mark.parametrize("sigma", [1.5, 3.0])
@pytest.mark.parametrize("method, tol", [("dark", 0.01), ("argmax", 0.36)])
def test_encoded_gaussians_decode_to_their_centres(sigma, method, tol):
    rng = np.random.default_rng(int(sigma * 10))
    pts = np.stack([rng.uniform(9, 55, 40), rng.uniform(9, 39, 40)], axis=1)  # (J, 2), interior
    codec = HeatmapCodec((64, 48), sigma, method)
    target, weight = codec.encode(pts, np.ones(len(pts)))
    assert target.shape == (40, 48, 64) and target.dtype == np.float32 and weight.tolist() == [1.0] * 40
    # the peak sits at the nearest cell of each joint (independent of the decoder)
    iy, ix = np.unravel_index(target.reshape(40, -1).argmax(1), (48, 64))
    np.testing.assert_array_equal(np.stack([ix, iy], 1), np.rint(pts))
    coords, maxvals = codec.decode(torch.from_numpy(target)[None])
    assert coords.shape == (1, 40, 2) and maxvals.shape == (1, 40)
    # argmax + quarter shift is off by up to sqrt(2) * 0.25 px; DARK inverts the Gaussian
    assert np.abs(coords[0].numpy() - pts).max() < tol


def test_codec_decode_uses_its_derived_kernel():
    hm = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    codec = HeatmapCodec((32, 32), 3.0, "dark")
    coords, _ = codec.decode(hm)
    torch.testing.assert_close(coords, decode_heatmaps(hm, "dark", 17)[0], rtol=0, atol=0)
    assert not torch.equal(coords, decode_heatmaps(hm, "dark", 11)[0])  # noise: the blur width matters


def test_from_cfg_and_bad_parameters():
    cfg = make_cfg(None, ["MODEL.HEATMAP_SIZE", "[24, 16]", "MODEL.SIGMA", "1.5", "TEST.DECODE", "dark"])
    codec = HeatmapCodec.from_cfg(cfg)
    assert codec == HeatmapCodec((24, 16), 1.5, "dark", 9)
    assert codec.encode(np.array([[3.0, 4.0]]), np.ones(1))[0].shape == (1, 16, 24)
    with pytest.raises(ValueError, match="unknown heatmap decoding 'soft'"):
        HeatmapCodec((16, 16), 2.0, "soft")
    with pytest.raises(ValueError, match="positive odd"):
        HeatmapCodec((16, 16), 2.0, "dark", 10)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        HeatmapCodec((16, 16), 0.0, "dark")


# --- mutation-tested edges (tools/mutation.py codec) -----------------------------------------------

def test_heatmap_size_is_validated_per_axis_and_stored_as_int_tuple():
    codec = HeatmapCodec([24.0, 16], 2.0)
    assert codec.heatmap_size == (24, 16) and isinstance(codec.heatmap_size, tuple)
    assert codec == HeatmapCodec((24, 16), 2.0) and hash(codec) == hash(HeatmapCodec((24, 16), 2.0))
    assert HeatmapCodec((1, 1), 2.0).encode(np.zeros((1, 2)), np.ones(1))[0].shape == (1, 1, 1)
    for bad in [(0, 16), (16, 0), (-3, 16)]:
        with pytest.raises(ValueError, match=r"heatmap_size must be positive \(width, height\), got " + str(bad)
                           .replace("(", r"\(").replace(")", r"\)")):
            HeatmapCodec(bad, 2.0)


def test_a_one_tap_dark_kernel_is_allowed():
    """1 is positive and odd (no blur): accepted by the codec and by decode_heatmaps."""
    hm = torch.zeros(1, 1, 16, 16)
    hm[0, 0, 8, 5] = 1.0
    assert HeatmapCodec((16, 16), 2.0, "dark", 1).dark_kernel == 1
    assert decode_heatmaps(hm, "dark", 1)[0][0, 0].tolist() == [5.0, 8.0]
    with pytest.raises(ValueError, match="positive odd size, got 0"):
        HeatmapCodec((16, 16), 2.0, "dark", 0)


@pytest.mark.parametrize("sigma, margin", [(2.0, 3), (3.0, 5), (4.0, 7)])
def test_dark_margin_grows_with_sigma(sigma, margin):
    """DARK refines peaks from ``max(3, kernel // 3)`` px off the edge (0.11 px worst there); nearer
    the edge its zero-padded blur is biased, so it keeps the quarter shift (<= 0.25 px)."""
    codec, quarter = HeatmapCodec((48, 40), sigma, "dark"), HeatmapCodec((48, 40), sigma, "argmax")
    rng = np.random.default_rng(8)
    for pixel in (margin, 47 - margin, margin - 1, 48 - margin):
        pts = np.stack([rng.uniform(pixel - 0.45, pixel + 0.45, 50), rng.uniform(15, 25, 50)], 1)
        hm = torch.from_numpy(codec.encode(pts, np.ones(50))[0])[None]
        dark = codec.decode(hm)[0][0].numpy()
        if pixel in (margin, 47 - margin):
            assert np.abs(dark[:, 0] - pts[:, 0]).max() < 0.12, pixel
        else:  # one pixel nearer the edge: exactly the quarter shift
            np.testing.assert_array_equal(dark[:, 0], quarter.decode(hm)[0][0].numpy()[:, 0])
