"""The one-pass CPU block mask (core/cpu_kernel.c): bit for bit the PyTorch path's output and gradient, and a clean
fall-back where it cannot be built."""

import copy
import ctypes
import math
import shutil
import threading
import warnings
from types import SimpleNamespace

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

import torchzebra as tz
from torchzebra.core import (
    apply_block_mask,
    block_keep,
    block_magnitude_sums,
    block_shape,
    cpu_kernel,
    is_channels_last,
)
from torchzebra.nn import ZebraLayer


class _Watching(TorchDispatchMode):
    """A dispatch mode that only passes the operations on."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


built = pytest.mark.skipif(cpu_kernel.library() is None, reason="no C compiler to build the CPU kernel")


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The same bits (signed zeros compare too), or NaN in both: PyTorch's NaN payloads vary with its code path."""
    integers = torch.int16 if a.element_size() == 2 else torch.int32
    same_bits = a.detach().contiguous().view(integers) == b.detach().contiguous().view(integers)
    return a.shape == b.shape and bool((same_bits | (a.isnan() & b.isnan())).all())


def _reference(x: torch.Tensor, block: int | str, threshold: torch.Tensor):
    """The PyTorch path the layer takes without the kernel: the mask applied, and the l1 penalty of a ReLU map."""
    return apply_block_mask(x, block_keep(x, block, "mean", threshold, nonnegative=True), block), x.mean()


@st.composite
def _maps(draw):
    """A channels_last non-negative map in blocks that tile it, a threshold, upstream gradients."""
    dtype = draw(st.sampled_from([torch.bfloat16, torch.float32]))
    block = draw(st.sampled_from([1, 2, 3, 4, "map"]))
    side = 1 if block == "map" else block
    n, c = draw(st.integers(1, 3)), draw(st.integers(2, 40))
    h, w = side * draw(st.integers(1, 4)), side * draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=generator) * draw(st.sampled_from([1.0, 1e-30, 1e30, 3e38]))
    x = x * (torch.rand(x.shape, generator=generator) > draw(st.sampled_from([0.0, 0.5, 0.9])))  # exact zeros
    special = draw(st.sampled_from([None, float("inf"), float("nan")]))
    if special is not None:
        x.view(-1)[draw(st.integers(0, x.numel() - 1))] = special
    x = x.to(dtype).contiguous(memory_format=torch.channels_last)
    threshold = draw(st.sampled_from(["a block's own mean", 0.0, 0.1, 0.5, 1e-31, float("inf"), float("nan"), -1.0]))
    if isinstance(threshold, str):  # a block right at the limit: any other order of adding would tip some blocks
        sums = block_magnitude_sums(x, block, nonnegative=True).flatten()
        counts = math.prod(block_shape(block, h, w))
        threshold = float(sums[draw(st.integers(0, len(sums) - 1))] / counts)
    upstream = torch.randn(x.shape, generator=generator).to(dtype)
    weight = draw(st.sampled_from([None, 0.0, -0.0, 0.37, 1e-3, -2.0, -1e-40, "penalty only"]))
    return x, block, torch.tensor(threshold), upstream, weight


@built
@settings(max_examples=150, deadline=None)
@given(_maps())
def test_the_kernel_gives_the_pytorch_paths_output_and_gradient_bit_for_bit(case):
    x, block, threshold, upstream, weight = case
    assume(is_channels_last(x))  # a 1x1 map is also plainly contiguous: the layer takes the PyTorch path
    ours = x.clone().requires_grad_()
    assert cpu_kernel.usable(ours, block, "mean", True, "l1")
    out, penalty = cpu_kernel.masked_map(ours, block, threshold, penalty=True)
    plain = x.clone().requires_grad_()
    want, want_penalty = _reference(plain, block, threshold)
    assert _same(cpu_kernel.block_sums(x, block), block_magnitude_sums(x, block, nonnegative=True))  # calibration's
    assert _same(out, want) and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(penalty, want_penalty, equal_nan=True)
    ours_loss, plain_loss = (out * upstream).sum(), (want * upstream).sum()
    if weight == "penalty only":  # the map itself never reaches the loss
        ours_loss, plain_loss = 0.37 * penalty, 0.37 * want_penalty
    elif weight is not None:  # the penalty in the loss (or not at all): its gradient added once, as autograd adds it
        ours_loss, plain_loss = ours_loss + weight * penalty, plain_loss + weight * want_penalty
    ours_loss.backward()
    plain_loss.backward()
    assert _same(ours.grad, plain.grad)
    with torch.no_grad():  # without autograd, in place where asked, and autograd's version counter told
        target = x.clone()
        masked, _ = cpu_kernel.masked_map(target, block, threshold, penalty=False, inplace=True)
    assert masked is target and _same(masked, want) and target._version == 1


