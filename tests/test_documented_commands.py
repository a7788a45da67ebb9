"""Every shell command in README.md, examples/ and docs/ is checked the way its program checks it before its job, so
a LeRobot upgrade or a renamed flag breaks this test instead of a user's run (issue #21: every documented
``lerobot-train`` stopped at once on LeRobot 0.6.1's ``'repo_id' argument missing``).

Commands come from fenced ``bash`` / ``sh`` / ``shell`` blocks and untagged blocks that start with a command, with
``\\`` continuations, comments, ``NAME=value`` prefixes, ``.venv/bin/`` paths, ``$(which ...)`` and the block's own
shell variables handled as the shell does. Each program runs from its entry point until it parses its command line
(argparse or draccus), is stopped there, and that parse alone is run, so the job never starts:

- ``lerobot-train`` / ``-eval`` / ``-rollout`` / ``-record``: the ``parser.wrap``-ed function their ``main`` calls,
  with the plugin imported; the config's ``__post_init__`` is part of the parse (eval and rollout load
  ``--policy.path``'s config there), and ``lerobot-train`` then runs ``TrainPipelineConfig.validate()``, its first
  step, which holds the push-to-Hub check; a recording ``lerobot-rollout``'s dataset name must start with
  ``rollout_``, which LeRobot checks once the robot is connected.
- ``lerobot-fastwam cache | serve | convert | memory``, ``python -m lerobot.async_inference.robot_client``,
  ``python benchmarks/*.py``: their own draccus or argparse parse (checks a program makes after its parse, such as
  ``memory --measure --device cuda`` needing a GPU, are not made). ``lerobot-fastwam demo``:
  ``demo_options.parse_args``, every check the demo makes before recording.
- ``accelerate launch``: accelerate's own parser and its ``--config_file`` in the repository, then the launched
  program as above.

Not checked: ``pip`` (installs packages) and ``bash scripts/test.sh`` (runs the whole suite). The only edits made to
a documented command are in ``SUBSTITUTIONS`` and ``VARIABLES``.
"""

import argparse
import contextlib
import dataclasses
import io
import re
import runpy
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import draccus
import pytest

import lerobot_fastwam  # noqa: F401  (registers the plugin, as LeRobot's scripts do at start)

from .helpers import make_config

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "examples").rglob("*.md")), *sorted((REPO / "docs").rglob("*.md"))]

# The arguments a documented command cannot be checked with as written (a whole argument matches), and what they
# become. A documented checkpoint is an earlier step's output or on the Hub, and the programs read its config.json
# before their job. Placeholders such as <you>/so101_pick_cube stay: the programs read them as plain strings before
# their job. Every command runs in an empty working directory, so outputs/... are new as on a fresh checkout;
# accelerate configs and benchmark scripts are read from the repository.
SUBSTITUTIONS = {re.compile(r"--policy\.path=.*"): "--policy.path={checkpoint}"}
VARIABLES = {"DATA": "<you>/dataset"}  # shell variables a document uses without setting them

SHELL_LANGUAGES = {"bash", "sh", "shell"}
NOT_CHECKED = {"pip": "installs packages", "bash": "scripts/test.sh runs the whole test suite"}
FENCE = re.compile(r"^(\s*)(```+)\s*(\w*)")


@dataclasses.dataclass(frozen=True)
class Command:
    document: str
    line: int
    text: str  # as written, continuations joined
    argv: tuple[str, ...]  # program first: NAME=value prefixes dropped, the block's variables expanded

    @property
    def program(self) -> str:
        """The program, as NOT_CHECKED and the checks name it: lerobot-train, accelerate, python, pip, ..."""
        return Path(self.argv[0]).name

    def __str__(self) -> str:
        return f"{self.document}:{self.line}"


def shell_blocks(path: Path):
    """(line number of the first line, lines) of each fenced shell block of a Markdown file."""
    block, fence, language = None, None, None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = FENCE.match(line)
        if block is None and match:
            block, fence, language, start = [], match, match.group(3), number + 1
        elif block is not None and match and len(match.group(2)) >= len(fence.group(2)) and not match.group(3):
            words = next((text.split() for text in block if text.strip()), [""])
            if language in SHELL_LANGUAGES or (not language and Path(words[0]).name in {*CHECKS, *NOT_CHECKED}):
                yield start, block
            block = None
        elif block is not None:
            block.append(line.removeprefix(fence.group(1)))


