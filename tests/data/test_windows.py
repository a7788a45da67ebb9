"""The training windows LeRobot builds for Fast-WAM are exactly the reference recipe.

Recipe: each sample is 33 raw frames of one episode; the video expert sees every 4th of them (9 frames:
the current one and 8 future ones), the action expert the 32 actions from the current step at the full frame
rate; frames and actions past the episode end are padding, flagged ``<key>_is_pad`` and masked in the loss.

The windowed dataset is built by LeRobot's own factory (``lerobot.datasets.factory.make_dataset``, which
calls ``resolve_delta_timestamps`` on the policy config, as ``lerobot-train`` does) and compared value by
value with the same dataset loaded without delta timestamps (one frame per index). Both go through the same
decoder, so the comparison is exact for video storage too. Runs for image and for video storage.
"""

from __future__ import annotations

import pytest
import torch
from lerobot.configs.default import DatasetConfig
from lerobot.configs.train import TrainPipelineConfig
from lerobot.datasets.factory import make_dataset as lerobot_make_dataset
from lerobot.datasets.factory import resolve_delta_timestamps
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from lerobot.policies.factory import make_policy, make_pre_post_processors
from torch.utils.data import default_collate

from lerobot_fastwam.configuration_fastwam import FastWAMConfig
from lerobot_fastwam.network.model import future_latent_padding
from lerobot_fastwam.testing.synthetic_dataset import make_dataset

REPO_ID = "local/fastwam_windows_test"
EPISODE_LEN = 40  # frames per episode; episode 0 is dataset indices 0..39, episode 1 is 40..79
FPS = 10
CAMERAS = ("observation.images.front", "observation.images.wrist")
STATE = "observation.state"
VIDEO_OFFSETS = list(range(0, 33, 4))  # 9 frames out of 33
ACTION_OFFSETS = list(range(32))


@pytest.fixture(scope="module", params=["video", "image"])
def windows(request, tmp_path_factory):
    """(windowed dataset as lerobot-train builds it, the same dataset one frame per index, train config)."""
    root = tmp_path_factory.mktemp(f"windows_{request.param}") / "dataset"
    make_dataset(
        root,
        repo_id=REPO_ID,
        episodes=2,
        frames=EPISODE_LEN,
        cameras=("front", "wrist"),
        image_hw=(32, 32),
        fps=FPS,
        use_videos=request.param == "video",
    )
    cfg = TrainPipelineConfig(
        dataset=DatasetConfig(repo_id=REPO_ID, root=str(root), video_backend="pyav"),
        policy=FastWAMConfig(preset="tiny", device="cpu"),
    )
    windowed = lerobot_make_dataset(cfg)
    # lerobot-train's factory loads with return_uint8=True; so does the reference.
    single = LeRobotDataset(REPO_ID, root=root, video_backend="pyav", return_uint8=True)
    assert single.delta_timestamps is None and len(single) == len(windowed) == 2 * EPISODE_LEN
    return windowed, single, cfg


def _episode_of(index: int) -> int:
    return index // EPISODE_LEN


def _last_of_episode(index: int) -> int:
    return (_episode_of(index) + 1) * EPISODE_LEN - 1


def test_config_asks_for_the_recipe(windows):
    windowed, _, cfg = windows
    config = cfg.policy
    assert config.observation_delta_indices == VIDEO_OFFSETS
    assert config.action_delta_indices == ACTION_OFFSETS
    assert config.reward_delta_indices is None
    expected = {key: [i / FPS for i in VIDEO_OFFSETS] for key in (*CAMERAS, STATE)}
    expected["action"] = [i / FPS for i in ACTION_OFFSETS]
    assert resolve_delta_timestamps(config, windowed.meta) == expected
    assert windowed.delta_timestamps == expected


@pytest.mark.parametrize("index", [3, EPISODE_LEN + 5])  # mid-episode, in each episode: 33 frames fit
def test_mid_episode_window_is_every_4th_frame_and_32_actions(windows, index):
    windowed, single, _ = windows
    item = windowed[index]
    assert item["episode_index"].item() == _episode_of(index)
    for key in (*CAMERAS, STATE):
        assert item[key].shape[0] == len(VIDEO_OFFSETS), key
        for k, offset in enumerate(VIDEO_OFFSETS):
            assert torch.equal(item[key][k], single[index + offset][key]), (key, offset)
        assert not item[f"{key}_is_pad"].any(), key
    for key in CAMERAS:  # the frames move: a stride-1 window would not pass the check above
        assert not torch.equal(item[key][1], single[index + 1][key])
    assert item["action"].shape == (len(ACTION_OFFSETS), 6)
    for k in ACTION_OFFSETS:
        assert torch.equal(item["action"][k], single[index + k]["action"]), k
        # Full rate: the synthetic action is the next state, so consecutive actions are one frame apart.
        assert torch.equal(item["action"][k], single[index + k + 1][STATE]), k
    assert not item["action_is_pad"].any()
    assert item["task"] == single[index]["task"]


