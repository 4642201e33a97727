"""Where the time and memory of one `tuneplan run` go, phase by phase, next to TRL's SFTTrainer.

Run: .venv/bin/python benchmarks/profile_run.py [--quick] [--methods lora,qlora,full] [--steps 6]
                                                [--rounds 2] [--before DIR] [--json FILE]

--quick is 1 round x 3 steps with 2-batch evaluations (about 3 minutes on an idle 2-core machine);
the default is 2 rounds x 6 steps with the executor's own evaluation size (8 batches).

Each side is a fresh process per run, as in benchmarks/vs_trl.py (same example plans, same rows in
tuneplan's order, same matched SFTConfig, 1 OpenMP thread each), and rounds alternate which side
goes first. Inside each process the real stages are timed by wrapping them (nothing is copied or
re-implemented): for tuneplan the CLI import, prepare (pre-flight, data read), the run directory
and its first DuckDB row, the runtime imports, the model load (from_pretrained of the cached
safetensors copy of the embedded GGUF; for QLoRA the 4-bit quantisation in from_pretrained and
prepare_model_for_kbit_training), the adapters, tokenising, the four evaluations (eval and
probe, before and after), every optimizer step (inside it: collation, forward, loss, backward,
clipping, optimizer, and tuneplan's memory meter), the measurement, the save, and the final
result.json + DuckDB write. For TRL: imports, tokenizer, from_pretrained, k-bit preparation,
get_peft_model, SFTTrainer construction (tokenising), each step, save_model.

RSS after each phase: the resident set now (VmRSS) and the phase's own peak (VmHWM, reset when the
phase starts by writing 5 to /proc/self/clear_refs, Linux >= 4.0); a phase's peak includes its
nested phases. The process peak is the largest of them (wait4's ru_maxrss would only see the
peak since the last reset). Figures that compare the sides are medians over rounds of per-round
differences or ratios; on a shared machine absolute seconds are noise, shares and ratios less so.
"heap used/free" is glibc's mallinfo2 after the phase: bytes allocated, and bytes freed but kept
by malloc (fragmentation between steps), which count in the RSS too. After the table, each
side's RSS and peak after every step: a peak that climbs step after step is memory kept, not a
bigger step.

--before DIR also runs tuneplan from another source tree (`git worktree add /tmp/before REV`),
interleaved, to measure a change before/after in the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Optional

_T_START = time.perf_counter()
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import vs_trl  # noqa: E402  (benchmarks/vs_trl.py: matched settings, ordered rows, the tree overlay)

GIB = 2**30
MIB = 2**20
PLANS = vs_trl.PLANS
METHODS = vs_trl.METHODS


# --------------------------------------------------------------------------- RSS and phases


def _status() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in bytes."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, val = line.split(":", 1)
                out[key] = int(val.split()[0]) * 1024
    return out


_MALLINFO: list = []


def _heap() -> tuple[int, int]:
    """(bytes in use, bytes free) in glibc's malloc arenas (mallinfo2, glibc >= 2.33); (0, 0)
    elsewhere. Free arena bytes are memory the process freed but still holds: part of its RSS."""
    if not _MALLINFO:
        try:
            import ctypes

            class MallInfo2(ctypes.Structure):
                _fields_ = [
                    (n, ctypes.c_size_t)
                    for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
                ]

            fn = ctypes.CDLL("libc.so.6").mallinfo2
            fn.restype = MallInfo2
            _MALLINFO.append(fn)
        except (OSError, AttributeError):
            _MALLINFO.append(None)
    fn = _MALLINFO[0]
    if fn is None:
        return 0, 0
    m = fn()
    return int(m.uordblks + m.hblkhd), int(m.fordblks)


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class Phases:
    """Nested, timed phases with RSS now and each phase's own peak.

    Entering a phase folds the current high-water mark into every open phase, then resets it, so
    each phase (and every phase around it) ends with the highest RSS reached while it was open.
    Repeated phases with the same name (steps' forward, backward, ...) are aggregated: seconds
    summed, peaks maxed, a count kept."""

    def __init__(self) -> None:
        self.t0 = _T_START
        self.rows: list[dict] = []
        self.by_key: dict[str, dict] = {}
        self.stack: list[dict] = []
        self.process_peak = 0
        self.can_reset = _reset_hwm()

    def _fold(self) -> int:
        hwm = _status()["VmHWM"]
        self.process_peak = max(self.process_peak, hwm)
        for ph in self.stack:
            ph["peak"] = max(ph["peak"], hwm)
        return hwm

    @contextmanager
    def phase(self, name: str, aggregate: bool = False, **info):
        self._fold()
        key = "/".join([p["name"] for p in self.stack] + [name])
        if aggregate and key in self.by_key:
            row = self.by_key[key]
        else:
            row = {"key": key, "name": name, "depth": len(self.stack), "seconds": 0.0, "count": 0}
            row.update(peak=0, rss=0, start=time.perf_counter() - self.t0)
            self.rows.append(row)
            self.by_key[key] = row
        row["count"] += 1
        row.update(info)
        live = {"name": name, "peak": _status()["VmRSS"]}
        self.stack.append(live)
        _reset_hwm()
        t = time.perf_counter()
        try:
            yield row
        finally:
            row["seconds"] += time.perf_counter() - t
            self._fold()
            self.stack.pop()
            row["peak"] = max(row["peak"], live["peak"])
            row["rss"] = _status()["VmRSS"]
            row["heap_used"], row["heap_free"] = _heap()
            for ph in self.stack:  # the parent keeps what its child reached
                ph["peak"] = max(ph["peak"], live["peak"])

    def wrap(self, obj, attr: str, name: str, aggregate: bool = False, info: Optional[Callable] = None):
        """Replace obj.attr by a version timed as phase `name`."""
        inner = getattr(obj, attr)
        phases = self

        def timed(*a, **k):
            with phases.phase(name, aggregate, **(info(*a, **k) if info else {})):
                return inner(*a, **k)

        timed.__wrapped__ = inner  # type: ignore[attr-defined]
        setattr(obj, attr, timed)
        return inner

    def dump(self) -> dict:
        self._fold()
        return {"rows": self.rows, "process_peak": self.process_peak, "hwm_reset": self.can_reset}


def _eval_facts(model) -> dict:
    """Autograd and module modes while an evaluation's forward runs."""
    import torch

    dropout = [m for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]
    gc_on = any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())
    return {
        "grad_enabled": torch.is_grad_enabled(),
        "inference_mode": torch.is_inference_mode_enabled(),
        "training_mode": bool(model.training),
        "dropout_active": sum(1 for m in dropout if m.training),
        "dropout_modules": len(dropout),
        "checkpointing_flag": gc_on,
    }


