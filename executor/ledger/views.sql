-- Every view of the run ledger, defined once. Re-created (CREATE OR REPLACE) by every writable
-- connection after the migrations (migrate.create_views); read-only connections refuse a database
-- whose views are older than this file (connect.py: the message names `tuneplan runs upgrade`).
-- $${NAME} placeholders are Python constants (migrate.VIEW_CONSTANTS), so a threshold is written
-- once for both languages.
--
-- Every view carries only its own columns and its keys, none repeating a column of `runs`, of
-- `run_settings` or of another view: per-run views (run_memory_checks, run_predictions,
-- run_learning, run_settings) are keyed by run_id, per-trial views (comparison_runs,
-- sweep_trials) by (compare_id, run_id), so `runs JOIN run_memory_checks USING (run_id) JOIN
-- sweep_trials USING (run_id)` is never ambiguous. Pair audits name their runs (lora_run_id,
-- adapter_run_id...); aggregates are keyed by what they group by (method, model, device_kind).
-- tests/test_sql_settings.py joins every view to runs, run_settings and each other.

-- The memory comparison: the one definition of the raw and the like-for-like memory error.
--   memory_error             (predicted - measured) / measured, the whole figures
--   memory_error_comparable  like-for-like, tensor bytes on both sides: the prediction less its
--                            framework overhead against the measured peak less runtime_bytes
--                            (ledger/memory_compare.py mirrors it for runs not yet recorded,
--                            tested equal on recorded rows)
-- Signed: negative = under-predicted. NULL when nothing positive was measured.
CREATE OR REPLACE VIEW run_memory_checks AS
WITH b AS (
    SELECT run_id, status, error, predicted_peak_bytes, measured_peak_bytes,
           predicted_peak_bytes - coalesce(predicted_overhead_bytes, 0) AS predicted_comparable_bytes,
           CASE WHEN measured_peak_bytes > 0
                THEN measured_peak_bytes - coalesce(runtime_bytes, 0) END AS measured_comparable_bytes
    FROM runs
), e AS (
    SELECT *,
           CASE WHEN measured_peak_bytes > 0
                THEN (predicted_peak_bytes - measured_peak_bytes)::DOUBLE / measured_peak_bytes
           END AS memory_error,
           CASE WHEN measured_comparable_bytes > 0
                THEN (predicted_comparable_bytes - measured_comparable_bytes)::DOUBLE
                     / measured_comparable_bytes
           END AS memory_error_comparable
    FROM b
)
SELECT
    run_id, predicted_comparable_bytes, measured_comparable_bytes, memory_error,
    memory_error_comparable,
    memory_error_comparable < -${MEMORY_UNDER_PREDICTION_LIMIT} AS memory_under_predicted,
    coalesce(status = 'failed' AND regexp_matches(coalesce(error, ''), '${OOM_PATTERN}'), false)
        AS out_of_memory
FROM e;

-- Raw prediction error per run. relative_error is the same number as memory_error, kept as a
-- documented alias because queries written against schema 2-6 select it from this view.
CREATE OR REPLACE VIEW run_predictions AS
SELECT
    r.run_id,
    r.predicted_peak_bytes - r.measured_peak_bytes AS error_bytes,
    m.memory_error AS relative_error
FROM runs r JOIN run_memory_checks m USING (run_id);

-- The one definition of learning (in-domain eval loss drop, nats; positive = learned) and
-- forgetting (probe loss rise, nats; positive = forgot).
CREATE OR REPLACE VIEW run_learning AS
SELECT
    run_id,
    eval_loss_before - eval_loss_after AS learning,
    forgetting_loss_after - forgetting_loss_before AS forgetting
FROM runs;

-- Each run's planned training settings (recorded into plan_settings.settings at record time by
-- macros.sql's plan_settings_of), one row per run (NULLs where no plan was recorded).
CREATE OR REPLACE VIEW run_settings AS
SELECT
    r.run_id, unnest(s.settings),
    s.settings.per_device_batch_size::BIGINT * s.settings.gradient_accumulation_steps
        * coalesce(s.settings.planned_processes, 1) AS effective_batch
FROM runs r LEFT JOIN plan_settings s USING (run_id);

CREATE OR REPLACE VIEW method_summary AS
SELECT
    r.method, r.model,
    count(*) AS runs,
    count(*) FILTER (WHERE r.status = 'succeeded') AS succeeded,
    avg(m.memory_error) FILTER (WHERE r.status = 'succeeded') AS mean_memory_error,
    avg(abs(m.memory_error)) FILTER (WHERE r.status = 'succeeded') AS mean_abs_memory_error,
    avg(l.learning) FILTER (WHERE r.status = 'succeeded') AS mean_learning,
    avg(l.forgetting) FILTER (WHERE r.status = 'succeeded') AS mean_forgetting,
    avg(r.tokens_per_second) FILTER (WHERE r.status = 'succeeded') AS mean_tokens_per_second
