"""Preprocessing real scans: reorientation, bias correction, skull stripping, registration, normalization."""
