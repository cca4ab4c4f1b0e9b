#!/usr/bin/env bash
# slurm-test.sh -- integration test of agra's Slurm scripts on a local
# single-node cluster (scripts/ci/slurm-local.sh).
#
# What it checks: scripts/slurm/submit.sh submits a 4-shard training array and
# the finish job; while training, one running array task whose member has a
# checkpoint (epoch >= 1) is requeued externally (`scontrol requeue`), and a
# second one is sent USR1 as if its time limit were near (self-requeue path
# of train.sbatch). Then every task and the finish job must complete, every
# member must be `finished`, each member's weights_hash must equal the one of
# a single-process `agra train` of the same config, and report/report.md must
# exist. Why: requeue + resume must be invisible in the results.
#
# Output: `slurm-test: PASSED` (exit 0), `slurm-test: FAILED: why` (exit 1),
# or `slurm-test: SKIPPED (reason)` (exit 0) when no Slurm cluster can be
# started here -- a skip is not a pass.
#
# Environment:
#   AGRA                  agra binary (default: <repo>/target/release/agra;
#                         this script builds nothing)
#   SLURM_TEST_SET        space-separated --set overrides
#                         (default: the quick preset at the test suite's small sizes,
#                         "data.signals=96 data.train=64 train.lr=1e-3 train.epochs=400":
#                         a few seconds per member, long enough to requeue)
#   SLURM_TEST_TIMEOUT    seconds for the whole sweep (default: 900)
#   SLURM_TEST_USR1=0     skip the USR1/self-requeue part
#   SLURM_TEST_KEEP=1     keep the temp directory and the cluster running
#   OMP_NUM_THREADS       defaults to 1 for both the sweep and the reference,
#                         so both use the same number of torch threads
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/../.." && pwd)"
SHARDS=4
TIMEOUT="${SLURM_TEST_TIMEOUT:-900}"
read -r -a SETS <<<"${SLURM_TEST_SET:-data.signals=96 data.train=64 train.lr=1e-3 train.epochs=400}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

log() { echo "slurm-test: $*" >&2; }
ARRAY_ID="" FINISH_ID="" WORK="" RESULT=""

cleanup() {
    local rc=$?
    if [[ -n "$ARRAY_ID" ]]; then scancel "$ARRAY_ID" ${FINISH_ID:+"$FINISH_ID"} 2>/dev/null || true; fi
    if [[ "${SLURM_TEST_KEEP:-0}" != 1 ]]; then
        "$SCRIPT_DIR/slurm-local.sh" stop >/dev/null 2>&1 || true
        if [[ "$RESULT" == PASSED && -n "$WORK" ]]; then rm -rf "$WORK"; fi
    fi
    if [[ -n "$WORK" && -d "$WORK" ]]; then log "kept $WORK (Slurm logs in $WORK/sweep/slurm/)"; fi
    exit "$rc"
}
trap cleanup EXIT

