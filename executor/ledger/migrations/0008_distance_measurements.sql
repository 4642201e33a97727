-- Migration 8: distance_measurements (tuneplan measure, advise --measure-distance). One row per
-- measurement; a plan carries its id in inputs.distance.measure_id, so runs join it through
-- json_extract_string(runs.plan_json, '$.inputs.distance.measure_id'). docs/domain-distance.md.
CREATE TABLE IF NOT EXISTS distance_measurements (
    measure_id VARCHAR PRIMARY KEY,
    measured_at TIMESTAMP NOT NULL,
    plan_model VARCHAR NOT NULL,          -- the model the distance is for
    model VARCHAR NOT NULL,               -- the model measured on (the proxy when proxy)
    proxy BOOLEAN NOT NULL,
    data VARCHAR NOT NULL,                -- data file, or reference:<task>
    data_sha256 VARCHAR,                  -- of the data file (null for reference tasks)
    plan_hash VARCHAR,                    -- of the plan advise wrote with it (null for `measure`)
    device VARCHAR NOT NULL,
    load VARCHAR NOT NULL,                -- fp32 | bf16 | 4bit
    rows INTEGER NOT NULL,
    target_tokens INTEGER NOT NULL,
    micro_batches INTEGER NOT NULL,
    tokens_per_batch INTEGER NOT NULL,
    target_loss DOUBLE NOT NULL,          -- nats per target token
    probe_loss DOUBLE NOT NULL,           -- nats per token of general text
    loss_ratio DOUBLE NOT NULL,
    high_loss_share DOUBLE NOT NULL,      -- fit signal
    mean_rank_90_share DOUBLE NOT NULL,   -- update-rank signal
    median_rank_90 DOUBLE NOT NULL,
    max_rank_90 INTEGER NOT NULL,
    lora_rank INTEGER NOT NULL,
    energy_at_lora_rank DOUBLE NOT NULL,
    score DOUBLE NOT NULL,
    verdict VARCHAR NOT NULL,             -- near | moderate | far
    rank_verdict VARCHAR NOT NULL,
    fit_verdict VARCHAR NOT NULL,
    declared VARCHAR,                     -- the user's --domain, if any
    source VARCHAR NOT NULL,              -- declared | measured
    thresholds VARCHAR NOT NULL,
    seconds DOUBLE NOT NULL,
    evidence_json VARCHAR NOT NULL        -- the plan's inputs.distance, per-layer ranks included
);
