-- The one place the plan JSON blob is read: what the ledger records from a run's plan.json.
-- Re-created (CREATE OR REPLACE) by every writable connection before migrations run, and used at
-- record time (record.py's upsert) and by migration 7's back-fill, so a recorded column and a
-- back-filled one are the same function of the plan.

-- plan.memory.breakdown.framework_overhead (runtime / CUDA context, allocator fragmentation):
-- the term the like-for-like memory comparison takes off the prediction. 0 when absent.
CREATE OR REPLACE MACRO plan_overhead_bytes(plan) AS
    coalesce(TRY_CAST(json_extract_string(plan, '$.memory.breakdown.framework_overhead') AS BIGINT), 0);

-- plan.inputs.hardware.name: the device the plan was made for ("H200 SXM 141GB", "cpu"), next to
-- runs.hardware, the device the run really used as the executor described it.
CREATE OR REPLACE MACRO plan_hardware(plan) AS
    json_extract_string(plan, '$.inputs.hardware.name');

-- plan.inputs.distance.measure_id: the distance_measurements row (migration 8) a plan written by
-- `advise --measure-distance` was advised from; NULL for a declared distance.
CREATE OR REPLACE MACRO plan_measure_id(plan) AS
    json_extract_string(plan, '$.inputs.distance.measure_id');

-- The plan's training settings, in the column order of the plan_settings table (migration 7).
CREATE OR REPLACE MACRO plan_settings_of(plan) AS struct_pack(
    planned_method := json_extract_string(plan, '$.method'),
    planned_model := json_extract_string(plan, '$.inputs.model.name'),
    learning_rate := TRY_CAST(json_extract_string(plan, '$.training.learning_rate') AS DOUBLE),
    lr_scheduler := json_extract_string(plan, '$.training.lr_scheduler'),
    warmup_ratio := TRY_CAST(json_extract_string(plan, '$.training.warmup_ratio') AS DOUBLE),
    num_epochs := TRY_CAST(json_extract_string(plan, '$.training.num_epochs') AS DOUBLE),
    max_steps := TRY_CAST(json_extract_string(plan, '$.training.max_steps') AS BIGINT),
    lora_rank := TRY_CAST(json_extract_string(plan, '$.lora.rank') AS INTEGER),
    lora_alpha := TRY_CAST(json_extract_string(plan, '$.lora.alpha') AS DOUBLE),
    lora_dropout := TRY_CAST(json_extract_string(plan, '$.lora.dropout') AS DOUBLE),
    target_modules := from_json(json_extract(plan, '$.lora.target_modules'), '["VARCHAR"]'),
    use_rslora := TRY_CAST(json_extract_string(plan, '$.lora.use_rslora') AS BOOLEAN),
    quant_type := json_extract_string(plan, '$.quantization.quant_type'),
    seq_len := TRY_CAST(json_extract_string(plan, '$.training.seq_len') AS INTEGER),
    per_device_batch_size := TRY_CAST(json_extract_string(plan, '$.training.per_device_batch_size') AS INTEGER),
    gradient_accumulation_steps := TRY_CAST(json_extract_string(plan, '$.training.gradient_accumulation_steps') AS INTEGER),
    precision := json_extract_string(plan, '$.training.precision'),
    optimizer := json_extract_string(plan, '$.training.optimizer'),
    weight_decay := TRY_CAST(json_extract_string(plan, '$.training.weight_decay') AS DOUBLE),
    max_grad_norm := TRY_CAST(json_extract_string(plan, '$.training.max_grad_norm') AS DOUBLE),
    gradient_checkpointing := TRY_CAST(json_extract_string(plan, '$.training.gradient_checkpointing') AS BOOLEAN),
    attention := json_extract_string(plan, '$.training.attention'),
    seed := TRY_CAST(json_extract_string(plan, '$.training.seed') AS BIGINT),
    planned_strategy := json_extract_string(plan, '$.distributed.strategy'),
    planned_processes := TRY_CAST(json_extract_string(plan, '$.distributed.num_processes') AS INTEGER),
    planned_nodes := TRY_CAST(json_extract_string(plan, '$.distributed.num_nodes') AS INTEGER),
    planned_hardware_kind := json_extract_string(plan, '$.inputs.hardware.kind'),
    planned_gpu := json_extract_string(plan, '$.inputs.hardware.name'),
    planned_device_memory_bytes := TRY_CAST(json_extract_string(plan, '$.inputs.hardware.memory_bytes') AS BIGINT),
    domain_label := json_extract_string(plan, '$.inputs.task.domain_label')
);
