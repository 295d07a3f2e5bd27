#!/bin/bash
while pgrep -f run8x.sh > /dev/null; do sleep 5; done
cd /work/main
run() {  # name blocks steps seed
  local name=$1 blocks=$2 steps=$3 seed=$4
  .venv/bin/python -m pipeline.train --config configs/x8.toml --scale 8 --phase pretrain \
    --data /work/exp/shards --blocks $blocks --channels 32 --batch-size 16 --lr 2e-3 --schedule cosine \
    --warmup-steps 50 --min-lr 0 --ema-decay 0.999 --steps $steps --eval-every $((steps / 2)) \
    --checkpoint-every $steps --precision auto --loader-threads 2 --seed $seed --log-every 100 \
    --out /work/exp/$name --tracking-uri sqlite:////work/exp/mlflow.db > /work/exp/logs/$name.log 2>&1
}
run b16c32-1750 16 1750 0
run b4c32-seed1 4 1750 1
