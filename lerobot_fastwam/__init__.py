"""Fast-WAM for LeRobot: a World Action Model policy (Wan2.2-TI2V-5B video expert + action expert).

Importing this package makes the policy type ``fastwam`` resolve to this plugin in every LeRobot script,
replacing the built-in ``lerobot.policies.fastwam`` (``plugin.py`` says what it changes in LeRobot and why), and
registers the env type ``metaworld_cpu`` (``metaworld_env.py``).
"""

from . import metaworld_env  # noqa: F401  (registers --env.type=metaworld_cpu; metaworld is imported lazily)
from .configuration_fastwam import FastWAMConfig
from .modeling_fastwam import FastWAMPolicy
from .plugin import install
from .processor_fastwam import make_fastwam_pre_post_processors

install()

__all__ = ["FastWAMConfig", "FastWAMPolicy", "make_fastwam_pre_post_processors"]
__version__ = "0.1.0"
