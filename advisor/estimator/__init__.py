"""The memory estimator: peak training memory per device, itemised, for full FT, LoRA and QLoRA.

Pure: standard library + pydantic only (through tuneplan.schemas), no torch, no I/O. Everything is
integer bytes; every line (`MemoryTerm`) carries its arithmetic with the numbers used and cites its
formula's source by id from one table (citations.py). The model — the two phases of a step, what
each term counts, the known limits — is written up in docs/memory-model.md.

One module per group of terms, assembled by peak.estimate:

  weights.py      base weights by method and precision, NF4 + quantisation constants, adapters,
                  an untied lm_head
  optimizer.py    gradients and optimizer states (AdamW 32-bit, 8-bit, paged; ZeRO's fp32 master)
  sharding.py     states over devices (ZeRO-2, FSDP/ZeRO-3) or offloaded; DDP buckets, FSDP gather
  activations.py  saved tensors per block (Korthikanti et al. re-derived), checkpointing, the backward
                  working set, activation offload
  loss.py         logits and loss buffers (unchunked, chunked, compiled)
  overhead.py     CUDA context or CPU process, allocator fragmentation
  peak.py         peak = states + max(loss peak, end of backward) + overhead; calibration
  common.py       units, formula-text formats, the dtype regime, parameter counts
  citations.py    id -> readable source, used by every term
"""

from __future__ import annotations

from .common import DEFAULT_HEADROOM
from .peak import estimate

__all__ = ["DEFAULT_HEADROOM", "estimate"]
