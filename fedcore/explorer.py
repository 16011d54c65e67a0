"""The bias explorer: one self-contained HTML fragment (inline data, script and SVG; no library, no network)
where a slider picks a bias level and four panels show that level's allocation, the federated model's test
accuracy and loss against the non-federated model, and each worker's own accuracy. Colours are plots.py's."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.colors import to_hex

from fedcore import plots
from fedcore.experiments import summarize
from fedcore.results import RunResult

ROOT_CLASS = "tw-explorer"  # the browser check (scripts/check_book.py) looks for this class
PANELS = {  # panel id -> what it shows
    "allocation": "Training images per digit, one bar per worker",
    "accuracy": ("Test accuracy per round: federated (mean of the seeds, band: 95% interval; the last round's mean "
                 "± half-width, diverged seeds at chance) and non-federated"),
    "loss": "Test loss per round: federated and non-federated",
    "workers": "Each worker's own model before averaging, and the averaged model (seed 0): test accuracy",
}


def _band(results: Sequence[RunResult], column: str, scale: float, digits: int) -> dict[str, list[float]]:
    rounds, *values = plots.mean_band(results, column)
    mean, lo, hi = ([round(float(scale * v), digits) for v in series] for series in values)
    return {"rounds": [int(r) for r in rounds], "mean": mean, "lo": lo, "hi": hi}


def _curves(results: Sequence[RunResult]) -> dict[str, dict[str, list[float]]]:
    return {"accuracy": _band(results, "test_accuracy", 100.0, 2), "loss": _band(results, "test_loss", 1.0, 4)}


def _workers(result: RunResult) -> dict[str, object]:
    """Seed ``result``'s workers: rounds and one accuracy list per worker (%), and the averaged model's."""
    rows = [row for row in result.workers if "test_accuracy" in row]
    if not rows:
        raise ValueError("federated: each level's first run must score its workers (eval_workers > 0)")
    ids = sorted({row["worker"] for row in rows})
    per = [[round(100 * float(r["test_accuracy"]), 2) for r in rows if r["worker"] == k] for k in ids]
    rounds = sorted({int(row["round"]) for row in rows})
    averaged = [round(100 * float(r["test_accuracy"]), 2) for r in result.rounds]
    return {"rounds": rounds, "accuracy": per, "averaged_rounds": [int(r["round"]) for r in result.rounds],
            "averaged": averaged}


def explorer_data(
    allocations: Mapping[float, np.ndarray],
    federated: Mapping[float, Sequence[RunResult]],
    centralized: Sequence[RunResult],
) -> dict[str, object]:
    """Everything the page plots: per bias level (ascending) its workers x digits counts, curves over the
    seeds and its first seed's workers; the non-federated curves; the colours of plots.py."""
    if not federated or set(allocations) != set(federated):
        raise ValueError(f"allocations and federated must name the same, non-empty bias levels; got "
                         f"{sorted(allocations)} and {sorted(federated)}")
    if not centralized or any(not runs for runs in federated.values()):
        raise ValueError("centralized and every level of federated need at least one run")
    levels = []
    for bias in sorted(federated):
        counts = np.asarray(allocations[bias])
        levels.append({"bias": bias, "label": f"{bias:g}", "color": to_hex(plots.bias_color(bias)),
                       "counts": counts.astype(int).tolist(), **_curves(federated[bias]),
                       "workers": _workers(federated[bias][0]), "seeds": len(federated[bias]),
                       "final": summarize(federated[bias]).text()})
    workers = max(len(level["counts"]) for level in levels)
    return {"levels": levels, "central": _curves(centralized), "central_color": to_hex(plots.CENTRALIZED_COLOR),
            "worker_colors": [to_hex(plots.worker_color(k)) for k in range(workers)]}


