"""Fast tests of what the synthetic renderer decides (the mutation section ``synthetic``).

The CPU study trains on these images, so a changed renderer changes its numbers. Pinned here: the
joint order and skeleton, the hand's geometry for known poses, each image's own random stream and
the order of its draws (the annotation's box margin and JPEG quality are drawn last: any extra or
missing draw before them moves them), the pixels of a few images covering every branch of the
scene and the painter, and the writer's files and errors. A handful of renders, no training.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from typing import Any, Dict, List, Tuple

import cv2
import numpy as np
import pytest

from configs import ConfigError
from conftest import make_cfg
from data.synthetic import draw, kinematics as kin, paint, render, scene, writer
from data.synthetic import CATEGORIES, KEYPOINT_NAMES, SKELETON, SyntheticSetError, render_sample


class Scripted:
    """A stand-in random generator: each method returns its scripted values in order and records
    its arguments, so a test chooses the draws a function sees."""

    def __init__(self, **values: List[Any]):
        self.values = {k: list(v) for k, v in values.items()}
        self.calls: List[Tuple[str, tuple]] = []

    def _next(self, name: str, args: tuple) -> Any:
        self.calls.append((name, args))
        return self.values[name].pop(0)

    def random(self, *args):
        return self._next("random", args)

    def uniform(self, *args):
        return self._next("uniform", args)

    def integers(self, *args):
        return self._next("integers", args)

    def normal(self, *args):
        return self._next("normal", args)


# ----------------------------------------------------------------------------- joints and skeleton
def test_joint_order_and_skeleton_are_coco_wholebody_s():
    """21 joints: the wrist, then thumb, index, middle, ring, pinky, four each from the palm out;
    the 1-based skeleton joins the wrist to each finger base and runs along each finger."""
    assert kin.NUM_JOINTS == len(KEYPOINT_NAMES) == 21
    assert KEYPOINT_NAMES[:6] == ["wrist", "thumb1", "thumb2", "thumb3", "thumb4", "forefinger1"]
    assert KEYPOINT_NAMES[-4:] == ["pinky_finger1", "pinky_finger2", "pinky_finger3", "pinky_finger4"]
    assert KEYPOINT_NAMES[9:13] == ["middle_finger1", "middle_finger2", "middle_finger3", "middle_finger4"]
    expected = []
    for f in range(5):
        b = 2 + 4 * f
        expected += [[1, b], [b, b + 1], [b + 1, b + 2], [b + 2, b + 3]]
    assert SKELETON == expected
    assert CATEGORIES == [{"supercategory": "hand", "id": 1, "name": "hand", "keypoints": KEYPOINT_NAMES,
                           "skeleton": expected}]


# ----------------------------------------------------------------------------- kinematics
NEUTRAL = {"size": 1.0, "palm_w": 1.0, "finger_len": np.ones((5, 1)), "finger_w": 1.0}
FLAT = {"abd": np.zeros(5), "flex": np.zeros((5, 3)), "wrist": np.zeros(2), "cup": 0.0}


def _deg(d: float) -> Tuple[float, float]:
    return np.sin(np.deg2rad(d)), np.cos(np.deg2rad(d))


def test_a_flat_hand_lies_along_its_rest_directions():
    """Flat pose, neutral shape: each finger runs from its base along its rest spread (degrees
    towards the thumb, +x) in the palm plane z = 0; the thumb along its own rest direction."""
    hand = kin.forward_kinematics(NEUTRAL, FLAT)
    j = hand.joints
    assert j.shape == (21, 3)
    np.testing.assert_array_equal(j[0], [0.0, 0.0, 0.0])
    bases = {1: [24.0, 20.0, 8.0], 5: [31.0, 92.0, 0.0], 9: [9.0, 96.0, 0.0], 13: [-12.0, 91.0, 0.0],
             17: [-31.0, 81.0, 0.0]}
    for k, xyz in bases.items():
        np.testing.assert_allclose(j[k], xyz, atol=1e-12)
    lengths = {5: (41.0, 24.0, 21.0, 9.0), 9: (46.0, 28.0, 22.0, 1.5), 13: (43.0, 27.0, 22.0, -6.0),
               17: (34.0, 20.0, 20.0, -14.0)}
    for k, (a, b, c, spread) in lengths.items():
        s, co = _deg(spread)
        for n, dist in enumerate(np.cumsum([a, b, c]), start=1):
            np.testing.assert_allclose(j[k + n], np.array(bases[k]) + dist * np.array([s, co, 0.0]), atol=1e-9)
    thumb = np.array([0.62, 0.70, 0.36]) / np.linalg.norm([0.62, 0.70, 0.36])
    for n, dist in enumerate(np.cumsum([46.0, 33.0, 28.0]), start=1):
        np.testing.assert_allclose(j[1 + n], np.array(bases[1]) + dist * thumb, atol=1e-9)


def test_flexion_bends_towards_the_palm_and_abduction_towards_the_thumb():
    # 90 degrees at the index MCP: the whole finger points out of the palm (+z).
    flex = np.zeros((5, 3))
    flex[1, 0] = 90.0
    j = kin.forward_kinematics(NEUTRAL, dict(FLAT, flex=flex)).joints
    np.testing.assert_allclose(j[6:9], [[31.0, 92.0, 41.0], [31.0, 92.0, 65.0], [31.0, 92.0, 86.0]], atol=1e-9)
    # 90 degrees at the middle finger's PIP (the second joint) only: the middle phalanx turns to +z.
    flex = np.zeros((5, 3))
    flex[2, 1] = 90.0
    j = kin.forward_kinematics(NEUTRAL, dict(FLAT, flex=flex)).joints
    s, c = _deg(1.5)
    pip = np.array([9.0, 96.0, 0.0]) + 46.0 * np.array([s, c, 0.0])
    np.testing.assert_allclose(j[10], pip, atol=1e-9)
    np.testing.assert_allclose(j[11:13], [pip + [0, 0, 28.0], pip + [0, 0, 50.0]], atol=1e-9)
    # ... and at the DIP (the third): only the distal phalanx turns.
    flex = np.zeros((5, 3))
    flex[3, 2] = 90.0
    j = kin.forward_kinematics(NEUTRAL, dict(FLAT, flex=flex)).joints
    s, c = _deg(-6.0)
    dip = np.array([-12.0, 91.0, 0.0]) + 70.0 * np.array([s, c, 0.0])
    np.testing.assert_allclose(j[15], dip, atol=1e-9)
    np.testing.assert_allclose(j[16], dip + [0, 0, 22.0], atol=1e-9)
    # Abduction +10 on the ring finger: its rest spread -6 becomes +4 (towards the thumb, +x).
    abd = np.zeros(5)
    abd[3] = 10.0
    j = kin.forward_kinematics(NEUTRAL, dict(FLAT, abd=abd)).joints
    s, c = _deg(4.0)
    np.testing.assert_allclose(j[16], np.array([-12.0, 91.0, 0.0]) + 92.0 * np.array([s, c, 0.0]), atol=1e-9)


def test_the_shape_scales_the_hand():
    """size scales everything; palm_w the bases' x; finger_len the bones; finger_w the radii."""
    shape = {"size": 1.1, "palm_w": 0.9, "finger_len": np.array([[1.0], [1.05], [1.0], [1.0], [1.0]]),
             "finger_w": 0.8}
    hand = kin.forward_kinematics(shape, FLAT)
    np.testing.assert_allclose(hand.joints[5], np.array([31.0 * 0.9, 92.0, 0.0]) * 1.1, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(hand.joints[6] - hand.joints[5]), 41.0 * 1.05 * 1.1, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(hand.joints[10] - hand.joints[9]), 46.0 * 1.1, rtol=1e-12)
    # Finger radii scale with finger_w; the thumb's only half as much.
    np.testing.assert_allclose(hand.radii[1:], kin._RADIUS[1:] * 0.8 * 1.1, rtol=1e-12)
    np.testing.assert_allclose(hand.radii[0], kin._RADIUS[0] * 1.1 * 0.9, rtol=1e-12)
    np.testing.assert_allclose(hand.forearm_radius, [27.0 * 1.1 * 0.9, 36.0 * 1.1 * 0.9], rtol=1e-12)
    np.testing.assert_array_equal(hand.palm_normal, [0.0, 0.0, 1.0])
    # The palm slab: the outline (x scaled by palm_w) at z = +-12 mm, times size; creases on the palmar face.
    assert hand.palm.shape == (24, 3)
    np.testing.assert_allclose(hand.palm[0], np.array([-27.0 * 0.9, -4.0, 12.0]) * 1.1, atol=1e-12)
    np.testing.assert_allclose(hand.palm[12], np.array([-27.0 * 0.9, -4.0, -12.0]) * 1.1, atol=1e-12)
    assert len(hand.creases) == 3 and all(c.shape == (4, 3) for c in hand.creases)
    np.testing.assert_allclose(hand.creases[1][0], np.array([34.0 * 0.9, 66.0, 12.0]) * 1.1, atol=1e-12)
    np.testing.assert_allclose(hand.creases[2][3], np.array([10.0 * 0.9, 8.0, 12.0]) * 1.1, atol=1e-12)
    assert hand.frames.shape == (5, 3, 3, 3)


