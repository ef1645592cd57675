"""Evaluation and inference of a trained model:

- ``metrics.py``: NME, failure rate, PCK, AUC, EPE (pure functions of arrays);
- ``evaluate.py``: the inference loop over a data loader (flip test, decoding, back to image pixels),
  BN recalibration, COCO results, the oracle floor;
- ``inference.py``: crops of whole images and the PyTorch / ONNX backends of the demo;
- ``model_file.py``: loading a checkpoint or model file for evaluation (which weights, which config);
- ``visualize.py``: skeleton drawing, prediction grids, the TensorBoard gallery;
- ``error_analysis.py``: a test set's worst / random hands as contact sheets, the per-joint NME chart;
- ``export.py``: TorchScript / ONNX export and its parity check.

May import: ``hrnet.models``, ``hrnet.runtime``, ``data``, ``optim``, ``configs``. Not the engine or the study.
"""
