"""Hand datasets: annotation readers, crops, augmentation, heatmap targets.

``build_dataset(cfg, is_train)`` is the entry point; readers (``read_coco``, ``read_csv``)
produce :class:`HandRecord` s; geometry lives in ``data.transforms``.
"""
from .coco import read_coco
from .csv import read_csv
from .dataset import HandKeypointDataset, build_dataset, check_images
from .records import BadSampleError, HandRecord

__all__ = ["build_dataset", "HandKeypointDataset", "HandRecord", "BadSampleError", "read_coco", "read_csv",
           "check_images"]