def uncommented(text: str) -> str | None:
    """``text`` without its comments (an unquoted ``#`` that starts a word, to the end of its line), or None while a
    quote is still open."""
    kept, quote, i = [], None, 0
    while i < len(text):
        char = text[i]
        if quote is None and char == "#" and (not kept or kept[-1].isspace()):
            i = text.find("\n", i)
            if i < 0:
                break
            continue
        if char == "\\" and quote != "'":
            kept.append(text[i : i + 2])
            i += 2
            continue
        if char in "'\"" and quote in (None, char):
            quote = None if quote else char
        kept.append(char)
        i += 1
    return None if quote else "".join(kept)


def expand(word: str, variables: dict[str, str]) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise KeyError(f"${name} is not set in its block: add it to VARIABLES")
        return variables[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, word)


def documented_commands(path: Path) -> list[Command]:
    commands = []
    for start, lines in shell_blocks(path):
        variables, pending, first = dict(VARIABLES), "", None
        for number, line in enumerate(lines, start):
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            first = first or number
            line = line.rstrip()
            pending += (line[:-1] + " ") if line.endswith("\\") else line + "\n"
            text = uncommented(pending)
            if line.endswith("\\") or text is None:
                continue
            words = [expand(word, variables) for word in shlex.split(re.sub(r"\$\(which (\S+)\)", r"\1", text))]
            while words and re.fullmatch(r"\w+=.*", words[0], re.DOTALL):
                name, _, value = words.pop(0).partition("=")
                if not words:  # NAME=value alone sets a variable of the block
                    variables[name] = value
            if words:
                commands.append(Command(str(path.relative_to(REPO)), first, " ".join(pending.split()), tuple(words)))
            pending, first = "", None
        assert not pending, f"{path.relative_to(REPO)}:{first}: a quote or a continuation is never closed"
    return commands


class StoppedAtParse(Exception):
    """Raised where a program parses its command line: the parse method, its parser and the arguments given."""

    def __init__(self, parse: Callable, parser: object, argv: list[str] | None):
        super().__init__()
        self.parse, self.parser, self.argv = parse, parser, argv


PARSE_METHODS = [
    (parser_class, name)
    for parser_class in (argparse.ArgumentParser, draccus.argparsing.ArgumentParser)
    for name in ("parse_args", "parse_known_args")
]


def run_to_parse(entry: Callable[[], object], argv: list[str], then: Callable[[object], object] | None = None):
    """Run ``entry`` with ``argv`` as the command line until it parses it, then only that parse and ``then`` on its
    result (with the same ``sys.argv``, which LeRobot reads again)."""

    def stop(parse: Callable) -> Callable:
        def at_parse(self, args=None, namespace=None, **kwargs):
            raise StoppedAtParse(parse, self, args)

        return at_parse

    with pytest.MonkeyPatch.context() as command_line:
        command_line.setattr(sys, "argv", argv)
        try:
            with pytest.MonkeyPatch.context() as parsers:
                for parser_class, name in PARSE_METHODS:
                    parsers.setattr(parser_class, name, stop(getattr(parser_class, name)))
                entry()
        except StoppedAtParse as stopped:
            parsed = stopped.parse(stopped.parser, stopped.argv)
            return then(parsed) if then else parsed
        raise AssertionError(f"{argv[0]} returned without parsing its command line")


def run_script(path: Path) -> Callable[[], object]:
    """``python path``: the script run as __main__, its directory first on sys.path."""

    def entry():
        with pytest.MonkeyPatch.context() as script:
            script.syspath_prepend(str(path.parent))
            runpy.run_path(str(path), run_name="__main__")

    return entry


def check_lerobot_train(args: list[str]) -> None:
    from lerobot.configs.train import TrainPipelineConfig
    from lerobot.scripts.lerobot_train import train

    run_to_parse(train, ["lerobot-train", *args], then=TrainPipelineConfig.validate)


def check_lerobot_eval(args: list[str]) -> None:
    from lerobot.scripts.lerobot_eval import eval_main

    run_to_parse(eval_main, ["lerobot-eval", *args])


def check_lerobot_rollout(args: list[str]) -> None:
    from lerobot.scripts.lerobot_rollout import rollout

    config = run_to_parse(rollout, ["lerobot-rollout", *args])
    # LeRobot refuses a recording's name only once the robot is connected (lerobot.rollout.context): check it here
    if config.dataset is not None and not config.dataset.repo_id.split("/", 1)[-1].startswith("rollout_"):
        raise ValueError(f"--dataset.repo_id={config.dataset.repo_id}: rollout dataset names must start with rollout_")


def check_lerobot_record(args: list[str]) -> None:
    from lerobot.scripts.lerobot_record import record

    run_to_parse(record, ["lerobot-record", *args])


