"""Fixtures of the policy tests."""

import logging

import pytest


@pytest.fixture
def isolated_lerobot_logging(monkeypatch, tmp_path):
    """Importing LeRobot's policy server or robot client runs its ``init_logging``: it replaces the root logger's
    handlers (console, plus a DEBUG log file under ``logs/`` in the working directory). Run in ``tmp_path`` and
    put the handlers back for the tests that follow."""
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
