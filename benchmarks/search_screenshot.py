"""Retake the README's screenshot of the search page: serve an index, upload a clip in headless Chromium.

    python benchmarks/search_screenshot.py --index runs/demo/index --audio CLIP.flac --lang de_de [--k 5]
        [--out docs/search-page.png]

Needs the `serve` extra, playwright and Chromium (/usr/bin/chromium or `chromium` on PATH).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from _common import free_port, start_server


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
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(None, Path(args.index), port, [])
    try:
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
