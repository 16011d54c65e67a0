"""numbers.json: what the notebooks glue is collected with its interval (scripts/build_book.py), and two
builds are compared number by number (scripts/compare_numbers.py)."""

from __future__ import annotations

import json

import nbformat
import papermill
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from fedcore import report
from tests.test_book_pages import ROOT, load

build_book = load(ROOT / "scripts" / "build_book.py")
compare_numbers = load(ROOT / "scripts" / "compare_numbers.py")

GLUING = """
from myst_nb import glue
from fedcore.report import glue_comparison, glue_estimate, glue_number
from fedcore.stats import estimate, paired
glue_estimate("acc", estimate([80.0, 82.0, 81.0]))
glue_number("steps", 50)
glue_number("seconds", 12.5, kind="timing")
glue_comparison("vs", paired([80.0, 82.0, 81.0], [70.0, 71.0, 73.0]), "A", "B")
glue("words", "not a number", display=False)
glue_number("last", 1)  # a cell's last value is displayed: it must show no Number the book cannot render
"""


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> nbformat.NotebookNode:
    """A notebook that glues through fedcore.report, executed as the book's builder executes it."""
    folder = tmp_path_factory.mktemp("pages")
    source = folder / "source.ipynb"
    nbformat.write(new_notebook(cells=[new_markdown_cell("# T"), new_code_cell(GLUING)]), source)
    papermill.execute_notebook(source, folder / "page.ipynb", kernel_name="python3", cwd=str(ROOT),
                               progress_bar=False)
    return nbformat.read(folder / "page.ipynb", as_version=4)


def test_every_glued_number_is_collected_with_its_record(executed, tmp_path):
    numbers = report.glued_numbers(executed)
    assert set(numbers) == {"acc", "steps", "seconds", "vs_diff", "last"}  # words and verdicts are not numbers
    shown = [o for c in executed.cells for o in c.get("outputs", []) if report.MIME in o.get("data", {})]
    assert shown == []
    assert numbers["acc"]["value"] == 81.0 and numbers["acc"]["seeds"] == 3
    assert numbers["acc"]["low"] == pytest.approx(81 - 2.484, abs=1e-3)
    assert numbers["steps"] == {"value": 50.0, "kind": "exact", "low": None, "high": None, "seeds": None,
                                "diverged": 0}
    assert numbers["seconds"]["kind"] == "timing" and numbers["vs_diff"]["kind"] == "estimate"
    nbformat.write(executed, tmp_path / "p.ipynb")
    rows = build_book.collect_numbers([{"output": "p", "notebook": "n", "parameters": {"x": 1}}], tmp_path)
    assert {(r["page"], r["notebook"], r["key"]) for r in rows} >= {("p", "n", "acc"), ("p", "n", "steps")}


def test_a_number_glued_bare_stops_the_build(executed, tmp_path):
    bare = nbformat.from_dict(json.loads(json.dumps(executed)))
    output = next(o for c in bare.cells for o in c.get("outputs", [])
                  if o.get("metadata", {}).get("scrapbook", {}).get("name") == "steps")
    prefix = output["metadata"]["scrapbook"]["mime_prefix"]
    del output["data"][prefix + report.MIME]
    output["data"][prefix + "text/plain"] = "np.float64(50.0)"
    with pytest.raises(ValueError, match="'steps' is a bare number"):
        report.glued_numbers(bare)
    nbformat.write(bare, tmp_path / "p.ipynb")
    with pytest.raises(SystemExit, match=r"page p .*'steps' is a bare number"):
        build_book.collect_numbers([{"output": "p", "notebook": "n", "parameters": {}}], tmp_path)


def number(value: float, half: float | None = 1.0, kind: str = "estimate") -> dict:
    low, high = (None, None) if half is None else (value - half, value + half)
    return {"value": value, "kind": kind, "low": low, "high": high, "seeds": 5, "diverged": 0}


def write(path, numbers: dict[str, dict]) -> str:
    payload = {"build": {"commit": "abc", "threads": 1},
               "numbers": [{"page": "p", "notebook": "n", "parameters": {}, "key": k, **v} for k, v in numbers.items()]}
    path.write_text(json.dumps(payload))
    return str(path)


def test_compare_lists_what_moved_outside_an_interval(tmp_path, capsys):
    first = {"same": number(80.0), "near": number(80.0), "far": number(80.0), "wide": number(50.0, 20.0),
             "steps": number(50, kind="exact"), "time": number(10, kind="timing"), "one": number(70.0, None),
             "gone": number(1.0)}
    second = {"same": number(80.0), "near": number(80.9), "far": number(60.0, 25.0), "wide": number(52.0, 1.0),
              "steps": number(51, kind="exact"), "time": number(99, kind="timing"), "one": number(72.0, None),
              "new": number(1.0)}
    def keyed(numbers: dict[str, dict]) -> dict:
        return {("p", k): {"page": "p", "key": k, **v} for k, v in numbers.items()}

    result = compare_numbers.compare(keyed(first), keyed(second))
    assert [name for name, *_ in result["moved"]] == [("p", "far"), ("p", "wide")]  # far is farther
    assert [name for name, *_ in result["within"]] == [("p", "near"), ("p", "same")]
    assert [name for name, *_ in result["changed"]] == [("p", "steps")]
    assert result["skipped"] == [("p", "time")] and result["only_first"] == [("p", "gone")]
    assert [name for name, *_ in result["unbounded"]] == [("p", "one")]
    assert result["flipped"] == []
    status = compare_numbers.main([write(tmp_path / "a.json", first), write(tmp_path / "b.json", second)])
    out = capsys.readouterr().out
    assert status == 1 and "p::far: 80 [79, 81] (5 seeds) -> 60 [35, 85] (5 seeds) (difference -20)" in out
    assert "only in the second build: p::new" in out
    assert compare_numbers.main([write(tmp_path / "c.json", first), write(tmp_path / "d.json", first)]) == 0


def test_compare_refuses_a_file_that_is_not_numbers_json(tmp_path):
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(SystemExit, match=r"is not a numbers\.json"):
        compare_numbers.main([str(tmp_path / "x.json"), str(tmp_path / "x.json")])


def test_the_book_threads_come_from_the_environment(monkeypatch):
    from fedcore.config import ConfigError
    from fedcore.experiments import book_threads

    monkeypatch.setenv("FEDCORE_THREADS", "2")
    assert book_threads() == 2
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("FEDCORE_THREADS", bad)
        with pytest.raises(ConfigError, match=r"\$FEDCORE_THREADS must be an integer >= 1"):
            book_threads()


def test_compare_lists_a_verdict_that_flipped_even_within_the_intervals(tmp_path, capsys):
    first = {"diff": number(3.9, 3.4), "steady": number(7.2, 2.4)}  # 0.5 to 7.3: 'higher'
    second = {"diff": number(2.2, 4.7), "steady": number(7.0, 2.0)}  # -2.5 to 6.9: 'cannot be told apart'
    status = compare_numbers.main([write(tmp_path / "a.json", first), write(tmp_path / "b.json", second)])
    out = capsys.readouterr().out
    assert status == 1 and "verdicts that flipped:\n  p::diff:" in out and "above 0 -> across 0" in out
    assert "p::steady" not in out and "0 moved" in out
