"""Training of segmentation models: recipe, losses, data set, loop, checkpoints (see loop.train)."""
