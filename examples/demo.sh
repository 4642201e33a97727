#!/usr/bin/env bash
# make demo: advise for this machine, train the embedded SmolLM2-135M-Instruct on the example
# task (dates to ISO 8601; its longest example is 66 tokens, so 72-token sequences), then show
# predicted vs measured from DuckDB.
set -euo pipefail
cd "$(dirname "$0")/.."
TP=.venv/bin/tuneplan
OUT=${DEMO_DIR:-.tuneplan/demo}
STEPS=${DEMO_STEPS:-12}
export TUNEPLAN_EVAL_BATCHES=${TUNEPLAN_EVAL_BATCHES:-2}
mkdir -p "$OUT"

echo "== 1. advise: SmolLM2-135M-Instruct on this machine's CPU, a near-domain formatting task"
$TP advise --model HuggingFaceTB/SmolLM2-135M-Instruct --cpu --domain near --domain-label extraction \
    --forgetting medium --seq-len 72 --batch-size 8 \
    --data examples/data/train.jsonl --eval-data examples/data/eval.jsonl -o "$OUT/plan.json"

echo; echo "== 2. run the plan for $STEPS steps (first run converts the embedded GGUF once, ~30 s)"
$TP run "$OUT/plan.json" --max-steps "$STEPS" --db "$OUT/runs.duckdb" --output "$OUT/runs"

echo; echo "== 3. did the advice hold? (DuckDB)"
$TP runs --db "$OUT/runs.duckdb" --limit 5
$TP sql --db "$OUT/runs.duckdb" "
  SELECT r.run_id, r.method,
         round(r.predicted_peak_bytes / 2^30, 2) AS predicted_gib,
         round(r.measured_peak_bytes / 2^30, 2)  AS measured_gib,
         round(100 * m.memory_error, 1)          AS error_pct,
         round(l.learning, 3)   AS learning_nats,
         round(l.forgetting, 3) AS forgetting_nats
  FROM runs r JOIN run_memory_checks m USING (run_id) JOIN run_learning l USING (run_id)
  ORDER BY r.run_id DESC LIMIT 1"
