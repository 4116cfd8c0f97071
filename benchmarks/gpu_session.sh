#!/usr/bin/env bash
# One GPU session in one run: install, CUDA tests, the epoch benchmark, the host-sync check, fp32 vs bf16 quality,
# profiled steps, kernel timings.
#
#   bash benchmarks/gpu_session.sh prepare   # on a machine WITH the package index (the CPU dev machine):
#                                            # wheels the GPU image lacks + the MKG-Y files -> .gpu_carry/ (git-ignored)
#   bash benchmarks/gpu_session.sh           # on the GPU machine (carry .gpu_carry along): everything below -> $OUT
#   STEPS="quality kernels" bash benchmarks/gpu_session.sh   # only these steps (e.g. a second call, what the first
#                                            # did not reach; install is checked each time)
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu_session.sh   # a check of this script on CPU, tiny sizes (Triton interpreted)
#
# Written for one H200 slot of about 15 minutes, start-up included (estimated, not yet measured: no GPU has run it);
# each step has a time limit inside a total budget ($BUDGET_S, 540 s: a lease runs one command for 10 minutes at
# most), results are packed after every step, and the steps run in the order of need ($STEPS): tests,
# train_epoch (the issue's table), graph_step (the step as one CUDA graph), sync_check, step_ops (kernel launches
# per step), lcwa_batches (building the batches), quality (fp32 vs bf16 MRR, epochs timed with evaluation),
# profiles, kernels (tile sweep), compile_breaks (where torch.compile breaks the step: the Triton path is traced on
# CUDA only). GPU machines here reach no package index, so `prepare` downloads, on the dev machine, PyKEEN and the dependencies that the GPU image lacks
# (its image has torch, triton, numpy, scipy, pandas, scikit-learn...), as CPython 3.12 manylinux wheels; the
# session installs this package from them with the `gpu` extra, offline. `prepare` also copies the read-only
# MKG-Y files into .gpu_carry/data (ignored by git, never committed), because ../shared does not travel.
#
# Results: $OUT/session.log (everything printed), $OUT/tests.log, $OUT/train_epoch.csv, $OUT/tucker_kernels.csv,
# $OUT/sync_check.json, $OUT/graph_step.json, $OUT/compile_breaks.json and $OUT/gpu_session_results.tar.gz (all JSON, CSV, quality curves
# and profiler tables).
# $OUT defaults to benchmarks/results/gpu_session.
set -uo pipefail
cd "$(dirname "$0")/.."

CARRY=.gpu_carry
PY=${PYTHON:-python3}
# PyKEEN 1.11.1's closure without what the GPU image already has (KINDS.md of the workplace lists its packages);
# the versions this project's CPU venv runs with
WHEELS="pykeen==1.11.1 class-resolver==0.8.2 click-default-group==1.2.4 dataclasses-json==0.6.7 marshmallow==3.26.2
docdata==0.0.5 more-click==0.1.3 more-itertools==11.2.1 optuna==5.0.0 alembic==1.20.1 mako==1.4.3 colorlog==6.12.0
sqlalchemy==2.1.9 pystow==0.10.3 backports-zstd==1.8.0 torch-max-mem==0.1.6 torch-ppr==0.0.8"

if [[ "${1:-}" == "prepare" ]]; then
    set -e
    mkdir -p "$CARRY/wheels" "$CARRY/data"
    exclude="$(git rev-parse --git-dir)/info/exclude"
    mkdir -p "$(dirname "$exclude")"
    grep -qxF "/$CARRY/" "$exclude" 2>/dev/null || echo "/$CARRY/" >>"$exclude"
    # shellcheck disable=SC2086  # one name per word
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d "$CARRY/wheels" $WHEELS
    source_dir="${MOMOK_SHARED_DATA:-../shared/data}/MKG-Y"
    [[ -d "$source_dir" ]] || { echo "no MKG-Y folder at $source_dir (set MOMOK_SHARED_DATA)" >&2; exit 2; }
    rm -rf "$CARRY/data/MKG-Y" && cp -r "$source_dir" "$CARRY/data/MKG-Y" && chmod -R u+w "$CARRY/data/MKG-Y"
    du -sh "$CARRY" && ls "$CARRY/wheels"
    echo "now run: bash benchmarks/gpu_session.sh   (on the GPU machine, with $CARRY carried along)"
    exit 0
fi

DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
OUT=${OUT:-benchmarks/results/gpu_session}
RESULTS="$OUT/results"
mkdir -p "$RESULTS"
exec > >(tee "$OUT/session.log") 2>&1
export PYTHONUNBUFFERED=1 PYKEEN_HOME=${PYKEEN_HOME:-/tmp/pykeen-gpu-session}
if [[ "$DEVICE" == cpu ]]; then
    export TRITON_INTERPRET=1  # Triton runs CPU tensors only interpreted (must be set before triton is imported)
