"""Build the report: execute every notebook of book/manifest.yml with papermill, then the Jupyter Book.

An execution is skipped when its output already holds the same fingerprint (notebook, parameters and
fedcore's sources); a ``summary`` entry re-runs whenever any other does. A failing notebook stops the
build, naming the notebook and the cell. Each executed notebook then gets its manifest ``title`` as its
page title, and the figures it glued are written beside the book as
``book/notebooks/figures/<output>/<key>.png`` for the chapters' numbered ``{figure}`` directives. Every
number the notebooks glued (fedcore.report: value, 95% interval, seeds, kind) goes, with the page and
notebook that made it, into ``_build/html/numbers.json``; a number glued bare stops the build.
The build ends by comparing them with the committed reference ``book/numbers.json``
(``scripts/compare_numbers.py``) and fails where a verdict flipped, a number moved, changed, appeared or went
missing; ``make numbers-reference`` makes a build's numbers the reference, in the commit that moved them.

Every page runs the seeds the committed design ``book/design.yml`` pins for it (fedcore.design); where a rule
would now ask for more, the design log printed at the end says so. With $FEDCORE_DESIGN_RECORD=1 (``make
design``) the pages the design does not list are executed with the rules deciding, and the design records
them; the pages it lists keep their seeds.

Runs before pages: the build first trains every run the committed plan ``book/plan.json`` (fedcore.plan) gives
the pages it will execute, all at once, longest first, across the cores (or on the Dask cluster
$FEDCORE_SCHEDULER names); then it executes the notebooks, as many at a time as there are cores (one at a time
while the design records), each finding its runs stored. Every run a page asks for is noted; a page that asked
for other runs than its plan fails the build (``make plan`` makes this build's requests, in
``_build/plan.json``, the plan). The ledger printed at the end (and written to ``_build/ledger.json``, which the
summary page shows) gives per page the seconds its runs trained for, their GFLOP and the seconds it rendered in,
and for the build the share of the cores' measured peak it reached.

The remedies' hyperparameter search is not run here: ``make design`` runs it and commits its record,
``book/search.json`` (fedcore.search_record), which the tuning and remedies pages read. Before any notebook,
the build checks the record against the code and retrains a sample of its runs, stopping in one line where one
differs by a bit.
Seconds per notebook and in total are printed at the end.

    python scripts/build_book.py            # notebooks, then jupyter-book build with warnings as errors
    python scripts/build_book.py --force    # re-execute every notebook
    FEDCORE_THREADS=2 python scripts/build_book.py   # every run with 2 torch threads (other keys, other bits)
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import nbformat
import papermill
import torch
import yaml

from fedcore import design, experiments, notebook, plan, report, request_log, search_record
from fedcore.config import ConfigError, RunConfig
from fedcore.store import RunStore, write_atomic
from fedcore.version import engine_fingerprint

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "book" / "manifest.yml"
OUTPUT_DIR = ROOT / "book" / "notebooks"
FIGURES_DIR = OUTPUT_DIR / "figures"
DESIGN = ROOT / "book" / "design.yml"
SEARCH_RECORD = ROOT / "book" / "search.json"
REFERENCE = ROOT / "book" / "numbers.json"
DESIGN_LOG = ROOT / "_build" / "design.log"
NUMBERS = ROOT / "_build" / "html" / "numbers.json"
PLAN = ROOT / "book" / "plan.json"
BUILD_PLAN = ROOT / "_build" / "plan.json"
REQUESTS = ROOT / "_build" / "requests.jsonl"
LEDGER = ROOT / "_build" / "ledger.json"
LEDGER_ENV = "FEDCORE_LEDGER"  # where the summary page finds the ledger


class PageFailed(Exception):
    """A notebook failed: the one line that names it and its cell."""


def load_manifest(path: Path = MANIFEST) -> list[dict]:
    """The manifest's entries: notebook (name in notebooks/), output (page name), parameters, summary."""
    return yaml.safe_load(path.read_text())


def code_hash() -> str:
    """What every page reads besides its notebook: fedcore's sources and the search record."""
    digest = hashlib.sha256()
    for source in [*sorted((ROOT / "fedcore").glob("*.py")), SEARCH_RECORD]:
        if source.exists():
            digest.update(source.read_bytes())
    return digest.hexdigest()


