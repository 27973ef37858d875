"""Headless Chromium for the console's tests, driven through selenium and Debian's chromedriver.

Missing browser: the tests skip and say how to install it, except in CI (CI=true), where they fail.
`CONSOLE_SCREENSHOTS=DIR` keeps the screenshots in DIR (`make screenshots` writes the README's).
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
    "--hide-scrollbars",
)  # fmt: skip
DESKTOP = (1280, 900)
PHONE = (390, 844)
WAIT_S = 10
MAX_SHOT_PX = 2400


def chromium_paths() -> tuple[str, str]:
    """(browser, driver), or skip (fail in CI) when either is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    reason = "the browser tests need Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must install them (scripts/ensure-chromium)")
    pytest.skip(reason)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """A fresh headless Chromium (its own profile), closed after the test."""
    binary, driver_path = chromium_paths()
    with tempfile.TemporaryDirectory(prefix="gateway-chromium-") as profile:
        options = Options()
        options.binary_location = binary
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
        driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
        driver.set_page_load_timeout(WAIT_S)
        try:
            yield driver
        finally:
            driver.quit()


def wait(driver: WebDriver) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1)


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where this test's screenshots go: CONSOLE_SCREENSHOTS, or the test's temporary folder."""
    folder = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def viewport(driver: WebDriver, phone: bool) -> Iterator[None]:
    """The page laid out for a phone (390 px, touch) or a desktop (1280 px) while the block runs."""
    width, height = PHONE if phone else DESKTOP
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": phone})  # fmt: skip
    try:
        driver.execute_script("return document.documentElement.scrollWidth")  # lay the page out anew
        yield
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def screenshot(driver: WebDriver, folder: Path, name: str, phone: bool = False) -> Path:
    """The page from its top, as tall as it is (at most MAX_SHOT_PX), saved as `name`.png."""
    with viewport(driver, phone):
        size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], MAX_SHOT_PX), "scale": 1}
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True, "clip": clip})  # fmt: skip
    path = folder / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def fits_the_width(driver: WebDriver, phone: bool = False) -> bool:
    """Nothing sticks out sideways (so nothing needs scrolling left and right), on a desktop or a phone."""
    with viewport(driver, phone):
        return bool(driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"))


_UNLABELLED = """
return Array.from(document.querySelectorAll("input:not([type=hidden]), select, textarea, button"))
  .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute("aria-label") && !c.textContent.trim())
  .map((c) => c.outerHTML.slice(0, 100));
"""


def assert_usable(driver: WebDriver) -> None:
    """Every control has a label people and screen readers see, and the page fits a desktop and a phone."""
    assert driver.execute_script(_UNLABELLED) == [], driver.current_url
    assert fits_the_width(driver), f"{driver.current_url} is wider than 1280 px"
    assert fits_the_width(driver, phone=True), f"{driver.current_url} is wider than a phone"
