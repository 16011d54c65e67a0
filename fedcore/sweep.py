"""``python -m fedcore sweep``: a grid over any RunConfig fields, its missing runs trained, tidy tables out.

    python -m fedcore sweep --grid bias=0,0.5,1 --grid seed=0..4 --set rounds=20 --set local_steps=50
    python -m fedcore sweep grid.yml --scheduler tcp://HOST:8786

A grid file is YAML: ``fixed`` (settings of every run), ``grid`` (field: a list of values, or ``a..b`` for
the integers a to b) and optionally ``kind``; ``--set`` and ``--grid`` add to it or override it. Every
config is validated before any training. Stored runs come back at once, the others train (local pool or
Dask cluster, see fedcore.executors) and are stored as they finish, so a sweep interrupted and started
again picks up where it stopped. A failed or diverged run is reported; the rest go on (exit status 1
if any failed, 2 for a bad grid or scheduler). Out (``--out``,
written whole or not at all): ``runs.csv``, one row per run (its config, status and final metrics), and
``rounds.csv``, one row per run and round. The summary groups runs by the swept fields other than the seed:
mean final test accuracy and its 95% Student-t interval over seeds (mean +- t(0.975, n-1) s / sqrt(n)).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import math
import statistics
import sys
from itertools import product
from pathlib import Path

import yaml
from tqdm import tqdm

from fedcore.config import ConfigError, RunConfig, with_local_work
from fedcore.executors import SchedulerError
from fedcore.results import RunResult
from fedcore.runner import completed
from fedcore.stats import interval
from fedcore.store import RunStore, check_writable, write_atomic

FIELDS = [f.name for f in dataclasses.fields(RunConfig)]
FLOAT_FIELDS = {f.name for f in dataclasses.fields(RunConfig) if isinstance(getattr(RunConfig(), f.name), float)}
KINDS = ("federated", "centralized")
ROUND_COLUMNS = ("round", "test_loss", "test_accuracy", "lr", "samples", "seconds")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``sweep`` subcommand."""
    s = sub.add_parser("sweep", help="train a grid of runs (missing ones only) and write tidy CSV tables",
                       description=__doc__.split("\n\n")[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    s.set_defaults(command_parser=s)
    s.add_argument("file", nargs="?", type=Path, help="YAML grid file with 'fixed', 'grid' and optionally 'kind'")
    s.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2,...",
                   help="a swept field: comma-separated values, or a..b for the integers a to b (repeatable)")
    s.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="a fixed setting of every run (repeatable)")
    s.add_argument("--kind", choices=KINDS, default=None, help="federated (default) or the centralized baseline")
    s.add_argument("--out", type=Path, default=Path("sweep"), help="folder for runs.csv and rounds.csv")
    s.add_argument("--runs-dir", default=None, help="run store folder (default: $FEDCORE_RUNS_DIR, else runs/)")
    s.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                   help="Dask scheduler to train on (default: $FEDCORE_SCHEDULER, else the local pool)")
    s.add_argument("--processes", type=int, default=None, help="local pool size (default: one per core)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_value(field: str, text: object) -> object:
    """A YAML scalar as the field's type: ints become floats for float fields, 'full' batch size is None."""
    value = yaml.safe_load(text) if isinstance(text, str) else text
    if field == "batch_size" and value == "full":
        return None
    if field in FLOAT_FIELDS and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def expand(field: str, values: object) -> list[object]:
    """The values of a swept field: a list, a comma-separated string, or 'a..b' (integers a to b)."""
    if isinstance(values, str) and ".." in values:
        low, _, high = values.partition("..")
        if not (low.strip().lstrip("-").isdigit() and high.strip().lstrip("-").isdigit()) or int(low) > int(high):
            raise ConfigError(f"{field} range must be a..b with integers a <= b; got {values!r}", param=field)
        return list(range(int(low), int(high) + 1))
    if isinstance(values, str):
        values = values.split(",")
    return [parse_value(field, v) for v in (values if isinstance(values, list) else [values])]


def _pair(option: str, text: str) -> tuple[str, str]:
    field, sep, value = text.partition("=")
    if not sep or not value:
        raise ConfigError(f"{option} must be FIELD=VALUE; got {text!r}", param=option)
    return field.strip().replace("-", "_"), value


def grid_spec(args: argparse.Namespace) -> tuple[dict[str, object], dict[str, list[object]], str]:
    """(fixed settings, swept fields and their values, kind) from the file and the options."""
    spec = (yaml.safe_load(args.file.read_text()) if args.file else None) or {}
    if not isinstance(spec, dict) or set(spec) - {"fixed", "grid", "kind"}:
        raise ConfigError(f"grid file must be a mapping with keys fixed, grid, kind; got {spec!r}", param="file")
    fixed = {f: parse_value(f, v) for f, v in (spec.get("fixed") or {}).items()}
    fixed |= {f: parse_value(f, v) for f, v in (_pair("--set", t) for t in args.set)}
    grid = {f: expand(f, v) for f, v in (spec.get("grid") or {}).items()}
    grid |= {f: expand(f, v) for f, v in (_pair("--grid", t) for t in args.grid)}
    kind = args.kind or spec.get("kind", "federated")
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}", param="kind")
    for field in [*fixed, *grid]:
        if field not in FIELDS:
            raise ConfigError(f"{field} is not a RunConfig field; fields: {', '.join(FIELDS)}", param=field)
    for field, values in grid.items():
        if not values:
            raise ConfigError(f"{field} must have at least one value in the grid; got none", param=field)
    return fixed, grid, kind


