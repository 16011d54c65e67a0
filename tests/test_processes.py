"""Worker processes under faults: Ctrl-C, SIGTERM and SIGKILL leave no process behind, a dead worker is one
line, a script without ``if __name__ == "__main__":`` trains (in one process, with one warning), and the local
pool is kept across run_many calls. Every subprocess is bounded by a timeout."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from fedcore import RunConfig, executors, run_many
from fedcore.engine import run_federated
from fedcore.store import RunStore

TIMEOUT_S = 180
ROOT = Path(__file__).resolve().parent.parent
TINY = RunConfig(rounds=2, local_epochs=None, local_steps=3, device="cpu")
WARNING = "UserWarning: fedcore trains in this process only"
# python -m fedcore with Python's Ctrl-C handler, even where the tests run with SIGINT ignored
FEDCORE = [sys.executable, "-c", "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                                 "runpy.run_module('fedcore', run_name='__main__')"]


def _workers(process: psutil.Process) -> list[psutil.Process]:
    """The spawned processes below ``process`` (pool or worker processes, not the resource tracker)."""
    return [p for p in process.children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]


def _wait_for_workers(pid: int, count: int) -> list[psutil.Process]:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        found = _workers(psutil.Process(pid))
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} worker processes started")


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:  # a zombie has ended
                out.append(p)
        except psutil.NoSuchProcess:
            continue
    return out


def _gone(processes: list[psutil.Process]) -> bool:
    """Whether every process ended within a bound (not a speed check); any left are killed, passing or not."""
    deadline = time.monotonic() + 60
    while _alive(processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _alive(processes)
    for p in left:  # never leave them training for the other tests
        p.kill()
    return not left


@pytest.mark.parametrize(("how", "status", "said"), [("ctrl-c", 130, "interrupted"), ("sigterm", 143, "terminated"),
                                                     ("sigkill", -signal.SIGKILL, None)])
def test_stopping_a_sweep_stops_its_pool_and_leaves_no_process(tmp_path, how, status, said):
    cmd = [*FEDCORE, "sweep", "--grid", "seed=0,1", "--set", "rounds=1000", "--set", "local_steps=2", "--out",
           str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    below: list[psutil.Process] = []
    try:
        _wait_for_workers(process.pid, 2)  # still starting (importing torch): Ctrl-C's worst moment
        below = psutil.Process(process.pid).children(recursive=True)  # the workers and the resource tracker
        if how == "ctrl-c":
            os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group
        else:
            process.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
        process.wait(timeout=TIMEOUT_S)
    finally:
        process.kill()
        gone = _gone(below)
    err = process.stderr.read()  # read after the children ended: they hold the pipe open as long as they live
    assert process.returncode == status
    if said:
        assert err.strip() == said, err  # no traceback from the main process or from the pool's
    assert gone
    assert not list((tmp_path / "runs").glob("*.json")) and not (tmp_path / "out").exists()


def test_children_ignore_ctrl_c_from_their_first_instruction_even_the_first_of_a_process(tmp_path):
    """In a fresh interpreter (no resource tracker yet, whose start unblocks SIGINT), a spawned child finds
    SIGINT ignored and blocked before it imports anything; the parent's handler and mask come back (the handler
    it had: Python's own, or SIG_IGN where the test itself was started in the background)."""
    done = _script(tmp_path, "first_child.py", """\
        import multiprocessing, signal
        from fedcore.processes import children_ignore_ctrl_c

        def report(queue):
            queue.put((signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
                       signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, set())))

        if __name__ == "__main__":
            context = multiprocessing.get_context("spawn")
            queue = context.Queue()
            before = signal.getsignal(signal.SIGINT)
            with children_ignore_ctrl_c():
                child = context.Process(target=report, args=(queue,))
                child.start()
            print(queue.get(timeout=120), signal.getsignal(signal.SIGINT) is before,
                  signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, set()))
            child.join()
        """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(True, True) True False"


def test_ctrl_c_while_a_runs_worker_processes_start_is_one_line(tmp_path):
    cmd = [*FEDCORE, "run", "--processes", "2", "--rounds", "60", "--local-steps", "10", "--runs-dir",
           str(tmp_path / "runs"), "--no-progress"]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    workers: list[psutil.Process] = []
    try:
        workers = _wait_for_workers(process.pid, 1)  # the first is importing torch: Ctrl-C's worst moment
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=TIMEOUT_S)
    finally:
        process.kill()
        gone = _gone(workers)
    err = process.stderr.read()
    assert process.returncode == 130 and err.strip() == "interrupted", err  # no child's traceback
    assert gone


