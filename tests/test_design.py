"""The book's design: seeds pinned per page and series, recorded from the rules, and notes where a rule would
now ask for more."""

import pytest
import yaml

from fedcore import design, experiments
from fedcore.config import ConfigError, RunConfig
from tests.test_tuning import fake

CONFIGS = {"bias 0": RunConfig(bias=0.0), (1.0, 50): RunConfig(bias=1.0)}


@pytest.fixture
def book(monkeypatch, tmp_path):
    """The environment of a notebook executed by the book's build, page 'demo', with a fake trainer: a run at
    bias b and seed s ends at finals[b][s]. Returns (design path, log path, finals, seeds asked)."""
    path, log = tmp_path / "design.yml", tmp_path / "design.log"
    monkeypatch.setenv(design.DESIGN_ENV, str(path))
    monkeypatch.setenv(design.PAGE_ENV, "demo")
    monkeypatch.setenv(design.LOG_ENV, str(log))
    monkeypatch.delenv(design.RECORD_ENV, raising=False)
    finals = {0.0: [0.9] * 10, 1.0: [0.7, 0.8, 0.9, 0.8, 0.8]}  # bias 1 spreads: sd 10 points
    asked = []

    def run_many(jobs, **kwargs):
        asked.extend((c.bias, c.seed) for c, _ in jobs)
        return [fake(finals[c.bias][c.seed]) for c, _ in jobs]

    monkeypatch.setattr(experiments, "run_many", run_many)
    return path, log, finals, asked


def test_recording_writes_what_the_rule_chose(book, monkeypatch):
    path, _, _, _ = book
    monkeypatch.setenv(design.RECORD_ENV, "1")
    out = experiments.seeded(CONFIGS)
    assert {n: len(rs) for n, rs in out.items()} == {"bias 0": 3, (1.0, 50): 5}
    assert yaml.safe_load(path.read_text()) == {"demo": {"bias 0": 3, "(1.0, 50)": 5}}


def test_recording_keeps_what_the_design_pins_and_records_only_the_series_it_lacks(book, monkeypatch):
    path, _, _, _ = book
    monkeypatch.setenv(design.RECORD_ENV, "1")
    path.write_text(yaml.safe_dump({"demo": {"bias 0": 4, "(1.0, 50)": 3}, "other": {"x": 9}}))
    out = experiments.seeded(CONFIGS)
    assert {n: len(rs) for n, rs in out.items()} == {"bias 0": 4, (1.0, 50): 3}  # pinned, although bias 1 spreads
    assert yaml.safe_load(path.read_text())["demo"] == {"bias 0": 4, "(1.0, 50)": 3}
    path.write_text(yaml.safe_dump({"demo": {"bias 0": 4}, "other": {"x": 9}}))
    out = experiments.seeded(CONFIGS)  # a series missing: the rule decides the call's series, and they are written
    assert {n: len(rs) for n, rs in out.items()} == {"bias 0": 3, (1.0, 50): 5}
    assert yaml.safe_load(path.read_text()) == {"demo": {"bias 0": 3, "(1.0, 50)": 5}, "other": {"x": 9}}


def test_a_pinned_design_runs_its_seeds_whatever_the_rule_says_and_logs_where_it_wants_more(book):
    path, log, _, asked = book
    path.write_text(yaml.safe_dump({"demo": {"bias 0": 4, "(1.0, 50)": 3}, "other": {"x": 9}}))
    out = experiments.seeded(CONFIGS)
    assert {n: len(rs) for n, rs in out.items()} == {"bias 0": 4, (1.0, 50): 3}
    assert sorted(asked) == [(0.0, s) for s in range(4)] + [(1.0, s) for s in range(3)]
    assert log.read_text() == "demo: (1.0, 50) runs the 3 seeds the design pins; its rule would now propose 5\n"
    assert yaml.safe_load(path.read_text())["demo"] == {"bias 0": 4, "(1.0, 50)": 3}  # never rewritten


def test_a_series_missing_from_the_design_stops_before_any_training(book):
    path, _, _, asked = book
    path.write_text(yaml.safe_dump({"demo": {"bias 0": 3}}))
    with pytest.raises(ConfigError, match=r"no seed count for page 'demo', series \(1.0, 50\); run `make design`"):
        experiments.seeded(CONFIGS)
    assert asked == []


def test_without_a_design_the_rule_decides_and_nothing_is_written(book, monkeypatch, tmp_path):
    path, _, _, _ = book
    monkeypatch.delenv(design.DESIGN_ENV)
    out = experiments.seeded(CONFIGS)
    assert {n: len(rs) for n, rs in out.items()} == {"bias 0": 3, (1.0, 50): 5}
    assert not path.exists()


@pytest.mark.parametrize("text", ["[1, 2]", "demo: {a: 0}", "demo: {a: true}", "demo: [1]", "{{{"])
def test_a_malformed_design_file_is_named(book, text):
    path, _, _, _ = book
    path.write_text(text)
    with pytest.raises(ConfigError, match="FEDCORE_DESIGN must"):
        experiments.seeded(CONFIGS)


def test_the_page_must_be_named_when_a_design_is_in_force(book, monkeypatch):
    monkeypatch.delenv(design.PAGE_ENV)
    with pytest.raises(ConfigError, match="FEDCORE_DESIGN_PAGE must name the page"):
        experiments.seeded(CONFIGS)


@pytest.mark.parametrize("seeds", [10**9, design.MAX_SEEDS + 1])
def test_a_seed_count_beyond_the_bound_is_refused_before_any_run(tmp_path, seeds):
    path = tmp_path / "design.yml"
    path.write_text(f"demo: {{bias 0: {seeds}}}\n")
    with pytest.raises(ConfigError, match=rf"integers in \[1, 1000\]\); .*: page 'demo', series 'bias 0' has {seeds} "):
        design.read(path)
    path.write_text(f"demo: {{bias 0: {design.MAX_SEEDS}}}\n")
    assert design.read(path) == {"demo": {"bias 0": design.MAX_SEEDS}}


@pytest.mark.parametrize("content", [b"demo: {a: 1\n  b: [", b"demo: {a: 0}", b"demo: {a: three}", b"[1, 2]",
                                     bytes(range(256)), b"demo: {a: 1000000000}"])
def test_a_damaged_design_stops_the_book_build_in_one_line_with_status_2(tmp_path, monkeypatch, capsys, content):
    from tests.test_book_pages import build_book

    path = tmp_path / "design.yml"
    path.write_bytes(content)
    monkeypatch.setattr(build_book, "DESIGN", path)
    monkeypatch.setattr("sys.argv", ["build_book.py"])
    monkeypatch.setenv("FEDCORE_THREADS", "1")
    with pytest.raises(SystemExit) as exit_info:
        build_book.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith(f"FAILED: {design.DESIGN_ENV} must")