FROM runs r
JOIN run_memory_checks m USING (run_id)
JOIN run_learning l USING (run_id)
GROUP BY r.method, r.model;

-- One row per trial of a comparison or sweep (tuneplan compare / sweep), keyed by (compare_id,
-- run_id): the comparison's own columns only. The trial's method, status, peaks, domain distance
-- and forgetting tolerance are the run's: `JOIN runs USING (run_id)`; learning and forgetting:
-- `JOIN run_learning USING (run_id)`; the axis and value: `JOIN sweep_trials USING (compare_id,
-- run_id)`. Only trials whose run is recorded appear.
CREATE OR REPLACE VIEW comparison_runs AS
SELECT c.compare_id, c.run_id, c.chosen_method, c.created_at
FROM comparisons c SEMI JOIN runs r USING (run_id);

-- The pair audits below read each trial's method, status, peak and learning from runs and
-- run_learning themselves (comparison_runs carries none of them). They pair trials of
-- comparisons whose one axis is the method: in a sweep over method and learning rate at once,
-- a LoRA trial and a full trial may differ in their rate too, so no pair of them is a test.
-- TP023: QLoRA uses less memory than LoRA and learns at least LEARNING_MATCH_SHARE of what it did.
CREATE OR REPLACE VIEW audit_qlora_vs_lora_memory AS
WITH t AS (
    SELECT c.compare_id, r.run_id, r.method, r.status, r.measured_peak_bytes, l.learning
    FROM comparisons c JOIN runs r USING (run_id) JOIN run_learning l USING (run_id)
    WHERE c.axis = 'method'
), p AS (
    SELECT
        q.compare_id, l.run_id AS lora_run_id, q.run_id AS qlora_run_id,
        l.measured_peak_bytes AS lora_measured_bytes, q.measured_peak_bytes AS qlora_measured_bytes,
        l.learning AS lora_learning, q.learning AS qlora_learning,
        q.measured_peak_bytes < l.measured_peak_bytes AS qlora_less_memory,
        CASE WHEN l.learning > 0 THEN q.learning >= ${LEARNING_MATCH_SHARE} * l.learning
             ELSE q.learning >= l.learning END AS qlora_learning_matches
    FROM t q
    JOIN t l ON l.compare_id = q.compare_id AND l.method = 'lora'
    WHERE q.method = 'qlora' AND q.status = 'succeeded' AND l.status = 'succeeded'
      AND q.measured_peak_bytes > 0 AND l.measured_peak_bytes > 0
)
SELECT *, qlora_less_memory AND qlora_learning_matches AS holds FROM p;

-- TP021: the adapter forgets no more than full fine-tuning. The domain distance and forgetting
-- tolerance are the runs': `JOIN runs r ON r.run_id = adapter_run_id`.
CREATE OR REPLACE VIEW audit_lora_vs_full_forgetting AS
WITH t AS (
    SELECT c.compare_id, r.run_id, r.method, r.status, l.forgetting
    FROM comparisons c JOIN runs r USING (run_id) JOIN run_learning l USING (run_id)
    WHERE c.axis = 'method'
)
SELECT
    a.compare_id, a.method AS adapter_method,
    a.run_id AS adapter_run_id, f.run_id AS full_run_id,
    a.forgetting AS adapter_forgetting, f.forgetting AS full_forgetting,
    a.forgetting <= f.forgetting AS lora_forgets_less
FROM t a
JOIN t f ON f.compare_id = a.compare_id AND f.method = 'full'
WHERE a.method IN ('lora', 'qlora') AND a.status = 'succeeded' AND f.status = 'succeeded'
  AND a.forgetting IS NOT NULL AND f.forgetting IS NOT NULL;

