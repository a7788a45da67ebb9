"""Fast-WAM for LeRobot: a World Action Model policy (Wan2.2-TI2V-5B video expert + action expert).

Importing this package makes the policy type ``fastwam`` resolve to this plugin in every LeRobot script,
replacing the built-in ``lerobot.policies.fastwam`` (``plugin.py`` says what it changes in LeRobot and why), and
registers the env type ``metaworld_cpu`` (``sim/metaworld.py``) and the simulated robot ``metaworld_arm``
(``sim/metaworld_arm.py``); both import Meta-World itself only when used.

The folder tree is the architecture (``docs/architecture.md``): the LeRobot face at this level (config, policy,
processors, plugin, safety, optimizer presets), then ``network/``, ``encoders/``, ``data/``, ``checkpoints/``,
``sim/``, and the ``lerobot-fastwam`` command in ``tools/``.
"""

from . import sim  # noqa: F401  (registers --env.type=metaworld_cpu and --robot.type=metaworld_arm)
from .configuration_fastwam import FastWAMConfig, default_features
from .modeling_fastwam import FastWAMPolicy
from .plugin import install
from .processor_fastwam import make_fastwam_pre_post_processors

install()

__all__ = ["FastWAMConfig", "FastWAMPolicy", "default_features", "make_fastwam_pre_post_processors"]
__version__ = "0.1.0"
