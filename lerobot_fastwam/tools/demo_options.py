"""The command line of ``lerobot-fastwam demo``: its options, every check made before anything runs, the
commands it hands to LeRobot, and which directories it may replace.

A demo spends minutes recording and caching before it trains, so every option, the ``--policy.*`` flags for
``lerobot-train`` included, is checked first. The demo deletes only what it wrote: it marks its output directory
(``OUTPUT_MARKER``) and each recording (``RECORDING_MARKER``), replaces its stage outputs only in a marked
directory, and refuses a non-empty unmarked ``--output`` or recording directory unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import shutil
import sys
from pathlib import Path

from .help_format import DefaultsHelpFormatter

PROBE_FRAMES = 96  # held-out frames for the probes (``--probe-frames``)

OUTPUT_MARKER = "fastwam_demo_output.json"  # in the output directory: the demo's own (see _clear_stage)
RECORDING_MARKER = "fastwam_demo_recording.json"  # in a finished recording: what was recorded


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="lerobot-fastwam demo", description=__doc__, formatter_class=DefaultsHelpFormatter
    )
    parser.add_argument(
        "--task",
        default="button-press-topdown-v3",
        help="Meta-World v3 task(s), comma-separated: one language-conditioned policy for all",
    )
    parser.add_argument("--output", type=Path, default=Path("outputs/fastwam_demo"), help="output directory")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="where the recorded datasets live (default OUTPUT/data; share it between runs)",
    )
    parser.add_argument("--episodes", type=int, default=50, help="scripted episodes recorded per task")
    parser.add_argument(
        "--expert",
        choices=["scripted", "around-wall"],
        default="scripted",
        help="who demonstrates: each task's Meta-World expert, or (reach-wall-v3 only) a bimodal expert that goes "
        "around the wall on the left or on the right at random, where the average of the two fails",
    )
    parser.add_argument("--steps", type=int, default=1000, help="training steps (about 0.7 s each on 2 cores)")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch size")
    parser.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (cosine to 1%% over --steps)")
    parser.add_argument("--eval-episodes", type=int, default=20, help="evaluation episodes per task")
    parser.add_argument("--episode-length", type=int, default=500, help="evaluation step limit, as Meta-World's own")
    parser.add_argument("--seed", type=int, default=1000, help="training seed; evaluation resets use seed, seed+1, ...")
    parser.add_argument(
        "--video-loss-weight",
        type=float,
        default=1.0,
        help="1: video co-training (Fast-WAM); 0: the paper's ablation without it",
    )
    parser.add_argument(
        "--baseline",
        choices=["act"],
        default=None,
        help="also train LeRobot's ACT on the same data for the same wall time",
    )
    parser.add_argument("--device", default="cpu", help="where to train and evaluate (cpu, cuda, mps)")
    parser.add_argument("--probe-frames", type=int, default=PROBE_FRAMES, help="held-out frames for the probes")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="use a non-empty --output that no earlier demo wrote, replacing train/, eval/, act_train/, act_eval/ "
        "and the report files in it, and delete unmarked recording directories under --data to record there",
    )
    args, extra = parser.parse_known_args(argv)
    if any(not arg.startswith("--") for arg in extra):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.train_args = extra  # anything else goes to Fast-WAM's lerobot-train, e.g. --policy.num_layers=6
    args.tasks = [t.strip().removeprefix("metaworld-") for t in args.task.split(",") if t.strip()]
    if not args.tasks:
        parser.error(f"--task {args.task!r} names no task: pass one or more, e.g. --task button-press-topdown-v3")
    from ..sim.metaworld import task_descriptions  # noqa: PLC0415

    known = task_descriptions()
    unknown = [t for t in args.tasks if t not in known]
    if unknown:
        parser.error(f"unknown Meta-World task(s) {unknown}; choose from: {', '.join(sorted(known))}")
    if args.expert == "around-wall" and args.tasks != ["reach-wall-v3"]:
        parser.error(
            f"--expert around-wall demonstrates reach-wall-v3 only: pass --task reach-wall-v3, not {args.task}"
        )
    for name in ("episodes", "steps", "batch_size", "eval_episodes", "episode_length", "probe_frames"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 < args.lr < math.inf:
        parser.error(f"--lr must be a positive number, not {args.lr}: pass e.g. --lr 5e-4")
    if not 0 <= args.video_loss_weight < math.inf:
        parser.error(
            f"--video-loss-weight must be 0 or more, not {args.video_loss_weight}: 1 co-trains the video, 0 does not"
        )
    _check_device(parser, args.device)
    _check_lerobot_flags(parser, args)
    if args.data is not None and args.data.exists() and not args.data.is_dir():
        parser.error(f"--data {args.data} is a file: pass a directory for the recorded datasets")
    data, heldout = recording_roots(args)
    for refusal in (
        output_refusal(args.output, args.overwrite),
        recording_refusal(data, args.overwrite),
        recording_refusal(heldout, args.overwrite),
    ):
        if refusal:
            parser.error(refusal)
    return args


def _check_device(parser: argparse.ArgumentParser, device: str) -> None:
    """LeRobot would quietly switch an unavailable device to another one; the demo says so instead."""
    from lerobot.utils.device_utils import is_torch_device_available  # noqa: PLC0415

    try:
        available = is_torch_device_available(device)
    except ValueError as err:
        parser.error(f"--device {device}: {err} Pass e.g. --device cpu")
    if not available:
        parser.error(f"--device {device} is not available on this machine: pass --device cpu")


def _check_lerobot_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Parse the flags handed on to ``lerobot-fastwam cache`` and ``lerobot-train`` (``args.train_args`` among
    the demo's own) as those will parse them: a misspelt or malformed flag would otherwise stop the demo only
    after minutes of recording and caching. The flag at fault is found by trying each alone."""
    error = _lerobot_flags_error(args, args.train_args)
    if error is None:
        return
    flag, error = next(
        ((flag, alone) for flag in args.train_args if (alone := _lerobot_flags_error(args, [flag]))),
        (" ".join(args.train_args) or "the demo's options", error),
    )
    parser.error(
        f"{flag}: {error}. Fix or drop it (the --policy.* options are the fields of "
        "lerobot_fastwam.configuration_fastwam.FastWAMConfig; the others go to lerobot-train, see its --help)"
    )