-- TP020: full fine-tuning learns more than the adapter (a promise on far domains: far_domain is
-- the adapter run's domain_distance = 'far').
CREATE OR REPLACE VIEW audit_lora_vs_full_learning AS
WITH t AS (
    SELECT c.compare_id, r.run_id, r.method, r.status, r.domain_distance, l.learning
    FROM comparisons c JOIN runs r USING (run_id) JOIN run_learning l USING (run_id)
    WHERE c.axis = 'method'
)
SELECT
    a.compare_id, a.domain_distance = 'far' AS far_domain,
    a.method AS adapter_method, a.run_id AS adapter_run_id, f.run_id AS full_run_id,
    a.learning AS adapter_learning, f.learning AS full_learning,
    f.learning > a.learning AS full_learns_more
FROM t a
JOIN t f ON f.compare_id = a.compare_id AND f.method = 'full'
WHERE a.method IN ('lora', 'qlora') AND a.status = 'succeeded' AND f.status = 'succeeded'
  AND a.learning IS NOT NULL AND f.learning IS NOT NULL;

-- TP030 per method and device kind: how often the like-for-like memory promise held.
CREATE OR REPLACE VIEW audit_memory_predictions AS
SELECT
    r.method, r.device_kind,
    count(*) AS runs,
    count(m.memory_error_comparable) AS measured_runs,
    count(*) FILTER (WHERE NOT m.memory_under_predicted) AS within_threshold,
    count(*) FILTER (WHERE NOT m.memory_under_predicted)::DOUBLE
        / nullif(count(m.memory_error_comparable), 0) AS share_within_threshold,
    avg(m.memory_error_comparable) AS mean_memory_error_comparable,
    avg(abs(m.memory_error_comparable)) AS mean_abs_memory_error_comparable,
    count(*) FILTER (WHERE m.out_of_memory AND r.predicted_fits) AS oom_when_predicted_to_fit
FROM runs r JOIN run_memory_checks m USING (run_id)
GROUP BY r.method, r.device_kind;

-- What each trial of a sweep or comparison varied, keyed by (compare_id, run_id): the axis
-- ("method", "learning_rate", "lora_rank", "target_modules" or several joined by ","), the
-- trial's value and the advisor's. The trial's outcome is its run's (`JOIN runs USING (run_id)`:
-- status, eval_loss_after, peaks...), its settings the plan's (`JOIN run_settings USING
-- (run_id)`: learning_rate, lora_rank...). Only trials whose run is recorded appear.
CREATE OR REPLACE VIEW sweep_trials AS
SELECT c.compare_id, c.run_id, c.axis, c.value, c.advised_value
FROM comparisons c SEMI JOIN runs r USING (run_id);

-- TP040: per learning-rate sweep, the best trial's rate (lowest eval loss) against the advised one.
CREATE OR REPLACE VIEW audit_learning_rate AS
WITH ranked AS (
    SELECT t.compare_id, t.advised_value, r.model, r.eval_loss_after, s.learning_rate,
           row_number() OVER (PARTITION BY t.compare_id ORDER BY r.eval_loss_after) AS k
    FROM sweep_trials t JOIN runs r USING (run_id) LEFT JOIN run_settings s USING (run_id)
    WHERE t.axis = 'learning_rate' AND r.status = 'succeeded' AND r.eval_loss_after IS NOT NULL
)
SELECT
    compare_id, model, count(*) AS trials,
    TRY_CAST(any_value(advised_value) AS DOUBLE) AS advised_learning_rate,
    max(learning_rate) FILTER (WHERE k = 1) AS best_learning_rate,
    min(eval_loss_after) AS best_eval_loss,
    max(learning_rate) FILTER (WHERE k = 1) / TRY_CAST(any_value(advised_value) AS DOUBLE) AS ratio,
    max(learning_rate) FILTER (WHERE k = 1) / TRY_CAST(any_value(advised_value) AS DOUBLE)
        BETWEEN 0.5 AND 2.0 AS within_2x
FROM ranked
GROUP BY compare_id, model
HAVING count(*) >= 2;

-- Evaluation during training (training.eval_every_steps): one row per evaluated step, keyed by
-- (run_id, step): the step's eval and probe loss (the metrics row's) and the learning (eval loss
-- drop since before training) and forgetting (probe loss rise) at that step, as run_learning
-- defines them for the whole run: the learning-vs-forgetting curve `tuneplan report` draws.
CREATE OR REPLACE VIEW run_eval_steps AS
SELECT
    m.run_id, m.step, m.eval_loss, m.probe_loss,
    r.eval_loss_before - m.eval_loss AS step_learning,
    m.probe_loss - r.forgetting_loss_before AS step_forgetting,
    coalesce(m.step = r.best_step, false) AS is_best_step
FROM metrics m
JOIN runs r USING (run_id)
WHERE m.eval_loss IS NOT NULL OR m.probe_loss IS NOT NULL;

-- Per run evaluated during training: how many evaluations, and the learning and forgetting at
-- its best step (runs.best_step / eval_loss_best, the lowest eval loss; runs.early_stopped says
-- whether it stopped there).
CREATE OR REPLACE VIEW run_best_eval AS
SELECT
    r.run_id,
    count(m.eval_loss) AS evaluations,
    any_value(r.eval_loss_before) - any_value(r.eval_loss_best) AS best_learning,
    max(m.probe_loss) FILTER (WHERE m.step = r.best_step) - any_value(r.forgetting_loss_before)
        AS forgetting_at_best
FROM runs r
JOIN metrics m USING (run_id)
WHERE m.eval_loss IS NOT NULL
GROUP BY r.run_id;
