"""``python -m fedcore sweep``: a grid over any RunConfig fields, its missing runs trained, tidy tables out.

    python -m fedcore sweep --grid bias=0,0.5,1 --grid seed=0..4 --set rounds=20 --set local_steps=50
    python -m fedcore sweep grid.yml --scheduler tcp://HOST:8786

A grid file is YAML: ``fixed`` (settings of every run), ``grid`` (field: a list of values, or ``a..b`` for
the integers a to b, integer fields only) and optionally ``kind``; ``--set`` and ``--grid`` add to it or
override it. Values are read with the field's type (``1e-3`` and ``1`` are floats for a float field, so a
run's key does not depend on how its values were written). A field both fixed and swept, or given twice, is
an error; a value listed twice, or grid points that are one run (settings the run does not use), count once
(a note says so). Grids of more than --max-runs runs are refused, their size computed before anything is
built. Every config is validated before any training. Stored runs come back at once, the others train
(local pool or Dask cluster, see fedcore.executors) and are stored as they finish, so a sweep interrupted
and started again picks up where it stopped. A failed or diverged run is reported; the rest go on (exit
status 1 if any failed or diverged or a result could not be written, 2 for a bad grid or a scheduler that
cannot be used: malformed, unreachable, no worker for --worker-timeout (at the start, or once all died),
lost; 130 on Ctrl-C, 143 on SIGTERM).
Out (``--out``, written whole or not at all): ``runs.csv``, one row per run (its config, status and final
metrics), and ``rounds.csv``, one row per run and round. The summary groups runs by the swept fields other
than the seed: mean final test accuracy and its 95% Student-t interval over seeds
(mean +- t(0.975, n-1) s / sqrt(n)).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import math
import reprlib
import statistics
import sys
from collections.abc import Callable, Sequence
from itertools import product
from pathlib import Path

import yaml
from tqdm import tqdm

from fedcore.config import FIELD_TYPES, ConfigError, RunConfig, with_local_work
from fedcore.executors import WORKER_TIMEOUT_S, SchedulerError, check_address, scheduler_address
from fedcore.results import RunResult
from fedcore.runner import completed
from fedcore.stats import interval
from fedcore.store import RunStore, WriteError, check_free, check_writable, write_atomic

FIELDS = [f.name for f in dataclasses.fields(RunConfig)]
KINDS = ("federated", "centralized")
ROUND_COLUMNS = ("round", "test_loss", "test_accuracy", "lr", "samples", "seconds")
MAX_RUNS = 10_000  # the largest grid run without --max-runs
NONE_WORDS = ("none", "null", "~")  # an optional field's None (batch_size also takes 'full')
TYPE_NAMES = {int: "an integer", float: "a finite number", str: "a string"}


def _positive(kind: type) -> Callable[[str], object]:
    """An argparse type: a number of ``kind`` that is finite and > 0."""

    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'} > 0; "
                                             f"got {text!r}")
        return value

    return parse


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
    s.add_argument("--worker-timeout", type=_positive(float), default=WORKER_TIMEOUT_S, metavar="SECONDS",
                   help="how long the Dask scheduler may have no worker, at the start or once every worker died, "
                        f"before the sweep gives up (default: {WORKER_TIMEOUT_S:g})")
    s.add_argument("--processes", type=_positive(int), default=None,
                   help="local pool size, integer >= 1 (default: one per core)")
    s.add_argument("--max-runs", type=_positive(int), default=MAX_RUNS,
                   help=f"refuse grids of more runs than this (default: {MAX_RUNS:,})")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")


_REPR = reprlib.Repr()  # a value's repr, bounded in depth and length however large the value
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 60, 60


def _short(value: object) -> str:
    """A value's repr for an error message, at most 60 characters and never built whole (a YAML value of
    nested aliases can hold billions of items)."""
    text = _REPR.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases (``*name``): a few hundred bytes of nested aliases expand to billions of items."""

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a grid file; write "
                                              "the values out", self.peek_event().start_mark)
        return super().compose_node(parent, index)


def parse_value(field: str, value: object) -> object:
    """A setting as its field's type: text is converted (``1e-3`` and ``1`` are floats for a float field, an
    optional field takes none/null, batch_size also 'full'), a YAML value checked (an int is a float for a
    float field, never the reverse); ConfigError naming the field otherwise."""
    kind, optional = FIELD_TYPES[field]
    allowed = TYPE_NAMES[kind] + (" or none" if optional else "") + (" or full" if field == "batch_size" else "")
    words = (*NONE_WORDS, "full") if field == "batch_size" else NONE_WORDS
    if isinstance(value, str) and optional and value.strip().lower() in words:
        return None
    parsed: object = None
    if isinstance(value, str):
        try:
            parsed = value if kind is str else kind(value.strip())
        except ValueError:
            parsed = None
    elif value is None and optional:
        return None
    elif kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        parsed = float(value)
    elif kind is int and isinstance(value, int) and not isinstance(value, bool):
        parsed = value
    if parsed is None or (isinstance(parsed, float) and not math.isfinite(parsed)):
        hint = f" (values to sweep go under grid, or --grid {field}=A,B)" if isinstance(value, list) else ""
        raise ConfigError(f"{field} must be {allowed}; got {_short(value)}{hint}", param=field)
    return parsed


