"""The components scripts/test installs are there and work: a check of the test machine, and the
recipes later suites copy (Playwright on the Debian Chromium, paths from HANDOFF_TEST_*)."""

import http.server
import importlib.metadata
import os
import pathlib
import re
import subprocess
import sys
import threading

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = pathlib.Path(os.environ.get("HANDOFF_TEST_OUT", ROOT / "target" / "test-out")) / "components"

# Chromium as root in a closed network: no sandbox (root), no GPU, none of the background
# connections that this machine refuses.
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--metrics-recording-only",
    "--no-default-browser-check",
]


def pinned():
    """(name, version) for every package the lock pins."""
    text = (ROOT / "scripts" / "requirements-test.txt").read_text()
    return re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)", text, re.M)


def test_the_environment_is_exactly_the_lock():
    pins = pinned()
    assert len(pins) > 50
    wrong = [(n, v, importlib.metadata.version(n)) for n, v in pins if importlib.metadata.version(n) != v]
    assert wrong == []
    names = {n.lower().replace("_", "-") for n, _ in pins}
    extra = sorted(
        d.metadata["Name"] for d in importlib.metadata.distributions()
        if d.metadata["Name"].lower().replace("_", "-") not in names | {"pip", "setuptools"}
    )
    assert extra == [], "installed but not in the lock"
    assert pathlib.Path(sys.executable) == pathlib.Path(os.environ["HANDOFF_TEST_PYTHON"])


def test_the_build_tools_run():
    bin_dir = pathlib.Path(sys.executable).parent
    maturin = subprocess.run([bin_dir / "maturin", "--version"], capture_output=True, text=True, check=True)
    assert maturin.stdout.startswith("maturin 1.16.")
    zig = subprocess.run([sys.executable, "-m", "ziglang", "version"], capture_output=True, text=True, check=True)
    assert zig.stdout.strip().startswith("0.17.")


PAGE = b"""<!doctype html><html><head><meta charset="utf-8"><title>components</title></head><body>
<form onsubmit="event.preventDefault(); document.getElementById('out').textContent = 'hello ' + document.getElementById('who').value;">
<label for="who">Name</label> <input id="who"> <button>Greet</button></form>
<p id="out"></p></body></html>"""


class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args):
        pass


@pytest.fixture
def local_page():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_playwright_drives_the_debian_chromium(local_page):
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=os.environ["HANDOFF_TEST_CHROMIUM"], headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = browser.new_page(viewport={"width": 640, "height": 240})
            page.goto(local_page)
            page.get_by_label("Name").fill("rita")
            page.get_by_role("button", name="Greet").click()
            assert page.locator("#out").inner_text() == "hello rita"
            page.screenshot(path=str(OUT / "chromium.png"))
        finally:
            browser.close()
    assert (OUT / "chromium.png").stat().st_size > 1000
