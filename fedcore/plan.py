"""The book's job graph: the runs every page asks for, planned before any page executes.

A build (scripts/build_book.py) reads the committed plan, ``book/plan.json`` (each page's runs, as changes from
the report's standard configuration), trains every missing run at once, longest first, in one pool or on the Dask
cluster named by $FEDCORE_SCHEDULER (``train``), and only then executes the notebooks, which find their runs
stored. While a notebook executes, every run it asks for is noted (fedcore.request_log); the build then checks
that each page asked for what the plan says, no more and no less (``differences``), and fails where not: ``make
plan`` makes the last build's requests the plan, in the commit that changed them. A notebook executed alone
trains what it misses, as ever.

The same graph gives the build's ledger (seconds and floating-point work per page, against the machine's measured
peak: ``ledger``) and its projection onto clusters of more workers (``projection``).
"""

from __future__ import annotations

import heapq
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from fedcore import experiments, runner
from fedcore.config import ConfigError, RunConfig
from fedcore.models import build
from fedcore.request_log import Job, fields
from fedcore.results import RunResult
from fedcore.store import RunStore, write_atomic

log = logging.getLogger(__name__)

FORMAT = 1
TRAIN_FACTOR = 3  # a training sample costs a forward and a backward pass: about three forwards
TEACHER_FACTOR = 1  # and, with FedNTD's distillation, one more forward: the global model's logits on its batch
IMAGES = {"mnist": (60_000, 10_000), "fashion-mnist": (60_000, 10_000)}  # training, test images


def changes(config: RunConfig) -> dict[str, object]:
    """The fields of ``config`` that differ from the report's standard configuration (``data_dir`` left out)."""
    base = fields(experiments.standard())
    return {name: value for name, value in fields(config).items() if value != base[name]}


def _job(entry: Mapping[str, object]) -> Job:
    return experiments.standard().replace(**entry["changes"]), str(entry["kind"])


def read(path: Path) -> dict[str, list[Job]]:
    """The committed plan: each page's runs. ConfigError (param ``plan``) where the file is not one."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
        if loaded.get("format") != FORMAT:
            raise ValueError(f"format {loaded.get('format')!r}, not {FORMAT}")
        return {page: [_job(entry) for entry in entries] for page, entries in loaded["pages"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ConfigError) as err:
        raise ConfigError(f"plan must be a plan written by `make plan`; {path} is not ({err})", param="plan") from err


def write(path: Path, pages: Mapping[str, Sequence[Job]]) -> None:
    """Write a plan (one run per line, pages sorted, so a change shows as the lines it adds or removes)."""
    lines = []
    for page in sorted(pages):
        entries = [json.dumps({"kind": kind, "changes": changes(config)}, sort_keys=True)
                   for config, kind in pages[page]]
        lines.append(f"  {json.dumps(page)}: [\n" + ",\n".join(f"   {e}" for e in entries) + "\n  ]")
    write_atomic(path, f'{{"format": {FORMAT},\n "pages": {{\n' + ",\n".join(lines) + "\n }\n}\n")


def differences(planned: Mapping[str, Sequence[Job]], asked: Mapping[str, Sequence[Job]],
                pages: Iterable[str]) -> list[str]:
    """One line per page of ``pages`` whose requests were not its plan: runs asked for that the plan missed (they
    trained while the page executed), and runs planned that no page asked for (trained for nothing)."""
    lines = []
    for page in pages:
        plan = {c.key(k): (c, k) for c, k in planned.get(page, [])}
        got = {c.key(k): (c, k) for c, k in asked.get(page, [])}
        for what, keys in (("asked for {} run(s) the plan lacks", got.keys() - plan.keys()),
                           ("did not ask for {} planned run(s)", plan.keys() - got.keys())):
            if keys:
                config, kind = (plan | got)[min(keys)]
                lines.append(f"page {page} {what.format(len(keys))}, e.g. a {kind} run with {changes(config)}")
    return lines


def unique(pages: Mapping[str, Sequence[Job]], order: Iterable[str]) -> dict[str, tuple[Job, str]]:
    """Every run of the pages in ``order``, once each by key, with the first page that asks for it."""
    out: dict[str, tuple[Job, str]] = {}
    for page in order:
        for config, kind in pages.get(page, []):
            out.setdefault(config.key(kind), ((config, kind), page))
    return out


@cache
def forward_flops(model: str, classes: int = 10) -> int:
    """Floating-point operations of one image's forward pass (torch's FlopCounterMode: 2 per multiply-add)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        build(model, classes)(torch.zeros(1, 1, 28, 28))
    return counter.get_total_flops()


def samples_per_round(config: RunConfig) -> int:
    """Training samples one round sees (every participating worker's, or the non-federated model's equal share)."""
    data = IMAGES[config.dataset][0] - config.validation
    participants = max(1, round(config.participation * config.workers))
    share = data * participants // config.workers
    if config.local_steps is None:
        return share * (config.local_epochs or 1)
    return config.local_steps * (participants * config.batch_size if config.batch_size else share)


def images_per_round(config: RunConfig) -> int:
    """Images one round evaluates: the test set, the held-out validation images, the workers' scoring images."""
    participants = max(1, round(config.participation * config.workers))
    return IMAGES[config.dataset][1] + config.validation + config.eval_workers * participants


