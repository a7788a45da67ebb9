"""The plugin owns the `fastwam` type in every LeRobot entry point, and its processor names are its own."""

import subprocess
import sys
from pathlib import Path

import pytest
from lerobot.configs import PreTrainedConfig
from lerobot.policies.factory import get_policy_class, make_policy_config, make_pre_post_processors
from lerobot.processor import ProcessorStepRegistry

from lerobot_fastwam import FastWAMConfig, FastWAMPolicy
from lerobot_fastwam.processor_fastwam import FastWAMCameraResizeStep

from ..helpers import make_config


def test_type_fastwam_resolves_to_the_plugin():
    assert PreTrainedConfig.get_choice_class("fastwam") is FastWAMConfig
    assert isinstance(make_policy_config("fastwam", preset="tiny"), FastWAMConfig)
    assert get_policy_class("fastwam") is FastWAMPolicy
    assert make_config().type == "fastwam"


def test_make_pre_post_processors_uses_the_plugin_factory():
    pre, post = make_pre_post_processors(make_config(cameras=2))
    names = [type(s).__name__ for s in pre.steps]
    assert "FastWAMCameraResizeStep" in names
    registered = [n for n, cls in ProcessorStepRegistry._registry.items() if cls is FastWAMCameraResizeStep]
    assert registered == ["fastwam_plugin_camera_resize"]
    # LeRobot's scripts override these two steps by name, so they must stay.
    step_names = {getattr(type(s), "_registry_name", None) for s in pre.steps}
    assert {"rename_observations_processor", "device_processor"} <= step_names


def test_lerobot_plugin_discovery_selects_the_plugin_in_a_fresh_interpreter():
    code = (
        "import logging; logging.basicConfig(level=logging.INFO)\n"
        "from lerobot.utils.import_utils import register_third_party_plugins\n"
        "register_third_party_plugins()\n"
        "from lerobot.policies.factory import get_policy_class\n"
        "print(get_policy_class('fastwam').__module__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "lerobot_fastwam.modeling_fastwam"
    assert result.stderr.count("now resolves to the lerobot_fastwam plugin") == 1


@pytest.mark.parametrize("script", ["lerobot-train", "lerobot-eval", "lerobot-rollout"])
def test_help_of_each_lerobot_script_shows_the_plugins_options(script):
    """argparse %-formats every help string: a stray percent sign in a config comment crashed --help."""
    executable = Path(sys.executable).with_name(script)
    result = subprocess.run(
        [str(executable), "--policy.type=fastwam", "--help"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--policy.action_clamp_margin" in result.stdout and "--policy.video_codec" in result.stdout
