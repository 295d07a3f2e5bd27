"""torch.compile in the training steps (pipeline/training/compilation.py, steps.py): on where
it pays, the same steps as eager, compiled once, a failure one line and the run goes on eager,
and checkpoints that do not care whether they were written compiled."""

from __future__ import annotations

import pytest
import torch
from tracking_helpers import client, runs_in
from trainer_helpers import run_train

from pipeline.data import LoaderConfig, build_loader
from pipeline.runtime.distributed import ProcessPlace
from pipeline.train import parse_args
from pipeline.training.config import ModelConfig, TrainConfig
from pipeline.training.steps import SRGANModel
from pipeline.training.trainer import resolve_device_defaults

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def batches(shards_faces128):
    loader = build_loader(LoaderConfig(data=shards_faces128, batch_size=2, flip=False,
                                       shuffle=False), ProcessPlace())  # fmt: skip
    return [next(it) for it in [iter(loader)] for _ in range(3)]


def model(phase: str, compile: str = "off", backend: str = "aot_eager") -> SRGANModel:
    torch.manual_seed(0)
    cfg = TrainConfig(phase=phase, precision="fp32", vgg_weights="random", compile=compile,
                      compile_backend=backend, ema_decay=0.9,
                      model=ModelConfig(blocks=1, channels=8, d_channels=4))  # fmt: skip
    cfg.loss.vgg_layer = "relu2_2"
    return SRGANModel(cfg, 128, CPU, world_size=1)


def weights(m: SRGANModel) -> dict[str, torch.Tensor]:
    state = m.state_dict()
    flat = {f"g.{k}": v for k, v in state["generator"].items()}
    flat |= {f"ema.{k}": v for k, v in state["generator_ema"]["weights"].items()}
    flat |= {f"d.{k}": v for k, v in state.get("discriminator", {}).items()}
    return flat


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst <= atol, worst


def test_auto_is_on_for_cuda_and_off_on_cpus():
    base = ["--data", "x"]
    for device, expected in ((CPU, "off"), (torch.device("cuda"), "on"),
                             (torch.device("meta"), "off")):  # fmt: skip
        assert resolve_device_defaults(parse_args(base), device).compile == expected
    assert resolve_device_defaults(parse_args([*base, "--compile", "on"]), CPU).compile == "on"
    cuda_off = resolve_device_defaults(
        parse_args([*base, "--compile", "off"]), torch.device("cuda")
    )
    assert cuda_off.compile == "off"


@pytest.mark.parametrize("phase", ["pretrain", "gan"])
def test_compiled_steps_train_like_eager_and_compile_once(batches, phase):
    eager, fast = model(phase), model(phase, "on")
    assert_close(weights(eager), weights(fast), 0)  # the same start
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    for step, batch in enumerate(batches):
        expected = eager.train_step(batch.lr, batch.hr)
        got = fast.train_step(batch.lr, batch.hr)
        assert expected.keys() == got.keys()
        for name in expected:
            assert torch.allclose(expected[name], got[name], rtol=1e-4, atol=1e-6), name
        if step == 0:
            assert fast.compile_state == "compiled" and fast.compile_seconds > 0
            graphs = dict(torch._dynamo.utils.counters["stats"])
            assert graphs["unique_graphs"] >= (4 if phase == "gan" else 1)
    assert dict(torch._dynamo.utils.counters["stats"]) == graphs  # nothing compiled again
    assert_close(weights(eager), weights(fast), 1e-4)


def test_a_compile_failure_falls_back_to_eager_from_where_it_was(batches):
    # The GAN step compiles G, the VGG loss and D-for-G, then G takes its update, then D's
    # own forward compiles: failing there shows that G's update is not taken twice.
    graphs = []

    @torch._dynamo.register_backend
    def fails_at_ds_own_forward(graph, example_inputs):
        graphs.append(graph)
        if len(graphs) >= 4:
            raise RuntimeError("no compiler on this machine\nsecond line")
        return graph.forward

    torch._dynamo.reset()
    eager, failing = model("gan"), model("gan", "on", "fails_at_ds_own_forward")
    for batch in batches[:2]:
        expected = eager.train_step(batch.lr, batch.hr)
        got = failing.train_step(batch.lr, batch.hr)
        for name in expected:
            assert torch.allclose(expected[name], got[name], rtol=1e-5, atol=1e-7), name
    assert len(graphs) == 4  # it did fail after G's update, and nothing compiled after that
    assert failing.compile_state == "failed"
    assert failing.compile_error == "RuntimeError: no compiler on this machine"
    assert_close(weights(eager), weights(failing), 1e-6)
    assert failing.opt_g.state_dict()["state"][0]["step"] == 2  # two updates, not three


def test_a_checkpoint_written_compiled_loads_uncompiled_and_back(batches):
    fast = model("gan", "on")
    for batch in batches[:2]:
        fast.train_step(batch.lr, batch.hr)
    eager = model("gan")
    eager.load_state_dict(fast.state_dict())  # no _orig_mod. prefixes to trip on
    assert_close(weights(fast), weights(eager), 0)
    again = model("gan", "on")
    again.load_state_dict(eager.state_dict())
    batch = batches[2]
    a, b = eager.train_step(batch.lr, batch.hr), again.train_step(batch.lr, batch.hr)
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)


@pytest.mark.integration
def test_the_trainer_logs_the_compile_time_once_and_records_it(shards_faces128, tmp_path):
    db = tmp_path / "mlflow.db"
    result = run_train(shards_faces128, tmp_path / "run", db, "--scale", "4", "--phase",
                       "pretrain", "--steps", "3", "--eval-every", "1000", "--log-every", "1",
                       "--compile", "on", "--compile-backend", "aot_eager")  # fmt: skip
    lines = [line for line in result.stderr.splitlines() if "torch.compile" in line]
    assert len(lines) == 1 and "the first step took" in lines[0], result.stderr[-3000:]
    (run,) = runs_in(db)
    history = client(db).get_metric_history(run.info.run_id, "compile/seconds")
    assert [m.step for m in history] == [1] and history[0].value > 0
    assert run.data.params["config.compile"] == "on"