def explorer_html(data: Mapping[str, object], start: float | None = None) -> str:
    """The page fragment for ``explorer_data``'s output; the slider starts at level ``start`` (else the last)."""
    levels = [level["bias"] for level in data["levels"]]
    if start is not None and start not in levels:
        raise ValueError(f"start must be one of the bias levels {levels}; got {start!r}")
    index = levels.index(start) if start is not None else len(levels) - 1
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    legend = "".join(f'<span><i style="background:{c}"></i>worker {k}</span>'
                     for k, c in enumerate(data["worker_colors"]))
    panels = "".join(f'<figure><svg class="tw-panel" data-panel="{name}" viewBox="0 0 460 280" role="img" '
                     f'aria-label="{html.escape(text)}"></svg><figcaption>{html.escape(text)}</figcaption></figure>'
                     for name, text in PANELS.items())
    return (f'<div class="{ROOT_CLASS}"><style>{_CSS}</style>'
            f'<label>Bias <input type="range" min="0" max="{len(levels) - 1}" step="1" value="{index}" '
            f'aria-label="bias level"> <output></output></label>'
            f'<div class="tw-grid">{panels}</div><p class="tw-legend">{legend}</p>'
            f'<script type="application/json">{payload}</script><script>{_SCRIPT}</script></div>')


_CSS = """
.output:has(> .tw-explorer){overflow:visible !important}
.tw-explorer label{font-weight:600;display:block;margin:0;padding:.5em 0;position:sticky;z-index:1;
  top:var(--pst-header-article-height,0px);background:var(--pst-color-background,#fff)}
.tw-explorer input{width:60%;vertical-align:middle}
.tw-explorer .tw-grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));gap:.5em}
.tw-explorer figure{margin:0}
.tw-explorer figcaption{font-size:.8em;color:#555}
.tw-explorer svg{width:100%;height:auto;font:11px sans-serif}
.tw-explorer .tw-legend span{margin-right:.8em;font-size:.8em;white-space:nowrap}
.tw-explorer .tw-legend i{display:inline-block;width:.8em;height:.8em;margin-right:.3em}
"""

