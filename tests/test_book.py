"""The manifest, the table of contents, the notebooks and the prose agree (no build needed)."""

import ast
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
GLUE_CALL = re.compile(r"""\b(glue|glue_number|glue_estimate|glue_comparison)\((f?)["']([^"']+)["']""")
# the keys fedcore.report glues beside the one it is given
ALSO_GLUED = {"glue": [""], "glue_number": [""], "glue_estimate": ["", "_text"],
              "glue_comparison": ["", "_diff", "_sentence"]}


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
    for function, is_f, key in GLUE_CALL.findall(source):
        if is_f:
            prefixes.append(key.split("{", 1)[0])
        else:
            literal |= {key + suffix for suffix in ALSO_GLUED[function]}
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


FIGURE = re.compile(r"```\{figure\} notebooks/figures/([\w.\-]+)/([\w.\-]+)\.png\n(.*?)\n```", re.S)
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"
FINGERPRINT_CALL = 'python -c "from fedcore.version import engine_fingerprint; print(engine_fingerprint())"'


def chapters() -> dict[str, str]:
    return {page.name: page.read_text() for page in sorted((ROOT / "book").glob("*.md"))}


def test_manifest_titles_tell_the_pages_apart():
    titles = [entry.get("title", "") for entry in MANIFEST]
    assert all(titles), "every manifest entry needs a title (its page title)"
    assert len(set(titles)) == len(titles), "two pages share a title"
    for entry in MANIFEST:
        heading = json.loads(notebook_of(entry["output"]).read_text())["cells"][0]["source"][0]
        assert heading.startswith("# "), f"{entry['notebook']}: the first cell must be the page's heading"
        if sum(e["notebook"] == entry["notebook"] for e in MANIFEST) > 1:
            assert entry["title"] != heading[2:].strip(), f"{entry['output']}: title must name its parameters"


def test_every_chapter_figure_is_numbered_captioned_cited_and_linked_to_its_notebook():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]
    assert config["numfig"] is True
    outputs = {e["output"] for e in MANIFEST}
    labels, cited, count = set(), set(), 0
    for name, text in chapters().items():
        assert "**Figure" not in text, f"{name}: a figure numbered by hand"
        figures = FIGURE.findall(text)
        assert text.count("```{figure}") == len(figures), f"{name}: a figure not written by a notebook"
        prose = FIGURE.sub("", text)
        cited |= set(re.findall(r"\{numref\}`([\w.\-]+)`", text))
        for doc, key, body in figures:
            label = re.match(r":name: ([\w.\-]+)\n\n", body)
            assert label, f"{name}: figure {doc}/{key} has no :name: label"
            caption = body[label.end():]
            assert doc in outputs and key in produced_keys(notebook_of(doc))[0], f"{name}: {doc}::{key} is never glued"
            assert f"{{doc}}`notebooks/{doc}`" in caption, f"{name}: {label[1]}'s caption must link its notebook"
            assert f"{{numref}}`{label[1]}`" in prose, f"{name}: {label[1]} is never cited by number"
            assert label[1] not in labels, f"{name}: label {label[1]} used twice"
            labels.add(label[1])
            count += 1
    assert cited <= labels, f"cited but not defined: {cited - labels}"
    assert count >= 30


def test_chapters_glue_no_figure_directly():
    """Glued figures would bypass numbering; only tables are glued whole into the chapters."""
    for name, text in chapters().items():
        for key, doc in DIRECTIVE.findall(text):
            source = "\n".join("".join(c["source"]) for c in json.loads(notebook_of(doc).read_text())["cells"])
            assert re.search(rf"glue\(\"{key}\", HTML\(|{key} = HTML\(", source), f"{name}: {doc}::{key} is a figure"


def test_explorer_page_follows_the_runs_it_shows_and_is_in_the_toc():
    names = [e["output"] for e in MANIFEST]
    explorer = MANIFEST[names.index("explorer")]
    assert names.index("explorer") > names.index("comparison-all")
    assert "book/notebooks/explorer" in TOC["parts"][0]["chapters"][-1]["file"]
    declared = papermill.inspect_notebook(str(ROOT / "notebooks" / "explorer.ipynb"))
    biases = set(ast.literal_eval(declared["biases"]["default"]))
    standard = {b for e in MANIFEST if e["notebook"] == "bias_comparison" and set(e["parameters"]) <= {"biases",
                "centralized", "post_table"} for b in e["parameters"]["biases"]}
    assert biases == standard and not explorer["parameters"]


def test_pages_workflow_keeps_the_run_store_keyed_by_the_engine_fingerprint():
    steps = yaml.safe_load(WORKFLOW.read_text())["jobs"]["build"]["steps"]
    runs = [s.get("run", "") for s in steps]
    engine = next(i for i, s in enumerate(steps) if s.get("id") == "engine")
    assert FINGERPRINT_CALL in runs[engine]
    cache = next(i for i, s in enumerate(steps) if s.get("uses", "").startswith("actions/cache@"))
    assert steps[cache]["with"]["path"] == "runs"
    assert "${{ steps.engine.outputs.fingerprint }}" in steps[cache]["with"]["key"]
    book = runs.index("make book")
    assert engine < cache < book < next(i for i, r in enumerate(runs) if "make check-book" in r)
