"""Compare the glued numbers of two builds of the book (two machines, thread counts or orders of execution).

    python scripts/compare_numbers.py first/_build/html/numbers.json second/_build/html/numbers.json

Each build's ``numbers.json`` (written by scripts/build_book.py) holds every number the prose and tables
show, with its kind. An ``estimate`` (a mean over seeds) has moved when either build's value lies outside
the other's 95% interval, and its verdict has flipped when its interval lies above 0, below 0 or across 0
in one build and otherwise in the other (for a paired difference: "higher", "lower" or "cannot be told
apart"); one resting on one seed has no interval and is listed with its difference. An
``exact`` number (a setting, a count) must be equal. A ``timing`` depends on the machine and is skipped.
Numbers found in one build only are listed. Exit status: 0 when nothing moved, flipped or changed, else 1.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

Record = dict[str, object]


def load(path: Path) -> tuple[dict[str, object], dict[tuple[str, str], Record]]:
    """A numbers.json file's build description and its numbers by (page, key)."""
    try:
        payload = json.loads(path.read_text())
        return payload["build"], {(n["page"], n["key"]): n for n in payload["numbers"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        sys.exit(f"compare_numbers: {path} is not a numbers.json written by scripts/build_book.py: {err}")


def inside(value: float, record: Record) -> bool:
    return record["low"] <= value <= record["high"]


def side(record: Record) -> str:
    """Where an estimate's interval lies: 'above 0', 'below 0' or 'across 0'."""
    return "above 0" if record["low"] > 0 else "below 0" if record["high"] < 0 else "across 0"


def distance(a: Record, b: Record) -> float:
    """How far apart the two values are, in half-widths of the wider interval."""
    half = max((r["high"] - r["low"]) / 2 for r in (a, b))
    return abs(a["value"] - b["value"]) / half if half > 0 else math.inf


def compare(first: dict[tuple[str, str], Record], second: dict[tuple[str, str], Record]) -> dict[str, list]:
    """The numbers of two builds sorted into: moved (estimates outside the other's interval, farthest
    first), within, unbounded (estimates without an interval: one seed), changed (exact numbers that
    differ), equal, skipped (timings) and only_first / only_second; flipped lists the estimates (moved or
    within) whose interval lies on another side of 0."""
    out: dict[str, list] = {k: [] for k in ("moved", "within", "flipped", "unbounded", "changed", "equal", "skipped")}
    out["only_first"] = sorted(set(first) - set(second))
    out["only_second"] = sorted(set(second) - set(first))
    for name in sorted(set(first) & set(second)):
        a, b = first[name], second[name]
        if "timing" in (a["kind"], b["kind"]):
            out["skipped"].append(name)
        elif a["kind"] == b["kind"] == "estimate" and None not in (a["low"], b["low"]):
            moved = not (inside(b["value"], a) and inside(a["value"], b))
            out["moved" if moved else "within"].append((name, a, b))
            if side(a) != side(b):
                out["flipped"].append((name, a, b))
        elif a["kind"] == b["kind"] == "estimate":
            out["unbounded"].append((name, a, b))
        else:
            same = a["kind"] == b["kind"] and math.isclose(a["value"], b["value"], rel_tol=1e-9, abs_tol=0.0)
            out["equal" if same else "changed"].append((name, a, b))
    out["moved"].sort(key=lambda item: -distance(item[1], item[2]))
    return out


def describe(record: Record) -> str:
    if record["kind"] != "estimate" or record["low"] is None:
        return f"{record['value']:.4g}" + (" (one seed)" if record["kind"] == "estimate" else "")
    diverged = f", {record['diverged']} diverged" if record["diverged"] else ""
    return f"{record['value']:.4g} [{record['low']:.4g}, {record['high']:.4g}] ({record['seeds']} seeds{diverged})"


def report(result: dict[str, list], builds: tuple[dict, dict]) -> str:
    """The comparison as text: the two builds, the counts, then every number that moved or changed."""
    fields = ("commit", "threads", "cpu_capability", "machine", "built")
    lines = [f"build {i}: " + ", ".join(f"{k} {b.get(k)}" for k in fields) for i, b in enumerate(builds, 1)]
    lines.append(", ".join(f"{len(v)} {k.replace('_', ' ')}" for k, v in result.items()))
    for title, key in (("moved outside an interval", "moved"), ("verdicts that flipped", "flipped"),
                       ("exact numbers that changed", "changed"), ("one seed, no interval", "unbounded")):
        if result[key]:
            lines.append(f"\n{title}:")
            lines += [f"  {page}::{name}: {describe(a)} -> {describe(b)} (difference {b['value'] - a['value']:+.4g})"
                      + (f", {side(a)} -> {side(b)}" if key == "flipped" else "") for (page, name), a, b in result[key]]
    for title, key in (("only in the first build", "only_first"), ("only in the second build", "only_second")):
        if result[key]:
            lines.append(f"\n{title}: " + ", ".join(f"{page}::{name}" for page, name in result[key]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="numbers.json of the first build")
    parser.add_argument("second", type=Path, help="numbers.json of the second build")
    args = parser.parse_args(argv)
    (build_a, first), (build_b, second) = load(args.first), load(args.second)
    result = compare(first, second)
    print(report(result, (build_a, build_b)))
    return 1 if any(result[k] for k in ("moved", "flipped", "changed", "only_first", "only_second")) else 0


if __name__ == "__main__":
    sys.exit(main())
