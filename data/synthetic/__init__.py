"""Synthetic hands: the embedded default data set, rendered procedurally (no download).

``ensure_dataset(cfg)`` renders the COCO-style set into ``DATASET.ROOT`` when it is missing
(``DATASET.FORMAT synthetic``); ``generate(out_dir, ...)`` writes one directly (also
``tools/make_synthetic_hands.py``); ``render_sample(seed, split, index)`` draws one image in
memory. See ``kinematics`` (the 3D hand), ``render`` (one image: camera and composition), ``scene``
(background, clutter, occluders, camera effects), ``paint`` (the hand), ``draw`` (shared drawing
primitives) and ``writer`` (files).
"""
from .kinematics import KEYPOINT_NAMES, NUM_JOINTS, SKELETON
from .render import RENDER_VERSION, Sample, render_sample
from .writer import (CATEGORIES, SyntheticSetError, dataset_info, draw_annotation, ensure_dataset, generate,
                     image_file_name, make_preview, read_info)

__all__ = ["CATEGORIES", "KEYPOINT_NAMES", "NUM_JOINTS", "RENDER_VERSION", "SKELETON", "Sample", "SyntheticSetError",
           "dataset_info", "draw_annotation", "ensure_dataset", "generate", "image_file_name",
           "make_preview", "read_info", "render_sample"]
