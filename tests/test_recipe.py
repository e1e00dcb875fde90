"""ZebraRecipe: the recipe of `zebra train` as one object any loop drives; the docs' loops run and match the engine."""

import copy
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

import torchzebra as tz
from torchzebra import recipe as recipe_module
from torchzebra import zebra_layers
from torchzebra.config import ConfigError, load_config
from torchzebra.data import build_datasets
from torchzebra.models import build_model
from torchzebra.recipe import distillation_loss
from torchzebra.training import train
from torchzebra.training.building import make_loader
from torchzebra.training.extensions import ZebraTraining, distillation

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "OWN_LOOP.md"


def guide_block(marker: str) -> str:
    """The one ``python`` code block of docs/OWN_LOOP.md that contains ``marker``."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S) if marker in b]
    assert len(blocks) == 1, f"{len(blocks)} blocks of {GUIDE.name} contain {marker!r}"
    return blocks[0]


SETUP, LOOP, CHECKPOINT, LIGHTNING = (guide_block(m) for m in ("DataLoader(", "recipe.step(x)", "torch.save(",
                                                                 "import lightning"))


def small_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))


def prepared(seed: int = 0) -> nn.Module:
    return tz.prepare(small_net(seed), tz.ZebraConfig(block_size=2, penalty="l1")).train()


@pytest.fixture
def one_thread():
    """Training runs of tiny tensors are fastest on one thread (with two, every op waits for a busy core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def calibrations(monkeypatch):
    """The thresholds of every recalibration, by any recipe (the engine's too)."""
    seen = []
    real = recipe_module.calibrate

    def recording(model, batches, density):
        thresholds = real(model, batches, density)
        seen.append(thresholds)
        return thresholds

    monkeypatch.setattr(recipe_module, "calibrate", recording)
    return seen


def test_the_density_ramps_cubically_from_one_to_the_target():
    recipe = tz.ZebraRecipe(prepared(), density=0.4, density_ramp_steps=10)
    assert recipe.target_density(0) == pytest.approx(1.0)
    assert recipe.target_density(5) == pytest.approx(0.4 + 0.6 * 0.125)
    assert recipe.target_density(50) == pytest.approx(0.4)
    recipe = tz.ZebraRecipe(prepared(), density={"1": 0.2, "*": 0.5}, density_ramp_steps=10)
    assert recipe.target_density(10) == pytest.approx({"1": 0.2, "*": 0.5})


def test_the_penalty_weight_follows_its_epochs_and_warms_up():
    recipe = tz.ZebraRecipe(prepared(), lam_epochs=[0.0, 0.1, 0.2], warmup_steps=4, steps_per_epoch=10)
    assert [recipe.penalty_weight(s) for s in (0, 9, 10, 20, 99)] == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.2])
    recipe = tz.ZebraRecipe(prepared(), lam=0.1, warmup_steps=4)
    assert [recipe.penalty_weight(s) for s in (0, 1, 3, 50)] == pytest.approx([0.025, 0.05, 0.1, 0.1])


def test_thresholds_are_recalibrated_at_each_epochs_start_and_every_n_steps(calibrations):
    model = prepared()
    recipe = tz.ZebraRecipe(model, density=0.5, calibrate_every=3, steps_per_epoch=5)
    steps = []
    for step in range(12):
        before = len(calibrations)
        recipe.step(torch.randn(4, 1, 8, 8))
        if len(calibrations) > before:
            steps.append(step)
    assert steps == [0, 3, 5, 8, 10]
    assert set(calibrations[-1]) == {site for site, _ in zebra_layers(model)}


