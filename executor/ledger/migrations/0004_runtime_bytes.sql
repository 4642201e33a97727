-- Migration 4: runs.runtime_bytes, the part of measured_peak_bytes that is the process runtime
-- (CPU: RSS before the model loaded; 0 on CUDA). Back-filled from result_json where a result
-- recorded it, else 0 for measured runs (results from before it was measured).
ALTER TABLE runs ADD COLUMN IF NOT EXISTS runtime_bytes BIGINT;

UPDATE runs
SET runtime_bytes = coalesce(
        TRY_CAST(json_extract_string(result_json, '$.measured.runtime_bytes') AS BIGINT), 0)
WHERE runtime_bytes IS NULL AND measured_peak_bytes IS NOT NULL;
