#!/usr/bin/env bash
# submit.sh -- submit agra's whole sweep to Slurm with one command.
#
# What: a job array of train.sbatch (one task per shard; task I trains the
# members m with m % N == I) plus finish.sbatch (explain, evaluate, report)
# that starts only when every array task has succeeded
# (--dependency=afterok:<array job id>). Both work on one shared run directory.
# Why: training members is embarrassingly parallel; the array spreads it over
# nodes, survives time limits/preemption through checkpoint + requeue
# (see docs/SLURM.md), and the dependency chains the post-processing.
#
# Usage:
#   scripts/slurm/submit.sh --run-dir DIR [options] [-- extra agra options]
#
# Options:
#   --run-dir DIR         shared run directory (required; made absolute)
#   --preset P            agra preset (quick|paper)
#   --config FILE         agra config file (made absolute)
#   --devices D           agra --devices for every job (default: auto)
#   --shards N            number of array tasks (default: number of members,
#                         from `agra status --json`)
#   --parallel P          at most P tasks at once (--array=0-(N-1)%P)
#   --pack N              passed to `agra train --pack N`
#   --partition X         Slurm partition
#   --account A           Slurm account
#   --time T              time limit of each job (Slurm format, e.g. 4:00:00;
#                         at least --signal-lead + 6 minutes)
#   --finish-time T       time limit of the finish job (default: --time)
#   --gpus-per-task G     GPUs per array task / finish job; "auto" (default):
#                         highest cuda:N in --devices + 1, else 1 if the
#                         partition (--partition, else $SBATCH_PARTITION,
#                         else the default one)
#                         advertises gpu GRES, else none; none with --devices cpu
#   --cpus-per-task C     CPUs per task
#   --mem M               memory per task (e.g. 16G)
#   --signal-lead S       seconds before the time limit to send USR1 (120)
#   --log-dir DIR         Slurm output files (default: RUN_DIR/slurm)
#   --allow-partial       finish job depends on afterany and runs
#                         `explain --allow-partial` (report on what trained)
#   --parsable            print only "ARRAY_JOB_ID FINISH_JOB_ID" on stdout
#   --dry-run             print the sbatch commands, submit nothing
#   -h, --help
# Everything after `--` is passed to every agra invocation; it must be agra
# global options (e.g. --set train.epochs=6), since explain/evaluate/report
# get it too.
#
# Environment: AGRA (agra binary; default: <repo>/target/release/agra). The
# binary, the run directory and this repository must be on a filesystem shared
# by the submit host and all compute nodes.
set -euo pipefail

die() { echo "submit.sh: $*" >&2; exit 2; }
info() { ((PARSABLE)) || echo "$*"; }

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPT_DIR/../.." && pwd)"

abspath() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s/%s\n' "$PWD" "$1" ;;
    esac
}

RUN_DIR="" PRESET="" CONFIG="" DEVICES="auto" SHARDS="" PARALLEL="" PACK=""
PARTITION="" ACCOUNT="" TIME="" FINISH_TIME="" GPUS="auto" CPUS="" MEM="" LEAD=120
LOG_DIR="" ALLOW_PARTIAL=0 PARSABLE=0 DRY_RUN=0
EXTRA=()

need() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }
while (($#)); do
    case "$1" in
        --run-dir) need "$@"; RUN_DIR="$2"; shift 2 ;;
        --preset) need "$@"; PRESET="$2"; shift 2 ;;
        --config) need "$@"; CONFIG="$2"; shift 2 ;;
        --devices) need "$@"; DEVICES="$2"; shift 2 ;;
        --shards) need "$@"; SHARDS="$2"; shift 2 ;;
        --parallel) need "$@"; PARALLEL="$2"; shift 2 ;;
        --pack) need "$@"; PACK="$2"; shift 2 ;;
        --partition) need "$@"; PARTITION="$2"; shift 2 ;;
        --account) need "$@"; ACCOUNT="$2"; shift 2 ;;
        --time) need "$@"; TIME="$2"; shift 2 ;;
        --finish-time) need "$@"; FINISH_TIME="$2"; shift 2 ;;
        --gpus-per-task) need "$@"; GPUS="$2"; shift 2 ;;
        --cpus-per-task) need "$@"; CPUS="$2"; shift 2 ;;
        --mem) need "$@"; MEM="$2"; shift 2 ;;
        --signal-lead) need "$@"; LEAD="$2"; shift 2 ;;
        --log-dir) need "$@"; LOG_DIR="$2"; shift 2 ;;
        --allow-partial) ALLOW_PARTIAL=1; shift ;;
        --parsable) PARSABLE=1; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) die "unknown option '$1' (agra options go after --; see --help)" ;;
    esac
done

