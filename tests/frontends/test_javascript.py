"""The Extras before/after widget and tooltips, in headless Chromium on a page that mimics the Extras tab."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from fake_webui import ROOT

PAGE = ROOT / "tests" / "js" / "extras_compare.html"


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def test_compare_widget_and_tooltips_in_chromium(tmp_path):
    browser = chromium()
    if browser is None:
        if os.environ.get("CODEFORMER_REQUIRE_BROWSER"):
            pytest.fail("Chromium is required here (CODEFORMER_REQUIRE_BROWSER is set) but not installed")
        pytest.skip("Chromium is not installed")
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--allow-file-access-from-files",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        PAGE.as_uri(),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    match = re.search(r'<pre id="result-text">(.*?)</pre>', completed.stdout, re.S)
    assert match, f"no result in the page (exit {completed.returncode}): {completed.stderr[-2000:]}"
    assert match.group(1) == "PASS"
