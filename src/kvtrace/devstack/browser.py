"""Headless Chromium for the browser tests of the Jaeger UI (Debian's ``chromium`` and
``chromium-driver``, driven by selenium; tools/system/packages.txt installs both).

    with headless_chromium(tmp_path / "profile", trust=[jaeger_leaf_pem]) as browser:
        text = page_text(browser, url, lambda text: "orders" in text)
        screenshot(browser, "trace-view")

TLS: the local Jaeger serves its UI over TLS with a leaf of a CA made for the test. Chromium
is not told to trust that CA (its trust store is the machine's NSS database, not the profile);
instead ``trust`` pins the leaf itself: ``--ignore-certificate-errors-spki-list`` with the
SHA-256 of each given certificate's public key, which Chromium honours only with a
``--user-data-dir`` of its own (every call here has a fresh one). Any other certificate, on
any origin, still fails as usual.

Screenshots go to ``$KVTRACE_TEST_ARTIFACTS`` (default ``test-artifacts/`` in the repository,
git-ignored). Development harness only: product code never imports it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
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


def spki_pin(cert_pem: str | bytes) -> str:
    """Base64 of the SHA-256 of a PEM certificate's SubjectPublicKeyInfo (the form of
    ``--ignore-certificate-errors-spki-list``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    pem = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
    spki = (
        x509.load_pem_x509_certificate(pem)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@contextlib.contextmanager
def headless_chromium(user_data_dir: Path, trust: Iterable[str | bytes] = ()) -> Iterator[Any]:
    """A selenium WebDriver of a fresh headless Chromium profile (never Selenium Manager's
    downloads: the Debian browser and driver are given by path) that accepts the PEM
    certificates of ``trust`` (pinned by public key, see the module's docstring)."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    pins = [spki_pin(cert) for cert in trust]
    if pins:
        options.add_argument(f"--ignore-certificate-errors-spki-list={','.join(pins)}")
    options.binary_location = _which(CHROMIUM)
    service = webdriver.ChromeService(executable_path=_which((CHROMEDRIVER,)))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, check: Callable[[Any], T | None], what: str, timeout: float = 60.0) -> T:
    """Poll ``check(driver)`` until it returns something truthy and return it; on timeout
    raise naming ``what``, with the end of the page's text (a screenshot ``timeout-*.png`` is
    saved first). An exception in ``check`` counts as not yet (the page may be re-rendering)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = check(driver)
            if value:
                return value
        time.sleep(0.5)
    shot = screenshot(driver, "timeout-" + re.sub(r"[^A-Za-z0-9]+", "-", what).strip("-")[:60])
    text = ""
    with contextlib.suppress(Exception):
        text = body_text(driver)
    raise AssertionError(
        f"{driver.current_url}: {what} not shown within {timeout:.0f}s (screenshot {shot}); "
        f"the page's text ends with: {text[-1500:]!r}"
    )


def page_text(
    driver: Any,
    url: str,
    ready: Callable[[str], bool],
    timeout: float = 60.0,
    reload_every: float | None = None,
) -> str:
    """Open ``url`` and poll the page's visible text until ``ready(text)``; with
    ``reload_every``, open it again that often (a page that fetches its data once, on load)."""
    driver.get(url)
    loaded = time.monotonic()

    def check(driver: Any) -> str | None:
        nonlocal loaded
        if reload_every is not None and time.monotonic() - loaded > reload_every:
            driver.get(url)
            loaded = time.monotonic()
        text = body_text(driver)
        return text if ready(text) else None

    return wait_for(driver, check, f"what was expected at {url}", timeout)


def body_text(driver: Any) -> str:
    """The visible text of the page as it is now."""
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.TAG_NAME, "body").text)


def texts(driver: Any, css: str) -> list[str]:
    """The ``textContent`` of every element matching ``css`` (hidden overflow included)."""
    from selenium.webdriver.common.by import By

    return [str(e.get_attribute("textContent")) for e in driver.find_elements(By.CSS_SELECTOR, css)]


def screenshot(driver: Any, name: str) -> Path:
    path = artifacts_dir() / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def set_local_storage(driver: Any, origin: str, items: Mapping[str, Any]) -> None:
    """Store ``items`` (JSON-encoded, as jaeger-ui's ``store`` reads them) in the local storage
    of ``origin`` (opened for that), before a page that reads them is loaded."""
    driver.get(origin)
    for key, value in items.items():
        driver.execute_script(
            "window.localStorage.setItem(arguments[0], arguments[1]);", key, json.dumps(value)
        )
