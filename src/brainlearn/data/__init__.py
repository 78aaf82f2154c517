"""Data entering brainlearn: participants tables, BIDS folders, document 000's pair lists, splits."""