def test_cupping_folds_the_ring_and_pinky_and_arches_the_palm():
    hand = kin.forward_kinematics(NEUTRAL, dict(FLAT, cup=0.5))
    np.testing.assert_allclose(hand.joints[13], [-12.0, 91.0, 4.0], atol=1e-12)
    np.testing.assert_allclose(hand.joints[17], [-31.0 + 2.5, 81.0, 8.0], atol=1e-12)
    np.testing.assert_allclose(hand.joints[9], [9.0, 96.0, 0.0], atol=1e-12)
    # The arch: z 14 * cup at the ulnar edge (x = -40), 0 from x = -20 towards the thumb.
    outline = kin._PALM_OUTLINE
    z = hand.palm[:12, 2] - 12.0
    np.testing.assert_allclose(z[outline[:, 0] >= -20.0], 0.0, atol=1e-12)
    np.testing.assert_allclose(z[2], 7.0, atol=1e-12)                       # (-40, 62)
    np.testing.assert_allclose(z[1], 7.0 * 16.0 / 20.0, atol=1e-12)         # (-36, 30)


@pytest.mark.parametrize("wrist, direction", [((0.0, 0.0), (0.0, -1.0, 0.0)), ((90.0, 0.0), (0.0, 0.0, -1.0)),
                                              ((0.0, 90.0), (1.0, 0.0, 0.0))])
def test_the_forearm_leaves_the_wrist_opposite_the_fingers(wrist, direction):
    """260 mm from 8 mm above the wrist keypoint, bent by flexion (about x) and deviation (about z)."""
    hand = kin.forward_kinematics(dict(NEUTRAL, size=0.5), dict(FLAT, wrist=np.array(wrist)))
    np.testing.assert_allclose(hand.forearm[0], [0.0, 4.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(hand.forearm[1], (np.array([0.0, 8.0, 0.0]) + 260.0 * np.array(direction)) * 0.5,
                               atol=1e-9)


def _pose_digest(pose: Dict[str, Any]) -> List[float]:
    weighted = float((pose["flex"] * np.arange(15).reshape(5, 3)).sum())  # which joint holds which angle
    return [float(pose["abd"].sum()), float(pose["flex"].sum()), weighted,
            float(pose["wrist"][0]), float(pose["wrist"][1]), float(pose["cup"])]


# Seeds whose first draw picks each mode: 3 open (< 0.3), 8 fist (< 0.5), 0 anything.
@pytest.mark.parametrize("seed, digest", [
    (3, [13.86074, 22.595508, 111.349046, -43.744809, 17.488417, 0.019864]),
    (8, [-2.877341, 660.219704, 5612.4198, 27.194581, -9.448453, 0.442119]),
    (0, [41.484124, 155.956838, 1255.451738, -30.012665, 6.159357, 0.026506]),
])
def test_sample_pose_is_pinned_per_seed(seed, digest):
    rng = np.random.default_rng(seed)
    mode = rng.random()
    assert {3: mode < 0.3, 8: 0.3 <= mode < 0.5, 0: mode >= 0.5}[seed]
    pose = kin.sample_pose(np.random.default_rng(seed))
    np.testing.assert_allclose(_pose_digest(pose), digest, atol=1e-5)


def test_sample_pose_couples_the_fingers_and_stays_in_its_ranges():
    rng = np.random.default_rng(3)
    poses = [kin.sample_pose(rng) for _ in range(400)]
    flex = np.stack([p["flex"] for p in poses])
    # DIP follows PIP (2/3 of it plus 8 degrees of noise) on the four fingers, not on the thumb.
    pip, dip = flex[:, 1:, 1].ravel(), flex[:, 1:, 2].ravel()
    free = (dip > -10.0) & (dip < 80.0)
    slope = np.polyfit(pip[free], dip[free], 1)[0]
    assert 0.55 < slope < 0.75
    thumb_abd = np.array([p["abd"][0] for p in poses])
    assert thumb_abd.min() < -15.0 and thumb_abd.max() > 20.0           # uniform over its whole range
    wrist = np.stack([p["wrist"] for p in poses])
    assert np.abs(wrist[:, 0]).max() <= 55.0 and np.abs(wrist[:, 0]).max() > 45.0
    assert np.abs(wrist[:, 1]).max() <= 25.0 and np.abs(wrist[:, 1]).max() > 20.0
    cup = np.array([p["cup"] for p in poses])
    assert cup.min() >= 0.0 and cup.max() <= 1.0
    # Curled fingers converge: abd = (spread - 1) * rest spread, so abd + rest spread is how far the
    # fingers fan out; a fist's fan less than an open hand's.
    curl = flex[:, 1:, 1].mean(1)
    spread = np.array([np.abs(p["abd"][1:] + kin._SPREAD[1:]).mean() for p in poses])
    assert spread[curl > 80].mean() < spread[curl < 20].mean()


def test_sample_shape_draws_in_order_within_its_ranges():
    rng = Scripted(uniform=[1.0, 1.05, 0.95, np.array([[1.0], [1.02], [0.98], [1.0], [1.04]]), 0.9])
    shape = kin.sample_shape(rng)
    assert [c[1] for c in rng.calls] == [(0.85, 1.15), (0.92, 1.1), (0.9, 1.1), (0.96, 1.04, (5, 1)), (0.85, 1.15)]
    assert shape["size"] == 1.0 and shape["palm_w"] == 1.05 and shape["finger_w"] == 0.9
    np.testing.assert_allclose(shape["finger_len"][:, 0], 0.95 * np.array([1.0, 1.02, 0.98, 1.0, 1.04]))


ROTATION_DIGESTS = {0: -2.907639083, 1: 1.591238323, 2: 7.292576434, 3: 11.61391423, 4: -2.309441504,
                    11: 1.960388215}


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 11])  # 3 and 11: uniform over SO(3)
def test_sample_rotation_is_a_proper_rotation_pinned_per_seed(seed):
    rot = kin.sample_rotation(np.random.default_rng(seed))
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(rot.ravel() @ np.arange(1, 10), ROTATION_DIGESTS[seed], atol=1e-9)


def test_sample_rotation_mostly_shows_the_palm_or_the_back():
    """85% of views: the palm normal within 80 degrees of the camera axis, facing it or away half
    of the time each, the hand's +y up the image (image y down) at zero roll; 15% uniform."""
    rng = np.random.default_rng(11)
    normals = np.array([(kin.sample_rotation(rng) @ [0.0, 0.0, 1.0])[2] for _ in range(600)])
    tilted = np.abs(normals) < np.cos(np.deg2rad(80.0))
    assert 0.02 < tilted.mean() < 0.12                                 # only from the uniform views
    assert 0.4 < (normals < 0).mean() < 0.6
    zero = Scripted(random=[0.5, 0.2], uniform=[0.0, 0.0], normal=[0.0])  # facing, no tilt, no roll
    np.testing.assert_allclose(kin.sample_rotation(zero), np.diag([1.0, -1.0, -1.0]), atol=1e-12)
    back = Scripted(random=[0.5, 0.7], uniform=[0.0, 0.0], normal=[0.0])
    np.testing.assert_allclose(kin.sample_rotation(back), np.diag([-1.0, -1.0, 1.0]), atol=1e-12)
    assert [c[1] for c in back.calls] == [(), (), (0.0, 2 * np.pi), (0.0, np.deg2rad(35.0)), (-np.pi, np.pi)]
    steep = Scripted(random=[0.5, 0.2], uniform=[0.0, 0.0], normal=[np.deg2rad(-120.0)])  # tilt capped at 80
    n = kin.sample_rotation(steep) @ [0.0, 0.0, 1.0]
    assert n[2] == pytest.approx(-np.cos(np.deg2rad(80.0)), abs=1e-12)


