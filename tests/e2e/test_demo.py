"""``brainlearn demo`` on a tiny cohort: every step's outputs, the resume, and its report opened in Chromium."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from brainlearn.cli import main

TINY = ("subjects=24", "spacing=4", "epochs=1", "n_bootstrap=100")
# what the demo report must show: parts of figure[data-name] and result tables
FIGURES = (
    "cohort_montage", "curves", "confusion", "roc", "brain_age", "label_efficiency", "synthesis", "synthesized",
    "reconstruction", "samples", "_ses-01_gradcam", "_ses-01_attention", "_ses-01_noise", "population_noise_all",
)  # fmt: skip
TABLES = ("regions", "summary", "results")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    assert main(["demo", "--out", str(out), *TINY]) == 0
    return out


def test_demo_runs_every_step_on_a_tiny_cohort(demo):
    metrics = json.loads((demo / "metrics.json").read_text())
    assert metrics["demo/cached"] == 24
    assert "demo/classify/test/roc_auc" in metrics and "demo/brain-age/test/mae" in metrics
    assert (demo / "classify" / "evaluation" / "test" / "confusion.png").exists()
    assert "demo/segment/test/dice" in metrics
    for arm in ("scratch", "pretrained"):  # step 6: SimCLR, then both arms at 10 % and 100 % of the labels
        assert {f"demo/label_efficiency/{arm}/{f}/roc_auc" for f in (10, 100)} <= set(metrics)
    assert (demo / "label-efficiency" / "figures" / "label_efficiency.png").exists()
    assert (demo / "pretrain" / "checkpoints" / "best.ckpt").exists()
    assert list((demo / "segment" / "evaluation" / "test" / "masks").glob("*_lesions.nii.gz"))
    assert metrics["cohort/jacobian_min"] > 0
    assert (demo / "figures" / "cohort_montage.png").stat().st_size > 10_000
    assert (demo / "joint" / "evaluation" / "test" / "synthesis.png").exists()
    assert "demo/joint/test/both/roc_auc" in metrics and "demo/joint/test/ssim" in metrics
    synthesized = pd.read_csv(demo / "synthesized" / "synthesized.tsv", sep="\t")
    assert (synthesized["status"] == "synthesized").sum() == metrics["demo/synthesized"] > 0
    assert len(list((demo / "samples").glob("*_t1.nii.gz"))) == 4  # step 8: AD volumes sampled
    assert "demo/generation/test/samples/diversity_ms_ssim" in metrics
    explain = demo / "explain"  # step 9: maps of both models, scored against the cohort's truth
    for folder in ("classify-gradcam", "classify-attention", "brain-age-gradcam", "brain-age-noise"):
        assert (explain / folder / "regions.tsv").exists() and list((explain / folder / "maps").glob("*.nii.gz"))
    assert 0 <= metrics["demo/explain/brain-age/noise/auc/ageing"][0] <= 1
    # step 10: the report of all 16 runs, every volume kind in its viewer
    assert metrics["demo/report/runs"] == 16 and metrics["demo/report/volumes"] > 10
    assert (demo / "report" / "index.html").stat().st_size > 50_000


def test_the_demo_report_opens_in_chromium_with_every_figure_table_and_a_drawn_viewer(demo, browser):
    from conftest import drawn_fraction, open_page

    errors = open_page(browser, demo / "report" / "index.html")
    assert errors == []
    names = browser.execute_script("return [...document.querySelectorAll('figure')].map(f => f.dataset.name)")
    for part in FIGURES:
        assert any(part in name for name in names), part
    broken = browser.execute_script(
        "return [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
    )
    assert broken == []
    tables = browser.execute_script(
        "return [...document.querySelectorAll('table.result-table')].map(t => t.dataset.name)"
    )
    assert set(TABLES) <= set(tables)
    sections = browser.execute_script("return document.querySelectorAll('section.run').length")
    assert sections == 16 == browser.execute_script("return document.querySelectorAll('pre.config').length")
    assert browser.execute_script("return document.querySelectorAll('table.metrics tr').length") > 300
    states = browser.execute_script("return [...document.querySelectorAll('.viewer')].map(v => v.dataset.state)")
    assert len(states) >= 4 and set(states) == {"ready"}  # segmentation, synthesis, explanations, samples
    for viewer in browser.find_elements("css selector", ".viewer canvas")[:3]:
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", viewer)
        assert drawn_fraction(viewer) > 0.05
    shots = Path(os.environ.get("BRAINLEARN_SCREENSHOTS", demo / "report"))
    shots.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(shots / "demo-report-viewer.png"))


def test_the_demo_resumes_and_its_report_is_rewritten(demo):
    index = demo / "report" / "index.html"
    before = index.stat().st_mtime_ns
    assert main(["demo", "--out", str(demo), *TINY]) == 0
    assert index.stat().st_mtime_ns > before