def configs(fixed: dict[str, object], grid: dict[str, list[object]]) -> list[RunConfig]:
    """Every config of the grid, validated (ConfigError naming the field, the value and its allowed range)."""
    out = []
    for values in product(*grid.values()):
        settings = {**fixed, **dict(zip(grid, values, strict=True))}
        try:  # as on the command line: local steps replace the default epoch; naming both is an error
            out.append(RunConfig(**with_local_work(settings)))
        except ConfigError as err:
            swept = ", ".join(f"{f}={settings[f]!r}" for f in grid)
            raise ConfigError(f"{err} (grid point {swept})", param=err.param) from err
    return out


def run_row(config: RunConfig, kind: str, outcome: RunResult | Exception) -> dict[str, object]:
    """One run: its config fields, key, status (ok, diverged, failed) and final metrics."""
    row: dict[str, object] = {"kind": kind, "key": config.key(kind), **dataclasses.asdict(config)}
    if isinstance(outcome, Exception):
        return {**row, "status": "failed", "error": f"{type(outcome).__name__}: {outcome}"}
    last = outcome.rounds[-1]
    return {**row, "status": "diverged" if outcome.diverged else "ok", "error": outcome.diverged or "",
            "final_round": last["round"], "test_accuracy": last["test_accuracy"], "test_loss": last["test_loss"],
            "best_accuracy": max(outcome.column("test_accuracy")), "seconds": sum(outcome.column("seconds"))}


def round_rows(row: dict[str, object], swept: list[str], outcome: RunResult) -> list[dict[str, object]]:
    """One row per round of a run, with its key and swept fields (join runs.csv on key for the rest)."""
    ident = {"key": row["key"], **{f: row[f] for f in swept}}
    return [{**ident, **{c: r[c] for c in ROUND_COLUMNS}} for r in outcome.rounds]


def write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    """A CSV with the union of the rows' columns, in first-seen order; written atomically."""
    columns = list(dict.fromkeys(c for r in rows for c in r))
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, text.getvalue())


def summary(rows: list[dict[str, object]], swept: list[str]) -> str:
    """Runs grouped by the swept fields other than seed: counts, mean final accuracy and its 95% interval."""
    by = [f for f in swept if f != "seed"]
    groups: dict[tuple, list[dict[str, object]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[f] for f in by), []).append(row)
    head = [*by, "runs", "failed", "diverged", "accuracy", "95% interval"]
    lines = [head]
    for values, members in groups.items():
        acc = [float(r["test_accuracy"]) for r in members if r["status"] == "ok"]
        mean = statistics.fmean(acc) if acc else math.nan
        lines.append([*(str(v) for v in values), str(len(members)),
                      str(sum(r["status"] == "failed" for r in members)),
                      str(sum(r["status"] == "diverged" for r in members)), f"{mean:.4f}", f"+-{interval(acc):.4f}"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in lines)


def main(args: argparse.Namespace) -> int:
    """Validate the whole grid and the output folders, train the missing runs, write the tables and print
    the summary."""
    store = RunStore(args.runs_dir)
    try:
        fixed, grid, kind = grid_spec(args)
        grid_configs = configs(fixed, grid)
        check_writable(args.out, "out", folder=True)
        store.check_writable()
    except (ConfigError, OSError, yaml.YAMLError) as err:
        args.command_parser.error(str(err))
    jobs = list({c.key(kind): (c, kind) for c in grid_configs}.values())  # equal experiments train once
    outcomes: dict[str, RunResult | Exception] = {}
    failed = 0
    bar = tqdm(total=len(jobs), desc="sweep", unit="run", disable=args.no_progress)
    try:
        for i, outcome in completed(jobs, store, args.processes, args.scheduler, progress=False):
            outcomes[jobs[i][0].key(kind)] = outcome
            failed += isinstance(outcome, Exception) or bool(outcome.diverged)
            bar.set_postfix(failed=failed)
            bar.update()
    except SchedulerError as err:
        print(f"sweep: {err}", file=sys.stderr)
        return 2
    except ConfigError as err:  # a run that would fail (data, device, empty workers), found before any trains
        args.command_parser.error(str(err))
    finally:
        bar.close()
    swept = list(grid)
    rows = [run_row(c, kind, outcomes[c.key(kind)]) for c in grid_configs]
    curves = [r for row, c in zip(rows, grid_configs, strict=True)
              if isinstance(outcomes[c.key(kind)], RunResult) for r in round_rows(row, swept, outcomes[c.key(kind)])]
    write_csv(args.out / "runs.csv", rows)
    write_csv(args.out / "rounds.csv", curves)
    print(summary(rows, swept))
    print(f"{len(rows)} runs ({failed} failed or diverged); tables in {args.out}/runs.csv and rounds.csv")
    for row in rows:
        if row["status"] != "ok":
            print(f"  {row['status']}: {', '.join(f'{f}={row[f]}' for f in swept)}: {row['error']}")
    return 1 if any(row["status"] == "failed" for row in rows) else 0
