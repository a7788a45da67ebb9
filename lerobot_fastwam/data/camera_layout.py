"""All camera handling: how the cameras are tiled into the one image the VAE encodes (reference section 4),
fitted to their tiles (cropped, then resized keeping the aspect ratio; never stretched), and read from a batch.

- ``side_by_side`` (LIBERO): N cameras in a row, each ``(H, W / N)``; 2 x 224x224 -> 224x448.
- ``top_and_wrists`` (RoboTwin): the first camera on top, ``(2H/3, W)``, the next two below it, each
  ``(H/3, W/2)``; 256x320 above 2 x 128x160 -> 384x320.
- ``grid`` (ALOHA-style rigs): two cameras per row, each ``(H / rows, W / 2)``; 4 x 224x224 -> 448x448 (an odd
  count leaves the last slot black).

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

from ..safety import check_finite

logger = logging.getLogger(__name__)

LAYOUTS = ("side_by_side", "top_and_wrists", "grid")


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
    if layout == "grid":
        rows = -(-num_cameras // 2)
        if height % rows or width % 2:
            raise ValueError(
                f"image_size {image_size} must split into {rows} rows and 2 columns of equal camera tiles "
                f"(camera_layout='grid' with {num_cameras} cameras)."
            )
        return [(height // rows, width // 2)] * num_cameras
    raise ValueError(f"Unknown camera_layout {layout!r}; choose one of {LAYOUTS}.")


def tile(layout: str, images: list[torch.Tensor]) -> torch.Tensor:
    """Camera frames ``[..., 3, h_i, w_i]`` (already at their tile sizes) -> the tiled ``[..., 3, H, W]``."""
    if layout == "side_by_side":
        return torch.cat(images, dim=-1)
    if layout == "grid":
        slots = images + [torch.zeros_like(images[0])] * (len(images) % 2)
        return torch.cat([torch.cat(slots[i : i + 2], dim=-1) for i in range(0, len(slots), 2)], dim=-2)
    top, left, right = images
    return torch.cat([top, torch.cat([left, right], dim=-1)], dim=-2)


FITS = ("crop", "pad")

MIN_FRAME_SIDE = 8  # pixels; a smaller side holds no picture (a 1x1 frame is one colour): a broken camera or shape
MAX_UPSCALE = 8  # a frame side stretched more than this many times to its tile gives the policy a blur, not a scene
MAX_ASPECT_MISMATCH = 4.0  # this far off the tile's aspect, a crop keeps under 1/4 of the frame, a pad is 3/4 black


def check_frame_size(key: str, src_h: int, src_w: int, height: int, width: int, crop_box=None) -> None:
    """Refuse a frame no fit makes sense of (empty, tiny or absurdly shaped for its tile) instead of upscaling it
    into a blur or failing deep in a reshape; real cameras (QVGA to 4K, 4:3 to 16:9) stay within the thresholds."""
    if not src_h or not src_w:
        problem = "is empty (the camera delivered no image)"
    elif min(src_h, src_w) < MIN_FRAME_SIDE or src_h * MAX_UPSCALE < height or src_w * MAX_UPSCALE < width:
        problem = (
            f"is too small: a side under {MIN_FRAME_SIDE} pixels, or over {MAX_UPSCALE}x shorter than the tile's, "
            "would be upscaled into a blur"
        )
    else:
        mismatch = max(src_w * height / (src_h * width), src_h * width / (src_w * height))
        if mismatch <= MAX_ASPECT_MISMATCH:
            return
        problem = (
            f"has an aspect ratio {mismatch:.1f}x off the tile's (at most {MAX_ASPECT_MISMATCH:g}x is fitted): a "
            "crop would keep under a quarter of it, a pad would leave the tile mostly black"
        )
    source = f"The {src_h}x{src_w} crop box {list(crop_box)}" if crop_box is not None else f"A {src_h}x{src_w} frame"
    raise ValueError(
        f"{source} of camera `{key}` {problem}; the checkpoint fits this camera to a {height}x{width} tile. Check "
        "the camera's resolution (its width and height in the robot's camera config) and that frames are "
        "channels-first [..., 3, H, W]; for a camera this far from the trained one, set `--policy.camera_crops` "
        "or train with a matching `--policy.image_size`."
    )


def check_crop_box(key: str, box: list[int] | tuple[int, ...], height: int | None = None, width: int | None = None):
    """A crop box is ``(top, left, height, width)`` in the camera's pixels and lies inside the image."""
    if len(box) != 4 or any(not isinstance(v, int) or v < 0 for v in box) or box[2] == 0 or box[3] == 0:
        raise ValueError(
            f"The crop box of camera `{key}` must be 4 non-negative integers (top, left, height, width) with a "
            f"positive height and width, got {list(box)}."
        )
    top, left, box_h, box_w = box
    if height is not None and (top + box_h > height or left + box_w > width):
        raise ValueError(
            f"The crop box {list(box)} of camera `{key}` reaches past its {height}x{width} image; fix "
            "`--policy.camera_crops`."
        )


