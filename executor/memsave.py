"""Memory savers the plan can ask for: chunked cross-entropy and activation offloading.

Both are priced by the advisor's estimator (advisor/estimator/loss.py chunked_loss_parts,
advisor/estimator/activations.py offload_activation_terms) and measured against that price in
tests/test_memsave.py.

* chunked_token_loss_sum (training.loss_chunk_size): the model returns its final hidden states;
  lm_head, the fp32 upcast and cross_entropy run per chunk of c tokens under
  torch.utils.checkpoint (non-reentrant), so forward saves only the hidden states and each
  chunk's logits are rebuilt in backward. The full-vocabulary logits never exist at once (peak:
  one chunk's fp32 log-softmax and its two gradients). Cost: one more lm_head forward. Read with
  torchtune's CEWithChunkedOutputLoss (per-chunk upcast) and TRL's chunked losses in mind; the
  recomputation is what removes the saved log-softmax of every chunk as well.
* ActivationOffload (training.activation_offload): torch saved-tensor hooks, as torchtune's
  OffloadActivations (single-stream mode) and torch.autograd.graph.save_on_cpu: pack copies each
  saved tensor of at least MIN_OFFLOAD_BYTES that is not a parameter to (pinned) host memory and
  returns an id; unpack copies it back to the device as backward reaches it and forgets it. On a
  CPU device the host is the device: the hooks still copy into a separate host store, and record
  the bytes that store holds over time so the meter can report the device-side peak (what a GPU
  would hold); the run states that substitution.
"""

from __future__ import annotations

import time
import weakref
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .data import IGNORE_INDEX

MIN_OFFLOAD_BYTES = 1024
"""Saved tensors smaller than this stay where they are (torchtune's min_offload_size default)."""


# ----------------------------------------------------------------------------- chunked loss


def _unwrap(model):
    """The transformers CausalLM inside peft / DDP wrappers."""
    m = model
    for _ in range(4):
        if hasattr(m, "get_base_model"):
            m = m.get_base_model()
        elif hasattr(m, "module") and isinstance(m.module, torch.nn.Module):
            m = m.module
        else:
            break
    return m


def supports_chunked_loss(model) -> bool:
    """Whether the model exposes a decoder and an output head the chunked loss can call apart."""
    m = _unwrap(model)
    return callable(getattr(m, "get_decoder", None)) and m.get_output_embeddings() is not None


