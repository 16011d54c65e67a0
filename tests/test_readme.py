"""The README's Python snippets run as a reader would run them: each saved as a script and run with python."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SNIPPETS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)


def test_the_readme_has_python_snippets():
    assert len(SNIPPETS) >= 2


@pytest.mark.parametrize("code", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_a_readme_snippet_runs_as_a_script(tmp_path, code):
    script = tmp_path / "snippet.py"
    script.write_text(code)
    env = {**os.environ, "FEDCORE_RUNS_DIR": str(tmp_path / "runs")}  # not the repository's run store
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and done.stdout.strip(), done.stderr
    assert list((tmp_path / "runs").glob("*.json"))  # trained and stored
