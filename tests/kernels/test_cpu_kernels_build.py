"""The compiled kernels' cache survives a start that was killed while building them."""

import os
import subprocess
import sys

import pytest

from engine import cpu_kernels

pytestmark = pytest.mark.skipif(cpu_kernels.load() is None, reason="no C++ toolchain here")


def test_a_lock_left_by_a_killed_build_does_not_hang_the_next_start():
    # torch's build lock is a plain file; a build killed midway leaves it behind
    (cpu_kernels._build_dir() / "lock").touch()
    code = "from engine import cpu_kernels; print(cpu_kernels.load() is not None)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "DYNO_CPU_KERNELS": "1"})
    assert done.stdout.strip() == "True", done.stderr[-2000:]
    assert not (cpu_kernels._build_dir() / "lock").exists()
