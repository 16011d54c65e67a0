"""Numbers glued into the book, each carrying what a reader needs to check it: its 95% interval, how many
seeds it rests on (and how many diverged), or that it is a setting or a timing.

A glued ``Number`` shows as its value (``{glue:text}`page.ipynb::key:.1f``` formats it) and also carries a
JSON record (``MIME``) that ``scripts/build_book.py`` collects into ``_build/html/numbers.json``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from myst_nb import glue

from fedcore.stats import Comparison, Estimate

KINDS = ("estimate", "exact", "timing")
MIME = "application/vnd.tenwrongs.number+json"  # the record's type in a notebook's outputs


@dataclass(frozen=True)
class Number:
    """A glued number: an ``estimate`` over seeds (with ``low``/``high`` of its 95% interval, ``seeds`` and
    ``diverged``), an ``exact`` value (a setting, a count, a deterministic result) or a ``timing`` (it
    depends on the machine: comparisons between builds skip it)."""

    value: float
    kind: str = "exact"
    low: float | None = None
    high: float | None = None
    seeds: int | None = None
    diverged: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {self.kind!r}")

    @classmethod
    def of(cls, est: Estimate) -> Number:
        """An estimate's mean with its interval (none for one seed)."""
        bounds = (None, None) if math.isnan(est.half_width) else (est.low, est.high)
        return cls(est.mean, "estimate", *bounds, seeds=est.n, diverged=est.diverged)

    def __repr__(self) -> str:  # text/plain: what {glue:text} shows and formats
        return repr(self.value)

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict[str, object]:
        # A '+json' type: nbformat accepts a JSON object only under such a name, and glue stores the record
        # as 'application/papermill.record/<type>' (plain 'application/json' fails papermill's validation).
        return {MIME: {"tenwrongs_number": asdict(self)}}


def glue_number(key: str, value: float, kind: str = "exact") -> Number:
    """Glue a setting, count or deterministic result (``exact``) or a ``timing`` under ``key``."""
    number = Number(float(value), kind)
    glue(key, number, display=False)
    return number


def glue_estimate(key: str, est: Estimate, digits: int = 1) -> Number:
    """Glue an estimate: ``key`` is its mean (a Number with its interval), ``key_text`` the words the prose
    shows, e.g. '79.9 ± 1.8' or '59.7 ± 25.0, 2 of 5 diverged'."""
    number = Number.of(est)
    glue(key, number, display=False)
    glue(f"{key}_text", est.text(digits), display=False)
    return number


def glue_comparison(key: str, comparison: Comparison, a: str, b: str, digits: int = 1) -> str:
    """Glue a paired comparison of a with b: ``key`` the verdict ('higher', 'lower', 'indistinguishable'),
    ``key_diff`` the mean difference with its interval, ``key_sentence`` the verdict with its numbers."""
    glue(key, comparison.verdict, display=False)
    glue(f"{key}_diff", Number.of(comparison.difference), display=False)
    sentence = comparison.sentence(a, b, digits)
    glue(f"{key}_sentence", sentence, display=False)
    return sentence
