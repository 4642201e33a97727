"""Resumable checkpoints through accelerate's state API (``save_state`` / ``load_state``).

Layout under the run directory::

  checkpoints/step-<N>/          one complete checkpoint (the newest is resumed from)
    custom_checkpoint_<i>.pkl    registered objects: trainable weights (the adapter alone for
                                 LoRA/QLoRA), optimizer (one process; FSDP on CPU: both gathered
                                 from the shards), scheduler, grad scaler, loop state (step, data
                                 position, metrics so far, best eval)
    optimizer.bin, ...           what accelerate saves itself for prepared objects (several
                                 processes: the optimizer; FSDP/DeepSpeed: sharded model states)
    random_states_<rank>.pkl     RNG states of every process (python, numpy, torch, cuda)
    tuneplan_checkpoint.json     manifest, written last: plan hash, step, the run's total steps,
                                 number of processes, every file's bytes and sha256
  checkpoints/.tmp-step-<N>/     a save in progress; never resumed from, removed on the next save

A save writes into ``.tmp-step-<N>``, adds the manifest, then renames the directory into place
(``os.replace``, atomic on POSIX), so a checkpoint is either complete or not there. The oldest
complete checkpoints beyond ``training.save_total_limit`` are deleted only after the new one is in
place, so a failed save (a full disk) leaves the previous checkpoint good.

Loading checks the manifest (present, same plan hash, every file's size and sha256) before
anything is restored: a problem is an :class:`InputError` (exit 2) naming it and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Optional

from tuneplan.base.errors import InputError

MANIFEST = "tuneplan_checkpoint.json"
DIR_NAME = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointFailed(Exception):
    """A checkpoint could not be written; the previous one (if any) is intact."""


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / DIR_NAME


def complete_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, dir) of the checkpoints whose directory is in place, oldest first (not verified)."""
    root = checkpoint_root(run_dir)
    out = []
    if root.is_dir():
        for p in root.iterdir():
            m = _STEP_DIR.match(p.name)
            if m and p.is_dir():
                out.append((int(m.group(1)), p))
    return sorted(out)


def newest_checkpoint(run_dir: Path) -> Optional[Path]:
    found = complete_checkpoints(run_dir)
    return found[-1][1] if found else None


def resume_hint(run_dir) -> Optional[str]:
    """The line that tells how to continue an interrupted run, when it left a checkpoint."""
    ckpt = newest_checkpoint(Path(run_dir)) if run_dir else None
    if ckpt is None:
        return None
    return f"tuneplan: checkpoint {ckpt.name} is in it; continue with: tuneplan run --resume {run_dir}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(root: Path) -> dict[str, dict[str, Any]]:
    return {
        str(f.relative_to(root)): {"bytes": f.stat().st_size, "sha256": _sha256(f)}
        for f in sorted(root.rglob("*"))
        if f.is_file() and f.name != MANIFEST
    }


def verify(path: Path, plan_hash: Optional[str]) -> dict:
    """The manifest of a complete, intact checkpoint of this plan; InputError otherwise."""
    where = f"--resume ({path})"
    fix_other = (
        "resume from an older checkpoint by deleting this one, or start a new run with `tuneplan run PLAN`"
    )
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise InputError.one(
            where,
            f"checkpoint {path.name} has no {MANIFEST}: it is partial (its save was cut short)",
            fix_other,
        )
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        files = manifest["files"]
        step = int(manifest["step"])
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise InputError.one(
            where, f"checkpoint {path.name}: unreadable manifest ({exc})", fix_other
        ) from None
    if plan_hash is not None and manifest.get("plan_hash") != plan_hash:
        raise InputError.one(
            where,
            f"checkpoint {path.name} was written for plan {manifest.get('plan_hash')}, "
            f"not this plan ({plan_hash})",
            "resume with the run's own plan (omit PLAN: its plan.json is used), or "
            "start a new run with this plan",
        )
    bad = []
    for rel, meta in files.items():
        f = path / rel
        if not f.is_file():
            bad.append(f"{rel} missing")
        elif f.stat().st_size != meta.get("bytes"):
            bad.append(f"{rel} is {f.stat().st_size} bytes, expected {meta.get('bytes')}")
        elif _sha256(f) != meta.get("sha256"):
            bad.append(f"{rel} sha256 mismatch")
    if bad:
        raise InputError.one(
            where, f"checkpoint {path.name} (step {step}) is corrupt: {'; '.join(bad[:5])}", fix_other
        )
    return manifest


