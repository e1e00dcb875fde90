"""Shared fixtures: tiny models and inputs, so the suite stays fast on 2 cores."""

import os

import pytest
import torch

if not torch.cuda.is_available():  # the fused kernels' tests run in Triton's interpreter; set before Triton is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")
import torch.nn.functional as F
from fixtures import TinyRun
from torch import nn


def _share_the_cores() -> None:
    """Under pytest-xdist, each worker takes its share of the threads PyTorch would use (its ops, and the processes
    the tests start): workers that each ran every thread would oversubscribe the cores, whose OpenMP threads spin
    while they wait."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, torch.get_num_threads() // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


_share_the_cores()


class ResidualNet(nn.Module):
    """conv -> relu -> (conv + identity) -> relu -> pool -> linear: the first map has two consumers."""

    def __init__(self, channels: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x):
        a = F.relu(self.conv1(x))
        b = torch.relu(self.conv2(a) + a)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(b, 1), 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def residual_net() -> nn.Module:
    return ResidualNet().eval()


@pytest.fixture(scope="session")
def tiny_run() -> TinyRun:
    """The shared tiny training run's settings (``fixtures.TinyRun``)."""
    return TinyRun()
