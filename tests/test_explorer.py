"""The bias explorer's data and page (fedcore.explorer); tests/test_check_book.py moves its slider in Chromium."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from matplotlib.colors import to_hex

from fedcore import explorer, plots
from fedcore.results import RunResult


def fake_run(final: float, rounds: int = 4, scored: bool = True) -> RunResult:
    """A run whose accuracy climbs linearly to ``final``; worker k scores k % of ``final`` when ``scored``."""
    acc = np.linspace(0.1, final, rounds + 1)
    history = [{"round": r, "test_accuracy": float(a), "test_loss": float(2 - a)} for r, a in enumerate(acc)]
    workers = [{"round": r, "worker": k, **({"test_accuracy": float(acc[r]) * k / 100} if scored else {})}
               for r in range(1, rounds + 1) for k in range(10)]
    return RunResult("federated", "x", {"rounds": rounds}, rounds=history, workers=workers)


def sample(levels: tuple[float, ...] = (1.0, 0.0, 0.5)) -> tuple[dict, dict, list[RunResult]]:
    allocations = {b: np.full((10, 10), 100) + np.eye(10, dtype=int) * int(1000 * b) for b in levels}
    federated = {b: [fake_run(0.9 - 0.3 * b), fake_run(0.8 - 0.3 * b)] for b in levels}
    return allocations, federated, [fake_run(0.98)]


def test_data_holds_each_level_in_order_with_the_report_colours():
    data = explorer.explorer_data(*sample())
    assert [level["bias"] for level in data["levels"]] == [0.0, 0.5, 1.0]
    full = data["levels"][-1]
    assert full["color"] == to_hex(plots.bias_color(1.0))
    assert data["worker_colors"][3] == to_hex(plots.worker_color(3))
    assert full["counts"][2][2] == 1100 and full["seeds"] == 2
    assert full["final"] == f"55.0 ± {12.706 * 5.0:.1f}"  # the last round's mean and 95% half-width (%)
    assert full["accuracy"]["mean"][-1] == pytest.approx(100 * (0.6 + 0.5) / 2)
    half = 12.706 * 5.0  # 95% interval of two seeds 10 points apart: t(0.975, 1) * sd / sqrt(2)
    assert full["accuracy"]["lo"][-1] == pytest.approx(55 - half, abs=0.01)
    assert full["accuracy"]["hi"][-1] == pytest.approx(55 + half, abs=0.01)
    assert full["loss"]["mean"][0] == pytest.approx(1.9)
    assert full["workers"]["accuracy"][9][-1] == pytest.approx(0.6 * 9)  # worker 9 of the first seed
    assert full["workers"]["rounds"] == [1, 2, 3, 4] and full["workers"]["averaged_rounds"] == [0, 1, 2, 3, 4]
    assert data["central"]["accuracy"]["mean"][-1] == pytest.approx(98.0)


def test_data_refuses_mismatched_levels_and_unscored_workers():
    allocations, federated, central = sample()
    with pytest.raises(ValueError, match="allocations and federated"):
        explorer.explorer_data({0.0: allocations[0.0]}, federated, central)
    with pytest.raises(ValueError, match="centralized"):
        explorer.explorer_data(allocations, federated, [])
    federated[0.5] = [fake_run(0.5, scored=False)]
    with pytest.raises(ValueError, match="eval_workers"):
        explorer.explorer_data(allocations, federated, central)


def test_page_is_self_contained_and_starts_where_asked():
    data = explorer.explorer_data(*sample())
    page = explorer.explorer_html(data, start=0.5)
    assert f'class="{explorer.ROOT_CLASS}"' in page
    assert 'max="2"' in page and 'value="1"' in page
    assert page.count("<svg") == len(explorer.PANELS)
    assert not re.search(r"(src|href)=|https?:|//[a-z]", page)  # nothing fetched, no library, no CDN
    payload = re.search(r'<script type="application/json">(.*?)</script>', page).group(1)
    assert json.loads(payload) == json.loads(json.dumps(data))
    assert 'value="2"' in explorer.explorer_html(data)  # the last level by default


def test_page_refuses_a_start_outside_the_levels():
    with pytest.raises(ValueError, match=r"start must be one of the bias levels \[0.0, 0.5, 1.0\]"):
        explorer.explorer_html(explorer.explorer_data(*sample()), start=0.3)
