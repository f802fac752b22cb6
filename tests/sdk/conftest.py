"""Starts aigw-mock and aigw as real processes on ephemeral loopback ports for the SDK tests."""

import os
import re
import subprocess
import tempfile
import threading
import time

import pytest

BIN_DIR = os.environ.get("AIGW_BIN_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "target", "debug"))
KEY = "sk-sdk-test-key-0001"


def _spawn(args, pattern, stream_name, env=None):
    """Starts a process and waits (bounded) for a line matching `pattern` on stdout or stderr."""
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
    )
    found = {}
    ready = threading.Event()

    def pump(stream):
        for line in stream:
            match = re.search(pattern, line)
            if match and not ready.is_set():
                found["addr"] = match.group(1)
                ready.set()

    stream = proc.stdout if stream_name == "stdout" else proc.stderr
    other = proc.stderr if stream_name == "stdout" else proc.stdout
    threading.Thread(target=pump, args=(stream,), daemon=True).start()
    threading.Thread(target=lambda: [None for _ in other], daemon=True).start()
    if not ready.wait(30):
        proc.kill()
        raise RuntimeError(f"{args[0]} did not start")
    return proc, found["addr"]


@pytest.fixture(scope="session")
def mock_upstream():
    """The aigw-mock behind the gateway: its address, for tests that switch its behaviour."""
    mock, mock_addr = _spawn(
        [os.path.join(BIN_DIR, "aigw-mock"), "--listen", "127.0.0.1:0", "--chunks", "6"],
        r"listening on http://(\S+)",
        "stdout",
    )
    try:
        yield mock_addr
    finally:
        mock.terminate()
        try:
            mock.wait(10)
        except subprocess.TimeoutExpired:
            mock.kill()


@pytest.fixture(scope="session")
def gateway(mock_upstream):
    mock_addr = mock_upstream
    tmp = tempfile.TemporaryDirectory()
    # A fresh data dir: a node restarted on an old one keeps that cluster's settings (and the
    # address of a mock that is gone) instead of applying this [bootstrap].
    config = f"""
[node]
id = 1
api_listen = "127.0.0.1:0"
data_dir = "{os.path.join(tmp.name, 'data')}"

[[bootstrap.upstreams]]
id = "mock"
kind = "openai"
base_url = "http://{mock_addr}/v1"

[[bootstrap.models]]
name = "chat-default"
targets = [{{ upstream = "mock", model = "mock-model" }}]

[[bootstrap.models]]
name = "text-embedding-3-small"
targets = [{{ upstream = "mock", model = "mock-embedding" }}]

[[bootstrap.models]]
name = "gpt-image-1"
targets = [{{ upstream = "mock", model = "mock-image" }}]

[[bootstrap.models]]
name = "whisper-1"
targets = [{{ upstream = "mock", model = "mock-whisper" }}]

[[bootstrap.models]]
name = "sora-2"
targets = [{{ upstream = "mock", model = "mock-video" }}]

[[bootstrap.keys]]
name = "sdk"
secret = "${{SDK_KEY}}"
"""
    with tmp:
        path = os.path.join(tmp.name, "aigw.toml")
        with open(path, "w") as f:
            f.write(config)
        node, addr = _spawn(
            [os.path.join(BIN_DIR, "aigw"), "serve", "--config", path],
            r"api_addr=(\S+)",
            "stderr",
            env={"SDK_KEY": KEY},
        )
        try:
            yield f"http://{addr}/v1"
        finally:
            node.terminate()
            try:
                node.wait(10)
            except subprocess.TimeoutExpired:
                node.kill()