def test_no_penalty_is_computed_in_steps_whose_weight_is_zero(residual_net):
    """lam_epochs [0, 0.1, 0]: no layer computes a penalty in an epoch whose weight is 0 (nothing would use it), every
    one does in the other; the engine's adapter ends training with the penalty on, as a prepared model hands it back."""
    model = tz.prepare(residual_net).train()
    config = load_config("quick", overrides=["zebra.lam_epochs=[0, 0.1, 0]", "zebra.density=null"])
    adapter = ZebraTraining(config.zebra)
    for epoch, wanted in ((0, False), (1, True), (2, False)):
        run = SimpleNamespace(model=model, epoch=epoch, step=0, global_step=epoch * 10, steps_per_epoch=10,
                              world=SimpleNamespace(main=True), optim=SimpleNamespace(epochs=3))
        adapter.before_forward(run, torch.randn(2, 1, 8, 8))
        model(torch.randn(2, 1, 8, 8))
        assert all((layer.last_penalty is not None) == wanted for _, layer in zebra_layers(model))
        term = adapter.extra_loss(run, None, None, None)
        assert (term.item() > 0) == wanted and adapter.recipe.last_lam == (0.1 if wanted else 0.0)
        row = {}
        adapter.epoch_end(run, row)
        assert row["lam"] == (0.1 if wanted else 0.0)
        assert all(layer.penalized == wanted for _, layer in zebra_layers(model))  # as the step left it
    adapter.train_end(run, None)
    assert all(layer.penalized for _, layer in zebra_layers(model))


def test_the_loss_term_is_the_penalty_plus_the_distillation():
    model, teacher = prepared(0), small_net(1)
    inputs = torch.randn(4, 1, 8, 8)
    recipe = tz.ZebraRecipe(model, lam=0.5, teacher=teacher, distill_weight=2.0, temperature=3.0)
    with pytest.raises(RuntimeError, match="before step"):
        recipe.loss(torch.zeros(4, 3))
    recipe.step(inputs)
    outputs = model(inputs)
    with pytest.raises(ValueError, match="needs the model's outputs"):
        recipe.loss()
    wanted = 0.5 * tz.zero_block_loss(model) + 2.0 * recipe_module.distillation_loss(outputs, teacher(inputs), 3.0)
    assert recipe.loss(outputs).item() == pytest.approx(wanted.item(), rel=1e-6)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    plain = tz.ZebraRecipe(model)  # neither penalty nor teacher: a zero, and no layer computes a penalty
    plain.step(inputs)
    model(inputs)
    assert plain.loss().item() == 0.0 and all(layer.last_penalty is None for _, layer in zebra_layers(model))


@pytest.mark.parametrize("settings, message", [
    ({"density": 1.5}, r"density\['\*'\]=1.5 is invalid"),
    ({"density": {"layer1.*": 0}}, r"density\['layer1.\*'\]=0 is invalid"),
    ({"calibrate_every": -1}, "calibrate_every=-1 is invalid"),
    ({"density_ramp_steps": 2.5}, "density_ramp_steps=2.5 is invalid"),
    ({"warmup_steps": True}, "warmup_steps=True is invalid"),
    ({"steps_per_epoch": 0}, "steps_per_epoch=0 is invalid"),
    ({"lam": -0.1}, "lam=-0.1 is invalid"),
    ({"lam": float("nan")}, "lam=nan is invalid"),
    ({"lam_epochs": []}, r"lam_epochs=\[\] is invalid"),
    ({"lam_epochs": [0.1, -1], "steps_per_epoch": 5}, r"lam_epochs\[1\]=-1 is invalid"),
    ({"lam_epochs": [0.1, 0.2]}, "lam_epochs needs steps_per_epoch"),
    ({"teacher": "baseline.pt"}, "teacher=str is invalid"),
    ({"distill_weight": -1.0}, "distill_weight=-1.0 is invalid"),
    ({"temperature": 0}, "temperature=0 is invalid"),
])
def test_bad_settings_are_a_value_error_naming_the_setting(settings, message):
    with pytest.raises(ValueError, match=message):
        tz.ZebraRecipe(prepared(), **settings)


@pytest.mark.parametrize("override, message", [("zebra.lam=-1", "zebra: lam=-1 is invalid"),
                                               ("zebra.warmup_steps=-5", "zebra: warmup_steps=-5 is invalid")])
