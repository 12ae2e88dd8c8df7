"""`zsclip serve` as a real process: the page driven in headless Chromium as a user would (Playwright with the
system's Chromium), a burst of 200 concurrent queries, and clients that hang up mid-response.

Chromium comes from the OS packages (`apt-get install chromium`; .ci/run installs it where missing and sets
CI_REQUIRE_BROWSER=1, so in CI a missing browser fails instead of skipping)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "shapes"


@pytest.fixture
def server(tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(EXAMPLES, photos)
    # The default backend as a user leaves it after `zsclip models --prepare` (auto: onnx where it measured no
    # slower than torch), served from the request threads.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "zsclip", "models", "--prepare", "shapes", "-q"], env=env, check=True,
                   capture_output=True)  # fmt: skip
    command = [
        sys.executable,
        "-m",
        "zsclip",
        "serve",
        str(photos),
        "-m",
        "shapes",
        "--port",
        "0",
        "--rescan",
        "0",
        "--sort-into",
        str(tmp_path / "sorted"),
    ]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = None
        deadline = time.time() + 120
        while url is None and time.time() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                pytest.fail(f"zsclip serve exited {proc.returncode}")
            found = re.search(r"at (http://\S+)", line)
            url = found.group(1) if found else None
        while json.loads(_get(url + "api/status"))["passes"] < 1:
            time.sleep(0.2)
        yield url, photos
    finally:
        proc.terminate()
        proc.wait(10)


def _get(url: str, timeout: float = 30) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return answer.read()


def test_a_burst_of_200_queries_and_clients_that_hang_up(server):
    url, photos = server

    def query(i: int) -> int:
        q = urllib.parse.quote(["red circle", "blue cross", "a star", "green"][i % 4])
        with urllib.request.urlopen(f"{url}api/search?q={q}&top=5", timeout=120) as answer:
            assert len(json.loads(answer.read())["results"]) == 5
            return answer.status

    with ThreadPoolExecutor(200) as pool:
        assert list(pool.map(query, range(200))) == [200] * 200
    host, port = urllib.parse.urlsplit(url).hostname, urllib.parse.urlsplit(url).port
    path = urllib.parse.quote(str(photos / "blue_cross.png"))
    for target in (f"/api/image?path={path}", "/api/classify?classes=red,blue", f"/api/thumb?path={path}"):
        for _ in range(10):
            with socket.create_connection((host, port)) as s:
                s.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
                s.recv(16)  # and hang up mid-response
    assert json.loads(_get(url + "api/status"))["images"] == 12


def test_the_page_in_chromium(server, tmp_path):
    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_path is None:
        if os.environ.get("CI_REQUIRE_BROWSER"):
            pytest.fail("no chromium on PATH (apt-get install chromium)")
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    url, photos = server
    shots = Path(os.environ.get("SERVE_SCREENSHOTS", tmp_path))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path)
        page = browser.new_page(viewport={"width": 1100, "height": 700}, accept_downloads=True)
        page.goto(url)
        page.fill("#q", "a red circle")
        page.press("#q", "Enter")
        page.wait_for_selector("#grid .card")
        first = page.locator("#grid .card .path").first
        assert first.get_attribute("title") == str(photos / "red_circle.png")
        assert "q=a%20red%20circle" in page.url  # the search is a deep link
        page.wait_for_function("document.querySelector('#status-text').textContent.startsWith('12 images')")
        page.screenshot(path=str(shots / "serve-search.png"))
        page.locator("#grid .card button.like").nth(1).click()  # more like the second result
        second = str(photos / "yellow_circle.png")
        page.wait_for_function(f"document.querySelector('#grid .card .path')?.title === {json.dumps(second)}")
        assert "like yellow_circle.png" in page.inner_text("#search-info")

        page.goto(url + "?q=" + urllib.parse.quote("a blue cross"))
        page.wait_for_selector("#grid .card")
        assert page.locator("#grid .card .path").first.get_attribute("title") == str(photos / "blue_cross.png")

        page.click("nav button[data-tab=classify]")
        page.fill("#classes", "red circle, blue cross")
        page.select_option("#templates", "shapes")
        page.click("#run")
        page.wait_for_selector("#chart .bar")
        counts = {b.get_attribute("data-label"): int(b.locator(".count").inner_text()) for b in _bars(page)}
        assert set(counts) == {"red circle", "blue cross"} and sum(counts.values()) == 12
        page.eval_on_selector("#threshold", "e => { e.value = 0.99; e.dispatchEvent(new Event('input')); }")
        moved = {b.get_attribute("data-label"): int(b.locator(".count").inner_text()) for b in _bars(page)}
        assert moved["unknown"] > 0 and sum(moved.values()) == 12  # the slider moves images to unknown, live
        page.click("#chart .bar[data-label='red circle']")
        page.wait_for_selector("#label-grid .card")
        assert page.locator("#label-grid .card").count() == moved["red circle"]
        page.screenshot(path=str(shots / "serve-classify.png"))
        with page.expect_download() as download:
            page.click("#csv")
        text = Path(download.value.path()).read_bytes().decode()
        query = urllib.parse.urlencode(
            {"classes": "red circle, blue cross", "templates": "shapes", "threshold": "0.99", "format": "csv"}
        )
        assert text == _get(url + "api/classify/records?" + query).decode()
        assert text.count("unknown") == moved["unknown"]
        page.click("#plan")
        page.wait_for_selector("#plan-out table")
        assert "would sort 12 images" in page.inner_text("#plan-out")
        browser.close()


def _bars(page):
    return page.locator("#chart .bar").all()
