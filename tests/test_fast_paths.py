"""Fast paths against the eager reference: torch.compile of a prepared model (inductor on the CPU) gives the
same masks, outputs within float tolerance and the same gradients; the engine's compile setting wires it."""

import copy

import pytest
import torch

import torchzebra as tz
from torchzebra.training import train
from torchzebra.training import trainer as trainer_module


@pytest.mark.slow  # inductor compiles
@pytest.mark.parametrize("score, size, block", [("mean", 8, 2), ("max", 8, 2), ("mean", 7, 3)])  # 7x7: partial blocks
def test_compiled_prepared_model_equals_eager(residual_net, score, size, block):
    config = tz.ZebraConfig(block_size=block, threshold=0.1, score=score)
    eager = tz.prepare(residual_net.train(), config)
    compiled = torch.compile(copy.deepcopy(eager))
    x = torch.randn(4, 1, size, size)
    outputs = []
    for model in (eager, compiled):
        out = model(x)
        loss = out.square().mean() + 0.1 * tz.zero_block_loss(model)
        loss.backward()
        outputs.append((out, [p.grad for p in model.parameters()]))
    (want, want_grads), (got, got_grads) = outputs
    torch.testing.assert_close(got, want)
    for g_got, g_want in zip(got_grads, want_grads):
        torch.testing.assert_close(g_got, g_want)
    with torch.no_grad():
        hidden = [m.zebra.relu for m in (eager, tz.nn.prepared_module(compiled))]
        assert torch.equal(eager(x) == 0, compiled(x) == 0) and hidden[0].last_penalty is None


@pytest.mark.slow  # compiles the training step
def test_train_compile_setting_compiles_the_training_step_only(tmp_path, monkeypatch, tiny_run):
    compiled = []
    real_compile = torch.compile
    monkeypatch.setattr(trainer_module.torch, "compile",
                        lambda module: compiled.append(module) or real_compile(module, backend="eager"))
    config = tiny_run.config("train.compile=true", "distill.weight=0")
    result = train(config, tmp_path / "run", masked=True, progress=False)
    assert len(compiled) == 1 and tz.is_prepared(compiled[0]) and result.report.images == 128
    assert not isinstance(result.model, torch._dynamo.eval_frame.OptimizedModule)  # saved and measured eagerly


@pytest.mark.parametrize("size, block", [(10, 2), (9, 2)])  # 25 blocks per map: the eager CPU row paths
def test_torch_func_transforms_see_the_same_model(residual_net, size, block):
    """torch.func's grad, vmap and jvp run a prepared model (the layers take plain ops under transforms) and give
    autograd's gradients, per-sample gradients and directional derivatives."""
    from torch.func import functional_call, grad, jvp, vmap

    model = tz.prepare(residual_net.train(), tz.ZebraConfig(block_size=block, threshold=0.2, penalty="group_lasso"))
    params = {name: p.detach() for name, p in model.named_parameters()}
    x = torch.randn(3, 1, size, size)

    def loss(p, inputs):
        return functional_call(model, p, (inputs,)).square().mean() + 0.1 * tz.zero_block_loss(model)

    model.zero_grad()
    loss(dict(model.named_parameters()), x).backward()
    for name, g in grad(loss)(params, x).items():
        torch.testing.assert_close(g, dict(model.named_parameters())[name].grad)
    per_sample = vmap(grad(loss), in_dims=(None, 0))(params, x[:, None])
    model.zero_grad()
    loss(dict(model.named_parameters()), x[1:2]).backward()
    for name, g in per_sample.items():
        torch.testing.assert_close(g[1], dict(model.named_parameters())[name].grad)
    model.eval()
    tangent, cotangent = torch.randn_like(x), torch.randn(3, 3)
    _, forward = jvp(lambda inputs: functional_call(model, params, (inputs,)), (x,), (tangent,))
    leaf = x.clone().requires_grad_(True)
    (backward,) = torch.autograd.grad(functional_call(model, params, (leaf,)), leaf, cotangent)
    torch.testing.assert_close((forward * cotangent).sum(), (backward * tangent).sum())
