"""A real headless Chromium (Debian's chromium + chromium-driver) driven through Selenium."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# Files a test wants a person to look at (screenshots): conftest lists them after the run.
ARTIFACTS: list[str] = []
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Flags that work in this container; every host but the local one resolves to nothing, so a page
# that tried to load anything from the internet would show it as a console error.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,2900", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")


def chromium(profile: Path):
    """A headless Chromium with a fresh profile, or a skip naming what is missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing and not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip(f"no {' / '.join(missing)}: install Debian's chromium and chromium-driver "
                    "(apt-get install -y chromium chromium-driver; .ci/run does)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver_path = CHROMEDRIVER if Path(CHROMEDRIVER).exists() else shutil.which("chromedriver")
    return webdriver.Chrome(service=Service(driver_path), options=options)


def wait_for(driver, script: str, timeout: float = 60, what: str = "") -> Any:
    """Poll a JavaScript expression until it is truthy; its value (fail with `what` if never)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return ({script});")
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"page never showed {what or script} within {timeout:g} s")


def console_errors(driver, keep: Callable[[dict], bool] = lambda e: True) -> list[dict]:
    """Console entries of level SEVERE (JavaScript errors, failed loads) since the last call."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and keep(e)]
