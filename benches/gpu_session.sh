#!/usr/bin/env bash
# The prepared GPU check, for a session lent a device machine (an NVIDIA GPU with a PyTorch +
# transformers image, Python >= 3.10, no Rust toolchain, no network, ../shared not beside it).
#
# 1. Here, once per session (builds nothing new: it uses the extension `maturin develop` built;
#    the extension is abi3, so it loads on the device's Python too):
#        bash benches/gpu_session.sh --stage
#    copies Beauty (S3-Rec layout, ~4 MB) into .gpu/ (git-ignored through .git/info/exclude).
# 2. With the device tool, in one call (everything comes back under $OUT):
#        run(command="bash benches/gpu_session.sh", carry=["python/sidkit/_native.abi3.so", ".gpu"],
#            timeout_s=600)
#    It runs the CUDA paths of the test suite, then the TIGER paper's configuration
#    (configs/beauty.toml: 4+4 layers, 20 epochs, validation on 5,000 users, all 22,363 test
#    users) on the GPU with a time limit, and copies results.json, results.md, curve.png and the
#    logs to $OUT. GPU_RUN_SECONDS (default 420) bounds the training; GPU_EPOCHS overrides the
#    config's 20 epochs; GPU_SKIP_TESTS=1 skips the tests. If the run pauses at its time limit (exit 3) the state stays on the
#    machine: a second call within its warm period can go on with
#        run(command="GPU_RESUME=1 bash benches/gpu_session.sh", ...).
# Without a GPU, `GPU_DRY_RUN=1 bash benches/gpu_session.sh` runs the same steps on the CPU at
# the --small preset (a check of this script, not of the GPU).
set -uo pipefail
cd "$(dirname "$0")/.."
STAGE=.gpu

if [ "${1:-}" = "--stage" ]; then
    src=${GPU_DATA:-../shared/data/amazon2014}
    [ -f python/sidkit/_native.abi3.so ] || { echo "no python/sidkit/_native.abi3.so: run maturin develop --release first"; exit 1; }
    grep -qx "/$STAGE/" .git/info/exclude 2>/dev/null || echo "/$STAGE/" >>.git/info/exclude
    mkdir -p "$STAGE/data"
    cp "$src"/Beauty.txt "$src"/Beauty_item2attributes.json "$STAGE/data/"
    [ -f "$src/Beauty_items.jsonl" ] && cp "$src/Beauty_items.jsonl" "$STAGE/data/"
    du -sh "$STAGE" python/sidkit/_native.abi3.so
    exit 0
fi

OUT=${OUT:-/tmp/sidkit-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
RUN=/tmp/sidkit-gpu-run
DATA=$STAGE/data
DEVICE=cuda
CONFIG=(--config configs/beauty.toml)
if [ -n "${GPU_DRY_RUN:-}" ]; then
    DEVICE=cpu
    CONFIG=(--small)
    [ -d "$DATA" ] || DATA=../shared/data/amazon2014
fi

{
    echo "== machine"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
    "$PY" -c 'import sys, torch, transformers, numpy, sidkit; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available(), "transformers", transformers.__version__, "numpy", numpy.__version__, "sidkit", sidkit.__version__)'
} 2>&1 | tee "$OUT/machine.txt"

if [ -z "${GPU_RESUME:-}" ]; then
    if [ -z "${GPU_SKIP_TESTS:-}" ]; then
        echo "== CUDA paths of the test suite"
        # The tests that take a cuda branch when torch sees a GPU (k-means torch backend,
        # masks and decoding on the device, TIGER trained and decoded on CUDA).
        status=0
        timeout 150 "$PY" -m pytest -q -p no:cacheprovider -x \
            tests/test_codebook_learning.py tests/test_decode.py tests/test_tiger.py tests/test_hf.py \
            >"$OUT/tests.log" 2>&1 || status=$?
        tail -n 15 "$OUT/tests.log"
        # Kept, not fatal: the training below still runs, and the status is in $OUT.
        echo "$status" >"$OUT/tests.status"
        [ "$status" -eq 0 ] || echo "!! the CUDA tests FAILED (exit $status): see tests.log"
    fi
    rm -rf "$RUN" "$RUN.log"
    echo "== TIGER, the paper's configuration, on $DEVICE"
    args=(bench "${CONFIG[@]}" --data "$DATA" --device "$DEVICE" --out "$RUN"
        --time-limit "${GPU_RUN_SECONDS:-420}")
    [ -n "${GPU_EPOCHS:-}" ] && args+=(--epochs "$GPU_EPOCHS")
else
    echo "== TIGER, resumed"
    args=(bench --out "$RUN" --resume --time-limit "${GPU_RUN_SECONDS:-420}")
fi
# The whole log goes to a file (no pipeline to buffer it); a hard timeout leaves time to copy
# the results back even if the time limit is overshot.
timeout "$(( ${GPU_RUN_SECONDS:-420} + 150 ))" "$PY" -m sidkit "${args[@]}" >"$RUN.log" 2>&1
status=$?
tr '\r' '\n' <"$RUN.log" | grep -av '%|' >>"$OUT/bench.log"
tail -n 40 "$OUT/bench.log"
for f in results.json results.md curve.png config.toml; do
    [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/"
done
echo "== bench exit status $status (3: paused at the time limit; GPU_RESUME=1 goes on)"
exit "$status"
