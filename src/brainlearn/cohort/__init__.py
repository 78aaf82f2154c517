"""The built-in cohort: brain MRI and PET generated from real anatomy, with known ground truth."""
