"""Open every page of a built Jupyter Book in headless Chromium and check it.

A page fails on a broken image, an error banner (failed cell, traceback,
docutils system message) or, if named in --expect-figures, on having no
figure in its article. One screenshot per page is saved. Exit status:
0 all pages OK, 1 some page failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
FLAGS = "--headless --no-sandbox --disable-gpu --no-first-run --disable-sync"
FLAGS += " --disable-background-networking --disable-component-update"
WIDTH, HEIGHT, MAX_HEIGHT = 1280, 2000, 12000
SKIP_NAMES = {"genindex.html", "search.html", "py-modindex.html"}
REDIRECT = re.compile(rb'http-equiv="refresh"', re.IGNORECASE)
IMAGE_URL = re.compile(r"\.(png|jpe?g|gif|svg|webp)\b", re.IGNORECASE)
ERROR_CSS = ".output.error, .output.traceback, .admonition.error, .system-message"
ALL_LOADED_JS = "return Array.from(document.images).every(i => i.complete)"
INSPECT_JS = """
const art = document.querySelector('.bd-article') || document.querySelector('article')
  || document.querySelector('main') || document.body;
const imgs = Array.from(document.images);
const snip = e => e.textContent.replace(/[-=]{4,}>?/g, ' ')
  .replace(/\\s+/g, ' ').trim().slice(0, 80);
const errors = Array.from(document.querySelectorAll(arguments[0])).map(snip);
if (!errors.length && art.textContent.includes('Traceback (most recent call last)'))
  errors.push('text "Traceback (most recent call last)"');
return {images: imgs.length, errors: errors,
  broken: imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src),
  figures: Array.from(art.querySelectorAll('img')).filter(i => i.naturalWidth).length,
  stderr: document.querySelectorAll('.cell_output .output.stderr').length};
"""


@dataclass
class PageResult:
    """Outcome of checking one page."""

    page: str
    images: int = 0
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One summary line: status, page, image count, reasons and warnings."""
        status = "FAIL" if self.reasons else "OK"
        notes = "; ".join(self.reasons + [f"warning: {w}" for w in self.warnings])
        return f"{status:4} {self.page}  images={self.images}  {notes}".rstrip()


def find_pages(root: Path) -> list[Path]:
    """Content pages: *.html outside _-prefixed folders, minus indexes/redirects."""
    return sorted(
        p
        for p in root.rglob("*.html")
        if not any(part.startswith("_") for part in p.relative_to(root).parts)
        and p.name not in SKIP_NAMES
        and not REDIRECT.search(p.read_bytes()[:1024])
    )


def page_keys(path: Path, root: Path) -> set[str]:
    """Names a page answers to in --expect-figures: stem and relative path."""
    return {path.stem, path.relative_to(root).with_suffix("").as_posix()}


def make_driver() -> webdriver.Chrome:
    """Headless Chromium with explicit binary/driver paths (no Selenium Manager)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS.split(), f"--window-size={WIDTH},{HEIGHT}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER)
    return webdriver.Chrome(service=service, options=options)


def wait_for_images(driver: webdriver.Chrome, timeout: float = 10) -> None:
    """Force lazy images to load and wait until every image is complete."""
    driver.execute_script("for (const i of document.images) i.loading = 'eager'")
    try:
        WebDriverWait(driver, timeout).until(lambda d: d.execute_script(ALL_LOADED_JS))
    except TimeoutException:
        pass  # still-incomplete images are reported as broken


def console_problems(
    driver: webdriver.Chrome, base: str, broken: set[str]
) -> tuple[list[str], list[str]]:
    """SEVERE console entries: new failed image loads are reasons, the rest warn."""
    logs = driver.get_log("browser")
    severe = [e["message"] for e in logs if e["level"] == "SEVERE"]
    reasons = [
        f"failed image load {url.removeprefix(base)}"
        for url, _, rest in (m.partition(" ") for m in severe)
        if "Failed to load resource" in rest
        and IMAGE_URL.search(url)
        and url not in broken
    ]
    if not severe:
        return reasons, []
    first = severe[0].removeprefix(base)[:60]
    return reasons, [f"{len(severe)} JS console error(s), first: {first}"]


def screenshot(driver: webdriver.Chrome, target: Path) -> None:
    """Save a (nearly) full-page screenshot by growing the window to the page."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WIDTH, min(max(int(height), HEIGHT), MAX_HEIGHT))
    driver.save_screenshot(str(target))
    driver.set_window_size(WIDTH, HEIGHT)


def check_page(
    driver: webdriver.Chrome, path: Path, root: Path, shots: Path, figures: bool
) -> PageResult:
    """Load one page by file:// URL, inspect it and save its screenshot."""
    rel, base = path.relative_to(root).as_posix(), root.as_uri() + "/"
    driver.get(path.as_uri())
    wait_for_images(driver)
    info = driver.execute_script(INSPECT_JS, ERROR_CSS)
    result = PageResult(rel, info["images"])
    result.reasons += [f"broken image {u.removeprefix(base)}" for u in info["broken"]]
    result.reasons += [f"error banner: {text}" for text in info["errors"]]
    if figures and not info["figures"]:
        result.reasons.append("no figure in article")
    if info["stderr"]:
        result.warnings.append(f"{info['stderr']} stderr output(s)")
    reasons, warnings = console_problems(driver, base, set(info["broken"]))
    result.reasons += reasons
    result.warnings += warnings
    screenshot(driver, shots / (rel.removesuffix(".html").replace("/", "_") + ".png"))
    return result


def main(argv: list[str] | None = None) -> int:
    """Check all pages of the book; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path, help="built book, e.g. _build/html")
    parser.add_argument("--screenshots", type=Path, default=Path("_build/screenshots"))
    parser.add_argument(
        "--expect-figures", nargs="*", default=[], metavar="PAGE_STEM",
        help="pages (stem or relative path without .html) that must show a figure",
    )  # fmt: skip
    args = parser.parse_args(argv)
    root = args.html.resolve()
    pages = find_pages(root) if root.is_dir() else []
    if not pages:
        print(f"error: no content pages under {args.html}", file=sys.stderr)
        return 2
    names = set().union(*(page_keys(p, root) for p in pages))
    missing = [stem for stem in args.expect_figures if stem not in names]
    for stem in missing:
        print(f"FAIL {stem}  page named in --expect-figures not found")
    args.screenshots.mkdir(parents=True, exist_ok=True)
    start, driver, failed = time.monotonic(), make_driver(), len(missing)
    try:
        for path in pages:
            expect = bool(page_keys(path, root) & set(args.expect_figures))
            result = check_page(driver, path, root, args.screenshots, expect)
            failed += bool(result.reasons)
            print(result.line(), flush=True)
    finally:
        driver.quit()
    elapsed = time.monotonic() - start
    print(f"checked {len(pages)} pages in {elapsed:.1f}s: {failed} FAIL")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
