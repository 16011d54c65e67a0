"""The book's job graph: the plan of every page's runs, the requests pages make, the ledger and the projection."""

import json
from pathlib import Path

import pytest
import yaml

from fedcore import design, experiments, plan, request_log, runner
from fedcore.config import ConfigError
from fedcore.store import RunStore
from tests.test_tuning import fake

ROOT = Path(__file__).resolve().parent.parent


def jobs(*biases: float, kind: str = "federated") -> list[tuple]:
    return [(experiments.standard().replace(bias=b, seed=s), kind) for b in biases for s in range(2)]


def test_a_written_plan_reads_back_as_the_same_runs(tmp_path):
    pages = {"one": jobs(0.0, 1.0), "two": jobs(0.5, kind="centralized")}
    plan.write(tmp_path / "plan.json", pages)
    back = plan.read(tmp_path / "plan.json")
    assert {p: [c.key(k) for c, k in js] for p, js in back.items()} == \
        {p: [c.key(k) for c, k in js] for p, js in pages.items()}
    assert "bias" in (tmp_path / "plan.json").read_text() and "eval_workers" not in (tmp_path / "plan.json").read_text()


@pytest.mark.parametrize("text", ["", "[]", '{"format": 2, "pages": {}}', '{"format": 1, "pages": {"a": [{}]}}',
                                  '{"format": 1, "pages": {"a": [{"kind": "federated", "changes": {"bias": 2.0}}]}}'])
def test_a_damaged_plan_is_refused_naming_the_parameter(tmp_path, text):
    (tmp_path / "plan.json").write_text(text)
    with pytest.raises(ConfigError, match="plan must be") as err:
        plan.read(tmp_path / "plan.json")
    assert err.value.param == "plan"


def test_differences_name_runs_asked_for_beyond_the_plan_and_planned_runs_not_asked_for():
    planned = {"a": jobs(0.0), "b": jobs(1.0)}
    assert plan.differences(planned, planned, ["a", "b"]) == []
    asked = {"a": jobs(0.0) + jobs(0.5), "b": jobs(1.0)[:1]}
    lines = plan.differences(planned, asked, ["a", "b"])
    assert len(lines) == 2
    assert lines[0].startswith("page a asked for 2 run(s) the plan lacks") and "'bias': 0.5" in lines[0]
    assert lines[1].startswith("page b did not ask for 1 planned run(s)")
    assert plan.differences(planned, asked, ["b"]) == [lines[1]]  # only the pages executed are judged


def test_unique_counts_each_run_on_the_first_page_that_asks_for_it():
    out = plan.unique({"a": jobs(0.0), "b": jobs(0.0, 1.0)}, ["b", "a"])
    assert len(out) == 4 and {page for _, page in out.values()} == {"b"}


class Holding(RunStore):
    """A store that holds every run (a fake one of 10 rounds that took 2 s): nothing trains."""

    def get(self, config, kind="federated"):
        result = fake(0.9)
        result.wall_seconds = 2.0
        return result


def test_a_page_s_requests_are_noted_once_each_with_its_store_and_only_in_a_build(monkeypatch, tmp_path):
    log = tmp_path / "requests.jsonl"
    store, other = Holding(tmp_path / "runs"), Holding(tmp_path / "fresh")
    runner.run_many(jobs(0.0), store=store)  # outside a build: nothing noted
    assert not log.exists()
    monkeypatch.setenv(request_log.LOG_ENV, str(log))
    monkeypatch.setenv(design.PAGE_ENV, "demo")
    runner.run_many(jobs(0.0, 1.0), store=store)
    runner.run(*jobs(0.0)[0], store=store)  # asked again: counted once
    runner.run(*jobs(0.5)[0], store=other)  # another store's run is not the build's
    asked = request_log.read(log, store.root)
    assert list(asked) == ["demo"]
    assert [c.key(k) for c, k in asked["demo"]] == [c.key(k) for c, k in jobs(0.0, 1.0)]
    assert [c.bias for c, _ in request_log.read(log, other.root)["demo"]] == [0.5]