@built
def test_a_map_the_kernel_does_not_take_goes_the_pytorch_way(monkeypatch):
    x = torch.rand(2, 8, 4, 6).contiguous(memory_format=torch.channels_last)
    assert cpu_kernel.usable(x, 2, "mean", True, "l1") and cpu_kernel.usable(x, 2, "mean", True, None)
    assert not cpu_kernel.usable(x.contiguous(), 2, "mean", True, "l1")  # plain layout
    assert not cpu_kernel.usable(x, 4, "mean", True, "l1")  # 6 columns in blocks of 4: partial border blocks
    assert not cpu_kernel.usable(x, 2, "max", True, "l1")
    assert not cpu_kernel.usable(x, 2, "mean", False, "l1")  # not a ReLU's map
    assert not cpu_kernel.usable(x, 2, "mean", True, "group_lasso")
    assert not cpu_kernel.usable(x.half(), 2, "mean", True, "l1")
    fake = FakeTensorMode().from_tensor(x)  # no memory behind it
    assert not cpu_kernel.usable(fake, 2, "mean", True, "l1")
    with _Watching():  # a dispatch mode sees the PyTorch ops, not a C call
        assert not cpu_kernel.usable(x, 2, "mean", True, "l1")
    monkeypatch.setattr(torch, "get_num_threads", lambda: cpu_kernel.MAX_THREADS + 1)
    if cpu_kernel.library().zebra_mask_parallel():  # built with OpenMP: on PyTorch's threads, however many
        assert cpu_kernel.usable(x, 2, "mean", True, "l1")
    one_thread = SimpleNamespace(zebra_mask_parallel=lambda: 0)  # a kernel built without OpenMP
    monkeypatch.setattr(cpu_kernel, "library", lambda: one_thread)
    assert not cpu_kernel.usable(x, 2, "mean", True, "l1")  # more threads share the PyTorch ops
    monkeypatch.setenv(cpu_kernel.ENVIRONMENT_VARIABLE, "1")
    assert cpu_kernel.usable(x, 2, "mean", True, "l1")


@built
def test_a_double_backward_and_another_default_device_give_the_pytorch_paths_results():
    x = torch.rand(2, 8, 4, 4).bfloat16().contiguous(memory_format=torch.channels_last).requires_grad_()
    upstream = torch.randn(x.shape).bfloat16().requires_grad_()
    results = []
    for kernel in (True, False):
        out, penalty = (cpu_kernel.masked_map(x, 2, torch.tensor(0.5), penalty=True) if kernel
                        else _reference(x, 2, torch.tensor(0.5)))
        gradient, = torch.autograd.grad((out * upstream).sum() + 0.3 * penalty, x, create_graph=True)
        assert gradient.requires_grad
        second, = torch.autograd.grad((gradient.float() ** 2).sum(), upstream)
        results.append((gradient.detach(), second))
    assert _same(results[0][0], results[1][0]) and _same(results[0][1], results[1][1])
    with torch.device("meta"):  # new tensors default elsewhere; the kernel's own stay on the map's device
        out, penalty = cpu_kernel.masked_map(x.detach(), 2, torch.tensor(0.5, device="cpu"), penalty=True)
    assert _same(out, _reference(x.detach(), 2, torch.tensor(0.5))[0]) and penalty.device.type == "cpu"


