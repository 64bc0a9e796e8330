"""corpus prepare on a real Ray cluster: a one-node one started for the module (`ray start --head`, 2 CPUs),
connected to by address like any existing cluster; its output equals the local executor's (shards document
by document, stage.json's figures). Bad clusters are one line, exit 2, nothing left, in seconds."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cluster_runs as cr
import pytest

from langadapt.corpus.prepare import scratch_dir
from langadapt.runs import work_folder

pytest.importorskip("ray", reason="needs the ray wheel (pip install 'langadapt[ray]')")
pytestmark = [
    pytest.mark.skipif(not cr.SHARED_HU.exists(), reason="needs ../shared/corpora/hu"),
    # datatrove 0.10 passes placement groups the way Ray 2.60 deprecates (its code, not ours)
    pytest.mark.filterwarnings("ignore:placement_group:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def ray_address():
    """A one-node cluster as a user starts one (`ray start --head`), 2 CPUs, on a free port.

    ``--block`` keeps it tied to the process started here, so terminating that process stops exactly
    this cluster (`ray stop` would stop every Ray process on the machine); ``--temp-dir`` keeps its
    session files and its address record out of /tmp/ray (a short path: Ray's sockets live there).
    """
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", f"--port={port}",
           "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"]  # fmt: skip
    head = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    watchdog = threading.Timer(180, head.kill)  # a start that hangs ends the read below
    watchdog.start()
    try:
        lines = []
        for line in head.stdout:  # up when it says so (it then blocks, printing nothing more)
            lines.append(line)
            if "Ray runtime started" in line:
                break
        else:
            pytest.fail("ray start failed: " + "".join(lines[-20:]))
        watchdog.cancel()
        threading.Thread(target=head.stdout.read, daemon=True).start()  # keep its pipe drained
        yield f"127.0.0.1:{port}"
    finally:
        watchdog.cancel()
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_cluster_writes_what_the_local_executor_writes(tmp_path: Path, ray_address: str) -> None:
    inputs = cr.hu_slice(tmp_path / "in")
    local = cr.prepare(cr.config(inputs), tmp_path / "local")
    steps = {s["step"]: s for s in local["steps"]}
    assert all(steps[s]["docs_out"] < steps[s]["docs_in"] for s in ("exact_dedup", "minhash_dedup", "quality"))
    started = time.perf_counter()
    record = cr.prepare(cr.config(inputs, executor="ray", ray_address=ray_address), tmp_path / "ray")
    seconds = time.perf_counter() - started
    assert record["config"]["executor"] == "ray" and (tmp_path / "ray" / "DONE").exists()
    cr.assert_same_output(tmp_path / "local", tmp_path / "ray")
    assert not scratch_dir(tmp_path / "ray").exists() and not work_folder(tmp_path / "ray").exists()
    print(f"local {local['seconds']:.1f} s, ray {seconds:.1f} s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", ["refused", "too-small"])
def test_a_bad_cluster_is_one_line_exit_2_and_nothing_left(case: str, tmp_path: Path, capsys, request) -> None:
    inputs = cr.hu_slice(tmp_path / "in")
    out = tmp_path / "out"
    args = ["corpus", "prepare", "--input", *inputs, "--lang", "hu", "--out", str(out), "--executor", "ray"]
    if case == "refused":  # nothing listens there: ray.init alone would retry for minutes
        address = f"127.0.0.1:{_free_port()}"
        args += ["--ray-address", address]
        want = f"the Ray cluster at {address} does not answer (Connection refused)"
    else:  # a task that no node can hold would wait for its placement group forever
        address = request.getfixturevalue("ray_address")
        args += ["--ray-address", address, "--cpus-per-task", "3"]
        want = f"no node of the Ray cluster at {address} has 3 CPU and 6 GiB for one task (nodes: 2 CPU"
    from langadapt.cli import main

    started = time.perf_counter()
    with pytest.raises(SystemExit) as exc:
        main(args)
    seconds = time.perf_counter() - started
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and want in err, err
    assert not out.exists() and not work_folder(out).exists() and not scratch_dir(out).exists()
    assert seconds < 15, seconds  # fails fast