def _lerobot_flags_error(args: argparse.Namespace, train_args: list[str]) -> str | None:
    """What ``lerobot-fastwam cache`` or ``lerobot-train`` would stop on, with ``train_args`` passed on to them."""
    import draccus  # noqa: PLC0415
    from lerobot.configs.train import TrainPipelineConfig  # noqa: PLC0415

    from .cache import CacheConfig  # noqa: PLC0415

    args = argparse.Namespace(**{**vars(args), "train_args": train_args})
    unused = Path("unused")
    for tool, config_class, argv in (
        ("lerobot-fastwam cache", CacheConfig, cache_args(args, unused)),
        ("lerobot-train", TrainPipelineConfig, train_command(args, unused, unused, fastwam_policy_args(args), 1)[1:]),
    ):
        try:
            with _quiet() as printed:
                draccus.parse(config_class=config_class, args=argv)
        except SystemExit:
            return f"{tool} refuses it ({printed.getvalue().strip().rsplit('error: ', 1)[-1]})"
        except Exception as err:  # noqa: BLE001 (a refused value: draccus wraps the config's own error)
            causes = [err]
            while causes[-1].__cause__ or causes[-1].__context__:
                causes.append(causes[-1].__cause__ or causes[-1].__context__)
            said = next(c for c in reversed(causes) if isinstance(c, draccus.utils.DraccusException) or c is err)
            reason = f" ({type(causes[-1]).__name__}: {causes[-1]})" if causes[-1] is not said else ""
            return f"{tool} refuses it ({str(said).strip()}{reason})"
    return None


@contextlib.contextmanager
def _quiet():
    """Capture what a check's parse prints (yielded) and mute LeRobot's warnings: argparse prints its whole usage
    before its error, and LeRobot warns at every parse (its video decoder fallback), which the stages print anyway."""
    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stderr(io.StringIO()) as printed:
            yield printed
    finally:
        logging.disable(disabled)


def recording_roots(args: argparse.Namespace) -> tuple[Path, Path]:
    """The training and held-out recordings: ``DATA/demonstrations`` and ``DATA/heldout``."""
    data_dir = args.data or args.output / "data"
    return data_dir / "demonstrations", data_dir / "heldout"


