"""Tests for scripts/check_book.py on a tiny synthetic HTML site, in real Chromium."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_book.py"
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
LOGO = '<header><img class="logo" src="{up}_images/dot.png"></header>'
FIGURE = '<img alt="figure" src="{up}_images/dot.png">'
PAGES = {  # relative path -> body inside <article class="bd-article">
    "good.html": FIGURE,
    "sub/nested.html": FIGURE,
    "stderr.html": FIGURE + '<div class="cell_output"><div class="output stderr">'
    "UserWarning: careful</div></div>",
    "broken.html": '<img alt="gone" src="_images/missing.png">',
    "error.html": FIGURE + '<div class="output error"><pre>Traceback (most recent '
    'call last):\n  File "x.py"\nValueError: boom</pre></div>',
    "tbtext.html": "<pre>Traceback (most recent call last):\nKeyError: 1</pre>",
    "tbdiv.html": '<div class="output traceback">ZeroDivisionError: by zero</div>',
    "admonition.html": '<div class="admonition error"><p>Error</p></div>',
    "sysmsg.html": '<div class="system-message"><p>System Message: ERROR/3</p></div>',
    "lazy.html": '<div style="height:6000px"></div>'
    + FIGURE.replace("<img", '<img loading="lazy"'),
    "nofig.html": "<p>Only text here.</p>",
    "genindex.html": '<img src="nope.png">',
    "_static/macros.html": '<img src="nope.png">',
}
EXPECTED = {
    "good.html": "OK",
    "sub/nested.html": "OK",
    "stderr.html": "OK",
    "broken.html": "FAIL",
    "error.html": "FAIL",
    "tbtext.html": "FAIL",
    "tbdiv.html": "FAIL",
    "admonition.html": "FAIL",
    "sysmsg.html": "FAIL",
    "lazy.html": "OK",
    "nofig.html": "FAIL",
}


def png_bytes(width: int = 8, height: int = 6) -> bytes:
    """A valid solid-red RGB PNG, written without any imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def make_site(root: Path, pages: dict[str, str]) -> Path:
    """Write a book-like site: pages with header logo, article body, one image."""
    (root / "_images").mkdir(parents=True)
    (root / "_images" / "dot.png").write_bytes(png_bytes())
    redirect = '<meta http-equiv="Refresh" content="0; url=good.html" />'
    (root / "index.html").write_text(redirect)  # JB1's root redirect stub
    for rel, body in pages.items():
        up = "../" * rel.count("/")
        html = (
            f"<!DOCTYPE html><html><head><title>{rel}</title></head><body>"
            f"{LOGO.format(up=up)}<main><article class='bd-article'>"
            f"<h1>{rel}</h1>{body.format(up=up)}</article></main></body></html>"
        )
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(html)
    return root


def run_script(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run scripts/check_book.py with the given arguments."""
    cmd = [sys.executable, str(SCRIPT), *map(str, args)]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)


def run_checker(site: Path, *expect: str) -> subprocess.CompletedProcess[str]:
    """Check site in Chromium; fail loudly (never skip) if Chromium is missing."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not Path(binary).is_file():
            pytest.fail(f"{binary} missing: apt-get install chromium chromium-driver")
    shots = site.parent / "shots"
    return run_script(site, "--screenshots", shots, "--expect-figures", *expect)


def statuses(stdout: str) -> dict[str, str]:
    """Map page -> OK/FAIL from the checker's per-page lines."""
    rows = [line.split() for line in stdout.splitlines()]
    return {row[1]: row[0] for row in rows if row and row[0] in ("OK", "FAIL")}


def test_mixed_site_flags_each_bad_page(tmp_path: Path) -> None:
    site = make_site(tmp_path / "html", PAGES)
    proc = run_checker(site, "nofig", "good", "lazy")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert statuses(proc.stdout) == EXPECTED, proc.stdout
    lines = {line.split()[1]: line for line in proc.stdout.splitlines()[:-1]}
    assert "broken image _images/missing.png" in lines["broken.html"]
    assert "ValueError: boom" in lines["error.html"]  # snippet of the banner
    for page in ("error", "tbtext", "tbdiv", "admonition", "sysmsg"):
        assert "error banner" in lines[f"{page}.html"], page
    assert "no figure in article" in lines["nofig.html"]
    assert "warning: 1 stderr output(s)" in lines["stderr.html"]
    assert "images=2" in lines["good.html"]  # logo + figure
    assert "7 FAIL" in proc.stdout.splitlines()[-1]
    shots = tmp_path / "shots"
    names = {rel.removesuffix(".html").replace("/", "_") + ".png" for rel in EXPECTED}
    assert {p.name for p in shots.iterdir()} == names
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in shots.iterdir())


