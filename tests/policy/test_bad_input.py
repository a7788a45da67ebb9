"""Bad input fails with an error that names the problem and the fix."""

import logging

import pytest
import torch

from lerobot_fastwam.encoders.frozen import MissingWeightsError
from lerobot_fastwam.processor_fastwam import make_fastwam_pre_post_processors

from ..helpers import make_config, make_policy, observation, training_batch


@pytest.fixture(scope="module")
def policy():
    return make_policy(cameras=2)


def test_wrong_camera_keys(policy):
    batch = observation(policy.config)
    batch["observation.images.top"] = batch.pop("observation.images.cam1")
    with pytest.raises(ValueError, match=r"(?s)lacks \['observation.images.cam1'\].*--rename_map"):
        policy.predict_action_chunk(batch)


def test_camera_keys_not_in_features_rejected_at_construction():
    config = make_config(cameras=2, camera_keys=["observation.images.cam0", "observation.images.side"])
    with pytest.raises(ValueError, match="camera_keys.*--rename_map"):
        config.validate_features()


def test_same_aspect_ratio_is_resized_by_the_preprocessor_and_logged_once(caplog):
    from lerobot_fastwam.data import camera_layout

    camera_layout._RESIZE_LOGGED.clear()  # once per process: other tests may have resized this camera
    config = make_config(cameras=1)
    pre, _ = make_fastwam_pre_post_processors(config)
    obs = {"observation.images.cam0": torch.rand(1, 3, 64, 128), "observation.state": torch.zeros(1, 8), "task": "x"}
    with caplog.at_level(logging.INFO):
        out = pre(dict(obs))
        pre(dict(obs))
    assert tuple(out["observation.images.cam0"].shape) == (1, 3, 32, 64)
    assert sum("resizing camera" in r.message for r in caplog.records) == 1


def test_missing_state(policy):
    batch = observation(policy.config)
    del batch["observation.state"]
    with pytest.raises(ValueError, match="observation.state"):
        policy.predict_action_chunk(batch)


def test_wrong_state_dimension(policy):
    batch = observation(policy.config)
    batch["observation.state"] = torch.zeros(2, 5)
    with pytest.raises(ValueError, match="has 5 values, the policy expects 8"):
        policy.predict_action_chunk(batch)


def test_wrong_action_dimension(policy):
    batch = training_batch(policy.config)
    batch["action"] = torch.zeros(2, 32, 4)
    with pytest.raises(ValueError, match=r"`action` must be \[batch, 32, 7\]"):
        policy.forward(batch)


@pytest.mark.parametrize("key", ["observation.state", "observation.images.cam0"])
def test_nan_inputs(policy, key):
    batch = observation(policy.config)
    batch[key][0, 0] = float("nan")
    with pytest.raises(ValueError, match=f"`{key}` contains NaN"):
        policy.predict_action_chunk(batch)


def test_images_in_0_255(policy):
    batch = observation(policy.config)
    batch["observation.images.cam0"] = batch["observation.images.cam0"] * 255
    with pytest.raises(ValueError, match=r"\[0, 1\].*Divide uint8 images by 255"):
        policy.predict_action_chunk(batch)


def test_too_few_video_frames_in_training(policy):
    batch = training_batch(policy.config)
    batch["observation.images.cam0"] = batch["observation.images.cam0"][:, :3]
    match = r"needs 9 frames of `observation.images.cam0`.*got 3.*observation_delta_indices"
    with pytest.raises(ValueError, match=match):
        policy.forward(batch)


def test_missing_task(policy):
    batch = observation(policy.config)
    del batch["task"]
    with pytest.raises(ValueError, match="no `task`"):
        policy.predict_action_chunk(batch)


def test_pretrained_weights_unavailable_offline(tmp_path):
    config = make_config(use_pretrained_wan=True, pretrained_model_id=str(tmp_path / "no-such-wan-repo"))
    from lerobot_fastwam.modeling_fastwam import FastWAMPolicy

    match = r"(?s)Wan2.2 transformer.*does not exist.*--policy.pretrained_model_id"
    with pytest.raises(MissingWeightsError, match=match):
        FastWAMPolicy(config)
    hub = make_config(preset="wan2.2-ti2v-5b")  # the 5B model, built on the meta device until loading
    with pytest.raises(MissingWeightsError, match="(?s)not in the local Hugging Face cache.*huggingface-cli download"):
        FastWAMPolicy(hub)


def test_policy_fits_cameras_itself_for_pipelines_without_the_fit_step(policy):
    batch = observation(policy.config)
    expected = policy.predict_action_chunk(batch)
    big = dict(batch)
    big["observation.images.cam0"] = torch.nn.functional.interpolate(batch["observation.images.cam0"], size=(64, 64))
    assert policy.predict_action_chunk(big).shape == expected.shape
    big["observation.images.cam0"] = torch.rand(2, 3, 48, 64)  # another aspect ratio: cropped, not refused
    assert torch.isfinite(policy.predict_action_chunk(big)).all()
