"""Compare the glued numbers of two builds of the book: a rebuild against the committed reference.

    python scripts/compare_numbers.py book/numbers.json _build/html/numbers.json

Each build's ``numbers.json`` (written by scripts/build_book.py) holds every number the prose and tables show,
with its kind (fedcore.report.Number), and is judged by it:

- ``estimate`` and ``difference`` (means over seeds): *moved* when the two values lie further apart than the
  wider of the two 95% half-widths plus a floor, the ``resolution`` the first build (the reference) shows the
  number with (0.1 point for an accuracy shown to one decimal): a move the page cannot show, or one inside
  either build's interval, is float noise; the second build's own resolution cannot hide a move. A number
  whose seed count differs between the builds is a *design change* (the design pins the seeds: see
  fedcore.design), not compared further.
- ``difference`` (a paired difference): its verdict has *flipped* when its interval lies above 0, below 0 or
  across 0 in one build and otherwise in the other ("higher", "lower", "cannot be told apart"). An estimate
  that is not a difference (an accuracy) has no verdict.
- ``exact`` (a setting, a count): *changed* unless equal; ``approximate`` (a measurement of float rounding,
  such as a largest difference): *changed* when further apart than the first build's tolerance.
- ``timing``: skipped. Numbers found in one build only are listed.

Exit status: 0 when the builds agree; 1 when a number moved, flipped, changed, changed design or is found in
one build only; 2 when a file cannot be read as a numbers.json (missing, empty, malformed or nested too deep,
a record without a kind, with a value that is not a finite number (NaN, an infinity, 10**400), with ``low``
but no ``high``, an estimate without its seeds, or a page and key recorded twice), in one line naming the
record.
"""

from __future__ import annotations

import argparse
import json
import math
import reprlib
import sys
from pathlib import Path

Record = dict[str, object]
KINDS = ("estimate", "difference", "exact", "approximate", "timing")
FAILING = ("moved", "flipped", "changed", "design", "only_first", "only_second")


class Unreadable(ValueError):
    """A file that is not a numbers.json written by scripts/build_book.py."""


def _number(value: object) -> bool:
    """Whether ``value`` is a finite number a float can hold (not a bool, NaN, an infinity or 10**400)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float's range
        return False


def _count(value: object, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _check(record: object) -> Record:
    """The record, or Unreadable saying what is wrong with it (naming it as page::key)."""
    if not isinstance(record, dict) or not isinstance(record.get("page"), str) or not isinstance(record.get("key"),
                                                                                                 str):
        raise Unreadable(f"a record without page and key: {reprlib.repr(record)}")
    name = f"{record['page']}::{record['key']}"
    if record.get("kind") not in KINDS:
        raise Unreadable(f"{name}: kind must be one of {', '.join(KINDS)}; got {reprlib.repr(record.get('kind'))}")
    if not _number(record.get("value")):
        raise Unreadable(f"{name}: value must be a finite number; got {reprlib.repr(record.get('value'))}")
    for field in ("low", "high", "resolution", "tolerance"):
        if record.get(field) is not None and not _number(record[field]):
            raise Unreadable(f"{name}: {field} must be a finite number or null; got {reprlib.repr(record[field])}")
    if (record.get("low") is None) != (record.get("high") is None):
        raise Unreadable(f"{name}: low and high must both be numbers or both null; got {record.get('low')} and "
                         f"{record.get('high')}")
    if record.get("low") is not None and record["low"] > record["high"]:
        raise Unreadable(f"{name}: low must not exceed high; got {record['low']} > {record['high']}")
    for field in ("resolution", "tolerance"):
        if record.get(field) is not None and record[field] < 0:
            raise Unreadable(f"{name}: {field} must be >= 0; got {record[field]}")
    if record["kind"] in ("estimate", "difference") and not _count(record.get("seeds"), 1):
        raise Unreadable(f"{name}: {record['kind']} needs its seeds, an integer >= 1; "
                         f"got {reprlib.repr(record.get('seeds'))}")
    if record.get("diverged") is not None and not _count(record["diverged"], 0):
        raise Unreadable(f"{name}: diverged must be an integer >= 0 or null; got {reprlib.repr(record['diverged'])}")
    if record["kind"] == "approximate" and record.get("tolerance") is None:
        raise Unreadable(f"{name}: an approximate number needs its tolerance")
    return record


def load(path: Path) -> tuple[dict[str, object], dict[tuple[str, str], Record]]:
    """A numbers.json file's build description and its numbers by (page, key); Unreadable if it is not one
    (a record malformed, or recorded twice)."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:  # RecursionError: nested too deep
        raise Unreadable(f"{path}: {err}") from err
    if not isinstance(payload, dict) or not isinstance(payload.get("build"), dict) \
            or not isinstance(payload.get("numbers"), list) or not payload["numbers"]:
        raise Unreadable(f"{path}: not an object with a 'build' description and a non-empty 'numbers' list")
    numbers: dict[tuple[str, str], Record] = {}
    try:
        for record in map(_check, payload["numbers"]):
            name = (record["page"], record["key"])
            if name in numbers:
                raise Unreadable(f"{record['page']}::{record['key']}: recorded twice (page and key name one number)")
            numbers[name] = record
    except Unreadable as err:
        raise Unreadable(f"{path}: {err}") from err
    return payload["build"], numbers


