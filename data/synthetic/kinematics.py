"""A 3D kinematic hand: anatomical bone lengths, joint limits, random articulation and views.

Hand frame (millimetres): the wrist keypoint at the origin, ``+y`` from the wrist towards the
middle finger, ``+x`` towards the thumb (a right hand; a left hand is the mirror image), ``+z``
out of the palm (palmar side). Fingers flex towards ``+z``.

Keypoints (21, COCO-WholeBody / OneHand10K order): wrist, then per finger (thumb, index, middle,
ring, pinky) four points from the palm outwards: thumb CMC, MCP, IP, tip; finger MCP, PIP, DIP,
tip.

Each finger is a chain of rigid frames ``F = [d, b, a]`` (columns: bone direction, bend
direction (palmar), flexion axis ``a = d x b``). A joint rotates the frame about its own axes:
flexion turns ``d`` towards ``b`` (about ``a``), abduction turns ``d`` towards ``a`` (about
``b``). Everything is batched over the five fingers; nothing loops over pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_JOINTS = 21
FINGER_NAMES = ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")
KEYPOINT_NAMES = ["wrist"] + [f"{f}{k}" for f in FINGER_NAMES for k in range(1, 5)]
# 1-based COCO skeleton: wrist to each finger base, then along each finger.
SKELETON = [pair for f in range(5) for pair in
            ([[1, 2 + 4 * f]] + [[2 + 4 * f + k, 3 + 4 * f + k] for k in range(3)])]

# --- Anatomy (adult hand, millimetres), after published hand-bone length tables ---
# Base joint (thumb CMC, finger MCP) positions in the hand frame.
_BASE = np.array([[24.0, 20.0, 8.0],     # thumb CMC
                  [31.0, 92.0, 0.0],     # index MCP
                  [9.0, 96.0, 0.0],      # middle MCP
                  [-12.0, 91.0, 0.0],    # ring MCP
                  [-31.0, 81.0, 0.0]])   # pinky MCP
# Segment lengths after the base joint: thumb metacarpal/proximal/distal, finger
# proximal/middle/distal phalanx (the distal one to the fingertip).
_LENGTH = np.array([[46.0, 33.0, 28.0],
                    [41.0, 24.0, 21.0],
                    [46.0, 28.0, 22.0],
                    [43.0, 27.0, 22.0],
                    [34.0, 20.0, 20.0]])
# Segment radii (half widths) at the segment's start and end.
_RADIUS = np.array([[13.0, 10.5, 10.0, 9.0],
                    [10.0, 9.0, 8.2, 7.5],
                    [10.2, 9.3, 8.5, 7.8],
                    [9.6, 8.8, 8.0, 7.4],
                    [8.6, 7.8, 7.2, 6.6]])
# Rest spread of the fingers in the palm plane (degrees towards the thumb).
_SPREAD = np.array([0.0, 9.0, 1.5, -6.0, -14.0])
# Thumb rest direction and bend direction (towards the palm centre, palmar).
_THUMB_DIR = np.array([0.62, 0.70, 0.36])
_THUMB_BEND = np.array([-0.75, 0.0, 0.66])

# Joint limits (degrees): abduction at the base, flexion at the three joints.
ABD_LIMIT = np.array([[-20.0, 25.0], [-20.0, 20.0], [-12.0, 12.0], [-15.0, 15.0], [-20.0, 20.0]])
FLEX_LIMIT = np.array([  # per finger: base, middle, distal joint
    [[-15.0, 50.0], [-10.0, 60.0], [-20.0, 80.0]],   # thumb CMC, MCP, IP
    [[-30.0, 90.0], [0.0, 110.0], [-10.0, 80.0]],    # index MCP, PIP, DIP
    [[-30.0, 90.0], [0.0, 110.0], [-10.0, 80.0]],
    [[-30.0, 90.0], [0.0, 110.0], [-10.0, 80.0]],
    [[-30.0, 90.0], [0.0, 110.0], [-10.0, 80.0]],
])

# Palm outline in the hand frame (x, y), wrist ulnar side round to the thumb side, drawn as
# a slab of thickness PALM_THICKNESS; its top edge lies beyond the MCPs so that the palm
# covers the finger bases.
_PALM_OUTLINE = np.array([[-27.0, -4.0], [-36.0, 30.0], [-40.0, 62.0], [-39.0, 84.0],
                          [-26.0, 95.0], [-10.0, 101.0], [8.0, 104.0], [24.0, 101.0],
                          [38.0, 95.0], [40.0, 70.0], [34.0, 38.0], [27.0, -4.0]])
PALM_THICKNESS = 24.0
# Palm creases (heart, head and life lines) as polylines on the palmar surface (x, y).
_CREASES = (np.array([[-40.0, 66.0], [-22.0, 70.0], [-2.0, 76.0], [16.0, 86.0]]),
            np.array([[34.0, 66.0], [14.0, 60.0], [-8.0, 54.0], [-30.0, 46.0]]),
            np.array([[32.0, 64.0], [18.0, 50.0], [12.0, 30.0], [10.0, 8.0]]))


@dataclass
class Hand3D:
    """One posed hand in the hand frame (millimetres).

    joints: (21, 3) keypoints. frames: (5, 3, 3, 3) per finger and segment, the frame
    columns (d, b, a). radii: (5, 4) segment radii at the four finger points. palm: (P, 3) the
    palm slab's corners (both faces). creases: list of (K, 3) polylines on the palmar face.
    forearm: (2, 3) forearm axis from the wrist outwards; forearm_radius: (2,).
    """

    joints: np.ndarray
    frames: np.ndarray
    radii: np.ndarray
    palm: np.ndarray
    creases: list
    forearm: np.ndarray
    forearm_radius: np.ndarray
    palm_normal: np.ndarray


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _rot_flex(theta: np.ndarray) -> np.ndarray:
    """(N, 3, 3) local rotations turning ``d`` towards ``b`` by ``theta`` radians (about ``a``)."""
    c, s = np.cos(theta), np.sin(theta)
    r = np.zeros(theta.shape + (3, 3))
    r[..., 0, 0], r[..., 1, 0], r[..., 0, 1], r[..., 1, 1], r[..., 2, 2] = c, s, -s, c, 1.0
    return r


def _rot_abd(phi: np.ndarray) -> np.ndarray:
    """(N, 3, 3) local rotations turning ``d`` towards ``a`` by ``phi`` radians (about ``b``)."""
    c, s = np.cos(phi), np.sin(phi)
    r = np.zeros(phi.shape + (3, 3))
    r[..., 0, 0], r[..., 2, 0], r[..., 0, 2], r[..., 2, 2], r[..., 1, 1] = c, s, -s, c, 1.0
    return r


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues rotation matrix (3, 3)."""
    axis = _unit(np.asarray(axis, dtype=np.float64))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def _initial_frames(spread: np.ndarray) -> np.ndarray:
    """(5, 3, 3) rest frames: fingers along +y fanned by ``spread`` (rad), the thumb apart."""
    frames = np.zeros((5, 3, 3))
    d = np.stack([np.sin(spread), np.cos(spread), np.zeros(5)], axis=1)
    b = np.tile([0.0, 0.0, 1.0], (5, 1))
    td = _unit(_THUMB_DIR)
    tb = _unit(_THUMB_BEND - (_THUMB_BEND @ td) * td)
    d[0], b[0] = td, tb
    frames[:, :, 0], frames[:, :, 1], frames[:, :, 2] = d, b, np.cross(d, b)
    return frames


