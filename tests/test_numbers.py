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
    assert numbers["acc"]["resolution"] == pytest.approx(0.1)
    assert numbers["steps"] == {"value": 50.0, "kind": "exact", "low": None, "high": None, "seeds": None,
                                "diverged": 0, "resolution": None, "tolerance": None}
    assert numbers["seconds"]["kind"] == "timing" and numbers["vs_diff"]["kind"] == "difference"
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


def number(value: float, half: float | None = 1.0, kind: str = "estimate", seeds: int = 5, **extra: object) -> dict:
    low, high = (None, None) if half is None else (value - half, value + half)
    resolution = 0.1 if kind in ("estimate", "difference") else None
    return {"value": value, "kind": kind, "low": low, "high": high, "seeds": seeds, "diverged": 0,
            "resolution": resolution, **extra}


def write(path, numbers: dict[str, dict]) -> str:
    payload = {"build": {"commit": "abc", "threads": 1},
               "numbers": [{"page": "p", "notebook": "n", "parameters": {}, "key": k, **v} for k, v in numbers.items()]}
    path.write_text(json.dumps(payload))
    return str(path)


def keyed(numbers: dict[str, dict]) -> dict:
    return {("p", k): {"page": "p", "key": k, **v} for k, v in numbers.items()}


def test_compare_sorts_every_number_by_its_kind(tmp_path, capsys):
    first = {"same": number(80.0), "near": number(80.0), "far": number(80.0), "wide": number(50.0, 20.0),
             "narrow": number(98.32, 0.01), "steps": number(50, kind="exact"), "time": number(10, kind="timing"),
             "one": number(70.0, None), "noise": number(9.8e-7, kind="approximate", tolerance=1e-5),
             "size": number(63.70, kind="approximate", tolerance=1.0), "gone": number(1.0)}
    second = {"same": number(80.0), "near": number(80.9), "far": number(60.0, 25.0), "wide": number(72.0, 1.0),
              "narrow": number(98.29, 0.01), "steps": number(51, kind="exact"), "time": number(99, kind="timing"),
              "one": number(72.0, None), "noise": number(3.9e-7, kind="approximate", tolerance=1e-5),
              "size": number(65.0, kind="approximate", tolerance=1.0), "new": number(1.0)}
    result = compare_numbers.compare(keyed(first), keyed(second))
    # far: 20 points apart against 25 + 0.1 allowed (its second build is that wide): within; wide: 22 > 20.1
    assert [name for name, *_ in result["moved"]] == [("p", "one"), ("p", "wide")]  # 'one' is farthest
    assert [name for name, *_ in result["within"]] == [("p", "far"), ("p", "narrow"), ("p", "near"), ("p", "same")]
    assert [name for name, *_ in result["changed"]] == [("p", "size"), ("p", "steps")]
    assert [name for name, *_ in result["equal"]] == [("p", "noise")]
    assert result["skipped"] == [("p", "time")] and result["only_first"] == [("p", "gone")]
    assert result["flipped"] == [] and result["design"] == []
    status = compare_numbers.main([write(tmp_path / "a.json", first), write(tmp_path / "b.json", second)])
    out = capsys.readouterr().out
    assert status == 1 and "p::wide: 50 [30, 70] (5 seeds) -> 72 [71, 73] (5 seeds) (difference +22)" in out
    assert "only in the second build: p::new" in out
    assert compare_numbers.main([write(tmp_path / "c.json", first), write(tmp_path / "d.json", first)]) == 0


def test_a_number_on_other_seeds_is_a_design_change_not_a_comparison(tmp_path, capsys):
    first, second = {"acc": number(80.4, 1.6, seeds=10)}, {"acc": number(81.1, 2.6, seeds=5)}
    status = compare_numbers.main([write(tmp_path / "a.json", first), write(tmp_path / "b.json", second)])
    out = capsys.readouterr().out
    assert status == 1 and "run on other seeds (design changed):\n  p::acc: 80.4 [78.8, 82] (10 seeds)" in out
    assert "0 within" in out


