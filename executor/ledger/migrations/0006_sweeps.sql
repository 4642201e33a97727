-- Migration 6: comparisons generalised to sweeps, upgraded in place: each trial's axis
-- ("method", "learning_rate", "lora_rank", "target_modules", or several joined by ","), the value
-- it took and the advisor's advised_value on that axis; old rows become axis "method" with
-- value = method and advised_value = chosen_method.
ALTER TABLE comparisons ADD COLUMN IF NOT EXISTS axis VARCHAR DEFAULT 'method';
ALTER TABLE comparisons ADD COLUMN IF NOT EXISTS value VARCHAR;
ALTER TABLE comparisons ADD COLUMN IF NOT EXISTS advised_value VARCHAR;
UPDATE comparisons SET axis = 'method', value = method, advised_value = chosen_method
WHERE value IS NULL;