def hidden_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Final (normed) hidden states of the decoder, without the lm_head."""
    m = _unwrap(model)
    return m.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _chunk_loss(head, softcap: Optional[float], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = head(x)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits.float(), y, ignore_index=IGNORE_INDEX, reduction="sum")


def chunked_token_loss_sum(model, hidden: torch.Tensor, labels: torch.Tensor, chunk: int) -> torch.Tensor:
    """Sum of next-token cross-entropy over non-ignored positions, lm_head applied per chunk of
    `chunk` tokens and recomputed in backward (fp32 loss, same value as train.token_loss_sum)."""
    m = _unwrap(model)
    head = m.get_output_embeddings()
    softcap = getattr(m.config, "final_logit_softcapping", None)
    h = hidden[:, :-1, :].reshape(-1, hidden.size(-1))
    y = labels[:, 1:].to(hidden.device).reshape(-1)
    total = hidden.new_zeros((), dtype=torch.float32)
    for i in range(0, h.size(0), chunk):
        xi, yi = h[i : i + chunk], y[i : i + chunk]
        if not bool((yi != IGNORE_INDEX).any()):
            continue
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_loss, head, softcap, xi, yi, use_reentrant=False)
        else:
            total = total + _chunk_loss(head, softcap, xi, yi)
    return total


# ----------------------------------------------------------------------------- activation offload


class ActivationOffload(torch.autograd.graph.saved_tensors_hooks):
    """Saved-tensor hooks that keep what autograd saves in host memory between forward and backward.

    device: the training device. params: the model's parameters; a saved tensor sharing storage with
    one (F.linear saves its weight for the input gradient, as a plain tensor, not the Parameter
    object) stays put, else every frozen weight would be copied out and back each micro-batch.
    observe: called with every saved tensor before it is moved (the memory meter's saved-tensor
    count). host_events: when given, (time_ns, +/-bytes) of the host store are appended, so a CPU
    run can take them out of its device-side peak.
    """

    def __init__(
        self,
        device: torch.device,
        params=(),
        observe: Optional[Callable[[torch.Tensor], None]] = None,
        host_events: Optional[list] = None,
    ) -> None:
        self.keep = {p.untyped_storage().data_ptr() for p in params}
        self.device = device
        self.pin = device.type == "cuda"
        self.store: dict[int, tuple[torch.Tensor, bool]] = {}
        self._copies: dict[tuple, tuple] = {}
        """(storage ptr, offset, shape, stride, dtype) -> (weakref to the saved tensor, [host copy,
        saves still to unpack]): one tensor saved by several ops (a norm output read by the q/k/v
        adapters) is copied out once. Reused only while that tensor is alive, so an address the
        allocator has reused for a new tensor never aliases an old copy."""
        self.host_bytes = 0
        self.host_peak_bytes = 0
        self.events = host_events
        self._next = 0
        self._observe = observe
        super().__init__(self._pack, self._unpack)

    def _record(self, nbytes: int) -> None:
        self.host_bytes += nbytes
        self.host_peak_bytes = max(self.host_peak_bytes, self.host_bytes)
        if self.events is not None:
            self.events.append((time.time_ns(), nbytes))

    def _pack(self, t: torch.Tensor) -> int:
        if self._observe is not None:
            self._observe(t)
        self._next += 1
        key = self._next
        nbytes = t.numel() * t.element_size()
        if (
            nbytes < MIN_OFFLOAD_BYTES
            or isinstance(t, torch.nn.Parameter)
            or t.is_sparse
            or t.device.type == "meta"
            or t.untyped_storage().data_ptr() in self.keep
        ):
            self.store[key] = (t, False)
            return key
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        known = self._copies.get(ident)
        if known is not None and known[0]() is t and known[1][1] > 0:
            entry = known[1]
        else:
            # Counted before the copy exists, so a CPU device-side peak only ever dips, never spikes.
            self._record(nbytes)
            host = torch.empty(t.size(), dtype=t.dtype, layout=t.layout, device="cpu", pin_memory=self.pin)
            host.copy_(t)
            entry = [host, 0]
            self._copies[ident] = (weakref.ref(t), entry)
        entry[1] += 1
        self.store[key] = (entry, True)
        return key

    def _unpack(self, key: int) -> torch.Tensor:
        t, moved = self.store.pop(key)
        if not moved:
            return t
        entry = t
        host = entry[0]
        back = host.clone() if self.device.type == "cpu" else host.to(self.device, non_blocking=self.pin)
        entry[1] -= 1
        if entry[1] == 0:
            nbytes = host.numel() * host.element_size()
            entry[0] = None
            del host, entry, t
            self._record(-nbytes)
        return back


# ----------------------------------------------------------------------------- the training loop's view


class MemorySavers:
    """What train() calls per micro-batch: forward (logits, or hidden states when the loss is
    chunked), offload() (a context for the model forward) and loss."""

    def __init__(
        self,
        chunk: Optional[int],
        offload: bool,
        device: torch.device,
        meter,
        substitutions: list[str],
        params=(),
    ) -> None:
        self.params = list(params) if offload else []
        self.chunk = chunk
        self.offload_on = offload
        self.device = device
        self.meter = meter
        self.substitutions = substitutions

    def offload(self):
        if not self.offload_on:
            from contextlib import nullcontext

            return nullcontext()
        return ActivationOffload(
            self.device,
            self.params,
            observe=getattr(self.meter, "add", None),
            host_events=getattr(self.meter, "host_events", None),
        )

    def forward(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.chunk:
            return hidden_states(model, input_ids, attention_mask)
        return model(input_ids=input_ids, attention_mask=attention_mask).logits

    def loss(self, model, out: torch.Tensor, labels: torch.Tensor, plain: Callable) -> torch.Tensor:
        if self.chunk:
            return chunked_token_loss_sum(model, out, labels, self.chunk)
        return plain(out, labels)


def memory_savers(
    model, training, device: torch.device, meter=None, *, distributed: bool = False
) -> MemorySavers:
    """The plan's training.loss_chunk_size / activation_offload for this model and device, with the
    substitutions made (chunking needs the unwrapped model, so it is off under several processes)."""
    subs: list[str] = []
    chunk = getattr(training, "loss_chunk_size", None)
    offload = bool(getattr(training, "activation_offload", False))
    if chunk and distributed:
        subs.append(
            "training.loss_chunk_size: ignored under several processes (the wrapped model's "
            "forward must run whole); full-vocabulary loss instead"
        )
        chunk = None
    if chunk and not supports_chunked_loss(model):
        subs.append(
            "training.loss_chunk_size: ignored (this model has no separate decoder and output "
            "head to call apart); full-vocabulary loss instead"
        )
        chunk = None
    if offload and device.type != "cuda":
        subs.append(
            "training.activation_offload: on a CPU the host is the device; saved tensors are "
            "still copied to a host store, and the measured peak leaves that store out "
            "(what a GPU would hold)"
        )
    return MemorySavers(chunk, offload, device, meter, subs, model.parameters())
