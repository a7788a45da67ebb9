"""Multi-process training (issue #13), on the CPU (gloo): LeRobot's own ``lerobot-train`` under ``accelerate launch``
with DDP, and FSDP with one unit per MoT block. docs/distributed.md is the user's side.

- DDP, 2 processes x batch 2 against 1 process x batch 4 (same seed, same data order): the same loss, gradient norm
  and weights after 3 steps. LeRobot's sampler and accelerate's sharding give rank r the r-th half of each global
  batch. The one change to a real run: every random draw of a training step (noise levels, noises) is taken as one
  draw for the whole global batch, of which each rank keeps its own rows (``GlobalBatchDraws``), so that both runs
  score each sample with the same noise.
- DDP without video co-training (``video_loss_weight=0`` leaves the video head unused) with gradient
  checkpointing, trained from a latent cache: no unused-parameter error, the unused weights untouched (no weight
  decay without a gradient, as in one process), the cache read by both ranks and written by none.
- FSDP: accelerate gives FSDP to GPU runs only (on the CPU it falls back to DDP), so the FSDP check wraps the policy
  with torch's FSDP1 exactly as accelerate would with examples/accelerate/fsdp.yaml (and with FSDP2's
  ``fully_shard``) under torchrun, and compares with one process.

The workers are this file run as a script (``python tests/policy/test_distributed.py train|fsdp``). About 80 s on
2 cores.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

REPO = Path(__file__).resolve().parents[2]
THIS = Path(__file__).resolve()
DDP_CPU_CONFIG = REPO / "examples" / "accelerate" / "ddp_cpu.yaml"
FSDP_CONFIG = REPO / "examples" / "accelerate" / "fsdp.yaml"
REPO_ID = "local/fastwam_distributed_test"
STEPS = 3
TIMEOUT_S = 300


# ------------------------------------------------------------------------------------------------------------------
# Shared by the workers and the tests
class GlobalBatchDraws(TorchFunctionMode):
    """Every ``torch.rand/randn(_like)`` of a step drawn for the global batch: rank ``rank`` of ``world`` keeps rows
    ``[rank * b, (rank + 1) * b)`` of one draw of ``world * b`` rows from a generator seeded by (step, call)."""

    DRAWS = {
        torch.rand: torch.rand,
        torch.randn: torch.randn,
        torch.rand_like: torch.rand,
        torch.randn_like: torch.randn,
    }

    def __init__(self, step: int, rank: int, world: int):
        super().__init__()
        self.step, self.rank, self.world, self.calls = step, rank, world, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in self.DRAWS:
            return func(*args, **kwargs)
        if func in (torch.rand_like, torch.randn_like):
            like = args[0]
            shape, dtype, device = like.shape, kwargs.get("dtype") or like.dtype, kwargs.get("device") or like.device
        else:
            shape = tuple(args[0]) if len(args) == 1 and not isinstance(args[0], int) else tuple(args)
            dtype, device = kwargs.get("dtype") or torch.get_default_dtype(), kwargs.get("device") or "cpu"
        generator = torch.Generator().manual_seed(1000 * self.step + self.calls)
        self.calls += 1
        full = self.DRAWS[func]((shape[0] * self.world, *shape[1:]), generator=generator).to(dtype)
        return full[self.rank * shape[0] : (self.rank + 1) * shape[0]].to(device)


def _rank_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def accelerate_env(config_file: Path) -> dict[str, str]:
    """The FSDP_* / ACCELERATE_* variables ``accelerate launch --config_file`` gives each process."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser  # noqa: PLC0415
    from accelerate.utils.launch import prepare_multi_gpu_env  # noqa: PLC0415

    args = launch_command_parser().parse_args(["--config_file", str(config_file), "train.py"])
    args, _, _ = _validate_launch_command(args)
    env = prepare_multi_gpu_env(args)
    return {k: v for k, v in env.items() if k.startswith(("FSDP_", "ACCELERATE_USE_FSDP"))}


