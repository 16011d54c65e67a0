"""How an executed notebook becomes a book page (scripts/build_book.py), and the offline-pages extension."""

from __future__ import annotations

import base64
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\nnot really an image"


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


build_book = load(ROOT / "scripts" / "build_book.py")
offline_pages = load(ROOT / "book" / "_ext" / "offline_pages.py")


def glued(key: str, data: dict[str, str]) -> nbformat.NotebookNode:
    """A display output as myst_nb.glue writes it under papermill (hidden from the page by a mime prefix)."""
    prefix = "application/papermill.record/"
    return new_output("display_data", data={prefix + mime: value for mime, value in data.items()},
                      metadata={"scrapbook": {"name": key, "mime_prefix": prefix}})


def executed(tmp_path: Path) -> Path:
    cell = new_code_cell("glue(...)", outputs=[
        glued("curves", {"image/png": base64.b64encode(PNG).decode(), "text/plain": "<Figure>"}),
        glued("final", {"text/plain": "97.5"}),
        new_output("display_data", data={"image/png": base64.b64encode(b"shown, not glued").decode()}),
    ])
    book = new_notebook(cells=[new_markdown_cell("# Comparison across bias levels\n\nWhat it shows."), cell])
    path = tmp_path / "comparison-mild.ipynb"
    nbformat.write(book, path)
    return path


def test_publish_page_titles_the_page_and_writes_each_glued_figure(tmp_path: Path):
    path, figures = executed(tmp_path), tmp_path / "figures"
    entry = {"output": "comparison-mild", "title": "Comparison: bias 0 and 0.2"}
    assert build_book.publish_page(entry, path, figures) == ["curves"]
    assert (figures / "comparison-mild" / "curves.png").read_bytes() == PNG
    assert [p.name for p in (figures / "comparison-mild").iterdir()] == ["curves.png"]
    first = nbformat.read(path, as_version=4).cells[0].source
    assert first == "# Comparison: bias 0 and 0.2\n\nWhat it shows."
    before = path.stat().st_mtime_ns
    build_book.publish_page(entry, path, figures)  # unchanged: the notebook is not rewritten
    assert path.stat().st_mtime_ns == before


def test_a_notebook_without_a_heading_cannot_be_titled():
    book = new_notebook(cells=[new_code_cell("x = 1")])
    with pytest.raises(ValueError, match="first cell must be a markdown cell"):
        build_book.retitled(book, "A title")


class Script(str):
    """Like Sphinx's _JavaScript: a file name with attributes (an inline script has its code in 'body')."""

    def __new__(cls, filename: str | None, body: str = "") -> Script:
        script = super().__new__(cls, filename or "")
        script.filename, script.attributes = filename, ({"body": body} if body else {})
        return script


def test_offline_pages_drops_thebe_and_repeats():
    config = 'const THEBE_JS_URL = "https://unpkg.com/thebe@0.8.2/lib/index.js"'
    toggle = "var togglebuttonSelector = '.toggle'"
    scripts = [Script("doctools.js"), Script(None, config), Script("sphinx-thebe.js"), Script(None, toggle),
               Script(None, config), Script(None, toggle), Script("doctools.js")]
    context = {"script_files": scripts}
    offline_pages.on_page(None, "book/intro", "page.html", context, None)
    assert context["script_files"] == [scripts[0], scripts[3]]
