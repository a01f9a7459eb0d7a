#!/usr/bin/env bash
# One prepared run on a lent GPU machine (see benchmarks/README.md, "On a GPU"): the tests
# marked `gpu`, the demo edit on CUDA in bf16 and in fp16, the stage speeds against their
# same-run baselines, the toy training speeds (data workers 0 against 4 in fp32, then 4 with
# autocast), and then one default `imagic toy train`, timed, last because it is the one step
# that may not finish. What it measures lands in $OUT (at most 8 files come back from a call):
# info.txt (the machine, each step's exit code and wall time), the demo grids,
# stage_speed.json, train_speed.json, train_speed_autocast.json, train.log and, when training
# finishes before the deadline (BUDGET seconds after the start), model.tar: the trained model
# with losses.json and the final grid. It never stops at a failed step, so one call reports
# them all.
#
# DEVICE, PRECISIONS, BUDGET and the *_ARGS (extra flags) exist so the script itself can be tried
# on a CPU before a GPU's scarce minutes go to it (tests/e2e/test_gpu_run.py does, with these):
#   OUT=/tmp/gpu-out DEVICE=cpu PRECISIONS=fp32 DEMO_ARGS="--steps-a 2 --steps-b 2 --steps-c 2" \
#     TRAIN_ARGS="--vae-steps 2 --unet-steps 2 --decoder-steps 2" \
#     STAGE_ARGS="--steps 1 --repeats 1" TRAIN_SPEED_ARGS="--steps 1 --warmup 0 --workers 0 1" \
#     benchmarks/gpu_run.sh
# shellcheck disable=SC2086  # the *_ARGS are lists of flags, split on purpose
set -u -o pipefail
OUT=${OUT:?set OUT to the folder the results go to}
DEVICE=${DEVICE:-cuda}
PRECISIONS=${PRECISIONS:-bf16 fp16}
DEADLINE=$(($(date +%s) + ${BUDGET:-560}))
DEMO_ARGS=${DEMO_ARGS:-}
TRAIN_ARGS=${TRAIN_ARGS:-}
STAGE_ARGS=${STAGE_ARGS:-}
TRAIN_SPEED_ARGS=${TRAIN_SPEED_ARGS:-}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=15 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

note() { echo "$*" | tee -a "$OUT/info.txt"; }
timed() {  # timed NAME LOG COMMAND...: run it, output to LOG; note exit code and wall seconds
    local name=$1 log=$2 start rc ms
    shift 2
    start=$(date +%s%N)
    "$@" >"$log" 2>&1
    rc=$?
    ms=$((($(date +%s%N) - start) / 1000000))
    note "$name rc=$rc seconds=$((ms / 1000)).$(printf %03d $((ms % 1000)))"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$OUT/info.txt" 2>&1
note "$(python3 -c 'import torch, diffusers, transformers
print(*(f"{m.__name__} {m.__version__}" for m in (torch, diffusers, transformers)))')"

# The tests marked `gpu` (tests/unit/test_method.py holds them): the stages on CUDA with autocast.
timed gpu-tests "$WORK/gpu-tests.log" \
    python3 -m pytest -q -p no:cacheprovider -m gpu tests/unit/test_method.py
tail -n 3 "$WORK/gpu-tests.log" >>"$OUT/info.txt"

for precision in $PRECISIONS; do
    timed "demo-$precision" "$WORK/demo-$precision.log" \
        python3 -m imagic demo --device "$DEVICE" --precision "$precision" --no-tracking \
        --store "$WORK/store-$precision" --out "$WORK/demo-$precision" $DEMO_ARGS
    tail -n 5 "$WORK/demo-$precision.log" >>"$OUT/info.txt"
    cp "$WORK/demo-$precision/grid.png" "$OUT/demo-$precision.png"
done

timed stage-speed "$WORK/stage.log" timeout $((DEADLINE - $(date +%s))) \
    python3 benchmarks/stage_speed.py --model imagic:toy --device "$DEVICE" \
    --out "$OUT/stage_speed.json" $STAGE_ARGS
tail -n 5 "$WORK/stage.log" >>"$OUT/info.txt"

for precision in fp32 auto; do  # fp32 is the toy trainer's default; auto autocasts on CUDA
    name=train_speed$([ "$precision" = auto ] && echo _autocast)
    timed "$name" "$WORK/$name.log" timeout $((DEADLINE - $(date +%s))) \
        python3 benchmarks/toy_train_speed.py --device "$DEVICE" --precision "$precision" \
        --workers 0 4 --out "$OUT/$name.json" $TRAIN_SPEED_ARGS
    grep 'ms/step' "$WORK/$name.log" >>"$OUT/info.txt"
done

# The log goes straight to $OUT, so even a call killed mid-run brings back how far it got.
timed toy-train "$OUT/train.log" timeout $((DEADLINE - $(date +%s))) \
    python3 -m imagic toy train --out "$WORK/toy" --device "$DEVICE" $TRAIN_ARGS
tr '\r' '\n' <"$OUT/train.log" >"$WORK/train.log" && mv "$WORK/train.log" "$OUT/train.log"
[ -d "$WORK/toy/model" ] && tar -C "$WORK/toy" -cf "$OUT/model.tar" model losses.json grid.png

tail -n 4 "$OUT/train.log"
cat "$OUT/info.txt"
