"""Numbers glued into the book, each carrying what a reader needs to check it: its 95% interval, how many
seeds it rests on (and how many diverged), or that it is a setting or a timing.

A glued ``Number`` shows as its value (``{glue:text}`page.ipynb::key:.1f``` formats it) and also carries a
JSON record (mime type ``MIME``) that ``scripts/build_book.py`` collects into ``_build/html/numbers.json``.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from myst_nb import glue
from nbformat import NotebookNode

from fedcore.stats import Comparison, Estimate

KINDS = ("estimate", "difference", "exact", "approximate", "timing")
MIME = "application/vnd.tenwrongs.number+json"  # a Number's record beside its text/plain
# text/plain of a number glued bare (myst_nb.glue(key, 0.5)): '0.5', '12', 'np.float64(0.5)'
BARE = re.compile(r"(np\.\w+\()?[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?\)?|nan|inf", re.IGNORECASE)


@dataclass(frozen=True)
class Number:
    """A glued number and what a comparison of two builds needs to judge it:

    - ``estimate``: a mean over seeds, with ``low``/``high`` of its 95% interval, ``seeds``, ``diverged`` and
      ``resolution`` (the last digit the book shows: a smaller move is not one);
    - ``difference``: the same for a paired difference, whose side of 0 is a verdict;
    - ``exact``: a setting, a count or a deterministic result, equal in every build;
    - ``approximate``: a measurement of float rounding (a largest difference, a page size), equal to within
      ``tolerance``;
    - ``timing``: it depends on the machine, and comparisons skip it.
    """

    value: float
    kind: str = "exact"
    low: float | None = None
    high: float | None = None
    seeds: int | None = None
    diverged: int = 0
    resolution: float | None = None
    tolerance: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {self.kind!r}")
        if (self.kind == "approximate") != (self.tolerance is not None):
            raise ValueError(f"tolerance must be given for an approximate number, and only then; got {self.tolerance}")

    @classmethod
    def of(cls, est: Estimate, digits: int = 1, kind: str = "estimate") -> Number:
        """An estimate's mean with its interval (none for one seed), shown to ``digits`` decimals."""
        bounds = (None, None) if math.isnan(est.half_width) else (est.low, est.high)
        return cls(est.mean, kind, *bounds, seeds=est.n, diverged=est.diverged, resolution=10.0**-digits)

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict[str, object]:
        """text/plain is what {glue:text} shows and formats; MIME carries the record."""
        return {"text/plain": repr(self.value), MIME: asdict(self)}


def glue_number(key: str, value: float, kind: str = "exact", tolerance: float | None = None) -> None:
    """Glue a setting, count or deterministic result (``exact``), a measurement of float rounding equal to within
    ``tolerance`` in any build (``approximate``) or a ``timing`` under ``key``. (Nothing is returned: a Number
    left as a cell's last value would be displayed, and the book has no renderer for it.)"""
    glue(key, Number(float(value), kind, tolerance=tolerance), display=False)


def glue_estimate(key: str, est: Estimate, digits: int = 1) -> None:
    """Glue an estimate: ``key`` is its mean (a Number with its interval), ``key_text`` the words the prose
    shows, e.g. '79.9 ± 1.8' or '59.7 ± 25.0, 2 of 5 diverged'."""
    glue(key, Number.of(est, digits), display=False)
    glue(f"{key}_text", est.text(digits), display=False)


def glue_comparison(key: str, comparison: Comparison, a: str, b: str, digits: int = 1) -> str:
    """Glue a paired comparison of a with b: ``key`` the verdict ('higher', 'lower', 'indistinguishable'),
    ``key_diff`` the mean difference with its interval (a ``difference``), ``key_sentence`` the verdict with its
    numbers."""
    glue(key, comparison.verdict, display=False)
    glue(f"{key}_diff", Number.of(comparison.difference, digits, kind="difference"), display=False)
    sentence = comparison.sentence(a, b, digits)
    glue(f"{key}_sentence", sentence, display=False)
    return sentence


def glued_numbers(book: NotebookNode) -> dict[str, dict[str, object]]:
    """Every Number an executed notebook glued: its record (value, kind, low, high, seeds, diverged) by glue
    key. A number glued bare, without this module (so without its interval or kind), is a ValueError."""
    found = {}
    for cell in book.cells:
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            if not name:
                continue
            prefix = output["metadata"]["scrapbook"].get("mime_prefix", "")
            record = output.get("data", {}).get(prefix + MIME)
            if isinstance(record, dict):
                found[name] = record
            elif BARE.fullmatch(str(output.get("data", {}).get(prefix + "text/plain", "")).strip()):
                raise ValueError(f"glue key {name!r} is a bare number: glue it with fedcore.report "
                                 "(glue_estimate, glue_number or glue_comparison) so that it carries its interval")
    return found