def test_axis_angle_turns_x_to_y_about_z():
    np.testing.assert_allclose(kin._axis_angle([0.0, 0.0, 2.0], np.pi / 2) @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0],
                               atol=1e-12)
    np.testing.assert_allclose(kin._rot_flex(np.array([np.pi / 2]))[0] @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(kin._rot_abd(np.array([np.pi / 2]))[0] @ [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], atol=1e-12)


# ----------------------------------------------------------------------------- one image: its stream and layout
def test_each_image_draws_from_its_own_seeded_stream():
    with pytest.raises(ValueError, match=r"^unknown split 'val'; expected one of \['test', 'train'\]$"):
        render.sample_rng(0, "val", 0)
    for split, code in (("train", 0), ("test", 1)):
        want = np.random.Generator(np.random.PCG64(np.random.SeedSequence([4, code, 9]))).random(3)
        np.testing.assert_array_equal(render.sample_rng(4, split, 9).random(3), want)


@pytest.mark.parametrize("drawn, size", [((200, 300), (200, 300)), ((160, 288), (160, 288)),
                                         ((400, 160), (240, 240)), ((160, 289), (203, 203))])
def test_image_size_keeps_aspect_ratios_ordinary(drawn, size):
    """Sides drawn in [160, 400]; beyond an aspect ratio of 1.8 the image becomes square, a third
    of the way from the short side to the long one."""
    rng = Scripted(integers=[np.array(drawn)])
    assert render._image_size(rng) == size
    assert rng.calls == [("integers", (160, 401, 2))]


def _camera_draws(left: float, crop: float, target: float, positions: List[Any]) -> Scripted:
    """The draws of ``_place_hand``: a palm-facing view without tilt or roll, the hand (left < 0.5
    mirrors it), distance 3 hand lengths, whether it is cropped, its size, its positions."""
    return Scripted(random=[0.5, 0.2, left, crop], normal=[0.0], uniform=[0.0, 0.0, 3.0, target] + positions)


def test_the_camera_places_the_hand_where_drawn():
    hand = kin.forward_kinematics(NEUTRAL, FLAT)
    w, h = 300, 200
    rng = _camera_draws(0.9, 0.5, 0.5, [np.array([140.0, 90.0])])
    to_image, rot, focal, dist = render._place_hand(rng, hand, w, h)
    np.testing.assert_allclose(rot, np.diag([1.0, -1.0, -1.0]), atol=1e-12)   # a right hand, as drawn
    assert dist == pytest.approx(3.0 * np.linalg.norm(hand.joints[12]), rel=1e-12)  # wrist to middle tip x 3
    kp, z = to_image(hand.joints)
    lo, hi = kp.min(0), kp.max(0)
    assert (hi - lo).max() == pytest.approx(0.5 * 200, rel=1e-9)               # target: half the short side
    np.testing.assert_allclose((lo + hi) / 2, [140.0, 90.0], atol=1e-9)        # centred where drawn
    np.testing.assert_allclose(z, (hand.joints.mean(0) - hand.joints)[:, 2] + dist, atol=1e-9)
    span = hi - lo
    margin = 0.05 * 200
    assert rng.calls[6:9] == [("uniform", (1.8, 7.0)), ("random", ()), ("uniform", (0.25, 0.9))]
    name, (low, high) = rng.calls[9]                                           # the centre's range
    np.testing.assert_allclose(low, span / 2 + margin, rtol=1e-9)
    np.testing.assert_allclose(high, np.array([w - 1.0, h - 1.0]) - span / 2 - margin, rtol=1e-9)
    # A point behind the camera is projected from 1/1000 of the distance, not divided by <= 0.
    behind = hand.joints.mean(0, keepdims=True) + [0.0, 0.0, 2.0 * dist]       # camera z = dist - 2 dist
    assert to_image(behind)[1][0] == pytest.approx(1e-3 * dist)


def test_a_left_hand_is_the_mirror_image_and_a_cropped_one_keeps_twelve_joints():
    hand = kin.forward_kinematics(NEUTRAL, FLAT)
    w, h = 300, 200
    # Left hand, cropped (the hand 1.4 x the short side): positions in the image until >= 12 joints are
    # inside; two corners fail first.
    rng = _camera_draws(0.2, 0.1, 1.4, [np.array([0.0, 0.0]), np.array([299.0, 199.0]), np.array([150.0, 100.0])])
    to_image, rot, focal, dist = render._place_hand(rng, hand, w, h)
    np.testing.assert_allclose(rot, np.diag([-1.0, -1.0, -1.0]), atol=1e-12)
    kp, _ = to_image(hand.joints)
    np.testing.assert_allclose((kp.min(0) + kp.max(0)) / 2, [150.0, 100.0], atol=1e-9)
    assert rng.calls[8:] == [("uniform", (0.8, 1.4))] + [("uniform", ([0.0, 0.0], [w - 1.0, h - 1.0]))] * 3
    # Ten positions that all leave fewer than 12 joints inside: the hand is centred instead.
    rng = _camera_draws(0.9, 0.1, 1.4, [np.array([0.0, 0.0])] * 10)
    to_image, _, _, _ = render._place_hand(rng, hand, w, h)
    kp, _ = to_image(hand.joints)
    np.testing.assert_allclose((kp.min(0) + kp.max(0)) / 2, [(w - 1) / 2, (h - 1) / 2], atol=1e-9)
    assert len(rng.calls) == 9 + 10
    # A hand wider than the image's free space (no crop): centred, not drawn outside.
    # The hand's long side (y) is 0.9 x 120 px, which with two 6 px margins leaves no room in y.
    rng = _camera_draws(0.9, 0.5, 0.9, [np.array([200.0, 30.0])])
    to_image, _, _, _ = render._place_hand(rng, hand, 400, 120)
    kp, _ = to_image(hand.joints)
    np.testing.assert_allclose((kp.min(0) + kp.max(0)) / 2, [200.0, 59.5], atol=1e-9)


def test_detector_box_adds_a_margin_per_side_in_edge_coordinates_clipped_to_the_image():
    rng = Scripted(uniform=[np.array([0.1, 0.05, 0.15, 0.04])])
    box = render._detector_box(rng, np.array([10.0, 20.0]), np.array([50.0, 100.0]), 200, 300)
    assert rng.calls == [("uniform", (0.04, 0.15, 4))]
    # Extent 80 px: margins 8 (left), 4 (top), 12 (right), 3.2 (bottom); edges are centres + 0.5.
    np.testing.assert_allclose(box, [2.5, 16.5, 62.5 - 2.5, 103.7 - 16.5])
    clipped = render._detector_box(Scripted(uniform=[np.full(4, 0.1)]), np.array([2.0, 1.0]),
                                   np.array([195.0, 98.0]), 200, 100)
    np.testing.assert_allclose(clipped, [0.0, 0.0, 200.0, 100.0])


def test_drop_shadow_darkens_under_the_shifted_blurred_mask_half_of_the_time():
    img = np.full((40, 60, 3), 200, np.uint8)
    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 10:30] = 255
    assert render._drop_shadow(Scripted(random=[0.5]), img, mask) is img
    rng = Scripted(random=[0.49], integers=[np.array([12, -3])], uniform=[2.0, 0.5])
    out = render._drop_shadow(rng, img, mask)
    assert rng.calls == [("random", ()), ("integers", (-12, 13, 2)), ("uniform", (2.0, 8.0)), ("uniform", (0.2, 0.5))]
    # The mask moved 12 right and 3 up (rows 7-26, columns 22-41): inside it 200 * (1 - 0.5).
    assert (out[17, 32] == 100).all() and (out[17, 15] == 200).all() and (out[35, 5] == 200).all()
    assert (out <= img).all() and (img == 200).all()


