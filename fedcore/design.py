"""The book's design: how many seeds each experiment of each page runs, fixed in a committed file.

Adaptive rules (``experiments.seeded``: more seeds where the spread is wide; ``tuning.comparison``: ten
where a verdict is close) respond to the bits of the runs, and bits differ between processors, so two
rebuilds could run two designs. The book therefore pins what the rules proposed: ``scripts/build_book.py``
points $FEDCORE_DESIGN at ``book/design.yml`` and $FEDCORE_DESIGN_PAGE at the page being executed, and every
series of that page runs exactly the seeds the file gives it. Where the rule would now propose more, the run
says so in the design log ($FEDCORE_DESIGN_LOG, printed at the end of the build) instead of changing the
design. ``make design`` executes the book with $FEDCORE_DESIGN_RECORD=1: a page the design does not list yet
runs the seeds the rules decide, and they are written into the file; the pages it lists keep their seeds
(delete the file to record every page anew).

Outside the book's build (no $FEDCORE_DESIGN), the rules decide, as a re-executor's new parameters need.
"""

from __future__ import annotations

import os
import reprlib
from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path

import yaml

from fedcore.config import ConfigError
from fedcore.store import write_atomic

DESIGN_ENV = "FEDCORE_DESIGN"
PAGE_ENV = "FEDCORE_DESIGN_PAGE"
RECORD_ENV = "FEDCORE_DESIGN_RECORD"
LOG_ENV = "FEDCORE_DESIGN_LOG"
MAX_SEEDS = 1000  # the most seeds a design may pin for one series (a typo of 10**9 would exhaust memory)


def label(name: Hashable) -> str:
    """A series name as the design file writes it: the string itself, else its repr (e.g. '(1.0, 50)')."""
    return name if isinstance(name, str) else repr(name)


def _path() -> Path | None:
    text = os.environ.get(DESIGN_ENV)
    return Path(text) if text else None


def _page() -> str:
    page = os.environ.get(PAGE_ENV)
    if not page:
        raise ConfigError(f"${PAGE_ENV} must name the page being executed when ${DESIGN_ENV} is set; got "
                          f"{page!r}", param=PAGE_ENV)
    return page


def recording() -> bool:
    """Whether the rules decide and their counts are written to the design ($FEDCORE_DESIGN_RECORD=1)."""
    return os.environ.get(RECORD_ENV, "") not in ("", "0")


def _problem(loaded: object) -> str | None:
    """What keeps a loaded design from being page -> series -> seeds (integers in [1, MAX_SEEDS]), or None."""
    if not isinstance(loaded, dict):
        return f"it holds {reprlib.repr(loaded)}"
    for page, series in loaded.items():
        if not isinstance(series, dict):
            return f"page {reprlib.repr(page)} holds {reprlib.repr(series)}"
        for name, n in series.items():
            if not (isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_SEEDS):
                return f"page {reprlib.repr(page)}, series {reprlib.repr(name)} has {reprlib.repr(n)} seeds"
    return None


def read(path: Path) -> dict[str, dict[str, int]]:
    """The design file: page -> series label -> seeds (an empty design where the file does not exist);
    ConfigError in one line for a file that is unreadable, not YAML, or not of that shape."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError, yaml.YAMLError) as err:  # ValueError: not UTF-8, a huge int
        raise ConfigError(f"{DESIGN_ENV} must be a readable design file; {path}: {' '.join(str(err).split())}",
                          param=DESIGN_ENV) from err
    problem = None if loaded is None else _problem(loaded)
    if problem:
        raise ConfigError(f"{DESIGN_ENV} must map page -> series -> seeds (integers in [1, {MAX_SEEDS}]); {path}: "
                          f"{problem}", param=DESIGN_ENV)
    return loaded or {}


def pinned(names: Iterable[Hashable]) -> dict[Hashable, int] | None:
    """The seeds the design pins for each series of the current page; None where the rules decide: no
    $FEDCORE_DESIGN, or recording a series the design does not list. Not recording, such a series is a
    ConfigError naming it."""
    path = _path()
    if path is None:
        return None
    page = _page()
    series = read(path).get(page, {})
    missing = [label(n) for n in names if label(n) not in series]
    if missing and recording():
        return None
    if missing:
        raise ConfigError(f"{DESIGN_ENV}: {path} gives no seed count for page {page!r}, series "
                          f"{', '.join(missing)}; run `make design` to record the design", param=DESIGN_ENV)
    return {n: series[label(n)] for n in names}


def record(counts: Mapping[Hashable, int]) -> None:
    """Write the counts the rules chose for the current page's series into the design file (recording only)."""
    path = _path()
    if path is None or not recording():
        return
    design = read(path)
    design.setdefault(_page(), {}).update({label(n): int(c) for n, c in counts.items()})
    write_atomic(path, yaml.safe_dump(design, sort_keys=True))


def note(proposed: Mapping[Hashable, int], counts: Mapping[Hashable, int]) -> list[str]:
    """Where the rule now proposes more seeds than the design pins: one line each, appended to the design log
    ($FEDCORE_DESIGN_LOG) and returned. The design is not changed."""
    page = os.environ.get(PAGE_ENV, "?")
    lines = [f"{page}: {label(n)} runs the {counts[n]} seeds the design pins; its rule would now propose "
             f"{proposed[n]}" for n in counts if proposed.get(n, 0) > counts[n]]
    log = os.environ.get(LOG_ENV)
    if lines and log:
        with open(log, "a") as f:
            f.write("".join(line + "\n" for line in lines))
    return lines
