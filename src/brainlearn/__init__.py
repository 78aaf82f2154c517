"""brainlearn: label-efficient deep learning on brain MRI and PET."""

__version__ = "0.1.0"
