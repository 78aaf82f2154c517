"""Explanation maps: which voxels of an image a trained model relies on."""
