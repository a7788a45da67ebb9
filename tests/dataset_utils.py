"""Synthetic LeRobotDataset v3 writer for the tests.

The writer lives in ``examples/synthetic_dataset.py`` (the demo uses it too); this module re-exports it so the
tests and the example share one implementation.
"""

from __future__ import annotations

import sys
from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
if str(EXAMPLES_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLES_DIR))

from synthetic_dataset import TASKS, dataset_features, make_dataset  # noqa: E402

__all__ = ["TASKS", "dataset_features", "make_dataset"]
