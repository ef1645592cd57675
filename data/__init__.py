"""Hand datasets: annotation readers, crops, augmentation, heatmap targets."""