def test_the_ledger_counts_each_run_once_on_its_first_page_and_this_build_s_work_against_the_peak(tmp_path):
    pages = {"a": jobs(0.0), "b": jobs(0.0, 1.0)}
    trained = {c.key(k) for c, k in jobs(1.0)[:1]}
    book = plan.ledger(pages, ["a", "b"], Holding(tmp_path), trained, {"a": 3.0}, wall=10.0, peak=100.0, cores=2)
    a, b = book["pages"]["a"], book["pages"]["b"]
    assert (a["runs"], a["trained"], a["run_seconds"], a["render_seconds"]) == (2, 0, 4.0, 3.0)
    assert (b["runs"], b["trained"], b["run_seconds"], b["render_seconds"]) == (2, 1, 4.0, 0.0)
    one = plan.flops(jobs(1.0)[0][0], "federated", 10) / 1e9
    assert book["trained_gflop"] == pytest.approx(one) and a["gflop"] == pytest.approx(2 * one)
    assert book["share_of_peak"] == pytest.approx(one / (10.0 * 100.0 * 2))


def test_the_mlp_forward_pass_counts_two_flops_per_weight_and_a_round_counts_its_samples_and_images():
    assert plan.forward_flops("mlp") == 2 * (784 * 200 + 200 * 200 + 200 * 10)
    assert plan.forward_flops("logistic") == 2 * 784 * 10
    assert plan.forward_flops("cnn") > 20 * plan.forward_flops("mlp")  # convolutions: per pixel, not per weight
    config = experiments.standard()  # 10 workers, 50 steps of 32, workers scored on 1,000 images
    assert plan.samples_per_round(config) == 10 * 50 * 32
    assert plan.images_per_round(config) == 10_000 + 10 * 1000
    full = config.replace(local_steps=2, batch_size=None, eval_workers=0, validation=10_000)
    assert plan.samples_per_round(full) == 2 * 50_000 and plan.images_per_round(full) == 20_000
    assert plan.flops(config, "divergence", 3) == 2 * plan.flops(config, "federated", 3)
    ntd = config.replace(strategy="fedntd", ntd_beta=0.1)  # the teacher's forward pass on every training sample
    teacher = 3 * plan.forward_flops("mlp") * 10 * 50 * 32  # 3 rounds of 10 workers' 50 steps of 32
    assert plan.flops(ntd, "federated", 3) - plan.flops(config, "federated", 3) == teacher
    assert plan.flops(ntd.replace(ntd_beta=0.0), "federated", 3) == plan.flops(config, "federated", 3)


def test_the_projection_schedules_runs_longest_first_on_the_cluster_then_the_pages_on_the_building_machine():
    # two workers: 3 -> w1 (0-3), 2 -> w2 (0-2), 2 -> w2 (2-4), 1 -> w1 (3-4); pages 1 and 0.5 on one core
    assert plan.list_schedule([2.0, 1.0, 3.0, 2.0], 2) == 4.0
    assert plan.project([3.0, 2.0, 2.0, 1.0], [1.0, 0.5], 2, 1) == (5.5, 4.0)
    assert plan.project([3.0, 2.0, 2.0, 1.0], [1.0, 0.5], 128, 2) == (4.0, 4.0)  # the critical path, no less
    assert plan.project([3.0, 2.0, 2.0, 1.0], [1.0, 0.5], 1, 2) == (9.0, 4.0)


def test_the_committed_plan_covers_the_manifest_s_pages_and_every_run_is_a_valid_configuration():
    pages = plan.read(ROOT / "book" / "plan.json")
    manifest = yaml.safe_load((ROOT / "book" / "manifest.yml").read_text())
    outputs = {e["output"] for e in manifest if not e.get("summary")}
    assert set(pages) <= outputs
    assert {"comparison-all", "remedies", "remedies-heavy-work", "comparison-cnn"} <= set(pages)
    assert json.loads((ROOT / "book" / "plan.json").read_text())["format"] == plan.FORMAT


def test_a_trained_run_records_its_whole_seconds_and_the_store_keeps_them(tmp_path):
    config = experiments.standard().replace(rounds=1, local_steps=2, eval_workers=0, device="cpu")
    result = runner.run(config, store=RunStore(tmp_path), progress=False)
    assert result.wall_seconds > sum(row["seconds"] for row in result.rounds) > 0  # setup and scoring included
    assert RunStore(tmp_path).get(config).wall_seconds == result.wall_seconds
    assert plan.run_seconds(result) == result.wall_seconds
