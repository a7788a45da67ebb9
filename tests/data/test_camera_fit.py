"""Any camera fits its tile without being stretched: crop or pad, per-camera crop boxes, the same pixels in the
pre-processor (rollout), the policy's own path (the latent cache) and after a save/load of the processors."""

import pytest
import torch
from lerobot.configs import FeatureType, PolicyFeature

from lerobot_fastwam.data.camera_layout import current_frame, fit_camera
from lerobot_fastwam.processor_fastwam import make_fastwam_pre_post_processors

from ..helpers import make_config

CAM = "observation.images.cam0"


def _camera(height=480, width=640):
    """A frame whose middle square is green and whose side bands (the part a square crop drops) are red."""
    frame = torch.zeros(1, 3, height, width)
    side = (width - height) // 2
    frame[:, 0, :, :side] = frame[:, 0, :, width - side :] = 1.0
    frame[:, 1, :, side : width - side] = 1.0
    return frame


def _config(**overrides):
    config = make_config(cameras=1, image_size=(64, 64), **overrides)  # one 64x64 tile
    config.input_features[CAM] = PolicyFeature(FeatureType.VISUAL, (3, 480, 640))
    config.validate_features()  # a standard 640x480 robot camera is accepted by default
    return config


def _fit_in_preprocessor(config, frame):
    pre, _ = make_fastwam_pre_post_processors(config)
    return pre({CAM: frame, "observation.state": torch.zeros(1, 8), "task": "x"})[CAM]


def test_crop_keeps_the_centre_and_pad_keeps_everything_with_black_bars():
    frame = _camera()
    cropped = fit_camera(frame, CAM, 64, 64, "crop")
    assert cropped.shape == (1, 3, 64, 64)
    assert cropped[:, 1].min() > 0.99 and cropped[:, 0].max() < 0.01  # only the green centre is left
    padded = fit_camera(frame, CAM, 64, 64, "pad")
    assert padded.shape == (1, 3, 64, 64)
    assert padded[..., :8, :].abs().max() == 0 and padded[..., -8:, :].abs().max() == 0  # 48-row image, 8-row bars
    assert padded[:, 0, 32, :4].min() > 0.99 and padded[:, 1, 32, 30:34].min() > 0.99  # red sides, green middle


def test_same_aspect_ratio_is_a_plain_resize_in_both_modes():
    frame = torch.rand(2, 3, 128, 256)
    expected = torch.nn.functional.interpolate(frame, size=(32, 64), mode="bilinear", antialias=True)
    for fit in ("crop", "pad"):
        torch.testing.assert_close(fit_camera(frame, CAM, 32, 64, fit), expected)


@pytest.mark.parametrize("fit", ["crop", "pad"])
def test_preprocessor_policy_path_and_saved_processors_give_the_same_pixels(tmp_path, fit):
    from lerobot.processor import PolicyProcessorPipeline

    config = _config(camera_fit=fit)
    frame = _camera()
    live = _fit_in_preprocessor(config, frame)
    own = current_frame({CAM: frame}, config)[:, :, 0]  # the policy's path (latent cache, other pipelines)
    torch.testing.assert_close(live, own)
    pre, _ = make_fastwam_pre_post_processors(config)
    pre.save_pretrained(tmp_path)
    loaded = PolicyProcessorPipeline.from_pretrained(tmp_path, "policy_preprocessor.json")
    again = loaded({CAM: frame, "observation.state": torch.zeros(1, 8), "task": "x"})[CAM]
    torch.testing.assert_close(again, live)


def test_a_crop_box_is_cut_before_fitting_everywhere():
    box = [100, 300, 200, 200]  # a 200x200 square inside the right red band and the green centre
    config = _config(camera_crops={CAM: box})
    frame = torch.rand(1, 3, 480, 640)
    expected = fit_camera(frame[..., 100:300, 300:500], CAM, 64, 64)
    torch.testing.assert_close(_fit_in_preprocessor(config, frame), expected)
    torch.testing.assert_close(current_frame({CAM: frame}, config)[:, :, 0], expected)
    with pytest.raises(ValueError, match=r"is 240x320, but its crop box .* was set for its 480x640 images"):
        _fit_in_preprocessor(config, torch.rand(1, 3, 240, 320))


@pytest.mark.parametrize(
    ("crops", "match"),
    [
        ({CAM: [0, 0, 500, 100]}, "reaches past its 480x640 image"),
        ({CAM: [0, 0, 100]}, "4 non-negative integers"),
        ({"observation.images.side": [0, 0, 10, 10]}, "not among the cameras"),
    ],
)
def test_bad_crop_boxes_are_refused(crops, match):
    with pytest.raises(ValueError, match=match):
        _config(camera_crops=crops)


def test_unknown_fit_is_refused():
    with pytest.raises(ValueError, match="camera_fit must be one of"):
        make_config(camera_fit="stretch")


def test_grid_layout_tiles_four_cameras_two_by_two_and_fills_an_odd_slot_black():
    from lerobot_fastwam.data.camera_layout import tile, tile_sizes

    assert tile_sizes("grid", (448, 448), 4) == [(224, 224)] * 4
    assert tile_sizes("grid", (448, 448), 3) == [(224, 224)] * 3
    cams = [torch.full((1, 3, 2, 2), float(i + 1)) for i in range(4)]
    grid = tile("grid", cams)
    assert grid.shape == (1, 3, 4, 4)
    assert grid[0, 0, :, :].tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    odd = tile("grid", cams[:3])
    assert odd.shape == (1, 3, 4, 4) and odd[..., 2:, 2:].abs().max() == 0
    with pytest.raises(ValueError, match="2 columns"):
        tile_sizes("grid", (448, 447), 4)


def test_an_aloha_rig_of_four_640x480_cameras_fits_the_grid():
    keys = ["cam_high", "cam_left_wrist", "cam_low", "cam_right_wrist"]
    config = make_config(cameras=4, image_size=(384, 512), camera_layout="grid")
    config.input_features = {
        **{f"observation.images.{k}": PolicyFeature(FeatureType.VISUAL, (3, 480, 640)) for k in keys},
        "observation.state": config.input_features["observation.state"],
    }
    config.camera_keys = None
    config.validate_features()
    assert set(config.camera_tile_sizes.values()) == {(192, 256)}  # 4:3 tiles: no pixel is cropped
    batch = {f"observation.images.{k}": torch.rand(1, 3, 480, 640) for k in keys}
    assert current_frame(batch, config).shape == (1, 3, 1, 384, 512)