def test_a_worker_process_that_dies_is_one_line(tmp_path):
    cmd = [*FEDCORE, "run", "--processes", "2", "--rounds", "1000", "--local-steps", "2", "--runs-dir",
           str(tmp_path / "runs")]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers: list[psutil.Process] = []
    try:
        seen = ""
        while "round/s" not in seen:  # the progress bar: rounds are training in the worker processes
            char = process.stderr.read(1)
            assert char, f"ended before training: {seen}"
            seen += char
        workers = _workers(psutil.Process(process.pid))
        workers[0].kill()
        _, err = process.communicate(timeout=TIMEOUT_S)
    finally:
        process.kill()
        gone = _gone(workers)
    assert process.returncode == 1
    assert "Traceback" not in err, err
    assert err.splitlines()[-1] == "python -m fedcore run: a fedcore worker process died (killed, or out of memory)"
    assert gone and not list((tmp_path / "runs").glob("*.json"))


def _script(tmp_path, name: str, code: str) -> subprocess.CompletedProcess:
    path = tmp_path / name
    path.write_text(textwrap.dedent(code))
    env = {**os.environ, "FEDCORE_RUNS_DIR": str(tmp_path / f"runs-{path.stem}"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}  # this checkout's fedcore
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=TIMEOUT_S, check=False)


def test_the_main_guard_is_found_where_the_call_comes_from(tmp_path):
    done = _script(tmp_path, "probe.py", """\
        from fedcore.processes import unguarded_call

        def where():
            return unguarded_call()

        print("top", where())
        if __name__ == "__main__":
            print("guarded", where(), [where() for _ in range(1)])
        else:
            print("else", where())
        if "__main__" == __name__:
            print("reversed", where())
        """)
    assert done.returncode == 0, done.stderr
    path = str(tmp_path / "probe.py")
    assert done.stdout.splitlines() == [f"top ('{path}', 6)", "guarded None [None]", "reversed None"]
    inline = subprocess.run([sys.executable, "-c", "from fedcore.processes import unguarded_call; "
                             "print(unguarded_call())"], capture_output=True, text=True, timeout=TIMEOUT_S, check=True)
    assert inline.stdout == "None\n"  # nothing for spawned children to run again


def _history(result: dict) -> list:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in result["rounds"]]


@pytest.mark.parametrize("call", ["run(CONFIG)", "run_many([(CONFIG, 'federated'), (CONFIG.replace(seed=1), "
                                                 "'federated')])[0]"])
def test_a_script_without_the_main_guard_trains_in_one_process_with_one_warning(tmp_path, call):
    head = "import json\nfrom fedcore import RunConfig, run, run_many\n" \
           "CONFIG = RunConfig(bias=1.0, rounds=2, local_epochs=None, local_steps=5)\n"
    unguarded = _script(tmp_path, "quick.py", head + f"result = {call}\nprint(json.dumps(result.to_dict()))\n")
    assert unguarded.returncode == 0, unguarded.stderr
    assert "Traceback" not in unguarded.stderr and unguarded.stderr.count(WARNING) == 1
    assert f"quick.py:4: {WARNING}" in unguarded.stderr and "to use all cores" in unguarded.stderr
    guarded = _script(tmp_path, "guarded.py", head + f"if __name__ == '__main__':\n    result = {call}\n"
                                                      "    print(json.dumps(result.to_dict()))\n")
    assert guarded.returncode == 0 and WARNING not in guarded.stderr, guarded.stderr
    assert _history(json.loads(unguarded.stdout)) == _history(json.loads(guarded.stdout))  # the same bits


def test_the_local_pool_is_kept_across_calls_and_gives_the_same_bits(tmp_path, mnist):
    first = run_many([(TINY.replace(seed=s), "federated") for s in (0, 1)], RunStore(tmp_path), processes=2,
                     progress=False)
    pool = executors._LOCAL_POOLS[2]
    pids = set(pool._processes)
    second = run_many([(TINY.replace(seed=s), "federated") for s in (2, 3)], RunStore(tmp_path), processes=2,
                      progress=False)
    assert executors._LOCAL_POOLS[2] is pool and set(pool._processes) == pids and len(pids) == 2
    for result in (first[1], second[1]):
        sequential = run_federated(TINY.replace(seed=result.config["seed"], processes=1), progress=False, data=mnist)
        assert _history(result.to_dict()) == _history(sequential.to_dict())
    psutil.Process(min(pids)).kill()  # an idle process of the kept pool dies (out of memory, say)
    assert _gone([psutil.Process(pid) for pid in pids if pid == min(pids)])
    third = run_many([(TINY.replace(seed=4), "federated")] * 2, RunStore(tmp_path / "after"), processes=2,
                     progress=False)
    assert executors._LOCAL_POOLS[2] is not pool  # a fresh pool
    assert _history(third[0].to_dict()) == _history(third[1].to_dict())