def fsdp_units(policy: torch.nn.Module, plugin) -> list[str]:
    """Names of the modules accelerate's auto-wrap policy (``plugin``, FSDP1) makes FSDP units, the root aside."""
    plugin.set_auto_wrap_policy(policy)
    wrap = plugin.auto_wrap_policy
    return sorted(n for n, m in policy.named_modules() if n and wrap(module=m, recurse=False, nonwrapped_numel=0))


# ------------------------------------------------------------------------------------------------------------------
# Workers
def _train_worker(argv: list[str]) -> None:
    """lerobot-train (under accelerate launch or alone), recording each step and each rank's noise levels."""
    from accelerate import Accelerator  # noqa: PLC0415
    from lerobot.scripts import lerobot_train  # noqa: PLC0415
    from safetensors.torch import save_file  # noqa: PLC0415

    import lerobot_fastwam.network.model as fastwam_model  # noqa: PLC0415

    record = Path(os.environ["FASTWAM_TEST_RECORD"])
    global_draws = os.environ.get("FASTWAM_TEST_GLOBAL_DRAWS") == "1"
    rank, world = _rank_world()
    levels_drawn = []
    sample_noise_levels = fastwam_model.sample_noise_levels

    def recorded_noise_levels(*args, **kwargs):
        levels = sample_noise_levels(*args, **kwargs)
        levels_drawn.append(levels.tolist())
        return levels

    fastwam_model.sample_noise_levels = recorded_noise_levels
    update_policy, clip_grad_norm, steps, current = lerobot_train.update_policy, Accelerator.clip_grad_norm_, [], {}

    def recorded_clip_grad_norm(accelerator, parameters, *args, **kwargs):
        if not steps and rank == 0:  # the first step's gradient, after DDP's all-reduce, before clipping
            named = current["policy"].named_parameters()
            grads = {name: p.grad.detach().clone() for name, p in named if p.grad is not None}
            save_file(grads, str(record / "grads.safetensors"))
        return clip_grad_norm(accelerator, parameters, *args, **kwargs)

    def recorded_update_policy(tracker, policy, batch, *args, **kwargs):
        current["policy"] = getattr(policy, "module", policy)
        if not steps and rank == 0:  # the weights training starts from
            initial = {k: v.detach().clone().contiguous() for k, v in current["policy"].state_dict().items()}
            save_file(initial, str(record / "initial.safetensors"))
        draws = GlobalBatchDraws(len(steps), rank, world) if global_draws else contextlib.nullcontext()
        with draws:
            tracker, output = update_policy(tracker, policy, batch, *args, **kwargs)
        steps.append({"loss": tracker.loss.val, "grad_norm": tracker.grad_norm.val, "index": batch["index"].tolist()})
        steps[-1].update(output or {})
        return tracker, output

    lerobot_train.update_policy = recorded_update_policy
    Accelerator.clip_grad_norm_ = recorded_clip_grad_norm
    sys.argv = [sys.argv[0], *argv]
    lerobot_train.main()
    result = {"world_size": world, "steps": steps, "noise_levels": levels_drawn}
    (record / f"rank{rank}.json").write_text(json.dumps(result))


