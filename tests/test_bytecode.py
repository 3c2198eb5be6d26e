"""A worker started with PYTHONDONTWRITEBYTECODE keeps the bytecode it compiles, in a directory of its own:
the workflow sandbox imports workflows/job.py afresh for every Job it runs, which otherwise compiles it anew."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Run in a fresh interpreter: keep_bytecode changes how that process imports.
PROBE = """
import importlib.util, os, sys
from worker.main import keep_bytecode
keep_bytecode()
# Import the workflow module afresh, as the sandbox does for each workflow it runs.
spec = importlib.util.spec_from_file_location("fresh_target_watch", "workflows/target_watch.py")
spec.loader.exec_module(importlib.util.module_from_spec(spec))
cached = importlib.util.cache_from_source(spec.origin)
print(sys.pycache_prefix, cached, os.path.exists(cached))
"""


def test_worker_keeps_bytecode_in_a_private_directory(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", TMPDIR=str(tmp_path))
    env.pop("PYTHONPYCACHEPREFIX", None)
    run = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    prefix, cached, written = run.stdout.split()
    assert Path(prefix).parent == tmp_path, f"bytecode went to {prefix}, not a private temporary directory"
    assert cached.startswith(prefix), f"bytecode of the workflow module went to {cached}, into the checkout"
    assert written == "True", "importing the workflow module left no bytecode to reuse"
    assert not Path(prefix).exists(), "the private bytecode directory outlived the worker"
