"""A Sphinx extension that keeps the book's pages offline and their console clean.

Jupyter Book 1 always loads sphinx-thebe, whose configuration script reaches a page twice (``const
THEBE_JS_URL`` declared twice is a SyntaxError on every page) and points at a CDN. The book has no
live-code buttons, so every thebe script is dropped, and any script left twice is written once.
"""

from __future__ import annotations

from typing import Any

from sphinx.application import Sphinx


def is_thebe(script: Any) -> bool:
    """Whether a page script (a file name with attributes, or an inline body) belongs to sphinx-thebe."""
    body = getattr(script, "attributes", {}).get("body", "")
    return "thebe" in str(getattr(script, "filename", script) or "").lower() or "THEBE_JS_URL" in body


def clean_scripts(scripts: list[Any]) -> list[Any]:
    """The page's scripts without thebe's and without repeats, in their order."""
    seen, kept = set(), []
    for script in scripts:
        key = (str(getattr(script, "filename", script)), getattr(script, "attributes", {}).get("body", ""))
        if not is_thebe(script) and key not in seen:
            seen.add(key)
            kept.append(script)
    return kept


def on_page(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    """Sphinx's html-page-context hook: clean the scripts the page is written with."""
    if "script_files" in context:
        context["script_files"] = clean_scripts(context["script_files"])


def setup(app: Sphinx) -> dict[str, object]:
    """Register the hook late, after the theme and the other extensions have added their scripts."""
    app.connect("html-page-context", on_page, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