def _two_relu_net(width: int) -> nn.Module:
    """conv(3->8) -> ReLU -> conv(8->width) -> ReLU -> pool -> linear: two ReLU maps the kernel takes."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, width, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 3))


def _channels_last_batch(n: int) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8).contiguous(memory_format=torch.channels_last)


@built
def test_the_main_recipes_training_step_takes_the_kernel_and_matches_the_pytorch_path(monkeypatch):
    model, x = _two_relu_net(8), _channels_last_batch(4)

    def step(model_copy):
        prepared = tz.prepare(model_copy, tz.ZebraConfig(block_size=2, score="mean", penalty="l1", threshold=0.3))
        prepared.to(memory_format=torch.channels_last).train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = prepared(x).float().sum() + 0.1 * tz.zero_block_loss(prepared)
        loss.backward()
        return [p.grad.clone() for p in prepared.parameters()]

    calls = []
    original = cpu_kernel._forward
    monkeypatch.setattr(cpu_kernel, "_forward", lambda *args: calls.append(1) or original(*args))
    torch.manual_seed(0)
    with_kernel = step(copy.deepcopy(model))
    assert len(calls) == 2  # both ReLU maps
    monkeypatch.setattr(cpu_kernel, "usable", lambda *args: False)
    without = step(copy.deepcopy(model))
    assert all(torch.equal(a, b) for a, b in zip(with_kernel, without))


@built
def test_calibration_through_the_kernel_sets_the_pytorch_paths_thresholds_and_masks(monkeypatch):
    model, x = _two_relu_net(16), _channels_last_batch(6)

    def calibrated(model_copy):
        prepared = tz.prepare(model_copy, tz.ZebraConfig(block_size=2, score="mean", penalty="l1"))
        prepared.to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            thresholds = tz.calibrate(prepared, [x], {"*": 0.3})
            with torch.no_grad():
                return thresholds, prepared.eval()(x)

    calls = []
    original = cpu_kernel.block_sums
    monkeypatch.setattr(cpu_kernel, "block_sums", lambda *args: calls.append(1) or original(*args))
    thresholds, out = calibrated(copy.deepcopy(model))
    assert len(calls) == 2  # both ReLU maps scored by the kernel's sums
    monkeypatch.setattr(cpu_kernel, "usable", lambda *args: False)
    want_thresholds, want = calibrated(copy.deepcopy(model))
    assert len(calls) == 2 and len(thresholds) == 2
    assert {site: value.hex() for site, value in thresholds.items()} == {
        site: value.hex() for site, value in want_thresholds.items()}
    assert _same(out, want)


def test_without_a_compiler_the_masks_take_the_pytorch_path_after_one_warning(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing built there yet
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    cpu_kernel.library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="one-pass CPU block mask is not built.*slower PyTorch path"):
            assert cpu_kernel.library() is None
        x = torch.rand(2, 4, 4, 4).contiguous(memory_format=torch.channels_last)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the warning is given once, not for every map
            assert not cpu_kernel.usable(x, 2, "mean", True, "l1")
            layer = ZebraLayer("relu", block_size=2, score="mean", threshold=0.5, penalty="l1", nonnegative=True)
            out = layer.train()(x.requires_grad_())
        assert torch.equal(out, _reference(x, 2, torch.tensor(0.5))[0])
        monkeypatch.setenv(cpu_kernel.ENVIRONMENT_VARIABLE, "0")
        monkeypatch.delenv("CC")
        cpu_kernel.library.cache_clear()
        assert cpu_kernel.library() is None  # turned off: no build, no warning
        assert not list(tmp_path.rglob("*.so"))
        monkeypatch.setenv(cpu_kernel.ENVIRONMENT_VARIABLE, "kernel")  # misspelt: one clear error, as for the GPU's
        cpu_kernel.library.cache_clear()
        with pytest.raises(ValueError, match=r"TORCHZEBRA_CPU_KERNEL='kernel' is invalid: set it to 1 .* or 0"):
            cpu_kernel.library()
    finally:
        cpu_kernel.library.cache_clear()


@built
def test_a_compiler_without_the_tuning_options_builds_the_portable_kernel(monkeypatch, tmp_path):
    compiler = tmp_path / "cc"  # refuses -march=native, as a compiler for another architecture would
    real = shutil.which("cc") or shutil.which("gcc")
    compiler.write_text(f'#!/bin/sh\ncase "$*" in *-march=native*) exit 1;; esac\nexec {real} "$@"\n')
    compiler.chmod(0o755)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", str(compiler))
    cpu_kernel.library.cache_clear()
    try:
        assert cpu_kernel.library() is not None
        x = torch.rand(2, 8, 4, 4).contiguous(memory_format=torch.channels_last)
        out, _ = cpu_kernel.masked_map(x, 2, torch.tensor(0.5), penalty=False)
        assert _same(out, _reference(x, 2, torch.tensor(0.5))[0])
    finally:
        cpu_kernel.library.cache_clear()


@built
@pytest.mark.slow  # two short trainings of the main job's model
def test_the_main_jobs_zebra_fine_tune_trains_the_same_weights_with_and_without_the_kernel(monkeypatch):
    from dataclasses import replace

    from torchzebra.config import load_config
    from torchzebra.data import DataSpec
    from torchzebra.nn import plain_model
    from torchzebra.training import distributed
    from torchzebra.training.building import build_prepared_model
    from torchzebra.training.extensions import distillation, zebra_extensions
    from torchzebra.training.trainer import new_run, to_device, train_step

    config = load_config("quick", overrides=["device=cpu", "zebra.density_ramp_steps=0"])  # masks at their targets
    spec, device = DataSpec("fashion-mnist", 10, 1, 32), torch.device("cpu")
    optim = replace(config.finetune, precision="bf16", channels_last=True)
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 1, 32, 32, generator=generator), torch.randint(0, 10, (16,), generator=generator))
               for _ in range(4)]

    def fine_tune() -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = build_prepared_model(config, spec, masked=True).to(memory_format=torch.channels_last)
        torch.manual_seed(0)
        teacher = plain_model(build_prepared_model(config, spec, False))
        extensions = zebra_extensions(replace(config.zebra, enabled=True)) + distillation(config, teacher)
        run = new_run(config, optim, model, distributed.current(), device, len(batches), extensions, False)
        run.trained.train()
        for step, batch in enumerate(batches):
            run.step = step  # the first recalibrates the thresholds
            train_step(run, *to_device(run, *batch))
        return {name: value.clone() for name, value in model.state_dict().items()}

    calls = []
    original = cpu_kernel._forward
    monkeypatch.setattr(cpu_kernel, "_forward", lambda *args: calls.append(1) or original(*args))
    with_kernel = fine_tune()
    assert calls  # the maps took the kernel
    monkeypatch.setattr(cpu_kernel, "usable", lambda *args: False)
    without = fine_tune()
    assert with_kernel.keys() == without.keys()
    assert all(torch.equal(with_kernel[name], without[name]) for name in with_kernel)


@built
def test_the_kernel_runs_on_as_many_threads_as_pytorch_in_every_thread():
    kernel, threads = cpu_kernel.library(), torch.get_num_threads()
    if not kernel.zebra_mask_parallel():
        pytest.skip("the kernel was built without OpenMP: one thread")
    seen = {}

    def worker(count: int) -> None:
        seen[count] = (torch.get_num_threads(), kernel.zebra_mask_threads(torch.get_num_threads()))

    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            assert kernel.zebra_mask_threads(torch.get_num_threads()) <= count
            thread = threading.Thread(target=worker, args=(count,))
            thread.start()
            thread.join()
    finally:
        torch.set_num_threads(threads)
    assert seen[1] == (1, 1) and seen[2][0] == 2  # a new thread follows torch.set_num_threads, as PyTorch's ops do


@built
def test_the_threads_split_block_rows_and_change_no_value():
    x = torch.rand(5, 16, 8, 12).bfloat16().contiguous(memory_format=torch.channels_last)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            ours = x.clone().requires_grad_()
            out, penalty = cpu_kernel.masked_map(ours, 2, torch.tensor(0.4), penalty=True)
            (out.float().sum() + 0.5 * penalty).backward()
            results.append((out.detach(), ours.grad, penalty.detach()))
    finally:
        torch.set_num_threads(threads)
    for out, grad, penalty in results[1:]:
        assert _same(out, results[0][0]) and _same(grad, results[0][1])
        assert _same(penalty, results[0][2])  # block rows' totals added in row order, whatever the threads


@built
def test_a_kernel_that_does_not_load_is_built_again_without_openmp(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    real, tries = ctypes.CDLL, []

    def load(path: str) -> ctypes.CDLL:  # as where the loader finds no OpenMP runtime for the first build
        tries.append(path)
        if len(tries) == 1:
            raise OSError("libgomp.so.1: cannot open shared object file")
        return real(path)

    monkeypatch.setattr(cpu_kernel.ctypes, "CDLL", load)
    cpu_kernel.library.cache_clear()
    try:
        kernel = cpu_kernel.library()
        assert kernel is not None and len(tries) == 2 and kernel.zebra_mask_parallel() == 0
        x = torch.rand(2, 8, 4, 4).contiguous(memory_format=torch.channels_last)
        out, _ = cpu_kernel.masked_map(x, 2, torch.tensor(0.5), penalty=False)
        assert _same(out, _reference(x, 2, torch.tensor(0.5))[0])
    finally:
        cpu_kernel.library.cache_clear()