def expand(field: str, values: object) -> tuple[Sequence[object], list[object]]:
    """The values of a swept field, each once, and those listed more than once: a list, a comma-separated
    string, or 'a..b' (the integers a to b, an integer field's; a range, not a list, however large)."""
    if isinstance(values, str) and ".." in values:
        kind, _ = FIELD_TYPES[field]
        if kind is not int:
            raise ConfigError(f"{field} must be swept by a list of values: a..b counts integers, and {field} "
                              f"is not an integer field; got {values!r} (e.g. {field}=0,0.5,1)", param=field)
        low, _, high = values.partition("..")
        try:
            first, last = int(low), int(high)
        except ValueError:
            first, last = 1, 0
        if first > last:
            raise ConfigError(f"{field} range must be a..b with integers a <= b; got {values!r}", param=field)
        return range(first, last + 1), []
    if isinstance(values, str):
        values = values.split(",")
    parsed = [parse_value(field, v) for v in (values if isinstance(values, list) else [values])]
    unique = list(dict.fromkeys(parsed))
    return unique, list(dict.fromkeys(v for i, v in enumerate(parsed) if v in parsed[:i]))


def _pair(option: str, text: str) -> tuple[str, str]:
    field, sep, value = text.partition("=")
    if not sep or not value:
        raise ConfigError(f"{option} must be FIELD=VALUE; got {text!r}", param=option)
    return field.strip().replace("-", "_"), value


def read_grid_file(path: Path) -> dict[str, object]:
    """A grid file's mapping (fixed, grid, kind), or a one-line ConfigError (param ``file``) saying what is wrong
    with it: unreadable, not UTF-8, not YAML (where; aliases, a number too long, nesting too deep), empty, or
    not of that shape."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"file must be a readable grid file; cannot read '{path}' ({err.strerror or err})",
                          param="file") from err
    try:
        spec = yaml.load(raw.decode("utf-8"), Loader=_NoAliasLoader)  # a SafeLoader
    except UnicodeDecodeError as err:
        raise ConfigError(f"file must be UTF-8 text (YAML); '{path}' has byte 0x{raw[err.start]:02x} at position "
                          f"{err.start}", param="file") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        what = getattr(err, "problem", None) or " ".join(str(err).split())
        raise ConfigError(f"file must be valid YAML; '{path}'{where} {what}", param="file") from err
    except (ValueError, RecursionError) as err:  # an integer of more than 4300 digits; nesting too deep
        raise ConfigError(f"file must be valid YAML; '{path}': {' '.join(str(err).split())[:200]}",
                          param="file") from err
    shape = "a YAML mapping with 'grid' (field: values), and optionally 'fixed' (field: value) and 'kind'"
    if spec is None:
        raise ConfigError(f"file must be {shape}; '{path}' is empty", param="file")
    if not isinstance(spec, dict) or set(spec) - {"fixed", "grid", "kind"}:
        raise ConfigError(f"file must be {shape}; got {_short(spec)} in '{path}'", param="file")
    for key in ("fixed", "grid"):
        if not isinstance(spec.get(key) or {}, dict):
            raise ConfigError(f"file must be {shape}: its {key} is not a mapping; got {_short(spec[key])} in "
                              f"'{path}'", param="file")
    return spec


def _settings(fixed: list[tuple[str, object]], grid: list[tuple[str, object]], where: str
              ) -> tuple[dict[str, object], dict[str, object]]:
    """One source's fixed and swept settings (``where``: the file's, or the options'): each field once, fixed
    or swept."""
    out: tuple[dict[str, object], dict[str, object]] = ({}, {})
    for part, items in zip(out, (fixed, grid), strict=True):
        for field, value in items:
            if field not in FIELDS:
                raise ConfigError(f"{field} is not a RunConfig field; fields: {', '.join(FIELDS)}", param=field)
            if field in out[0] or field in out[1]:
                raise ConfigError(f"{field} must be given once, fixed or swept; got it twice in {where}", param=field)
            part[field] = value
    return out


def grid_size(grid: dict[str, Sequence[object]]) -> int:
    """The number of grid points, from the values' counts (nothing built)."""
    return math.prod(len(values) for values in grid.values())


