"""The network: ``hrnet.py`` (timm HRNet backbone + HRNetV2 heatmap head, ``build_model``, the
official HRNet-Facial weight layout and pretrained loading) and ``loss.py`` (``JointsMSELoss``).

May import: ``configs`` (for ``build_model(cfg)``), torch, timm. Nothing else of ``hrnet``.
"""