@pytest.mark.parametrize("radius, sigma", [(2.0, 1.0), (20.0, 3.0), (0.5, 0.5)])
def test_blend_hand_blurs_the_layer_by_the_finger_width_and_blends_by_coverage(radius, sigma):
    """sigma = a quarter of the median finger radius (keypoints 1-20; 0 is the forearm's), in
    [0.5, 3]; full coverage takes the blurred layer, none keeps the scene, partial mixes them."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (50, 60, 3)).astype(np.uint8)
    color = rng.integers(0, 256, (50, 60, 3)).astype(np.uint8)
    mask = np.zeros((50, 60), np.uint8)
    mask[20:30, 25:40] = 255
    mask[20:30, 40] = 128
    radius_px = np.array([1000.0] + [radius] * 10 + [3 * radius] * 10)  # median of 1-20: 2 * radius
    out = img.copy()
    render._blend_hand(out, color, mask, radius_px)
    soft = cv2.GaussianBlur(color, (0, 0), sigma)
    np.testing.assert_array_equal(out[mask == 0], img[mask == 0])
    np.testing.assert_array_equal(out[20:30, 25:40], soft[20:30, 25:40])
    a = np.float32(128) * np.float32(1.0 / 255.0)
    half = (img[20:30, 40] * (1.0 - a) + soft[20:30, 40] * a + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(out[20:30, 40], half)
    empty = img.copy()
    render._blend_hand(empty, color, np.zeros_like(mask), radius_px)       # no hand: nothing changes
    np.testing.assert_array_equal(empty, img)


@pytest.mark.parametrize("axis, edge", [(0, "low"), (0, "high"), (1, "low"), (1, "high")])
def test_a_keypoint_is_labelled_up_to_half_a_pixel_beyond_the_border_pixels(monkeypatch, axis, edge):
    """The image covers centres -0.5 .. side - 0.5: a keypoint 0.05 px inside that is labelled, 0.05 px
    outside is not (the hand moved so that its outermost keypoint lies there)."""
    place = render._place_hand
    labelled = []
    for delta in (-0.05, 0.05):                                         # inside, outside
        def shifted(rng, hand, w, h):
            to_image, rot, focal, dist = place(rng, hand, w, h)
            kp = to_image(hand.joints)[0][:, axis]
            limit = (w, h)[axis] - 0.5 if edge == "high" else -0.5
            j = int(np.argmax(kp) if edge == "high" else np.argmin(kp))
            move = np.zeros(2)
            move[axis] = limit + (delta if edge == "high" else -delta) - kp[j]
            shifted.joint = j
            return (lambda p: (to_image(p)[0] + move, to_image(p)[1])), rot, focal, dist
        monkeypatch.setattr(render, "_place_hand", shifted)
        s = render_sample(0, "train", 0)
        labelled.append(s.keypoints[shifted.joint, 2])
    assert labelled == [1.0, 0.0]


# What each image's pixels and annotation are pinned to. The samples cover every branch the
# renderer takes (chosen by branch coverage over 300 images): each background kind, texture, every
# clutter kind, desaturation, defocus, the occluders, each blur and the noise, shadows, sleeves, nails,
# creases, a foreshortened forearm, crops, mirrored hands and uniform views.
# (seed, split, index), (w, h), labelled, x and y digests (sum of (j + 1) * coordinate), bbox,
# JPEG quality, sum of radius_px, occluded keypoints, sha256 of the RGB pixels (first 16 digits).
RENDERS = [
    ((0, "train", 75), (311, 219), 21, 35856.425947, 12059.246607,
     [120.011429, 31.216473, 95.532548, 43.116599], 48, 79.231824, 5, "20b07be402b14aaa"),
    ((0, "train", 137), (216, 216), 21, 34802.387908, 24383.231592,
     [36.196175, 6.089030, 171.717319, 197.703442], 77, 362.122147, 0, "973f298f259a08a0"),
    ((0, "train", 141), (333, 385), 12, 19867.199692, 31800.442273,
     [0.000000, 0.000000, 199.163014, 280.550247], 64, 590.714614, 0, "948d13e4b8ff8007"),
    ((0, "test", 10), (174, 217), 16, 23973.286553, 25936.074514,
     [4.333763, 82.679289, 169.666237, 134.320711], 76, 266.844928, 0, "5f2b825c355baa81"),
    ((0, "train", 0), (365, 313), 21, 48837.660538, 39095.752189,
     [61.115495, 90.666257, 208.597727, 160.811547], 51, 285.775737, 0, "054ef64928d07259"),
    ((0, "train", 1), (374, 268), 14, 51611.112669, 25199.284833,
     [153.288097, 74.613281, 220.711903, 168.684490], 95, 468.017007, 0, "9f5f3536cabe075e"),
    ((0, "train", 2), (213, 310), 17, 18743.580415, 45377.903107,
     [0.000000, 56.896073, 182.509008, 253.103927], 48, 549.269381, 0, "ee577ade6543e8e4"),
    ((0, "test", 0), (285, 374), 21, 26881.882816, 59092.930619,
     [45.267196, 123.210440, 113.608972, 210.736422], 50, 221.955800, 0, "70e7a39c80b2eaff"),
    ((7, "test", 3), (303, 284), 21, 44935.980436, 16820.414652,
     [174.484992, 14.021019, 49.945793, 94.023304], 89, 99.102486, 0, "7e4878e7a4968dee"),
    ((3, "train", 11), (276, 276), 21, 33075.843848, 35937.082081,
     [22.929189, 79.302138, 176.992045, 166.577808], 52, 250.244234, 0, "b0803da47a65d897"),
]
# The pixels go through OpenCV's blurs, resizes and anti-aliased fills: another OpenCV version may
# round some differently, so the pixel hashes are compared under the version they were pinned with.
PIXELS_PINNED_UNDER = "5.1.0"


def _digest(kp: np.ndarray) -> Tuple[float, float]:
    w = np.arange(1, 22)
    return float(kp[:, 0] @ w), float(kp[:, 1] @ w)


@pytest.mark.parametrize("key, size, labelled, xd, yd, bbox, quality, radius, occluded, sha", RENDERS,
                         ids=["-".join(map(str, r[0])) for r in RENDERS])
def test_renders_are_pinned(key, size, labelled, xd, yd, bbox, quality, radius, occluded, sha):
    assert render.RENDER_VERSION == 1                                   # the version these were rendered by
    s = render_sample(*key)
    h, w = s.image.shape[:2]
    assert (w, h) == size and s.image.dtype == np.uint8 and s.image.shape[2] == 3
    # Labelled exactly where the projection falls inside the image (pixel-centre convention).
    proj = s.meta["projected"]
    inside = (proj[:, 0] >= -0.5) & (proj[:, 0] <= w - 0.5) & (proj[:, 1] >= -0.5) & (proj[:, 1] <= h - 0.5)
    np.testing.assert_array_equal(s.keypoints[:, 2], inside.astype(float))
    np.testing.assert_array_equal(s.keypoints[inside, :2], proj[inside])
    assert (s.keypoints[~inside] == 0).all() and int(inside.sum()) == labelled
    np.testing.assert_allclose(_digest(s.keypoints), (xd, yd), atol=1e-5)
    # The box: the labelled keypoints' extent plus a 4-15 % margin, edges at centres + 0.5, clipped.
    np.testing.assert_allclose(s.bbox, bbox, atol=1e-5)
    lo, hi = proj[inside].min(0) + 0.5, proj[inside].max(0) + 0.5
    ext = (hi - lo).max()
    x0, y0, bw, bh = s.bbox
    margins = np.array([lo[0] - x0, lo[1] - y0, x0 + bw - hi[0], y0 + bh - hi[1]])
    clipped = np.isclose([x0, y0, x0 + bw, y0 + bh], [0.0, 0.0, w, h])
    assert ((margins >= 0.04 * ext - 1e-9) & (margins <= 0.15 * ext + 1e-9) | clipped).all()
    assert s.meta["jpeg_quality"] == quality and 45 <= quality <= 95
    assert set(s.meta) == {"skin_rgb", "palm_rgb", "occluded", "radius_px", "projected", "jpeg_quality"}
    assert ((s.meta["skin_rgb"] >= 0) & (s.meta["skin_rgb"] <= 255)).all() and s.meta["palm_rgb"].shape == (3,)
    assert s.meta["radius_px"].shape == (21,) and s.meta["radius_px"].sum() == pytest.approx(radius, abs=1e-5)
    assert int(s.meta["occluded"].sum()) == occluded and not s.meta["occluded"][~inside].any()
    if cv2.__version__ == PIXELS_PINNED_UNDER:
        assert hashlib.sha256(s.image.tobytes()).hexdigest()[:16] == sha


# ----------------------------------------------------------------------------- the painter
SKIN, PALM_TONE = np.array([90.0, 60.0, 45.0]), np.array([235.0, 185.0, 165.0])
FACING, BACK = np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, -1.0, 1.0])   # palm towards / away from the camera


def _camera(hand: kin.Hand3D, rot: np.ndarray):
    """A pinhole 600 mm from the hand's centre, focal 500 px, the centre at pixel (120, 130)."""
    centre = hand.joints.mean(0)

    def to_image(p: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        c = (p - centre) @ rot.T + [0.0, 0.0, 600.0]
        return c[:, :2] / c[:, 2:] * 500.0 + [120.0, 130.0], c[:, 2]
    return to_image


def _paint_flat_hand(rot: np.ndarray):
    """A flat neutral hand, lit from the camera (light (0, 0, -1): shade = 0.5 + 0.3 on faces towards
    it), no sleeve."""
    hand = kin.forward_kinematics(NEUTRAL, FLAT)
    to_image = _camera(hand, rot)
    rng = Scripted(uniform=[0.0, 0.0, 1.0, 0.5, 0.3, 0.6, 0.3], random=[0.9], integers=[np.array([10, 20, 30])])
    color, mask, radius_px = paint.paint_hand(rng, hand, to_image, rot, 500.0, 600.0, 260, 240, SKIN, PALM_TONE)
    return hand, to_image, rng, color, mask, radius_px


def test_draw_lighting_points_the_light_towards_the_camera():
    rng = Scripted(uniform=[0.3, -0.4, 1.2, 0.5, 0.3, 0.6])
    lit = paint._draw_lighting(rng)
    assert [c[1] for c in rng.calls] == [(-1, 1), (-1, 1), (0.3, 1.5), (0.4, 0.7), (0.25, 0.5), (0.45, 0.7)]
    np.testing.assert_allclose(lit.light, np.array([0.3, -0.4, -1.2]) / 1.3, atol=1e-12)
    np.testing.assert_allclose(lit.light2d, [0.6, -0.8], atol=1e-12)
    assert (lit.ambient, lit.diffuse, lit.rim) == (0.5, 0.3, 0.6)
    overhead = paint._draw_lighting(Scripted(uniform=[0.0, 0.0, 1.0, 0.5, 0.3, 0.6]))
    np.testing.assert_array_equal(overhead.light2d, [0.0, 0.0])          # no image-plane direction: no NaN


@pytest.mark.parametrize("rot", [FACING, BACK], ids=["palm", "back"])
def test_the_painted_hand_covers_its_keypoints_with_their_radii(rot):
    hand, to_image, rng, color, mask, radius_px = _paint_flat_hand(rot)
    assert [c[0] for c in rng.calls] == ["uniform"] * 6 + ["random", "integers", "uniform"]   # light, then sleeve
    assert rng.calls[-2:] == [("integers", (0, 256, 3)), ("uniform", (0.15, 0.5))]
    kp, z = to_image(hand.joints)
    px = np.round(kp).astype(int)
    assert (mask[px[:, 1], px[:, 0]] == 255).all()
    # Radius at each finger keypoint: the segment radius over its depth; the wrist's: the forearm's.
    _, fz = to_image(hand.forearm[:1])
    assert radius_px[0] == pytest.approx(27.0 * 500.0 / fz[0], rel=1e-12)
    fingers = np.arange(5, 21)                                          # the thumb's tip moves in depth
    np.testing.assert_allclose(radius_px[fingers], hand.radii[1:].ravel() * 500.0 / z[fingers], rtol=1e-12)
    assert radius_px[1] == pytest.approx(hand.radii[0, 0] * 500.0 / z[1], rel=1e-12)


def test_the_palm_facing_the_camera_has_the_palm_tone_and_creases_the_back_the_skin_and_nails():
    _, _, _, front, _, _ = _paint_flat_hand(FACING)
    hand, to_image, _, back, _, _ = _paint_flat_hand(BACK)
    # Palm centre: the innermost highlight (1.09 x) of tone x shade 0.8.
    np.testing.assert_allclose(front[174, 111], PALM_TONE * 0.8 * 1.09, atol=1.0)
    np.testing.assert_allclose(back[173, 128], SKIN * 0.8 * 1.09, atol=1.0)
    # The head line crosses (111, 164) on the palm; the back has no creases.
    assert (front[164, 111] < 0.8 * front[174, 111]).all()
    np.testing.assert_allclose(back[163, 128], SKIN * 0.8 * 1.09, atol=1.0)
    # Nails on the back of the four fingertips: 55 % skin, 45 % nail tint, shaded; none on the palm side.
    nail = (0.55 * SKIN + 0.45 * np.array([240.0, 212.0, 205.0])) * 0.8
    for f in range(1, 5):
        tip, dip = hand.joints[4 + 4 * f], hand.joints[3 + 4 * f]
        d = (tip - dip) / np.linalg.norm(tip - dip)
        mid = tip - (0.4 * np.linalg.norm(tip - dip) + 0.275 * hand.radii[f, 3]) * d
        (x, y), = np.round(to_image(mid[None])[0]).astype(int)
        np.testing.assert_allclose(back[y, x], nail, atol=2.0)
        assert np.abs(front[y, x] - nail).max() > 30


# ----------------------------------------------------------------------------- drawing primitives
def test_fixed_point_rounds_to_sixteenths():
    got = draw.fx([[1.5, -0.03], [2.04, 0.97]])
    np.testing.assert_array_equal(got, [[24, 0], [33, 16]])
    assert got.dtype == np.int32 and (draw.SHIFT, draw.ONE) == (4, 16.0)


@pytest.mark.parametrize("rgb, want", [((100.0, 50.0, 20.0), (100.0, 50.0, 20.0)), ((255, 0, 0), (255.0, 0.0, 0.0)),
                                       ((510.0, 255.0, -5.0), (255.0, 127.5, 0.0)),
                                       ((100.0, 50.0, 510.0), (50.0, 25.0, 255.0)),
                                       ((-1, -2, -3), (0.0, 0.0, 0.0))])
def test_too_bright_a_colour_is_scaled_down_keeping_its_hue(rgb, want):
    assert draw.col(np.array(rgb)) == pytest.approx(want, abs=1e-12)


def test_capsule_hull_spans_both_discs():
    hull = draw.capsule_hulls(np.array([[10.0, 10.0]]), np.array([[30.0, 10.0]]), np.array([2.0]), np.array([5.0]))[0]
    pts = hull.reshape(-1, 2)
    np.testing.assert_array_equal(pts.min(0), [8 * 16, 5 * 16])
    np.testing.assert_array_equal(pts.max(0), [35 * 16, 15 * 16])
    assert len(pts) > 8                                                  # rounded, not a box


def test_random_colour_and_skin_tone_draws():
    rng = Scripted(integers=[np.array([0, 128, 255])])
    c = draw.random_color(rng)
    assert c.dtype == np.float64 and c.tolist() == [0.0, 128.0, 255.0] and rng.calls == [("integers", (0, 256, 3))]
    scale = draw._SKIN
    for t, want in ((0.0, scale[0]), (6.0, scale[6]), (2.5, (scale[2] + scale[3]) / 2),
                    (5.25, scale[5] + 0.25 * (scale[6] - scale[5]))):
        rng = Scripted(uniform=[t], normal=[np.zeros(3)])
        np.testing.assert_allclose(draw.skin_tone(rng), want, atol=1e-12)
        assert rng.calls == [("uniform", (0, 6)), ("normal", (0, 6, 3))]
    rng = Scripted(uniform=[0.0], normal=[np.array([10.0, -300.0, 0.0])])
    np.testing.assert_allclose(draw.skin_tone(rng), [255.0, 0.0, 200.0])  # jitter clipped to [0, 255]


# ----------------------------------------------------------------------------- the scene
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clutter_marks_what_it_draws_in_the_mask_and_draws_no_text_there(seed):
    """With a mask, every changed pixel is marked (text, drawn only without a mask, is skipped)."""
    img = np.full((120, 160, 3), 7, np.uint8)
    mask = np.zeros((120, 160), np.uint8)
    scene.clutter(np.random.default_rng(seed), img, 30, np.array([200.0, 150.0, 120.0]), mask)
    changed = (img != 7).any(2)
    assert changed.sum() > 2000 and not (changed & (mask == 0)).any()
    assert (mask[changed] > 0).all() and mask.max() == 255


def test_occluders_change_only_what_their_mask_covers():
    for seed in range(12):
        img = np.random.default_rng(100 + seed).integers(0, 256, (90, 120, 3)).astype(np.uint8)
        before = img.copy()
        occ = scene.occlude(np.random.default_rng(seed), img, np.array([30.0, 20.0, 80.0, 70.0]))
        assert occ.shape == (90, 120) and occ.dtype == np.uint8
        np.testing.assert_array_equal(img[occ == 0], before[occ == 0])
        if occ.any():                                                    # over the hand's box
            ys, xs = np.nonzero(occ)
            assert 5 <= xs.mean() <= 105 and 0 <= ys.mean() <= 90
    counts = [int(scene.occlude(np.random.default_rng(s), np.zeros((60, 60, 3), np.uint8),
                                np.array([10.0, 10.0, 50.0, 50.0])).any()) for s in range(60)]
    assert 0.2 < np.mean(counts) < 0.6                                   # 38 % of the hands are occluded


def test_the_scene_and_the_camera_keep_the_image_shape():
    rng = np.random.default_rng(5)
    for _ in range(6):
        bg = scene.backdrop(rng, 70, 90, np.array([200.0, 150.0, 120.0]))
        assert bg.shape == (70, 90, 3) and bg.dtype == np.uint8
        out = scene.degrade(rng, bg)
        assert out.shape == (70, 90, 3) and out.dtype == np.uint8


# ----------------------------------------------------------------------------- the writer
def test_records_round_to_hundredths_and_zero_the_unlabelled():
    kp = np.zeros((21, 3))
    kp[0] = [10.123, 20.456, 1.0]
    kp[5] = [3.005001, 4.994999, 1.0]                                   # kp[1..4], 6..20 outside: v = 0
    s = render.Sample(image=np.zeros((30, 40, 3), np.uint8), keypoints=kp, bbox=np.array([1.234, 2.345, 10.111, 5.555]))
    image, ann = writer._records("test", 6, s)
    assert image == {"id": 7, "file_name": "images/test/000006.jpg", "width": 40, "height": 30}
    want = [0] * 63
    want[0:3], want[15:18] = [10.12, 20.46, 1], [3.01, 4.99, 1]
    assert ann == {"id": 7, "image_id": 7, "category_id": 1, "bbox": [1.23, 2.35, 10.11, 5.55], "keypoints": want,
                   "num_keypoints": 2, "area": round(10.11 * 5.55, 2), "iscrowd": 0}
    assert writer.image_file_name("train", 123456) == "images/train/123456.jpg"


def test_dataset_info_identifies_the_set():
    assert writer.dataset_info("test", 40, 10, 3) == {
        "description": "hrnet-hand synthetic hands", "generator": "hrnet-hand data.synthetic",
        "renderer_version": render.RENDER_VERSION, "split": "test", "seed": 3, "num_train": 40, "num_test": 10}


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """3 train + 2 test images of seed 4, in chunks of 2 (one process)."""
    out = tmp_path_factory.mktemp("tiny") / "set"
    paths = writer.generate(str(out), 3, 2, seed=4, workers=1, progress=False, chunk_size=2)
    return out, paths


def test_generate_writes_the_images_and_their_coco_files(tiny_set):
    out, paths = tiny_set
    assert paths == {"train": str(out / "train.json"), "test": str(out / "test.json")}
    assert sorted(os.listdir(out)) == ["images", "test.json", "train.json"]           # no .tmp left
    assert sorted(os.listdir(out / "images" / "train")) == ["000000.jpg", "000001.jpg", "000002.jpg"]
    assert sorted(os.listdir(out / "images" / "test")) == ["000000.jpg", "000001.jpg"]
    for split, n in (("train", 3), ("test", 2)):
        text = (out / f"{split}.json").read_text()
        assert text.startswith('{"info":{') and ", " not in text[:200]             # compact: read_info reads the head
        data = json.loads(text)
        assert list(data) == ["info", "licenses", "images", "annotations", "categories"]
        assert data["info"] == writer.dataset_info(split, 3, 2, 4) and data["licenses"] == ""
        assert data["categories"] == CATEGORIES
        for i in range(n):
            s = render_sample(4, split, i)
            image, ann = writer._records(split, i, s)
            assert data["images"][i] == image and data["annotations"][i] == ann
            # The JPEG is the rendered image at the sample's own quality.
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(s.image, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, s.meta["jpeg_quality"]])
            assert ok and (out / image["file_name"]).read_bytes() == buf.tobytes()


