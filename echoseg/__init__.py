"""echoseg: synthetic data for vision-language segmentation of echocardiography."""

__version__ = "0.1.0"
