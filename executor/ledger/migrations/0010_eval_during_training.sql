-- Migration 10: evaluation during training (training.eval_every_steps) in the ledger.
--   metrics.eval_loss / probe_loss   the eval (learning) and general-text probe (forgetting) loss
--                                    on evaluated steps, NULL on the others
--   metrics.trained_tokens           loss-bearing tokens of the step (padding and prompts excluded)
--   metrics.positions                batch positions of the step, padding included (packing share)
--   runs.best_step / eval_loss_best  the step with the lowest eval loss during training, and it
--   runs.early_stopped / stop_reason training.early_stop_patience, and why training ended early
-- The runs columns are back-filled from result_json; old metrics rows keep NULL (their
-- metrics.jsonl still has the values: `tuneplan runs ingest RUN_DIR...` fills them).
ALTER TABLE metrics ADD COLUMN IF NOT EXISTS eval_loss DOUBLE;
ALTER TABLE metrics ADD COLUMN IF NOT EXISTS probe_loss DOUBLE;
ALTER TABLE metrics ADD COLUMN IF NOT EXISTS trained_tokens BIGINT;
ALTER TABLE metrics ADD COLUMN IF NOT EXISTS positions BIGINT;

ALTER TABLE runs ADD COLUMN IF NOT EXISTS best_step BIGINT;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS eval_loss_best DOUBLE;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS early_stopped BOOLEAN;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS stop_reason VARCHAR;

UPDATE runs SET
    best_step = TRY_CAST(result_json ->> '$.best_step' AS BIGINT),
    eval_loss_best = TRY_CAST(result_json ->> '$.best_eval_loss' AS DOUBLE),
    early_stopped = coalesce(TRY_CAST(result_json ->> '$.early_stopped' AS BOOLEAN), false),
    stop_reason = result_json ->> '$.stop_reason'
WHERE result_json IS NOT NULL;
