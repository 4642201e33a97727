"""One pre-flight for `tuneplan validate`, `tuneplan run --dry-run` and `tuneplan run`.

Run before anything is created (no run directory, no database row), torch-free. It collects every
problem at once and raises :class:`InputError` (exit 2), each naming the field or ``file:line``
and a fix; an infeasible plan raises :class:`Infeasible` (exit 3). Checks, in order:

- the plan file: readable UTF-8, JSON (nesting depth bounded), an object, valid against the schema;
- ``schema_version`` is one this tuneplan knows;
- ``training.seed`` >= 0 (torch and numpy seeds are unsigned);
- the memory block agrees with the plan (method, precision, optimizer, checkpointing, attention,
  micro-batch, sequence length, LoRA rank) and with a re-estimate of its own settings
  (advisor/estimator/) within :data:`MEMORY_TOLERANCE`; ``fits`` agrees with the bytes;
  unknown LoRA target modules are found there (the estimator resolves them on the architecture);
- feasibility (``feasible`` false: exit 3);
- data files (when given or named by the plan): every row well-formed (executor/data.py: shapes,
  chat roles in order), and, when the model's own tokenizer is on this machine
  (advisor/datastats.py), at least one row with a trained token within ``training.seq_len``;
- the model at ``--model-path`` (or a local directory named by the plan) has the plan's
  architecture and size (config.json against ``inputs.model``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tuneplan.base.errors import InputError, Problem
from tuneplan.base.fileio import read_json_file
from tuneplan.base.planio import KNOWN_SCHEMA_VERSIONS, LoadedPlan, read_plan  # noqa: F401 - re-exported

MEMORY_TOLERANCE = 0.01
"""A plan's per_device_bytes may differ from the re-estimate by this fraction (1%) before it is
refused: estimator refinements between tuneplan versions move figures by less than that."""


class Infeasible(Exception):
    """The plan says it cannot run on its hardware (exit 3)."""


@dataclass
class Checked:
    """What the pre-flight read, for the caller to use without reading it again."""

    plan: object
    plan_file: Optional[Path] = None
    plan_text: Optional[str] = None
    train_path: Optional[Path] = None
    train_read: object = None
    eval_read: object = None
    model_dir: Optional[Path] = None
    notes: list[str] = field(default_factory=list)


def load_plan_file(plan) -> tuple[object, Optional[Path], Optional[str]]:
    """(plan, file, text) from a Plan, a path (base/planio.py's one reader) or a LoadedPlan
    already read (not read again)."""
    loaded = plan if isinstance(plan, LoadedPlan) else read_plan(plan)
    return loaded.plan, loaded.path, loaded.text


def plan_problems(plan) -> list[Problem]:
    """Contradictions inside a schema-valid plan (seed, memory block, LoRA targets)."""
    from tuneplan.advisor.estimator import estimate

    out: list[Problem] = []
    t, mem = plan.training, plan.memory
    if t.seed < 0:
        out.append(Problem("training.seed", f"must be >= 0, got {t.seed}", "use a seed such as 0 or 1234"))
    st = mem.settings
    pairs = [
        ("method", plan.method, st.method, mem.method),
        ("precision", t.precision, st.precision, None),
        ("optimizer", t.optimizer, st.optimizer, None),
        ("gradient_checkpointing", t.gradient_checkpointing, st.gradient_checkpointing, None),
        ("attention", t.attention, st.attention, None),
        ("per_device_batch_size", t.per_device_batch_size, st.micro_batch, None),
        ("seq_len", t.seq_len, st.seq_len, None),
    ]
    for name, want, got, also in pairs:
        if got != want or (also is not None and also != want):
            where = "method" if name == "method" else f"training.{name}"
            out.append(
                Problem(
                    f"memory.settings ({where})",
                    f"the memory block was estimated for {got!r} but the plan says {want!r}",
                    "write the plan again with `tuneplan advise` (pin the value you want)",
                )
            )
    if plan.lora is not None and st.lora_rank is not None and st.lora_rank != plan.lora.rank:
        out.append(
            Problem(
                "memory.settings.lora_rank",
                f"estimated for rank {st.lora_rank}, plan's lora.rank is {plan.lora.rank}",
                "write the plan again with `tuneplan advise`",
            )
        )
    if plan.lora is not None:
        from tuneplan.advisor.modelspec import resolve_targets

        try:
            resolve_targets(plan.inputs.model, list(plan.lora.target_modules))
        except ValueError as exc:
            names = sorted({m.name for m in plan.inputs.model.linear_modules})
            out.append(
                Problem(
                    "lora.target_modules",
                    str(exc),
                    f"use module names of this architecture ({', '.join(names)}) or all-linear",
                )
            )
            return out
    if out:
        return out
    if mem.usable_bytes > mem.device_capacity_bytes:
        out.append(
            Problem(
                "memory.usable_bytes",
                "larger than memory.device_capacity_bytes",
                "write the plan again with `tuneplan advise`",
            )
        )
    if mem.fits != (mem.per_device_bytes <= mem.usable_bytes):
        out.append(
            Problem(
                "memory.fits",
                f"says {mem.fits} but per_device_bytes {mem.per_device_bytes:,} "
                f"{'>' if mem.fits else '<='} usable_bytes {mem.usable_bytes:,}",
                "write the plan again with `tuneplan advise`",
            )
        )
    if mem.breakdown.total != mem.per_device_bytes:
        out.append(
            Problem(
                "memory.breakdown",
                f"sums to {mem.breakdown.total:,} bytes, not per_device_bytes {mem.per_device_bytes:,}",
                "write the plan again with `tuneplan advise`",
            )
        )
    if mem.calibration_factor is None and not out:
        device = "cpu" if plan.inputs.hardware.kind == "cpu" else "cuda"
        try:
            again = estimate(
                plan.inputs.model,
                st,
                capacity_bytes=mem.device_capacity_bytes,
                device=device,
                headroom_fraction=mem.headroom_fraction,
            )
        except ValueError as exc:
            out.append(
                Problem(
                    "memory.settings",
                    f"cannot be estimated: {exc}",
                    "write the plan again with `tuneplan advise`",
                )
            )
        else:
            diff = abs(again.per_device_bytes - mem.per_device_bytes) / max(1, again.per_device_bytes)
            if diff > MEMORY_TOLERANCE:
                out.append(
                    Problem(
                        "memory.per_device_bytes",
                        f"{mem.per_device_bytes:,} bytes, but its own settings and inputs.model "
                        f"re-estimate to {again.per_device_bytes:,} ({diff:.0%} apart)",
                        "write the plan again with `tuneplan advise`; do not edit the memory block",
                    )
                )
    return out


def data_problems(
    plan, plan_dir: Optional[Path], data: Optional[str], checked: Checked, *, need_train: bool
) -> list[Problem]:
    """Read and check the data files; fills checked.train_path/train_read/eval_read."""
    from . import data as D

    out: list[Problem] = []
    spec = plan.data
    skip_bad = bool(spec and spec.skip_bad_rows)
    train_value = data or (spec.train_path if spec else None)
    where = "--data" if data else "data.train_path"
    if not train_value:
        if need_train:
            out.append(
                Problem(
                    "data.train_path",
                    "no training data given",
                    "pass --data PATH or set data.train_path in the plan",
                )
            )
    else:
        try:
            checked.train_path = data_file(train_value, where, plan_dir)
            checked.train_read = D.read_rows(checked.train_path, skip_bad_rows=skip_bad, field_name=where)
        except InputError as exc:
            out.extend(exc.problems)
    if spec and spec.eval_path:
        try:
            path = data_file(spec.eval_path, "data.eval_path", plan_dir)
            checked.eval_read = D.read_rows(path, skip_bad_rows=skip_bad, field_name="data.eval_path")
        except InputError as exc:
            out.extend(exc.problems)
    if checked.train_read is not None and not out:
        out.extend(_trained_token_problems(plan, checked, where))
    return out


def data_file(value: str, where: str, plan_dir: Optional[Path]) -> Path:
    """A data path as given, or relative to the plan's directory when only that exists."""
    from . import data as D

    p = Path(value).expanduser()
    if not p.exists() and plan_dir is not None and not p.is_absolute() and (plan_dir / p).exists():
        p = plan_dir / p
    return D.check_data_path(p, where)


def _trained_token_problems(plan, checked: Checked, where: str) -> list[Problem]:
    """At least one row with a trained token within seq_len, with the model's own tokenizer."""
    from tuneplan.advisor import datastats

    from . import data as D

    model = plan.inputs.model
    if checked.model_dir is not None:
        model = model.model_copy(update={"name": str(checked.model_dir)})
    try:
        tok = datastats.find_tokenizer(model)
    except Exception as exc:  # noqa: BLE001 - a missing tokenizer means the run checks it later
        checked.notes.append(f"trained-token check left to the run: no tokenizer ({exc})")
        return []
    if not getattr(tok, "exact", False):
        checked.notes.append(
            "trained-token check left to the run: the model's tokenizer is not on this machine"
        )
        return []
    seq_len = plan.training.seq_len
    try:
        # Row by row, stopping at the first with a trained token: the run tokenises every row
        # itself, so encoding them all here was the whole data set twice per run.
        if any(D.encode_rows([row], tok, seq_len)[0] for row in checked.train_read.rows):
            return []
    except Exception as exc:  # noqa: BLE001 - a tokenizer/template quirk: the run checks it
        checked.notes.append(f"trained-token check left to the run: {type(exc).__name__}: {exc}")
        return []
    return [
        Problem(
            where,
            f"no row has a trained token within training.seq_len={seq_len} "
            f"({len(checked.train_read.rows)} rows: every prompt fills the window)",
            "raise training.seq_len or shorten the prompts",
        )
    ]


_ARCH_KEYS = (
    "family",
    "num_layers",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
)


def model_problems(plan, model_path: Optional[str], checked: Checked, *, resolve: bool) -> list[Problem]:
    """The model directory has the plan's architecture and size (config.json vs inputs.model)."""
    from tuneplan.advisor.catalog import model_from_config_dict

    name = plan.inputs.model.name
    directory = None
    if model_path is not None:
        directory = Path(model_path).expanduser()
        where = "--model-path"
    elif Path(name).expanduser().is_dir():
        directory, where = Path(name).expanduser(), "inputs.model.name"
    if directory is None:
        if resolve:
            from .models import resolve_model_dir

            try:
                checked.model_dir = resolve_model_dir(name, None)
            except InputError as exc:
                return list(exc.problems)
        return []
    cfg_file = directory / "config.json"
    if not cfg_file.is_file():
        return [
            Problem(
                where,
                f"{directory} is not a model directory (no config.json)",
                "point it at a directory saved with save_pretrained (config.json + weights)",
            )
        ]
    checked.model_dir = directory
    try:
        cfg, _ = read_json_file(cfg_file, "config.json", "restore the model's config.json")
        if not isinstance(cfg, dict):
            raise InputError.one(str(cfg_file), "config.json is not a JSON object", "restore it")
        have = model_from_config_dict(cfg, str(directory))
    except InputError as exc:
        return list(exc.problems)
    except Exception as exc:  # noqa: BLE001 - an unreadable config is bad input
        return [
            Problem(
                str(cfg_file),
                f"cannot read the architecture: {type(exc).__name__}: {exc}",
                "restore the model's config.json",
            )
        ]
    want = plan.inputs.model
    diffs = [
        f"{k} {getattr(have, k)!r} (plan: {getattr(want, k)!r})"
        for k in _ARCH_KEYS
        if getattr(have, k) != getattr(want, k)
    ]
    if not diffs:
        return []
    return [
        Problem(
            where,
            f"the model at {directory} is not the plan's {want.name}: " + ", ".join(diffs),
            f"plan for this model (`tuneplan advise --model {directory} ...`), or pass the "
            f"directory of {want.name}",
        )
    ]


def preflight(
    plan,
    *,
    data: Optional[str] = None,
    model_path: Optional[str] = None,
    need_train: bool = True,
    resolve_model: bool = True,
    allow_infeasible: bool = False,
) -> Checked:
    """Every check above; InputError with all problems, Infeasible for a plan that cannot run."""
    plan_obj, plan_file, text = load_plan_file(plan)
    checked = Checked(plan=plan_obj, plan_file=plan_file, plan_text=text)
    problems = plan_problems(plan_obj)
    problems += model_problems(plan_obj, model_path, checked, resolve=resolve_model)
    problems += data_problems(
        plan_obj, plan_file.parent if plan_file else None, data, checked, need_train=need_train
    )
    if problems:
        raise InputError(problems)
    if not plan_obj.feasible and not allow_infeasible:
        why = (
            f"{plan_obj.memory.per_device_bytes:,} bytes per device against "
            f"{plan_obj.memory.usable_bytes:,} usable"
        )
        raise Infeasible(
            f"error: the plan is infeasible (feasible: false): {why} (fix: `tuneplan advise` "
            "with more memory, a smaller model, or a shorter --seq-len; nothing was run)"
        )
    return checked
