#!/usr/bin/env bash
# The long measured runs behind the docs (issue 15's Med-VQA leaderboard, issue 13's full-size CoDiEmb rows), one
# after another, each resumable. A machine that goes away loses only the job it was running: every finished job's
# rows are exported to the committed results file at once (docs/results/medvqa.json, docs/results/codiemb_full.json
# and its items), and on the next start those files are imported first, so their jobs count as done.
#
#   bash experiments/queue.sh            # from the repository root, after `make setup`; logs to stdout
#   COMMIT=1 bash experiments/queue.sh   # also `git commit` each results file as it changes (a maintainer's run)
#
# Runs issue 13's rows first (CoDiEmb rows one at a time, each training on 2 threads; the fusion; CSE-SFP's one-thread
# runs two at a time), then the Med-VQA matrix's remaining jobs, two one-thread jobs side by side.
# Stop it with Ctrl-C or SIGTERM (to this script: it passes the signal on): running jobs go back to the queue; the
# same command continues them.
set -uo pipefail
CHILD=""
EXPORTER=""
run() {  # a long command in the background, so that a signal reaches this script while it waits and is passed on
  "$@" &
  CHILD=$!
  wait "$CHILD"
  local rc=$?
  CHILD=""
  return $rc
}
stop() {
  echo "queue.sh: stopping (running jobs go back to the queue)"
  [ -n "$CHILD" ] && kill -TERM "$CHILD" 2>/dev/null && wait "$CHILD"
  exit 143
}
trap stop TERM INT
trap '[ -n "$EXPORTER" ] && kill $EXPORTER 2>/dev/null' EXIT
cd "$(dirname "$0")/.."
export EMBEDLAB_DATA="${EMBEDLAB_DATA:-$(cd .. && pwd)/shared/data}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
DB=runs/docs-results.sqlite
E=.venv/bin/embedlab
mkdir -p runs

commit() {  # commit the named paths only (never the whole tree); a concurrent git command makes us retry
  [ "${COMMIT:-0}" = 1 ] || return 0
  local p paths=()
  for p in "$@"; do [ -e "$p" ] && paths+=("$p"); done  # an items folder that no row has written yet
  [ ${#paths[@]} -gt 0 ] || return 0
  set -- "${paths[@]}"
  for _ in 1 2 3 4 5; do
    git add -- "$@" 2>/dev/null && git commit -q -m "$MSG" -- "$@" && return 0
    git diff --quiet HEAD -- "$@" && return 0
    sleep 7
  done
}

# -- the committed rows, imported first so that their jobs count as done -------------------------------------------
[ -f docs/results/medvqa.json ] && $E results-import docs/results/medvqa.json --db $DB
$E results-import docs/results/medvqa_baselines.json --db $DB

# Issue 13 first (the open issue), then the Med-VQA matrix's remaining jobs (issue 15, resolved: refinements).
# -- CoDiEmb at full size (issue 13): one (row, seed) per call, committed after each -------------------------------
# Its protocol trains and evaluates with bf16 autocast (part of every row's configuration): emulated, it would take
# many times the ~25 min a row takes on a CPU with native bf16.
issue13() {
if ! grep -qwE "avx512_bf16|amx_bf16" /proc/cpuinfo; then
  echo "queue.sh: this CPU has no native bf16: experiments/codiemb_full.yaml (bf16 protocol) not run here"
  return 0
fi
if [ ! -f runs/train-data/scifact-mined.jsonl ]; then
  run $E convert --out runs/train-data || exit 1
  run $E mine runs/train-data/scifact-train.jsonl --out runs/train-data/scifact-mined.jsonl \
    --corpus "$EMBEDLAB_DATA/retrieval/scifact/corpus.jsonl" --seed 0 || exit 1
fi
# Rows in this order: first the three checkpoints experiments/fusion_full.yaml's "specialists" batch fuses, then
# that fusion, then the rest (the "trajectories" batch right after its last input, codiemb:51). Checkpoints are not
# committed: a fusion batch runs only on the machine that trained its inputs (a fresh machine imports the inputs'
# records, counts those jobs done, and skips the batch with a message).
codiemb_row() {  # $1 = row:seed
  run $E experiment experiments/codiemb_full.yaml --db $DB --only "${1%%:*}" --seeds "${1##*:}" --no-progress || exit 1
  MSG="Issue 13: codiemb_full row ${1%%:*} seed ${1##*:} (records, items, table)" \
    commit docs/results/codiemb_full.json docs/results/codiemb_full-items docs/codiemb_full_table.md
}
# (sts_only-242:49 first: its evaluation was cut by the end of a session; the other two are done.)
for row_seed in sts_only-242:49 codiemb:50 ir_only-283:49; do codiemb_row "$row_seed"; done

# -- Fusion re-measured (issue 13 section 3), one row per call --------------------------------------------------------
W=runs/experiments/codiemb_full
fusion_batch() {  # $1 = the input folders under $W (space-separated); the rest: the rows of experiments/fusion_full.yaml
  local inputs=$1 d row
  shift
  for d in $inputs; do
    if [ ! -d "$W/$d/final" ]; then
      echo "queue.sh: the fusion inputs ($inputs under $W) are not all on this machine (their records came from a" \
           "results file): fusion rows $* not run"
      return 0
    fi
  done
  local rows
  rows=$(IFS=,; echo "$*")
  # One call for the batch (one start-up, not one per row); the runner exports each row as it finishes.
  run $E experiment experiments/fusion_full.yaml --db $DB --only "$rows" --no-progress || exit 1
  MSG="Issue 13: fusion_full rows $rows (records, items, table)" \
    commit docs/results/fusion_full.json docs/results/fusion_full-items docs/fusion_full_table.md
}
fusion_batch "codiemb-s50 ir_only-283-s49 sts_only-242-s49" \
  "linear (uniform soup)" delta_guided "single: codiemb-s50" "single: ir_only-283-s49" "single: sts_only-242-s49" \
  task_arithmetic ties "delta_guided per element" dare_linear dare_ties greedy_soup
fusion_trajectories() {  # the paper's setting: trajectories of one method (two seeds and a temperature setting)
  fusion_batch "codiemb-s50 codiemb-s51 codiemb-tau0.05-s49" \
    "trajectories: linear (uniform soup)" "trajectories: delta_guided" "trajectories: single codiemb-s51" \
    "trajectories: single codiemb-tau0.05-s49" "trajectories: single codiemb-s50" \
    "trajectories: delta_guided per element" "trajectories: task_arithmetic" "trajectories: ties" \
    "trajectories: dare_linear" "trajectories: greedy_soup" "trajectories: dare_ties"
}

# -- CSE-SFP re-measured (issue 13 section 3): one-thread runs, as many at once as there are cores (2 here) --------
cse_sfp_rows() {  # $1 = "row[,row]:seeds" or "row[,row]" (each row's own seeds); one call, rows exported as they end
  local rows=${1%:*} seeds=() what=$1
  [[ $1 == *:* ]] && seeds=(--seeds "${1##*:}") || rows=$1
  run $E experiment experiments/cse_sfp_full.yaml --db $DB --only "$rows" "${seeds[@]}" --cpus 2 --no-progress ||
    exit 1
  MSG="Issue 13: cse_sfp_full rows $what (records, items, table)" \
    commit docs/results/cse_sfp_full.json docs/results/cse_sfp_full-items docs/cse_sfp_full_table.md
}
# CSE-SFP's claim first (equal steps, 3 seeds; then equal time, 3 seeds, with the no-noise control), then the
# remaining CoDiEmb rows: the main rows' seeds first (CoDiEmb at the dev-selected temperature 0.05, naive and the
# peer), the temperature group's baseline, then the rows the issue asks for at two seeds (CoSENT, the specialists, the
# arms; short ones first: a machine that goes away between sessions loses the checkpoints of a half-trained row),
# the specialists at matched total steps, the tau 0.05 IR specialist, the trajectories fusion (only where its
# inputs' checkpoints are on the machine) and CSE-SFP without model dropout (2 seeds), naive at tau 0.05's seeds 50
# and 51 (the one-factor baseline of CoDiEmb at 0.05), then the 3-epoch pair.
cse_sfp_rows "untrained PromptEOL,untrained CSE-SFP template (Rep2):0"
cse_sfp_rows "cse_sfp-lora,simcse_prompt-lora:49,50,51"
cse_sfp_rows "cse_sfp-lora-200,simcse_prompt-lora-nonoise"
for row_seed in codiemb-tau0.05:49 codiemb:51 codiemb-tau0.05:50 codiemb-tau0.05:51 naive:50 naive:51 naive-tau0.05:49 \
                st_peer:50 st_peer:51 sts_only-242:50 arm-losses:50 sts_only-525:49 cosent:49 arm-sampler:50 cosent:50 \
                ir_only-283:50 ir_only-525:49 sts_only-525:50 ir_only-283-tau0.05:49 fusion:trajectories cse:nodropout \
                ir_only-283-tau0.05:50 naive-tau0.05:50 naive-tau0.05:51 ir_only-525:50 \
                codiemb-tau0.05-3ep:49 st_peer-3ep:49; do
  case "$row_seed" in
    fusion:trajectories) fusion_trajectories ;;
    cse:nodropout)  # its two seeds, one per core
      cse_sfp_rows "cse_sfp-lora-nodropout" ;;
    *) codiemb_row "$row_seed" ;;
  esac
