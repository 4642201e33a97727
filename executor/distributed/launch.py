"""`tuneplan run PLAN --num-processes N [--dry-run] [--num-machines M --machine-rank R
--main-process-ip IP --main-process-port P]`: launch a plan on several processes.

What it does, in order:
  1. checks the plan, the data file and the model location (bad input: exit 2, nothing started);
  2. lays the run out (executor/distributed/layout.py layout_for): the plan's `distributed` block, the
     command line overriding the process count and machines;
  3. writes ``accelerate_config.yaml`` (distributed_type MULTI_CPU / MULTI_GPU for DDP, FSDP with
     fsdp_config, DEEPSPEED with deepspeed_config) and ``launch.json`` into the run directory;
  4. starts the workers (``python -m tuneplan.executor.distributed.worker``): on GPUs with
     ``accelerate launch --config_file accelerate_config.yaml``; on CPU with torchrun (accelerate
     launch starts a single process for MULTI_CPU unless mpirun is set up), gloo backend;
  5. waits. Rank 0 writes the run directory and the database row; when the job exits non-zero
     this launcher records the run as failed with the failing rank's error (error-rank<R>.txt) or
     the tail of the job's stderr. Ctrl-C / SIGTERM stop the whole process group and record the
     run as interrupted (exit 130). The workers' own lines reach the terminal; the job's stderr
     (torchrun's notices, C++ warnings) is appended to run.log (:func:`run_launch`).

--dry-run prints the command and the config YAML and starts nothing, writes nothing (exit 0).
"""

from __future__ import annotations

import collections
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from tuneplan.base.errors import InputError
from tuneplan.base.planio import new_run_id

from . import layout as D
from .context import read_errors

if TYPE_CHECKING:
    from tuneplan.schemas import RunResult

WORKER_MODULE = "tuneplan.executor.distributed.worker"
CONFIG_NAME = "accelerate_config.yaml"
STOP_GRACE_S = 30.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _opt(args, name: str, default=None):
    value = getattr(args, name, None)
    return default if value is None else value


def _model_dir_if_cheap(plan, model_path: Optional[str]) -> Optional[Path]:
    """The model directory when finding it loads nothing (dry runs): --model-path, a local
    directory, or the embedded model's cache once converted."""
    from ..models import embedded_cache_dir, is_embedded

    if model_path:
        return Path(model_path).expanduser()
    local = Path(plan.inputs.model.name).expanduser()
    if local.is_dir():
        return local
    if is_embedded(plan.inputs.model.name) and (embedded_cache_dir() / "config.json").is_file():
        return embedded_cache_dir()
    return None


