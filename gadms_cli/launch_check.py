"""Detect a data-parallel launch that started fewer (or more) processes than asked for.

``accelerate launch --cpu --num_processes 2 ...`` silently starts ONE process
(accelerate uses its simple launcher for ``--cpu``). The requested count is
only visible on the launcher's command line, so we read the parent process's
arguments (psutil, an accelerate dependency) and compare.
"""

from __future__ import annotations

import os

import psutil

CPU_HINT = (
    "on CPU use 'ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N -m gadms_cli ...' "
    "or 'torchrun --nproc-per-node N -m gadms_cli ...'"
)


def requested_processes(cmdline: list[str]) -> int | None:
    """The ``--num_processes`` / ``--num-processes`` value on an ``accelerate launch`` command line, if any."""
    if not any(part.endswith("accelerate") or "accelerate" in os.path.basename(part) for part in cmdline[:3]):
        return None
    for i, part in enumerate(cmdline):
        for flag in ("--num_processes", "--num-processes"):
            if part == flag and i + 1 < len(cmdline):
                value = cmdline[i + 1]
            elif part.startswith(flag + "="):
                value = part.split("=", 1)[1]
            else:
                continue
            try:
                return int(value)
            except ValueError:
                return None
    return None


def launch_mismatch(actual: int, expected: int | None = None) -> str | None:
    """A one-line explanation when the process count differs from what was asked, else ``None``.

    ``expected`` (e.g. from ``--processes``) wins; otherwise the parent's accelerate command line is read.
    """
    if expected is None:
        try:
            expected = requested_processes(psutil.Process(os.getppid()).cmdline())
        except (psutil.Error, OSError):
            expected = None
    if expected is None or expected == actual:
        return None
    return f"{expected} processes were requested but {actual} started; {CPU_HINT}"