done
}
issue13

# -- Med-VQA (issue 15): the rest of the matrix (+ the lr and bf16 arms), exported after every finished job ------
export_medvqa() {
  $E results --experiment medvqa_models --format json --db $DB --out docs/results/medvqa.json >/dev/null &&
    MSG="Issue 15: leaderboard rows so far ($1 jobs of experiments/medvqa_models.yaml and medvqa_bf16.yaml done)" \
      commit docs/results/medvqa.json
}
done_jobs() {
  .venv/bin/python - "$DB" <<'PY'
import sqlite3, sys
print(sqlite3.connect(sys.argv[1]).execute(
    "select count(*) from jobs where experiment='medvqa_models' and status='done'").fetchone()[0])
PY
}
(
  last=-1
  while sleep 60; do
    n=$(done_jobs 2>/dev/null || echo 0)
    if [ "$n" != "$last" ] && [ "$n" -gt 0 ] && export_medvqa "$n"; then last=$n; fi
  done
) &
EXPORTER=$!
OMP_NUM_THREADS=1 run $E jobs submit experiments/medvqa_models.yaml --db $DB --cpus 2 --no-progress || exit 1
OMP_NUM_THREADS=1 run $E jobs submit experiments/medvqa_lr.yaml --db $DB --cpus 2 --no-progress || exit 1
# bf16 rows only where the CPU computes bf16 natively (AVX-512 BF16 or AMX): elsewhere bf16 is emulated, slower than
# fp32, and the rows' training times would say nothing about bf16.
if grep -qwE "avx512_bf16|amx_bf16" /proc/cpuinfo; then
  OMP_NUM_THREADS=1 run $E jobs submit experiments/medvqa_bf16.yaml --db $DB --cpus 2 --no-progress || exit 1
else
  echo "queue.sh: this CPU has no native bf16 (avx512_bf16/amx_bf16): experiments/medvqa_bf16.yaml skipped"
fi
kill $EXPORTER 2>/dev/null
export_medvqa "$(done_jobs)"