# Draws the four panels of the chosen level into their <svg> elements (as SVG markup, no namespaces needed).
_SCRIPT = """
(() => {
'use strict';
const root = document.currentScript.parentElement;
const D = JSON.parse(root.querySelector('script[type="application/json"]').textContent);
const slider = root.querySelector('input');
const shown = root.querySelector('output');
const panel = name => root.querySelector(`svg[data-panel="${name}"]`);
const W = 460, H = 280, L = 52, R = 12, T = 26, B = 40;
const scale = (d0, d1, r0, r1) => v => r0 + (v - d0) / ((d1 - d0) || 1) * (r1 - r0);
const esc = s => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;');
function nice(max) {
  const raw = max / 5, p = Math.pow(10, Math.floor(Math.log10(raw || 1)));
  const step = [1, 2, 2.5, 5, 10].map(m => m * p).find(s => s >= raw);
  return {step, top: Math.ceil(max / step) * step || step};
}
function frame(x, y, xticks, yticks, xlabel, ylabel, title) {
  let s = `<text x="${W / 2}" y="16" text-anchor="middle" font-weight="600">${esc(title)}</text>`;
  s += `<path d="M${L},${T}V${H - B}H${W - R}" fill="none" stroke="#333"/>`;
  for (const t of xticks) s += `<text x="${x(t)}" y="${H - B + 14}" text-anchor="middle">${t}</text>`;
  for (const t of yticks) {
    s += `<line x1="${L}" x2="${W - R}" y1="${y(t)}" y2="${y(t)}" stroke="#ddd"/>`;
    s += `<text x="${L - 4}" y="${y(t) + 4}" text-anchor="end">${+t.toFixed(3)}</text>`;
  }
  s += `<text x="${(L + W - R) / 2}" y="${H - 6}" text-anchor="middle">${esc(xlabel)}</text>`;
  const mid = (T + H - B) / 2;
  return s + `<text transform="translate(12,${mid}) rotate(-90)" text-anchor="middle">${esc(ylabel)}</text>`;
}
const points = (xs, ys, x, y) => xs.map((r, i) => `${x(r).toFixed(1)},${y(ys[i]).toFixed(1)}`);
const line = (xs, ys, x, y, attrs) => `<path d="M${points(xs, ys, x, y).join('L')}" fill="none" ${attrs}/>`;
function band(c, x, y, color) {
  const up = points(c.rounds, c.hi, x, y), down = points(c.rounds, c.lo, x, y).reverse();
  return `<path d="M${up.concat(down).join('L')}Z" fill="${color}" fill-opacity="0.2" stroke="none"/>`;
}
function range(n, step) { const out = []; for (let v = 0; v <= n + 1e-9; v += step) out.push(v); return out; }
function allocation(lv) {
  const counts = lv.counts, k = counts.length, digits = counts[0].length;
  const {step, top} = nice(Math.max(...counts.flat()));
  const x = scale(-0.5, digits - 0.5, L, W - R), y = scale(0, top, H - B, T), w = (x(1) - x(0)) * 0.8 / k;
  let s = frame(x, y, range(digits - 1, 1), range(top, step), 'Digit', 'Training images',
                `Allocation at bias ${lv.label}`);
  counts.forEach((row, wk) => row.forEach((n, d) => {
    const left = x(d - 0.4) + wk * w;
    s += `<rect x="${left.toFixed(1)}" y="${y(n).toFixed(1)}" width="${w.toFixed(2)}" `
       + `height="${(y(0) - y(n)).toFixed(1)}" fill="${D.worker_colors[wk]}">`
       + `<title>worker ${wk}, digit ${d}: ${n}</title></rect>`;
  }));
  return s;
}
function curves(lv, key, ylabel) {
  const f = lv[key], c = D.central[key], last = Math.max(...f.rounds, ...c.rounds);
  const top = key === 'accuracy' ? {step: 20, top: 100} : nice(Math.max(...f.hi, ...c.hi));
  const x = scale(0, last, L, W - R), y = scale(0, top.top, H - B, T);
  let s = frame(x, y, range(last, nice(last).step), range(top.top, top.step), 'Round', ylabel,
                `${key === 'accuracy' ? 'Test accuracy' : 'Test loss'} at bias ${lv.label}`);
  s += band(c, x, y, D.central_color) + band(f, x, y, lv.color);
  s += line(c.rounds, c.mean, x, y, `stroke="${D.central_color}" stroke-width="1.5" stroke-dasharray="5,3"`);
  s += line(f.rounds, f.mean, x, y, `stroke="${lv.color}" stroke-width="2"`);
  const ly = key === 'accuracy' ? H - B - 30 : T + 12;
  s += `<line x1="${W - 170}" x2="${W - 150}" y1="${ly}" y2="${ly}" stroke="${lv.color}" stroke-width="2"/>`;
  s += `<text x="${W - 145}" y="${ly + 4}">bias ${lv.label} (${lv.seeds} seeds)</text>`;
  if (key === 'accuracy') s += `<text x="${L + 6}" y="${T + 12}">last round (%): ${esc(lv.final)}</text>`;
  s += `<line x1="${W - 170}" x2="${W - 150}" y1="${ly + 15}" y2="${ly + 15}" stroke="${D.central_color}" `
     + 'stroke-dasharray="5,3"/>';
  return s + `<text x="${W - 145}" y="${ly + 19}">non-federated</text>`;
}
function workers(lv) {
  const wk = lv.workers, last = Math.max(...wk.averaged_rounds);
  const x = scale(0, last, L, W - R), y = scale(0, 100, H - B, T);
  let s = frame(x, y, range(last, nice(last).step), range(100, 20), 'Round', 'Test accuracy (%)',
                `Workers before averaging at bias ${lv.label}`);
  wk.accuracy.forEach((acc, k) => {
    s += line(wk.rounds, acc, x, y, `stroke="${D.worker_colors[k]}" stroke-width="1"`);
  });
  s += line(wk.averaged_rounds, wk.averaged, x, y, `stroke="${D.central_color}" stroke-width="2.5"`);
  return s + `<text x="${L + 6}" y="${T + 12}">black: the averaged model; colours: the workers</text>`;
}
function draw() {
  const lv = D.levels[+slider.value];
  shown.textContent = lv.label;
  root.dataset.bias = lv.label;
  panel('allocation').innerHTML = allocation(lv);
  panel('accuracy').innerHTML = curves(lv, 'accuracy', 'Test accuracy (%)');
  panel('loss').innerHTML = curves(lv, 'loss', 'Test loss (nats)');
  panel('workers').innerHTML = workers(lv);
}
slider.addEventListener('input', draw);
draw();
})();
"""
