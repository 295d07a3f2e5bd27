"""Run under torchrun: each rank records the keys its loader yields for two epochs.

    torchrun --nproc_per_node=2 tests/dist/loader_ranks.py DATA OUT BACKEND
"""

import json
import sys
from pathlib import Path

import torch.distributed as dist

from pipeline.data import LoaderConfig, build_loader
from pipeline.runtime.distributed import ProcessPlace


def main() -> None:
    data, out, backend = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    place = ProcessPlace.from_env()
    dist.init_process_group("gloo")
    cfg = LoaderConfig(data=data, batch_size=4, backend=backend, with_keys=True, seed=0)
    ld = build_loader(cfg, place)
    epochs = [[key for batch in ld for key in batch.keys] for _ in range(2)]
    counts: list[int | None] = [None] * place.world_size
    dist.all_gather_object(counts, len(epochs[0]) + len(epochs[1]))
    record = {"rank": place.rank, "world": dist.get_world_size(), "batches": len(ld),
              "epochs": epochs, "samples_per_rank": counts}
    (out / f"rank{place.rank}.json").write_text(json.dumps(record))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