# --------------------------------------------------------------------------- tuneplan side


def tuneplan_child(method: str, steps: int, workdir: Path, out: Path) -> None:
    """One real `tuneplan run` in this process, its stages wrapped by :class:`Phases`."""
    ph = Phases()
    with ph.phase("imports (tuneplan CLI)"):
        from tuneplan.cli.main import main as cli_main  # noqa: F401  (its import, timed here)
    with ph.phase("imports (torch)"):
        import torch
        import transformers  # noqa: F401

    from tuneplan.executor import loading as L
    from tuneplan.executor import measure as M
    from tuneplan.executor import runner as R
    from tuneplan.executor import train as T
    from tuneplan.executor.loading import common as LC
    from tuneplan.executor.loading import full as LF
    from tuneplan.executor.loading import lora as LL
    from tuneplan.executor.loading import qlora as LQ
    from tuneplan.executor.run import execute as E
    from tuneplan.executor.run import finish as F

    ph.wrap(R, "prepare", "prepare (pre-flight, data read)")
    ph.wrap(R, "create_run_dir", "run directory + 'running' row")
    ph.wrap(F, "record", "DuckDB record", True)
    ph.wrap(F, "finish", "finish (result.json + DuckDB)")
    ph.wrap(F, "final_write", "final write")
    ph.wrap(L, "import_runtime", "runtime imports (transformers, peft[, bitsandbytes])")
    ph.wrap(L, "load_model", "model load")
    for mod in (LF, LL, LQ):
        ph.wrap(mod, "load_base", "base model")
    ph.wrap(LC, "load_tokenizer", "tokenizer")
    from transformers import AutoModelForCausalLM

    raw_fp = AutoModelForCausalLM.from_pretrained.__func__

    def from_pretrained(cls, *a, **k):
        with ph.phase("from_pretrained" + (" (4-bit quantisation)" if "quantization_config" in k else "")):
            return raw_fp(cls, *a, **k)

    AutoModelForCausalLM.from_pretrained = classmethod(from_pretrained)
    import peft

    raw_kbit = peft.prepare_model_for_kbit_training

    def kbit(*a, **k):
        with ph.phase("prepare_model_for_kbit_training"):
            return raw_kbit(*a, **k)

    peft.prepare_model_for_kbit_training = kbit
    ph.wrap(LL, "add_adapters", "LoRA adapters (get_peft_model)")
    ph.wrap(LQ, "add_adapters", "LoRA adapters (get_peft_model)")
    ph.wrap(E, "_encode", "tokenise train/eval/probe")
    ph.wrap(E, "_train", "training")
    ph.wrap(E, "_save", "save adapter/model")
    ph.wrap(M.MemoryMeter, "__init__", "memory meter set-up")
    ph.wrap(M.MemoryMeter, "result", "memory measurement result")
    ph.wrap(T, "build_optimizer", "optimizer set-up")
    ph.wrap(T, "memory_savers", "memory savers set-up")

    evals = ["eval before", "probe before", "eval after", "probe after"]
    eval_info: list[dict] = []
    raw_eval = E._evaluate
    current: dict[str, Any] = {"step": None, "eval": None, "model": None}

    def evaluate(loaded, examples, batch_size, device):
        name = (
            evals[len(eval_info)] if len(eval_info) < len(evals) else f"eval during training {len(eval_info)}"
        )
        n_batches = min(T.EVAL_MAX_BATCHES, math.ceil(len(examples) / batch_size)) if examples else 0
        used = examples[: n_batches * batch_size]
        padded = [
            max(len(e.input_ids) for e in used[b * batch_size : (b + 1) * batch_size])
            for b in range(n_batches)
        ]
        info = {
            "sequences": len(used),
            "of": len(examples),
            "batches": n_batches,
            "batch_size": batch_size,
            "padded_len": padded,
            "real_tokens": sum(len(e.input_ids) for e in used),
        }
        eval_info.append(info)
        current["eval"] = info
        current["model"] = loaded.model
        try:
            with ph.phase(name, **info) as row:
                try:
                    return raw_eval(loaded, examples, batch_size, device)
                finally:
                    row.update(info)
        finally:
            current["eval"] = None

    E._evaluate = evaluate

    raw_step = T._one_step

    def one_step(step, *a, **k):
        current["step"] = step
        try:
            with ph.phase(f"step {step}", profiled=None):
                return raw_step(step, *a, **k)
        finally:
            current["step"] = None

    T._one_step = one_step

    def in_step(name: str) -> Callable:
        """A context for `name` inside the current step, aggregated over steps (and over
        micro-batches), or inside the current evaluation."""
        if current["step"] is not None:
            return lambda: ph.phase(f"{name}", aggregate=True)
        if current["eval"] is not None:
            return lambda: ph.phase(name, aggregate=True)
        return None

    raw_collate = T.collate

    def collate(*a, **k):
        ctx = in_step("collate")
        if ctx is None:
            return raw_collate(*a, **k)
        with ctx():
            return raw_collate(*a, **k)

    T.collate = collate

    raw_loss = T.token_loss_sum

    def loss(*a, **k):
        ctx = in_step("loss (cross-entropy)")
        if ctx is None:
            return raw_loss(*a, **k)
        with ctx():
            return raw_loss(*a, **k)

    T.token_loss_sum = loss

    raw_backward = torch.Tensor.backward

    def backward(self, *a, **k):
        ctx = in_step("backward")
        if ctx is None:
            return raw_backward(self, *a, **k)
        with ctx():
            return raw_backward(self, *a, **k)

    torch.Tensor.backward = backward
    raw_clip = torch.nn.utils.clip_grad_norm_

    def clip(*a, **k):
        ctx = in_step("clip_grad_norm_")
        with ctx() if ctx else _null():
            return raw_clip(*a, **k)

    torch.nn.utils.clip_grad_norm_ = clip
    raw_opt_step = {}

    def hook_optimizers():
        for cls in {torch.optim.AdamW, *torch.optim.AdamW.__subclasses__()}:
            if cls in raw_opt_step:
                continue
            raw_opt_step[cls] = inner = cls.step

            def step(self, *a, _inner=inner, **k):
                ctx = in_step("optimizer.step")
                with ctx() if ctx else _null():
                    return _inner(self, *a, **k)

            cls.step = step

    hook_optimizers()
    for meth, label in (("begin_step", "memory meter: begin step"), ("end_step", "memory meter: end step")):
        inner_m = getattr(M.MemoryMeter, meth)

        def timed_m(self, *a, _inner=inner_m, _label=label, **k):
            ctx = in_step(_label)
            with ctx() if ctx else _null():
                return _inner(self, *a, **k)

        setattr(M.MemoryMeter, meth, timed_m)

    raw_load = L.load_model

    def load_model(*a, **k):
        loaded = raw_load(*a, **k)
        model = loaded.model
        fwd: dict[str, Any] = {}

        def pre(mod, args, kwargs):
            if current["eval"] is not None and "facts" not in current["eval"]:
                current["eval"]["facts"] = _eval_facts(mod)
            name = "forward (model)"
            ctx = in_step(name)
            if ctx is not None:
                fwd["ctx"] = ctx()
                fwd["ctx"].__enter__()

        def post(mod, args, kwargs, output):
            c = fwd.pop("ctx", None)
            if c is not None:
                c.__exit__(None, None, None)
            logits = getattr(output, "logits", None)
            if current["eval"] is not None and logits is not None:
                current["eval"].setdefault("logits", f"{tuple(logits.shape)} {logits.dtype}")

        model.register_forward_pre_hook(pre, with_kwargs=True)
        model.register_forward_hook(post, with_kwargs=True)
        return loaded

    L.load_model = load_model

    with ph.phase("tuneplan run (all stages)"):
        run_dir = vs_trl.run_tuneplan(method, steps, workdir)
    result = json.loads((run_dir / "result.json").read_text())
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    dump = ph.dump()
    dump.update(
        side="tuneplan",
        method=method,
        loss=[m["loss"] for m in metrics],
        tokens=[m["tokens"] for m in metrics],
        elapsed=[m["elapsed_s"] for m in metrics],
        measured=result.get("measured"),
        wall_seconds_result=result.get("wall_seconds"),
        evals=eval_info,
        in_process=time.perf_counter() - _T_START,
    )
    out.write_text(json.dumps(dump, default=str))