def sample_pose(rng: np.random.Generator) -> dict:
    """Random articulation within the joint limits (degrees).

    A hand-wide curl mixed with per-finger curls gives open hands, fists and everything in
    between (pointing, pinches, counting gestures); PIP and DIP flexion are coupled as in real
    fingers (DIP ~ 2/3 PIP), the fingers converge when they curl.
    Returns ``abd`` (5,), ``flex`` (5, 3), ``wrist`` (2,) flexion/deviation, ``cup`` (palm arch).
    """
    mode = rng.random()
    if mode < 0.3:                                   # open hand, fingers mostly straight
        base = rng.uniform(0.0, 0.25)
    elif mode < 0.5:                                 # fist-like
        base = rng.uniform(0.65, 1.0)
    else:
        base = rng.uniform(0.0, 1.0)
    independent = rng.random(5) < rng.uniform(0.0, 0.8)   # fingers that ignore the hand-wide curl
    curl = np.where(independent, rng.choice([0.0, 0.5, 1.0], 5) + rng.normal(0, 0.2, 5),
                    base + rng.normal(0, 0.1, 5))
    curl = np.clip(curl, 0.0, 1.0)
    lo, hi = FLEX_LIMIT[..., 0], FLEX_LIMIT[..., 1]
    # Curl maps to a typical flexion per joint; separate jitter at the base joint gives "hook"
    # (PIP bent, MCP straight) and "flat" (MCP bent, PIP straight) postures.
    typical = np.array([[0.0, 45.0], [-10.0, 80.0], [0.0, 100.0]])  # base, middle, distal: rest, curled
    flex = typical[:, 0] + curl[:, None] * (typical[:, 1] - typical[:, 0])
    flex[:, 0] += rng.normal(0.0, 18.0, 5)
    flex[:, 1] += rng.normal(0.0, 12.0, 5)
    flex[1:, 2] = flex[1:, 1] * 0.67 + rng.normal(0.0, 8.0, 4)     # DIP follows PIP
    thumb_curl = rng.uniform(0.0, 1.0)
    flex[0] = np.array([-5.0, 0.0, 0.0]) + thumb_curl * np.array([40.0, 45.0, 55.0]) + rng.normal(0, 10.0, 3)
    flex = np.clip(flex, lo, hi)
    spread = rng.uniform(0.0, 1.6) * (1.0 - 0.6 * curl)
    abd = (spread - 1.0) * _SPREAD + rng.normal(0.0, 4.0, 5)
    abd[0] = rng.uniform(-20.0, 25.0)
    abd = np.clip(abd, ABD_LIMIT[:, 0], ABD_LIMIT[:, 1])
    wrist = np.array([rng.uniform(-55.0, 55.0), rng.uniform(-25.0, 25.0)])
    return {"abd": abd, "flex": flex, "wrist": wrist, "cup": rng.uniform(0.0, 1.0) * curl[3:].mean()}


