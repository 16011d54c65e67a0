"""The runs each notebook asks for while the book builds: one JSON line per request in $FEDCORE_REQUEST_LOG.

scripts/build_book.py sets the variable (and the page's name, $FEDCORE_DESIGN_PAGE) for each notebook it executes;
the runner notes every (config, kind) asked of its store; the build compares them with its plan (fedcore.plan).
Outside a build nothing is written."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from pathlib import Path

from fedcore import design
from fedcore.config import RunConfig

LOG_ENV = "FEDCORE_REQUEST_LOG"

Job = tuple[RunConfig, str]


def fields(config: RunConfig) -> dict[str, object]:
    """The fields that make a run what it is (``data_dir``, where the data are read from, left out)."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(RunConfig) if f.compare}


def note(jobs: Iterable[Job], store: Path) -> None:
    """Append the (config, kind) runs a notebook asks of the store at ``store``, with the page's name; nothing
    where $FEDCORE_REQUEST_LOG or $FEDCORE_DESIGN_PAGE is unset."""
    path, page = os.environ.get(LOG_ENV), os.environ.get(design.PAGE_ENV)
    if not path or not page:
        return
    root = str(Path(store).resolve())
    lines = "".join(json.dumps({"page": page, "store": root, "kind": kind, "config": fields(config)},
                               sort_keys=True) + "\n" for config, kind in jobs)
    with open(path, "a", encoding="utf-8") as log:  # one append: pages executing at once share the log
        log.write(lines)


def read(log: Path, store: Path) -> dict[str, list[Job]]:
    """The runs each page asked of the store at ``store``, in order, once each (runs asked of another store,
    such as the rerun page's fresh one, are not the build's)."""
    if not log.exists():
        return {}
    root = str(Path(store).resolve())
    pages: dict[str, dict[str, Job]] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry["store"] == root:
            config, kind = RunConfig(**entry["config"]), entry["kind"]
            pages.setdefault(entry["page"], {}).setdefault(config.key(kind), (config, kind))
    return {page: list(jobs.values()) for page, jobs in pages.items()}
