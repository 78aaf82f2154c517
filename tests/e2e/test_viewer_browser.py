"""The report's 3D viewer in headless Chromium: NiiVue draws our volumes, switches items, and degrades clearly."""

import io
import json
import shutil
import time
from html import escape

import nibabel as nib
import numpy as np
import pytest
from conftest import drawn_fraction, open_page

from brainlearn.report.viewer import NIIVUE_FILE, niivue_script, viewer_script, write_volume


def _head(tmp_path):
    """A 32³ ellipsoid 'head' with a brighter 'lesion', and the lesion's mask."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 32)] * 3, indexing="ij"))
    head = (grid[0] ** 2 / 0.8 + grid[1] ** 2 / 0.6 + grid[2] ** 2 / 0.7 < 1).astype(np.float32) * 100
    lesion = ((grid[0] - 0.3) ** 2 + grid[1] ** 2 + grid[2] ** 2) < 0.05
    head[lesion] = 180
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(head, affine), tmp_path / "t1.nii.gz")
    nib.save(nib.Nifti1Image(lesion.astype(np.uint8), affine), tmp_path / "mask.nii.gz")
    return tmp_path / "t1.nii.gz", tmp_path / "mask.nii.gz"


def _page(tmp_path, items, *, keys, niivue=True):
    scripts = ([NIIVUE_FILE] if niivue else []) + [f"viewer/{key}.js" for key in keys] + ["viewer.js"]
    html = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>viewer</title></head><body>"
        f"<div class='viewer' data-items=\"{escape(json.dumps(items), quote=True)}\">"
        "<select class='viewer-select'></select><canvas class='viewer-canvas' style='width:600px;height:400px'>"
        "</canvas><p class='viewer-status'></p></div>"
        + "".join(f"<script src='{src}'></script>" for src in scripts)
        + "</body></html>"
    )
    (tmp_path / "index.html").write_text(html)
    shutil.copy(viewer_script(), tmp_path / "viewer.js")
    if niivue:
        shutil.copy(niivue_script(), tmp_path / NIIVUE_FILE)
    return tmp_path / "index.html"


def _thirds(canvas):
    """The multiplanar view's three panels (axial, coronal, sagittal side by side) as RGB arrays."""
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(canvas.screenshot_as_png)).convert("RGB")).astype(int)
    width = pixels.shape[1] // 3
    return [pixels[:, i * width : (i + 1) * width] for i in range(3)]


def _red_fraction(pixels):
    return float(np.mean((pixels[..., 0] > 150) & (pixels[..., 1] < 140) & (pixels[..., 2] < 140)))


@pytest.fixture
def volumes(tmp_path):
    if niivue_script() is None:
        pytest.fail("NiiVue is not bundled: reinstall brainlearn (make install) where npm reaches its registry")
    t1, mask = _head(tmp_path)
    write_volume(t1, tmp_path / "viewer", "v0", kind="image")
    focus = write_volume(mask, tmp_path / "viewer", "v1", kind="mask").focus_mm
    return tmp_path, focus


def test_the_viewer_draws_an_image_with_its_overlay_and_switches_items(volumes, browser):
    overlay = [{"key": "v0"}, {"key": "v1", "colormap": "red", "opacity": 0.6}]
    volumes, focus = volumes  # the lesion's focus: off the volume's centre, where the crosshair starts
    items = [
        {"title": "T1 + lesion", "layers": overlay, "focus_mm": focus},
        {"title": "mask alone", "layers": [{"key": "v1", "colormap": "green"}]},
    ]
    index = _page(volumes, items, keys=["v0", "v1"])
    assert open_page(browser, index) == []
    viewer = browser.find_element("css selector", ".viewer")
    assert viewer.get_attribute("data-state") == "ready"
    canvas = browser.find_element("css selector", ".viewer canvas")
    both = drawn_fraction(canvas)
    assert both > 0.05
    assert all(_red_fraction(third) > 0.002 for third in _thirds(canvas))  # the lesion in all three planes
    assert browser.execute_script("return document.querySelectorAll('.viewer-select option').length") == 2
    browser.execute_script(
        "const s = document.querySelector('.viewer-select'); s.value = '1'; s.dispatchEvent(new Event('change'))"
    )
    for _ in range(100):  # up to 10 s for the new item to load and draw
        if viewer.get_attribute("data-state") == "ready" and drawn_fraction(canvas) < both:
            break
        time.sleep(0.1)
    assert viewer.get_attribute("data-state") == "ready"
    assert 0 < drawn_fraction(canvas) < both  # the small lesion alone covers less of the canvas than the head


def test_a_missing_volume_is_an_error_on_the_page_and_the_console(volumes, browser):
    volumes, _ = volumes
    index = _page(volumes, [{"title": "gone", "layers": [{"key": "v9"}]}], keys=["v0"])
    errors = open_page(browser, index)
    viewer = browser.find_element("css selector", ".viewer")
    assert viewer.get_attribute("data-state") == "error"
    assert "volume v9 is missing" in browser.find_element("css selector", ".viewer-status").text
    assert any("volume v9 is missing" in error for error in errors)


def test_without_niivue_the_viewer_says_so_without_a_console_error(volumes, browser):
    volumes, _ = volumes
    index = _page(volumes, [{"title": "T1", "layers": [{"key": "v0"}]}], keys=["v0"], niivue=False)
    assert open_page(browser, index) == []
    assert browser.find_element("css selector", ".viewer").get_attribute("data-state") == "unavailable"
    assert "not bundled" in browser.find_element("css selector", ".viewer-status").text