def test_the_run_config_checks_the_recipes_settings_when_it_is_read(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("quick", overrides=[override])


def test_a_model_that_is_not_prepared_is_refused():
    with pytest.raises(ValueError, match=r"ZebraRecipe\(\) takes a model returned by torchzebra.prepare"):
        tz.ZebraRecipe(small_net(0), lam=0.01)


def test_its_state_resumes_only_with_the_same_settings():
    recipe = tz.ZebraRecipe(prepared(), density={"*": 0.3}, calibrate_every=4, lam=0.01)
    for _ in range(3):
        recipe.step(torch.randn(2, 1, 8, 8))
    state = recipe.state_dict()
    again = tz.ZebraRecipe(prepared(), density={"*": 0.3}, calibrate_every=4, lam=0.01)
    again.load_state_dict(state)
    assert again.last_step == 2 and again.state_dict() == state
    other = tz.ZebraRecipe(prepared(), density={"*": 0.3}, calibrate_every=5, lam=0.01)
    with pytest.raises(ValueError, match=r"calibrate_every=4 \(here 5\)"):
        other.load_state_dict(state)


# --- the guide's plain loop against the engine ---------------------------------------------------------------

ENGINE = ["device=cpu", "data.name=synthetic", "data.channels=1", "data.length=96", "data.batch_size=4",
          "data.eval_batch_size=24", "data.workers=0", "model.options={stem: cifar, width: 4}", "train.epochs=2",
          "data.loader=auto", "train.precision=fp32", "train.channels_last=false"]  # as the guide's plain loop runs


class EngineBatches:
    """The training batches of `train`, epoch after epoch: each epoch reseeds torch and reads its loader under tqdm
    (whose asyncio-aware wrapper opens one iterator before the one it reads)."""

    def __init__(self, config, dataset) -> None:
        self.config, self.dataset, self.epoch = config, dataset, 0

    def __len__(self) -> int:
        return len(self.dataset) // self.config.data.batch_size

    def __iter__(self):
        epoch_seed = self.config.seed * 1000 + self.epoch
        self.epoch += 1
        torch.manual_seed(epoch_seed)
        loader = make_loader(self.dataset, self.config.data.batch_size, self.config.data, torch.device("cpu"), True,
                             epoch_seed)
        return iter(tqdm(loader, disable=True))


@pytest.mark.slow
def test_the_guides_loop_trains_what_zebra_train_trains(tmp_path, calibrations, one_thread):
    """The quick preset's Zebra recipe with distillation, 2 epochs of 24 steps on tiny synthetic data: the guide's
    loop and the engine recalibrate to the same thresholds at every recalibration and end with the same weights."""
    config = load_config("quick", overrides=[*ENGINE, "zebra.enabled=true"])
    torch.manual_seed(config.seed)  # the engine's initial weights for this seed
    baseline = build_model("resnet18", 10, 1, **config.model.options)
    engine = train(config, tmp_path / "engine", extensions=distillation(config, copy.deepcopy(baseline)),
                   progress=False)
    by_engine = list(calibrations)
    calibrations.clear()

    train_set = build_datasets(config.data, config.seed)[0]
    namespace = {"copy": copy, "torch": torch, "F": F, "tz": tz, "baseline": baseline, "epochs": config.train.epochs,
                 "loader": EngineBatches(config, train_set)}
    exec(compile(LOOP, str(GUIDE), "exec"), namespace)

    assert len(by_engine) == len(calibrations) == 5  # global steps 0, 20 (epoch 1), 24, 44 and the last, 47
    for ours, theirs in zip(calibrations, by_engine):
        assert ours.keys() == theirs.keys() and len(ours) == 17
        assert list(ours.values()) == pytest.approx(list(theirs.values()), rel=1e-5, abs=1e-7)
    assert namespace["recipe"].last_step == 47
    mine, reference = namespace["model"].state_dict(), engine.model.state_dict()
    assert mine.keys() == reference.keys()
    for key, value in reference.items():
        torch.testing.assert_close(mine[key], value, rtol=1e-4, atol=1e-6, msg=key)


# --- checkpoint the recipe, restore it in a fresh process ------------------------------------------------------

RESUMABLE = textwrap.dedent('''
    import sys
    import torch
    import torch.nn.functional as F
    from torch import nn
    import torchzebra as tz

    torch.set_num_threads(1)


    def net(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1),
                             nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))


    def run(start, stop, checkpoint=None, restore=True):
        """Train steps [start, stop) on the same batches every time; from ``checkpoint`` when start > 0."""
        model = tz.prepare(net(0), tz.ZebraConfig(block_size=2, penalty="l1"))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        recipe = tz.ZebraRecipe(model, density=0.3, density_ramp_steps=10, calibrate_every=3, lam_epochs=[0.0, 0.05],
                                warmup_steps=4, steps_per_epoch=5, teacher=net(1))
        if start:
            state = torch.load(checkpoint, weights_only=True)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if restore:
                recipe.load_state_dict(state["recipe"])
        model.train()
        for step in range(start, stop):
            batch = torch.Generator().manual_seed(step)
            x, y = torch.randn(8, 1, 8, 8, generator=batch), torch.randint(0, 3, (8,), generator=batch)
            recipe.step(x)
            out = model(x)
            loss = F.cross_entropy(out, y) + recipe.loss(out)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "recipe": recipe.state_dict()}


    if __name__ == "__main__":
        start, stop, checkpoint, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
        torch.save(run(start, stop, checkpoint), out)
''')


@pytest.mark.slow
def test_a_checkpointed_recipe_continues_in_a_fresh_process_to_the_uninterrupted_state(tmp_path, one_thread):
    """12 steps straight, or 7, a checkpoint, and the other 5 in a new process (step 7 is mid-epoch, mid-ramp and
    between recalibrations): the same weights, thresholds and recipe state. Without the recipe's state it differs."""
    script = tmp_path / "resumable.py"
    script.write_text(RESUMABLE)
    namespace = {"__name__": "resumable"}
    exec(compile(RESUMABLE, str(script), "exec"), namespace)
    straight = namespace["run"](0, 12)
    torch.save(namespace["run"](0, 7), tmp_path / "step7.pt")
    forgetful = namespace["run"](7, 12, tmp_path / "step7.pt", restore=False)  # restarts its schedule at step 0
    subprocess.run([sys.executable, str(script), "7", "12", str(tmp_path / "step7.pt"), str(tmp_path / "resumed.pt")],
                   check=True, cwd=tmp_path, timeout=120)
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert resumed["recipe"] == straight["recipe"] and resumed["recipe"]["last_step"] == 11
    for key, value in straight["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    assert not all(torch.equal(forgetful["model"][k], v) for k, v in straight["model"].items())


# --- the guide's code runs as written ---------------------------------------------------------------------------

@pytest.mark.slow  # a training loop of 2 epochs with a teacher
def test_the_guides_plain_loop_runs_as_written(tmp_path, monkeypatch, calibrations, one_thread):
    monkeypatch.chdir(tmp_path)  # its checkpoint example writes checkpoint.pt
    namespace = {"__name__": "guide"}
    exec(compile(SETUP + LOOP + CHECKPOINT, str(GUIDE), "exec"), namespace)
    recipe, epochs, steps = namespace["recipe"], namespace["epochs"], len(namespace["loader"])
    assert recipe.last_step == epochs * steps - 1 and recipe.last_lam == 0.01
    assert len(calibrations) == epochs + 1  # each epoch's first step (fewer than 20 steps per epoch) and the last
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["recipe"] == recipe.state_dict()


def test_the_guides_lightning_callback_drives_and_checkpoints_the_recipe(tmp_path, monkeypatch, one_thread):
    pytest.importorskip("lightning")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "guide"}
    exec(compile(SETUP + LIGHTNING, str(GUIDE), "exec"), namespace)
    recipe = namespace["recipe"]
    assert recipe.last_step == namespace["epochs"] * len(namespace["loader"]) - 1
    checkpoint = next(tmp_path.rglob("*.ckpt"))
    saved = torch.load(checkpoint, weights_only=False)
    assert [state for key, state in saved["callbacks"].items() if "ZebraCallback" in key] == [recipe.state_dict()]
    settings = {key: value for key, value in recipe.state_dict()["settings"].items() if key != "teacher"}
    fresh = tz.ZebraRecipe(namespace["model"], **settings, teacher=namespace["baseline"])
    trainer = namespace["L"].Trainer(max_epochs=namespace["epochs"], callbacks=[namespace["ZebraCallback"](fresh)])
    trainer.fit(namespace["ZebraClassifier"](namespace["model"], fresh), namespace["loader"], ckpt_path=checkpoint)
    assert fresh.last_step == recipe.last_step  # Lightning restored it through the callback


def test_distillation_loss_is_zero_for_the_teachers_own_logits_and_pulls_towards_them():
    teacher = torch.tensor([[2.0, 0.0, -1.0]])
    assert distillation_loss(teacher, teacher, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.zeros(1, 3, requires_grad=True)
    distillation_loss(student, teacher, 2.0).backward()
    assert student.grad[0, 0] < 0 < student.grad[0, 2]  # gradient descent raises the teacher's favourite class
