"""The example a statistician starts from runs against the server as is."""

import os
import subprocess
import sys

from conftest import EXAMPLES


def test_notebook_quickstart_runs(server):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "notebook_quickstart.py")],
        env={**os.environ, "SEUIL_URI": server.uri, "SEUIL_USER": "alice", "SEUIL_PASSWORD": "demo"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "## Persons by département" in out
    assert "cells released (policy snds" in out
    assert "refused by rule 1 (aggregates only)" in out
    assert "## Persons by decade of birth (differential privacy)" in out
    assert "epsilon left" in out
