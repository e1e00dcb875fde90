"""What a run config builds: its device, its datasets and their batches, and the prepared model; and the one
evaluation pass (accuracy and traffic) over a test split. The trainer, the checkpoint opener and the workflows
all build through here, so a model or a loader is made one way."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from .. import slim
from ..analysis.measure import TrafficReport, measure
from ..config.run import ConfigError, DataSection, RunConfig
from ..data import DataSpec, DeviceBatches, Indexed, batch_maker, build_datasets, loader_kind
from ..models import build_model
from ..nn import prepare
from . import distributed


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; an unavailable device is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"device={name!r} is invalid: use auto, cpu, cuda or cuda:N") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} asked for, but no CUDA GPU is available: use device=auto or cpu")
    return device


def build_data(config: RunConfig, augment: bool | None = None) -> tuple[Any, Any, DataSpec]:
    """(train set, test set, spec) of the run's data section; ``augment`` False: the training images as they are
    (the same items in the same order, the test split's transform)."""
    data = config.data if augment is None else replace(config.data, augment=augment)
    return build_datasets(data, config.seed)


def example_inputs(spec: DataSpec) -> torch.Tensor:
    """One zero image of the data's shape (for tracing and counting MACs)."""
    return torch.zeros(1, spec.channels, spec.size, spec.size)


def build_prepared_model(config: RunConfig, spec: DataSpec, masked: bool,
                         structure: dict[str, int] | None = None) -> nn.Module:
    """The configured model for ``spec``, shrunk to a pruned ``structure`` if given, then prepared: with Zebra's
    masks active (``masked``) or every site measured only."""
    model = build_model(config.model.name, spec.classes, spec.channels, **config.model.options)
    if structure:
        slim.restructure(model, structure, example_inputs(spec))
    try:
        return prepare(model, config.zebra.layer_config(masked))
    except ValueError as error:  # a model prepare() cannot trace or instrument: its message says what to set
        raise ConfigError(f"model {config.model.name}: {error}") from error


def make_loader(dataset, batch_size: int, data: DataSection, device: torch.device, shuffle: bool, seed: int,
                world: distributed.World | None = None, indexed: bool = False) -> DataLoader | DeviceBatches:
    """Shuffled (training) or in-order batches; under torchrun the training data is split across ranks.
    ``data.loader`` picks a DataLoader (``workers``) or batches made on the device (``device``: in-memory and
    synthetic sets; any other set keeps a DataLoader, with persistent workers); ``auto`` is device on CUDA only.
    ``indexed`` batches carry the indices of their items in ``dataset`` as a third element."""
    sampler: DistributedSampler | None = None
    if shuffle and world is not None and world.size > 1:
        sampler = DistributedSampler(dataset, world.size, world.rank, shuffle=True, seed=seed, drop_last=True)
    order: dict[str, Any] = dict(
        batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
        generator=torch.Generator().manual_seed(seed) if shuffle and sampler is None else None,
        drop_last=shuffle and len(dataset) > batch_size)
    on_device = loader_kind(data.loader, device) == "device"
    make = batch_maker(dataset, device, by_index=indexed) if on_device else None
    if make is not None:  # the same index batches as the DataLoader below, each gathered and augmented on the device
        rank = world.rank if world is not None else 0
        indices: DataLoader = DataLoader(range(len(dataset)), **order)  # type: ignore[arg-type]  # a map-style range
        return DeviceBatches(make, indices, device, seed * 1_000_003 + rank, indexed)
    keep_workers = on_device and data.workers > 0
    return DataLoader(Indexed(dataset) if indexed else dataset, num_workers=data.workers,
                      pin_memory=device.type == "cuda", persistent_workers=keep_workers,
                      prefetch_factor=4 if keep_workers else None, **order)


def evaluate(model: nn.Module, dataset, config: RunConfig, device: torch.device,
             progress: bool = True) -> TrafficReport:
    """Accuracy and traffic of ``model`` (prepared) on ``dataset`` in one pass; under torchrun each rank
    measures its share and the counts are summed, so the report equals a single process's."""
    world = distributed.current()
    loader = make_loader(distributed.shard(dataset, world), config.data.eval_batch_size, config.data, device, False, 0,
                     world)
    report = measure(model, loader, bits=config.bits, progress=progress and world.main)
    return distributed.reduce_report(report, world, device)
