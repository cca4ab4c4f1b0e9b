#!/usr/bin/env bash
# The GPU check, for a CUDA machine with a prebuilt agra binary and that machine's own
# PyTorch 2.11: checks that agra sees CUDA, runs the paper preset's whole pipeline on cuda:0,
# checks its attributions against PyTorch, times the packed trainer against one member at a time
# and against PyTorch (sequential, vmap, packed) on the same GPU, compares the convolution
# layouts, and prints every figure. Finishes well inside 5 minutes.
#
#   scripts/device-check.sh [OUT_DIR]      (PYTHON=... to pick the Python with torch)
#
# On a lent machine without Rust: build here, `strip -o .dev/agra target/release/agra` (88 MB
# with debug info, 5 MB stripped; the device tool carries at most 64 MB), then there
# `AGRA=.dev/agra PYTHON=/opt/torch/.venv/bin/python3 scripts/device-check.sh "$OUT"`.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-${OUT:-/tmp/agra-device-check}}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
TORCH_LIB="$("$PY" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
AGRA="${AGRA:-target/release/agra}"
W="$(mktemp -d)"
log() { echo "== $*"; }
stamp() { date +%s.%N; }

log "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'
CUDA=$("$AGRA" --run-dir "$W/none" status --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["cuda_devices"])')
echo "agra sees $CUDA CUDA device(s); free bytes as agra's pack sizing reads them: $("$AGRA" --run-dir "$W/none" status --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["cuda_free_bytes"])')"
[ "$CUDA" -ge 1 ] || { echo "FAIL: agra does not see CUDA (libtorch_cuda not linked?)"; ldd "$AGRA" | grep torch; exit 1; }

log "agra run, paper preset, cuda:0 (all stages)"
t0=$(stamp)
"$AGRA" --run-dir "$W/paper" --preset paper --devices cuda:0 --json run | tee "$OUT/paper-run.jsonl"
t1=$(stamp)
echo "whole paper pipeline, process start to exit: $("$PY" -c "print(round($t1 - $t0, 2))") s"
"$AGRA" --run-dir "$W/paper" status | head -8
cp "$W/paper/report/report.md" "$OUT/report.md" 2>/dev/null
cp "$W/paper/evaluate/metrics.json" "$OUT/metrics.json" 2>/dev/null

log "agra's attributions on cuda:0 against PyTorch (and Captum if installed) in float64, first 10 members"
# On the CPU kernels (paper preset, one member) saliency agrees to 5e-7 of the largest value, ig
# but for a max-pool tie or two, and grad's iteration counts all match, its attributions within
# 0.4% (float32 error gathers over up to 100 descent steps, so most pairs count as "apart" at the
# script's 1e-5 cut). A CUDA path that computes something else moves the counts and far more.
"$PY" scripts/check_explain.py "$W/paper" --members 10 --device cuda | tee "$OUT/check-explain.json"; echo

log "agra one member at a time on cuda:0 (pack 1, 4 members, 5 epochs)"
"$AGRA" --run-dir "$W/single" --preset paper --devices cuda:0 --set train.members=4 --set train.epochs=5 --set train.lr_decay_epochs=0 --json train --pack 1 | tee "$OUT/agra-pack1.json"

log "convolution layouts on cuda:0 (paper preset training, checkpoints only at the end)"
for conv in unfold channels-last grouped; do
  AGRA_CONV=$conv "$AGRA" --run-dir "$W/conv-$conv" --preset paper --devices cuda:0 --set train.checkpoint_every=80 --json train \
    | "$PY" -c "import json,sys; d=json.load(sys.stdin); print('layout $conv:', round(d['seconds'], 2), 's')" | tee -a "$OUT/layouts.txt"
done

log "where training time goes on cuda:0 (AGRA_PROFILE=1: a sync after each phase)"
AGRA_PROFILE=1 "$AGRA" --run-dir "$W/profile" --preset paper --devices cuda:0 -q train 2>&1 | grep '"profile"' | tee "$OUT/profile.jsonl"

DATA="$W/paper/data/train.safetensors"
EVAL="$W/paper/data/test.safetensors"
log "PyTorch baselines on the same GPU"
for args in "--mode sequential --members 4 --epochs 5" "--mode vmap --members 50 --epochs 10" "--mode packed --members 50 --epochs 10"; do
  # shellcheck disable=SC2086
  "$PY" scripts/bench/torch_train.py $args --device cuda --data "$DATA" --eval "$EVAL" | tee -a "$OUT/torch-train.jsonl"
done
log "PyTorch per-member explanation loop (Captum-like) on the same GPU"
"$PY" scripts/bench/torch_explain.py --method grad --members 4 --signals 50 --iters 10 --device cuda --data "$EVAL" | tee -a "$OUT/torch-explain.jsonl"
"$PY" scripts/bench/torch_explain.py --method grad --members 50 --signals 250 --iters 10 --batched --device cuda --data "$EVAL" | tee -a "$OUT/torch-explain.jsonl"

log "summary"
"$PY" - "$OUT" <<'PYEOF'
import json, sys, os
out = sys.argv[1]
stages = [json.loads(l) for l in open(os.path.join(out, "paper-run.jsonl")) if l.strip()]
by = {s["stage"]: s for s in stages}
train = by.get("train", {})
m = len(train.get("members", [])) or 50
epochs = 80
print(f"train: {train.get('seconds', float('nan')):.2f} s for {m} members -> {1000 * train.get('seconds', 0) / (m * epochs):.2f} ms/member-epoch; R^2 {train.get('r2_mean', float('nan')):.3f} (min {train.get('r2_min', float('nan')):.3f})")
for s in ("explain", "evaluate", "report"):
    if s in by:
        print(f"{s}: {by[s]['seconds']:.2f} s")
if "run" in by:
    print(f"whole pipeline: {by['run']['seconds']:.2f} s")
p1 = json.load(open(os.path.join(out, "agra-pack1.json")))
p1_ms = 1000 * p1["seconds"] / (4 * 5)
print(f"agra one member at a time: {p1_ms:.2f} ms/member-epoch")
for line in open(os.path.join(out, "torch-train.jsonl")):
    r = json.loads(line)
    ratio = r["ms_per_member_epoch"] / (1000 * train.get("seconds", 1) / (m * epochs))
    print(f"torch {r['mode']}: {r['ms_per_member_epoch']:.2f} ms/member-epoch (agra packed is {ratio:.1f}x faster), test R^2 {r['test_r2_mean']}")
for line in open(os.path.join(out, "torch-explain.jsonl")):
    r = json.loads(line)
    print(f"torch explain {r['method']} batched={r['batched']}: {r['grad_evals_per_s']:.0f} gradient evaluations/s")
if "explain" in by:
    for meth in by["explain"]["methods"]:
        print(f"agra explain {meth['method']}: {meth['evaluations_per_second']:.0f} gradient evaluations/s, {meth['seconds']:.2f} s, not converged {meth.get('not_converged')}")
    mem = by["explain"].get("memory", {})
    print(f"agra explain memory: {mem.get('peak_rows')} rows a pass at most, host peak {mem.get('peak_host_bytes', 0) / 2**20:.0f} MiB, device {({k: round(v / 2**20) for k, v in mem.get('peak_device_bytes', {}).items()})} MiB")
PYEOF
rm -rf "$W"