class _SerialPool:
    """multiprocessing's Pool, run in this process: records its size and initializer."""

    made: List[Tuple[int, Any]] = []

    def __init__(self, processes, initializer):
        _SerialPool.made.append((processes, initializer))

    def imap(self, fn, tasks):
        return map(fn, tasks)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("workers, chunk, num_test, chunks, pools", [
    (1, 2, 1, [("train", 0, 2), ("train", 2, 3), ("test", 0, 1)], []),
    (3, 2, 1, [("train", 0, 2), ("train", 2, 3), ("test", 0, 1)], [3]),
    (8, 2, 1, [("train", 0, 2), ("train", 2, 3), ("test", 0, 1)], [3]),
    (4, 5, 1, [("train", 0, 3), ("test", 0, 1)], [2]),
    (4, 5, 0, [("train", 0, 3)], []),
])
def test_generate_splits_the_work_into_chunks_and_pools_them_when_asked(tmp_path, monkeypatch, workers, chunk,
                                                                         num_test, chunks, pools):
    """Chunks of ``chunk_size`` per split; a pool only for more than one worker and more than one
    chunk, never larger than the number of chunks, its workers started by ``_init_worker``."""
    tasks: List[tuple] = []

    def render_chunk(task):
        tasks.append(task)
        return [({"id": i}, {"id": i}) for i in range(task[3], task[4])]

    class Ctx:
        Pool = _SerialPool
    monkeypatch.setattr(writer, "_render_chunk", render_chunk)
    monkeypatch.setattr(writer, "_mp_context", lambda: Ctx)
    _SerialPool.made = []
    writer.generate(str(tmp_path), 3, num_test, seed=2, workers=workers, progress=False, chunk_size=chunk)
    assert tasks == [(str(tmp_path), split, 2, start, stop) for split, start, stop in chunks]
    assert _SerialPool.made == [(n, writer._init_worker) for n in pools]
    with open(tmp_path / "train.json") as fh:
        assert [im["id"] for im in json.load(fh)["images"]] == [0, 1, 2]     # in order, chunk by chunk