[[ -n "$RUN_DIR" ]] || die "--run-dir is required"
RUN_DIR="$(abspath "$RUN_DIR")"
LOG_DIR="$(abspath "${LOG_DIR:-$RUN_DIR/slurm}")"
[[ -z "$CONFIG" ]] || CONFIG="$(abspath "$CONFIG")"
[[ -z "$CONFIG" || -f "$CONFIG" ]] || die "config file not found: $CONFIG"
[[ "$LEAD" =~ ^[0-9]+$ ]] || die "--signal-lead must be seconds"
# Checked here, since the jobs get --devices and agra status (below) does not.
[[ "$DEVICES" =~ ^(auto|(cpu|cuda(:[0-9]+)?)(,(cpu|cuda(:[0-9]+)?))*)$ ]] \
    || die "--devices $DEVICES: expected auto, or a list of cpu, cuda, cuda:N"
for arg in ${EXTRA[@]+"${EXTRA[@]}"}; do
    [[ "$arg" != --devices && "$arg" != --devices=* ]] || die "give --devices to submit.sh, not after --"
done

# Slurm's time formats (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) in seconds; fails on others
# (UNLIMITED, or a typo that sbatch will name).
slurm_seconds() {
    local d=0 h=0 m=0 s=0
    if [[ "$1" =~ ^([0-9]+)-([0-9]+)(:([0-9]+))?(:([0-9]+))?$ ]]; then
        d=${BASH_REMATCH[1]} h=${BASH_REMATCH[2]} m=${BASH_REMATCH[4]:-0} s=${BASH_REMATCH[6]:-0}
    elif [[ "$1" =~ ^([0-9]+)$ ]]; then
        m=${BASH_REMATCH[1]}
    elif [[ "$1" =~ ^([0-9]+):([0-9]+)$ ]]; then
        m=${BASH_REMATCH[1]} s=${BASH_REMATCH[2]}
    elif [[ "$1" =~ ^([0-9]+):([0-9]+):([0-9]+)$ ]]; then
        h=${BASH_REMATCH[1]} m=${BASH_REMATCH[2]} s=${BASH_REMATCH[3]}
    else
        return 1
    fi
    echo $(((((10#$d * 24 + 10#$h) * 60) + 10#$m) * 60 + 10#$s))
}
# sbatch sends the USR1 up to 60 s before LEAD: a limit inside that window signals agra before
# it has trained (or before it can take the signal), and the task ends FAILED or TIMEOUT. (0 is
# no limit.)
if [[ -n "$TIME" ]] && limit="$(slurm_seconds "$TIME")"; then
    ((limit == 0 || limit >= LEAD + 60 + 300)) || die "--time $TIME leaves under 5 minutes of work before the USR1 that comes up to --signal-lead $LEAD + 60 s before it (Slurm reads M:S as minutes:seconds; use H:M:S)"
fi
[[ -z "$SHARDS" || "$SHARDS" =~ ^[1-9][0-9]*$ ]] || die "--shards must be a positive integer"
[[ -z "$PARALLEL" || "$PARALLEL" =~ ^[1-9][0-9]*$ ]] || die "--parallel must be a positive integer"

AGRA="${AGRA:-$REPO_DIR/target/release/agra}"
AGRA="$(abspath "$AGRA")"
[[ -x "$AGRA" ]] || die "agra binary not found at $AGRA (cargo build --release, or set AGRA)"

# Options given to every agra invocation of the sweep.
COMMON=(--run-dir "$RUN_DIR" -q)
[[ -z "$PRESET" ]] || COMMON+=(--preset "$PRESET")
[[ -z "$CONFIG" ]] || COMMON+=(--config "$CONFIG")
# (`${a[@]+...}`: bash before 4.4 calls an empty array unbound under `set -u`.)
COMMON+=(${EXTRA[@]+"${EXTRA[@]}"})

# Validate the configuration here, before anything is queued, and learn the
# member count. Exit 2 from agra is a usage/config error. (Without --devices: this
# host, often a login node, need not have the compute nodes' GPUs.)
status_json=""
if status_json="$("$AGRA" "${COMMON[@]}" status --json 2>/dev/null)"; then
    :
else
    rc=$?
    if ((rc == 2)); then
        "$AGRA" "${COMMON[@]}" status --json >/dev/null || true
        die "agra rejected the options (exit 2): ${COMMON[*]}"
    fi
    status_json=""
fi
if [[ -z "$SHARDS" ]]; then
    [[ -n "$status_json" ]] || die "cannot determine the member count; pass --shards N"
    SHARDS="$(python3 -c 'import json,sys; print(len(json.load(sys.stdin)["members"]))' <<<"$status_json" 2>/dev/null)" \
        || die "cannot parse 'agra status --json'; pass --shards N"
    ((SHARDS > 0)) || die "agra reports no members"
fi
PARALLEL="${PARALLEL:-$SHARDS}"

# The GPUs a --devices list needs: Slurm numbers a job's GPUs from 0, so cuda:N needs N + 1.
cuda_needed() {
    local n=0 i item items
    IFS=, read -ra items <<<"$1"
    for item in "${items[@]}"; do
        case "$item" in
            cuda) i=0 ;;
            cuda:*) i=${item#cuda:} ;;
            *) continue ;;
        esac
        if ((10#$i + 1 > n)); then n=$((10#$i + 1)); fi
    done
    echo "$n"
}
if [[ "$DEVICES" != auto ]]; then
    needed="$(cuda_needed "$DEVICES")"
    if ((needed == 0)); then
        GPUS=0 # a list without cuda never needs one
    elif [[ "$GPUS" == auto ]]; then
        GPUS=$needed
    fi
elif [[ "$GPUS" == auto ]]; then
    GPUS=0
    # The partition the jobs will run in: the given one, else sbatch's from the environment,
    # else the default (marked '*').
    if command -v sinfo >/dev/null 2>&1; then
        if [[ -n "${PARTITION:-${SBATCH_PARTITION:-}}" ]]; then
            gres="$(sinfo -h -p "${PARTITION:-$SBATCH_PARTITION}" -o '%G' 2>/dev/null || true)"
        else
            gres="$(sinfo -h -o '%P %G' 2>/dev/null | awk '$1 ~ /\*$/ { print $2 }' || true)"
        fi
        if grep -q 'gpu' <<<"$gres"; then GPUS=1; fi
    fi
fi
[[ "$GPUS" =~ ^[0-9]+$ ]] || die "--gpus-per-task must be a number or auto"

SB=(sbatch --parsable --export=ALL)
[[ -z "$PARTITION" ]] || SB+=(--partition "$PARTITION")
[[ -z "$ACCOUNT" ]] || SB+=(--account "$ACCOUNT")
((GPUS == 0)) || SB+=(--gres "gpu:$GPUS")
[[ -z "$CPUS" ]] || SB+=(--cpus-per-task "$CPUS")
[[ -z "$MEM" ]] || SB+=(--mem "$MEM")

TRAIN=("${SB[@]}" ${TIME:+--time "$TIME"} --job-name agra-train --array "0-$((SHARDS - 1))%$PARALLEL"
    --requeue --signal "B:USR1@$LEAD" --open-mode append
    --output "$LOG_DIR/train-%A_%a.out"
    "$SCRIPT_DIR/train.sbatch" "${COMMON[@]}" --devices "$DEVICES")
[[ -z "$PACK" ]] || TRAIN+=(--pack "$PACK")
if ((ALLOW_PARTIAL)); then DEP=afterany; else DEP=afterok; fi
FINISH_TIME="${FINISH_TIME:-$TIME}"
FINISH=("${SB[@]}" ${FINISH_TIME:+--time "$FINISH_TIME"} --job-name agra-finish --open-mode append
    --output "$LOG_DIR/finish-%j.out" --kill-on-invalid-dep yes
    "$SCRIPT_DIR/finish.sbatch" "${COMMON[@]}" --devices "$DEVICES")

export AGRA AGRA_SHARDS="$SHARDS" AGRA_GPUS="$GPUS" AGRA_ALLOW_PARTIAL="$ALLOW_PARTIAL"

if ((DRY_RUN)); then
    echo "AGRA=$AGRA AGRA_SHARDS=$SHARDS AGRA_GPUS=$GPUS AGRA_ALLOW_PARTIAL=$ALLOW_PARTIAL"
    printf '%q ' "${TRAIN[@]}"; echo
    FINISH=("${FINISH[@]:0:1}" --dependency "$DEP:<array job id>" "${FINISH[@]:1}")
    printf '%q ' "${FINISH[@]}"; echo
    exit 0
fi

command -v sbatch >/dev/null 2>&1 || die "sbatch not found (run on a Slurm submit host)"
mkdir -p "$RUN_DIR" "$LOG_DIR"

# agra's locks (flock) keep two tasks off one member and serialise run.json's updates; these
# mount options make them node-local (or make flock fail). Seen from this host only: compute
# nodes may mount it otherwise.
if command -v findmnt >/dev/null 2>&1; then
    opts="$(findmnt -no OPTIONS -T "$RUN_DIR" 2>/dev/null || true)"
    if [[ ",$opts," =~ ,(nolock|local_lock=flock|local_lock=all|localflock|noflock), ]]; then
        echo "submit.sh: warning: $RUN_DIR is mounted with '${BASH_REMATCH[1]}': file locks do not reach other nodes (docs/SLURM.md, shared run directory)" >&2
    fi
fi

out="$("${TRAIN[@]}")" || die "sbatch of the training array failed"
ARRAY_ID="${out%%;*}"
[[ "$ARRAY_ID" =~ ^[0-9]+$ ]] || die "unexpected sbatch output: $out"
FINISH=("${FINISH[@]:0:1}" --dependency "$DEP:$ARRAY_ID" "${FINISH[@]:1}")
if ! out="$("${FINISH[@]}")"; then
    scancel "$ARRAY_ID" || true
    die "sbatch of the finish job failed; cancelled array $ARRAY_ID"
fi
FINISH_ID="${out%%;*}"

if ((PARSABLE)); then
    echo "$ARRAY_ID $FINISH_ID"
else
    info "run dir:      $RUN_DIR"
    info "train array:  $ARRAY_ID  ($SHARDS tasks, at most $PARALLEL at once; logs $LOG_DIR/train-${ARRAY_ID}_<task>.out)"
    info "finish job:   $FINISH_ID  ($DEP:$ARRAY_ID; explain, evaluate, report)"
    info "watch:        squeue -j $ARRAY_ID,$FINISH_ID ; $AGRA --run-dir $RUN_DIR status"
fi