def flops(config: RunConfig, kind: str, rounds: int | None = None) -> float:
    """Estimated floating-point work of a run of ``rounds`` rounds (default: its configured number): three forward
    passes per training sample (four with FedNTD's teacher), one per evaluated image; a divergence run trains both
    of its models."""
    teacher = TEACHER_FACTOR if config.strategy == "fedntd" and config.ntd_beta > 0 else 0
    per_round = (TRAIN_FACTOR + teacher) * samples_per_round(config) + images_per_round(config)
    runs = 2 if kind == "divergence" else 1
    return float(runs * forward_flops(config.model) * per_round * (config.rounds if rounds is None else rounds))


def run_seconds(result: RunResult) -> float:
    """Seconds a stored run took: the whole run where it was timed so, else its rounds' training clocks (which
    leave out setup and scoring; 0 where it records none)."""
    if result.wall_seconds is not None:
        return float(result.wall_seconds)
    return float(sum(row.get("seconds", 0.0) for row in result.rounds))


def done_rounds(result: RunResult) -> int:
    return max(0, len(result.rounds) - 1)


def peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """One thread's float32 peak here, in GFLOP/s: the best of ``repeats`` ``size``-square matrix products."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        a @ b
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return 2 * size**3 / best / 1e9


def list_schedule(durations: Iterable[float], workers: int) -> float:
    """Seconds until ``workers`` workers finish the tasks of ``durations``, each task going, longest first, to the
    first worker free."""
    free = [0.0] * workers
    for seconds in sorted(durations, reverse=True):
        heapq.heappush(free, heapq.heappop(free) + seconds)
    return max(free)


def project(runs: Sequence[float], renders: Sequence[float], workers: int, cores: int) -> tuple[float, float]:
    """The build's wall time as ``make book`` runs it with ``workers`` single-core cluster workers, and its
    critical path, in seconds: every run (``runs``) list-scheduled on the cluster, then every page (``renders``)
    on the ``cores`` of the machine that builds, once all runs are stored. The critical path, the longest run
    and then the longest page, is what no cluster can shorten."""
    return (list_schedule(runs, workers) + list_schedule(renders, cores),
            max(runs, default=0.0) + max(renders, default=0.0))


def projection(book: Mapping[str, object], workers: Sequence[int] = (8, 32, 128)) -> list[dict[str, float]]:
    """The ledger's book on clusters of ``workers`` single-core workers (``project``), building on the ledger's
    machine: every run at the seconds it took here (a run without a clock at the GFLOP rate of those with one),
    every page at its render seconds. One row per size: wall seconds and the critical path."""
    runs = book["runs"]
    clocked = [r for r in runs if r["seconds"] > 0]
    rate = sum(r["gflop"] for r in clocked) / max(sum(r["seconds"] for r in clocked), 1e-9)
    durations = [r["seconds"] if r["seconds"] > 0 else r["gflop"] / rate for r in runs]
    renders = [row["render_seconds"] for row in book["pages"].values()]
    out = []
    for n in workers:
        wall, critical = project(durations, renders, n, book["cores"])
        out.append({"workers": n, "wall_seconds": wall, "critical_path_seconds": critical})
    return out


def train(jobs: Mapping[str, tuple[Job, str]], store: RunStore, progress: bool = True) -> set[str]:
    """Train the runs of ``jobs`` (``unique``'s) that ``store`` lacks, all at once, longest first: in the local pool
    across the cores, or on the Dask cluster $FEDCORE_SCHEDULER names, each stored as it comes back. The keys
    trained; a run that fails is named in a warning and left to its page, which stops on it."""
    missing = sorted((job for job, _ in jobs.values() if store.get(*job) is None), key=lambda job: -flops(*job))
    trained = set()
    with tqdm(total=len(missing), desc="planned runs", unit="run", disable=not progress or not missing) as bar:
        for i, outcome in runner.completed(missing, store, progress=progress):
            if isinstance(outcome, Exception):
                config, kind = missing[i]
                log.warning("planned run %s failed (%s: %s); its page trains it again", config.key(kind),
                            type(outcome).__name__, outcome)
            else:
                trained.add(outcome.key)
            bar.update()
    return trained


def ledger(pages: Mapping[str, Sequence[Job]], order: Sequence[str], store: RunStore, trained: set[str],
           render: Mapping[str, float], wall: float, peak: float, cores: int) -> dict[str, object]:
    """What the build computed, per page in ``order``: its runs (each counted on the first page that asks for it),
    their seconds (``run_seconds``), their estimated GFLOP, how many trained in this build and the page's render
    seconds; and for the book this build's GFLOP against ``wall`` seconds of ``cores`` cores at ``peak`` GFLOP/s
    each. Runs the store lacks count as missing."""
    rows = {page: {"runs": 0, "trained": 0, "missing": 0, "run_seconds": 0.0, "gflop": 0.0, "trained_gflop": 0.0,
                   "render_seconds": float(render.get(page, 0.0))} for page in order}
    runs = []
    for key, ((config, kind), page) in unique(pages, order).items():
        row = rows[page]
        row["runs"] += 1
        result = store.get(config, kind)
        if result is None:
            row["missing"] += 1
            continue
        gflop, seconds = flops(config, kind, done_rounds(result)) / 1e9, run_seconds(result)
        row["gflop"] += gflop
        row["run_seconds"] += seconds
        runs.append({"key": key, "page": page, "kind": kind, "seconds": seconds, "gflop": gflop})
        if key in trained:
            row["trained"] += 1
            row["trained_gflop"] += gflop
    done = sum(row["trained_gflop"] for row in rows.values())
    return {"peak_gflops_per_core": peak, "cores": cores, "wall_seconds": wall, "trained_gflop": done,
            "share_of_peak": done / (wall * peak * cores) if wall > 0 else 0.0, "pages": rows, "runs": runs}
