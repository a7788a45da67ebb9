"""How the cameras are tiled into the one image the VAE encodes (reference section 4).

- ``side_by_side`` (LIBERO): N cameras in a row, each ``(H, W / N)``; 2 x 224x224 -> 224x448.
- ``top_and_wrists`` (RoboTwin): the first camera on top, ``(2H/3, W)``, the next two below it, each
  ``(H/3, W/2)``; 256x320 above 2 x 128x160 -> 384x320.

Camera order is the config's ``camera_keys`` (or the sorted camera keys).
"""

from __future__ import annotations

import torch

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
