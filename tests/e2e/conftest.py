"""Headless Chromium for the report tests: Debian's ``chromium`` and ``chromium-driver`` driven by selenium.

Without them the browser tests are skipped on a developer's machine (``make browser`` installs them where apt can)
and fail in CI (``CI`` set), where ``.ci/run`` installs them. WebGL runs on SwiftShader, Chromium's CPU renderer,
so the viewer draws on machines without a GPU.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1280, 1000)
LOAD_TIMEOUT_S = 60
# states of a report viewer (assets/viewer.js) that are final
SETTLED = ("ready", "error", "unavailable")


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """One headless Chromium for the session, its console log kept at every level."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium package")
    if missing:
        message = f"{', '.join(missing)} not installed: run `make browser` (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader",
        "--ignore-gpu-blocklist",
        "--allow-file-access-from-files",
        # no background traffic: the machines here and in CI reach only package registries
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")  # a new, empty profile
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(LOAD_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(browser, path: Path) -> list[str]:
    """Open ``path`` from disk, bring every viewer into view until it has settled, and return the console errors.

    A viewer starts only when it scrolls near the screen (assets/viewer.js), so each one is scrolled to in turn
    and given up to ``LOAD_TIMEOUT_S`` to become ``ready``, ``error`` or ``unavailable``.
    """
    browser.get_log("browser")  # drop what an earlier page logged
    browser.get(Path(path).resolve().as_uri())
    viewers = browser.find_elements("css selector", ".viewer")
    for viewer in viewers:
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", viewer)
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while viewer.get_attribute("data-state") not in SETTLED:
            if time.monotonic() > deadline:
                raise AssertionError(f"{path}: a viewer is still {viewer.get_attribute('data-state')!r} after 60 s")
            time.sleep(0.1)
    browser.execute_script("window.scrollTo(0, 0)")
    return [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def drawn_fraction(element) -> float:
    """The fraction of ``element``'s screenshot pixels that differ from its most common colour (the background)."""
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(element.screenshot_as_png)).convert("RGB")).reshape(-1, 3)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    background = colours[np.argmax(counts)]
    return float(np.mean(np.any(np.abs(pixels.astype(int) - background) > 8, axis=1)))
