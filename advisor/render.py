"""Render a plan for people: chosen method, the three methods against the card, rules, warnings.

rich is imported here only, and only when a person (not --json) asked for the plan.
"""

from __future__ import annotations

from typing import Any, Optional

from tuneplan.schemas import Plan

GIB = 1024**3
BAR_WIDTH = 14

METHOD_LABEL = {"full": "Full FT", "lora": "LoRA", "qlora": "QLoRA"}


def method_rows(plan: Plan) -> list[dict[str, Any]]:
    """One row per method (chosen first): bytes, fits, capacity, whether chosen."""
    rows = [
        {
            "method": plan.method,
            "bytes": plan.memory.per_device_bytes,
            "fits": plan.memory.fits,
            "chosen": True,
            "breakdown": plan.memory.breakdown,
        }
    ]
    for a in plan.alternatives:
        rows.append(
            {
                "method": a.method,
                "bytes": a.per_device_bytes,
                "fits": a.fits,
                "chosen": False,
                "breakdown": a.estimate.breakdown,
            }
        )
    order = {"full": 0, "lora": 1, "qlora": 2}
    return sorted(rows, key=lambda r: order[r["method"]])


def bar(value: int, capacity: int, width: int = BAR_WIDTH) -> str:
    """A text bar of value against capacity; '|' marks the capacity when value exceeds it."""
    scale = max(value, capacity)
    filled = round(width * value / scale) if scale else 0
    cap_pos = round(width * capacity / scale) if scale else width
    cells = ["█" if i < filled else "·" for i in range(width)]
    if value > capacity and cap_pos < width:
        cells[cap_pos] = "|"
    return "".join(cells)


def print_plan(plan: Plan, written_to: Optional[str] = None, console: Any = None) -> None:
    """Print the plan for people on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    inp = plan.inputs
    hw = inp.hardware
    devices = f"{hw.count}x " if hw.count > 1 else ""
    status = "[green]fits[/]" if plan.feasible else "[red]does not fit[/]"
    console.print(
        f"[bold]tuneplan[/] — {inp.model.name} ({inp.model.total_params / 1e9:.2f}B) on "
        f"{devices}{hw.name} ({hw.memory_bytes / GIB:.1f} GiB), {inp.task.domain_distance} "
        f"domain, {inp.task.forgetting_tolerance} forgetting tolerance"
    )
    t = plan.training
    lora = plan.lora
    head = f"[bold]Method: {METHOD_LABEL[plan.method]}[/] ({status}: {plan.memory.per_device_bytes / GIB:.2f} GiB per device)"
    console.print(head)
    band = (
        f"; sweep band {', '.join(f'{x:.3g}' for x in t.learning_rate_band)}" if t.learning_rate_band else ""
    )
    details = [
        f"learning rate {t.learning_rate:.3g} ({t.lr_scheduler}, warmup {t.warmup_ratio:g}{band})",
        f"micro-batch {t.per_device_batch_size} x accumulation {t.gradient_accumulation_steps}",
        f"seq {t.seq_len}",
        f"{t.precision}",
        f"optimizer {t.optimizer}",
        f"gradient checkpointing {'on' if t.gradient_checkpointing else 'off'}",
        f"attention {t.attention}",
    ]
    if lora:
        details.insert(
            1,
            f"rank {lora.rank}, alpha {lora.alpha:g} ({lora.alpha_convention}), "
            f"targets {','.join(lora.target_modules)}",
        )
    if plan.quantization:
        q = plan.quantization
        details.append(
            f"{q.quant_type.upper()} {q.bits}-bit, double quant {q.double_quant}, compute {q.compute_dtype}"
        )
    if plan.distributed.num_processes > 1:
        details.append(f"{plan.distributed.num_processes} processes, {plan.distributed.strategy}")
    for line in details:
        console.print(f"  • {line}")

    cap = plan.memory.device_capacity_bytes
    table = Table(title=f"Peak memory per device vs {cap / GIB:.1f} GiB", title_justify="left")
    for col in ("method", "GiB", "", "weights", "grads", "optim", "activ.", "logits", "fits"):
        table.add_column(col, justify="right" if col not in ("method", "") else "left")
    for r in method_rows(plan):
        b = r["breakdown"]
        name = METHOD_LABEL[r["method"]] + (" ◀" if r["chosen"] else "")
        table.add_row(
            name,
            f"{r['bytes'] / GIB:.2f}",
            bar(r["bytes"], cap),
            f"{(b.weights + b.quantization_constants + b.adapter_weights) / GIB:.2f}",
            f"{b.gradients / GIB:.2f}",
            f"{b.optimizer_states / GIB:.2f}",
            f"{b.activations / GIB:.2f}",
            f"{b.logits_and_loss / GIB:.2f}",
            "[green]yes[/]" if r["fits"] else "[red]no[/]",
        )
    console.print(table)
    console.print("[bold]Rules that fired[/]")
    for dcs in plan.decisions:
        console.print(f"  {dcs.rule} [cyan]{dcs.name}[/]: {dcs.message}")
    if plan.warnings:
        console.print("[bold yellow]Warnings[/]")
        for w in plan.warnings:
            console.print(f"  ! {w}")
    if plan.ways_out:
        console.print("[bold red]Ways out[/]")
        for w in plan.ways_out:
            console.print(f"  → {w}")
    for a in plan.alternatives:
        console.print(f"  [dim]{METHOD_LABEL[a.method]}: {a.reason}[/]")
    if written_to:
        console.print(f"Plan written to [bold]{written_to}[/]")