def fingerprint(entry: dict, code: str, seeds: object, others: list[str] = ()) -> str:
    """What decides a page: its notebook, parameters, fedcore's sources and the seeds the design gives it."""
    notebook = (ROOT / "notebooks" / f"{entry['notebook']}.ipynb").read_bytes()
    payload = json.dumps([entry["parameters"], code, seeds, list(others)], sort_keys=True).encode()
    return hashlib.sha256(notebook + payload).hexdigest()


def fingerprints(entries: list[dict], code: str, seeds: dict[str, dict[str, int]]) -> dict[str, str]:
    """Each entry's fingerprint by output; a ``summary`` entry's covers every other one's."""
    prints = {e["output"]: fingerprint(e, code, seeds.get(e["output"])) for e in entries if not e.get("summary")}
    return {e["output"]: fingerprint(e, code, seeds.get(e["output"]), sorted(prints.values()))
            if e.get("summary") else prints[e["output"]] for e in entries}


def stored_fingerprint(output: Path) -> str | None:
    try:
        return nbformat.read(output, as_version=4).metadata.get("tenwrongs", {}).get("fingerprint")
    except FileNotFoundError:
        return None


def check_parameters(entries: list[dict]) -> None:
    """Stop before any work when an entry gives a parameter its notebook does not declare, or a value
    of another type than the one declared (fedcore.notebook.check_parameters)."""
    for entry in entries:
        try:
            notebook.check_parameters(ROOT / "notebooks" / f"{entry['notebook']}.ipynb", entry["parameters"])
        except ConfigError as err:
            sys.exit(f"FAILED: {MANIFEST.relative_to(ROOT)}, entry {entry['output']}: {err}")


def execute(entry: dict, print_: str, output: Path, env: dict[str, str]) -> float:
    """Run one notebook into ``output`` (written whole or not at all), with ``env`` added to the environment its
    kernel inherits; its seconds. PageFailed names the notebook and the cell that failed."""
    source = ROOT / "notebooks" / f"{entry['notebook']}.ipynb"
    partial = output.with_suffix(".partial.ipynb")
    os.environ.update(env)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(source, partial, parameters=entry["parameters"], kernel_name="python3",
                                   cwd=str(ROOT), progress_bar=False)
        book = nbformat.read(partial, as_version=4)
        book.metadata["tenwrongs"] = {"fingerprint": print_, "parameters": entry["parameters"]}
        nbformat.write(book, partial)
        partial.replace(output)
    except papermill.PapermillExecutionError as err:
        raise PageFailed(f"notebook {source.relative_to(ROOT)} -> {output.name}, cell {err.exec_count}: "
                         f"{err.ename}: {err.evalue}") from None
    finally:
        partial.unlink(missing_ok=True)
    return time.perf_counter() - start


def execute_all(entries: list[dict], prints: dict[str, str], workers: int) -> dict[str, float]:
    """Execute the notebooks of ``entries``, ``workers`` at a time (each page's name and the request log in its
    kernel's environment), printing each as it ends; seconds by page. Exits in one line on the first failure."""
    def env(entry: dict) -> dict[str, str]:
        return {design.PAGE_ENV: entry["output"], request_log.LOG_ENV: str(REQUESTS)}

    def page(entry: dict) -> tuple[dict, str, Path, dict[str, str]]:
        return entry, prints[entry["output"]], OUTPUT_DIR / f"{entry['output']}.ipynb", env(entry)

    seconds = {}
    try:
        if workers <= 1:
            for entry in entries:
                print(f"executing {entry['notebook']} -> {entry['output']} {entry['parameters']}", flush=True)
                seconds[entry["output"]] = execute(*page(entry))
            return seconds
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(execute, *page(entry)): entry for entry in entries}
            for future in as_completed(futures):
                entry = futures[future]
                seconds[entry["output"]] = future.result()
                print(f"executed {entry['notebook']} -> {entry['output']} {entry['parameters']} in "
                      f"{seconds[entry['output']]:.1f} s", flush=True)
    except PageFailed as err:
        sys.exit(f"FAILED: {err}")
    return seconds


