-- Migration 9: the pilot (`--pilot-steps N`) in distance_measurements. A short LoRA-vs-full run
-- on a subset of the data through `compare`; its runs are in `runs` and `comparisons`
-- (pilot_compare_id = comparisons.compare_id, the run ids = runs.run_id). All NULL for a
-- measurement without a pilot. docs/domain-distance.md.
ALTER TABLE distance_measurements ADD COLUMN IF NOT EXISTS pilot_steps INTEGER;
ALTER TABLE distance_measurements ADD COLUMN IF NOT EXISTS pilot_full_drop DOUBLE;   -- nats
ALTER TABLE distance_measurements ADD COLUMN IF NOT EXISTS pilot_lora_drop DOUBLE;   -- nats
ALTER TABLE distance_measurements ADD COLUMN IF NOT EXISTS pilot_share DOUBLE;       -- lora / full drop
ALTER TABLE distance_measurements ADD COLUMN IF NOT EXISTS pilot_verdict VARCHAR;    -- near | moderate | far
ALTER TABLE distance_measurements ADD COLUMN IF NOT EXISTS pilot_compare_id VARCHAR;
ALTER TABLE distance_measurements ADD COLUMN IF NOT EXISTS pilot_full_run_id VARCHAR;
ALTER TABLE distance_measurements ADD COLUMN IF NOT EXISTS pilot_lora_run_id VARCHAR;
