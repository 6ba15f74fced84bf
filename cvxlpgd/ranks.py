"""Advice for data-parallel training (torch.distributed): several ranks on one machine.

Every rank is a process with its own copy of cvxlpgd's default thread pool, one thread per core;
k ranks on one machine then run k threads per core and slow each other down. Each rank should
get its share: ``executor=ThreadPoolExecutor(max(1, os.cpu_count() // ranks_per_machine))``.
"""

from __future__ import annotations

import os

import torch

from cvxlpgd.errors import SharedCoresWarning, warn_at_caller

_warned = False


def warn_if_ranks_share_cores() -> None:
    """Warn once per process when this process is one of several torch.distributed ranks on its
    machine (``LOCAL_WORLD_SIZE``, set by torchrun) and uses the default pool."""
    global _warned
    if _warned or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if ranks > 1:
        _warned = True
        cores = os.cpu_count() or 1
        warn_at_caller(
            SharedCoresWarning(
                f"{ranks} torch.distributed ranks on this machine each start cvxlpgd's default pool of "
                f"{cores} threads, {ranks * cores} threads on {cores} cores. Give each rank its share: "
                f"CvxpyLayer(..., executor=ThreadPoolExecutor(max_workers={max(1, cores // ranks)}))."
            )
        )
