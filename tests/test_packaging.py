"""The package as users get it: an sdist and a wheel built by the standard front end, installed into a fresh
virtual environment (reusing this one's torch), and used from outside the checkout."""

import re
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# builds the sdist and the wheel, and installs it into a fresh environment: once, on one xdist worker (the build
# writes into the checkout)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("packaging")]


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """The sdist, then the wheel built from the unpacked sdist (so the sdist must hold everything)."""
    folder = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(folder), str(ROOT)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"the build failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return folder


@pytest.fixture(scope="module")
def installed(dist, tmp_path_factory) -> Path:
    """A fresh venv holding the built wheel; this environment's packages are visible through a .pth file."""
    env = tmp_path_factory.mktemp("env")
    venv.create(env, with_pip=False)
    site = next((env / "lib").glob("python*/site-packages"))
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel, = dist.glob("*.whl")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install", "--quiet",
                    "--no-deps", "--no-index", "--force-reinstall", str(wheel)], check=True)
    return env


def _run(env: Path, *command: str, cwd: Path) -> str:
    result = subprocess.run([str(env / "bin" / command[0]), *command[1:]], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_sdist_and_wheel_ship_the_presets_and_the_cpu_kernels_source(dist):
    wheel, = dist.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"torchzebra/config/presets/quick.yaml", "torchzebra/config/presets/paper.yaml",
            "torchzebra/core/cpu_kernel.c"} <= set(names)
    assert any(p.name.endswith(".tar.gz") for p in dist.iterdir())


def test_the_installed_wheel_works_outside_the_checkout(installed, tmp_path):
    where = _run(installed, "python", "-c", "import torchzebra; print(torchzebra.__file__)", cwd=tmp_path)
    assert where.startswith(str(installed)), where  # the wheel's copy, not the checkout
    assert "usage: zebra" in _run(installed, "zebra", "--help", cwd=tmp_path)
    presets = ("from torchzebra.config import load_config; "
               "print(load_config('quick').data.name, load_config('paper').data.name)")
    assert _run(installed, "python", "-c", presets, cwd=tmp_path).split() == ["fashion-mnist", "tiny-imagenet"]


def test_the_installed_wheel_declares_what_it_needs(installed, tmp_path):
    code = ("import importlib.metadata as m; from packaging.requirements import Requirement; "
            "bad = [str(r) for r in map(Requirement, m.requires('torchzebra')) if not r.marker "
            "and not r.specifier.contains(m.version(r.name), prereleases=True)]; print(bad)")
    assert _run(installed, "python", "-c", code, cwd=tmp_path).strip() == "[]"


def test_the_readme_quick_start_runs_from_the_installed_wheel(installed, tmp_path):
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1]
    code = re.search(r"```python\n(.*?)```", quick_start, re.S).group(1)
    out = _run(installed, "python", "-c", code, cwd=tmp_path)
    assert "Activation traffic" in out
