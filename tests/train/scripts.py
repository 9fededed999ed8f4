"""Run a script of ``tests/train`` in a fresh Python (JAX device flags need a fresh process).

The scripts simulate devices and hosts on CPU, so they run with ``JAX_PLATFORMS=cpu`` (on a GPU
or TPU machine JAX would otherwise pick the accelerator and ignore ``jax_num_cpu_devices``), and
with the test suite's XLA setting (LLVM optimisation level 0, see ``tests/conftest.py``) in
place of any XLA_FLAGS of the caller.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def script_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
    env["JAX_PLATFORMS"] = "cpu"
    return env


def start(name: str, *args, where: Path = HERE) -> subprocess.Popen:
    """Start script ``where/name`` with ``args``."""
    return subprocess.Popen(
        [sys.executable, str(where / name), *map(str, args)],
        cwd=HERE,
        env=script_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run(name: str, *args, timeout: float = 300, where: Path = HERE) -> tuple[int, str]:
    """(exit status, combined output); a negative status is the signal that ended it."""
    process = start(name, *args, where=where)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        raise AssertionError(f"{name} timed out after {timeout}s:\n{output[-4000:]}") from None
    return process.returncode, output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
