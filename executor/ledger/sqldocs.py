"""`tuneplan sql --schema`: every table and view of the run database, each column with one line.

Descriptions live here, by column name (the same name means the same thing in every table and view;
TABLE_COLUMN_DOCS overrides where a view gives a name a narrower meaning). The listing itself is
read from the database (duckdb_columns), so it always shows the schema the file really has, and
tests/test_sql_settings.py fails when a table, view or column has no description. Stdlib only.
"""

from __future__ import annotations

TABLE_DOCS = {
    "runs": "one row per run: what was planned, what was measured, and the whole result.json",
    "metrics": "one row per optimizer step of each run (loss, LR, grad norm, tokens, time)",
    "comparisons": "which runs `tuneplan compare` ran side by side (one row per run of a comparison)",
    "schema_migrations": "which schema migrations this database has applied, and when",
    "schema_views": "the hash of the views and macros last created (read-only commands refuse another)",
    "plan_settings": "each run's planned training settings, recorded from its plan at record time (run_settings unnests them)",
    "run_settings": "each run's planned training settings as typed columns (JOIN runs USING (run_id))",
    "run_predictions": "predicted vs measured peak memory per run (raw, framework overhead included)",
    "run_learning": "learning (eval loss drop) and forgetting (probe loss rise) per run",
    "method_summary": "per method and model: run counts and means over succeeded runs",
    "run_memory_checks": "per run: the like-for-like memory comparison `tuneplan check` audits",
    "comparison_runs": "one row per recorded trial of a comparison or sweep: its comparison, the advisor's "
    "method, when (JOIN runs USING (run_id) for method, status, peaks; run_learning for learning)",
    "audit_qlora_vs_lora_memory": "per comparison: did QLoRA use less memory and learn as well as LoRA",
    "audit_lora_vs_full_forgetting": "per comparison: did the adapter forget less than full fine-tuning",
    "audit_lora_vs_full_learning": "per comparison: did full fine-tuning learn more than the adapter",
    "audit_memory_predictions": "per method and device kind: how often the memory promise held",
    "sweep_trials": "one row per recorded trial of a sweep or comparison: what it varied and to what "
    "(JOIN runs USING (run_id) for its outcome, run_settings for its learning rate and rank)",
    "run_eval_steps": "each step evaluated during training (training.eval_every_steps): eval and probe loss, "
    "learning and forgetting at that step (the curve `tuneplan report` draws)",
    "run_best_eval": "per run evaluated during training: evaluations, and learning and forgetting at its "
    "best step (runs.best_step, eval_loss_best, early_stopped)",
    "audit_learning_rate": "per learning-rate sweep: the best trial's rate against the advised one (TP040)",
    "distance_measurements": "one row per measured domain distance (tuneplan measure, advise --measure-distance); "
    "a run joins it through its plan's inputs.distance.measure_id (docs/domain-distance.md)",
}

