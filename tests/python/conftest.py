"""The seuil server the Python tests talk to: the real `seuil serve` binary,
on a free port, with a configuration written to a temporary folder. Its data
folder starts empty, so the server generates a small synthetic SNDS itself
(3,000 persons) the way the demo does.

The binary is `target/debug/seuil` (or `$CARGO_TARGET_DIR/debug/seuil`, or
`$SEUIL_BIN`); `make python-tests` builds it first.
"""

import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
PASSWORD = "demo"
ANNOUNCE = re.compile(r"^seuil: serving Flight SQL on (grpc(?:\+tls)?)://([\w.\-]+):(\d+)")


def seuil_binary() -> Path:
    if os.environ.get("SEUIL_BIN"):
        return Path(os.environ["SEUIL_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    binary = target / "debug" / "seuil"
    if not binary.exists():
        pytest.exit(f"{binary} is missing: run `cargo build -p seuil-flight-server` first", returncode=2)
    return binary


@dataclass
class Server:
    host: str
    port: int
    audit_log: Path
    process: subprocess.Popen

    @property
    def uri(self) -> str:
        return f"grpc://{self.host}:{self.port}"


def wait_for_port(host: str, port: int, timeout: float) -> None:
    """Connects until the port answers (the server announced it already; this
    guards against a slow accept loop)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    binary = seuil_binary()
    folder = tmp_path_factory.mktemp("seuil")
    password_hash = subprocess.run(
        [binary, "hash-password"], input=PASSWORD, capture_output=True, text=True, check=True
    ).stdout.strip()
    audit_log = folder / "audit.jsonl"
    config = folder / "seuil.toml"
    users = "".join(
        f'\n[users.{name}]\nrole = "{role}"\npassword_hash = "{password_hash}"\n'
        for name, role in [("alice", "researcher"), ("bob", "public"), ("rita", "regional")]
    )
    config.write_text(
        f"""
[server]
listen = "127.0.0.1:0"
data = "{folder / 'data'}"
audit_log = "{audit_log}"
demo_persons = 3000

[limits]
max_concurrent_queries_per_user = 8
{users}"""
    )
    process = subprocess.Popen(
        [binary, "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=sys.stderr,
        text=True,
        env={**os.environ, "RUST_LOG": "warn"},
    )
    announced: dict = {}
    ready = threading.Event()

    def read_stdout():
        # Keep draining standard output for the server's whole life.
        for line in process.stdout:
            match = ANNOUNCE.match(line)
            if match and not ready.is_set():
                announced["host"], announced["port"] = match.group(2), int(match.group(3))
                ready.set()

    threading.Thread(target=read_stdout, daemon=True).start()
    if not ready.wait(timeout=180):
        process.kill()
        pytest.fail("seuil serve did not announce its address")
    wait_for_port(announced["host"], announced["port"], timeout=30)
    yield Server(announced["host"], announced["port"], audit_log, process)
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
