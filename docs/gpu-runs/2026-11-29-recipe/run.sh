set -u
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu-check/wheels/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
python3 -m preprocess.cli shard --celeba-root .gpu-check/celeba --out /tmp/shards --preset faces128 --workers 16 2>&1 | tail -1
E="--loader-threads 8 --loader reference"
timeout 290 python3 bench/recipe.py --data /tmp/shards --extra "$E" --recipes old,new \
  --recipe "cosine=--lr 1e-3 --schedule cosine --warmup-steps 50 --ema-decay 0" \
  --recipe "ema=--lr 1e-3 --schedule constant --warmup-steps 0 --ema-decay 0.999" 2>&1 | tee $OUT/recipe_seed0.txt
timeout 130 python3 bench/recipe.py --data /tmp/shards --extra "$E" --recipes old,new --seed 1 2>&1 | tee $OUT/recipe_seed1.txt
