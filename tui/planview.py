"""The plan pane: the live recommendation beside the questions.

What to fix first (with the last valid plan kept below it), the method and whether it fits, the
ways out of an infeasible plan before anything else, the settings, the three methods' memory
bars on one scale, the rules that fired, the warnings and the alternatives.
"""

from __future__ import annotations

from typing import Callable, Optional

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from tuneplan.base.errors import Problem

from .messages import problem_lines

GIB = 1024**3
BAR_WIDTH = 24


def memory_bars(plan, width: int = BAR_WIDTH, narrow: bool = False) -> Text:
    """The three methods' peaks on ONE scale (the largest method or the card, whichever is
    bigger), names in a fixed column so the chosen marker never shifts a bar, and the usable
    line (the card less the headroom the plan keeps free) drawn as ┃ on every bar."""
    from tuneplan.advisor.render import METHOD_LABEL, method_rows

    cap = plan.memory.device_capacity_bytes
    usable = plan.memory.usable_bytes
    rows = method_rows(plan)
    scale = max([cap] + [r["bytes"] for r in rows])
    u = min(width - 1, round(width * usable / scale))
    text = Text()
    text.append("Peak memory per device", style="bold")
    text.append(f" · usable {usable / GIB:.1f} of {cap / GIB:.1f} GiB (┃)\n")
    for r in rows:
        colour = "green" if r["fits"] else "red"
        text.append("▶ " if r["chosen"] else "  ", style="bold")
        text.append(f"{METHOD_LABEL[r['method']]:<8}", style="bold" if r["chosen"] else "")
        filled = round(width * r["bytes"] / scale)
        for i in range(width):
            if i == u:
                text.append("┃", style="bold yellow")
            else:
                text.append("█" if i < filled else "·", style=colour if i < filled else "dim")
        if narrow:  # 80 columns: the pane is half of it
            text.append(f" {r['bytes'] / GIB:6.1f}G ")
            text.append("✓" if r["fits"] else "✗", style=colour)
        else:
            text.append(f" {r['bytes'] / GIB:7.1f} GiB ")
            text.append(f"{'fits' if r['fits'] else 'too big':<7}", style=colour)
        text.append("\n")
    return text


class PlanView(VerticalScroll):
    """The recommendation pane (id "recommendation"); `show` redraws it from a plan and problems."""

    PARTS = ("rec-status", "rec-method", "rec-ways", "rec-details", "rec-bars", "rec-rules", "rec-warnings")

    def compose(self) -> ComposeResult:
        for wid in self.PARTS:
            yield Static("", id=wid)

    def _part(self, wid: str) -> Static:
        return self.query_one(f"#{wid}", Static)

    def show(
        self,
        plan,
        problems: list[Problem],
        visible: Callable[[str], bool],
        field_for: Callable[[str], Optional[str]],
    ) -> None:
        """Problems first (visible(field id): whether that question's problem shows yet), then
        the plan, or nothing while there has never been a valid one."""
        status = self._part("rec-status")
        if problems:
            missing = all(not visible(field_for(p.where) or "hw") for p in problems)
            head = (
                "Answer the questions to see a plan:"
                if missing and plan is None
                else f"Fix {len(problems)} problem{'s' if len(problems) != 1 else ''}"
                + (" (the plan below is from the last valid answers):" if plan else ":")
            )
            status.update(Text(head, style="bold yellow") + problem_lines(problems))
            status.display = True
            status.set_class(not missing or plan is not None, "stale")
        else:
            status.update("")
            status.display = False
        if plan is None:
            for wid in ("rec-method", "rec-details", "rec-bars", "rec-rules", "rec-warnings"):
                self._part(wid).update("")
            return
        self.render_plan(plan)

    def render_plan(self, plan) -> None:
        from tuneplan.advisor.render import METHOD_LABEL

        hw = plan.inputs.hardware
        head = Text()
        head.append(
            f"Method: {METHOD_LABEL[plan.method]}",
            style="bold reverse " + ("green" if plan.feasible else "red"),
        )
        head.append(
            "  fits" if plan.feasible else "  does not fit", style="green" if plan.feasible else "bold red"
        )
        head.append(f"\n{plan.inputs.model.name} on {f'{hw.count}× ' if hw.count > 1 else ''}{hw.name}")
        self._part("rec-method").update(head)

        t, lora = plan.training, plan.lora
        lines = [f"learning rate {t.learning_rate:g} ({t.lr_scheduler}, warmup {t.warmup_ratio:g})"]
        if lora:
            lines.append(f"rank {lora.rank}, alpha {lora.alpha:g} ({lora.alpha_convention})")
            lines.append(f"targets {', '.join(lora.target_modules)}")
        else:
            lines.append("all weights train (no adapter)")
        if plan.quantization:
            q = plan.quantization
            lines.append(f"base in {q.quant_type.upper()} {q.bits}-bit, compute {q.compute_dtype}")
        lines.append(
            f"micro-batch {t.per_device_batch_size} × accumulation "
            f"{t.gradient_accumulation_steps}, seq {t.seq_len}"
        )
        lines.append(
            f"{t.precision}, {t.optimizer}, checkpointing "
            f"{'on' if t.gradient_checkpointing else 'off'}, attention {t.attention}"
        )
        if plan.distributed.num_processes > 1:
            lines.append(f"{plan.distributed.num_processes} processes, {plan.distributed.strategy}")
        self._part("rec-details").update(Text("\n".join(f"• {x}" for x in lines)))

        room = self.content_region.width or 80
        narrow = room < 30 + BAR_WIDTH
        width = max(6, min(BAR_WIDTH, room - (22 if narrow else 33)))  # less a scrollbar
        self._part("rec-bars").update(memory_bars(plan, width, narrow))

        rules = Text()
        rules.append("Rules that fired", style="bold")
        for d in plan.decisions:
            rules.append(f"\n{d.rule} ", style="bold cyan")
            rules.append(f"{d.name}: ", style="cyan")
            rules.append(d.message)
        self._part("rec-rules").update(rules)

        warn = Text()
        if plan.warnings:
            warn.append("Warnings", style="bold yellow")
            for w in plan.warnings:
                warn.append(f"\n! {w}")
        ways = Text()
        if plan.ways_out:  # an infeasible plan leads with what would make it fit
            ways.append("Nothing fits. Ways out:", style="bold red")
            for w in plan.ways_out:
                ways.append(f"\n→ {w}")
        ways_box = self._part("rec-ways")
        ways_box.update(ways)
        ways_box.display = bool(plan.ways_out)
        for a in plan.alternatives:
            warn.append(f"\n{METHOD_LABEL[a.method]}: {a.reason}", style="dim")
        self._part("rec-warnings").update(warn)
