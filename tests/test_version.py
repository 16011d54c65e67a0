"""The run key follows the engine's source, torch, the salt and the backend: no stale result is served."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fedcore import RunConfig, version
from fedcore.results import package_versions

PRINT_KEY = "from fedcore import RunConfig; print(RunConfig().key())"
PRINT_FINGERPRINT = "from fedcore.version import engine_fingerprint; print(engine_fingerprint())"


def _python(code: str, root: Path) -> str:
    """Run ``code`` in a fresh interpreter importing the fedcore of ``root``."""
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env={"PYTHONPATH": str(root), "PATH": ""},
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_editing_an_engine_file_changes_the_fingerprint_and_the_key(tmp_path):
    copy = tmp_path / "fedcore"
    shutil.copytree(version.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = _python(f"{PRINT_KEY}; {PRINT_FINGERPRINT}", tmp_path).split()
    assert before == [RunConfig().key(), version.engine_fingerprint()]  # the copy is the same engine
    training = copy / "training.py"
    training.write_text(training.read_text() + "\nLR_SCALE = 10  # an edit that no one versioned\n")
    after = _python(f"{PRINT_KEY}; {PRINT_FINGERPRINT}", tmp_path).split()
    assert after[0] != before[0] and after[1] != before[1]
    assert version.engine_fingerprint(copy) == after[1]


@pytest.mark.parametrize("name", version.RESULT_SOURCES)
def test_every_listed_source_exists(name):
    assert (version.PACKAGE_DIR / name).is_file()


def test_the_salt_and_torch_enter_the_fingerprint(monkeypatch):
    plain = version.engine_fingerprint.__wrapped__()
    monkeypatch.setattr(version, "ENGINE_VERSION", version.ENGINE_VERSION + "-bumped")
    assert version.engine_fingerprint.__wrapped__() != plain
    monkeypatch.undo()
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    assert version.engine_fingerprint.__wrapped__() != plain


def test_results_record_the_fingerprint():
    versions = package_versions()
    assert versions["engine_fingerprint"] == version.engine_fingerprint()
    assert len(versions["engine_fingerprint"]) == 12 and int(versions["engine_fingerprint"], 16) >= 0


@pytest.fixture
def fresh_backend():
    version.backend.cache_clear()
    yield
    version.backend.cache_clear()


def test_two_thread_counts_give_two_keys_on_cpu(monkeypatch, fresh_backend):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert RunConfig().threads == 1
    assert RunConfig(threads=1).key() != RunConfig(threads=2).key()
    assert RunConfig(threads=2, device="cpu").key() == RunConfig(threads=2, device="auto").key()


def test_on_cuda_the_device_kind_decides_not_the_threads(monkeypatch, fresh_backend):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "Some GPU")
    assert RunConfig(threads=1).key() == RunConfig(threads=4, device="cuda").key()
    assert RunConfig(threads=1).key() != RunConfig(threads=1, device="cpu").key()
    version.backend.cache_clear()
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "Another GPU")
    assert version.backend("auto", 1) == "cuda:Another GPU"
