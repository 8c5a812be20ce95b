"""Headless Chromium for the browser tests of the Jaeger UI (Debian's ``chromium`` and
``chromium-driver``, driven by selenium; tools/system/packages.txt installs both).

    with headless_chromium(tmp_path / "profile") as browser:
        text = page_text(browser, url, lambda text: "orders" in text)
        screenshot(browser, "trace-view")

Screenshots go to ``$KVTRACE_TEST_ARTIFACTS`` (default ``test-artifacts/`` in the repository,
git-ignored). Development harness only: product code never imports it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
ARTIFACTS_ENV = "KVTRACE_TEST_ARTIFACTS"
# Flags that work on this kind of machine: no sandbox (root, no user namespaces), no GPU, and
# nothing that calls out (QUIC, background networking, component updates, sync).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
    "--disable-dev-shm-usage",
)
CHROMIUM = ("chromium", "chromium-browser")
CHROMEDRIVER = "chromedriver"


def artifacts_dir() -> Path:
    path = Path(os.environ.get(ARTIFACTS_ENV) or REPO / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _which(names: tuple[str, ...]) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError(
        f"none of {list(names)} on PATH: install Debian's chromium and chromium-driver "
        "(`make system-deps`, tools/system/packages.txt)"
    )


@contextlib.contextmanager
def headless_chromium(user_data_dir: Path) -> Iterator[Any]:
    """A selenium WebDriver of a fresh headless Chromium profile (never Selenium Manager's
    downloads: the Debian browser and driver are given by path)."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    options.binary_location = _which(CHROMIUM)
    service = webdriver.ChromeService(executable_path=_which((CHROMEDRIVER,)))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def page_text(driver: Any, url: str, ready: Callable[[str], bool], timeout: float = 60.0) -> str:
    """Open ``url`` and poll the page's visible text until ``ready(text)``; on timeout raise
    with the end of the text (a screenshot ``timeout-*.png`` is saved first)."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # the page may be re-rendering
            text = str(driver.find_element(By.TAG_NAME, "body").text)
            if ready(text):
                return text
        time.sleep(0.5)
    shot = screenshot(driver, f"timeout-{url.rsplit('/', 1)[-1].split('?')[0] or 'page'}")
    raise AssertionError(
        f"{url}: the page did not show what was expected within {timeout:.0f}s "
        f"(screenshot {shot}); its text ends with: {text[-1500:]!r}"
    )


def screenshot(driver: Any, name: str) -> Path:
    path = artifacts_dir() / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