def test_workers_are_forkserver_processes_with_one_opencv_thread():
    ctx = writer._mp_context()
    assert ctx.get_start_method() == "forkserver"
    threads = cv2.getNumThreads()
    try:
        writer._init_worker()
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(threads)


def test_generate_refuses_negative_counts_and_writes_empty_splits(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"^image counts must be >= 0, got train=-1 test=0$"):
        writer.generate(str(tmp_path / "a"), -1, 0, progress=False)
    with pytest.raises(ValueError, match=r"^image counts must be >= 0, got train=0 test=-2$"):
        writer.generate(str(tmp_path / "a"), 0, -2, progress=False)
    writer.generate(str(tmp_path / "b"), 0, 1, seed=1, progress=True)
    err = capsys.readouterr().err
    assert "rendering synthetic hands" in err and "img/s" in err        # the progress bar, on request
    writer.generate(str(tmp_path / "b"), 0, 1, seed=1, progress=False)   # again into the same folder
    with open(tmp_path / "b" / "train.json") as fh:
        data = json.load(fh)
    assert data["images"] == [] and data["annotations"] == [] and data["info"]["num_test"] == 1
    writer.generate(str(tmp_path / "c"), 0, 1, seed=1, progress=False)
    assert capsys.readouterr().err == ""


def test_read_info_reads_both_heads_and_names_the_file_at_fault(tiny_set, tmp_path):
    out, _ = tiny_set
    assert writer.read_info(str(tmp_path)) is None
    assert writer.read_info(str(out)) == {s: writer.dataset_info(s, 3, 2, 4) for s in ("train", "test")}
    info = json.dumps(writer.dataset_info("train", 1, 1, 0))
    # Only the head is read: what follows the info object may be anything (a full parse takes ~0.5 s).
    head = tmp_path / "head"
    head.mkdir()
    for s in ("train", "test"):
        (head / f"{s}.json").write_text('{"info":' + info + ', "images": [' + "1," * 40000)
    assert writer.read_info(str(head))["test"]["seed"] == 0
    # Another layout (info not first) is parsed whole.
    later = tmp_path / "later"
    later.mkdir()
    for s in ("train", "test"):
        (later / f"{s}.json").write_text('{"images": [], "info": ' + info + "}")
    assert writer.read_info(str(later))["train"]["num_train"] == 1
    # A head that starts like ours but is not valid: parsed whole, and that fails naming the file.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "train.json").write_text('{"info": ' + info)
    (broken / "test.json").write_text('{"info":{"generator": ')
    with pytest.raises(SyntheticSetError, match=rf"^{broken / 'train.json'}: unreadable annotation file \(.+\); "
                                                rf"delete {broken} to render it again$"):
        writer.read_info(str(broken))
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "train.json").write_text(info)
    with pytest.raises(SyntheticSetError, match=rf"^incomplete synthetic hand set in {alone}: {alone / 'test.json'} "
                                                rf"is missing; delete {alone} to render it again$"):
        writer.read_info(str(alone))
    (alone / "train.json").unlink()
    (alone / "test.json").write_text(info)
    with pytest.raises(SyntheticSetError, match=rf"{alone / 'train.json'} is missing"):
        writer.read_info(str(alone))
    other = tmp_path / "other"
    other.mkdir()
    (other / "train.json").write_text('{"info": {"generator": "another tool"}}')
    (other / "test.json").write_text("[1, 2]")
    with pytest.raises(SyntheticSetError, match=rf"^{other / 'train.json'} was not written by the synthetic renderer "
                                                r"\(no info.generator 'hrnet-hand data.synthetic'\); for your own "
                                                r"data set DATASET.FORMAT coco$"):
        writer.read_info(str(other))
    (other / "train.json").write_text('{"info":' + info + "}")
    with pytest.raises(SyntheticSetError, match=rf"^{other / 'test.json'} was not written"):
        writer.read_info(str(other))


