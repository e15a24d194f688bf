"""The built book, opened in a headless browser: does every page render, show its images and banner,
and show no Python traceback or JavaScript error?

Playwright drives the Chromium the system has (Debian's `chromium`, or $IGKD_CHROMIUM) through
`executable_path`, so nothing is downloaded; every http(s) request is blocked, so the check needs
only the built files.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from igkd.errors import BookError

_PAGE_REPORT = """
(async () => {
  const imgs = [...document.querySelectorAll("img")];
  imgs.forEach((i) => { i.loading = "eager"; });
  await Promise.all(imgs.map((i) => i.complete ? null
    : new Promise((r) => { i.onload = i.onerror = r; setTimeout(r, 10000); })));
  const main = document.querySelector("article.bd-article") || document.body;
  return JSON.stringify({
    title: document.title,
    h1: [...main.querySelectorAll("h1")].map((h) => h.textContent.replace("#", "").trim()),
    images: imgs.length,
    broken: imgs.filter((i) => !(i.naturalWidth > 0)).map((i) => i.getAttribute("src")),
    tables: [...main.querySelectorAll("table")].map((t) => [...t.rows].map((r) =>
      [...r.cells].map((c) => c.textContent.trim()).join("\\t")).join("\\n")),
    banner: (document.querySelector(".bd-header-announcement") || {}).innerText || "",
    errors: main.querySelectorAll(".output.error, .output.traceback, .traceback").length,
    text: main.innerText,
  });
})()
"""


def find_chromium() -> str | None:
    """Path of a Chromium or Chrome executable ($IGKD_CHROMIUM first), or None."""
    candidates = [os.environ.get("IGKD_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"]
    for name in filter(None, candidates):
        found = shutil.which(name)
        if found:
            return found
    return None


def check_site(html_dir: Path, page_names: list[str], chromium: str | None = None) -> dict:
    """Open each page of a built book in headless Chromium and report what it rendered.

    Returns {page: {"title", "h1", "images", "broken" (src of images with naturalWidth 0),
    "tables" (their text), "banner", "errors" (error-output elements), "text", "exceptions"
    (JavaScript exceptions)}}. BookError if Chromium or Playwright is missing or does not start.
    """
    chromium = chromium or find_chromium()
    if chromium is None:
        raise BookError("no Chromium found: apt-get install chromium (or set IGKD_CHROMIUM)")
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        raise BookError(f"the browser check needs Playwright: pip install playwright ({e})") from e
    html_dir = Path(html_dir).resolve()
    found: dict = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=chromium,
                # CI runs as root, where Chromium's sandbox refuses to start
                args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
            )
            page = browser.new_page(viewport={"width": 1280, "height": 1024})
            page.route("http*://**", lambda route: route.abort())  # files only
            exceptions: list[str] = []
            page.on(
                "pageerror", lambda e: exceptions.append(f"{e.name}: {e.message}".splitlines()[0])
            )
            for name in page_names:
                exceptions.clear()
                page.goto((html_dir / name).as_uri(), wait_until="load", timeout=60_000)
                report = json.loads(page.evaluate(_PAGE_REPORT))
                found[name] = {**report, "exceptions": list(exceptions)}
            browser.close()
    except PlaywrightError as e:
        raise BookError(f"{chromium} could not check the book: {str(e).splitlines()[0]}") from e
    return found


# JavaScript errors of the book's own toolchain that do not affect what a page shows.
KNOWN_JS_ERRORS = (
    # sphinx-thebe 0.3.1 writes its inline config script twice into every page
    "Identifier 'THEBE_JS_URL' has already been declared",
)


def problems(found: dict) -> list[str]:
    """What is wrong with the pages `check_site` found: pages that did not render, images not
    shown, Python tracebacks, a missing banner (or one saying the chapters are not executed),
    JavaScript errors (other than KNOWN_JS_ERRORS)."""
    out = []
    for name, page in found.items():
        if not page["h1"]:
            out.append(f"{name}: no title (h1): the page did not render")
        if page["broken"]:
            out.append(f"{name}: images not shown: {', '.join(page['broken'])}")
        if page["errors"] or "Traceback (most recent call last)" in page["text"]:
            out.append(f"{name}: shows a Python traceback or an error output")
        if page["banner"].startswith("These chapters are not executed"):
            out.append(f"{name}: the chapters are not executed (make book PROFILE=...)")
        elif "profile" not in page["banner"]:
            out.append(f"{name}: no banner with the profile, data and machine")
        for error in page["exceptions"]:
            if not any(known in error for known in KNOWN_JS_ERRORS):
                out.append(f"{name}: JavaScript error {error}")
    return out
