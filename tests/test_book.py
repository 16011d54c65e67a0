"""The manifest, the table of contents, the notebooks and the prose agree (no build needed)."""

import json
import re
from pathlib import Path

import papermill
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = yaml.safe_load((ROOT / "book" / "manifest.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
ROLE = re.compile(r"notebooks/([\w.\-]+)\.ipynb::([\w.\-]+)")
DIRECTIVE = re.compile(r"```\{glue\} ([\w.\-]+)\n:doc: notebooks/([\w.\-]+)\.ipynb")
GLUE_CALL = re.compile(r"""glue\((f?)["']([^"']+)["']""")


def toc_files() -> list[str]:
    files = [TOC["root"]]
    for part in TOC["parts"]:
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


def notebook_of(output: str) -> Path:
    entry = next(e for e in MANIFEST if e["output"] == output)
    return ROOT / "notebooks" / f"{entry['notebook']}.ipynb"


def produced_keys(notebook: Path) -> tuple[set[str], list[str]]:
    """Literal glue keys of a notebook, and the fixed prefixes of its f-string keys."""
    source = "\n".join("".join(c["source"]) for c in json.loads(notebook.read_text())["cells"])
    literal, prefixes = set(), []
    for is_f, key in GLUE_CALL.findall(source):
        if is_f:
            prefixes.append(key.split("{", 1)[0])
        else:
            literal.add(key)
    return literal, prefixes


@pytest.mark.parametrize("entry", MANIFEST, ids=lambda e: e["output"])
def test_manifest_entries_name_real_notebooks_and_parameters(entry):
    path = ROOT / "notebooks" / f"{entry['notebook']}.ipynb"
    declared = papermill.inspect_notebook(str(path))
    assert declared, f"{path.name} has no cell tagged 'parameters'"
    assert set(entry["parameters"]) <= set(declared), f"unknown parameters for {path.name}"
    for name, spec in declared.items():
        assert spec["help"], f"{path.name}: parameter {name} has no comment"
        assert spec["inferred_type_name"] != "None", f"{path.name}: parameter {name} has no type annotation"


def test_every_notebook_has_a_parameters_cell_papermill_can_read_whole():
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        cells = json.loads(path.read_text())["cells"]
        tagged = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: one cell tagged 'parameters'"
        lines = [line for line in "".join(tagged[0]["source"]).splitlines() if line.strip()]
        parsed = papermill.inspect_notebook(str(path))
        assert len(parsed) == len(lines), f"{path.name}: a parameter line papermill cannot parse"


def test_toc_lists_every_page_and_every_manifest_output():
    files = toc_files()
    outputs = {f"book/notebooks/{e['output']}" for e in MANIFEST}
    assert outputs == {f for f in files if f.startswith("book/notebooks/")}
    for f in files:
        if not f.startswith("book/notebooks/"):
            assert (ROOT / f"{f}.md").exists(), f"{f}.md listed in _toc.yml does not exist"
    assert len(files) == len(set(files))


def test_every_glued_text_has_a_format():
    """myst-nb reads ``doc::key`` without a format as key ``doc:`` with format ``key``: always give one."""
    for page in (ROOT / "book").glob("*.md"):
        for role in re.findall(r"\{glue:text\}`([^`]+)`", page.read_text()):
            assert ":" in role.split("::", 1)[1], f"{page.name}: {role} needs a format, e.g. :.1f or :s"


def test_every_glued_key_in_the_prose_is_produced():
    outputs = {e["output"] for e in MANIFEST}
    used = set()
    for page in (ROOT / "book").glob("*.md"):
        text = page.read_text()
        used |= {(doc, key, page.name) for doc, key in ROLE.findall(text)}
        used |= {(doc, key, page.name) for key, doc in DIRECTIVE.findall(text)}
    assert used
    for doc, key_and_format, page in used:
        key = key_and_format.split(":", 1)[0]
        assert doc in outputs, f"{page} glues from {doc}, which the manifest does not produce"
        literal, prefixes = produced_keys(notebook_of(doc))
        assert key in literal or any(key.startswith(p) for p in prefixes), f"{page}: {doc}::{key} is never glued"