def test_check_compares_every_count_and_warns_on_another_renderer(tiny_set, tmp_path, caplog):
    out, _ = tiny_set
    want = {"num_train": 3, "num_test": 2, "seed": 4}
    assert writer._check(str(tmp_path), want) is False
    assert writer._check(str(out), want) is True
    with pytest.raises(SyntheticSetError, match=(
            rf"^the synthetic hand set in {out} does not match the config: DATASET.SYNTHETIC.NUM_TRAIN 5 \(the set "
            r"has 3\), DATASET.SYNTHETIC.SEED 1 \(the set has 4\)\. Point DATASET.ROOT at another folder \(it will be "
            r"rendered there\), delete this one, or use DATASET.MAX_TRAIN_SAMPLES / MAX_TEST_SAMPLES for a subset$")):
        writer._check(str(out), {"num_train": 5, "num_test": 2, "seed": 1})
    with pytest.raises(SyntheticSetError, match=r"config: DATASET.SYNTHETIC.NUM_TEST 1 \(the set has 2\)\. Point"):
        writer._check(str(out), {"num_train": 3, "num_test": 1, "seed": 4})
    old = tmp_path / "old"
    old.mkdir()
    for s in ("train", "test"):
        (old / f"{s}.json").write_text(json.dumps({"info": dict(writer.dataset_info(s, 3, 2, 4), renderer_version=0)}))
    with caplog.at_level(logging.WARNING, logger="data.synthetic.writer"):
        assert writer._check(str(old), want) is True
    assert [r.getMessage() for r in caplog.records] == [
        f"{old}/{s}.json was rendered by renderer version 0 (current {render.RENDER_VERSION}); images of the same "
        "seed differ between versions" for s in ("train", "test")]


def _synthetic_cfg(root, *opts):
    return make_cfg(None, ["DATASET.ROOT", str(root), "DATASET.SYNTHETIC.NUM_TRAIN", "2",
                           "DATASET.SYNTHETIC.NUM_TEST", "1", "DATASET.SYNTHETIC.SEED", "3", *opts])


@pytest.mark.parametrize("opts, message", [
    (["DATASET.SYNTHETIC.NUM_TRAIN", "0"], "DATASET.SYNTHETIC.NUM_TRAIN and NUM_TEST must be positive, got 0 and 1"),
    (["DATASET.SYNTHETIC.NUM_TEST", "0"], "DATASET.SYNTHETIC.NUM_TRAIN and NUM_TEST must be positive, got 2 and 0"),
])
def test_ensure_dataset_refuses_empty_splits(tmp_path, opts, message):
    with pytest.raises(ConfigError) as err:
        writer.ensure_dataset(_synthetic_cfg(tmp_path / "hands", *opts))
    assert str(err.value) == message and not (tmp_path / "hands").exists()


def test_ensure_dataset_renders_one_image_per_split_but_not_into_a_folder_of_other_files(tmp_path, monkeypatch):
    made, real = [], writer.generate
    monkeypatch.setattr(writer, "generate", lambda out, *args, **kwargs: made.append(args) or real(
        out, *args, progress=False))
    root = tmp_path / "hands"
    assert writer.ensure_dataset(_synthetic_cfg(root, "DATASET.SYNTHETIC.NUM_TRAIN", "1")) == str(root)
    assert made == [(1, 1, 3)]                                          # the smallest set: one image each
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("x")
    with pytest.raises(SyntheticSetError) as err:
        writer.ensure_dataset(_synthetic_cfg(busy))
    assert str(err.value) == (f"DATASET.ROOT {busy} exists and is not empty but holds no train.json/test.json; "
                              "choose an empty or new folder for the synthetic hands")


def test_ensure_dataset_refuses_a_file_as_its_folder(tmp_path):
    (tmp_path / "hands").write_text("x")
    with pytest.raises(SyntheticSetError, match=rf"^DATASET.ROOT {tmp_path / 'hands'} is a file, not a folder$"):
        writer.ensure_dataset(_synthetic_cfg(tmp_path / "hands"))


@pytest.mark.parametrize("workers, used", [(0, 1), (1, 1), (10 ** 6, os.cpu_count() or 1)])
def test_ensure_dataset_renders_into_an_empty_folder_with_at_most_one_process_a_core(tmp_path, monkeypatch, caplog,
                                                                                  workers, used):
    calls = []

    def fake_generate(out, num_train, num_test, seed, workers):
        calls.append((num_train, num_test, seed, workers))
        # beside ROOT, named so that _remove_stale_renders finds it if this render is killed
        assert os.path.dirname(out) == str(tmp_path) and os.path.basename(out).startswith(".hands.tmp-")
        for s in ("train", "test"):
            with open(os.path.join(out, f"{s}.json"), "w") as fh:
                json.dump({"info": writer.dataset_info(s, num_train, num_test, seed)}, fh)
    monkeypatch.setattr(writer, "generate", fake_generate)
    root = tmp_path / "hands"
    root.mkdir()                                                        # empty: rendered into
    with caplog.at_level(logging.INFO, logger="data.synthetic.writer"):
        assert writer.ensure_dataset(_synthetic_cfg(root, "WORKERS", str(workers))) == str(root)
    assert calls == [(2, 1, 3, used)]
    assert sorted(os.listdir(tmp_path)) == [".hands.lock", "hands"]      # the render renamed into place
    assert sorted(os.listdir(root)) == ["test.json", "train.json"]
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == f"rendering 2 + 1 synthetic hand images (seed 3, {used} processes) into {root}"
    assert messages[1].startswith(f"wrote the synthetic hand set to {root} in ") and messages[1].endswith(" s")


def test_a_failed_render_leaves_no_temporary_folder(tmp_path, monkeypatch):
    def broken(out, *args, **kwargs):
        with open(os.path.join(out, "partial.jpg"), "wb") as fh:
            fh.write(b"x")
        raise KeyboardInterrupt                                         # also a Ctrl-C: BaseException
    monkeypatch.setattr(writer, "generate", broken)
    with pytest.raises(KeyboardInterrupt):
        writer.ensure_dataset(_synthetic_cfg(tmp_path / "hands"))
    assert sorted(os.listdir(tmp_path)) == [".hands.lock"]


