#!/bin/bash
# 8x at equal wall time on this CPU: residual blocks at the LR scale (16x16) cost little
cd /work/main
run() {  # name blocks steps
  local name=$1 blocks=$2 steps=$3
  /usr/bin/time -v .venv/bin/python -m pipeline.train --config configs/x8.toml --scale 8 --phase pretrain \
    --data /work/exp/shards --blocks $blocks --channels 32 --batch-size 16 --lr 2e-3 --schedule cosine \
    --warmup-steps 50 --min-lr 0 --ema-decay 0.999 --steps $steps --eval-every $((steps / 2)) \
    --checkpoint-every $steps --precision auto --loader-threads 2 --seed 0 --log-every 100 \
    --out /work/exp/$name --tracking-uri sqlite:////work/exp/mlflow.db > /work/exp/logs/$name.log 2>&1
}
run b4c32 4 1750
run b16c32 16 1600
run b32c32 32 1290