COLUMN_DOCS = {
    # identity and status
    "run_id": "run identifier (directory name under the runs folder); the join key everywhere",
    "plan_hash": "SHA-256 of the plan the run executed (same hash = same plan)",
    "plan_json": "the plan.json the run executed (JSON)",
    "method": "fine-tuning method that ran: full, lora or qlora",
    "model": "model name as the plan states it (Hub id or local path)",
    "hardware": "the device the run used, as the executor described it (e.g. cuda: NVIDIA H200)",
    "planned_hardware": "the device the plan was made for (plan inputs.hardware.name, e.g. the catalog GPU name)",
    "device_kind": "cpu or cuda",
    "status": "succeeded, failed, interrupted or running",
    "error": "error message of a failed or interrupted run",
    "started_at": "when the run started (UTC)",
    "finished_at": "when the run ended (UTC)",
    "recorded_at": "when this row was last written (UTC)",
    "run_dir": "the run directory (plan.json, result.json, metrics.jsonl, adapter/ or model/)",
    "data_path": "training data file the run read",
    "tuneplan_version": "tuneplan release that ran it",
    "versions": "versions of torch, transformers, peft, bitsandbytes ... at run time (JSON)",
    "result_json": "the whole result.json (JSON), so nothing is lost when the schema grows",
    "trust_remote_code": "whether the model repository's own Python was allowed to run",
    "num_processes": "processes the run used",
    "strategy": "distributed strategy the run used: none, ddp, fsdp, deepspeed-zero2/3",
    "substitutions": "settings the executor changed on this machine, e.g. a paged optimizer on CPU",
    # memory
    "predicted_peak_bytes": "the plan's predicted peak memory per device, bytes",
    "predicted_fits": "whether the plan predicted the run fits the device",
    "measured_peak_bytes": "measured peak memory per device, bytes (CUDA reserved max, or CPU RSS)",
    "params_bytes": "measured bytes of parameters",
    "grads_bytes": "measured bytes of gradients",
    "optimizer_bytes": "measured bytes of optimizer states",
    "saved_tensors_peak_bytes": "measured peak bytes of tensors saved for backward (activations)",
    "cuda_max_allocated_bytes": "torch.cuda.max_memory_allocated, bytes (CUDA only)",
    "cuda_max_reserved_bytes": "torch.cuda.max_memory_reserved, bytes (CUDA only)",
    "rss_peak_bytes": "peak resident set size of the process, bytes",
    "runtime_bytes": "part of the measured peak that is the process runtime (CPU RSS before the model loaded; 0 on CUDA)",
    "predicted_overhead_bytes": "the plan's framework-overhead term, bytes (recorded from the plan at record time)",
    "predicted_comparable_bytes": "predicted peak less the framework-overhead term, bytes",
    "measured_comparable_bytes": "measured peak less runtime_bytes, bytes",
    "error_bytes": "predicted_peak_bytes - measured_peak_bytes",
    "relative_error": "alias of memory_error kept for queries written before schema 7 (the same number)",
    "memory_error": "memory error: (predicted - measured) / measured, raw (negative = under-predicted)",
    "memory_under_predicted": "memory_error_comparable below -25%: the memory promise broke (TP030)",
    "memory_error_comparable": "memory error like-for-like: (predicted less overhead - measured less runtime) / measured less runtime",
    "out_of_memory": "whether the run failed by running out of memory",
    # learning and forgetting
    "eval_loss_before": "in-domain eval loss before training",
    "eval_loss_after": "in-domain eval loss after training",
    "learning": "eval_loss_before - eval_loss_after (larger = learned more)",
    "forgetting_loss_before": "loss on the general-text probe before training",
    "forgetting_loss_after": "loss on the general-text probe after training",
    "forgetting": "forgetting_loss_after - forgetting_loss_before (larger = forgot more)",
    "forgetting_tolerance": "the plan's forgetting tolerance: low, medium or high",
    "domain_distance": "the plan's domain distance: near, moderate or far",
    # speed and size
    "steps": "optimizer steps run",
    "tokens": "trained (loss-bearing) tokens",
    "tokens_per_second": "trained tokens per second of training",
    "wall_seconds": "wall-clock seconds of the whole run",
    "trainable_params": "parameters that received gradients",
    "total_params": "all parameters of the loaded model",
    "artifact_path": "saved adapter/ or model/ directory",
    "artifact_bytes": "bytes of the saved artefact",
    # metrics
    "step": "optimizer step (1-based)",
    "loss": "mean training loss of the step's trained tokens",
    "lr": "learning rate at the step",
    "grad_norm": "gradient L2 norm before clipping",
    "elapsed_s": "seconds since training started",
    # comparisons and audits
    "compare_id": "identifier of one `tuneplan compare` invocation",
    "chosen_method": "the method the advisor chose in that comparison",
    "created_at": "when the comparison was recorded (UTC)",
    "lora_run_id": "the LoRA run of the comparison",
    "qlora_run_id": "the QLoRA run of the comparison",
    "adapter_run_id": "the LoRA or QLoRA run of the comparison",
    "full_run_id": "the full fine-tuning run of the comparison",
    "adapter_method": "lora or qlora",
    "lora_measured_bytes": "measured peak of the LoRA run, bytes",
    "qlora_measured_bytes": "measured peak of the QLoRA run, bytes",
    "lora_learning": "learning of the LoRA run",
    "qlora_learning": "learning of the QLoRA run",
    "adapter_learning": "learning of the adapter run",
    "full_learning": "learning of the full run",
    "adapter_forgetting": "forgetting of the adapter run",
    "full_forgetting": "forgetting of the full run",
    "qlora_less_memory": "QLoRA measured less peak memory than LoRA",
    "qlora_learning_matches": "QLoRA learned at least 80% of what LoRA learned (TP023)",
    "holds": "the QLoRA promise held: less memory and matching learning",
    "lora_forgets_less": "the adapter forgot no more than full fine-tuning",
    "full_learns_more": "full fine-tuning learned more than the adapter",
    "far_domain": "the adapter run's domain distance is far (runs.domain_distance = 'far')",
    # summaries
    "runs": "number of runs",
    "succeeded": "number of succeeded runs",
    "measured_runs": "runs with a measured peak",
    "within_threshold": "runs whose like-for-like memory error is above -25% (the promise held)",
    "share_within_threshold": "within_threshold / measured_runs",
    "mean_memory_error": "mean raw memory error over succeeded runs",
    "mean_abs_memory_error": "mean absolute raw memory error over succeeded runs",
    "mean_memory_error_comparable": "mean like-for-like memory error",
    "mean_abs_memory_error_comparable": "mean absolute like-for-like memory error",
    "oom_when_predicted_to_fit": "runs that ran out of memory although predicted to fit",
    "mean_learning": "mean learning over succeeded runs",
    "mean_forgetting": "mean forgetting over succeeded runs",
    "mean_tokens_per_second": "mean training speed over succeeded runs",
    # sweeps
    "axis": "what a sweep varied: method, learning_rate, lora_rank, target_modules (several joined by ,)",
    "value": "this trial's value on the axis, as text",
    "advised_value": "the advisor's value on that axis, as text",
    "trials": "trials of the sweep that succeeded with an eval loss",
    "advised_learning_rate": "the learning rate the advisor chose",
    "best_learning_rate": "the learning rate of the trial with the lowest eval loss after training",
    "best_eval_loss": "the lowest eval loss after training among the trials",
    "eval_loss_best": "the lowest eval loss during training (training.eval_every_steps), at best_step",
    "best_step": "the optimizer step with the lowest eval loss during training (null: never evaluated)",
    "early_stopped": "stopped by training.early_stop_patience: eval loss had not improved (the run still succeeds)",
    "stop_reason": "why training ended before its planned steps (signal, early stop, failed checkpoint); null: it ran them all",
    "eval_loss": "eval loss at this step (null: not an evaluated step; training.eval_every_steps)",
    "probe_loss": "general-text probe loss at this step (null: not an evaluated step)",
    "trained_tokens": "loss-bearing tokens of the step (prompts and padding excluded; rank 0's in a multi-process run)",
    "positions": "batch positions of the step, padding included (rank 0's in a multi-process run); 1 - tokens / positions is the padding share of a one-process run",
    "evaluations": "steps evaluated during training",
    "is_best_step": "whether this is the run's best step (lowest eval loss)",
    "step_learning": "eval_loss_before - eval_loss at this step (larger = learned more)",
    "step_forgetting": "probe_loss at this step - forgetting_loss_before (larger = forgot more)",
    "best_learning": "eval_loss_before - eval_loss_best: learning at the best step",
    "forgetting_at_best": "probe loss at the best step - forgetting_loss_before: forgetting there",
    "ratio": "best_learning_rate / advised_learning_rate",
    "within_2x": "the best rate is within a factor 2 of the advised one (TP040's promise)",
    # schema_migrations
    "version": "migration number",
    "applied_at": "when it was applied (UTC)",
    # schema_views, plan_settings
    "hash": "hash of macros.sql and views.sql as created",
    "settings": "the planned settings as one STRUCT (the columns of run_settings)",
    # run_settings
    "planned_method": "method in the plan (full, lora, qlora)",
    "planned_model": "model name in the plan",
    "learning_rate": "planned peak learning rate",
    "lr_scheduler": "planned schedule after warmup: cosine, linear, constant, constant_with_warmup",
    "warmup_ratio": "planned share of steps spent warming up",
    "num_epochs": "planned passes over the data (null when max_steps is set)",
    "max_steps": "planned optimizer steps (null when num_epochs is set)",
    "lora_rank": "LoRA rank r (null for full)",
    "lora_alpha": "LoRA alpha (update scaled by alpha / r)",
    "lora_dropout": "dropout on the adapter input",
    "target_modules": "module names the adapters wrap (VARCHAR[])",
    "use_rslora": "whether rank-stabilised scaling alpha / sqrt(r) is used",
    "quant_type": "4-bit storage type of the frozen base for qlora (nf4, fp4)",
    "seq_len": "planned tokens per sequence",
    "per_device_batch_size": "planned sequences per device per micro-batch",
    "gradient_accumulation_steps": "planned micro-batches per optimizer step",
    "effective_batch": "per_device_batch_size x gradient_accumulation_steps x processes",
    "precision": "planned precision: bf16-mixed, bf16, fp16-mixed, fp32",
    "optimizer": "planned optimizer: adamw, adamw-8bit, paged-adamw-8bit, paged-adamw-32bit",
    "weight_decay": "planned AdamW weight decay",
    "max_grad_norm": "planned gradient clipping threshold",
    "gradient_checkpointing": "whether activations are recomputed in backward",
    "attention": "planned attention kernel: eager, sdpa, flash",
    "seed": "planned random seed",
    "planned_strategy": "distributed strategy in the plan",
    "planned_processes": "processes in the plan",
    "planned_nodes": "machines in the plan",
    "planned_hardware_kind": "gpu or cpu, as planned",
    "planned_gpu": "the planned device's name (catalog GPU name, or the CPU name)",
    "planned_device_memory_bytes": "memory of one planned device, bytes",
    "domain_label": "the plan's domain label (code, math, chat, ...)",
}

