"""Run with 1 or 2 processes: plain SGD steps in float64 on the same global batches.

    torchrun --nproc_per_node=N tests/dist/ddp_equivalence.py DATA OUT_FILE [average|sum]

Every rank reads the same global batches (one reference loader, no shuffle, no flip) and trains
on its rows [rank*B, (rank+1)*B) with the pipeline's own `SRGANModel.train_step`, so 1 and 2
processes see the same global batch. What DDP guarantees is that the all-reduced gradient is
the mean of the per-rank gradients, i.e. the gradient of the global batch. Adam would hide a
wrong scale (its update is nearly invariant to it), so the optimizers are swapped for SGD,
whose update is the gradient times the learning rate; float64 keeps rounding far below what
a wrong gradient does. `sum` replaces DDP's averaging all-reduce by a summing one: the control
that the comparison catches a missing 1/world_size.

Saved: per phase and net, the weights before and after, and how many all-reduce rounds each
net's gradients took per step (counted in a DDP communication hook).
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from pipeline.training.config import ModelConfig, TrainConfig
from pipeline.data import LoaderConfig, build_loader
from pipeline.runtime.distributed import ProcessPlace
from pipeline.training.steps import SRGANModel, unwrap

GLOBAL_BATCH = 8
# G's GAN-phase gradients (a content loss on random VGG features, 1e-3 adversarial) are about
# 1e3 times its pretrain ones: at 0.01 its weights moved by 7e-6 in 2 steps, too little for the
# test to tell a right gradient from a wrong one.
SGD_LR = {"pretrain": {"g": 0.01}, "gan": {"g": 10.0, "d": 0.01}}
STEPS = {"pretrain": 3, "gan": 2}


def counting_hook(mode: str, rounds: list[int]):  # type: ignore[no-untyped-def]
    """DDP's own averaging all-reduce (or a summing one), counting rounds: one per backward
    whose gradients are all-reduced (the last bucket of each round is flagged)."""

    def hook(state: object, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
        if bucket.is_last():
            rounds[0] += 1
        if mode == "average":
            return default_hooks.allreduce_hook(None, bucket)  # type: ignore[arg-type]
        work = dist.all_reduce(bucket.buffer(), async_op=True)
        return work.get_future().then(lambda fut: fut.value()[0])

    return hook


def main() -> None:
    data, out, mode = Path(sys.argv[1]), Path(sys.argv[2]), (sys.argv[3:] or ["average"])[0]
    place = ProcessPlace.from_env()
    if place.world_size > 1:
        dist.init_process_group("gloo")
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float64)
    loader = build_loader(LoaderConfig(data=data, batch_size=GLOBAL_BATCH, shuffle=False,
                                       flip=False, backend="reference", threads=0),
                          ProcessPlace())
    batches = [b for b, _ in zip(loader, range(sum(STEPS.values())), strict=False)]
    per_rank = GLOBAL_BATCH // place.world_size
    rows = slice(place.rank * per_rank, (place.rank + 1) * per_rank)
    results: dict = {}
    for phase, steps in (("pretrain", batches[: STEPS["pretrain"]]),
                         ("gan", batches[STEPS["pretrain"]:])):
        cfg = TrainConfig(phase=phase, precision="fp32", vgg_weights="random",
                          model=ModelConfig(blocks=2, channels=8, d_channels=4))
        cfg.loss.vgg_layer = "relu2_2"  # a content loss that does not vanish with random VGG
        torch.manual_seed(0)
        model = SRGANModel(cfg, hr_size=128, device=torch.device("cpu"),
                           world_size=place.world_size)
        if phase == "gan":
            unwrap(model.g).load_state_dict(results["pretrain"]["end"]["g"])
        nets = {"g": model.g} | ({"d": model.d} if model.d is not None else {})
        rounds = {name: [0] for name in nets}
        if place.world_size > 1:
            for name, net in nets.items():
                net.register_comm_hook(None, counting_hook(mode, rounds[name]))
        model.opt_g = torch.optim.SGD(model.g_raw.parameters(), lr=SGD_LR[phase]["g"])
        if model.d_raw is not None:
            model.opt_d = torch.optim.SGD(model.d_raw.parameters(), lr=SGD_LR[phase]["d"])
        start = {name: _copy(unwrap(net).state_dict()) for name, net in nets.items()}
        for batch in steps:
            model.train_step(batch.lr[rows].double(), batch.hr[rows].double())
        results[phase] = {
            "start": start,
            "end": {name: _copy(unwrap(net).state_dict()) for name, net in nets.items()},
            "rounds_per_step": {name: r[0] / len(steps) for name, r in rounds.items()},
        }
    if place.rank == 0:
        torch.save(results, out)
    if place.world_size > 1:
        dist.barrier()
        dist.destroy_process_group()


def _copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


if __name__ == "__main__":
    main()