@pytest.mark.parametrize(("text", "says"), [
    (None, "No such file"), ("", "Expecting value"), ("{not json", "Expecting property name"),
    ("[1, 2]", "not an object with a 'build'"), ('{"build": {}, "numbers": []}', "non-empty 'numbers'"),
    ('{"build": {}, "numbers": [{"page": "p", "key": "k", "value": 1}]}', "p::k: kind must be one of"),
    ('{"build": {}, "numbers": [{"page": "p", "key": "k", "kind": "exact", "value": "80"}]}',
     "p::k: value must be a finite number; got '80'"),
    ('{"build": {}, "numbers": [{"page": "p", "key": "k", "kind": "approximate", "value": 1}]}', "needs its tolerance"),
])
def test_compare_refuses_a_file_that_is_not_numbers_json(tmp_path, capsys, text, says):
    good = write(tmp_path / "good.json", {"acc": number(80.0)})
    bad = tmp_path / "bad.json"
    if text is not None:
        bad.write_text(text)
    assert compare_numbers.main([str(bad), good]) == 2
    assert compare_numbers.main([good, str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith(f"compare_numbers: {bad}") and says in line for line in err)


def test_the_book_threads_come_from_the_environment(monkeypatch):
    from fedcore.config import ConfigError
    from fedcore.experiments import book_threads

    monkeypatch.setenv("FEDCORE_THREADS", "2")
    assert book_threads() == 2
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("FEDCORE_THREADS", bad)
        with pytest.raises(ConfigError, match=r"\$FEDCORE_THREADS must be an integer in \[1, 1024\]"):
            book_threads()


def test_compare_lists_a_verdict_that_flipped_even_within_the_intervals(tmp_path, capsys):
    first = {"diff": number(3.9, 3.4, "difference"), "steady": number(7.2, 2.4, "difference"),  # 0.5 to 7.3
             "val_acc": number(78.5, 81.5)}  # an accuracy whose interval crosses 0 is no verdict
    second = {"diff": number(2.2, 4.7, "difference"), "steady": number(7.0, 2.0, "difference"),  # -2.5 to 6.9
              "val_acc": number(84.5, 0.1)}
    status = compare_numbers.main([write(tmp_path / "a.json", first), write(tmp_path / "b.json", second)])
    out = capsys.readouterr().out
    assert status == 1 and "verdicts that flipped:\n  p::diff:" in out and "above 0 -> across 0" in out
    assert "p::steady" not in out and "p::val_acc" not in out and "0 moved" in out


def _records(*records: dict) -> str:
    """numbers.json text holding ``records`` (page p) as they are, NaN and 10**400 included."""
    return json.dumps({"build": {}, "numbers": [{"page": "p", **r} for r in records]})


@pytest.mark.parametrize(("text", "says"), [
    (_records({"key": "k", **number(float("nan"))}), "p::k: value must be a finite number; got nan"),
    (_records({"key": "k", **number(80.0, kind="exact"), "value": float("inf")}), "p::k: value must be a finite"),
    (_records({"key": "k", **number(80.0), "low": float("-inf")}), "p::k: low must be a finite number or null"),
    (_records({"key": "k", **number(80.0), "value": 10**400}), "p::k: value must be a finite number; got 1000"),
    (_records({"key": "k", **number(80.0), "high": None}), "p::k: low and high must both be numbers or both null"),
    (_records({"key": "k", **number(80.0), "low": 82.0}), "p::k: low must not exceed high"),
    (_records({"key": "k", **{k: v for k, v in number(80.0).items() if k != "seeds"}}),
     "p::k: estimate needs its seeds, an integer >= 1; got None"),
    (_records({"key": "k", **number(80.0, kind="difference", seeds=0)}), "p::k: difference needs its seeds"),
    (_records({"key": "k", **number(1.0, kind="approximate", tolerance=-1.0)}), "p::k: tolerance must be >= 0"),
    (_records({"key": "k", **number(80.0)}, {"key": "k", **number(81.0)}), "p::k: recorded twice"),
    ("[" * 200_000 + "]" * 200_000, "maximum recursion depth exceeded"),
])
def test_compare_refuses_nan_infinite_duplicate_and_malformed_records(tmp_path, capsys, text, says):
    good = write(tmp_path / "good.json", {"k": number(80.0)})
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    assert compare_numbers.main([str(bad), good]) == 2
    assert compare_numbers.main([good, str(bad)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith(f"compare_numbers: {bad}: ") and says in line for line in err)
    assert len(err[0]) < 400 and captured.out == ""


def test_an_exact_nan_against_itself_is_refused_not_changed(tmp_path, capsys):
    nan = tmp_path / "nan.json"
    nan.write_text(_records({"key": "steps", **number(float("nan"), kind="exact")}))
    assert compare_numbers.main([str(nan), str(nan)]) == 2
    captured = capsys.readouterr()
    assert "changed" not in captured.out and "p::steps: value must be a finite number" in captured.err


def test_moves_are_judged_by_the_reference_resolution_and_tolerance(tmp_path, capsys):
    reference = {"acc": number(80.0, None, seeds=1), "noise": number(1e-6, kind="approximate", tolerance=1e-5)}
    coarse = {"acc": number(81.0, None, seeds=1, resolution=10.0),  # its own coarse resolution hides nothing
              "noise": number(0.5, kind="approximate", tolerance=1.0)}
    status = compare_numbers.main([write(tmp_path / "a.json", reference), write(tmp_path / "b.json", coarse)])
    out = capsys.readouterr().out
    assert status == 1 and "1 moved" in out and "p::acc: 80 (one seed) -> 81 (one seed)" in out
    assert "exact or approximate numbers that changed:\n  p::noise" in out
