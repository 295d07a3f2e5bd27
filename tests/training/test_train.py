"""The trainer on shards of the CelebA sample: steps, DDP, resume, signals, MLflow, clear errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import synthetic_sample
from helpers import PROJECT_ROOT, help_records, run_script
from tracking_helpers import client, runs_in, steps_logged
from trainer_helpers import TINY, run_train, train_cmd

from pipeline.data import LoaderConfig, build_loader
from pipeline.runtime.distributed import ProcessPlace
from pipeline.train import command_line, main, parse_args
from pipeline.training.config import ModelConfig, TrainConfig, load_config
from pipeline.training.steps import SRGANModel


@pytest.mark.parametrize("preset", ["seed", "faces128"])
@pytest.mark.parametrize("scale", [4, 8])
def test_steps_run_at_both_scales_and_presets(request, preset, scale):
    data = request.getfixturevalue(f"shards_{preset}")
    batch = next(
        iter(build_loader(LoaderConfig(data=data, scale=scale, batch_size=2), ProcessPlace()))
    )
    hr_size = batch.hr.shape[-1]
    for phase in ("pretrain", "gan"):
        cfg = TrainConfig(
            scale=scale,
            phase=phase,
            precision="fp32",
            vgg_weights="random",
            model=ModelConfig(blocks=1, channels=8, d_channels=4),
        )
        cfg.loss.vgg_layer = "relu2_2"  # shallower VGG: the shapes are what is tested here
        model = SRGANModel(cfg, hr_size, torch.device("cpu"), world_size=1)
        with torch.no_grad():
            assert model.g(batch.lr).shape == batch.hr.shape
        losses = model.train_step(batch.lr, batch.hr)
        assert all(torch.isfinite(v) for v in losses.values()), losses
        if phase == "gan":
            assert set(losses) >= {"loss/content", "loss/adversarial", "loss/discriminator"}


def test_bf16_autocast_steps_on_cpu(shards_faces128):
    # This CPU emulates bf16 (slow), so one small step of each phase shows that AMP works.
    batch = next(
        iter(
            build_loader(LoaderConfig(data=shards_faces128, scale=8, batch_size=2), ProcessPlace())
        )
    )
    for phase in ("pretrain", "gan"):
        cfg = TrainConfig(
            scale=8,
            phase=phase,
            precision="bf16",
            vgg_weights="random",
            model=ModelConfig(blocks=1, channels=4, d_channels=2),
        )
        cfg.loss.vgg_layer = "relu1_2"
        model = SRGANModel(cfg, 128, torch.device("cpu"), world_size=1)
        with model.autocast():
            assert model.g(batch.lr).dtype == torch.bfloat16
        losses = model.train_step(batch.lr, batch.hr)
        assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values())


def test_the_l1_pixel_loss_is_what_the_pretrain_step_minimises(shards_faces128):
    loader = build_loader(LoaderConfig(data=shards_faces128, scale=4, batch_size=2), ProcessPlace())
    batch = next(iter(loader))
    cfg = parse_args(["--data", str(shards_faces128), "--pixel-loss", "l1", "--precision", "fp32",
                      "--blocks", "1", "--channels", "8"])  # fmt: skip
    model = SRGANModel(cfg, 128, torch.device("cpu"), world_size=1)
    with torch.no_grad():
        sr = model.g(batch.lr)
    losses = model.train_step(batch.lr, batch.hr)
    assert set(losses) == {"loss/pixel_l1"}
    assert torch.allclose(losses["loss/pixel_l1"], (sr - batch.hr).abs().mean(), atol=1e-6)
    assert not torch.allclose(losses["loss/pixel_l1"], ((sr - batch.hr) ** 2).mean())


def test_config_file_then_flags(tmp_path: Path):
    cfg = load_config(PROJECT_ROOT / "configs" / "x8.toml", {"optim.lr": 5e-4, "steps": 7})
    assert (cfg.scale, cfg.steps, cfg.optim.lr, cfg.model.blocks) == (8, 7, 5e-4, 16)
    assert cfg.loss.vgg_layer == "relu5_4" and cfg.loss.adversarial_weight == 1e-3
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nblockz = 3\n")
    with pytest.raises(ValueError, match=r"bad\.toml\.model: unknown setting 'blockz'"):
        load_config(bad, {})


def test_a_flag_beats_the_config_file_and_an_absent_flag_leaves_the_files_value(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('steps = 7\nlpips = "off"\nchannels_last = false\ncompile = true\n'
                    "[optim]\nlr = 2e-4\nwarmup_steps = 3\n")  # fmt: skip
    cfg = parse_args(["--config", str(toml), "--lr", "5e-4", "--lpips"])
    assert (cfg.optim.lr, cfg.lpips) == (5e-4, "on")
    assert (cfg.steps, cfg.optim.warmup_steps) == (7, 3)
    assert (cfg.channels_last, cfg.compile) == (False, "on")  # a bool from before "auto"
    assert cfg.batch_size == TrainConfig().batch_size  # in neither: the dataclass's
    cfg = parse_args(["--config", str(toml), "--channels-last", "--steps", "9"])
    assert (cfg.channels_last, cfg.steps, cfg.lpips, cfg.optim.lr) == (True, 9, "off", 2e-4)


def test_config_files_layer_in_order_and_flags_beat_them_all():
    configs = PROJECT_ROOT / "configs"
    paper = parse_args(["--config", str(configs / "x8.toml")])
    cfg = parse_args(["--config", str(configs / "x8.toml"), "--config", str(configs / "h200.toml")])
    # the GPU layer: its batch, steps, warm-up and average; the paper's network, lr and losses
    assert (cfg.scale, cfg.model.blocks, cfg.optim.lr) == (8, 16, paper.optim.lr)
    assert (cfg.batch_size, cfg.optim.lr_scaling, cfg.optim.lr_reference_batch) == (256, "sqrt", 16)
    # the same images in 1/16 of the steps, the average's horizon kept in images
    assert cfg.steps * cfg.batch_size == paper.steps * paper.batch_size
    assert abs(cfg.optim.warmup_steps * 16 - paper.optim.warmup_steps) < 16
    assert cfg.ema_decay == pytest.approx(paper.ema_decay**16, abs=1e-4)
    flagged = parse_args(["--config", str(configs / "x8.toml"), "--config",
                          str(configs / "h200.toml"), "--batch-size", "64"])  # fmt: skip
    assert (flagged.batch_size, flagged.steps) == (64, cfg.steps)


def test_help_shows_every_option_with_trainconfigs_default(capsys):
    assert main(["--help"]) == 0
    shown = capsys.readouterr().out
    records = help_records(command_line)
    # argparse's 41, --lpips and --no-lpips now one pair; --compile-backend, --compile-mode,
    # --lr-scaling, --lr-reference-batch added
    assert len(records) == 44
    for option, text in records.items():
        assert option in shown
        # flags too: a --config file may have changed what they start from
        assert "[default: " in text, option
    cfg = TrainConfig()
    assert records["--lr"].endswith(f"[default: {cfg.optim.lr}]")  # 0.0001
    assert records["--steps"].endswith(f"[default: {cfg.steps}]")
    assert records["--loader"].endswith(f"[default: {cfg.loader.backend}]")
    assert records["--compile"].endswith("[default: auto]")
    assert records["--lpips"].endswith("[default: auto]")
    assert "[default: auto: on for CPUs and CUDA" in records["--channels-last"]
    assert records["--config"].endswith("[default: none]")


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--bogus"], "No such option '--bogus'."),
        (["--scale", "3"], "Invalid value for '--scale': '3' is not one of '2', '4', '8'."),
        (["--steps"], "Option '--steps' requires an argument."),
        (["--steps", "0"], "steps must be >= 1, got 0"),  # TrainConfig.validate's
        (["--config", "nope.toml"], "nope.toml: config file not found"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_status_2(capsys, argv, error):
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"pipeline.train: error: {error}")


@pytest.mark.parametrize(
    ("toml", "error"),
    [
        ('[optim]\nlr_scaling = "cubic"\n', "optim.lr_scaling must be one of none, sqrt, linear"),
        ('phase = "finetune"\n', "phase must be one of pretrain, gan, got 'finetune'"),
        ('[model]\noutput = "relu"\n', "model.output must be one of tanh, linear"),
    ],
)
def test_a_config_file_setting_outside_its_choices_is_a_usage_error(tmp_path, capsys, toml, error):
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    assert main(["--config", str(config)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"pipeline.train: error: {error}")


@pytest.mark.integration
def test_the_srgan_train_script_exits_with_mains_status():
    result = run_script("srgan-train", "--help")
    assert result.returncode == 0 and "--lr FLOAT" in result.stdout
    result = run_script("srgan-train", "--bogus")
    assert result.returncode == 2
    assert result.stderr.startswith("pipeline.train: error: No such option '--bogus'.")
    assert len(result.stderr.splitlines()) == 1


def test_auto_memory_format_is_channels_last_on_cpu_and_cuda_and_flags_override_it():
    from pipeline.train import parse_args
    from pipeline.training.trainer import resolve_device_defaults

    cpu = torch.device("cpu")
    base = ["--data", "d", "--scale", "4", "--phase", "pretrain", "--precision", "fp32"]
    assert parse_args(base).channels_last is None  # auto until the device is known
    assert resolve_device_defaults(parse_args(base), cpu).channels_last is True
    # resolving touches no CUDA API, so this holds on machines without a GPU too
    assert resolve_device_defaults(parse_args(base), torch.device("cuda")).channels_last is True
    assert resolve_device_defaults(parse_args(base), torch.device("mps")).channels_last is False
    off = parse_args([*base, "--no-channels-last"])
    assert resolve_device_defaults(off, cpu).channels_last is False
    assert resolve_device_defaults(parse_args([*base, "--channels-last"]), cpu).channels_last


# float64 rounding: unit roundoff 1.1e-16; reordering a sum of n terms (a rank's partial
# gradients, all-reduced, against one process's sum) moves it by about sqrt(n) of that, and a
# gradient element here sums at most ~1e8 products (batch x pixels x 3x3 taps x channels):
# ~1e-12 of its size. 1e-9 of the weights' movement leaves 1000x for a few steps' compounding;
# a missing 1/world_size changes the update by 100% of it.
DDP_TOLERANCE = 1e-9


def _largest_change(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], parameters_only: bool = False
) -> float:
    """Over every float tensor, or only the trained parameters: BatchNorm's running
    statistics move with the forward passes whatever the gradients are."""
    buffers = ("running_mean", "running_var")
    keys = [k for k in a if a[k].is_floating_point()]
    keys = [k for k in keys if not k.endswith(buffers)] if parameters_only else keys
    return max((a[k] - b[k]).abs().max().item() for k in keys)


@pytest.mark.integration
def test_two_processes_train_like_one_with_the_same_global_batch(shards_faces128, tmp_path):
    runs = {"one": (1, "average"), "two": (2, "average"), "two_summing": (2, "sum")}
    results = {}
    for name, (world, mode) in runs.items():
        result = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone",
             f"--nproc_per_node={world}", "tests/dist/ddp_equivalence.py",
             str(shards_faces128), str(tmp_path / f"{name}.pt"), mode],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        results[name] = torch.load(tmp_path / f"{name}.pt", weights_only=True)
    one, two, summing = results["one"], results["two"], results["two_summing"]
    for name in one["pretrain"]["start"]["g"]:  # both runs start from the same seeded weights
        assert torch.equal(one["pretrain"]["start"]["g"][name], two["pretrain"]["start"]["g"][name])
    for phase in ("pretrain", "gan"):
        for net, end in one[phase]["end"].items():
            moved = _largest_change(end, one[phase]["start"][net], parameters_only=True)
            apart = _largest_change(end, two[phase]["end"][net])
            assert moved > 1e-3, (phase, net, moved)  # the steps did train: not vacuous
            assert apart <= DDP_TOLERANCE * moved, (phase, net, apart, moved)
            # the control: gradients summed across ranks instead of averaged are caught
            wrong = _largest_change(end, summing[phase]["end"][net], parameters_only=True)
            assert wrong > 0.1 * moved, (phase, net, wrong, moved)
    # one all-reduce of each net's gradients per step: G in both phases, D in the GAN phase
    # (its real and fake backward passes accumulate locally, the second one reduces)
    assert two["pretrain"]["rounds_per_step"] == {"g": 1.0}
    assert two["gan"]["rounds_per_step"] == {"g": 1.0, "d": 1.0}


@pytest.mark.integration
def test_pretrain_loss_falls_and_mlflow_has_it_all(shards_faces128, tmp_path, metric_weights):
    db = tmp_path / "mlflow.db"
    out = tmp_path / "run"
    # the peak lr 1e-3, as 5e-4 set for a batch of 2 and scaled linearly to the batch of 4
    args = ("--scale 4 --phase pretrain --steps 40 --lr 5e-4 --lr-scaling linear "
            "--lr-reference-batch 2 --log-every 5 --eval-every 20")  # fmt: skip
    sampling = {
        "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1",
        "MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING": "1",
    }
    run_train(shards_faces128, out, db, *args.split(), "--checkpoint-every", "20",
              "--alexnet-weights", str(metric_weights["alexnet"]), env=sampling)  # fmt: skip
    (run,) = runs_in(db)
    store = client(db)
    assert run.info.run_name == "x4-pretrain" and run.info.status == "FINISHED"
    assert run.data.tags["data"] == ("synthetic" if synthetic_sample() else "celeba")
    params = run.data.params
    assert params["config.scale"] == "4" and params["data.preset"] == "faces128"
    assert params["world_size"] == "1" and params["config.precision"] == "fp32"
    assert len(params["git_commit"]) in (40, len("unknown"))
    history = [m.value for m in store.get_metric_history(run.info.run_id, "loss/pixel_mse")]
    assert len(history) == 8
    assert history[-1] < 0.7 * history[0], history
    for name in (
        "val/sr_psnr_y",
        "val/bicubic_psnr_y",
        "val/sr_ssim_rgb",
        "perf/images_per_s",
        "perf/data_wait_fraction",
        "lr",
        "val/sr_colour_shift",
        "val/sr_lpips",  # the AlexNet weights were given, so LPIPS is in every evaluation
        "val/bicubic_lpips",
    ):
        assert name in run.data.metrics, name
    assert any(k.startswith("system/") for k in run.data.metrics)
    lrs = [m.value for m in store.get_metric_history(run.info.run_id, "lr")]
    assert max(lrs) == pytest.approx(1e-3)  # reached at the end of the warm-up
    samples = [a.path for a in store.list_artifacts(run.info.run_id, "samples")]
    assert samples == ["samples/step-00000020.png", "samples/step-00000040.png"]
    models = store.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert [m.name for m in models] == ["generator"]
    assert str(models[0].status).endswith("READY")
    version = store.get_model_version("srgan-celeba-x4", "1")  # the registry has it, tagged
    assert version.run_id == run.info.run_id and version.tags["step"] == "40"
    assert version.tags["phase"] == "pretrain"
    final = run.data.metrics
    for name in ("psnr_y", "ssim_y", "lpips"):
        assert float(version.tags[f"val_{name}"]) == pytest.approx(final[f"val/sr_{name}"], 1e-3)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step-00000020.pt",
        "step-00000040.pt",
    ]


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.integration
def test_killed_and_resumed_equals_uninterrupted(shards_faces128, tmp_path):
    # 40 faces in batches of 4: the checkpoint at step 10 is at an epoch's end, and the resumed
    # run goes past the next one (step 20), where a resumed DALI loader once stopped the run
    # ("DALI gave 20 batches, expected 10").
    args = [
        "--scale",
        "4",
        "--phase",
        "pretrain",
        "--steps",
        "30",
        "--checkpoint-every",
        "10",
        "--eval-every",
        "1000",
        "--deterministic",
        "--seed",
        "5",
    ]
    run_train(shards_faces128, tmp_path / "whole", tmp_path / "whole.db", *args)

    out, db = tmp_path / "killed", tmp_path / "killed.db"
    process = subprocess.Popen(
        train_cmd(shards_faces128, out, db, *args),
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(out / "checkpoints" / "step-00000010.pt", process)
    process.kill()
    process.wait()
    # step 10's checkpoint; also 20's when a loaded machine was slow to kill (the test's process
    # starved while the run trained on): then the kill is as if made before step 20, so that
    # the resumed run still crosses step 20's epoch end
    later = out / "checkpoints" / "step-00000020.pt"
    if later.exists():
        later.unlink()
    assert not (out / "checkpoints" / "step-00000030.pt").exists()
    resumed_run = run_train(shards_faces128, out, db, *args, "--resume", "auto")
    assert "step-00000010.pt at step 10" in resumed_run.stderr

    last = "checkpoints/step-00000030.pt"
    whole = torch.load(tmp_path / "whole" / last, weights_only=True)["model"]
    resumed = torch.load(out / last, weights_only=True)["model"]
    assert resumed["generator_ema"]["updates"] == 30  # the average went on where it stopped
    for part in ("generator", "generator_ema"):
        ours = resumed[part] if part == "generator" else resumed[part]["weights"]
        theirs = whole[part] if part == "generator" else whole[part]["weights"]
        for name, value in theirs.items():
            assert torch.equal(value, ours[name]), (part, name)
    (run,) = runs_in(db)  # the resumed run continued the same MLflow run
    assert run.info.status == "FINISHED"


@pytest.mark.integration
def test_a_finished_run_run_again_does_nothing_and_more_steps_at_another_batch_go_on(
    shards_faces128, tmp_path
):
    args = ["--scale", "4", "--phase", "pretrain", "--eval-every", "1000", "--resume", "auto"]
    out, db = tmp_path / "run", tmp_path / "mlflow.db"
    run_train(shards_faces128, out, db, *args, "--steps", "6")
    assert json.loads((out / "finished.json").read_text())["step"] == 6
    # a requeued job or launch/train_all.sh again: no second evaluation, no second version
    again = run_train(shards_faces128, out, db, *args, "--steps", "6")
    assert "the run finished at step 6 before" in again.stderr
    assert "val PSNR-Y" not in again.stderr
    versions = client(db).search_model_versions()
    assert len(versions) == 1
    # 24 of the 40 faces seen at batch 4: DALI restores its place in samples and the count in
    # batches (6 of 4 would be read as 6 of 5), so the run starts a new epoch instead
    more = run_train(shards_faces128, out, db, *args, "--steps", "24", "--batch-size", "5")
    assert "written by 1 processes at batch 4, this run has 1 at batch 5" in more.stderr
    assert (out / "checkpoints" / "step-00000024.pt").is_file()
    assert json.loads((out / "finished.json").read_text())["step"] == 24


@pytest.mark.integration
def test_a_torn_checkpoint_is_skipped(shards_faces128, tmp_path):
    args = [
        "--scale",
        "4",
        "--phase",
        "pretrain",
        "--checkpoint-every",
        "2",
        "--eval-every",
        "1000",
    ]
    out, db = tmp_path / "run", tmp_path / "mlflow.db"
    run_train(shards_faces128, out, db, *args, "--steps", "4")
    newest = out / "checkpoints" / "step-00000004.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # torn, as by a crash mid-write elsewhere
    result = run_train(shards_faces128, out, db, *args, "--steps", "6", "--resume", "auto")
    assert "skipping unreadable checkpoint" in result.stderr and "step-00000004.pt" in result.stderr
    assert "resumed from" in result.stderr and "step-00000002.pt at step 2" in result.stderr
    assert (out / "checkpoints" / "step-00000006.pt").is_file()
    assert "1 checkpoints of later steps than 2 (step-00000004.pt) moved to" in result.stderr
    torn = out / "checkpoints" / "set-aside" / "resumed-at-00000002" / "step-00000004.pt"
    assert len(torn.read_bytes()) == 1000


@pytest.mark.integration
def test_sigterm_checkpoints_and_resume_finishes(shards_faces128, tmp_path):
    common = "--scale 4 --phase pretrain --checkpoint-every 3 --eval-every 1000 --log-every 1"
    out, db = tmp_path / "run", tmp_path / "mlflow.db"
    process = subprocess.Popen(
        train_cmd(shards_faces128, out, db, *common.split(), "--steps", "400"),
        cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for(out / "checkpoints" / "step-00000003.pt", process)
    os.kill(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-3000:]
    assert "stop signal received: checkpoint written at step" in stderr
    stopped_at = max(int(p.stem.split("-")[1]) for p in (out / "checkpoints").iterdir())
    assert 3 <= stopped_at < 400
    (run,) = runs_in(db)
    assert run.info.status == "KILLED"

    total = str(stopped_at + 3)
    run_train(shards_faces128, out, db, *common.split(), "--steps", total, "--resume", "auto")
    (run,) = runs_in(db)
    assert run.info.status == "FINISHED"
    steps = steps_logged(db, run.info.run_id)
    assert steps == list(range(1, stopped_at + 4))  # every step logged once, none lost


@pytest.mark.integration
def test_gan_phase_needs_init_and_starts_from_it(shards_faces128, tmp_path):
    db = tmp_path / "mlflow.db"
    common = "--scale 4 --eval-every 1000 --checkpoint-every 1000 --steps 2".split()
    run_train(shards_faces128, tmp_path / "pre", db, *common, "--phase", "pretrain")
    gan = [shards_faces128, tmp_path / "gan", db, *common, "--phase", "gan"]
    result = run_train(*gan, check=False)
    assert result.returncode == 2
    assert "the gan phase starts from a pretrained generator: pass --init" in result.stderr
    (tmp_path / "empty").mkdir()
    result = run_train(*gan, "--init", str(tmp_path / "empty"), check=False)
    assert result.returncode == 2 and "--init folder holds no readable checkpoint" in result.stderr
    result = run_train(*gan, "--init", str(tmp_path / "pre"))  # a run folder: its newest
    assert (
        "generator initialised from " + str(tmp_path / "pre" / "checkpoints" / "step-00000002.pt")
        in result.stderr
    )
    names = sorted(r.info.run_name for r in runs_in(db))
    assert names == ["x4-gan", "x4-pretrain"]
    gan = next(r for r in runs_in(db) if r.info.run_name == "x4-gan")
    assert "loss/content" in gan.data.metrics and gan.data.tags["vgg_weights"] == "random"
    pre = next(r for r in runs_in(db) if r.info.run_name == "x4-pretrain")
    assert pre.data.tags["vgg_weights"] == "unused"
    assert gan.data.params["vgg_weights"].startswith("random (NOT ImageNet")


@pytest.mark.integration
def test_missing_vgg_weights_stop_before_training(shards_faces128, tmp_path):
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch-home")}
    cmd = train_cmd(
        shards_faces128,
        tmp_path / "run",
        tmp_path / "db.db",
        "--phase",
        "gan",
        "--steps",
        "2",
        "--init",
        "unused.pt",
    )
    cmd = [a for a in cmd if a not in ("--vgg-weights", "random")]
    result = subprocess.run(
        cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("pipeline.train: error: VGG19 ImageNet weights not found at ")
    )
    assert "--vgg-weights PATH" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.integration
def test_lpips_asked_for_without_weights_stops_before_training(shards_faces128, tmp_path):
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch-home")}
    cmd = train_cmd(shards_faces128, tmp_path / "run", tmp_path / "db.db", "--steps", "2",
                    "--lpips")  # fmt: skip
    result = subprocess.run(
        cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"pipeline.train: error: {tmp_path}/torch-home/hub/checkpoints/"
                            "alexnet-owt-7be5be79.pth: alexnet weights")  # fmt: skip
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.integration
def test_unreachable_tracking_server_does_not_stop_training(shards_faces128, tmp_path):
    out = tmp_path / "run"
    result = run_train(
        shards_faces128,
        out,
        "http://127.0.0.1:9",
        "--scale",
        "8",
        "--phase",
        "pretrain",
        "--steps",
        "3",
        "--eval-every",
        "1000",
        "--checkpoint-every",
        "1000",
    )
    warnings = [line for line in result.stderr.splitlines() if "MLflow at" in line]
    assert len(warnings) == 1 and "failed at the start" in warnings[0], result.stderr[-3000:]
    assert "training goes on" in warnings[0]
    assert (out / "checkpoints" / "step-00000003.pt").is_file()
    journal = (out / "tracking" / "journal.jsonl").read_text().splitlines()
    assert [json.loads(line)["kind"] for line in journal][-1] == "end"  # kept for `sync`


@pytest.mark.integration
def test_broken_shards_stop_before_training(shards_faces128, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(shards_faces128, data)
    (data / "val" / "val-000000.idx").unlink()
    result = run_train(data, tmp_path / "run", tmp_path / "db.db", "--steps", "2", check=False)
    assert result.returncode == 2
    assert "val-000000.idx missing" in result.stderr.strip().splitlines()[-1]


@pytest.mark.integration
def test_a_shard_broken_in_one_ranks_part_stops_every_rank_with_its_error(
    shards_faces128, tmp_path
):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(shards_faces128, data)
    (data / "train" / "train-000001.idx").unlink()  # shard 1: rank 1 of 2 checks it
    result = run_train(data, tmp_path / "run", tmp_path / "db.db", "--steps", "2", check=False,
                       torchrun=2)  # fmt: skip
    assert result.returncode != 0
    # rank 0 did not check shard 1, yet stops with its error (rank 1 may be ended by torchrun
    # before it prints: torchrun stops the job when the first rank exits)
    error = "[rank 0] pipeline.train: error: " + str(data / "train" / "train-000001.tar")
    assert error in result.stderr, result.stderr[-3000:]
    assert "index file train-000001.idx missing" in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.integration
def test_trains_on_with_one_warning_where_mlflow_cannot_be_imported(shards_faces128, tmp_path):
    # A bare GPU machine (bench/gpu_check.sh) has no MLflow: training must not depend on it.
    blocked = tmp_path / "site" / "mlflow"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('mlflow not installed here')\n")
    result = run_train(
        shards_faces128, tmp_path / "run", tmp_path / "mlflow.db",
        *"--scale 4 --phase pretrain --steps 2 --eval-every 2 --checkpoint-every 2".split(),
        env={"PYTHONPATH": str(tmp_path / "site")},
    )  # fmt: skip
    assert result.stderr.count("failed at the start") == 1 and "training goes on" in result.stderr
    assert "mlflow not installed here" in result.stderr
    assert (tmp_path / "run" / "checkpoints" / "step-00000002.pt").is_file()
    assert "val PSNR-Y" in result.stderr  # evaluation still ran and was logged to the console


@pytest.mark.integration
@pytest.mark.parametrize("phase", ["pretrain", "gan"])
def test_the_step_loop_reads_nothing_back_from_the_device_between_logging_steps(
    shards_faces128, tmp_path, phase
):
    # On the meta device every tensor op runs (shapes only) but reading a value back to the
    # host raises, as a host-device sync would be needed on a GPU: the first read must be
    # the logging step's, whichever step that is.
    from pipeline.runtime.stopping import StopRequest
    from pipeline.train import parse_args
    from pipeline.training.trainer import Trainer, resolve_device_defaults

    meta = torch.device("meta")
    for log_every in (3, 5):
        argv = ["--data", str(shards_faces128), "--scale", "4", "--phase", phase,
                "--steps", "20", "--log-every", str(log_every), "--eval-every", "1000",
                "--checkpoint-every", "1000", "--out", str(tmp_path / "run"),
                "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                *TINY]  # fmt: skip
        trainer = Trainer(resolve_device_defaults(parse_args(argv), meta), ProcessPlace(), meta)
        try:
            with pytest.raises((NotImplementedError, RuntimeError), match="meta tensor"):
                trainer.train(StopRequest())
        finally:
            trainer.tracker.end("KILLED")
        assert trainer.step == log_every


def test_resume_keeps_this_devices_fused_adam(shards_faces128):
    # torch's load_state_dict takes `fused` from the checkpoint: a checkpoint written without
    # it would silently turn off fused Adam on CUDA (and with it fp16's sync-free inf check)
    cfg = TrainConfig(phase="gan", precision="fp32", vgg_weights="random",
                      model=ModelConfig(blocks=1, channels=8, d_channels=4))  # fmt: skip
    cfg.loss.vgg_layer = "relu2_2"
    model = SRGANModel(cfg, 128, torch.device("cpu"), world_size=1)
    batch = next(iter(build_loader(LoaderConfig(data=shards_faces128, batch_size=2))))
    model.train_step(batch.lr, batch.hr)
    saved = model.state_dict()  # written unfused, as on a CPU
    optimizers = (model.opt_g, model.opt_d)
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["fused"] = True  # as SRGANModel sets it on CUDA
    model.load_state_dict(saved)
    assert all(g["fused"] is True for opt in optimizers for g in opt.param_groups)
    model.train_step(batch.lr, batch.hr)  # and the fused step runs on what was loaded