def test_stale_renders_of_this_set_only_are_removed(tmp_path, caplog):
    for name in (".hands.tmp-a1", ".hands.tmp-b2", ".other.tmp-c3", "hands.tmp-d4"):
        (tmp_path / name).mkdir()
    (tmp_path / ".hands.tmp-file").write_text("x")                     # not a folder: kept
    (tmp_path / ".hands.tmp-link").symlink_to(tmp_path / ".other.tmp-c3")  # a link: kept, its target too
    with caplog.at_level(logging.WARNING, logger="data.synthetic.writer"):
        writer._remove_stale_renders(str(tmp_path), "hands")
    assert sorted(os.listdir(tmp_path)) == [".hands.tmp-file", ".hands.tmp-link", ".other.tmp-c3", "hands.tmp-d4"]
    assert sorted(r.getMessage() for r in caplog.records) == [
        f"removing {tmp_path / n}, left by an interrupted render" for n in (".hands.tmp-a1", ".hands.tmp-b2")]


def test_the_render_lock_waits_for_its_holder(tmp_path, caplog):
    import fcntl

    path = str(tmp_path / ".hands.lock")
    entered = threading.Event()

    def second():
        with writer._file_lock(path):
            entered.set()
    with open(path, "a") as held, caplog.at_level(logging.INFO, logger="data.synthetic.writer"):
        fcntl.flock(held, fcntl.LOCK_EX)
        t = threading.Thread(target=second)
        t.start()
        assert not entered.wait(0.3)                                    # blocked while held
        fcntl.flock(held, fcntl.LOCK_UN)
        t.join(5)
    assert entered.is_set()
    assert [r.getMessage() for r in caplog.records] == [
        f"waiting for another process rendering the synthetic hands (lock {path})"]
    with writer._file_lock(path):                                       # released: taken at once
        pass


# ----------------------------------------------------------------------------- the preview
def _drawn_in(pixel: np.ndarray, bgr: Tuple[int, int, int]) -> bool:
    """``pixel`` is colour ``bgr`` at 80-100 % (the centre of an anti-aliased 1 px line)."""
    k = pixel.astype(float) @ bgr / (np.dot(bgr, bgr))
    return 0.8 <= k <= 1.0 and np.abs(pixel - k * np.array(bgr)).max() <= 2


def test_draw_annotation_draws_visible_joints_bones_and_the_box_on_a_copy():
    image = np.zeros((240, 240, 3), np.uint8)
    kp = np.zeros((21, 3))
    kp[0] = [40.0, 200.0, 1.0]                                          # wrist: white
    kp[1:5] = [[80.0, 180.0, 1.0], [100.0, 160.0, 1.0], [120.0, 140.0, 1.0], [140.0, 120.0, 1.0]]  # thumb: red
    kp[17:21] = [[40.0, 120.0, 1.0], [40.0, 90.0, 1.0], [40.0, 60.0, 0.0], [40.0, 30.0, 1.0]]     # pinky: magenta
    out = writer.draw_annotation(image, kp, [20.5, 20.5, 150.0, 190.0])
    assert not image.any() and out.shape == image.shape                 # a copy
    # Joints: discs of radius max(2, 240 // 120) = 2 px, white for the wrist, the finger's colour after.
    assert (out[200, 38:43] == 255).all() and not out[200, 36].any() and not out[200, 44].any()
    assert 0 < out[200, 37, 0] < 255 and 0 < out[200, 43, 0] < 255      # anti-aliased edges
    np.testing.assert_array_equal(out[160, 100], [0, 0, 255])
    np.testing.assert_array_equal(out[90, 40], [255, 0, 200])
    for j, bgr in ((5, (0, 165, 255)), (9, (0, 220, 0)), (13, (255, 128, 0))):   # index, middle, ring bases
        kp2 = np.zeros((21, 3))
        kp2[j] = [60.0, 60.0, 1.0]
        np.testing.assert_array_equal(writer.draw_annotation(image, kp2, [0, 0, 1, 1])[60, 60], bgr)
    # Bones (1 px, the finger's colour) between labelled joints only: 20 (v = 0) has none.
    assert _drawn_in(out[170, 90], (0, 0, 255)) and _drawn_in(out[105, 40], (255, 0, 200))
    assert _drawn_in(out[190, 60], (0, 0, 255))                         # wrist to thumb1: the thumb's colour
    assert not out[60, 40].any() and not out[45, 40].any() and not out[75, 40].any()
    assert not out[100, 100].any()
    # The box, COCO edges drawn at pixel centres edge - 0.5: x 20 and 170, y 20 and 210.
    for y, x in ((100, 20), (100, 170), (20, 100), (210, 100)):
        assert _drawn_in(out[y, x], (255, 255, 0)), (y, x)
    assert not out[100, 18].any() and not out[100, 172].any() and not out[212, 100].any()
    # From 400 px on, bones are 2 px wide: max(1, side // 200).
    big = writer.draw_annotation(np.zeros((400, 400, 3), np.uint8), kp, [0, 0, 1, 1])
    assert (big[105, 37:44, 0] == 255).sum() == 3 and (out[105, 37:44, 0] == 255).sum() == 0


def test_make_preview_shows_the_first_16_training_images_in_256_px_tiles(tiny_set, tmp_path):
    out, _ = tiny_set
    with open(out / "train.json") as fh:
        data = json.load(fh)
    # 17 records of one image: the sheet takes the first 16 (4 x 4 tiles of 256 px) of "train".
    data["images"] = [dict(data["images"][0], id=i) for i in range(1, 18)]
    data["annotations"] = [dict(data["annotations"][0], id=i, image_id=i) for i in range(1, 18)]
    (tmp_path / "images").symlink_to(out / "images")
    (tmp_path / "train.json").write_text(json.dumps(data))
    (tmp_path / "test.json").write_text((out / "test.json").read_text())
    sheet = cv2.imread(writer.make_preview(str(tmp_path), str(tmp_path / "sheet.png")))
    assert sheet.shape == (1024, 1024, 3)


def test_make_preview_tiles_the_first_images_with_their_annotations(tiny_set, tmp_path):
    out, _ = tiny_set
    sheet = writer.make_preview(str(out), str(tmp_path / "sub" / "sheet.png"), split="train", count=3, tile=64)
    assert sheet == str(tmp_path / "sub" / "sheet.png")
    img = cv2.imread(sheet)
    assert img.shape == (128, 128, 3)                                   # 2 x 2 tiles, one of them empty
    assert (img[64:, 64:] == 32).all() and img[:64, :64].std() > 10
    with open(out / "train.json") as fh:
        first = json.load(fh)["images"][0]
    w, h = first["width"], first["height"]
    scale = 64 / max(w, h)
    with open(out / "train.json") as fh:
        ann = json.load(fh)["annotations"][0]
    # The first tile: the annotated image shrunk by area averaging (no aliasing of the thin lines).
    annotated = writer.draw_annotation(cv2.imread(str(out / first["file_name"])), ann["keypoints"], ann["bbox"])
    shrunk = cv2.resize(annotated, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(img[:shrunk.shape[0], :shrunk.shape[1]], shrunk)
    if w > h:                                                           # the image fills the tile's width
        assert (img[round(h * scale) + 1:64, :64] == 32).all()
    else:
        assert (img[:64, round(w * scale) + 1:64] == 32).all()
    five = writer.make_preview(str(out), str(tmp_path / "five.png"), split="train", count=5, tile=32)
    assert cv2.imread(five).shape == (64, 64, 3)                        # only 3 images: 2 x 2
    lost = tmp_path / "lost"
    lost.mkdir()
    (lost / "test.json").write_text((out / "test.json").read_text())
    with pytest.raises(FileNotFoundError, match=rf"^cannot read {lost / 'images/test/000000.jpg'}$"):
        writer.make_preview(str(lost), str(tmp_path / "x.png"), split="test")
    (tmp_path / "taken.png").mkdir()                                    # a folder where the PNG should go
    with pytest.raises(RuntimeError, match=rf"^cannot write {tmp_path / 'taken.png'}$"):
        writer.make_preview(str(out), str(tmp_path / "taken.png"), split="test")
