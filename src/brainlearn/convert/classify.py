"""Deciding from the DICOM tags what a series is (T1w, T2w, FLAIR or PET), or why it is left out.

The rules never guess: a series is converted only when its tags name one contrast brainlearn uses, and every
other series gets a reason (localizer, derived, other modality, excluded or unknown contrast, ambiguous). MR
contrasts are read from the words of SeriesDescription and ProtocolName, split at anything but letters and
digits (``t1_mprage_sag`` gives ``t1``, ``mprage``, ``sag``); ``qT1`` or ``T1map`` are not ``t1``.
"""

from __future__ import annotations

import re

from brainlearn.convert.dicom import Series

# Table column -> (BIDS datatype folder, file name suffix); the same names brainlearn.data.bids reads.
COLUMNS = {"t1": ("anat", "T1w"), "t2": ("anat", "T2w"), "flair": ("anat", "FLAIR"), "pet": ("pet", "pet")}

_LOCALIZER_WORDS = {"localizer", "localiser", "scout", "survey", "aahead", "aascout", "topogram", "pilot", "loc"}
_LOCALIZER_TEXT = ("3plane", "triplane", "aahead", "localizer", "localiser")
_CONTRAST_WORDS = {
    "t1": {"t1", "t1w", "mprage", "spgr", "fspgr", "bravo", "tfl", "tfl3d", "t1tfe", "tfe3d"},
    "t2": {"t2", "t2w"},
    "flair": {"flair", "tirm", "darkfluid", "spcir"},
}
_CONTRAST_TEXT = {"t1": ("mprage", "irfspgr", "irspgr"), "t2": (), "flair": ("flair", "darkfluid")}
# Contrasts brainlearn does not use: (name in the reason, words, text inside the squashed description).
_EXCLUDED = (
    ("diffusion MR", {"dwi", "dti", "diff", "diffusion", "tracew", "adc", "fa", "dki", "hardi"}, ("ep2ddiff",)),
    ("functional MR", {"bold", "fmri", "rest", "resting", "rsfmri", "task"}, ("restingstate",)),
    ("perfusion MR", {"asl", "pasl", "pcasl", "perfusion", "perf", "dsc", "dce", "cbf"}, ()),
    ("susceptibility / T2* MR", {"swi", "swan", "t2star", "qsm"}, ("t2star", "t2*")),
    ("field map", {"fieldmap", "b0map", "b1map"}, ("fieldmap", "fieldmapping")),
    ("proton density MR", {"pd", "pdw", "pdt2"}, ()),
    ("angiography", {"tof", "angio", "mra", "pca"}, ()),
    ("MP2RAGE (pick the UNI image and name it yourself)", {"mp2rage", "uni", "inv1", "inv2"}, ("mp2rage",)),
)


def classify(series: Series) -> tuple[str | None, str]:
    """The table column a series goes to (``t1``, ``t2``, ``flair``, ``pet``) or None, and the reason.

    The reason says which tag decided (for converted series) or why the series is left out.
    """
    header = series.first
    image_type = header.image_type
    if not header.rows:
        return None, f"not an image (modality {header.modality or 'unknown'}, no pixel rows)"
    if not header.patient_id:
        return None, "no PatientID, so no participant; brainlearn does not guess who was scanned"
    words, squashed = _words(header.description)
    if "LOCALIZER" in image_type or words & _LOCALIZER_WORDS or any(t in squashed for t in _LOCALIZER_TEXT):
        return None, "localizer / scout (planning images, not a volume to analyse)"
    if image_type[:1] == ("DERIVED",) or "SECONDARY" in image_type[:2]:
        return None, f"derived image (ImageType {'/'.join(image_type)}): not the scanner's original volume"
    if header.modality == "PT":
        return "pet", "PET (Modality PT)"
    if header.modality != "MR":
        return None, f"unsupported modality {header.modality or '(none)'}: brainlearn converts MR and PET"
    if "DIFFUSION" in image_type:
        return None, "diffusion MR (ImageType DIFFUSION): not used by brainlearn"
    if "P" in image_type[2:] or "PHASE" in image_type:
        return None, "phase image (ImageType P): brainlearn uses magnitude images"
    return _mr_contrast(words, squashed, header.description)


def _mr_contrast(words: set[str], squashed: str, description: str) -> tuple[str | None, str]:
    for name, excluded_words, excluded_text in _EXCLUDED:
        hits = sorted(words & excluded_words) + [text for text in excluded_text if text in squashed]
        if hits:
            return None, f"{name} ('{hits[0]}' in the series description): not used by brainlearn"
    found = {
        column: sorted(words & _CONTRAST_WORDS[column]) + [t for t in _CONTRAST_TEXT[column] if t in squashed]
        for column in _CONTRAST_WORDS
    }
    found = {column: hits for column, hits in found.items() if hits}
    if {"flair", "t2"} <= found.keys() and "t1" not in found:
        found.pop("t2")  # T2-weighted FLAIR is FLAIR
    if len(found) == 1:
        ((column, hits),) = found.items()
        return column, f"{COLUMNS[column][1]} ('{hits[0]}' in the series description)"
    if not found:
        return None, "unknown MR contrast: the series description names no T1w, T2w or FLAIR sequence"
    names = " and ".join(COLUMNS[column][1] for column in found)
    return None, f"ambiguous MR contrast: the series description suggests both {names}"


def _words(description: str) -> tuple[set[str], str]:
    """The lower-case words of a description and the description squashed to letters, digits and '*'."""
    lower = description.lower()
    return set(re.split(r"[^a-z0-9*]+", lower.replace("*", " * "))) - {""}, re.sub(r"[^a-z0-9*]", "", lower)