@contextmanager
def _null():
    yield


# --------------------------------------------------------------------------- TRL side


def trl_child(method: str, steps: int, data: Path, out: Path) -> None:
    """benchmarks/vs_trl.py's TRL script, its stages and steps timed as phases."""
    ph = Phases()
    record = vs_trl.trl_child(method, steps, data, None, phase=ph.phase)
    for key in ("input_ids", "labels", "wall_in_process"):
        record.pop(key, None)
    dump = ph.dump()
    dump.update(side="trl", method=method, in_process=time.perf_counter() - _T_START, **record)
    out.write_text(json.dumps(dump))


# --------------------------------------------------------------------------- the parent


def run_side(side: str, method: str, steps: int, data: Path, tmp: Path, env: dict) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"{side.replace(':', '-')}-{method}-", dir=tmp))
    out = work / "phases.json"
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", side.split(":")[0], "--method", method]
    argv += ["--steps", str(steps), "--data", str(data), "--work", str(work), "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.stderr.write(proc.stderr.decode(errors="replace")[-4000:])
        raise SystemExit(f"{side} {method} failed (exit {proc.returncode})")
    fig = json.loads(out.read_text())
    fig["wall"] = wall
    return fig


def _row(fig: dict, key: str) -> Optional[dict]:
    return next((r for r in fig["rows"] if r["key"] == key), None)


def _find(fig: dict, name: str) -> list[dict]:
    return [r for r in fig["rows"] if r["name"] == name]


def summary(fig: dict) -> dict[str, tuple[float, int]]:
    """Comparable phases: {label: (seconds, peak bytes)} on either side."""
    out: dict[str, tuple[float, int]] = {}
    rows = fig["rows"]

    def take(label, match):
        got = [r for r in rows if match(r)]
        if got:
            out[label] = (sum(r["seconds"] for r in got), max(r["peak"] for r in got))

    take(
        "imports",
        lambda r: (
            r["depth"] == 0 and r["name"].startswith("imports") or r["name"].startswith("runtime imports")
        ),
    )
    take("model load", lambda r: r["name"] == "model load")
    take("tokenise", lambda r: r["name"] in ("tokenise train/eval/probe", "SFTTrainer set-up (tokenise)"))
    take("evaluations", lambda r: r["name"] in ("eval before", "probe before", "eval after", "probe after"))
    take("training", lambda r: r["name"] == "training")
    take("save", lambda r: r["name"] == "save adapter/model")
    return out


def print_run(fig: dict, label: str) -> None:
    total = fig["in_process"]
    print(
        f"\n{label}: in-process {total:.1f} s, process wall {fig['wall']:.1f} s, peak RSS {fig['process_peak'] / GIB:.2f} GiB"
    )
    print(
        f"  {'phase':58s} {'s':>7s} {'share':>6s} {'RSS GiB':>8s} {'peak GiB':>8s} {'heap used/free':>14s}  notes"
    )
    for r in fig["rows"]:
        notes = []
        if r["count"] > 1:
            notes.append(f"x{r['count']}")
        if "batches" in r:
            facts = r.get("facts", {})
            notes.append(
                f"{r['batches']} batches x {r['batch_size']} ({r['sequences']}/{r['of']} seqs), padded to "
                f"{r['padded_len']}, logits {r.get('logits', '?')}, grad {facts.get('grad_enabled')}, "
                f"inference_mode {facts.get('inference_mode')}, train mode {facts.get('training_mode')}, "
                f"dropout active {facts.get('dropout_active')}/{facts.get('dropout_modules')}, "
                f"checkpointing {facts.get('checkpointing_flag')}"
            )
        name = "  " * r["depth"] + r["name"]
        print(
            f"  {name:58s} {r['seconds']:7.2f} {r['seconds'] / total:6.1%} {r['rss'] / GIB:8.2f} "
            f"{r['peak'] / GIB:8.2f} {r.get('heap_used', 0) / GIB:6.2f}/{r.get('heap_free', 0) / GIB:<7.2f}  "
            f"{'; '.join(notes)}"
        )


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 round x 3 steps, 2-batch evaluations (~3 min)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--steps", type=int)
    ap.add_argument("--rounds", type=int)
    ap.add_argument(
        "--eval-batches", type=int, help="TUNEPLAN_EVAL_BATCHES (default: the executor's 8; --quick 2)"
    )
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS for both sides")
    ap.add_argument("--before", type=Path, help="also run tuneplan from this source tree, interleaved")
    ap.add_argument("--no-trl", action="store_true", help="tuneplan only")
    ap.add_argument("--json", type=Path, help="write every run's phases here")
    ap.add_argument(
        "--verbose", action="store_true", help="print every run's phase table (default: the first round's)"
    )
    ap.add_argument("--child", choices=("trl", "tuneplan"), help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    steps = a.steps or (3 if a.quick else 6)
    rounds = a.rounds or (1 if a.quick else 2)
    if a.child == "trl":
        trl_child(a.method, steps, a.data, a.out)
        return 0
    if a.child == "tuneplan":
        tuneplan_child(a.method, steps, a.work, a.out)
        return 0
    sides = ["tuneplan"] + (["tuneplan:before"] if a.before else [])
    if not a.no_trl:
        try:
            import trl
        except ImportError:
            print(
                "TRL is not installed: pip install 'tuneplan[benchmarks]' (or pass --no-trl)", file=sys.stderr
            )
            return 2
        sides = ["trl"] + sides
    from tuneplan.executor.loading.common import load_tokenizer
    from tuneplan.executor.models import resolve_model_dir
    from tuneplan.executor.runner import load_plan

    env = dict(vs_trl.ENV)
    env.pop("TUNEPLAN_EVAL_BATCHES", None)
    eval_batches = a.eval_batches or (2 if a.quick else None)
    if eval_batches:
        env["TUNEPLAN_EVAL_BATCHES"] = str(eval_batches)
    env.update(OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    tmp = Path(tempfile.mkdtemp(prefix="profile-run-"))
    envs = {s: env for s in sides}
    if a.before:
        envs["tuneplan:before"] = {**env, **vs_trl._overlay(a.before, tmp / "before-tree")}
    methods = [m for m in a.methods.split(",") if m]
    data: dict[str, Path] = {}
    for m in methods:
        plan, path, _ = load_plan(str(PLANS / f"{m}.json"))
        tok = load_tokenizer(resolve_model_dir(plan.inputs.model.name))
        rows, _ = vs_trl.ordered_rows(plan, path, tok, steps)
        data[m] = tmp / f"{m}.jsonl"
        data[m].write_text("".join(json.dumps(r) + "\n" for r in rows))
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print(
        f"profile of `tuneplan run`{' vs TRL ' + trl.__version__ if not a.no_trl else ''}: {', '.join(methods)}, "
        f"{steps} steps x {rounds} rounds, evaluations of {eval_batches or 'the default 8'} batches, "
        f"{a.threads} thread(s) each on {os.cpu_count()} CPUs, load average {load:.1f} at start"
    )
    got: dict[tuple[str, str], list[dict]] = {}
    for r in range(rounds):
        for m in methods:
            order = sides if r % 2 == 0 else sides[::-1]
            for side in order:
                fig = run_side(side, m, steps, data[m], tmp, envs[side])
                got.setdefault((m, side), []).append(fig)
                if r == 0 or a.verbose:
                    print_run(fig, f"round {r + 1} {m} {side}")
    if a.json:
        a.json.write_text(json.dumps({f"{m}|{s}": v for (m, s), v in got.items()}, default=str))
    print_summary(got, methods, sides)
    try:
        print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    except OSError:
        pass
    return 0


def print_summary(got: dict, methods: list[str], sides: list[str]) -> None:
    """Per method: each comparable phase's seconds and peak RSS per side (medians over rounds), and
    tuneplan's difference to TRL (median of per-round differences)."""
    print(
        "\n| method | phase | " + " | ".join(f"{s} s / peak GiB" for s in sides) + " | peak vs first side |"
    )
    print("| --- | --- | " + " | ".join("---" for _ in sides) + " | --- |")
    for m in methods:
        per = {s: [summary(f) for f in got[(m, s)]] for s in sides}
        labels = ["imports", "model load", "tokenise", "evaluations", "training", "save"]
        for lab in labels + ["process"]:
            cells = []
            for s in sides:
                if lab == "process":
                    secs = statistics.median(f["wall"] for f in got[(m, s)])
                    peak = statistics.median(f["process_peak"] for f in got[(m, s)])
                elif all(lab in x for x in per[s]):
                    secs = statistics.median(x[lab][0] for x in per[s])
                    peak = statistics.median(x[lab][1] for x in per[s])
                else:
                    cells.append("-")
                    continue
                cells.append(f"{secs:.1f} / {peak / GIB:.2f}")
            base = sides[0]
            diffs = []
            for s in sides[1:]:
                if lab == "process":
                    pairs = [
                        (a["process_peak"], b["process_peak"]) for a, b in zip(got[(m, base)], got[(m, s)])
                    ]
                else:
                    pairs = [
                        (a[lab][1], b[lab][1]) for a, b in zip(per[base], per[s]) if lab in a and lab in b
                    ]
                if pairs:
                    diffs.append(f"{s} {statistics.median(b - a for a, b in pairs) / MIB:+.0f} MiB")
            print(f"| {m} | {lab} | " + " | ".join(cells) + f" | {'; '.join(diffs) or '-'} |")
    print("\nRSS / peak GiB after each step (first round):")
    for m in methods:
        for s in sides:
            fig = got[(m, s)][0]
            steps = [r for r in fig["rows"] if r["name"].startswith("step ") and r["name"][5:].isdigit()]
            print(
                f"  {m:5s} {s:15s} " + "  ".join(f"{r['rss'] / GIB:.2f}/{r['peak'] / GIB:.2f}" for r in steps)
            )


if __name__ == "__main__":
    sys.exit(main())
