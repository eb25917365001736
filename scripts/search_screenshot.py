"""Retake the README's screenshot of the search page: serve an index, upload a clip in headless Chromium.

    python scripts/search_screenshot.py --index runs/demo/index --audio CLIP.flac --lang de_de [--k 5]
        [--out docs/search-page.png]

Needs the `serve` extra, playwright and Chromium (/usr/bin/chromium or `chromium` on PATH).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True)
    ap.add_argument("--audio", required=True)
    ap.add_argument("--lang", required=True)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--out", default="docs/search-page.png")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium")
    if chromium is None:
        sys.exit("no Chromium: install it (apt-get install chromium)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "polyvox.cli", "serve", "--index", args.index,
                               "--port", str(port)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit("polyvox serve did not come up")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.goto(url)
            page.select_option("#lang", args.lang)
            page.fill("#k", str(args.k))
            page.set_input_files("#audio-file", args.audio)
            page.click("#search")
            page.wait_for_function(f"document.querySelectorAll('#results tbody tr').length === {args.k}")
            page.wait_for_function("document.getElementById('player').duration > 0")
            page.screenshot(path=args.out, full_page=True)
            browser.close()
        print(f"wrote {args.out}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
