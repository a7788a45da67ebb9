"""The imagined video as a person watches it (``lerobot-eval --policy.save_predicted_video=true``).

LeRobot writes the predicted video at the environment's control rate (Meta-World: 80 fps), one video frame per
frame it is given; a rollout's chunks, handed over as they were decoded, played 54 frames in 0.7 s with nothing
saying which frame was seen and which imagined. Here each imagined frame sits next to the frame the chunk was
predicted from, both labelled, and is held for ``n_action_steps`` control steps: the video shows one imagined frame
per replanning period of the policy (8 a second in Meta-World), whatever the environment's rate."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

LABEL_PAD = 2  # pixels around a label's text


def labelled_chunks(frames: Tensor, per_chunk: int, frame_stride: int, hold: int) -> Tensor:
    """``frames`` ``[3, k * per_chunk, H, W]`` in [0, 1], each chunk its current frame then its imagined future
    (``frame_stride`` dataset frames apart) -> ``[T, band + H, 2 W, 3]`` uint8: per imagined frame, the current
    frame ("now, chunk c") left of it ("imagined +n frames"), each picture repeated ``hold`` times."""
    pictures = (frames.permute(1, 2, 3, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    font = ImageFont.load_default()
    band = font.getbbox("Ag")[3] + 2 * LABEL_PAD
    band += band % 2  # LeRobot's H.264 writer crops an odd height, with a warning
    out = []
    for chunk, start in enumerate(range(0, len(pictures), per_chunk)):
        now = _labelled(pictures[start], f"now, chunk {chunk + 1}", font, band)
        for k in range(1, per_chunk) if per_chunk > 1 else range(1):
            imagined = _labelled(pictures[start + k], f"imagined +{k * frame_stride} frames", font, band)
            out.extend([np.concatenate([now, imagined], axis=1)] * hold)
    return torch.from_numpy(np.stack(out))


def _labelled(picture: np.ndarray, label: str, font: ImageFont.ImageFont, band: int) -> np.ndarray:
    """``picture`` ``[H, W, 3]`` under a black band of height ``band`` with ``label`` written in it in white."""
    canvas = Image.new("RGB", (picture.shape[1], band + picture.shape[0]))
    canvas.paste(Image.fromarray(picture), (0, band))
    ImageDraw.Draw(canvas).text((LABEL_PAD, LABEL_PAD), label, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)
