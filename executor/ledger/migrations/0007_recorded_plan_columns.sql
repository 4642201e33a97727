-- Migration 7: what the views used to dig out of plan_json on every query becomes data written
-- at record time (macros.sql defines each value once):
--   runs.predicted_overhead_bytes  plan.memory.breakdown.framework_overhead (like-for-like memory)
--   runs.planned_hardware          plan.inputs.hardware.name, next to runs.hardware (what ran)
--   plan_settings                  one row per run with a plan: its training settings, typed,
--                                  in one STRUCT column (the run_settings view unnests it)
-- Old rows are back-filled from their plan_json.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS predicted_overhead_bytes BIGINT;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS planned_hardware VARCHAR;

UPDATE runs SET predicted_overhead_bytes = plan_overhead_bytes(plan_json),
                planned_hardware = plan_hardware(plan_json);

CREATE TABLE IF NOT EXISTS plan_settings (
    run_id VARCHAR PRIMARY KEY,
    settings STRUCT(
        planned_method VARCHAR,
        planned_model VARCHAR,
        learning_rate DOUBLE,
        lr_scheduler VARCHAR,
        warmup_ratio DOUBLE,
        num_epochs DOUBLE,
        max_steps BIGINT,
        lora_rank INTEGER,
        lora_alpha DOUBLE,
        lora_dropout DOUBLE,
        target_modules VARCHAR[],
        use_rslora BOOLEAN,
        quant_type VARCHAR,
        seq_len INTEGER,
        per_device_batch_size INTEGER,
        gradient_accumulation_steps INTEGER,
        precision VARCHAR,
        optimizer VARCHAR,
        weight_decay DOUBLE,
        max_grad_norm DOUBLE,
        gradient_checkpointing BOOLEAN,
        attention VARCHAR,
        seed BIGINT,
        planned_strategy VARCHAR,
        planned_processes INTEGER,
        planned_nodes INTEGER,
        planned_hardware_kind VARCHAR,
        planned_gpu VARCHAR,
        planned_device_memory_bytes BIGINT,
        domain_label VARCHAR
    )
);

INSERT OR REPLACE INTO plan_settings
SELECT run_id, plan_settings_of(plan_json) FROM runs WHERE plan_json IS NOT NULL;