def _same_names(saved, want) -> None:
    """InputError unless a checkpoint's weight names are the model's trainable ones."""
    saved, want = set(saved), set(want)
    if saved != want:
        raise InputError.one(
            "--resume",
            f"checkpoint weights do not match the model (missing {sorted(want - saved)[:3]}, "
            f"unexpected {sorted(saved - want)[:3]})",
            "resume with the run's own plan and model",
        )


class _Trainable:
    """The trainable parameters only (all of them for full fine-tuning, the adapter for LoRA)."""

    def __init__(self, model) -> None:
        self.model = model

    def _params(self) -> dict:
        base = getattr(self.model, "module", self.model)
        return {n: p for n, p in base.named_parameters() if p.requires_grad}

    def state_dict(self) -> dict:
        return {n: p.detach().cpu().clone() for n, p in self._params().items()}

    def load_state_dict(self, sd: dict) -> None:
        import torch

        params = self._params()
        _same_names(sd, params)
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(sd[n].to(p.device, p.dtype))


def _full_state(**kw):
    """torch.distributed.checkpoint's options for one full (unsharded) state dict."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


# FSDP2 applied by hand (CPU, executor/distributed/context.py): the trainable weights and the
# optimizer's states are DTensor shards that accelerate's state API does not know. The two objects
# below gather them into one full state dict when saved (a collective: every rank calls
# state_dict; rank 0 holds the result on its host and accelerate writes it) and give every rank
# the full dict to shard again when loaded - torch.distributed.checkpoint's state_dict API, the
# one FSDP2's docs point to. The files are those of one process, with the same values.


class _GatheredWeights(_Trainable):
    """The trainable weights of a hand-sharded FSDP2 model, as one full state dict."""

    def state_dict(self) -> dict:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        keep = self._params()
        full = get_model_state_dict(self.model, options=_full_state(cpu_offload=True))
        return {n: t for n, t in full.items() if n in keep}

    def load_state_dict(self, sd: dict) -> None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        _same_names(sd, self._params())
        set_model_state_dict(self.model, sd, options=_full_state(strict=False))


class _GatheredOptimizer:
    """The optimizer of a hand-sharded FSDP2 model, as one full state dict."""

    def __init__(self, model, optimizer) -> None:
        self.model, self.optimizer = model, optimizer

    def state_dict(self) -> dict:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(self.model, self.optimizer, options=_full_state(cpu_offload=True))

    def load_state_dict(self, sd: dict) -> None:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        set_optimizer_state_dict(self.model, self.optimizer, sd, options=_full_state())


class _StateDict:
    """Adapter: any object exposing get()/set(dict) as state_dict/load_state_dict."""

    def __init__(self, get, put) -> None:
        self.get, self.put = get, put

    def state_dict(self) -> dict:
        return self.get()

    def load_state_dict(self, sd: dict) -> None:
        self.put(sd)


class Checkpointer:
    """Saves and restores the whole training state through one accelerate Accelerator."""

    def __init__(
        self,
        run_dir: Path,
        plan_hash: str,
        *,
        keep: int,
        model,
        optimizer,
        scheduler,
        scaler,
        loop_get,
        loop_put,
        device,
        dist=None,
        total_steps: Optional[int] = None,
    ) -> None:
        self.root = checkpoint_root(run_dir)
        self.plan_hash = plan_hash
        self.total_steps = total_steps
        """The run's optimizer steps (its LR schedule is built on them): a resume keeps them."""
        self.keep = keep
        self.dist = dist
        self.saved = 0
        self.seconds: list[float] = []
        self.last_bytes: Optional[int] = None
        self.last_dir: Optional[Path] = None
        if dist is not None:
            acc = dist.accelerator
        else:
            from accelerate import Accelerator

            acc = Accelerator(cpu=device.type == "cpu")
        self.acc = acc
        prepared_model = any(True for _ in acc._models)
        prepared_opt = any(True for _ in acc._optimizers)
        sharded = dist is not None and (dist.strategy.startswith("deepspeed") or dist.strategy == "fsdp")
        objs: list[Any] = []
        if dist is not None and dist.manual_fsdp:  # FSDP2 by hand on CPU
            objs += [_GatheredWeights(model), _GatheredOptimizer(model, optimizer)]
        else:
            if not (sharded and prepared_model):
                objs.append(_Trainable(model))
                if prepared_model:  # DDP: accelerate would save the whole model; the trainable part is enough
                    acc.register_save_state_pre_hook(lambda models, weights, out: weights.clear())
                    acc.register_load_state_pre_hook(lambda models, inp: models.clear())
            if not prepared_opt:
                objs.append(optimizer)
        objs.append(scheduler)
        if scaler is not None:
            objs.append(scaler)
        objs.append(_StateDict(loop_get, loop_put))
        acc.register_for_checkpointing(*objs)

    @property
    def is_main(self) -> bool:
        return self.acc.is_main_process

    def save(self, step: int) -> Path:
        """Write checkpoint step-<step> atomically and prune old ones; CheckpointFailed on error."""
        t0 = time.perf_counter()
        final = self.root / f"step-{step}"
        tmp = self.root / f".tmp-step-{step}"
        try:
            if self.is_main:
                self.root.mkdir(parents=True, exist_ok=True)
                for stale in self.root.glob(".tmp-step-*"):
                    shutil.rmtree(stale, ignore_errors=True)
            self.acc.wait_for_everyone()
            self.acc.save_state(str(tmp), safe_serialization=True)
            self.acc.wait_for_everyone()
            if self.is_main:
                files = _files(tmp)
                manifest = {
                    "plan_hash": self.plan_hash,
                    "step": step,
                    "files": files,
                    "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "num_processes": self.acc.num_processes,
                    "total_steps": self.total_steps,
                }
                (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
                for f in tmp.iterdir():
                    with f.open("rb") as fh:
                        os.fsync(fh.fileno())
                if final.exists():
                    shutil.rmtree(final)
                os.replace(tmp, final)
                dfd = os.open(self.root, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
                for _, old in complete_checkpoints(self.root.parent)[: -self.keep]:
                    shutil.rmtree(old, ignore_errors=True)
                self.last_bytes = sum(m["bytes"] for m in files.values())
            self.acc.wait_for_everyone()
        except OSError as exc:
            if self.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            from .signals import no_space

            why = "no space left on device" if no_space(exc) else f"{type(exc).__name__}: {exc}"
            prev = newest_checkpoint(self.root.parent)
            keep = f"; the previous checkpoint {prev.name} is intact" if prev else "; no earlier checkpoint"
            raise CheckpointFailed(f"checkpoint at step {step} could not be written ({why}){keep}") from exc
        self.saved += 1
        self.seconds.append(time.perf_counter() - t0)
        self.last_dir = final
        return final

    def load(self, path: Path) -> dict:
        """Verify then restore everything saved in ``path``; returns its manifest."""
        manifest = verify(path, self.plan_hash)
        if manifest.get("num_processes", 1) != self.acc.num_processes:
            raise InputError.one(
                "--resume",
                f"checkpoint {path.name} was written by "
                f"{manifest.get('num_processes', 1)} processes, this run has "
                f"{self.acc.num_processes}",
                f"resume with --num-processes {manifest.get('num_processes', 1)}",
            )
        self.acc.load_state(str(path))
        self.last_dir = path
        return manifest