TABLE_COLUMN_DOCS: dict[tuple[str, str], str] = {
    ("method_summary", "method"): "fine-tuning method (one row per method and model)",
    ("metrics", "tokens"): "non-padding tokens of the step, prompts included (summed over processes)",
    ("audit_memory_predictions", "runs"): "runs of this method on this device kind",
    ("comparisons", "method"): "method of this run within the comparison",
    ("schema_views", "created_at"): "when a writable connection last created the views (UTC)",
    ("distance_measurements", "measure_id"): "measurement id; the plan's inputs.distance.measure_id",
    ("distance_measurements", "measured_at"): "when the measurement was recorded (UTC)",
    ("distance_measurements", "plan_model"): "the model the distance is for (the plan's model)",
    ("distance_measurements", "model"): "the model measured on (the proxy when proxy is true)",
    (
        "distance_measurements",
        "proxy",
    ): "true when a smaller model of the same family stood in (--proxy-model)",
    (
        "distance_measurements",
        "data",
    ): "the data measured: a file path, or reference:<task> for a shipped reference task",
    ("distance_measurements", "data_sha256"): "SHA-256 of the data file (null for reference tasks)",
    (
        "distance_measurements",
        "plan_hash",
    ): "hash of the plan advise wrote with this measurement (joins runs.plan_hash; null for tuneplan measure)",
    ("distance_measurements", "device"): "where it ran: cpu, cuda:0, ...",
    ("distance_measurements", "load"): "how the weights were loaded: fp32, bf16 or 4bit",
    ("distance_measurements", "rows"): "rows the signals were read on",
    ("distance_measurements", "target_tokens"): "target (loss-bearing) tokens the fit was read on",
    ("distance_measurements", "micro_batches"): "micro-batches the gradient was accumulated over",
    ("distance_measurements", "tokens_per_batch"): "target tokens each micro-batch was filled to",
    ("distance_measurements", "target_loss"): "base model's mean loss per target token, nats",
    (
        "distance_measurements",
        "probe_loss",
    ): "base model's mean loss per token of the general-text probe, nats",
    ("distance_measurements", "loss_ratio"): "target_loss / probe_loss",
    (
        "distance_measurements",
        "high_loss_share",
    ): "fit signal: share of target tokens above high_loss_nats (2.3), 0..1",
    (
        "distance_measurements",
        "mean_rank_90_share",
    ): "update-rank signal: mean over sampled layers of rank holding 90% of gradient energy / min(out, in)",
    (
        "distance_measurements",
        "median_rank_90",
    ): "median over sampled layers of the rank holding 90% of gradient energy",
    ("distance_measurements", "max_rank_90"): "largest per-layer rank holding 90% of gradient energy",
    (
        "distance_measurements",
        "lora_rank",
    ): "the LoRA rank the captured energy is read at (the plan's, else 16)",
    (
        "distance_measurements",
        "energy_at_lora_rank",
    ): "mean over sampled layers of the gradient energy share lora_rank captures, 0..1",
    (
        "distance_measurements",
        "score",
    ): "distance score: mean of the two signals each over its far threshold (orders tasks)",
    ("distance_measurements", "verdict"): "measured distance: near, moderate or far",
    ("distance_measurements", "rank_verdict"): "what the update-rank signal alone says",
    ("distance_measurements", "fit_verdict"): "what the fit signal alone says",
    ("distance_measurements", "declared"): "the user's --domain, if one was given",
    (
        "distance_measurements",
        "source",
    ): "declared (the user's --domain kept) or measured (the verdict set the plan's distance)",
    ("distance_measurements", "thresholds"): "which thresholds gave the verdict (version)",
    ("distance_measurements", "seconds"): "wall time of the measurement, model load included",
    (
        "distance_measurements",
        "pilot_steps",
    ): "--pilot-steps: steps of the LoRA-vs-full pilot (null: no pilot)",
    ("distance_measurements", "pilot_full_drop"): "pilot: full fine-tuning's eval-loss drop, nats",
    ("distance_measurements", "pilot_lora_drop"): "pilot: LoRA's eval-loss drop over the same steps, nats",
    (
        "distance_measurements",
        "pilot_share",
    ): "pilot_lora_drop / pilot_full_drop (null when full's drop is under 0.02 nats or a run failed)",
    (
        "distance_measurements",
        "pilot_verdict",
    ): "what the pilot alone says: near, moderate, far (null: inconclusive)",
    ("distance_measurements", "pilot_compare_id"): "the pilot's comparison (comparisons.compare_id)",
    ("distance_measurements", "pilot_full_run_id"): "the pilot's full fine-tuning run (runs.run_id)",
    ("distance_measurements", "pilot_lora_run_id"): "the pilot's LoRA run (runs.run_id)",
    (
        "distance_measurements",
        "evidence_json",
    ): "the full evidence (the plan's inputs.distance, per-layer ranks included), JSON",
}