fail() {
    RESULT=FAILED
    echo "slurm-test: FAILED: $*"
    if [[ -n "$WORK" && -d "$WORK/sweep/slurm" ]]; then
        tail -n 15 "$WORK"/sweep/slurm/*.out 2>/dev/null >&2 || true
    fi
    exit 1
}

# --- cluster ---------------------------------------------------------------
if ! why="$("$SCRIPT_DIR/slurm-local.sh" start 2>&1)"; then
    RESULT=SKIPPED
    echo "slurm-test: SKIPPED (no local Slurm cluster: $(tail -n 3 <<<"$why" | tr '\n' ' '))"
    echo "slurm-test: nothing was tested; this is NOT a pass"
    exit 0
fi

AGRA="${AGRA:-$REPO_DIR/target/release/agra}"
[[ -x "$AGRA" ]] || fail "agra binary not found at $AGRA (cargo build --release, or set AGRA)"
command -v python3 >/dev/null 2>&1 || fail "python3 is required to parse JSON"

WORK="$(mktemp -d /tmp/agra-slurm-test.XXXXXX)"
chmod 755 "$WORK"
RUN="$WORK/sweep"
REF="$WORK/ref"
AGRA_OPTS=(--preset quick --devices cpu -q)
SET_ARGS=()
for s in "${SETS[@]}"; do SET_ARGS+=(--set "$s"); done
AGRA_OPTS+=("${SET_ARGS[@]}")

status_json() { "$AGRA" --run-dir "$1" "${AGRA_OPTS[@]}" status --json; }

# Prints array task ids (one per line) that are RUNNING and own an
# in-progress member with a checkpoint at epoch >= 1.
requeue_candidates() {
    local running json
    running="$(squeue -h -r -j "$ARRAY_ID" -t RUNNING -o '%K' 2>/dev/null | tr '\n' ' ')"
    [[ -n "${running// /}" ]] || return 0
    json="$(status_json "$RUN" 2>/dev/null)" || return 0
    python3 -c '
import json, sys
shards, running = int(sys.argv[1]), {int(t) for t in sys.argv[2].split()}
members = json.loads(sys.stdin.read()).get("members", [])
ok = sorted({m["index"] % shards for m in members
             if m.get("state") == "in_progress" and m.get("epoch", 0) >= 1
             and m["index"] % shards in running})
print("\n".join(map(str, ok)))' "$SHARDS" "$running" <<<"$json"
}

# --- submit ------------------------------------------------------------------
log "submitting sweep into $RUN (shards=$SHARDS, ${SETS[*]})"
ids="$(AGRA="$AGRA" "$REPO_DIR/scripts/slurm/submit.sh" --parsable --run-dir "$RUN" \
    --preset quick --shards "$SHARDS" --parallel "$SHARDS" --devices cpu \
    --time 30:00 -- "${SET_ARGS[@]}")" || fail "submit.sh failed"
read -r ARRAY_ID FINISH_ID <<<"$ids"
[[ "$ARRAY_ID" =~ ^[0-9]+$ && "$FINISH_ID" =~ ^[0-9]+$ ]] || fail "submit.sh printed '$ids'"
log "array job $ARRAY_ID, finish job $FINISH_ID"

# --- requeue while training ------------------------------------------------------
deadline=$((SECONDS + TIMEOUT))
EXT_TASK="" USR1_TASK=""
want_usr1=1
[[ "${SLURM_TEST_USR1:-1}" == 1 ]] || want_usr1=0
while ((SECONDS < deadline)); do
    if [[ -z "$(squeue -h -r -j "$ARRAY_ID" -t RUNNING,PENDING,CONFIGURING -o '%i' 2>/dev/null)" ]]; then
        break # all tasks ended
    fi
    mapfile -t cands < <(requeue_candidates)
    for t in "${cands[@]}"; do
        [[ -n "$t" ]] || continue
        if [[ -z "$EXT_TASK" ]]; then
            log "requeueing running task ${ARRAY_ID}_$t externally (scontrol requeue)"
            scontrol requeue "${ARRAY_ID}_$t" || fail "scontrol requeue ${ARRAY_ID}_$t failed"
            EXT_TASK="$t"
        elif ((want_usr1)) && [[ -z "$USR1_TASK" && "$t" != "$EXT_TASK" ]]; then
            log "sending USR1 to the batch shell of ${ARRAY_ID}_$t (time-limit path)"
            scancel --batch --signal=USR1 "${ARRAY_ID}_$t" || fail "scancel --signal=USR1 failed"
            USR1_TASK="$t"
        fi
    done
    if [[ -n "$EXT_TASK" ]] && { ((!want_usr1)) || [[ -n "$USR1_TASK" ]]; }; then
        break
    fi
    sleep 1
done
[[ -n "$EXT_TASK" ]] || fail "no array task was running with a checkpoint (epoch >= 1) before the array ended; raise the epochs with SLURM_TEST_SET"
if ((want_usr1)) && [[ -z "$USR1_TASK" ]]; then
    log "WARNING: no second task to send USR1 to; only the external requeue was tested"
fi

# --- wait for the sweep ------------------------------------------------------
log "waiting for the sweep to finish (timeout ${TIMEOUT}s)"
while ((SECONDS < deadline)); do
    left="$(squeue -h -r -j "$ARRAY_ID,$FINISH_ID" -o '%i %T %r' 2>/dev/null || true)"
    [[ -n "$left" ]] || break
    # Slurm holds a requeued batch job for ~2 minutes (reason BeginTime) to let
    # the node clean up; skip that wait here.
    while read -r id _ reason; do
        if [[ "$reason" == BeginTime ]]; then scontrol update JobId="$id" StartTime=now >/dev/null 2>&1 || true; fi
    done <<<"$left"
    sleep 2
done
[[ -z "$(squeue -h -j "$ARRAY_ID,$FINISH_ID" 2>/dev/null)" ]] \
    || fail "sweep still running after ${TIMEOUT}s: $(squeue -h -r -j "$ARRAY_ID,$FINISH_ID" -o '%i %T %r' | tr '\n' ';')"

# --- Slurm's view ------------------------------------------------------------
jobs="$(scontrol -o show job "$ARRAY_ID" 2>/dev/null)" || fail "scontrol show job $ARRAY_ID failed"
n_tasks="$(grep -c 'ArrayTaskId=' <<<"$jobs" || true)"
((n_tasks == SHARDS)) || fail "expected $SHARDS array tasks, scontrol shows $n_tasks"
bad="$(grep -v 'JobState=COMPLETED' <<<"$jobs" | grep -o 'ArrayTaskId=[0-9]*\|JobState=[A-Z_]*' | tr '\n' ' ' || true)"
[[ -z "$bad" ]] || fail "not all array tasks COMPLETED: $bad"
for t in "$EXT_TASK" $USR1_TASK; do
    r="$(grep "ArrayTaskId=$t " <<<"$jobs" | grep -o 'Restarts=[0-9]*' | cut -d= -f2)"
    ((${r:-0} >= 1)) || fail "task ${ARRAY_ID}_$t was not requeued (Restarts=${r:-?})"
done
fstate="$(scontrol -o show job "$FINISH_ID" | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)"
[[ "$fstate" == COMPLETED ]] || fail "finish job $FINISH_ID is $fstate, not COMPLETED"

# --- agra's view -------------------------------------------------------------
sweep_json="$(status_json "$RUN")" || fail "agra status --json failed on the sweep run dir"
[[ -f "$RUN/report/report.md" ]] || fail "finish job did not produce $RUN/report/report.md"

log "single-process reference run in $REF"
# Each of the 4 shards holds one member, so each trained in a pack of one; the reference packs
# the same way, which makes bit-identical weights the bar whichever kernels run (with
# libtorch's another pack size rounds differently, within 1e-4 relative: tests/pipeline.rs).
"$AGRA" --run-dir "$REF" "${AGRA_OPTS[@]}" train --pack 1 >"$WORK/ref.log" 2>&1 \
    || fail "reference 'agra train' failed (see $WORK/ref.log)"
ref_json="$(status_json "$REF")" || fail "agra status --json failed on the reference run dir"

if ! why="$(python3 -c '
import json, sys
sweep, ref = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sm = {m["index"]: m for m in sweep.get("members", [])}
rm = {m["index"]: m for m in ref.get("members", [])}
errs = []
if not sm:
    errs.append("sweep has no members")
if sorted(sm) != sorted(rm):
    errs.append("member sets differ: sweep %s, reference %s" % (sorted(sm), sorted(rm)))
for i in sorted(sm):
    s, r = sm[i], rm.get(i, {})
    if s.get("state") != "finished":
        errs.append("member %d is %s in the sweep" % (i, s.get("state")))
    if r.get("state") != "finished":
        errs.append("member %d is %s in the reference" % (i, r.get("state")))
    if not s.get("weights_hash") or s.get("weights_hash") != r.get("weights_hash"):
        errs.append("member %d weights_hash %s != reference %s" % (i, s.get("weights_hash"), r.get("weights_hash")))
if errs:
    print("; ".join(errs)); sys.exit(1)
print(len(sm))' "$sweep_json" "$ref_json")"; then
    fail "$why"
fi

RESULT=PASSED
echo "slurm-test: PASSED ($why members bit-identical to the single-process run; task ${ARRAY_ID}_$EXT_TASK requeued externally${USR1_TASK:+, task ${ARRAY_ID}_$USR1_TASK requeued itself after USR1})"
