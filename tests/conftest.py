"""Session-wide set-up, loaded before any test module imports the project."""

from __future__ import annotations

import os

import torch

# Without CUDA, Triton kernels run in Triton's interpreter. Triton reads this when a kernel is
# first defined, so it must be set before any test (engine or kernels) imports one.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_sessionstart(session) -> None:
    """Build dyno's C++ CPU kernels once, here, rather than inside the first server a test
    starts under a start-up timeout (the first build takes about a minute on 2 cores)."""
    from engine import cpu_kernels

    cpu_kernels.load()
