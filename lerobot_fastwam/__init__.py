"""Fast-WAM for LeRobot: a World Action Model policy (Wan2.2-TI2V-5B video expert + action expert).

Importing this package makes the policy type ``fastwam`` resolve to this plugin in every LeRobot script
(``--policy.type=fastwam``, ``get_policy_class("fastwam")``, ``make_pre_post_processors``), replacing the
built-in ``lerobot.policies.fastwam``, and registers the env type ``metaworld_cpu`` (``metaworld_env.py``).
"""

import logging

from . import metaworld_env  # noqa: F401  (registers --env.type=metaworld_cpu; metaworld is imported lazily)
from .configuration_fastwam import _TOOK_OVER_BUILTIN, FastWAMConfig
from .modeling_fastwam import FastWAMPolicy
from .processor_fastwam import make_fastwam_pre_post_processors

if _TOOK_OVER_BUILTIN:
    logging.getLogger(__name__).info(
        "lerobot-fastwam: policy type 'fastwam' now resolves to the lerobot_fastwam plugin "
        "(replacing LeRobot's built-in lerobot.policies.fastwam)."
    )

__all__ = ["FastWAMConfig", "FastWAMPolicy", "make_fastwam_pre_post_processors"]
__version__ = "0.1.0"
