"""What a user gets from ``pip install``: the built wheel, in a fresh virtual environment, is a LeRobot plugin.

The suite itself runs against the editable install in ``.venv``, which reads the source tree; this test alone
checks what is shipped. ``python -m build`` makes the sdist and then the wheel from that sdist (so the sdist holds
everything a build needs); the wheel goes into a new venv with its declared dependencies resolved by pip, and the
new venv's own ``lerobot-train``, started outside the repository, must list the plugin's options. The dependencies
are installed for real rather than borrowed from ``.venv`` (whose editable install would be found too): that is
what checks the wheel's requirements. Measured on the 2-core CI machine, pip's cache empty, three runs beside other
jobs: 112-176 s in all, most of it pip downloading and unpacking 5.6 GB (PyTorch and its CUDA libraries).
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import lerobot_fastwam

REPO = Path(__file__).resolve().parents[1]
PLUGIN_ONLY_OPTION = "--policy.action_consistency_weight"  # not a field of LeRobot's built-in fastwam
TIMEOUT_S = 300  # a build, a venv, a command's --help (seconds)
INSTALL_TIMEOUT_S = 1200  # pip downloading torch and LeRobot on a slow link


def run(cmd: list, cwd: Path, timeout: int) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))}:\n{(result.stdout + result.stderr)[-6000:]}"
    return result.stdout + result.stderr


@pytest.fixture
def scratch():
    """A directory deleted afterwards: the fresh venv holds 5.6 GB, and pytest keeps ``tmp_path`` for three runs."""
    with tempfile.TemporaryDirectory(prefix="fastwam_packaging_") as path:
        yield Path(path)


def test_the_built_wheel_installs_into_a_fresh_venv_and_lerobot_train_finds_the_plugin(scratch):
    dist = scratch / "dist"
    log = run([sys.executable, "-m", "build", "--outdir", dist, REPO], scratch, TIMEOUT_S)
    assert "Building wheel from sdist" in log
    assert "SetuptoolsDeprecationWarning" not in log  # e.g. the TOML-table `project.license`, refused from 2027
    (wheel,) = dist.glob("lerobot_policy_fastwam-*.whl")
    (sdist,) = dist.glob("lerobot_policy_fastwam-*.tar.gz")
    assert wheel.name.split("-")[1] == sdist.name.removesuffix(".tar.gz").split("-")[1] == lerobot_fastwam.__version__

    venv = scratch / "venv"
    run([sys.executable, "-m", "venv", venv], scratch, TIMEOUT_S)
    python = venv / "bin" / "python"
    run([python, "-m", "pip", "install", "--quiet", wheel], scratch, INSTALL_TIMEOUT_S)

    where = run([python, "-c", "import lerobot_fastwam; print(lerobot_fastwam.__file__)"], scratch, TIMEOUT_S)
    assert f"{venv}/lib/" in where and str(REPO / "lerobot_fastwam") not in where, where  # the wheel's copy
    usage = run([venv / "bin" / "lerobot-train", "--policy.type=fastwam", "--help"], scratch, TIMEOUT_S)
    assert PLUGIN_ONLY_OPTION in usage
    assert "memory" in run([venv / "bin" / "lerobot-fastwam", "--help"], scratch, TIMEOUT_S)  # the wheel's command
