"""Run with 1 or 2 processes: train on the same global batches, save the weights.

    torchrun --nproc_per_node=N tests/dist/ddp_equivalence.py DATA OUT

Every rank reads the same global batches (a single-process reference loader, no shuffle, no
flip) and trains on its rows [rank*B, (rank+1)*B): the 1- and 2-process runs see the same
global batch, so their weights must agree to float tolerance.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from pipeline.config import ModelConfig, TrainConfig
from pipeline.data import LoaderConfig, build_loader
from pipeline.distributed import ProcessPlace
from pipeline.srgan import SRGANModel, unwrap

GLOBAL_BATCH = 8


def main() -> None:
    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    place = ProcessPlace.from_env()
    if place.world_size > 1:
        dist.init_process_group("gloo")
    torch.use_deterministic_algorithms(True)
    loader = build_loader(LoaderConfig(data=data, batch_size=GLOBAL_BATCH, shuffle=False,
                                       flip=False, backend="reference", threads=0),
                          ProcessPlace())
    batches = [b for b, _ in zip(loader, range(5), strict=False)]
    per_rank = GLOBAL_BATCH // place.world_size
    rows = slice(place.rank * per_rank, (place.rank + 1) * per_rank)
    results = {}
    for phase, steps in (("pretrain", batches[:3]), ("gan", batches[3:])):
        cfg = TrainConfig(phase=phase, precision="fp32", vgg_weights="random",
                          model=ModelConfig(blocks=2, channels=8, d_channels=4))
        torch.manual_seed(0)
        model = SRGANModel(cfg, hr_size=128, device=torch.device("cpu"),
                           world_size=place.world_size)
        if phase == "gan":
            unwrap(model.g).load_state_dict(results["pretrain"]["g"])
        for batch in steps:
            model.train_step(batch.lr[rows], batch.hr[rows])
        results[phase] = {"g": unwrap(model.g).state_dict()}
        if model.d is not None:
            results[phase]["d"] = unwrap(model.d).state_dict()
    if place.rank == 0:
        torch.save(results, out / f"world{place.world_size}.pt")
    if place.world_size > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
