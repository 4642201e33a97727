"""The estimator's settings read back from a plan's own fields (pure: pydantic schemas only).

A plan carries the settings its estimate assumed (memory.settings); a plan edited by hand may no
longer match them. settings_of_plan rebuilds them from training / lora / quantization /
distributed, so a plan field (training.loss_chunk_size, training.activation_offload,
quantization.kbit_upcast, lora.dropout, ...) is priced exactly as the executor will run it.
"""

from __future__ import annotations

from tuneplan.schemas import MemorySettings, Plan


def settings_of_plan(plan: Plan) -> MemorySettings:
    """MemorySettings for `plan` as written (training, lora, quantization and distributed fields)."""
    t, lora, q, dist = plan.training, plan.lora, plan.quantization, plan.distributed
    return MemorySettings(
        method=plan.method,
        precision=t.precision,
        optimizer=t.optimizer,
        gradient_checkpointing=t.gradient_checkpointing,
        attention=t.attention,
        micro_batch=t.per_device_batch_size,
        seq_len=t.seq_len,
        lora_rank=lora.rank if lora else None,
        target_modules=list(lora.target_modules) if lora else None,
        strategy=dist.strategy,
        num_devices=dist.num_processes,
        cpu_offload=dist.cpu_offload,
        lora_dropout=lora.dropout if lora else None,
        double_quant=q.double_quant if q else True,
        loss_chunk_size=t.loss_chunk_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        kbit_upcast=q.kbit_upcast if q else True,
        activation_offload=t.activation_offload,
    )


__all__ = ["settings_of_plan"]