class Launch:
    """Everything about one launch: the layout, the config, the command and its environment."""

    def __init__(self, plan_path, args) -> None:
        self.prior = None
        self.recorded = None
        """What the launcher recorded after the job (executor/signals.py Recorded), once it ended."""
        self.args = args
        self.dry_run = bool(getattr(args, "dry_run", False))
        # Remote code: only by the command line's flag (passed on to the workers), and never in
        # a dry run: the plan is loaded with it off there, so reading an FSDP plan's model config
        # for the wrap classes cannot run the model's Python.
        self.trust_remote_code = bool(getattr(args, "trust_remote_code", False))
        plan_file = self._load(plan_path, args)
        self.layout = self._lay_out(args)
        self._check_strategy()
        self._check_inputs(args, plan_file)
        self.layer_classes = (
            D.transformer_layer_classes(
                self.model_dir,
                family=self.plan.inputs.model.family,
                trust_remote_code=self.plan.trust_remote_code,
            )
            if self.layout.strategy == "fsdp"
            else None
        )
        self.config = D.accelerate_config(self.plan, self.layout, self.layer_classes)
        self._place(args)
        self.command = self._command()
        self.env = self._env()

    def _load(self, plan_path, args) -> Optional[Path]:
        """The run to resume (if any) and the plan, read once; returns the plan's file."""
        from tuneplan.base.planio import plan_hash

        from ..run.prepare import load_plan

        if getattr(args, "resume", None):
            from ..resume import resolve_resume

            self.prior = resolve_resume(args.resume, plan_path, getattr(args, "output", None))
            plan_path = plan_path or str(self.prior.run_dir / "plan.json")
            if not getattr(args, "data", None):
                args.data = self.prior.result.data_path
        self.plan_path = Path(plan_path).expanduser().resolve()
        loaded = getattr(args, "loaded_plan", None)  # the command already read the file: not again
        self.plan, plan_file, _ = load_plan(
            loaded if loaded is not None else self.plan_path,
            trust_remote_code=self.trust_remote_code and not self.dry_run,
        )
        if self.prior is not None:
            self.prior.check_plan(plan_hash(self.plan))
        return plan_file

    def _lay_out(self, args) -> D.Layout:
        """The plan's `distributed` block with the command line's overrides (InputError if impossible)."""
        from tuneplan.schemas import CPUHardware

        n = getattr(args, "num_processes", None)
        plan_n = self.plan.distributed.num_processes
        if n is None or (n == 1 and self.dry_run and plan_n > 1):
            n = plan_n  # not given: as planned
        cuda = D._cuda_available()
        self.gpu_plan_here_on_cpu = not cuda and not isinstance(self.plan.inputs.hardware, CPUHardware)
        # A dry run of a GPU plan shows the GPU launch even on a machine without GPUs.
        use_cpu = not cuda and not (self.dry_run and self.gpu_plan_here_on_cpu)
        try:
            return D.layout_for(
                self.plan,
                num_processes=n,
                num_machines=getattr(args, "num_machines", None),
                machine_rank=_opt(args, "machine_rank", 0),
                main_process_ip=getattr(args, "main_process_ip", None),
                main_process_port=getattr(args, "main_process_port", None),
                use_cpu=use_cpu,
            )
        except ValueError as exc:
            raise InputError.one(
                "--num-processes",
                str(exc),
                "give a process count that divides evenly over the machines, a "
                "machine rank below --num-machines and --main-process-ip",
            ) from None

    def _check_strategy(self) -> None:
        """DeepSpeed needs GPUs and the deepspeed package (a dry run shows its config without it)."""
        lay = self.layout
        if lay.strategy.startswith("deepspeed"):
            if lay.use_cpu:
                raise InputError.one(
                    "distributed.strategy",
                    f"{lay.strategy} needs CUDA GPUs",
                    "run on GPUs, or use --num-processes with a ddp plan on CPU",
                )
            if not self.dry_run and not _has_deepspeed():
                raise InputError.one(
                    "distributed.strategy",
                    f"{lay.strategy} needs the deepspeed package, which is not installed",
                    "pip install deepspeed, or set distributed.strategy "
                    'to "fsdp" in the plan; --dry-run shows the config without it',
                )

    def _check_inputs(self, args, plan_file: Optional[Path]) -> None:
        """--max-steps, the data file and the model directory, before any process starts (exit 2)."""
        from ..preflight import data_file

        spec = self.plan.data
        max_steps = getattr(args, "max_steps", None)
        if max_steps is not None and max_steps < 1:
            raise InputError.one(
                "--max-steps", f"must be at least 1, got {max_steps}", "pass a positive number"
            )
        if self.prior is not None:  # the workers get the run's own total (checked here, once)
            args.max_steps = self.prior.max_steps(max_steps)
        train_value = getattr(args, "data", None) or (spec.train_path if spec else None)
        if not train_value:
            raise InputError.one(
                "data.train_path",
                "no training data given",
                "pass --data PATH or set data.train_path in the plan",
            )
        self.data_path = data_file(
            train_value,
            "--data" if getattr(args, "data", None) else "data.train_path",
            plan_file.parent if plan_file else None,
        ).resolve()
        if self.dry_run:
            self.model_dir = _model_dir_if_cheap(self.plan, getattr(args, "model_path", None))
        else:
            from ..models import resolve_model_dir

            # Converting the embedded model (once) here keeps the ranks from racing to do it.
            self.model_dir = resolve_model_dir(self.plan.inputs.model.name, getattr(args, "model_path", None))

    def _place(self, args) -> None:
        """The run's id and directory (the resumed run's own), the config's path, a free port."""
        from tuneplan.base.planio import plan_hash

        from ..run.prepare import DEFAULT_OUTPUT_DIR

        self.run_id = new_run_id(seed=plan_hash(self.plan))
        self.output = Path(getattr(args, "output", None) or DEFAULT_OUTPUT_DIR).expanduser().resolve()
        self.run_dir = self.output / self.run_id
        if self.prior is not None:
            self.run_id, self.run_dir = self.prior.result.run_id, self.prior.run_dir
        self.config_path = self.run_dir / CONFIG_NAME
        if self.layout.num_machines == 1 and getattr(args, "main_process_port", None) is None:
            self.layout.main_process_port = _free_port()  # several runs (or test suites) on one host

    # ------------------------------------------------------------------------------------------
    def _worker_args(self) -> list[str]:
        a = self.args
        out = [str(self.plan_path), "--output", str(self.output), "--data", str(self.data_path)]
        if getattr(a, "db", None):
            out += ["--db", str(Path(a.db).expanduser().resolve())]
        if getattr(a, "max_steps", None) is not None:
            out += ["--max-steps", str(a.max_steps)]
        if self.trust_remote_code:
            out.append("--trust-remote-code")
        if self.prior is not None:
            out += ["--resume", str(self.prior.run_dir)]
        if getattr(a, "report_to", None):
            out += ["--report-to", a.report_to]
        if self.model_dir is not None:
            out += ["--model-path", str(Path(self.model_dir).resolve())]
        elif getattr(a, "model_path", None):
            out += ["--model-path", str(Path(a.model_path).expanduser().resolve())]
        return out

    def _command(self) -> list[str]:
        lay = self.layout
        if lay.use_cpu:
            launcher = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                str(lay.num_machines),
                "--nproc_per_node",
                str(lay.per_machine),
                "--node_rank",
                str(lay.machine_rank),
                "--master_addr",
                lay.main_process_ip or "127.0.0.1",
                "--master_port",
                str(lay.main_process_port),
            ]
        else:
            launcher = [
                sys.executable,
                "-m",
                "accelerate.commands.launch",
                "--config_file",
                str(self.config_path),
                "--num_processes",
                str(lay.num_processes),
                "--num_machines",
                str(lay.num_machines),
                "--machine_rank",
                str(lay.machine_rank),
                "--main_process_port",
                str(lay.main_process_port),
            ]
            if lay.main_process_ip:
                launcher += ["--main_process_ip", lay.main_process_ip]
        return launcher + ["-m", WORKER_MODULE] + self._worker_args()

    def _env(self) -> dict[str, str]:
        lay = self.layout
        env = {
            D.ENV_RUN_ID: self.run_id,
            D.ENV_RUN_DIR: str(self.run_dir),
            D.ENV_STRATEGY: lay.strategy,
            D.ENV_OFFLOAD: "1" if lay.cpu_offload else "0",
            D.ENV_CONSOLE: "1",
        }
        if lay.use_cpu and "OMP_NUM_THREADS" not in os.environ:
            # torchrun would set 1 thread per process; share this machine's cores instead.
            env["OMP_NUM_THREADS"] = str(max(1, _cores() // lay.per_machine))
        return env

    def render(self) -> str:
        """What --dry-run prints: the command (with its environment) and the config YAML."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        lay = self.layout
        lines = [
            f"# {lay.num_processes} processes ({lay.per_machine} per machine x {lay.num_machines} "
            f"machine{'s' if lay.num_machines > 1 else ''}), strategy {lay.strategy}"
            f"{', cpu offload' if lay.cpu_offload else ''}, {'CPU (gloo)' if lay.use_cpu else 'GPU'}; "
            f"effective batch = {self.plan.training.per_device_batch_size} x "
            f"{self.plan.training.gradient_accumulation_steps} x {lay.num_processes} = "
            f"{self.plan.training.per_device_batch_size * self.plan.training.gradient_accumulation_steps * lay.num_processes}",
        ]
        lines += [f"# note: {n}" for n in lay.notes]
        if self.gpu_plan_here_on_cpu and not lay.use_cpu:
            lines.append("# note: this machine has no CUDA GPU; the command is for the planned GPU machines")
        if lay.num_machines > 1:
            lines.append(
                f"# run the same command on every machine with --machine-rank 0..{lay.num_machines - 1}"
            )
        lines += [
            "# command",
            f"{env} {shlex.join(self.command)}",
            f"# {self.config_path}",
            D.dump_yaml(self.config).rstrip(),
        ]
        return "\n".join(lines)

    def write_files(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(D.dump_yaml(self.config), encoding="utf-8")
        (self.run_dir / "launch.json").write_text(
            json.dumps(
                {
                    "command": self.command,
                    "env": self.env,
                    "layout": {
                        k: getattr(self.layout, k)
                        for k in (
                            "num_processes",
                            "strategy",
                            "cpu_offload",
                            "use_cpu",
                            "num_machines",
                            "machine_rank",
                            "main_process_ip",
                            "main_process_port",
                        )
                    },
                },
                indent=2,
            ),
            encoding="utf-8",
        )


def _has_deepspeed() -> bool:
    import importlib.util

    return importlib.util.find_spec("deepspeed") is not None


# --------------------------------------------------------------------------------------------
# Running and recording


def _read_metrics(run_dir: Path) -> list[dict]:
    out = []
    try:
        for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    break
    except OSError:
        pass
    return out


def _load_result(L: Launch):
    """rank 0's result.json, or a fresh RunResult when rank 0 never wrote one."""
    from tuneplan.schemas import RunResult

    from tuneplan.base.planio import plan_hash

    from ..run.prepare import utc_now, versions

    path = L.run_dir / "result.json"
    if path.is_file():
        try:
            return RunResult.model_validate_json(path.read_text(encoding="utf-8"))
        except Exception:  # noqa: BLE001 - rebuilt below
            pass
    p = L.plan
    return RunResult(
        run_id=L.run_id,
        status="running",
        plan_hash=plan_hash(p),
        method=p.method,
        model=p.inputs.model.name,
        hardware=f"{L.layout.num_processes} x {'cpu' if L.layout.use_cpu else 'cuda'}",
        num_processes=L.layout.num_processes,
        strategy=L.layout.strategy,
        started_at=utc_now(),
        run_dir=str(L.run_dir),
        predicted_peak_bytes=p.memory.per_device_bytes,
        predicted_fits=p.memory.fits,
        versions=versions(),
        data_path=str(L.data_path),
    )


def _finish(L: Launch, rc: int, interrupted: bool, tail: list[str]):
    """Record the outcome rank 0 could not (failure elsewhere, a kill, Ctrl-C); add the launch notes."""
    from tuneplan.base.fileio import write_text_atomic

    from ..run.finish import os_reason, record
    from ..run.prepare import utc_now
    from ..signals import Recorded

    result = _load_result(L)
    recorded = Recorded(run_dir=str(L.run_dir) if L.run_dir.is_dir() else None)
    if recorded.run_dir is not None:  # what rank 0 left, until this launcher writes
        recorded.result_status = result.status if (L.run_dir / "result.json").is_file() else None
    changed = False
    notes = [f"launch: {n}" for n in L.layout.notes if f"launch: {n}" not in result.substitutions]
    if notes:
        result.substitutions = list(result.substitutions) + notes
        changed = True
    if result.num_processes != L.layout.num_processes or result.strategy != L.layout.strategy:
        result.num_processes, result.strategy = L.layout.num_processes, L.layout.strategy
        changed = True
    ok = rc == 0 and result.status == "succeeded" and not interrupted
    if not ok:
        errors = read_errors(L.run_dir)
        first = {r: e.splitlines()[0] if e else "" for r, e in errors.items()}
        if interrupted:
            status, error = "interrupted", "KeyboardInterrupt: launcher stopped the process group"
        else:
            status = "failed"
            if first:
                # Root causes first: a rank stopped by torchrun (KeyboardInterrupt) or whose peer
                # vanished ("Connection closed by peer") is a consequence of another rank's error.
                real = {r: e for r, e in first.items() if not e.startswith("KeyboardInterrupt")} or first
                ordered = sorted(real.items(), key=lambda kv: (_is_consequence(kv[1]), kv[0]))
                error = "; ".join(f"rank {r}: {e}" for r, e in ordered)
            else:
                lines = [ln for ln in tail if ln.strip()][-8:]
                error = f"worker job exited with code {rc}" + (": " + " | ".join(lines) if lines else "")
        result.status, result.error = status, error[:4000]
        result.finished_at = result.finished_at or utc_now()
        changed = True
    if changed:
        try:
            L.run_dir.mkdir(parents=True, exist_ok=True)
            recorded.run_dir = str(L.run_dir)
            write_text_atomic(L.run_dir / "result.json", result.model_dump_json(indent=2), fsync=True)
            recorded.result_status, recorded.result_error = result.status, None
        except OSError as exc:
            recorded.result_error = os_reason(exc)
            print(
                f"warning: could not write {L.run_dir}/result.json: {recorded.result_error}", file=sys.stderr
            )
        if record(getattr(L.args, "db", None), result, _read_metrics(L.run_dir), recorded) is None:
            recorded.db_status, recorded.db_error = result.status, None
    L.recorded = recorded
    return result


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the job's process group, SIGKILL it after a grace period."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


class _JobLog:
    """Where the job's stderr goes: appended to the run's run.log (torchrun's agent notices, the
    workers' C++ warnings, the profiler's lines, torchrun's own tracebacks), or to the terminal
    when run.log cannot be opened, so nothing the job writes is ever lost."""

    def __init__(self, path: Path, quiet: bool) -> None:
        from datetime import datetime, timezone

        self.quiet = quiet
        self.file = None
        try:
            self.file = open(path, "a", encoding="utf-8", errors="replace")
            when = datetime.now(timezone.utc).isoformat(timespec="seconds")
            self.file.write(
                f"--- {when} pid {os.getpid()} launcher: the job's stderr (torchrun and libraries)\n"
            )
            self.file.flush()
        except OSError as exc:
            self.file = None
            if not quiet:
                print(f"warning: cannot write {path} ({exc}); the job's stderr follows here", file=sys.stderr)

    def write(self, line: str) -> None:
        if self.file is not None:
            try:
                self.file.write(line)
                self.file.flush()
                return
            except OSError:  # disk full: the terminal from now on
                self.file = None
        if not self.quiet:
            sys.stderr.write(line)
            sys.stderr.flush()

    def close(self) -> None:
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                pass


def run_launch(L: Launch, *, quiet: bool = False) -> tuple[int, Any]:
    """Start the job, wait, record; returns (exit code, RunResult).

    Two channels (see worker.console_on_stdout): the job's stdout carries the workers' own lines
    and is printed on this process's stderr; the job's stderr (torchrun's agent and everything
    third-party) is appended to the run's run.log. When the job fails and no rank left an error
    file, the failure message quotes the end of that stderr, so a crash is never hidden."""
    from ..runlog import RUN_LOG

    L.write_files()
    env = dict(os.environ)
    env.update(L.env)
    if not quiet:
        print(
            f"launching {L.layout.num_processes} processes ({L.layout.strategy}); run directory {L.run_dir}",
            file=sys.stderr,
            flush=True,
        )
    job_log = _JobLog(L.run_dir / RUN_LOG, quiet)
    proc = subprocess.Popen(
        L.command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    tail: collections.deque[str] = collections.deque(maxlen=60)

    def ours(stream) -> None:
        for line in stream:
            if not quiet:
                sys.stderr.write(line)
                sys.stderr.flush()

    def theirs(stream) -> None:
        for line in stream:
            tail.append(line.rstrip("\n"))
            job_log.write(line)

    readers = [
        threading.Thread(target=ours, args=(proc.stdout,), daemon=True),
        threading.Thread(target=theirs, args=(proc.stderr,), daemon=True),
    ]
    for r in readers:
        r.start()
    interrupted = False
    main_thread = threading.current_thread() is threading.main_thread()

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")

    old = signal.signal(signal.SIGTERM, on_term) if main_thread else None
    try:
        try:
            rc = proc.wait()
        except KeyboardInterrupt:
            interrupted = True
            _stop(proc)
            rc = 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, old)
    for r in readers:
        r.join(timeout=5)
    job_log.close()
    result = _finish(L, rc, interrupted, list(tail))
    if interrupted:
        return 130, result
    return (0 if rc == 0 and result.status == "succeeded" else 1), result


def in_process_command(args) -> list[str]:
    """The `tuneplan run` command line a 1-process run really executes (no launcher)."""
    cmd = ["tuneplan", "run", str(args.plan)]
    for flag, attr in (
        ("--data", "data"),
        ("--db", "db"),
        ("--output", "output"),
        ("--max-steps", "max_steps"),
        ("--model-path", "model_path"),
    ):
        value = getattr(args, attr, None)
        if value is not None:
            cmd += [flag, str(value)]
    if getattr(args, "trust_remote_code", False):
        cmd.append("--trust-remote-code")
    return cmd


def dry_run_in_process(args) -> int:
    """--dry-run of a 1-process plan: the run goes in-process (strategy none, no accelerate launch),
    so that is what is printed, after the same input checks the real run makes first."""
    from ..preflight import data_file
    from ..run.prepare import load_plan

    plan, plan_file, _ = load_plan(getattr(args, "loaded_plan", None) or args.plan)
    spec = plan.data
    train_value = getattr(args, "data", None) or (spec.train_path if spec else None)
    if not train_value:
        raise InputError.one(
            "data.train_path", "no training data given", "pass --data PATH or set data.train_path in the plan"
        )
    data_path = data_file(
        train_value,
        "--data" if getattr(args, "data", None) else "data.train_path",
        plan_file.parent if plan_file else None,
    )
    t = plan.training
    device = "cuda:0" if D._cuda_available() else "cpu"
    planned = plan.distributed.num_processes
    lines = [
        f"# 1 process, in-process (no accelerate launch, no torchrun), strategy none, device {device}; "
        f"effective batch = {t.per_device_batch_size} x {t.gradient_accumulation_steps} x 1 = "
        f"{t.per_device_batch_size * t.gradient_accumulation_steps}"
    ]
    if planned > 1:
        lines.append(f"# note: the plan asks for {planned} processes; --num-processes 1 runs one")
    lines += [f"# data {data_path}", "# command", shlex.join(in_process_command(args))]
    print("\n".join(lines))
    return 0


def launch(plan_path: str, args, print_summary: Optional[Callable[[RunResult], None]] = None) -> int:
    """Entry point from `tuneplan run` (cli/run.py): dry run or launch; returns the exit code.

    ``print_summary`` prints a succeeded run's result (the command line passes its own, so the
    executor never imports the layer above it)."""
    L = Launch(plan_path, args)
    if L.dry_run:
        print(L.render())
        return 0
    code, result = run_launch(L)
    if code == 130:
        from ..checkpoint import resume_hint

        print(f"interrupted: {interrupted_message(L.recorded)}", file=sys.stderr)
        hint = resume_hint(L.run_dir)
        if hint:
            print(hint, file=sys.stderr)
        return 130
    if result.status != "succeeded":
        print(f"error: run failed: {result.error}", file=sys.stderr)
        print(
            f"  run directory: {L.run_dir} (result.json, metrics.jsonl, run.log, error-rank*.txt)",
            file=sys.stderr,
        )
        return 1
    if print_summary is not None:
        print_summary(result)
    return 0


def interrupted_message(recorded) -> str:
    """What an interrupted launch recorded, as it is on disk: "the run was recorded as interrupted"
    only when result.json and the database row both say so."""
    if recorded.result_status == "interrupted" and recorded.db_status == "interrupted":
        return f"the run was recorded as interrupted; run directory {recorded.run_dir}"
    return f"the run could not be fully recorded as interrupted: {recorded.describe()}"


def _is_consequence(error: str) -> bool:
    """Whether a rank's error only reports that another rank went away."""
    return any(k in error for k in ("Connection closed by peer", "Connection reset by peer", "Broken pipe"))