def glued_figures(book: nbformat.NotebookNode) -> dict[str, bytes]:
    """The PNG images a notebook glued (``myst_nb.glue(key, fig)``), by glue key."""
    found = {}
    for cell in book.cells:
        for output in cell.get("outputs", []):
            record = output.get("metadata", {}).get("scrapbook", {})
            png = output.get("data", {}).get(record.get("mime_prefix", "") + "image/png")
            if record.get("name") and png:
                found[record["name"]] = base64.b64decode(png)
    return found


def retitled(book: nbformat.NotebookNode, title: str) -> bool:
    """Make ``title`` the heading of the notebook's first cell (its page title); whether anything changed."""
    first = book.cells[0] if book.cells else None
    if first is None or first.cell_type != "markdown" or not first.source.startswith("# "):
        raise ValueError("the notebook's first cell must be a markdown cell starting with a '# ' heading")
    source = "\n".join([f"# {title}", *first.source.splitlines()[1:]])
    changed, first.source = source != first.source, source
    return changed


def replace_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all, leaving an identical file untouched."""
    if not (path.exists() and path.read_bytes() == data):
        write_atomic(path, data)


def publish_page(entry: dict, output: Path, figures: Path = FIGURES_DIR) -> list[str]:
    """Title the executed notebook ``output`` as its manifest entry says and write its glued figures into
    ``figures/<output name>/<key>.png``; the keys written."""
    book = nbformat.read(output, as_version=4)
    if retitled(book, entry["title"]):
        replace_bytes(output, nbformat.writes(book).encode())
    images = glued_figures(book)
    for key, png in images.items():
        replace_bytes(figures / entry["output"] / f"{key}.png", png)
    return sorted(images)


def collect_numbers(entries: list[dict], pages: Path = OUTPUT_DIR) -> list[dict]:
    """Every number glued by the executed notebooks: page, notebook, its parameters, key and the record
    (value, kind, low, high, seeds, diverged). Exits naming the page and key of a number glued bare."""
    numbers = []
    for entry in entries:
        book = nbformat.read(pages / f"{entry['output']}.ipynb", as_version=4)
        try:
            glued = report.glued_numbers(book)
        except ValueError as err:
            sys.exit(f"FAILED: page {entry['output']} (notebooks/{entry['notebook']}.ipynb): {err}")
        numbers += [{"page": entry["output"], "notebook": entry["notebook"], "parameters": entry["parameters"],
                     "key": key, **record} for key, record in sorted(glued.items())]
    return numbers


def build_info(standard: RunConfig) -> dict[str, object]:
    """What made this build: commit, engine fingerprint, torch threads of the runs (``standard``'s), machine."""
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    return {"commit": commit.stdout.strip() or None, "engine_fingerprint": engine_fingerprint(),
            "threads": standard.threads, "device": standard.device, "machine": platform.machine(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


SAMPLED = "search record, sampled"  # the ledger's row for the record's sampled runs


def verify_search_record(store: RunStore, path: Path = SEARCH_RECORD) -> tuple[str, list[plan.Job], set[str]]:
    """Check the search record against the code and retrain a sample of its runs, bit for bit
    (fedcore.search_record); exits in one line naming what differs. The line to print in the build times, the
    sampled runs and the keys of those trained here (the ledger counts them)."""
    start = time.perf_counter()
    try:
        picked = search_record.draw(path)
        jobs = [(p.config, "federated") for p in picked]
        missing = {config.key(kind) for config, kind in jobs if store.get(config, kind) is None}
        search_record.verify(picked, store=store)
    except (ConfigError, search_record.RecordMismatch) as err:
        sys.exit(f"FAILED: {err}")
    print(f"search record {path.relative_to(ROOT)}: {len(picked)} sampled runs equal the record bit for bit:",
          flush=True)
    for p in picked:
        print(f"  {p}")
    return f"{time.perf_counter() - start:.1f} s ({len(picked)} runs)", jobs, missing


def compare_with_reference(reference: Path = REFERENCE, numbers: Path = NUMBERS) -> bool:
    """Print the comparison of this build's numbers with the reference; whether they agree."""
    compare_numbers = ROOT / "scripts" / "compare_numbers.py"
    print(f"\ncomparing with the reference {reference.relative_to(ROOT)}:", flush=True)
    return subprocess.run([sys.executable, str(compare_numbers), str(reference), str(numbers)],
                          check=False).returncode == 0


def read_plan(path: Path = PLAN) -> dict[str, list]:
    """The committed plan, or an empty one (every page then trains its own runs, and the build fails at the end
    until `make plan` records one); exits in one line where the file is damaged."""
    if not path.exists():
        return {}
    try:
        return plan.read(path)
    except ConfigError as err:
        print(f"FAILED: {err}", file=sys.stderr)
        sys.exit(2)


def rendered(entries: list[dict], render: dict[str, float]) -> dict[str, float]:
    """Each page's seconds executing: this build's, else those its stored notebook records."""
    out = {}
    for entry in entries:
        if entry["output"] in render:
            out[entry["output"]] = render[entry["output"]]
            continue
        try:
            book = nbformat.read(OUTPUT_DIR / f"{entry['output']}.ipynb", as_version=4)
            out[entry["output"]] = float(book.metadata.get("papermill", {}).get("duration") or 0.0)
        except FileNotFoundError:
            out[entry["output"]] = 0.0
    return out


def print_ledger(book: dict, total: float) -> None:
    """The ledger per page, the build's share of the cores' peak end to end, and the projection onto clusters."""
    print("\nledger (runs counted on the first page that asks for them; run seconds: each run's own, one core)")
    print(f"  {'page':<28} {'runs':>5} {'trained':>8} {'run s':>8} {'GFLOP':>9} {'render s':>9}")
    for page, row in book["pages"].items():
        print(f"  {page:<28} {row['runs']:>5} {row['trained']:>8} {row['run_seconds']:>8.0f} {row['gflop']:>9.0f} "
              f"{row['render_seconds']:>9.1f}")
    peak = book["peak_gflops_per_core"] * book["cores"]
    print(f"  trained in this build: {book['trained_gflop']:.0f} GFLOP in {total:.0f} s end to end, "
          f"{100 * book['trained_gflop'] / (total * peak):.0f}% of the {book['cores']} cores' measured peak "
          f"({peak:.1f} GFLOP/s)")
    for row in plan.projection(book):
        print(f"  projected on {row['workers']:>3} single-core Dask workers: {row['wall_seconds'] / 60:.1f} min "
              f"(critical path {row['critical_path_seconds'] / 60:.1f} min)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="re-execute every notebook")
    parser.add_argument("--no-book", action="store_true", help="execute the notebooks only")
    args = parser.parse_args()
    try:
        standard = experiments.standard()  # a bad FEDCORE_THREADS or book/design.yml stops here, in one line
        seeds = design.read(DESIGN)
    except ConfigError as err:
        print(f"FAILED: {err}", file=sys.stderr)
        sys.exit(2)
    recording = design.recording()
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    DESIGN_LOG.parent.mkdir(parents=True, exist_ok=True)
    DESIGN_LOG.unlink(missing_ok=True)
    os.environ |= {design.DESIGN_ENV: str(DESIGN), design.LOG_ENV: str(DESIGN_LOG),
                   search_record.RECORD_ENV: str(SEARCH_RECORD)}
    entries = load_manifest()
    check_parameters(entries)
    planned = read_plan()
    peak = plan.peak_gflops()  # measured before anything else runs
    start = time.perf_counter()
    store = RunStore()
    sampled_line, sampled, sampled_trained = verify_search_record(store)
    times: list[tuple[str, str]] = [(SAMPLED, sampled_line)]
    prints = fingerprints(entries, code_hash(), seeds)
    due = [e for e in entries if args.force or (recording and e["output"] not in seeds)
           or stored_fingerprint(OUTPUT_DIR / f"{e['output']}.ipynb") != prints[e["output"]]]
    pages = [e for e in due if not e.get("summary")]
    train_start = time.perf_counter()
    # While the design records, a page it does not list yet runs what its rules decide, which no plan knows.
    trained = plan.train(plan.unique(planned, [e["output"] for e in pages if not recording or e["output"] in seeds]),
                         store)
    times.append((f"planned runs ({len(trained)} trained)", f"{time.perf_counter() - train_start:.1f} s"))
    REQUESTS.unlink(missing_ok=True)
    render_start = time.perf_counter()
    render = execute_all(pages, prints, 1 if recording else os.cpu_count() or 1)
    times += [(e["output"], f"{render[e['output']]:.1f} s" if e in due else "unchanged") for e in entries
              if not e.get("summary")]
    times.append(("pages, at once", f"{time.perf_counter() - render_start:.1f} s"))
    asked = request_log.read(REQUESTS, store.root)
    differences = plan.differences(planned, asked, [e["output"] for e in pages])
    plan.write(PLAN if recording else BUILD_PLAN, planned | asked)
    order = [SAMPLED, *(e["output"] for e in entries if not e.get("summary"))]
    book = plan.ledger({SAMPLED: sampled} | planned | asked, order, store, trained | sampled_trained,
                       rendered(entries, render), time.perf_counter() - start, peak, os.cpu_count() or 1)
    write_atomic(LEDGER, json.dumps(book, indent=1) + "\n")
    summaries = [e for e in due if e.get("summary")]
    os.environ[LEDGER_ENV] = str(LEDGER)
    render |= execute_all(summaries, prints, 1)
    times += [(e["output"], f"{render[e['output']]:.1f} s") for e in summaries]
    for entry in entries:
        publish_page(entry, OUTPUT_DIR / f"{entry['output']}.ipynb")
    numbers = collect_numbers(entries)
    notebooks = time.perf_counter() - start
    failed = []
    if not args.no_book:
        book_start = time.perf_counter()
        shutil.rmtree(ROOT / "_build" / "html", ignore_errors=True)  # no stale pages from earlier builds
        jupyter_book = str(Path(sys.executable).parent / "jupyter-book")
        build = [jupyter_book, "build", str(ROOT), "-W", "-n", "--keep-going", "--all"]
        if subprocess.run(build, cwd=ROOT, check=False).returncode != 0:
            failed.append("jupyter-book build (warnings are errors; see above)")
        payload = {"build": build_info(standard), "numbers": numbers}
        write_atomic(NUMBERS, json.dumps(payload, indent=1) + "\n")
        print(f"{len(numbers)} glued numbers in {NUMBERS.relative_to(ROOT)}")
        times.append(("jupyter-book build", f"{time.perf_counter() - book_start:.1f} s"))
        if recording:
            print(f"design recorded in {DESIGN.relative_to(ROOT)}; `make numbers-reference` makes these numbers "
                  "the reference")
        elif not REFERENCE.exists():
            failed.append(f"no reference {REFERENCE.relative_to(ROOT)} to compare with: `make numbers-reference`")
        elif not compare_with_reference():
            failed.append(f"the numbers differ from the reference {REFERENCE.relative_to(ROOT)} (see above); where "
                          "the change is meant, `make numbers-reference` and commit the reference with it")
    if recording:
        print(f"plan recorded in {PLAN.relative_to(ROOT)}")
    elif differences:
        failed.append(f"pages asked for other runs than the plan {PLAN.relative_to(ROOT)} says (see above); where "
                      f"meant, `make plan` makes this build's requests the plan")
        print("\nplan: pages that asked for other runs than planned")
        for line in differences:
            print(f"  {line}")
    notes = DESIGN_LOG.read_text().splitlines() if DESIGN_LOG.exists() else []
    print(f"\ndesign log: {len(notes)} series whose rule would now ask for more seeds than the design pins")
    for line in notes:
        print(f"  {line}")
    print("\nbuild times")
    for name, seconds in times:
        print(f"  {name:<28} {seconds}")
    print(f"  {'notebooks':<28} {notebooks:.1f} s")
    print(f"  {'total':<28} {time.perf_counter() - start:.1f} s")
    print_ledger(book, time.perf_counter() - start)
    if failed:
        sys.exit("FAILED: " + "; ".join(failed))


if __name__ == "__main__":
    main()