fi
DATA=${MOMOK_MKGY_DIR:-$CARRY/data/MKG-Y}
[[ -d "$DATA" ]] || DATA="${MOMOK_SHARED_DATA:-../shared/data}/MKG-Y"
started=$SECONDS
# the whole run's budget: a GPU lease runs one command for 10 minutes at most, and what is packed by then comes back
BUDGET=${BUDGET_S:-540}
declare -a SUMMARY=()

pack() {  # results so far: the tarball and the two CSVs next to session.log (after every step: a cut run keeps them)
    for name in train_epoch.csv tucker_kernels.csv sync_check.json step_ops.json lcwa_batches.json graph_step.json compile_breaks.json; do
        [[ -f "$RESULTS/$name" ]] && cp "$RESULTS/$name" "$OUT/$name"
    done
    tar -czf "$OUT/gpu_session_results.tar.gz" -C "$OUT" results
}

step() {  # step NAME LIMIT_SECONDS COMMAND...: run with a time limit within the budget, record status and time
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS left=$((BUDGET - (SECONDS - started) - 15))
    if ((left < 30)); then
        SUMMARY+=("$(printf '%-24s %-18s %4d s' "$name" "SKIPPED (budget)" 0)")
        return 0
    fi
    ((limit > left)) && limit=$left
    echo
    echo "=== $name (limit ${limit} s, at $((SECONDS - started)) s of $BUDGET): $*"
    timeout --kill-after=10 "$limit" "$@"
    local rc=$?
    local status="ok"
    ((rc == 124 || rc == 137)) && status="TIMED OUT"
    ((rc != 0 && rc != 124 && rc != 137)) && status="FAILED (exit $rc)"
    SUMMARY+=("$(printf '%-24s %-18s %4d s' "$name" "$status" $((SECONDS - t0)))")
    pack
    return 0
}

echo "=== machine ($(date -u +%FT%TZ)), device $DEVICE, quick $QUICK, data $DATA"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
"$PY" - <<'EOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "device", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
try:
    import triton
    print("triton", triton.__version__)
except ImportError as error:
    print("triton not importable:", error)
EOF

install_package() {
    if "$PY" -c "import pykeen, pykeen_momok" 2>/dev/null; then
        echo "pykeen and pykeen_momok import already: nothing to install"
        return 0
    fi
    [[ -d "$CARRY/wheels" ]] || { echo "no $CARRY/wheels: run 'bash benchmarks/gpu_session.sh prepare' where pip reaches the index"; return 2; }
    # offline: dependencies from the carried wheels or what the image has (torch, triton, numpy...)
    "$PY" -m pip install -q --no-index --find-links "$CARRY/wheels" --no-build-isolation -e ".[gpu]"
}
export -f install_package  # `timeout` runs commands, not shell functions: through a child bash
export PY CARRY
step install 180 bash -c install_package
if ! "$PY" -c "import pykeen, pykeen_momok" 2>/dev/null && [[ -d "$CARRY/wheels" ]]; then
    echo "the editable install did not work: the wheels unpacked into /tmp/site, the checkout on PYTHONPATH instead"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$CARRY"/wheels/*.whl
    export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c "import pykeen_momok, pykeen; print('pykeen', pykeen.get_version(), 'pykeen_momok from', pykeen_momok.__file__)"

tests=(tests/test_nn_tucker_triton.py tests/test_nn_tucker.py tests/test_model_oracle.py tests/test_host_sync.py
    tests/test_autocast.py)
((QUICK)) && tests=(tests/test_nn_tucker_triton.py tests/test_host_sync.py)

if ((QUICK)); then
    kernel_args=(--batch 8 --dims 16 --joint-dims 16 --relations 3 --repeats 2 --warmup 1 --blocks 2x8x8
        --gemm-blocks 16x8x16x16)
    profile_configs=(momok-torch@4)
    train_args=(--configs momok@4 momok+keep@4 momok-torch+batch@4 momok-torch+bf16@4 momok-torch+tf32@4 per-query@4 tucker@4
        --repeats 1 --batches 1 --warmup 0 --back-to-back 1 --no-memory --threads 1 --validation-limit 20)
    sync_args=(--dim 16 --batch-size 32 --warmup 1 --threads 1 --loop-triples 48)
    ops_args=(--steps 1 --threads 1)
    graph_args=(--dataset synthetic --batch-size 4 --steps 1 --loss-steps 1 --warmup 0 --threads 1)
    compile_args=(--dataset synthetic --configs torch+keep triton)
    batch_args=(--batch-sizes 64 --repeats 1 --threads 1)
    quality_args=(--dataset SyntheticMMKG --epochs 2 --eval-every-epochs 1 --threads 1)