def half_width(record: Record) -> float:
    """Half the 95% interval (0 without one: one seed)."""
    return 0.0 if record.get("low") is None else (record["high"] - record["low"]) / 2


def side(record: Record) -> str:
    """Where a difference's interval lies: 'above 0', 'below 0' or 'across 0' (one seed decides nothing)."""
    if record.get("low") is None:
        return "across 0"
    return "above 0" if record["low"] > 0 else "below 0" if record["high"] < 0 else "across 0"


def allowed(a: Record, b: Record) -> float:
    """How far the second build's value of an estimate may lie from the first's (the reference): the wider
    half-width plus the first build's resolution (the second's own cannot widen what counts as a move)."""
    return max(half_width(a), half_width(b)) + (a.get("resolution") or 0.0)


def compare(first: dict[tuple[str, str], Record], second: dict[tuple[str, str], Record]) -> dict[str, list]:
    """The numbers of two builds sorted into: moved (farthest first, in multiples of what is allowed), within,
    flipped (differences whose verdict changed, moved or not), design (seed counts differ), changed (exact or
    approximate numbers that differ), equal, skipped (timings) and only_first / only_second."""
    out: dict[str, list] = {k: [] for k in ("moved", "within", "flipped", "design", "changed", "equal", "skipped")}
    out["only_first"] = sorted(set(first) - set(second))
    out["only_second"] = sorted(set(second) - set(first))
    for name in sorted(set(first) & set(second)):
        a, b = first[name], second[name]
        kinds = {a["kind"], b["kind"]}
        if "timing" in kinds:
            out["skipped"].append(name)
        elif len(kinds) > 1:
            out["changed"].append((name, a, b))
        elif kinds <= {"estimate", "difference"}:
            if a.get("seeds") != b.get("seeds"):
                out["design"].append((name, a, b))
                continue
            out["moved" if abs(a["value"] - b["value"]) > allowed(a, b) else "within"].append((name, a, b))
            if a["kind"] == "difference" and side(a) != side(b):
                out["flipped"].append((name, a, b))
        else:
            same = math.isclose(a["value"], b["value"], rel_tol=1e-9, abs_tol=a.get("tolerance") or 0.0)
            out["equal" if same else "changed"].append((name, a, b))
    out["moved"].sort(key=lambda item: -abs(item[1]["value"] - item[2]["value"]) / max(allowed(*item[1:]), 1e-12))
    return out


def describe(record: Record) -> str:
    if record["kind"] not in ("estimate", "difference"):
        extra = f" (± {record['tolerance']:.3g})" if record["kind"] == "approximate" else ""
        return f"{record['value']:.4g}{extra}"
    diverged = f", {record['diverged']} diverged" if record.get("diverged") else ""
    if record.get("low") is None:
        return f"{record['value']:.4g} (one seed)"
    return f"{record['value']:.4g} [{record['low']:.4g}, {record['high']:.4g}] ({record['seeds']} seeds{diverged})"


def report(result: dict[str, list], builds: tuple[dict, dict]) -> str:
    """The comparison as text: the two builds, the counts, then every number that failed it."""
    fields = ("commit", "threads", "cpu_capability", "machine", "built")
    lines = [f"build {i}: " + ", ".join(f"{k} {b.get(k)}" for k in fields) for i, b in enumerate(builds, 1)]
    lines.append(", ".join(f"{len(v)} {k.replace('_', ' ')}" for k, v in result.items()))
    for title, key in (("moved by more than the wider interval and the resolution", "moved"),
                       ("verdicts that flipped", "flipped"), ("run on other seeds (design changed)", "design"),
                       ("exact or approximate numbers that changed", "changed")):
        if result[key]:
            lines.append(f"\n{title}:")
            lines += [f"  {page}::{name}: {describe(a)} -> {describe(b)} (difference {b['value'] - a['value']:+.4g})"
                      + (f", {side(a)} -> {side(b)}" if key == "flipped" else "")
                      for (page, name), a, b in result[key]]
    for title, key in (("only in the first build", "only_first"), ("only in the second build", "only_second")):
        if result[key]:
            lines.append(f"\n{title}: " + ", ".join(f"{page}::{name}" for page, name in result[key]))
    return "\n".join(lines)


def failed(result: dict[str, list]) -> bool:
    """Whether the builds disagree: anything moved, flipped, changed, changed design or is in one build only."""
    return any(result[k] for k in FAILING)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="numbers.json of the first build (e.g. the reference)")
    parser.add_argument("second", type=Path, help="numbers.json of the second build")
    args = parser.parse_args(argv)
    try:
        (build_a, first), (build_b, second) = load(args.first), load(args.second)
    except Unreadable as err:
        print(f"compare_numbers: {err}", file=sys.stderr)
        return 2
    result = compare(first, second)
    print(report(result, (build_a, build_b)))
    return 1 if failed(result) else 0


if __name__ == "__main__":
    sys.exit(main())
