"""HRNet-W18 heatmap model and the training/evaluation core."""
