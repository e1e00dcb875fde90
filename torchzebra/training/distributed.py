"""Multi-process training under ``torchrun``: process group, data shards, and reductions of the results.

``torchrun --nproc-per-node N -m torchzebra.cli train ...`` sets RANK/WORLD_SIZE/LOCAL_RANK; ``setup``
joins the group (gloo on CPU, NCCL on GPU). Without those variables everything is single-process and
every function here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Sized, cast

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Subset

from ..analysis.measure import TrafficReport
from ..core import FORMATS


@dataclass(frozen=True)
class World:
    """This process's place: rank 0 of 1 when not distributed."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 alone writes checkpoints, logs and reports."""
        return self.rank == 0


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun describes (once); return this process's world and device."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(), device
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world, device


def current() -> World:
    """The world of an initialised process group, else the single-process one."""
    if not dist.is_initialized():
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def teardown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(dataset: Dataset, world: World) -> Dataset:
    """Every ``size``-th item from ``rank`` on: evaluation shards that cover the data once, without padding."""
    return dataset if world.size == 1 else Subset(dataset, range(world.rank, len(cast(Sized, dataset)), world.size))


def broadcast(value: Any, world: World) -> Any:
    """Rank 0's ``value`` on every rank (e.g. the run folder's name)."""
    if world.size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def any_rank(flag: torch.Tensor, world: World) -> torch.Tensor:
    """The largest value of ``flag`` over all ranks (e.g. the first non-finite step anywhere)."""
    if world.size > 1:
        flag = flag.clone()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return flag


def reduce_report(report: TrafficReport, world: World, device: torch.device) -> TrafficReport:
    """The report of the whole evaluation set from each rank's shard: every count summed over ranks."""
    if world.size == 1:
        return report
    fields = ("maps", "elements", "blocks", "nonzero", "nonzero_blocks", "nonzero_block_elements")
    rows = [[getattr(layer, f) for f in fields] + [layer.bytes[fmt] for fmt in FORMATS] for layer in report.layers]
    head = [report.images, report.correct or 0] + [0] * (len(fields) + len(FORMATS) - 2)
    totals = torch.tensor([head] + rows, dtype=torch.int64, device=device)
    dist.all_reduce(totals)
    values = totals.tolist()
    layers = [replace(layer, **dict(zip(fields, row)), bytes=dict(zip(FORMATS, row[len(fields):])))
              for layer, row in zip(report.layers, values[1:])]
    correct = values[0][1] if report.correct is not None else None
    return replace(report, layers=layers, images=values[0][0], correct=correct)

