"""The coordinator's live view in headless Chromium, against a real coordinator and real agents over
TLS: a login form trades the admin token for a short-lived HttpOnly, Secure, SameSite=Strict cookie;
the page shows the run, the sites and when each was last heard from, the rounds, the latest round's
metrics per site and the audit log, and reloads itself."""

from __future__ import annotations

import json
import time

import httpx
import pytest

pytest.importorskip("selenium")
from browser import chromium, screenshot
from conftest import HEART_SITES
from selenium.common.exceptions import WebDriverException

CONFIG = {"dataset": "heart-disease", "rounds": 3, "seed": 3, "lr": 0.05, "local_epochs": 1, "baselines": False}


def _settled(action, timeout: float = 15.0):
    """Run a browser action, again if the page reloaded itself in the middle of it (it refreshes every few
    seconds, so an element found may be gone when it is read or clicked)."""
    end = time.monotonic() + timeout
    while True:
        try:
            return action()
        except WebDriverException:
            if time.monotonic() > end:
                raise
            time.sleep(0.3)


def _text(driver, css: str) -> str:
    return _settled(lambda: driver.find_element("css selector", css).text)


def _wait_text(driver, css: str, predicate, timeout: float = 120.0) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            text = _text(driver, css)
            if predicate(text):
                return text
        except WebDriverException:  # the page is reloading itself
            text = None
        time.sleep(0.3)
    raise AssertionError(f"{css} never matched; last page:\n{driver.page_source[:3000]}")


def test_live_view_shows_a_running_federation(deployment, tmp_path):
    gen = chromium(ignore_cert_errors=True)  # the test's own CA; only this coordinator on 127.0.0.1
    driver = next(gen)
    d = deployment(CONFIG)
    d.start_coordinator("--start")
    for site in HEART_SITES[:3]:  # the fourth joins later: the run waits for it, in plain view
        d.start_agent(site)

    driver.get(f"{d.url}/live")
    assert driver.find_elements("id", "token") and not driver.find_elements("id", "sites")  # a login form only
    driver.find_element("id", "token").send_keys("not-the-token")
    driver.find_element("id", "login").click()
    _wait_text(driver, "#error", lambda t: "not the admin token" in t, timeout=30)
    driver.find_element("id", "token").send_keys(d.admin.token)
    driver.find_element("id", "login").click()
    _wait_text(driver, "#updated", lambda t: t.startswith("as of"), timeout=30)  # redirected to the live page
    assert driver.current_url == f"{d.url}/live" and d.admin.token not in driver.current_url

    (cookie,) = driver.get_cookies()
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/live"
    assert cookie["expiry"] - time.time() <= 15 * 60 + 5 and cookie["value"] != d.admin.token

    status = _wait_text(driver, "#status", lambda t: t.endswith("waiting for va"))
    assert "running" in status
    seen = {row.split()[0]: row for row in _text(driver, "#sites").splitlines()[1:]}
    assert set(seen) == set(HEART_SITES) and seen["va"].endswith("— —")  # never heard from
    assert all("—" not in seen[s] for s in HEART_SITES[:3])
    first = _text(driver, "#updated")
    _wait_text(driver, "#updated", lambda t: t != first, timeout=15)  # it reloaded itself
    screenshot(driver, tmp_path / "live-waiting.png")

    d.start_agent("va")
    _wait_text(driver, "#state", lambda t: t == "completed", timeout=240)
    run_dir = d.run_dir(d.status())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = {r["site"]: r for r in rows if r["model"] == "federated" and r["split"] == "test" and r["round"] == 3}
    latest = {line.split()[0]: line.split() for line in _text(driver, "#latest").splitlines()[1:]}
    header = _text(driver, "#latest").splitlines()[0]
    column = header.replace("test ", "test_").split().index("test_accuracy")
    for site in HEART_SITES:  # the page's figures are the run's own
        assert latest[site][column] == f"{last[site]['accuracy']:.4f}"
    assert [line.split()[0] for line in _text(driver, "#rounds").splitlines()[1:]] == ["1", "2", "3"]
    assert "wrong admin token" in _text(driver, "#audit") and "update" in _text(driver, "#audit")
    screenshot(driver, tmp_path / "live-completed.png")

    with httpx.Client(base_url=d.url, verify=False, timeout=30) as plain:  # the cookie opens the page, not the API
        assert plain.get("/v1/status", cookies={"fedcare_live": cookie["value"]}).status_code == 401
        assert "id='sites'" in plain.get("/live", cookies={"fedcare_live": cookie["value"]}).text
        assert plain.post("/live/login", content=b"token=" + b"x" * 10_000).status_code == 413
        assert plain.post("/live/login", content=b"\xff\xfe").status_code == 401
    _settled(lambda: driver.find_element("id", "logout").click())
    assert driver.find_elements("id", "token") and not driver.get_cookies()
    assert d.admin.token not in d.log("coordinator")
    with pytest.raises(StopIteration):
        next(gen)
