"""dyno's C++ CPU kernels (engine/csrc), compiled on first use and cached per CPU model.

The build takes ~30-60 s once on 2 cores (g++ and ninja); later processes load the cached
library in well under a second. Without a compiler, or with DYNO_CPU_KERNELS=0, callers get
None and keep to the torch path.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import logging
import os
import platform
from collections.abc import Iterator
from pathlib import Path

from engine.model_source import cache_root

logger = logging.getLogger(__name__)

_SOURCES = tuple(Path(__file__).parent / "csrc" / name
                 for name in ("bindings.cpp", "paged_decode.cpp", "kv_write.cpp",
                                  "elementwise.cpp", "amx_linear.cpp", "amx_gemm.cpp",
                                  "prefill_attention.cpp", "greedy.cpp", "gemv.cpp", "vnni_linear.cpp",
                                  "decode_stack.cpp"))
_HEADERS = tuple(Path(__file__).parent / "csrc" / name for name in ("amx_tiles.h", "bf16_vec.h", "decode_stack.h", "fp8.h",
                                                                      "kernels.h", "rotary.h", "row_quant.h"))
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-ffast-math"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                return line
    except OSError:
        pass
    return platform.processor()


def _build_dir() -> Path:
    # -march=native code runs only on CPUs like this one: the cache key names the CPU.
    digest = hashlib.sha256()
    for source in _SOURCES + _HEADERS:
        digest.update(source.read_bytes())
    digest.update(" ".join(_FLAGS).encode())
    digest.update(_cpu_model().encode())
    return cache_root() / "kernels" / digest.hexdigest()[:16]  # beside the model cache


def _put_ninja_on_path() -> None:
    """torch runs `ninja` from PATH; the pip-installed one sits beside the venv's python, which
    is not on PATH when dyno is run as .venv/bin/dyno."""
    try:
        import ninja
    except ImportError:
        return
    if ninja.BIN_DIR not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


@contextlib.contextmanager
def _build_lock(build: Path) -> Iterator[None]:
    """One process builds at a time. torch's own lock is a file it deletes when done, so a build
    killed midway (Ctrl-C during the first start) left it behind and every later start waited on
    it forever. An flock is dropped by the OS when its holder dies; whoever holds it knows no
    build is running, so a leftover torch lock is stale and goes."""
    with open(build / "dyno.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        (build / "lock").unlink(missing_ok=True)
        yield


@functools.cache
def load():
    """The compiled module, or None when kernels are off or cannot be built here."""
    if os.environ.get("DYNO_CPU_KERNELS", "1") == "0":
        return None
    try:
        from torch.utils import cpp_extension

        _put_ninja_on_path()
        build = _build_dir()
        build.mkdir(parents=True, exist_ok=True)
        if not any(build.glob("*.so")):
            logger.info("building dyno's CPU kernels into %s (once per machine, about a minute)", build)
        with _build_lock(build):
            return cpp_extension.load("dyno_cpu_kernels", [str(s) for s in _SOURCES],
                                      extra_cflags=_FLAGS, extra_ldflags=["-fopenmp"],
                                      build_directory=str(build), verbose=False)
    except Exception as e:  # no compiler, no ninja, a failed build: the torch path still works
        logger.warning("dyno's CPU kernels unavailable (%s); using torch's ops",
                       str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
        return None