else
    kernel_args=(--blocks 2x32x32 4x32x32 1x64x64 --gemm-blocks 32x8x32x32/8 16x8x32x32/4 64x4x32x32/8 --repeats 10)
    profile_configs=(momok-torch@1024 momok-torch+bf16@1024 momok-triton@1024)
    # momok@1024: the contraction path "auto" chooses on CUDA by timing (the shipped default is "torch");
    # relation_matrices: "auto" ("all" on CUDA) unless +batch (what the earlier H100 figures ran: torch.unique); +tf32: TF32 matrix products;
    # +keep: the candidates' activations kept (recompute_candidates=False); every main Adam is fused (--adam);
    # every configuration also runs 5 steps back to back (one wait at the end: the loop's read_loss="epoch")
    train_args=(--configs momok@1024 momok+keep@1024 momok-torch@1024 momok-torch+batch@1024 momok-torch+bf16@1024
        momok-torch+tf32@1024 momok-triton@1024 momok-triton+bf16@1024 per-query@1024 tucker@1024 --repeats 3
        --batches 3 --warmup 2 --back-to-back 5 --memory-timeout 60 --memory-configs momok@1024 momok+keep@1024
        per-query@1024 tucker@1024)
    sync_args=()
    ops_args=()
    graph_args=()
    compile_args=()
    batch_args=(--batch-sizes 1024 256 --repeats 2)
    # the paper's recipe on MKG-Y with periodic validation, float32 then bfloat16, each for the same wall-clock time
    quality_args=(--dataset MKG-Y --dataset-dir "$DATA" --minutes 1.5 --eval-every-epochs 10)
fi

# STEPS: which steps, in this order (the most needed first: a run cut by the budget keeps those); a second lease
# call can run what the first did not reach, e.g. STEPS="quality kernels profiles" bash benchmarks/gpu_session.sh
STEPS=${STEPS:-"tests train_epoch graph_step sync_check step_ops lcwa_batches quality profiles kernels compile_breaks"}
for name in $STEPS; do
    case $name in
    tests)
        # the CUDA tests run the compiled kernels (the same oracle tests as in CI's interpreter mode, on the GPU)
        step tests 150 bash -c "set -o pipefail; $PY -m pytest -q -p no:cacheprovider -rs ${tests[*]} 2>&1 | tee $OUT/tests.log"
        ;;
    train_epoch)
        step train_epoch 260 env PYKEEN_MOMOK_TUCKER_PATH=auto "$PY" benchmarks/train_epoch.py --device "$DEVICE" \
            --dataset-dir "$DATA" "${train_args[@]}" --out "$RESULTS/train_epoch.json"
        ;;
    graph_step)
        # the whole training step captured as one CUDA graph (Triton path, device-side draws) against it run eagerly
        step graph_step 120 "$PY" benchmarks/graph_step.py --device "$DEVICE" --dataset-dir "$DATA" "${graph_args[@]}" \
            --out "$RESULTS/graph_step.json"
        ;;
    sync_check)
        step sync_check 60 "$PY" benchmarks/sync_check.py --device "$DEVICE" --dataset-dir "$DATA" "${sync_args[@]}" \
            --out "$RESULTS/sync_check.json"
        ;;
    step_ops)
        # kernel launches per step and the host time per step at tiny sizes: the launch floor under a step
        step step_ops 60 "$PY" benchmarks/step_ops.py --device "$DEVICE" --dataset-dir "$DATA" "${ops_args[@]}" \
            --out "$RESULTS/step_ops.json"
        ;;
    lcwa_batches)
        # building the batches: PyKEEN's LCWA loader against the batched one (what train_epoch's steps leave out)
        step lcwa_batches 60 "$PY" benchmarks/lcwa_batches.py --device "$DEVICE" --dataset-dir "$DATA" "${batch_args[@]}" \
            --out "$RESULTS/lcwa_batches.json"
        ;;
    quality)
        # the same MRR within noise, fp32 vs the fast path (issue 8's goal), and epochs measured with evaluation
        step quality 240 "$PY" benchmarks/quality.py --device "$DEVICE" "${quality_args[@]}" --no-paper-protocol \
            --setups momok-paper 'momok-paper@model_kwargs.autocast_dtype="bfloat16"' --out "$RESULTS/quality"
        ;;
    profiles)
        for config in "${profile_configs[@]}"; do
            step "profile $config" 60 "$PY" benchmarks/profile_step.py --device "$DEVICE" --config "$config" \
                --dataset-dir "$DATA" --out "$RESULTS/profile_${config//[@+]/_}.txt"
        done
        ;;
    kernels)
        step tucker_kernels 120 "$PY" benchmarks/tucker_kernels.py --device "$DEVICE" "${kernel_args[@]}" \
            --out "$RESULTS/tucker_kernels.json"
        ;;
    compile_breaks)
        # where torch.compile (Dynamo) breaks a training forward pass into graphs, per contraction path
        step compile_breaks 90 "$PY" benchmarks/compile_breaks.py --device "$DEVICE" --dataset-dir "$DATA" \
            "${compile_args[@]}" --out "$RESULTS/compile_breaks.json"
        ;;
    *)
        echo "unknown step $name (known: tests train_epoch graph_step sync_check step_ops lcwa_batches quality profiles kernels compile_breaks)" >&2
        ;;
    esac
done

echo
echo "=== summary ($((SECONDS - started)) s in all)"
printf '%s\n' "${SUMMARY[@]}"
pack && rm -rf "$RESULTS"
ls -la "$OUT"
