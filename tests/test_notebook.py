"""Notebook parameters are checked by name and type before any work, by the command and the builder."""

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedcore import experiments, notebook
from fedcore.cli import main, parser
from fedcore.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent
COMPARISON = ROOT / "notebooks" / "bias_comparison.ipynb"
STRATEGIES = ROOT / "notebooks" / "strategies.ipynb"
FEDCORE = [sys.executable, "-c", "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                                 "runpy.run_module('fedcore', run_name='__main__')"]  # Ctrl-C as in a terminal


def _builder():
    spec = importlib.util.spec_from_file_location("build_book", ROOT / "scripts" / "build_book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("path", "argv", "expected"),
    [
        (COMPARISON, ["-p", "bais", "0.3"],
         "bais is not a parameter of bias_comparison.ipynb; its parameters are: biases, centralized, post_table"),
        (COMPARISON, ["-p", "biases", "[1.5]"], "biases must be of type list; got '[1.5]'"),
        (COMPARISON, ["-p", "biases", "0.5"], "biases must be of type list; got 0.5"),
        (STRATEGIES, ["-p", "methods", "fedavg"], "methods must be of type list; got 'fedavg'"),
        (COMPARISON, ["-p", "seeds", "2.5"], "seeds must be of type int; got 2.5"),
        (COMPARISON, ["-p", "centralized", "yes"], "centralized must be of type bool; got 'yes'"),
    ],
)
def test_bad_parameters_exit_2_before_any_work(tmp_path, capsys, path, argv, expected):
    out = tmp_path / "out.ipynb"
    with pytest.raises(SystemExit) as exit_info:
        main(["notebook", str(path), str(out), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m fedcore notebook: error: ") and expected in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("value", "form"),
    [("[1.5]", "-y 'biases: [1.5]'"), (0.5, "-y 'biases: [0.5]'"), ("uniform", """-y 'biases: ["uniform"]'""")],
)
def test_a_list_given_with_p_is_shown_in_its_y_form(value, form):
    with pytest.raises(ConfigError, match="biases must be of type list") as err:
        notebook.check_parameters(COMPARISON, {"biases": value})
    assert form in str(err.value) and err.value.param == "biases"


def test_well_typed_parameters_pass():
    notebook.check_parameters(COMPARISON, {"biases": [0.0, "uniform"], "seeds": 2, "centralized": True})
    notebook.check_parameters(STRATEGIES, {"scenario": "heavy", "methods": ["fedavg", "scaffold"]})
    notebook.check_parameters(ROOT / "notebooks" / "local_work.ipynb", {"lr_decay": 1})  # an int is a float


def test_p_values_are_read_as_papermill_reads_them():
    args = parser().parse_args(
        ["notebook", "a.ipynb", "b.ipynb", "-y", "biases: [0.5]", "-p", "seeds", "2", "-p", "centralized", "True",
         "-p", "bias", "0.6", "-r", "dataset", "7"])
    assert notebook.parameters_from(args) == {"biases": [0.5], "seeds": 2, "centralized": True, "bias": 0.6,
                                              "dataset": "7"}


def test_the_builder_stops_on_an_undeclared_parameter_before_any_work():
    builder = _builder()
    entry = {"notebook": "bias_comparison", "output": "comparison-typo", "parameters": {"bais": 0.3}}
    with pytest.raises(SystemExit) as exit_info:
        builder.check_parameters([*builder.load_manifest(), entry])
    assert "entry comparison-typo: bais is not a parameter of bias_comparison.ipynb" in str(exit_info.value.code)
    builder.check_parameters(builder.load_manifest())  # the book's own entries pass


def test_a_notebook_that_refuses_a_value_exits_2(tmp_path):
    """A value of the right type outside its range stops in the notebook's first cell: exit 2, one line."""
    cmd = [sys.executable, "-m", "fedcore", "notebook", str(ROOT / "notebooks" / "allocation.ipynb"),
           str(tmp_path / "out.ipynb"), "-p", "bias", "1.5"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("bias must be in [0, 1]; got 1.5 (see --help)")


@pytest.mark.parametrize("value", ["[1.5]", 0.5, [], ("uniform",)])
def test_plain_papermill_gets_the_y_form_from_the_notebooks_bias_check(value):
    """Where the notebook is run by plain papermill, its own check of a bias list shows the -y form."""
    with pytest.raises(ConfigError) as err:
        experiments.check_biases("biases", value)
    assert "biases must be a non-empty list, given with -y (e.g. -y 'biases: [0.5]')" in str(err.value)


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (b"not json", "NotJSONError"),
        (b"{}", "ValidationError"),
        (b"[]", "is not one"),
        (b"\xff\xfe", "UnicodeDecodeError"),
    ],
)
def test_an_input_that_is_not_a_notebook_is_one_line(tmp_path, capsys, content, named):
    path = tmp_path / "in.ipynb"
    path.write_bytes(content)
    with pytest.raises(SystemExit) as exit_info:
        main(["notebook", str(path), str(tmp_path / "new" / "out.ipynb"), "-p", "bias", "0.5"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"python -m fedcore notebook: error: input must be a Jupyter notebook; '{path}' is not one")
    assert named in err and err.count("\n") == 1 and not (tmp_path / "new").exists()


def test_bad_yaml_parameters_and_a_misspelt_one_leave_no_folder_behind(tmp_path, capsys):
    out = tmp_path / "missing" / "deeper" / "o.ipynb"
    for argv, expected in ((["-y", "bias: [0.1"], "parameters_yaml must be valid YAML like 'biases: [0.5]'; got "
                                                   "'bias: [0.1' (expected ',' or ']'"),
                           (["-p", "biass", "0.5"], "biass is not a parameter of allocation.ipynb")):
        with pytest.raises(SystemExit) as exit_info:
            main(["notebook", str(ROOT / "notebooks" / "allocation.ipynb"), str(out), *argv])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and expected in err and err.count("\n") == 1
    assert not (tmp_path / "missing").exists()


def _tiny(tmp_path: Path) -> Path:
    """A notebook with parameters ``seconds``, refused below 0 (ConfigError), a failing cell at 7, else slept,
    and ``marker``, a file created as the sleep starts."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    parameters = new_code_cell("seconds = 0\nmarker = ''")
    parameters.metadata["tags"] = ["parameters"]
    body = new_code_cell("import time\nfrom fedcore.config import ConfigError\nif seconds < 0:\n"
                         "    raise ConfigError(f'seconds must be >= 0; got {seconds}')\n"
                         "assert seconds != 7, 'seven'\nif marker:\n    open(marker, 'w').close()\n"
                         "time.sleep(seconds)")
    book = new_notebook(cells=[parameters, body])
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "tiny.ipynb"
    nbformat.write(book, path)
    return path


def test_a_value_the_notebook_refuses_writes_nothing_and_creates_no_folder(tmp_path, capsys):
    out = tmp_path / "new" / "deeper" / "t.ipynb"
    with pytest.raises(SystemExit) as exit_info:
        main(["notebook", str(_tiny(tmp_path)), str(out), "-p", "seconds", "-1"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.strip().splitlines()[-1].endswith("seconds must be >= 0; got -1 (see "
                                                                               "--help)")
    assert not (tmp_path / "new").exists()


def test_the_output_is_written_once_executed_or_failed_in_a_cell(tmp_path, capsys):
    import nbformat

    out = tmp_path / "new" / "t.ipynb"
    assert main(["notebook", str(_tiny(tmp_path)), str(out), "-p", "seconds", "7"]) == 1
    assert "failed in cell 3: AssertionError: seven (see " in capsys.readouterr().err
    assert nbformat.read(out, as_version=4).metadata.papermill.output_path == str(out)
    assert main(["notebook", str(_tiny(tmp_path)), str(out)]) == 0
    assert [p.name for p in out.parent.iterdir()] == ["t.ipynb"]  # no temporary file left


@pytest.mark.parametrize(("how", "status", "said"), [(signal.SIGINT, 130, "interrupted"),
                                                     (signal.SIGTERM, 143, "terminated")])
def test_stopping_a_notebook_is_one_line_and_writes_nothing(tmp_path, how, status, said):
    out, log = tmp_path / "new" / "t.ipynb", tmp_path / "stderr.txt"
    marker = tmp_path / "sleeping"
    cmd = [*FEDCORE, "notebook", str(_tiny(tmp_path)), str(out), "-p", "seconds", "60", "-p", "marker", str(marker)]
    with log.open("w") as stderr:
        process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.2)  # until the kernel sleeps in the notebook's last cell
        if how == signal.SIGINT:
            os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group
        else:
            process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == status
    finally:
        if process.poll() is None:
            process.kill()
    err = log.read_text()
    lines = [line for line in err.splitlines() if not line.startswith("Executing:") and line.strip()]
    assert lines == [said] and not (tmp_path / "new").exists()