def output_refusal(out: Path, overwrite: bool) -> str | None:
    """Why ``out`` cannot be the demo's output directory (None: it can): the demo replaces its stage outputs
    there, so it takes a new or empty directory, one it marked earlier, or any directory with ``--overwrite``."""
    if out.exists() and not out.is_dir():
        return f"--output {out} is a file: pass a new or empty directory, or an earlier demo's output"
    if out.is_dir() and any(out.iterdir()) and not (out / OUTPUT_MARKER).is_file() and not overwrite:
        return (
            f"--output {out} is a non-empty directory that lerobot-fastwam demo did not create (no {OUTPUT_MARKER} "
            "in it), and the demo replaces train/, eval/ and its report files in its output: choose a new or empty "
            f"directory, or add --overwrite to let it replace them in {out}"
        )
    return None


def recording_refusal(root: Path, overwrite: bool) -> str | None:
    """Why ``record`` cannot delete ``root`` to record there (None: it can): only a recording the demo made,
    finished (its marker) or interrupted (the pending marker beside it), or any directory with ``--overwrite``."""
    if root.exists() and not root.is_dir():
        return f"{root} is a file, where the demo records a dataset: choose another --data directory"
    ours = (root / RECORDING_MARKER).is_file() or pending_marker(root).is_file()
    if root.is_dir() and any(root.iterdir()) and not ours and not overwrite:
        return (
            f"{root} is a non-empty directory that lerobot-fastwam demo did not record (no {RECORDING_MARKER} in "
            f"it), and the demo deletes a recording it has to redo: choose another --data directory, or add "
            f"--overwrite to let it delete {root}"
        )
    return None


def pending_marker(root: Path) -> Path:
    """Written beside ``root`` while recording into it (LeRobot creates the dataset directory itself), so that an
    interrupted recording is known as the demo's."""
    return root.parent / f"{root.name}.{RECORDING_MARKER}"


def clear_stage(path: Path) -> None:
    """Delete an earlier run's stage output (``train/``, ``eval/``, ...) in the demo's own output directory;
    outside one, refuse a non-empty ``path`` (an empty directory is used as it is)."""
    if (path.parent / OUTPUT_MARKER).is_file():
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    elif path.exists() and not (path.is_dir() and not any(path.iterdir())):
        raise FileExistsError(
            f"{path} exists and is not in a lerobot-fastwam demo output directory (no {OUTPUT_MARKER} beside it): "
            "move or delete it yourself, or choose another directory"
        )


def lerobot_script(name: str) -> str:
    """A LeRobot console script next to this Python (the same environment)."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def cache_args(args, data: Path) -> list[str]:
    """``lerobot-fastwam cache`` arguments: the ``--policy.*`` flags passed on shape the cached inputs."""
    return [
        f"--dataset.repo_id={dataset_repo_id(args.tasks)}",
        f"--dataset.root={data}",
        "--policy.preset=cpu",
        f"--policy.device={args.device}",
        "--num_workers=1",
        *(a for a in args.train_args if a.startswith("--policy.")),
    ]


def train_command(args, data: Path, out: Path, policy_args: list[str], steps: int, workers: int = 1) -> list[str]:
    """``workers``: lerobot-train's data-loading worker processes (0: the trainer's own process loads)."""
    return [
        lerobot_script("lerobot-train"),
        *policy_args,
        f"--policy.device={args.device}",
        "--policy.push_to_hub=false",
        "--dataset.repo_id=" + dataset_repo_id(args.tasks),
        f"--dataset.root={data}",
        "--dataset.video_backend=pyav",
        f"--steps={steps}",
        f"--save_freq={steps}",
        f"--log_freq={log_freq(steps)}",
        f"--num_workers={workers}",
        f"--seed={args.seed}",
        "--wandb.enable=false",
        f"--output_dir={out}",
    ]


def log_freq(steps: int) -> int:
    return max(1, min(50, steps // 20))


def fastwam_policy_args(args) -> list[str]:
    return [
        "--policy.type=fastwam",
        "--policy.preset=cpu",
        f"--policy.optimizer_lr={args.lr}",
        f"--policy.scheduler_warmup_steps={max(1, args.steps // 20)}",
        f"--policy.scheduler_decay_steps={args.steps}",
        f"--policy.scheduler_decay_lr={args.lr / 100}",
        f"--policy.video_loss_weight={args.video_loss_weight}",
        f"--batch_size={args.batch_size}",
        *args.train_args,
    ]


def dataset_repo_id(tasks: list[str]) -> str:
    return "local/metaworld_" + "_".join(tasks)