def test_good_site_passes(tmp_path: Path) -> None:
    site = make_site(tmp_path / "html", {"a.html": FIGURE, "sub/b.html": FIGURE})
    proc = run_checker(site, "a", "sub/b")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert statuses(proc.stdout) == {"a.html": "OK", "sub/b.html": "OK"}


def test_logo_alone_is_not_a_figure(tmp_path: Path) -> None:
    site = make_site(tmp_path / "html", {"a.html": "<p>text</p>"})
    proc = run_checker(site, "a")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert statuses(proc.stdout) == {"a.html": "FAIL"}


def test_missing_expected_page_fails(tmp_path: Path) -> None:
    site = make_site(tmp_path / "html", {"a.html": FIGURE})
    proc = run_checker(site, "zzz")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert statuses(proc.stdout) == {"a.html": "OK", "zzz": "FAIL"}


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_bad_usage_exits_2(tmp_path: Path, folder: str) -> None:
    (tmp_path / "empty" / "_static").mkdir(parents=True)
    (tmp_path / "empty" / "search.html").write_text("<p>search</p>")
    proc = run_script(tmp_path / folder)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no content pages" in proc.stderr


def test_console_errors_and_outside_requests_fail(tmp_path: Path) -> None:
    pages = {
        "good.html": FIGURE,
        "redeclared.html": FIGURE + "<script>const URL_ = 1;</script><script>const URL_ = 2;</script>",
        "cdn.html": FIGURE + '<script src="https://cdn.example.invalid/lib.js"></script>',
    }
    proc = run_checker(make_site(tmp_path / "html", pages), "good")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert statuses(proc.stdout) == {"good.html": "OK", "redeclared.html": "FAIL", "cdn.html": "FAIL"}
    lines = {line.split()[1]: line for line in proc.stdout.splitlines()[:-1]}
    assert "console error" in lines["redeclared.html"] and "already been declared" in lines["redeclared.html"]
    assert "request to an outside host: https://cdn.example.invalid/lib.js" in lines["cdn.html"]


def test_explorer_slider_must_change_every_plot(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_explorer import sample

    from fedcore import explorer

    page = explorer.explorer_html(explorer.explorer_data(*sample()))
    frozen = page.replace("slider.addEventListener('input', draw);", "")
    assert frozen != page
    braces = {ord("{"): "{{", ord("}"): "}}"}  # make_site formats each body
    pages = {"explorer.html": page.translate(braces), "frozen.html": frozen.translate(braces), "plain.html": FIGURE}
    make_site(tmp_path / "html", pages)
    proc = run_script(tmp_path / "html", "--screenshots", tmp_path / "shots",
                      "--expect-explorer", "explorer", "frozen", "plain")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert statuses(proc.stdout) == {"explorer.html": "OK", "frozen.html": "FAIL", "plain.html": "FAIL"}
    lines = {line.split()[1]: line for line in proc.stdout.splitlines()[:-1]}
    assert "explorer_positions=3" in lines["explorer.html"]
    assert "explorer plot(s) [1, 2, 3, 4] unchanged from slider 0 to 1" in lines["frozen.html"]
    assert "no explorer in page" in lines["plain.html"]