@pytest.mark.parametrize("position", [30, 36, EPISODE_LEN - 1])
def test_window_at_episode_end_is_padded_with_the_last_frame(windows, position):
    windowed, single, _ = windows
    index = position  # in episode 0: the window runs past its end into where episode 1 is stored
    last = _last_of_episode(index)
    item = windowed[index]
    for key in (*CAMERAS, STATE):
        expected_pad = torch.tensor([index + offset > last for offset in VIDEO_OFFSETS])
        assert torch.equal(item[f"{key}_is_pad"], expected_pad), key
        assert expected_pad.any() and not expected_pad[0]
        for k, offset in enumerate(VIDEO_OFFSETS):
            if index + offset <= last:
                assert torch.equal(item[key][k], single[index + offset][key]), (key, offset)
            else:  # clamped to the episode's last frame, never the next episode's frame at that index
                assert torch.equal(item[key][k], single[last][key]), (key, offset)
                assert not torch.equal(item[key][k], single[index + offset][key]), (key, offset)
    expected_pad = torch.tensor([index + k > last for k in ACTION_OFFSETS])
    assert torch.equal(item["action_is_pad"], expected_pad)
    for k in ACTION_OFFSETS:
        reference = single[min(index + k, last)]["action"]
        assert torch.equal(item["action"][k], reference), k
        if index + k > last:
            assert not torch.equal(item["action"][k], single[index + k]["action"]), k


def test_future_latent_padding_of_real_windows(windows):
    """Latent frame j >= 1 encodes model frames 4(j-1)+1 .. 4j; it is padding iff all four are."""
    windowed, _, _ = windows
    positions = range(EPISODE_LEN)  # every start in episode 0: no, partial and full padding
    frame_pad = torch.stack([windowed[p][f"{CAMERAS[0]}_is_pad"] for p in positions])  # [40, 9]
    latent_pad = future_latent_padding(frame_pad)
    assert latent_pad.shape == (EPISODE_LEN, 2)
    seen = set()
    for row, p in enumerate(positions):
        for j in (1, 2):
            frames = range(4 * (j - 1) + 1, 4 * j + 1)
            pads = [p + VIDEO_OFFSETS[m] >= EPISODE_LEN for m in frames]
            assert [bool(frame_pad[row, m]) for m in frames] == pads
            assert bool(latent_pad[row, j - 1]) == all(pads), (p, j, pads)
            seen.add("all" if all(pads) else "some" if any(pads) else "none")
    assert seen == {"all", "some", "none"}


def test_policy_loss_ignores_padding(windows):
    """The real windows through lerobot-train's steps (collate, uint8 -> [0, 1], preprocessor, forward):
    the `_is_pad` flags survive the preprocessor and a window whose future is all padding scores no video."""
    windowed, _, cfg = windows
    torch.manual_seed(0)
    policy = make_policy(cfg=cfg.policy, ds_meta=windowed.meta)
    preprocessor, _ = make_pre_post_processors(cfg.policy, dataset_stats=windowed.meta.stats)
    policy.train()

    def loss_terms(positions):
        batch = default_collate([windowed[p] for p in positions])
        for key in CAMERAS:
            if batch[key].dtype == torch.uint8:
                batch[key] = batch[key].float() / 255.0
        batch = preprocessor(batch)
        for key in (*CAMERAS, STATE, "action"):
            assert f"{key}_is_pad" in batch, key
        with torch.no_grad():
            _, info = policy.forward(batch)
        return info

    padded = loss_terms([EPISODE_LEN - 1, EPISODE_LEN - 3])  # every future frame is past the end
    assert padded["loss_video"] == 0.0
    assert padded["loss_action"] > 0.0  # the first action(s) of each chunk are real
    full = loss_terms([3, EPISODE_LEN + 5])
    assert full["loss_video"] > 0.0 and full["loss_action"] > 0.0