def fit_camera(
    image: torch.Tensor, key: str, height: int, width: int, fit: str = "crop", crop_box=None, crop_size=None
) -> torch.Tensor:
    """Frames ``[..., 3, H, W]`` -> ``[..., 3, height, width]``, never stretched.

    An optional ``crop_box`` ``(top, left, height, width)`` is cut first, from frames of ``crop_size`` (the
    camera's trained resolution; other sizes are refused, the box would cut the wrong region). Then the
    frames are fitted keeping their aspect ratio: ``fit="crop"`` cuts the overflow equally from both sides,
    then resizes (a 640x480 camera in a square tile keeps its central 480x480),
    ``fit="pad"`` fits inside the tile and pads with black. A camera whose aspect ratio is the tile's is only
    resized (both give the same pixels). Empty, tiny or absurdly shaped frames are refused (``check_frame_size``).
    """
    if crop_box is not None:
        if crop_size is not None and tuple(image.shape[-2:]) != tuple(crop_size):
            raise ValueError(
                f"Camera `{key}` is {image.shape[-2]}x{image.shape[-1]}, but its crop box {list(crop_box)} was set "
                f"for its {crop_size[0]}x{crop_size[1]} images. Use the camera resolution the policy was trained "
                "with, or set `--policy.camera_crops` for this one."
            )
        check_crop_box(key, crop_box, *image.shape[-2:])
        top, left, box_h, box_w = crop_box
        image = image[..., top : top + box_h, left : left + box_w]
    src_h, src_w = image.shape[-2:]
    if (src_h, src_w) == (height, width):
        return image
    check_frame_size(key, src_h, src_w, height, width, crop_box)
    if key not in _RESIZE_LOGGED:
        how = "resizing" if src_h * width == src_w * height else f"resizing ({fit}, keeping the aspect ratio)"
        logger.info("Fast-WAM: %s camera %s from %dx%d to %dx%d.", how, key, src_h, src_w, height, width)
        _RESIZE_LOGGED.add(key)
    if fit == "crop":  # cut the source to the tile's aspect ratio first: no border pixel blends in
        keep_h, keep_w = min(src_h, round(src_w * height / width)), min(src_w, round(src_h * width / height))
        top, left = (src_h - keep_h) // 2, (src_w - keep_w) // 2
        image = image[..., top : top + keep_h, left : left + keep_w]
        size = (height, width)
    else:
        scale = min(height / src_h, width / src_w)
        size = (min(height, round(src_h * scale)), min(width, round(src_w * scale)))
    flat = image.reshape(-1, *image.shape[-3:])
    if not flat.is_floating_point():
        flat = flat.float()
    resized = F.interpolate(flat, size=size, mode="bilinear", align_corners=False, antialias=True)
    if fit == "pad":
        top, left = (height - size[0]) // 2, (width - size[1]) // 2
        resized = F.pad(resized, (left, width - size[1] - left, top, height - size[0] - top))
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
        # Frames not yet at their tile: the dataset's own (latent cache), or pipelines without our fit step.
        if tuple(image.shape[-2:]) != (tile_h, tile_w):
            image = fit_camera(image, key, tile_h, tile_w, config.camera_fit, *config.camera_crop(key))
        check_finite(image, key)
        low, high = torch.aminmax(image.detach())
        if high.item() > 1.0 + 1e-3 or low.item() < -1e-3:
            raise ValueError(
                f"Camera `{key}` has values in [{low.item():.3g}, {high.item():.3g}]; Fast-WAM expects "
                "float images in [0, 1] (LeRobot's convention). Divide uint8 images by 255."
            )
        tiles.append(image)
    return tile(config.camera_layout, tiles).transpose(1, 2)