def check_lerobot_fastwam(args: list[str]) -> None:
    from lerobot_fastwam.tools import cli, demo_options

    if args[:1] == ["demo"]:
        demo_options.parse_args(args[1:])
    else:
        run_to_parse(cli.main, ["lerobot-fastwam", *args])


def check_accelerate(args: list[str]) -> None:
    from accelerate.commands.accelerate_cli import main

    launch = run_to_parse(main, ["accelerate", *args])
    if launch.config_file and not (REPO / launch.config_file).is_file():
        raise FileNotFoundError(f"--config_file {launch.config_file} is not in the repository")
    check([launch.training_script, *launch.training_script_args])


def check_python(args: list[str]) -> None:
    if args[:2] == ["-m", "lerobot.async_inference.robot_client"]:
        from lerobot.async_inference.robot_client import async_client

        run_to_parse(async_client, args[1:])
    elif args and args[0].startswith("benchmarks/") and args[0].endswith(".py"):
        run_to_parse(run_script(REPO / args[0]), args)
    else:
        raise NotImplementedError(f"python {' '.join(args[:2])}: no check; add one or list it in NOT_CHECKED")


CHECKS = {
    "lerobot-train": check_lerobot_train,
    "lerobot-eval": check_lerobot_eval,
    "lerobot-rollout": check_lerobot_rollout,
    "lerobot-record": check_lerobot_record,
    "lerobot-fastwam": check_lerobot_fastwam,
    "accelerate": check_accelerate,
    "python": check_python,
}


def check(argv: list[str]) -> None:
    CHECKS[Path(argv[0]).name](list(argv[1:]))


def substituted(argv: tuple[str, ...], checkpoint: Path) -> list[str]:
    return [
        next((new.format(checkpoint=checkpoint) for old, new in SUBSTITUTIONS.items() if old.fullmatch(word)), word)
        for word in argv
    ]


def refusal(command: Command, checkpoint: Path) -> str | None:
    """Why ``command``'s program refuses it before its job (its error message), or None."""
    with contextlib.redirect_stderr(io.StringIO()) as printed, contextlib.redirect_stdout(io.StringIO()):
        try:
            check(substituted(command.argv, checkpoint))
        except SystemExit as stop:  # argparse and draccus print the error, then exit
            return printed.getvalue().strip().rsplit("error: ", 1)[-1] or f"exit status {stop.code}"
        except Exception as err:  # noqa: BLE001 (a refused value: the config's own error, maybe wrapped)
            causes = [err]
            while causes[-1].__cause__ is not None:
                causes.append(causes[-1].__cause__)
            return " <- ".join(f"{type(e).__name__}: {e}" for e in causes)
    return None


COMMANDS = [command for document in DOCUMENTS for command in documented_commands(document)]
CHECKED = [command for command in COMMANDS if command.program in CHECKS]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny Fast-WAM checkpoint's config.json, all the programs read of --policy.path before their job. It keeps
    LeRobot's push_to_hub=true, as a checkpoint from the Hub may."""
    path = tmp_path_factory.mktemp("checkpoint")
    make_config().save_pretrained(path)
    return path


@pytest.mark.parametrize("command", CHECKED, ids=str)
def test_documented_command_passes_its_programs_checks(command, checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    error = refusal(command, checkpoint)
    assert error is None, f"{command}: `{command.text}` is refused by {command.program}: {error}"


def test_every_documented_command_is_checked_or_excused():
    assert {command.program for command in COMMANDS} - set(CHECKS) <= set(NOT_CHECKED)
    documents = {command.document for command in CHECKED}
    assert {
        "README.md",
        "examples/robot_recipes.md",
        "docs/training_recipes.md",
        "docs/distributed.md",
        "docs/benchmarks.md",
    } <= documents


def documented_train_command() -> Command:
    return next(c for c in CHECKED if c.document == "examples/robot_recipes.md" and c.program == "lerobot-train")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda word: word.replace("--policy.n_action_steps=", "--policy.n_action_step="), "--policy.n_action_step"),
        (lambda word: "" if word == "--policy.push_to_hub=false" else word, "'repo_id' argument missing"),
    ],
    ids=["misspelt flag", "no push_to_hub=false"],
)
def test_a_changed_documented_command_fails_naming_the_cause(change, named, checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    command = documented_train_command()
    changed = dataclasses.replace(command, argv=tuple(word for word in map(change, command.argv) if word))
    assert changed.argv != command.argv
    assert named in (refusal(changed, checkpoint) or "")
