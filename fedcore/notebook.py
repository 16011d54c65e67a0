"""``python -m fedcore notebook IN OUT -p NAME VALUE``: papermill, after checking the parameters.

Plain papermill runs a notebook with a misspelt parameter on its defaults and hands a list given with
``-p`` over as a string; here every parameter is checked by name and type against the notebook's
``parameters`` cell first (as scripts/build_book.py does for the manifest), before any work. The notebook
executes into a temporary folder: OUT (and its folder) is written, atomically, only once it ran, or failed in a
cell (exit 1, OUT shows where); never for a value the notebook refuses (exit 2), nor on Ctrl-C or SIGTERM,
which stop with one line (130, 143), the kernel and papermill's teardown noise silenced.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nbformat
import yaml

from fedcore.config import ConfigError
from fedcore.processes import Terminated
from fedcore.store import check_writable, write_atomic

# The parameters cell's annotations (papermill's inferred_type_name) and the values that fit them.
TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "list": (list,), "dict": (dict,),
}
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]  # no kernel log lines (a teardown mid-cell logs errors)
TEARDOWN_LOGGERS = ("asyncio", "papermill", "traitlets")  # their lines about a stopped execution


def declared(path: Path) -> dict[str, dict]:
    """The parameters a notebook declares (name -> papermill's description: type, default, help); ConfigError
    (param ``input``) for a file that is not a notebook."""
    import papermill

    try:
        return papermill.inspect_notebook(str(path))
    except Exception as err:  # nbformat refuses a file in many ways: NotJSONError, a schema's ValidationError, ...
        why = (str(err).strip().splitlines() or [""])[0][:200]
        raise ConfigError(f"input must be a Jupyter notebook; '{path}' is not one ({type(err).__name__}: {why})",
                          param="input") from err


def _fits(value: object, type_name: str) -> bool:
    if type_name not in TYPES:  # no annotation papermill understands: anything goes
        return True
    if isinstance(value, bool) and type_name != "bool":
        return False
    return isinstance(value, TYPES[type_name])


def _list_hint(name: str, value: object) -> str:
    """How to pass ``value`` (given with -p, so a scalar or a string) as the list it should be."""
    try:
        parsed = yaml.safe_load(value) if isinstance(value, str) else value
    except yaml.YAMLError:
        parsed = value
    example = parsed if isinstance(parsed, list) else [parsed]
    return f" (-p gives a single value: pass lists with -y, e.g. -y '{name}: {json.dumps(example)}')"


def check_parameters(path: Path, parameters: dict[str, object]) -> None:
    """Raise ConfigError naming the first parameter ``path`` does not declare (listing those it does) or
    whose value is not of the declared type."""
    spec = declared(path)
    for name, value in parameters.items():
        if name not in spec:
            raise ConfigError(f"{name} is not a parameter of {path.name}; its parameters are: {', '.join(spec)}",
                              param=name)
        type_name = spec[name]["inferred_type_name"]
        if not _fits(value, type_name):
            hint = _list_hint(name, value) if type_name == "list" else ""
            raise ConfigError(f"{name} must be of type {type_name}; got {value!r}{hint}", param=name)


def _scalar(text: str) -> object:
    """A -p value as papermill reads it: True, False, None, an int, a float, else the string."""
    words = {"True": True, "False": False, "None": None}
    if text in words:
        return words[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``notebook`` subcommand."""
    n = sub.add_parser("notebook", help="execute a notebook with papermill after checking its parameters",
                       description="Execute a notebook with papermill after checking every parameter's name "
                                   "and type against the notebook's cell tagged 'parameters'.")
    n.set_defaults(command_parser=n)
    n.add_argument("input", type=Path, help="the notebook, e.g. notebooks/bias_comparison.ipynb")
    n.add_argument("output", type=Path, help="the executed notebook to write")
    n.add_argument("-p", "--parameters", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="a parameter; numbers, True, False and None are converted, as papermill does")
    n.add_argument("-r", "--parameters-raw", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="a parameter kept as a string")
    n.add_argument("-y", "--parameters-yaml", action="append", default=[], metavar="YAML",
                   help="parameters as YAML, e.g. -y 'biases: [0.0, 0.6]' (the way to pass lists)")


def parameters_from(args: argparse.Namespace) -> dict[str, object]:
    """The parameters given, in papermill's order of precedence (later -y, then -p, then -r win)."""
    parameters: dict[str, object] = {}
    for text in args.parameters_yaml:
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or " ".join(str(err).split())
            raise ConfigError(f"parameters_yaml must be valid YAML like 'biases: [0.5]'; got {text!r} ({problem})",
                              param="parameters_yaml") from err
        if not isinstance(loaded, dict):
            raise ConfigError(f"parameters_yaml must be a YAML mapping like 'biases: [0.5]'; got {text!r}",
                              param="parameters_yaml")
        parameters |= loaded
    parameters |= {name: _scalar(value) for name, value in args.parameters}
    parameters |= dict(args.parameters_raw)
    return parameters


@contextmanager
def _quiet_stop() -> Iterator[None]:
    """Inside (main thread), Ctrl-C and SIGTERM first silence the loggers of papermill's teardown (a task
    exception never retrieved, a kernel that died waiting), then raise KeyboardInterrupt or Terminated."""

    def stop(signum: int, frame: object) -> None:
        for name in TEARDOWN_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _publish(executed: Path, output: Path) -> None:
    """The executed notebook written atomically at ``output`` (its folder created now), naming it as papermill
    would have."""
    book = nbformat.read(executed, as_version=4)
    book.metadata.setdefault("papermill", {})["output_path"] = str(output)
    write_atomic(output, nbformat.writes(book))


def main(args: argparse.Namespace) -> int:
    """Check the input, output and parameters, then execute; a ConfigError in the notebook exits 2 too, with
    nothing written."""
    import papermill

    fail = args.command_parser.error
    try:
        if not (args.input.is_file() and args.input.suffix == ".ipynb"):
            raise ConfigError(f"input must be an existing .ipynb file; got '{args.input}'", param="input")
        check_writable(args.output, "output", folder=False)
        parameters = parameters_from(args)
        check_parameters(args.input, parameters)
    except ConfigError as err:
        fail(str(err))
    with tempfile.TemporaryDirectory(prefix="fedcore-notebook-") as folder:
        executed = Path(folder) / args.output.name
        try:
            with _quiet_stop():
                papermill.execute_notebook(str(args.input), str(executed), parameters=parameters,
                                           extra_arguments=KERNEL_ARGUMENTS)
        except papermill.PapermillExecutionError as err:
            if err.ename == "ConfigError":
                fail(err.evalue)
            _publish(executed, args.output)
            print(f"{args.input} failed in cell {err.exec_count}: {err.ename}: {err.evalue} (see {args.output})",
                  file=sys.stderr)
            return 1
        _publish(executed, args.output)
    return 0
