"""Headless Chromium for the page tests: Debian's chromium and chromedriver, driven by Selenium.

The driver path is given explicitly, so Selenium never tries to download one; a machine without
chromium, chromedriver or selenium skips these tests (CI installs them: see .ci/run)."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

# document.body's children that hold content, with their boxes: two must never overlap
BOXES_JS = """
return Array.from(document.body.children).filter(el => el.getBoundingClientRect().height > 0).map(el => {
  const r = el.getBoundingClientRect();
  return {tag: el.tagName, id: el.id, left: r.left, top: r.top + window.scrollY, right: r.right,
          bottom: r.bottom + window.scrollY};
});"""


def chromium(*, ignore_cert_errors: bool = False) -> Iterator:
    """A headless Chromium session (1280 wide); quit when the generator closes."""
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    if ignore_cert_errors:  # only the live-view test, against its own coordinator on 127.0.0.1
        options.add_argument("--ignore-certificate-errors")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def assert_no_overlap(driver) -> list[dict]:
    """No two of body's children overlap, and nothing is wider than the window."""
    boxes = driver.execute_script(BOXES_JS)
    for a, b in itertools.pairwise(boxes):
        assert a["bottom"] <= b["top"] + 0.5, f"{a['tag']}#{a['id']} overlaps {b['tag']}#{b['id']}"
    width = driver.execute_script("return window.innerWidth")
    assert all(box["right"] <= width + 0.5 for box in boxes), "an element is wider than the window"
    return boxes


def screenshot(driver, path: Path) -> None:
    """The whole page: the window grown to its height first."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(height + 400, 12000))  # the window's own frame takes some of it
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1000)
