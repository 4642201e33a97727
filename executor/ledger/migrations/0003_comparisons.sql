-- Migration 3: the comparisons table (tuneplan compare). Its views (run_memory_checks,
-- comparison_runs, audit_*) live in views.sql.
CREATE TABLE IF NOT EXISTS comparisons (
    compare_id VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    method VARCHAR NOT NULL,
    chosen_method VARCHAR,
    forgetting_tolerance VARCHAR,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (compare_id, run_id)
);