def grid_spec(args: argparse.Namespace) -> tuple[dict[str, object], dict[str, Sequence[object]], str, list[str]]:
    """(fixed settings, swept fields and their values, kind, notes) from the file and the options, which
    override the file field by field; ConfigError for a field given twice or both fixed and swept, a
    value not of its field's type, or a grid of more than ``args.max_runs`` points. The notes name values
    listed more than once."""
    spec = read_grid_file(args.file) if args.file else {}
    in_file = _settings(list((spec.get("fixed") or {}).items()), list((spec.get("grid") or {}).items()),
                        f"'{args.file}' (fixed and grid)")
    given = _settings([_pair("--set", t) for t in args.set], [_pair("--grid", t) for t in args.grid],
                      "the options (--set and --grid)")
    options = given[0].keys() | given[1].keys()
    fixed = {f: parse_value(f, v) for f, v in in_file[0].items() if f not in options}
    fixed |= {f: parse_value(f, v) for f, v in given[0].items()}
    grid: dict[str, Sequence[object]] = {}
    notes = []
    for field, values in [*((f, v) for f, v in in_file[1].items() if f not in options), *given[1].items()]:
        grid[field], repeated = expand(field, values)
        if not grid[field]:
            raise ConfigError(f"{field} must have at least one value in the grid; got none", param=field)
        if repeated:
            notes.append(f"{field}: {', '.join(map(str, repeated))} listed more than once, counted once")
    kind = args.kind or spec.get("kind", "federated")
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {', '.join(KINDS)}; got {_short(kind)}", param="kind")
    size = grid_size(grid)
    if size > args.max_runs:
        counts = " x ".join(f"{len(v):,} {f}" for f, v in grid.items())
        raise ConfigError(f"grid must have at most {args.max_runs:,} runs (--max-runs); got {size:,} ({counts}): "
                          "sweep fewer values, or raise --max-runs", param="grid")
    return fixed, grid, kind, notes


def configs(fixed: dict[str, object], grid: dict[str, Sequence[object]]) -> list[RunConfig]:
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


def distinct(grid_configs: list[RunConfig], kind: str) -> list[RunConfig]:
    """The grid's runs, each once: points with one run key (settings the run does not use) count once."""
    runs: dict[str, RunConfig] = {}
    for config in grid_configs:
        runs.setdefault(config.key(kind), config)
    return list(runs.values())


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


def table_bytes(runs: list[RunConfig]) -> int:
    """About the most runs.csv and rounds.csv take for these runs (checked against the free space)."""
    return sum(2_000 + 300 * (c.rounds + 1) for c in runs)


def main(args: argparse.Namespace) -> int:
    """Validate the whole grid, the scheduler's address and the output folders, train the missing runs, write
    the tables and print the summary."""
    store = RunStore(args.runs_dir)
    try:
        fixed, grid, kind, notes = grid_spec(args)
        grid_configs = configs(fixed, grid)
        runs = distinct(grid_configs, kind)
        address = scheduler_address(args.scheduler)
        if address is not None:
            check_address(address)
        check_writable(args.out, "out", folder=True)
        check_free(args.out, table_bytes(runs), "out")
    except (ConfigError, SchedulerError) as err:
        args.command_parser.error(str(err))
    if len(runs) < len(grid_configs):
        notes.append(f"{len(grid_configs) - len(runs)} grid points are runs of other points (they differ only "
                     "in settings those runs do not use), counted once")
    for note in notes:
        print(f"sweep: {note}", file=sys.stderr)
    jobs = [(c, kind) for c in runs]
    outcomes: list[RunResult | Exception | None] = [None] * len(jobs)
    failed = 0
    bar = tqdm(total=len(jobs), desc="sweep", unit="run", disable=args.no_progress)
    try:
        for i, outcome in completed(jobs, store, args.processes, args.scheduler, progress=False,
                                    worker_timeout=args.worker_timeout):
            outcomes[i] = outcome
            failed += isinstance(outcome, Exception) or bool(outcome.diverged)
            bar.set_postfix(failed=failed)
            bar.update()
    except SchedulerError as err:
        print(f"sweep: {err}", file=sys.stderr)
        return 2
    except ConfigError as err:  # a run that would fail (data, device, empty workers), found before any trains
        args.command_parser.error(str(err))
    except WriteError as err:
        stored = sum(isinstance(o, RunResult) for o in outcomes)
        print(f"sweep: {err}; {stored} of {len(jobs)} runs are stored: make room and start again", file=sys.stderr)
        return 1
    finally:
        bar.close()
    swept = list(grid)
    rows = [run_row(c, kind, o) for c, o in zip(runs, outcomes, strict=True)]
    curves = [r for row, o in zip(rows, outcomes, strict=True) if isinstance(o, RunResult)
              for r in round_rows(row, swept, o)]
    try:
        write_csv(args.out / "runs.csv", rows)
        write_csv(args.out / "rounds.csv", curves)
    except WriteError as err:
        print(f"sweep: {err}; all {len(jobs)} runs are stored: make room and start again for the tables",
              file=sys.stderr)
        return 1
    print(summary(rows, swept))
    print(f"{len(rows)} runs ({failed} failed or diverged); tables in {args.out}/runs.csv and rounds.csv")
    for row in rows:
        if row["status"] != "ok":
            print(f"  {row['status']}: {', '.join(f'{f}={row[f]}' for f in swept)}: {row['error']}")
    return 1 if failed else 0
