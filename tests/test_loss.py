"""JointsMSELoss: equals HRNet's per-joint loop, weights, dtype, shapes."""
import pytest
import torch

from hrnet.models.loss import JointsMSELoss


def _hrnet_reference(output, target, weight):
    """The official HRNet loop: 0.5 * mean over joints of MSE(pred_j * w_j, gt_j * w_j)."""
    b, j = output.shape[:2]
    pred = output.reshape(b, j, -1).split(1, 1)
    gt = target.reshape(b, j, -1).split(1, 1)
    loss = 0.0
    for i in range(j):
        p, g = pred[i].squeeze(), gt[i].squeeze()
        w = weight[:, i]
        loss = loss + 0.5 * torch.nn.functional.mse_loss(p.mul(w[:, None]), g.mul(w[:, None]))
    return loss / j


def test_matches_official_loop():
    g = torch.Generator().manual_seed(0)
    out, tgt = torch.rand(3, 21, 16, 12, generator=g), torch.rand(3, 21, 16, 12, generator=g)
    w = (torch.rand(3, 21, generator=g) > 0.3).float()
    torch.testing.assert_close(JointsMSELoss()(out, tgt, w), _hrnet_reference(out, tgt, w), rtol=1e-6, atol=0)
    # (B, J, 1) weights, as HRNet's datasets give them, are accepted too.
    torch.testing.assert_close(JointsMSELoss()(out, tgt, w[..., None]), _hrnet_reference(out, tgt, w))


def test_zero_weight_joint_gets_no_gradient_and_perfect_prediction_is_zero():
    out = torch.rand(2, 4, 8, 8, requires_grad=True)
    tgt = torch.rand(2, 4, 8, 8)
    w = torch.ones(2, 4)
    w[1, 2] = 0
    JointsMSELoss()(out, tgt, w).backward()
    assert out.grad[1, 2].abs().max() == 0
    assert out.grad[0, 2].abs().max() > 0
    assert JointsMSELoss()(tgt, tgt, w).item() == 0.0


def test_known_value_and_unweighted():
    out = torch.zeros(1, 2, 2, 2)
    tgt = torch.ones(1, 2, 2, 2)
    # every element differs by 1: 0.5 * mean(1) = 0.5; a zero-weight joint still counts in the mean
    assert JointsMSELoss()(out, tgt, torch.tensor([[1.0, 1.0]])).item() == pytest.approx(0.5)
    assert JointsMSELoss()(out, tgt, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.25)
    assert JointsMSELoss(use_target_weight=False)(out, tgt, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.5)


def test_low_precision_output_gives_float32_loss():
    out = torch.rand(2, 3, 4, 4).bfloat16()
    loss = JointsMSELoss()(out, torch.rand(2, 3, 4, 4), torch.ones(2, 3))
    assert loss.dtype == torch.float32


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="differ in shape"):
        JointsMSELoss()(torch.rand(1, 21, 16, 16), torch.rand(1, 21, 8, 8), torch.ones(1, 21))


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError) as err:
        JointsMSELoss()(torch.rand(1, 21, 16, 16), torch.rand(1, 21, 8, 8), torch.ones(1, 21))
    assert str(err.value) == "JointsMSELoss: output (1, 21, 16, 16) and target (1, 21, 8, 8) differ in shape"


def test_without_weights_the_weighted_loss_is_the_plain_mse():
    out, tgt = torch.zeros(1, 2, 2, 2), torch.ones(1, 2, 2, 2)
    tgt[0, 1] = 3.0  # joint 1 differs by 3: 0.5 * mean(1, 1, 1, 1, 9, 9, 9, 9) = 2.5
    assert JointsMSELoss()(out, tgt).item() == 2.5  # use_target_weight, but no weights given
    assert JointsMSELoss(use_target_weight=False)(out, tgt).item() == 2.5


def test_per_sample_weights_weight_their_own_joints():
    out, tgt = torch.zeros(2, 2, 1, 1), torch.ones(2, 2, 1, 1)
    # (B, J) weights: sample 0 joint 1 and sample 1 joint 0 off; a transposed reshape would swap them
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    tgt[1, 1] = 2.0  # 0.5 * mean(1, 0, 0, (2 * 2)^2) = 0.5 * 17 / 4
    assert JointsMSELoss()(out, tgt, w).item() == pytest.approx(17 / 8)


def test_non_finite_loss_error_says_where_in_one_based_and_zero_based_counts():
    from hrnet.models.loss import NonFiniteLossError

    err = NonFiniteLossError.at(float("nan"), 1, 3, 4, 10, 14, "checkpoint_latest.pth is epoch 1's")
    assert isinstance(err, NonFiniteLossError) and isinstance(err, RuntimeError)
    assert str(err) == ("non-finite training loss (nan) at epoch 2/3 (0-based 1), iteration 5/10 (global iteration "
                        "15); no optimizer step was taken. checkpoint_latest.pth is epoch 1's. Lower TRAIN.LR, set "
                        "TRAIN.CLIP_GRAD_NORM or TRAIN.WARMUP_ITERS.")