def sample_shape(rng: np.random.Generator) -> dict:
    """Per-hand anatomy: overall size, palm width and finger length/width ratios."""
    size = rng.uniform(0.85, 1.15)
    return {"size": size,
            "palm_w": rng.uniform(0.92, 1.1),
            "finger_len": rng.uniform(0.9, 1.1) * rng.uniform(0.96, 1.04, (5, 1)),
            "finger_w": rng.uniform(0.85, 1.15)}


def forward_kinematics(shape: dict, pose: dict) -> Hand3D:
    """Pose the hand: (21, 3) keypoints plus the geometry the renderer draws (hand frame, mm)."""
    s, pw = shape["size"], shape["palm_w"]
    base = _BASE * np.array([pw, 1.0, 1.0])
    cup = pose["cup"]
    base[3:, 2] += np.array([8.0, 16.0]) * cup         # ring and pinky metacarpals fold palmar
    base[4, 0] += 5.0 * cup
    lengths = _LENGTH * shape["finger_len"]
    frames0 = _initial_frames(np.deg2rad(_SPREAD))
    abd = np.deg2rad(pose["abd"])                     # relative to the rest spread
    flex = np.deg2rad(pose["flex"])
    frame = frames0 @ _rot_abd(abd) @ _rot_flex(flex[:, 0])
    points = [base]
    seg_frames = []
    pos = base
    for k in range(3):
        if k:
            frame = frame @ _rot_flex(flex[:, k])
        seg_frames.append(frame)
        pos = pos + lengths[:, k:k + 1] * frame[:, :, 0]
        points.append(pos)
    fingers = np.stack(points, axis=1)                 # (5, 4, 3)
    joints = np.concatenate([np.zeros((1, 3)), fingers.reshape(20, 3)], axis=0) * s

    outline = _PALM_OUTLINE * np.array([pw, 1.0])
    zc = np.interp(outline[:, 0], [-40.0, -20.0, 40.0], [14.0 * cup, 0.0, 0.0])  # palm arch
    half = PALM_THICKNESS / 2
    palm = np.concatenate([np.c_[outline, zc + half], np.c_[outline, zc - half]]) * s
    creases = [np.c_[c * np.array([pw, 1.0]), np.full(len(c), half)] * s for c in _CREASES]

    # Forearm: out of the wrist opposite the fingers, bent by wrist flexion / deviation.
    fdir = _axis_angle([1.0, 0.0, 0.0], np.deg2rad(pose["wrist"][0])) @ \
        _axis_angle([0.0, 0.0, 1.0], np.deg2rad(pose["wrist"][1])) @ np.array([0.0, -1.0, 0.0])
    forearm = np.stack([np.array([0.0, 8.0, 0.0]), np.array([0.0, 8.0, 0.0]) + 260.0 * fdir]) * s
    radii = _RADIUS * shape["finger_w"] * s
    radii[0] = _RADIUS[0] * s * (0.5 + 0.5 * shape["finger_w"])
    return Hand3D(joints=joints, frames=np.stack(seg_frames, axis=1), radii=radii, palm=palm,
                  creases=creases, forearm=forearm,
                  forearm_radius=np.array([27.0, 36.0]) * s * pw,
                  palm_normal=np.array([0.0, 0.0, 1.0]))


def sample_rotation(rng: np.random.Generator) -> np.ndarray:
    """(3, 3) hand-to-camera rotation: any roll, mostly palm- or back-facing, some edge-on views."""
    if rng.random() < 0.15:                            # uniform over SO(3): the hard views
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        w, x, y, z = q
        return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                         [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                         [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    # Camera looks along +z; the palm normal starts facing the camera (-z) or away from it.
    face = np.diag([1.0, 1.0, 1.0]) if rng.random() < 0.5 else np.diag([-1.0, 1.0, -1.0])
    face = np.diag([1.0, -1.0, -1.0]) @ face           # hand +y points up the image (image y is down)
    tilt_axis = rng.uniform(0.0, 2 * np.pi)
    tilt = min(abs(rng.normal(0.0, np.deg2rad(35.0))), np.deg2rad(80.0))
    roll = rng.uniform(-np.pi, np.pi)
    return (_axis_angle([0.0, 0.0, 1.0], roll)
            @ _axis_angle([np.cos(tilt_axis), np.sin(tilt_axis), 0.0], tilt) @ face)
