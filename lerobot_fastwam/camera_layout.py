"""All camera handling: how the cameras are tiled into the one image the VAE encodes (reference section 4),
resized to their tiles (never stretched), and read from a batch.

- ``side_by_side`` (LIBERO): N cameras in a row, each ``(H, W / N)``; 2 x 224x224 -> 224x448.
- ``top_and_wrists`` (RoboTwin): the first camera on top, ``(2H/3, W)``, the next two below it, each
  ``(H/3, W/2)``; 256x320 above 2 x 128x160 -> 384x320.

Camera order is the config's ``camera_keys`` (or the sorted camera keys). A batch gives the policy either the
current frame of each camera (``current_frame``: inference, latent statistics) or the training clip of each
(``training_clip``: the current frame and the future ones the video expert learns to denoise).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from .safety import check_finite

logger = logging.getLogger(__name__)

LAYOUTS = ("side_by_side", "top_and_wrists")


def tile_sizes(layout: str, image_size: tuple[int, int], num_cameras: int) -> list[tuple[int, int]]:
    """(height, width) of each camera's tile, in camera order."""
    height, width = image_size
    if layout == "side_by_side":
        if width % num_cameras:
            raise ValueError(f"image width {width} does not split into {num_cameras} equal camera tiles.")
        return [(height, width // num_cameras)] * num_cameras
    if layout == "top_and_wrists":
        if num_cameras != 3:
            raise ValueError(f"camera_layout='top_and_wrists' needs 3 cameras (top, wrist, wrist), got {num_cameras}.")
        if height % 3 or width % 2:
            raise ValueError(f"image_size {image_size} must have a height divisible by 3 and an even width.")
        return [(2 * height // 3, width), (height // 3, width // 2), (height // 3, width // 2)]
    raise ValueError(f"Unknown camera_layout {layout!r}; choose one of {LAYOUTS}.")


def tile(layout: str, images: list[torch.Tensor]) -> torch.Tensor:
    """Camera frames ``[..., 3, h_i, w_i]`` (already at their tile sizes) -> the tiled ``[..., 3, H, W]``."""
    if layout == "side_by_side":
        return torch.cat(images, dim=-1)
    top, left, right = images
    return torch.cat([top, torch.cat([left, right], dim=-1)], dim=-2)


def check_camera_aspect(key: str, height: int, width: int, target_h: int, target_w: int, layout: str) -> None:
    """A camera may be resized but never stretched: its aspect ratio must match its tile."""
    if height * target_w == width * target_h:
        return
    raise ValueError(
        f"Camera `{key}` is {height}x{width} (aspect {width / height:.3f}) but Fast-WAM tiles it into "
        f"{target_h}x{target_w} (aspect {target_w / target_h:.3f}, camera_layout={layout!r}); resizing would "
        "stretch it. Set `--policy.image_size` (and `--policy.camera_layout`) so every camera tile keeps its "
        "camera's aspect ratio, or crop the camera to the trained layout."
    )


def resize_camera(image: torch.Tensor, key: str, height: int, width: int, layout: str) -> torch.Tensor:
    """Resize ``[..., 3, H, W]`` frames to their tile, refusing an aspect-ratio change (it would stretch)."""
    src_h, src_w = image.shape[-2:]
    check_camera_aspect(key, src_h, src_w, height, width, layout)
    if key not in _RESIZE_LOGGED:
        logger.info("Fast-WAM: resizing camera %s from %dx%d to %dx%d.", key, src_h, src_w, height, width)
        _RESIZE_LOGGED.add(key)
    flat = image.reshape(-1, *image.shape[-3:])
    if not flat.is_floating_point():
        flat = flat.float()
    resized = F.interpolate(flat, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return resized.reshape(*image.shape[:-2], height, width)


_RESIZE_LOGGED: set[str] = set()


def current_frame(batch: dict[str, Any], config) -> torch.Tensor:
    """The tiled current frame ``[B, 3, 1, H, W]`` in [0, 1]; cameras ``[B, 3, H, W]`` or ``[B, T, 3, H, W]``
    (then the first, current, frame is used)."""

    def select(image: torch.Tensor, key: str) -> torch.Tensor:
        return (image[:, 0] if image.ndim == 5 else image).unsqueeze(1)

    return _tiled(batch, config, select)


def training_clip(batch: dict[str, Any], config, num_frames: int) -> torch.Tensor:
    """The first ``num_frames`` tiled frames of each sample's clip ``[B, 3, num_frames, H, W]`` in [0, 1]
    (cameras ``[B, T >= num_frames, 3, H, W]``, loaded with the policy's ``observation_delta_indices``)."""

    def select(image: torch.Tensor, key: str) -> torch.Tensor:
        if image.ndim != 5 or image.shape[1] < num_frames:
            got = image.shape[1] if image.ndim == 5 else 1
            raise ValueError(
                f"Training needs {num_frames} frames of `{key}` per sample (the current frame and the "
                f"future ones, every {config.video_frame_stride} dataset frames), got {got}. Load the dataset "
                "with the policy's `observation_delta_indices` (lerobot-train does this)."
            )
        return image[:, :num_frames]

    return _tiled(batch, config, select)


def _tiled(batch: dict[str, Any], config, select: Callable[[torch.Tensor, str], torch.Tensor]) -> torch.Tensor:
    """Select frames ``[B, T, 3, h, w]`` from each camera, check and resize them, tile -> ``[B, 3, T, H, W]``."""
    keys = config.ordered_camera_keys
    absent = [k for k in keys if k not in batch]
    if absent:
        present = sorted(k for k in batch if k.startswith("observation.images.") and not k.endswith("_is_pad"))
        raise ValueError(
            f"Fast-WAM expects cameras {keys} but the batch lacks {absent} (it has {present}). "
            'Map camera names with `--rename_map=\'{"observation.images.yours": "observation.images.ours"}\'`.'
        )
    tiles = []
    for key, (tile_h, tile_w) in config.camera_tile_sizes.items():
        image = select(batch[key], key)
        if image.shape[2] != 3:
            raise ValueError(f"Camera `{key}` must have 3 channels, got shape {tuple(image.shape[2:])}.")
        if tuple(image.shape[-2:]) != (tile_h, tile_w):  # pipelines without our resize step (built-in's)
            image = resize_camera(image, key, tile_h, tile_w, config.camera_layout)
        check_finite(image, key)
        low, high = torch.aminmax(image.detach())
        if high.item() > 1.0 + 1e-3 or low.item() < -1e-3:
            raise ValueError(
                f"Camera `{key}` has values in [{low.item():.3g}, {high.item():.3g}]; Fast-WAM expects "
                "float images in [0, 1] (LeRobot's convention). Divide uint8 images by 255."
            )
        tiles.append(image)
    return tile(config.camera_layout, tiles).transpose(1, 2)
