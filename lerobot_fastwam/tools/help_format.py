"""How the ``lerobot-fastwam`` commands print ``--help``: with each option's default, so a user need not read the
source to know what a run without the option does."""

from __future__ import annotations

import argparse


class DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: ...)`` to each option's help, keeps a description's own line breaks, and says nothing for
    a ``None`` default: such an option's help says what it falls back to (the preset's, OUTPUT/data, ...)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)
