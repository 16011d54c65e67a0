import json
import subprocess
import sys

import pytest

from fedcore.cli import main, parser
from fedcore.config import RunConfig


def test_help_documents_every_option_with_its_default():
    text = parser()._subparsers._group_actions[0].choices["run"].format_help()
    for name in RunConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in text
    assert "in [0, 1]" in text and "(default: 0.0)" in text


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["--bias", "1.5"], "--bias"),
        (["--workers", "1"], "--workers"),
        (["--allocation", "dirichlet", "--alpha", "0"], "--alpha"),
        (["--local-steps", "0"], "--local-steps"),
        (["--model", "vgg"], "--model"),
    ],
)
def test_bad_options_exit_2_naming_the_option_and_write_nothing(tmp_path, capsys, argv, option):
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        main(["run", *argv, "--runs-dir", str(runs), "--out", str(tmp_path / "out.json")])
    assert exit_info.value.code == 2
    assert option in capsys.readouterr().err
    assert not runs.exists() and not (tmp_path / "out.json").exists()


def test_a_small_real_run_writes_its_result(tmp_path):
    out = tmp_path / "result.json"
    cmd = [sys.executable, "-m", "fedcore", "run", "--bias", "1", "--rounds", "2", "--local-steps", "5",
           "--runs-dir", str(tmp_path / "runs"), "--out", str(out), "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert "test accuracy" in done.stdout
    result = json.loads(out.read_text())
    assert result["config"]["bias"] == 1.0 and len(result["rounds"]) == 3
    assert len(list((tmp_path / "runs").glob("*.json"))) == 1
