"""Run a script of ``tests/train`` in a fresh Python (JAX device flags need a fresh process).

The scripts simulate devices and hosts on CPU, so they run with ``JAX_PLATFORMS=cpu`` (on a GPU
or TPU machine JAX would otherwise pick the accelerator and ignore ``jax_num_cpu_devices``).
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
    env.pop("XLA_FLAGS", None)
    env["JAX_PLATFORMS"] = "cpu"
    return env


def start(name: str, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(HERE / name), *map(str, args)],
        cwd=HERE,
        env=script_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def run(name: str, *args, timeout: float = 300) -> tuple[int, str]:
    """(exit status, combined output); a negative status is the signal that ended it."""
    process = start(name, *args)
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
