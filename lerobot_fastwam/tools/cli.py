"""``lerobot-fastwam``: command-line tools around the policy.

lerobot-fastwam convert CHECKPOINT.pt --dataset-stats dataset_stats.json --output DIR
lerobot-fastwam demo --task button-press-topdown-v3 --output DIR [--baseline act]
lerobot-fastwam cache --dataset.repo_id=ID [--dataset.root=DIR] [--policy.<option>=... as for training]
lerobot-fastwam serve [--host=H --port=P --rename_map='{...}' ... as LeRobot's policy_server]
lerobot-fastwam memory --preset wan2.2-ti2v-5b [--recipe full frozen-video lora] [--batch-size N] [--gpu-memory-gb 24]
"""

from __future__ import annotations

import argparse
import logging
import re
import sys

import torch

from .cache import cache
from .convert import CONVERSION_DEFAULTS, convert
from .help_format import DefaultsHelpFormatter
from .serve import serve

TORCHCODEC_FALLBACK = "'torchcodec' is installed but cannot be loaded"  # LeRobot's warning before it uses pyav


class TorchcodecWithoutFFmpeg(logging.Filter):
    """Without FFmpeg's shared libraries, LeRobot logs a traceback per FFmpeg version torchcodec tries (about 90
    lines) each time it picks a video decoder, then decodes with pyav, which reads the same videos. This filter, on
    LeRobot's logger in the plugin's own commands, says that in one line, once. Any other torchcodec failure (a
    PyTorch version torchcodec does not support, a broken FFmpeg) passes as LeRobot wrote it."""

    def __init__(self) -> None:
        super().__init__()
        self.said = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if TORCHCODEC_FALLBACK not in message:
            return True
        tried = re.findall(r"^FFmpeg version \d+:$", message, re.MULTILINE)
        missing = re.findall(r"^OSError: (libav\w*\.so\.\d+): cannot open shared object file", message, re.MULTILINE)
        if not tried or len(missing) != len(tried):
            return True
        if self.said:
            return False
        self.said = True
        record.msg = (
            f"torchcodec cannot load FFmpeg's shared libraries (none of {', '.join(sorted(missing))} is installed), "
            "so LeRobot decodes videos with pyav. Install FFmpeg 4 to 8 (e.g. apt-get install ffmpeg) to use "
            "torchcodec."
        )
        record.args = ()
        return True


TORCHCODEC_WITHOUT_FFMPEG = TorchcodecWithoutFFmpeg()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    logging.getLogger("lerobot.utils.import_utils").addFilter(TORCHCODEC_WITHOUT_FFMPEG)
    if argv[:1] == ["demo"]:
        from .demo import main as demo  # noqa: PLC0415

        demo(argv[1:])
        return
    if argv[:1] == ["cache"]:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        print(f"Wrote {cache(argv[1:])}")
        return
    if argv[:1] == ["serve"]:
        serve(argv[1:])
        return
    if argv[:1] == ["memory"]:
        from .memory.report import main as memory  # noqa: PLC0415

        memory(argv[1:])
        return
    parser = argparse.ArgumentParser(prog="lerobot-fastwam", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="Meta-World: record, cache, train, evaluate, report (options: --help after it)")
    sub.add_parser("cache", help="encode a dataset's training windows and tasks once (options: --help after it)")
    sub.add_parser("serve", help="LeRobot's async inference policy server, accepting fastwam (--help after it)")
    sub.add_parser("memory", help="plan the GPU memory of training and inference (options: --help after it)")
    c = sub.add_parser(
        "convert", help="official .pt checkpoint -> plugin checkpoint directory", formatter_class=DefaultsHelpFormatter
    )
    c.add_argument("checkpoint", help="official checkpoint, e.g. libero_uncond_2cam224.pt")
    c.add_argument("--dataset-stats", required=True, help="the dataset_stats.json that came with it")
    c.add_argument("--output", required=True, help="directory to write (usable as --policy.path)")
    c.add_argument(
        "--benchmark",
        default="libero",
        choices=sorted(CONVERSION_DEFAULTS),
        help="defaults for the options below from the official data config of this benchmark",
    )
    c.add_argument(
        "--camera-keys",
        nargs="+",
        default=None,
        help="cameras in tiling order (LeRobot LIBERO: image, image2; RoboTwin: top, left, right)",
    )
    c.add_argument("--camera-layout", default=None, choices=["side_by_side", "top_and_wrists"])
    c.add_argument("--image-size", nargs=2, type=int, default=None, metavar=("H", "W"))
    c.add_argument(
        "--norm",
        default=None,
        choices=["min/max", "z-score"],
        help="the official norm_default_mode (LIBERO: min/max, RoboTwin: z-score)",
    )
    c.add_argument(
        "--num-heads",
        type=int,
        default=None,
        help="attention heads, not recorded in the weights (default: the released Wan model's of that "
        "width, 24 for Wan2.2-TI2V-5B)",
    )
    c.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --output directory, replacing the converted files in it",
    )
    c.add_argument(
        "--dtype",
        default="bfloat16",
        choices=["bfloat16", "float16", "float32"],
        help="compute dtype of the converted policy",
    )
    c.add_argument("--text-max-length", type=int, default=128, help="umT5 context length (official: 128)")
    c.add_argument("--n-action-steps", type=int, default=None, help="actions executed per chunk (10 / 24)")
    c.add_argument(
        "--libero-gripper",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="map the gripper action back to LIBERO's convention in the postprocessor",
    )
    c.add_argument(
        "--wan-model-id",
        default="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
        help="Wan2.2 Diffusers repo (id or local dir) for the frozen VAE and text encoder",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "convert":
        from ..checkpoints.official import ConversionError

        try:
            with torch.no_grad():
                path = convert(args)
        except ConversionError as err:  # a refused input: its message names the problem and the fix
            parser.exit(2, f"lerobot-fastwam convert: error: {err}\n")
        print(f"Wrote {path}. Use it with --policy.path={path}")


if __name__ == "__main__":
    main()
