"""A real TensorBoard server over a finished tiny run serves the aggregation curve through its HTTP API."""
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

pytestmark = pytest.mark.slow  # every test here starts a program or trains a run


def free_loopback_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def tensorboard_url(tiny_llp_run):
    port = free_loopback_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", f"--logdir={tiny_llp_run / 'tensorboard'}",
         "--host=127.0.0.1", f"--port={port}", "--load_fast=false", "--reload_interval=1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def wait_for_tag(base, tag, timeout=90):
    """(run name, points) once the server has loaded `tag`; fails after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            tags = get_json(f"{base}/data/plugin/scalars/tags")
        except OSError:
            tags = {}
        for run, run_tags in tags.items():
            if tag in run_tags:
                query = urllib.parse.urlencode({"run": run, "tag": tag})
                return run, get_json(f"{base}/data/plugin/scalars/scalars?{query}")
        time.sleep(1)
    raise AssertionError(f"TensorBoard did not serve {tag} within {timeout} s")


def test_aggregation_norm_is_served_once_per_epoch(tensorboard_url, tiny_llp_run):
    _, points = wait_for_tag(tensorboard_url, "aggregation/norm_mean")
    epochs = json.loads((tiny_llp_run / "metrics.json").read_text())["epochs"]
    assert len(points) == epochs
    steps = [step for _, step, _ in points]
    assert steps == sorted(steps) and len(set(steps)) == epochs  # optimizer steps, one per epoch
    assert all(0.0 <= value <= 1.0 for _, _, value in points)
    _, labelled = wait_for_tag(tensorboard_url, "aggregation/norm_mean_labelled")
    assert len(labelled) == epochs