def _fsdp_worker(record: Path) -> None:
    """Train the tiny policy 2 steps wrapped in FSDP (2 ranks x batch 2) and alone (batch 4); write the comparison."""
    import torch.distributed as dist  # noqa: PLC0415
    from accelerate.utils import FullyShardedDataParallelPlugin  # noqa: PLC0415
    from torch.distributed import fsdp  # noqa: PLC0415
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict  # noqa: PLC0415

    from tests.helpers import make_policy, training_batch  # noqa: PLC0415

    rank, world = _rank_world()
    global_batch, steps = 4, 2
    dist.init_process_group("gloo")
    os.environ.update(accelerate_env(FSDP_CONFIG))

    def ignored_modules(policy, plugin):  # accelerate resolves fsdp_ignored_modules as a pattern of module names
        return [m for n, m in policy.named_modules() if re.fullmatch(plugin.ignored_modules, n)]

    def train(policy, call, optimizer, rank, world):
        losses = []
        for step in range(steps):
            batch = training_batch(policy.config, batch_size=global_batch, seed=step)
            rows = slice(rank * global_batch // world, (rank + 1) * global_batch // world)
            batch = {k: v[rows] for k, v in batch.items()}
            with GlobalBatchDraws(step, rank, world):
                loss, _ = call(batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(float(loss.detach()))
        return losses

    results = {}
    for case in ("fsdp1", "fsdp1_bf16", "fsdp2"):
        options = {"gradient_checkpointing": True} if case == "fsdp1" else {}
        reference = make_policy(seed=0, **options).train()
        initial = {k: v.clone() for k, v in reference.state_dict().items()}
        reference_losses = train(reference, reference.forward, torch.optim.AdamW(reference.get_optim_params()), 0, 1)
        policy = make_policy(seed=0, **options).train()
        policy.get_optim_params()
        plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables of examples/accelerate/fsdp.yaml
        if case.startswith("fsdp1"):
            # What accelerate's prepare_model does with this plugin (its FSDP1 branch), on the CPU.
            if case.endswith("bf16"):
                plugin.set_mixed_precision("bf16", override=True)  # what lerobot-train's --policy.dtype=bfloat16 sets
            units = fsdp_units(policy, plugin)
            model = fsdp.FullyShardedDataParallel(
                policy,
                sharding_strategy=plugin.sharding_strategy or plugin.reshard_after_forward,
                auto_wrap_policy=plugin.auto_wrap_policy,
                mixed_precision=plugin.mixed_precision_policy,
                backward_prefetch=plugin.backward_prefetch,
                forward_prefetch=plugin.forward_prefetch,
                use_orig_params=plugin.use_orig_params,
                ignored_modules=ignored_modules(policy, plugin),
                limit_all_gathers=plugin.limit_all_gathers,
                device_id=torch.device("cpu"),
            )
            call = model.forward  # as lerobot-train calls it
        else:
            units = []
            for name, module in policy.named_modules():
                if type(module).__name__ in plugin.transformer_cls_names_to_wrap:
                    units.append(name)
            for name in reversed(units):
                fsdp.fully_shard(policy.get_submodule(name))
            ignored = {p for m in ignored_modules(policy, plugin) for p in m.parameters()}
            model = fsdp.fully_shard(policy, ignored_params=ignored, mp_policy=fsdp.MixedPrecisionPolicy())
            call = model  # FSDP2 gathers in forward hooks: a module call
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
        local_losses = train(policy, call, optimizer, rank, world)
        gathered = [None] * world
        dist.all_gather_object(gathered, local_losses)
        if case.startswith("fsdp1"):
            # LeRobot's gather_fsdp_state_dicts, without offload_to_cpu: for a model already on the CPU, torch's
            # FSDP1 state_dict() with offload_to_cpu=True segfaults (any model, a 3-Linear one too).
            state_cfg = fsdp.FullStateDictConfig(offload_to_cpu=False, rank0_only=True)
            optim_cfg = fsdp.FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=True)
            with fsdp.FullyShardedDataParallel.state_dict_type(
                model, fsdp.StateDictType.FULL_STATE_DICT, state_cfg, optim_cfg
            ):
                state, optim_state = (
                    model.state_dict(),
                    fsdp.FullyShardedDataParallel.optim_state_dict(model, optimizer),
                )
            optim_entries = len(optim_state.get("state", {}))
        else:
            state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            optim_entries = None
        if rank == 0:
            expected = reference.state_dict()
            results[case] = {
                "units": sorted(units),
                "losses": [sum(v) / world for v in zip(*gathered, strict=True)],
                "reference_losses": reference_losses,
                "keys_match": sorted(state) == sorted(expected),
                "max_weight_diff": max(float((state[k].float() - v.float()).abs().max()) for k, v in expected.items()),
                "max_update": max(float((v.float() - initial[k].float()).abs().max()) for k, v in expected.items()),
                "optimizer_entries": optim_entries,
                "trainable": sum(1 for p in reference.parameters() if p.requires_grad),
                "latent_mean_dtype": str(policy.latent_mean.dtype),
            }
        dist.barrier()
    if rank == 0:
        (record / "fsdp.json").write_text(json.dumps(results))
    dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------------------------
# Launching
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(work: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="disabled", OMP_NUM_THREADS="1")
    env["HF_LEROBOT_HOME"] = str(work / "lerobot_home")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def _start(cmd: list[str], work: Path, log: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=work, env=_env(work, **env), stdout=log.open("w"), stderr=subprocess.STDOUT)


def _finish(process: subprocess.Popen, log: Path) -> None:
    try:
        code = process.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    if code != 0:
        pytest.fail(f"{' '.join(map(str, process.args))} exited {code}\n{log.read_text()[-6000:]}")


def _train_command(processes: int) -> list[str]:
    if processes == 1:
        return [sys.executable, str(THIS), "train"]
    launch = ["--config_file", str(DDP_CPU_CONFIG), "--num_processes", str(processes)]
    launch += ["--main_process_port", str(_free_port())]
    return [sys.executable, "-m", "accelerate.commands.launch", *launch, str(THIS), "train"]


def _train_args(root: Path, output_dir: Path, batch_size: int, *extra: str) -> list[str]:
    return [
        "--policy.type=fastwam",
        "--policy.preset=tiny",
        "--policy.device=cpu",
        "--policy.push_to_hub=false",
        "--policy.optimizer_lr=1e-3",
        f"--dataset.repo_id={REPO_ID}",
        f"--dataset.root={root}",
        "--dataset.video_backend=pyav",
        f"--steps={STEPS}",
        f"--batch_size={batch_size}",
        f"--save_freq={STEPS}",
        "--log_freq=1",
        f"--output_dir={output_dir}",
        "--num_workers=0",
        "--env_eval_freq=0",
        "--wandb.enable=false",
        "--seed=1000",
        *extra,
    ]


class Run:
    """One lerobot-train run: its command, record directory, log and checkpoint."""

    def __init__(self, work: Path, name: str, root: Path, processes: int, batch_size: int, *extra: str, **env: str):
        self.work, self.name, self.processes = work, name, processes
        self.record = work / f"record_{name}"
        self.record.mkdir()
        self.log = work / f"{name}.log"
        self.output_dir = work / f"out_{name}"
        cmd = _train_command(processes) + _train_args(root, self.output_dir, batch_size, *extra)
        self.process = _start(cmd, work, self.log, FASTWAM_TEST_RECORD=str(self.record), **env)

    def finish(self) -> Run:
        _finish(self.process, self.log)
        self.ranks = [json.loads((self.record / f"rank{r}.json").read_text()) for r in range(self.processes)]
        return self

    def weights(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file  # noqa: PLC0415

        return load_file(str(self.output_dir / "checkpoints" / "last" / "pretrained_model" / "model.safetensors"))

    def recorded(self, name: str) -> dict[str, torch.Tensor]:
        """``initial`` (the weights at step 0) or ``grads`` (the first step's gradient), from rank 0."""
        from safetensors.torch import load_file  # noqa: PLC0415

        return load_file(str(self.record / f"{name}.safetensors"))


def _files(directory: Path) -> dict[str, tuple[str, int]]:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in directory.iterdir()}


# ------------------------------------------------------------------------------------------------------------------
# Fixtures: the runs, started together where they can share the 2 cores
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import shutil  # noqa: PLC0415

    from lerobot_fastwam.data.latent_cache import cache_dir  # noqa: PLC0415
    from lerobot_fastwam.testing.synthetic_dataset import make_dataset  # noqa: PLC0415
    from lerobot_fastwam.tools.cli import main as fastwam_cli  # noqa: PLC0415

    work = tmp_path_factory.mktemp("distributed")
    root = work / "dataset"
    make_dataset(root, repo_id=REPO_ID, episodes=2, frames=24, cameras=("front", "wrist"), image_hw=(64, 64))
    cached_root = work / "dataset_cached"
    shutil.copytree(root, cached_root)
    fsdp_cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    fsdp_cmd += [f"--master_port={_free_port()}", str(THIS), "fsdp", str(work)]
    fsdp = _start(fsdp_cmd, work, work / "fsdp.log")
    single = Run(work, "single", root, 1, 4, FASTWAM_TEST_GLOBAL_DRAWS="1")
    ddp = Run(work, "ddp", root, 2, 2, FASTWAM_TEST_GLOBAL_DRAWS="1")
    options = ["--policy.preset=tiny", "--policy.device=cpu", "--shard_size=16", "--num_workers=0", "--batch_size=8"]
    fastwam_cli(["cache", f"--dataset.repo_id={REPO_ID}", f"--dataset.root={cached_root}", *options])
    cache_before = _files(cache_dir(cached_root))
    runs = {"single": single.finish(), "ddp": ddp.finish()}
    no_cotrain = Run(
        work, "no_cotrain", cached_root, 2, 2, "--policy.video_loss_weight=0", "--policy.gradient_checkpointing=true"
    )
    _finish(fsdp, work / "fsdp.log")
    runs["fsdp"] = json.loads((work / "fsdp.json").read_text())
    runs["no_cotrain"] = no_cotrain.finish()
    no_cotrain.cache_dir = cache_dir(cached_root)
    runs["cache"] = (cache_before, _files(cache_dir(cached_root)))
    return runs


# ------------------------------------------------------------------------------------------------------------------
# DDP
def test_ddp_two_processes_train_as_one_process_with_the_global_batch(runs):
    (single,) = runs["single"].ranks
    rank0, rank1 = runs["ddp"].ranks
    assert rank0["world_size"] == rank1["world_size"] == 2 and len(single["steps"]) == STEPS
    for step, (s, a, b) in enumerate(zip(single["steps"], rank0["steps"], rank1["steps"], strict=True)):
        # LeRobot's sampler, sharded by accelerate: rank r trains on the r-th half of the one-process batch.
        assert a["index"] + b["index"] == s["index"], step
        assert a["loss"] != pytest.approx(b["loss"], rel=1e-3), step  # different samples on each rank
        for key in ("loss", "loss_video", "loss_action"):
            assert (a[key] + b[key]) / 2 == pytest.approx(s[key], rel=1e-5), (step, key)
        # After DDP's all-reduce both ranks clip the same gradient, the one-process one.
        assert a["grad_norm"] == b["grad_norm"] == pytest.approx(s["grad_norm"], rel=1e-5), step

    initial = runs["single"].recorded("initial")
    for key, value in runs["ddp"].recorded("initial").items():
        assert torch.equal(value, initial[key]), key  # the same start
    # The first step's gradient, parameter by parameter (DDP: averaged over the ranks).
    single_grads, ddp_grads = runs["single"].recorded("grads"), runs["ddp"].recorded("grads")
    assert single_grads.keys() == ddp_grads.keys() and len(single_grads) > 100
    scale = max(float(g.abs().max()) for g in single_grads.values())
    for key, grad in single_grads.items():  # (observed: at most 6e-8 apart, on a scale of 0.5)
        torch.testing.assert_close(ddp_grads[key], grad, rtol=1e-5, atol=1e-6 * scale, msg=key)
    # The weights after 3 AdamW steps. Adam divides each gradient entry by its own magnitude, which turns the
    # reduction-order rounding of entries near zero into differences of a small fraction of the step size.
    single_weights, ddp_weights = runs["single"].weights(), runs["ddp"].weights()
    assert single_weights.keys() == ddp_weights.keys() == initial.keys()
    update = max(float((single_weights[k] - initial[k]).abs().max()) for k in initial)
    diff = max(float((single_weights[k] - ddp_weights[k]).abs().max()) for k in initial)
    assert update > 1e-3 and diff < 1e-2 * update, (update, diff)


def test_ddp_without_video_cotraining_leaves_the_video_head_untouched(runs):
    run = runs["no_cotrain"]
    for rank in run.ranks:
        assert len(rank["steps"]) == STEPS
        for step in rank["steps"]:
            assert torch.isfinite(torch.tensor(step["loss"])) and step["loss_video"] == 0.0
            assert step["loss"] == pytest.approx(step["loss_action"])
    final, initial = run.weights(), run.recorded("initial")
    unchanged = {k for k in initial if torch.equal(initial[k], final[k])}
    # Nothing scores the video head: DDP leaves its gradient undefined, so AdamW does not touch it (no weight decay).
    assert {"model.mot.video.proj_out.weight", "model.mot.video.scale_shift_table"} <= unchanged
    assert all(k.startswith("model.mot.video.") for k in unchanged), unchanged
    assert not any(k.startswith("model.mot.action.") for k in unchanged)


def test_the_latent_cache_is_read_by_every_rank_and_written_by_none(runs):
    log = runs["no_cotrain"].log.read_text()
    assert "training from the latent cache" in log
    before, after = runs["cache"]
    # The one file a rank may write is the memo of the dataset files' hashes (here: the dataset was copied just
    # before the cache was built, too recently to memoise), written whole under a per-process temporary name.
    memo = "file_hashes.json"
    assert set(after) - {memo} == set(before) - {memo}, "a rank left a file in the cache"
    assert {k: v for k, v in after.items() if k != memo} == {k: v for k, v in before.items() if k != memo}
    assert json.loads((runs["no_cotrain"].cache_dir / memo).read_text())["files"]


def test_ddp_ranks_draw_their_own_noise(runs):
    rank0, rank1 = runs["no_cotrain"].ranks
    assert len(rank0["noise_levels"]) == len(rank1["noise_levels"]) > 0
    for a, b in zip(rank0["noise_levels"], rank1["noise_levels"], strict=True):
        assert a != b  # LeRobot seeds every rank alike: without the split, every draw would repeat on both ranks


# ------------------------------------------------------------------------------------------------------------------
# FSDP
def test_fsdp_config_makes_every_mot_block_its_own_unit(monkeypatch):
    from accelerate.utils import FullyShardedDataParallelPlugin  # noqa: PLC0415

    from ..helpers import make_policy  # noqa: PLC0415

    for key, value in accelerate_env(FSDP_CONFIG).items():
        monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 1 and plugin.use_orig_params
    policy = make_policy()
    layers = range(policy.config.num_layers)
    expected = [f"model.mot.{expert}.blocks.{i}" for expert in ("action", "video") for i in layers]
    assert fsdp_units(policy, plugin) == expected
    ignored = [n for n, _ in policy.named_modules() if re.fullmatch(plugin.ignored_modules, n)]
    assert ignored == ["latent_encoder", "prompt_encoder"]


def test_fsdp_block_units_train_as_one_process(runs):
    results = runs["fsdp"]
    expected_units = [f"model.mot.{e}.blocks.{i}" for e in ("action", "video") for i in range(2)]
    for case, result in results.items():
        assert result["units"] == expected_units, case
        assert result["keys_match"], case
    for case in ("fsdp1", "fsdp2"):  # fp32 (fsdp1 with gradient checkpointing): the same training
        result = results[case]
        assert result["losses"] == pytest.approx(result["reference_losses"], rel=1e-5), case
        assert result["max_update"] > 1e-4 and result["max_weight_diff"] < 1e-5, (case, result)
    assert results["fsdp1"]["optimizer_entries"] == results["fsdp1"]["trainable"]
    bf16 = results["fsdp1_bf16"]  # accelerate's bf16 policy: bf16 compute, gradients reduced in bf16
    assert bf16["losses"] == pytest.approx(bf16["reference_losses"], rel=2e-2)
    assert bf16["latent_mean_dtype"] == "torch.bfloat16"  # FSDP1's buffer_dtype casts buffers (docs/distributed.md)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    if sys.argv[1] == "train":
        _train_worker(sys.argv[2:])
    elif sys.argv[1] == "fsdp":
        _fsdp_worker(Path(sys.argv[2]))
