"""The search page served at `GET /` by `polyvox serve`, driven end to end in headless Chromium.

The real server runs as a subprocess over the tiny trained dual encoder and its flat index. The page must
show the same hits as the server's own `/search` API, record from a (fake) microphone and send a WAV, and
show the server's error messages.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from conftest import tone_speech

from polyvox.audio import SAMPLE_RATE

CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
if CHROMIUM is None and os.environ.get("POLYVOX_REQUIRE_CHROMIUM"):
    raise RuntimeError("POLYVOX_REQUIRE_CHROMIUM is set but there is no Chromium (apt-get install chromium)")
if CHROMIUM is None:
    pytest.skip("no Chromium: /usr/bin/chromium is absent and `chromium` is not on PATH", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
expect = sync_api.expect

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
CORPUS_LANGS = {"fr_fr", "de_de", "pl_pl"}
ROWS = "#results tbody tr"
PLAYABLE = "document.getElementById('player').duration > 0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    """Poll `/health` until it answers 200; fail with the server's output if it exits or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"polyvox serve exited with {proc.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    pytest.fail(f"polyvox serve did not answer /health within {timeout:.0f} s:\n"
                f"{log.read_text(errors='replace')[-4000:]}")


@pytest.fixture(scope="module")
def server(tiny_search, tmp_path_factory):
    """`python -m polyvox.cli serve` on a free port; yields its base URL and stops it afterwards."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    cmd = [sys.executable, "-m", "polyvox.cli", "serve", "--model", str(tiny_search.model),
           "--index", str(tiny_search.index), "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(base_url=server, viewport={"width": 1100, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.goto("/")
    expect(page.locator("#lang option[value=fr_fr]")).to_have_count(1)
    yield page
    context.close()


@pytest.fixture
def clip(tmp_path) -> Path:
    path = tmp_path / "red-cat-sun.wav"
    sf.write(path, tone_speech("red cat sun", seed=3), SAMPLE_RATE, subtype="PCM_16")
    return path


def search_and_wait(page, rows: int) -> None:
    page.click("#search")
    expect(page.locator(ROWS)).to_have_count(rows)
    expect(page.locator("#search")).to_be_enabled()


def test_upload_shows_the_hits_of_the_search_api(page, server, clip) -> None:
    page.select_option("#lang", "fr_fr")
    page.fill("#k", "5")
    page.set_input_files("#audio-file", str(clip))
    search_and_wait(page, 5)

    rows = page.locator(ROWS)
    cells = [rows.nth(i).locator("td").all_inner_texts() for i in range(5)]
    assert [c[0] for c in cells] == ["1", "2", "3", "4", "5"]
    scores = [float(c[1]) for c in cells]
    assert all(re.fullmatch(r"-?\d+\.\d{4}", c[1]) for c in cells)
    assert scores == sorted(scores, reverse=True)
    langs = [rows.nth(i).get_attribute("data-lang") for i in range(5)]
    assert set(langs) <= CORPUS_LANGS
    assert all(f"({lang})" in c[2] for lang, c in zip(langs, cells))

    api = httpx.post(f"{server}/search", data={"lang": "fr_fr", "k": "5"},
                     files={"audio": (clip.name, clip.read_bytes(), "audio/wav")}, timeout=30)
    assert api.status_code == 200, api.text
    api_ids = [h["id"] for h in api.json()["hits"]]
    assert [rows.nth(i).get_attribute("data-id") for i in range(5)] == api_ids
    assert [c[4] for c in cells] == api_ids

    assert page.locator("#player").get_attribute("src")
    page.wait_for_function(PLAYABLE)  # the query clip loads in the player (and shows its length in the screenshot)
    expect(page.locator("#status")).to_contain_text("speech")
    expect(page.locator("#error")).to_be_hidden()

    artifacts = Path(os.environ.get("POLYVOX_ARTIFACTS", ROOT / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "web_search.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.exists() and shot.stat().st_size > 5_000


def test_record_bad_upload_and_text_query(page, tmp_path) -> None:
    page.select_option("#lang", "detect")  # the server detects the recording's language
    page.fill("#k", "4")

    # Record ~1.5 s from Chromium's fake microphone: the page must send it as a 16 kHz WAV.
    page.click("#record")
    expect(page.locator("#record")).to_have_text("Stop")
    started = time.monotonic()
    page.wait_for_timeout(1500)
    page.click("#record")
    recorded = time.monotonic() - started
    expect(page.locator("#record")).to_have_text("Record")
    bodies = []
    page.route("**/search", lambda route: (bodies.append(route.request.post_data_buffer), route.continue_()))
    search_and_wait(page, 4)
    page.unroute("**/search")
    body = bodies[0]
    assert b"RIFF" in body and b"WAVE" in body and b'filename="recording.wav"' in body
    status = page.locator("#status").inner_text()
    assert "speech" in status and re.search(r"\(\w[^()]* \(\w+\), detected with p = 0\.\d\d\)", status), status
    duration = float(re.search(r"(\d+\.\d+) s", status).group(1))
    assert abs(duration - recorded) <= 1.0, (status, recorded)
    assert page.locator("#player").get_attribute("src")
    page.wait_for_function(PLAYABLE)  # the browser itself can play the WAV the page wrote

    # Garbage named .wav: the server's message is shown and no stale results remain.
    garbage = tmp_path / "x.wav"
    garbage.write_bytes(np.random.default_rng(0).bytes(4000))
    page.set_input_files("#audio-file", str(garbage))
    page.click("#search")
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_contain_text(re.compile(r"HTTP 4\d\d"))
    assert len(error.inner_text().strip()) > len("Search failed (HTTP 415): ")
    expect(page.locator(ROWS)).to_have_count(0)
    expect(page.locator("#search")).to_be_enabled()

    # A text query needs a language: the page says so without sending; then it replaces the audio query.
    page.fill("#text", "red cat")
    page.click("#search")
    expect(error).to_contain_text("Choose the language of a text query.")
    page.select_option("#lang", "fr_fr")
    expect(page.locator("#active")).to_contain_text("text")
    search_and_wait(page, 4)
    expect(error).to_be_hidden()
    assert "text" in page.locator("#status").inner_text()

    # Only hits in one language.
    page.fill("#result-langs", "pl_pl")
    search_and_wait(page, 4)
    rows = page.locator(ROWS)
    assert {rows.nth(i).get_attribute("data-lang") for i in range(4)} == {"pl_pl"}
