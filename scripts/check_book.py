"""Open every page of a built Jupyter Book in headless Chromium and check it.

A page fails on a broken image, an error banner (failed cell, traceback,
docutils system message), any JavaScript console error, any request to a
host other than this machine (the book must work offline), or, if named in
--expect-figures, on having no figure in its article. On a page with a bias
explorer (named in --expect-explorer: it must have one) the slider is moved
through every position with the keyboard and every plot must change at each
step. One screenshot per page is saved. Exit status: 0 all pages OK, 1 some
page failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
FLAGS = "--headless --no-sandbox --disable-gpu --no-first-run --disable-sync"
FLAGS += " --disable-background-networking --disable-component-update"
WIDTH, HEIGHT, MAX_HEIGHT = 1280, 2000, 12000
SKIP_NAMES = {"genindex.html", "search.html", "py-modindex.html"}
REDIRECT = re.compile(rb'http-equiv="refresh"', re.IGNORECASE)
LOCAL_HOSTS = {"", "localhost", "127.0.0.1", "::1", "[::1]"}
NETWORK_SCHEMES = {"http", "https", "ws", "wss", "ftp"}
EXPLORER_CSS = ".tw-explorer"  # fedcore.explorer.ROOT_CLASS: a slider and the <svg> plots it redraws
PLOTS_JS = "return Array.from(arguments[0].querySelectorAll('svg')).map(s => s.innerHTML)"
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
    positions: int = 0  # slider positions of the page's explorers, each checked

    def line(self) -> str:
        """One summary line: status, page, image count, explorer positions, reasons and warnings."""
        status = "FAIL" if self.reasons else "OK"
        counts = f"images={self.images}" + (f" explorer_positions={self.positions}" if self.positions else "")
        notes = "; ".join(self.reasons + [f"warning: {w}" for w in self.warnings])
        return f"{status:4} {self.page}  {counts}  {notes}".rstrip()


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
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(executable_path=CHROMEDRIVER)
    return webdriver.Chrome(service=service, options=options)


def wait_for_images(driver: webdriver.Chrome, timeout: float = 10) -> None:
    """Force lazy images to load and wait until every image is complete."""
    driver.execute_script("for (const i of document.images) i.loading = 'eager'")
    try:
        WebDriverWait(driver, timeout).until(lambda d: d.execute_script(ALL_LOADED_JS))
    except TimeoutException:
        pass  # still-incomplete images are reported as broken


def console_errors(driver: webdriver.Chrome, base: str) -> list[str]:
    """Every SEVERE console entry since the last call (JS errors, failed loads), as a reason."""
    severe = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return [f"console error: {m.removeprefix(base)[:120]}" for m in severe]


def is_outside(url: str) -> bool:
    """Whether loading ``url`` reaches another machine (file:, data:, blob: and localhost do not)."""
    parts = urlsplit(url)
    return parts.scheme in NETWORK_SCHEMES and (parts.hostname or "") not in LOCAL_HOSTS


def outside_requests(driver: webdriver.Chrome) -> list[str]:
    """Requests to other hosts since the last call (Chrome's performance log), as reasons."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if is_outside(url) and url not in urls:
                urls.append(url)
    return [f"request to an outside host: {url[:120]}" for url in urls]


def explorer_problems(driver: webdriver.Chrome, root: WebElement) -> tuple[int, list[str]]:
    """Move the explorer's slider from its first position to its last with the keyboard; its positions,
    and what went wrong: no slider, a single position, nothing plotted, or a plot that did not change."""
    sliders = root.find_elements(By.CSS_SELECTOR, "input[type=range]")
    if not sliders:
        return 0, ["explorer without a slider"]
    slider = sliders[0]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", slider)
    slider.send_keys(Keys.HOME)
    states, values = [driver.execute_script(PLOTS_JS, root)], [slider.get_attribute("value")]
    while True:
        slider.send_keys(Keys.ARROW_RIGHT)
        if slider.get_attribute("value") == values[-1]:
            break
        states.append(driver.execute_script(PLOTS_JS, root))
        values.append(slider.get_attribute("value"))
    problems = [] if len(states) > 1 else ["explorer slider does not move"]
    if not states[0] or any(not plot.strip() for state in states for plot in state):
        problems.append("explorer plots nothing at some slider position")
    for i in range(1, len(states)):
        same = [n + 1 for n, (a, b) in enumerate(zip(states[i - 1], states[i], strict=True)) if a == b]
        if same:
            problems.append(f"explorer plot(s) {same} unchanged from slider {values[i - 1]} to {values[i]}")
    return len(states), problems


def screenshot(driver: webdriver.Chrome, target: Path) -> None:
    """Save a (nearly) full-page screenshot by growing the window to the page."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WIDTH, min(max(int(height), HEIGHT), MAX_HEIGHT))
    driver.save_screenshot(str(target))
    driver.set_window_size(WIDTH, HEIGHT)


def check_page(
    driver: webdriver.Chrome, path: Path, root: Path, shots: Path, figures: bool, explorer: bool = False
) -> PageResult:
    """Load one page by file:// URL, inspect it, move its explorers' sliders and save its screenshot."""
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
    explorers = driver.find_elements(By.CSS_SELECTOR, EXPLORER_CSS)
    if explorer and not explorers:
        result.reasons.append("no explorer in page")
    for element in explorers:
        positions, problems = explorer_problems(driver, element)
        result.positions += positions
        result.reasons += problems
    screenshot(driver, shots / (rel.removesuffix(".html").replace("/", "_") + ".png"))
    result.reasons += console_errors(driver, base) + outside_requests(driver)
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
    parser.add_argument(
        "--expect-explorer", nargs="*", default=[], metavar="PAGE_STEM",
        help="pages that must hold a bias explorer whose plots change with its slider",
    )  # fmt: skip
    args = parser.parse_args(argv)
    root = args.html.resolve()
    pages = find_pages(root) if root.is_dir() else []
    if not pages:
        print(f"error: no content pages under {args.html}", file=sys.stderr)
        return 2
    names = set().union(*(page_keys(p, root) for p in pages))
    missing = [stem for stem in args.expect_figures + args.expect_explorer if stem not in names]
    for stem in missing:
        print(f"FAIL {stem}  page named in --expect-figures or --expect-explorer not found")
    args.screenshots.mkdir(parents=True, exist_ok=True)
    start, driver, failed = time.monotonic(), make_driver(), len(missing)
    try:
        for path in pages:
            keys = page_keys(path, root)
            result = check_page(driver, path, root, args.screenshots, bool(keys & set(args.expect_figures)),
                                bool(keys & set(args.expect_explorer)))
            failed += bool(result.reasons)
            print(result.line(), flush=True)
    finally:
        driver.quit()
    elapsed = time.monotonic() - start
    print(f"checked {len(pages)} pages in {elapsed:.1f}s: {failed} FAIL")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
