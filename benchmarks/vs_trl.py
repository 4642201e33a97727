"""`tuneplan run` against TRL's SFTTrainer on the same model, data, settings and steps, interleaved.

Run: .venv/bin/python benchmarks/vs_trl.py [--methods lora,qlora,full] [--steps 8] [--rounds 3]
                                            [--before DIR]

TRL is an optional benchmark dependency (pip install 'tuneplan[benchmarks]'), never a runtime one.

Each side is a fresh process per run (as a user starts it), on the example plans
(examples/plans/{method}.json: embedded SmolLM2-135M-Instruct, examples/data, CPU fp32):
  tuneplan  `tuneplan run PLAN --max-steps N` (evaluates before and after, trains, saves the
            adapter or model, records the run in DuckDB);
  TRL       a script a user would write: AutoModelForCausalLM.from_pretrained from the same local
            copy of the model (BitsAndBytesConfig for QLoRA, then peft's
            prepare_model_for_kbit_training), peft get_peft_model with the plan's LoRA settings,
            SFTTrainer on the same rows as conversational prompt/completion (completion-only loss,
            as tuneplan trains assistant turns only), trainer.train(), trainer.save_model().
Matched (:func:`matched_sft_config`, built on `tuneplan export --to trl`): learning rate, schedule
and warmup, batch, accumulation, clipping, weight decay, optimizer (torch AdamW), seq_len
(max_length), precision (fp32: TRL's bf16 and gradient-checkpointing defaults turned off as
planned), attention (sdpa), seed, steps, logging every step, no checkpoints during training. Three
things are lined up so the two runs see the same numbers, not only the same settings:
  - data order: the rows are written in the order tuneplan's seeded micro-batch stream draws
    them and TRL reads them sequentially (train_sampling_strategy="sequential");
  - dropout RNG: Trainer re-seeds at construction; the TRL script puts back the RNG state the
    model and adapters left, as tuneplan's loop starts from it;
  - QLoRA: SFTTrainer casts adapter weights to bf16 (QLoRA paper); the plan computes in float32,
    so the script casts them back before training.
First the loss curves are compared (tolerance below), then the figures. Rounds alternate which
side goes first (A B, B A, ...); every figure is a ratio tuneplan / TRL within one round, and the
table shows the median over rounds:
  tokens/s   steady state: non-padding tokens of steps 2..N over the time from the end of step 1
             to the end of step N (step 1 is warm-up on both sides). tuneplan's profiled memory
             step (step 2) is inside the window.
  wall       process start to exit; the goal compares it with TRL's wall plus the seconds
             tuneplan spends in its before/after evaluations (timed inside the tuneplan process).
  RSS        peak resident set size of the process (wait4's ru_maxrss).
--before DIR also runs `tuneplan run` from another source tree (e.g. `git worktree add
/tmp/before <commit>`), interleaved, to measure a change before/after in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
PLANS = ROOT / "examples" / "plans"
METHODS = ("lora", "qlora", "full")

LOSS_RTOL_FIRST = 1e-4
"""Step 1: same weights, same batch, same dropout masks; only the loss reduction differs (TRL's
chunked log-prob kernel vs F.cross_entropy over the full logits): float32 rounding, ~1e-6."""
LOSS_RTOL = 5e-3
"""Later steps: AdamW's first updates are ~lr * sign(grad), so float32 rounding differences in the
gradients (different summation orders) move single weights by a full step; the curves stay
within a few 1e-4 over 10 steps on this model. A real mismatch (another batch, another learning
rate, loss over prompt tokens, bf16 adapters) is 1e-2 to 1e-1 off from step 1 or 2."""

ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "WANDB_DISABLED": "true",
    "PYTHONWARNINGS": "ignore",
    "TUNEPLAN_EVAL_BATCHES": "2",
}
"""Both sides' environment. tuneplan's before/after evaluations use 2 batches each (8 by default):
they count in the wall goal's allowance, so their size changes how long the benchmark takes more
than the ratios. --threads sets OMP_NUM_THREADS for both (default 1: on a machine whose
cores are shared with other jobs, OpenMP threads spinning against each other make a step 3x
slower and the figures far noisier; both sides get the same setting)."""


# --------------------------------------------------------------------------- matched settings


def matched_sft_config(plan, steps: int, output_dir: str) -> dict[str, Any]:
    """SFTConfig keyword arguments that train as the plan does for `steps` optimizer steps.

    Starts from `tuneplan export --to trl` (the SFTConfig fields it maps) and adds what a
    side-by-side run needs: the step count, sequential reading (the rows come in tuneplan's order),
    logging every step, no saving during training, no trackers, and completion-only loss."""
    from tuneplan.executor.export import to_trl

    exported = to_trl(plan, None).config
    model_keys = {
        "model_name_or_path",
        "dtype",
        "attn_implementation",
        "trust_remote_code",
        "use_peft",
        "load_in_4bit",
        "bnb_4bit_quant_type",
        "use_bnb_nested_quant",
        "datasets",
        "test_split_size",
        "eval_strategy",
        "num_train_epochs",
        "assistant_only_loss",
        "use_rslora",
    }
    cfg = {k: v for k, v in exported.items() if k not in model_keys and not k.startswith("lora_")}
    t = plan.training
    cfg.update(
        output_dir=output_dir,
        max_steps=steps,
        completion_only_loss=True,
        packing=t.packing,
        train_sampling_strategy="sequential",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        data_seed=t.seed,
        disable_tqdm=True,
    )
    return cfg


def tuneplan_settings(plan, steps: int) -> dict[str, Any]:
    """The plan's settings under the SFTConfig names, for :func:`mismatches`."""
    t = plan.training
    return {
        "learning_rate": t.learning_rate,
        "lr_scheduler_type": t.lr_scheduler,
        "warmup_steps": math.ceil(t.warmup_ratio * steps),
        "per_device_train_batch_size": t.per_device_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "max_grad_norm": t.max_grad_norm,
        "weight_decay": t.weight_decay,
        "optim": "adamw_torch" if t.optimizer == "adamw" else t.optimizer,
        "bf16": t.precision.startswith("bf16"),
        "fp16": t.precision.startswith("fp16"),
        "gradient_checkpointing": t.gradient_checkpointing,
        "max_length": t.seq_len,
        "seed": t.seed,
        "max_steps": steps,
        "packing": t.packing,
        "completion_only_loss": True,
    }


def mismatches(cfg: dict[str, Any], plan, steps: int) -> list[str]:
    """Settings where the SFTConfig arguments differ from the plan (warmup as whole steps)."""
    want = tuneplan_settings(plan, steps)
    got = dict(cfg)
    w = got.get("warmup_steps", 0)
    got["warmup_steps"] = int(w) if w >= 1 else math.ceil(steps * w)
    return [f"{k}: plan {v!r}, TRL {got.get(k)!r}" for k, v in want.items() if got.get(k) != v]


def ordered_rows(plan, plan_path: Path, tokenizer, steps: int) -> tuple[list[dict], list]:
    """The training rows as conversational prompt/completion records, in the order tuneplan's
    micro-batch stream trains them over `steps` steps, and tuneplan's encoded examples alike."""
    from tuneplan.executor import data as D

    t = plan.training
    rows = D.read_rows(D.check_data_path(plan_path.parent / plan.data.train_path, "data.train_path")).rows
    examples, _ = D.encode_rows(rows, tokenizer, t.seq_len)
    if len(examples) != len(rows):
        raise SystemExit("some rows were dropped by tuneplan's encoder: the order would not line up")
    stream = D.micro_batches(list(range(len(rows))), t.per_device_batch_size, t.seed)
    order: list[int] = []
    for _ in range(steps * t.gradient_accumulation_steps):
        batch = next(stream)
        if len(batch) != t.per_device_batch_size:
            raise SystemExit("a partial micro-batch inside the measured steps: use fewer steps")
        order += batch
    out = []
    for i in order:
        msgs = rows[i].record["messages"]
        if msgs[-1]["role"] != "assistant" or any(m["role"] == "assistant" for m in msgs[:-1]):
            raise SystemExit(f"{rows[i].where}: this benchmark needs single-answer chat rows")
        out.append({"prompt": msgs[:-1], "completion": msgs[-1:]})
    return out, [examples[i] for i in order]


# --------------------------------------------------------------------------- the TRL side


def _no_phase(name: str):
    return contextlib.nullcontext()


def trl_child(method: str, steps: int, data: Path, out: Optional[Path], phase=_no_phase) -> dict:
    """One TRL run, as a user would write it; writes its per-step figures to `out` (if given) and
    returns them. ``phase(name)``: a context manager around each stage and step
    (benchmarks/profile_run.py times them; here they cost nothing)."""
    t_proc = time.perf_counter()
    with phase("imports (torch)"):
        import torch
        import transformers  # noqa: F401
    with phase("imports (datasets, peft, trl)"):
        from datasets import Dataset
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
        from transformers import (
            AutoModelForCausalLM,
            AutoTokenizer,
            BitsAndBytesConfig,
            TrainerCallback,
            set_seed,
        )
        from trl import SFTConfig, SFTTrainer

        from tuneplan.executor.models import resolve_model_dir
        from tuneplan.executor.runner import load_plan

    plan, _, _ = load_plan(str(PLANS / f"{method}.json"))
    t = plan.training
    model_dir = str(resolve_model_dir(plan.inputs.model.name))
    set_seed(t.seed)
    with phase("model load"):
        with phase("tokenizer"):
            tok = AutoTokenizer.from_pretrained(model_dir)
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
        kw: dict = {"dtype": torch.float32, "attn_implementation": "sdpa"}
        if method == "qlora":
            q = plan.quantization
            kw["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=q.quant_type,
                bnb_4bit_use_double_quant=q.double_quant,
                bnb_4bit_compute_dtype=getattr(torch, q.compute_dtype),
            )
            kw["device_map"] = {"": "cpu"}
        with phase("from_pretrained" + (" (4-bit quantisation)" if method == "qlora" else "")):
            model = AutoModelForCausalLM.from_pretrained(model_dir, **kw)
        model.config.use_cache = False
        if method == "qlora":
            with phase("prepare_model_for_kbit_training"):
                model = prepare_model_for_kbit_training(
                    model, use_gradient_checkpointing=t.gradient_checkpointing
                )
        if plan.lora is not None:
            lo = plan.lora
            with phase("LoRA adapters (get_peft_model)"):
                model = get_peft_model(
                    model,
                    LoraConfig(
                        r=lo.rank,
                        lora_alpha=lo.alpha,
                        lora_dropout=lo.dropout,
                        target_modules=list(lo.target_modules),
                        use_rslora=lo.use_rslora,
                        bias="none",
                        task_type="CAUSAL_LM",
                    ),
                )
    rng = torch.get_rng_state()
    record: dict[str, Any] = {"loss": [], "num_tokens": [], "step_end": []}
    open_step: dict[str, Any] = {}

    class Figures(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == 0:
                torch.set_rng_state(rng)  # dropout as in tuneplan's loop (Trainer re-seeded at init)
            open_step["ctx"] = phase(f"step {state.global_step + 1}")
            open_step["ctx"].__enter__()

        def on_step_end(self, args, state, control, **kw):
            open_step.pop("ctx").__exit__(None, None, None)
            record["step_end"].append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                record["loss"].append(float(logs["loss"]))
                record["num_tokens"].append(float(logs.get("num_tokens", 0)))

    with tempfile.TemporaryDirectory(prefix="vs-trl-") as tmp:
        cfg = matched_sft_config(plan, steps, tmp)
        with phase("SFTTrainer set-up (tokenise)"):
            trainer = SFTTrainer(
                model=model,
                args=SFTConfig(**cfg),
                # from_list, not load_dataset("json"): Arrow's JSON reader turns the ISO-date answers
                # of the example data into timestamps, which the chat template renders as "<datetime>".
                train_dataset=Dataset.from_list([json.loads(line) for line in data.read_text().splitlines()]),
                processing_class=tok,
                callbacks=[Figures()],
            )
        if method == "qlora":  # SFTTrainer made the adapters bf16; the plan computes in float32
            for p in trainer.model.parameters():
                if p.requires_grad:
                    p.data = p.data.float()
        ds = trainer.train_dataset
        record["input_ids"] = [list(x) for x in ds["input_ids"]]
        record["labels"] = [list(x) for x in ds["labels"]]
        with phase("training"):
            trainer.train()
        with phase("save adapter/model"):
            trainer.save_model(str(Path(tmp) / "final"))
    record["wall_in_process"] = time.perf_counter() - t_proc
    if out is not None:
        out.write_text(json.dumps(record))
    return record


# --------------------------------------------------------------------------- the tuneplan side


def run_tuneplan(method: str, steps: int, workdir: Path) -> Path:
    """`tuneplan run` of the example plan in this process (under ``workdir``); its run directory."""
    from tuneplan.cli.main import main as cli_main

    args = ["run", str(PLANS / f"{method}.json"), "--max-steps", str(steps)]
    args += ["--output", str(workdir / "runs"), "--db", str(workdir / "runs.duckdb")]
    try:
        code = cli_main(args)
    except SystemExit as exc:
        code = exc.code
    if code not in (0, None):
        raise SystemExit(f"tuneplan run exited {code}")
    return next(d for d in (workdir / "runs").iterdir() if d.is_dir())


def tuneplan_child(method: str, steps: int, workdir: Path, out: Path) -> None:
    """`tuneplan run` in this process, timing its before/after evaluations."""
    from tuneplan.executor.run import execute as E

    spent = {"eval_s": 0.0}
    inner = E._evaluate

    def timed(*a, **k):
        t0 = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            spent["eval_s"] += time.perf_counter() - t0

    E._evaluate = timed
    metrics = run_tuneplan(method, steps, workdir) / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    out.write_text(
        json.dumps(
            {
                "loss": [r["loss"] for r in rows],
                "tokens": [r["tokens"] for r in rows],
                "elapsed": [r["elapsed_s"] for r in rows],
                "eval_s": spent["eval_s"],
            }
        )
    )


# --------------------------------------------------------------------------- the parent


def _overlay(tree: Path, into: Path) -> dict:
    """PYTHONPATH that runs `tree`'s tuneplan sources over this environment's libraries."""
    pkg = into / "tuneplan"
    pkg.mkdir(parents=True)
    for name in ("base", "schemas", "advisor", "executor", "tui", "cli"):
        if (tree / name / "__init__.py").is_file():
            (pkg / name).symlink_to((tree / name).resolve())
    return {"PYTHONPATH": str(into)}


def _spawn(argv: list[str], env: dict) -> tuple[float, int, int]:
    """(wall seconds, peak RSS bytes, exit status) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.stderr.write(err.decode(errors="replace")[-3000:])
    return wall, int(usage.ru_maxrss) * 1024, proc.returncode


def _steady(tokens: list[float], ends: list[float]) -> float:
    """Tokens/s over steps 2..N (from the end of step 1 to the end of step N)."""
    return sum(tokens[1:]) / (ends[-1] - ends[0])


def run_side(side: str, method: str, steps: int, data: Path, tmp: Path, env_extra: dict) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"{side}-{method}-", dir=tmp))
    out = work / "figures.json"
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", side.split(":")[0], "--method", method]
    argv += ["--steps", str(steps), "--data", str(data), "--work", str(work), "--out", str(out)]
    wall, rss, code = _spawn(argv, {**ENV, **env_extra})
    if code:
        raise SystemExit(f"{side} {method} failed (exit {code})")
    fig = json.loads(out.read_text())
    fig.update(wall=wall, rss=rss)
    if side.startswith("trl"):
        tokens = [b - a for a, b in zip([0.0] + fig["num_tokens"][:-1], fig["num_tokens"])]
        fig["tps"] = _steady(tokens, fig["step_end"])
    else:
        fig["tps"] = _steady(fig["tokens"], fig["elapsed"])
    return fig


def check_match(method: str, trl: dict, tp: dict, examples: list) -> list[str]:
    """Problems with the pairing: tokens, loss masks, and the loss curve."""
    problems = []
    for k, ex in enumerate(examples):
        ids, labels = trl["input_ids"][k], trl["labels"][k]
        if ids != ex.input_ids or labels != ex.labels:
            problems.append(
                f"{method}: row {k} tokenised differently (TRL {len(ids)}, tuneplan {len(ex.input_ids)})"
            )
            break
    if len(trl["loss"]) != len(tp["loss"]):
        problems.append(f"{method}: {len(trl['loss'])} TRL losses vs {len(tp['loss'])} tuneplan losses")
    for s, (a, b) in enumerate(zip(trl["loss"], tp["loss"]), 1):
        tol = LOSS_RTOL_FIRST if s == 1 else LOSS_RTOL
        if abs(a - b) > tol * abs(a):
            problems.append(f"{method}: step {s} loss TRL {a:.6f} vs tuneplan {b:.6f} (rtol {tol:g})")
    return problems


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for both sides")
    ap.add_argument("--before", type=Path, help="also run tuneplan from this source tree, interleaved")
    ap.add_argument("--child", choices=("trl", "tuneplan"), help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child == "trl":
        trl_child(a.method, a.steps, a.data, a.out)
        return 0
    if a.child == "tuneplan":
        tuneplan_child(a.method, a.steps, a.work, a.out)
        return 0
    try:
        import trl
    except ImportError:
        print("TRL is not installed: pip install 'tuneplan[benchmarks]'", file=sys.stderr)
        return 2

    from tuneplan.executor.loading.common import load_tokenizer
    from tuneplan.executor.models import resolve_model_dir
    from tuneplan.executor.runner import load_plan

    ENV.update(OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    methods = [m for m in a.methods.split(",") if m]
    sides = ["trl", "tuneplan"] + (["tuneplan:before"] if a.before else [])
    tmp = Path(tempfile.mkdtemp(prefix="vs-trl-"))
    extra = {"trl": {}, "tuneplan": {}}
    if a.before:
        extra["tuneplan:before"] = _overlay(a.before, tmp / "before-tree")
    data: dict[str, Path] = {}
    examples: dict[str, list] = {}
    for m in methods:
        plan, path, _ = load_plan(str(PLANS / f"{m}.json"))
        tok = load_tokenizer(resolve_model_dir(plan.inputs.model.name))
        rows, examples[m] = ordered_rows(plan, path, tok, a.steps)
        data[m] = tmp / f"{m}.jsonl"
        data[m].write_text("".join(json.dumps(r) + "\n" for r in rows))
        bad = mismatches(matched_sft_config(plan, a.steps, str(tmp)), plan, a.steps)
        if bad:
            print(f"{m}: settings differ: {'; '.join(bad)}", file=sys.stderr)
            return 1
    print(
        f"tuneplan vs TRL {trl.__version__} SFTTrainer: {', '.join(methods)} on the example plans, "
        f"{a.steps} steps x {a.rounds} rounds, {a.threads} thread(s) each on {os.cpu_count()} CPUs (medians of per-round ratios)"
    )
    got: dict[tuple[str, str], list[dict]] = {}
    for r in range(a.rounds):
        for m in methods:
            order = sides if r % 2 == 0 else sides[::-1]
            for side in order:
                fig = run_side(side, m, a.steps, data[m], tmp, extra[side])
                got.setdefault((m, side), []).append(fig)
                print(
                    f"  round {r + 1} {m:5s} {side:15s} {fig['tps']:7.1f} tok/s  wall {fig['wall']:6.1f} s  "
                    f"RSS {fig['rss'] / 2**30:5.2f} GiB"
                    + (f"  eval {fig['eval_s']:.1f} s" if "eval_s" in fig else ""),
                    flush=True,
                )
            if r == 0:
                for side in sides[1:]:
                    problems = check_match(m, got[(m, "trl")][0], got[(m, side)][0], examples[m])
                    if problems:
                        print("loss curves do not match:\n  " + "\n  ".join(problems), file=sys.stderr)
                        return 1
                trl_l, tp_l = got[(m, "trl")][0]["loss"], got[(m, "tuneplan")][0]["loss"]
                worst = max(abs(x - y) / abs(x) for x, y in zip(trl_l, tp_l))
                print(
                    f"  {m}: loss curves match over {a.steps} steps (largest relative difference {worst:.1e})"
                )
    print()
    print(
        "| method | side | tokens/s vs TRL | wall vs TRL | wall vs TRL + tuneplan's evaluations | peak RSS vs TRL |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for m in methods:
        for side in sides[1:]:
            pairs = list(zip(got[(m, "trl")], got[(m, side)]))
            tps = statistics.median(b["tps"] / a_["tps"] for a_, b in pairs)
            wall = statistics.median(b["wall"] / a_["wall"] for a_, b in pairs)
            budget = statistics.median(b["wall"] / (a_["wall"] + b["eval_s"]) for a_, b in pairs)
            rss = statistics.median((b["rss"] - a_["rss"]) / 2**30 for a_, b in pairs)
            med = lambda k, s=side, m=m: statistics.median(f[k] for f in got[(m, s)])  # noqa: E731
            print(
                f"| {m} | {side} | {tps:.2f}x ({med('tps'):.0f} vs {med('tps', 'trl'):.0f} tok/s) | "
                f"{wall:.2f}x ({med('wall'):.1f} vs {med('wall', 'trl'):.1f} s) | {budget:.2f}x "
                f"(evaluations {med('eval_s'):.1f} s) | {rss:+.2f} GiB ({med('rss') / 2**30:.2f} vs "
                f"{med('rss', 'trl') / 2**30:.2f} GiB) |"
            )
    print("\ngoal: tokens/s >= 1.00x, wall vs TRL + evaluations <= 1.00x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