def describe(table: str, column: str) -> str:
    """One line for a column of a table or view ("" when undocumented)."""
    return TABLE_COLUMN_DOCS.get((table, column)) or COLUMN_DOCS.get(column, "")


def render_schema(rows: list[tuple[str, str, str, str]], fmt: str = "text") -> str:
    """rows: (table, kind, column, type) in order -> the --schema listing (text, markdown or json)."""
    import json

    tables: dict[str, dict] = {}
    for table, kind, column, dtype in rows:
        t = tables.setdefault(
            table, {"name": table, "kind": kind, "description": TABLE_DOCS.get(table, ""), "columns": []}
        )
        t["columns"].append({"name": column, "type": dtype, "description": describe(table, column)})
    if fmt == "json":
        return json.dumps(list(tables.values()), indent=2) + "\n"
    out: list[str] = []
    for t in tables.values():
        if fmt == "markdown":
            out += [
                f"### `{t['name']}` ({t['kind'].lower()})",
                "",
                t["description"],
                "",
                "| column | type | meaning |",
                "|---|---|---|",
            ]
            out += [f"| `{c['name']}` | {c['type']} | {c['description']} |" for c in t["columns"]]
            out.append("")
        else:
            out.append(f"{t['name']}  ({t['kind'].lower()}) - {t['description']}")
            width = max(len(c["name"]) for c in t["columns"])
            out += [f"  {c['name']:<{width}}  {c['type']:<10} {c['description']}" for c in t["columns"]]
            out.append("")
    return "\n".join(out)
