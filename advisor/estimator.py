"""Peak training memory per device, itemised, for full fine-tuning, LoRA and QLoRA.

Pure: standard library + pydantic only (through tuneplan.schemas), no torch, no I/O. Everything is
integer bytes and every line (`MemoryTerm`) carries the arithmetic with the numbers used and the
source of the formula (tags refer to ../shared/research/facts.md: [P] primary, [S] secondary,
[D] derived, [M] measured here with torch on CPU).

The model
---------
peak = states + max(loss peak, end of backward) + framework overhead, all per device, where

  loss peak        = saved activations + logits/loss buffers (+ the gradients, if they persist)
  end of backward  = all gradients + the backward working set W (block 0 back-propagated: its
                     saved tensors, or its recomputation and checkpointed input under gradient
                     checkpointing, plus its gradient transients; QLoRA's dequantised weight)

and states = weights, quantisation constants, adapters, optimizer states and persistent buffers
(DDP allreduce buckets, FSDP all-gather buffers). In between, backward frees a block's saved tensors
as it creates that block's gradients, so memory moves linearly between the two ends. The gradients
persist, and are resident at the loss peak, when settings.gradient_accumulation_steps > 1 (they
accumulate across micro-batches) and under DeepSpeed ZeRO (flat gradient partitions kept allocated;
assumed, conservative); with accumulation 1 and zero_grad(set_to_none=True), as the executor runs
it, they do not exist before backward ([M] torch.profiler, SmolLM2-135M full fp32 on CPU: counting
them on top of the loss peak over-predicted the step by 13.5%).
Itemisation: the activation and logits/loss terms always show the loss-peak inventory in full;
gradient terms that do not persist count only max(0, G + W − A) (A = activations + loss buffers,
G = those gradients), i.e. the part that exceeds what backward has freed, and their formula text
states both phases. So the breakdown sums to the peak, every component is >= 0, and a
"gradients" component below the stored gradient bytes means the peak is the loss peak (estimate
with gradient_accumulation_steps=2 to see the gradients as stored).

* Model states (facts 6a). full fine-tuning with AdamW is 16 B/param under mixed precision (ZeRO
  §3.1: 2+2+12; HF anatomy: fp32 weights 4 + fp32 grads 4 + AdamW 8); pure bf16 is 2+2+4 = 8;
  fp32 is 4+4+8 = 16 (Biderman App. H). 8-bit AdamW keeps 2 B/param of state (HF anatomy);
  paged-adamw-32bit keeps 8. Paged states are counted as device memory: paging only starts when
  the GPU runs out (bitsandbytes docs), so a plan that needs it does not "fit".
  LoRA: frozen base in 16 bits (fp32 under fp32) + fp32 adapters (4 weights + 4 grads + states).
  QLoRA: the block linear weights in NF4 (4 bits) + block constants (8/64 + 32/(64*256) bits/param
  with double quantisation, 32/64 when settings.double_quant is False; QLoRA §3, bitsandbytes
  quantize_4bit); embeddings, lm_head and norms are not quantised. As the executor runs QLoRA
  (estimate(kbit_upcast=True), the default), peft's prepare_model_for_kbit_training then casts
  every 16-bit parameter that is not Params4bit to fp32: +2 B/param on those, an fp32 residual
  stream and fp32 gate/up outputs (Linear4bit casts back to its input dtype), and a 16-bit autocast
  cast of the fp32 lm_head saved for backward. kbit_upcast=False keeps them 16-bit (torchtune,
  the QLoRA paper's qlora.py).
* Activations: an inventory of the tensors autograd saves in one decoder block, derived from
  Korthikanti et al. 2022 (sbh(34+5as/h) for a GPT block) and re-derived for the actual
  architecture: RMSNorm (fp32 upcast input + normalised output), GQA (k, v are kv_heads*head_dim
  wide), gated MLP (gate, up, act and product are `intermediate_size` wide), no dropout in
  Llama-style blocks. sdpa/flash store q, k, v, the output and an fp32 logsumexp; eager attention
  also stores the fp32 softmax (b*a*s*s) and its cast. Linear layers save their input only when
  their weight is trainable; a LoRA target saves its dropout mask, the adapter input and the
  rank-wide A output (peft applies dropout per module, so each target keeps its own copy). With
  settings.lora_dropout == 0 peft uses nn.Identity: no mask, and no per-target copy unless a cast
  (autocast, or input dtype != fp32 adapters) makes one; then each shared input is saved once.
  Under *-mixed full fine-tuning autocast makes a 16-bit copy of a linear's fp32 input per
  linear, and caches a 16-bit copy of every weight it casts (saved for backward; HF anatomy's
  "fp32 + 16-bit copy"). Gradient checkpointing keeps each block's input (Korthikanti's 2sbh, in
  the residual stream's dtype) plus one block's full inventory and its gradient transients while
  it is recomputed; that phase comes after the loss buffers are freed, so only its excess over
  them is added.
  The inventory was checked against torch (saved_tensors_hooks and peak RSS) on a tiny Llama on
  CPU in fp32, where it matches to within a few percent (tests/test_estimator.py).
* Logits and loss: transformers 5's ForCausalLMLoss (and the executor's loss) upcasts the logits
  to fp32 and calls cross_entropy (log_softmax + nll). In forward the logits, their fp32 copy and
  the saved fp32 log-softmax coexist (b*s*V*(2+4+4) under 16-bit); the caller drops the logits
  before backward, where the saved log-softmax, nll_loss's fp32 gradient and log_softmax's fp32
  input gradient coexist: b*s*V*(4+4+4), the larger, under 16-bit and fp32 alike (checked with
  peak RSS on CPU). settings.loss_chunk_size models the executor's chunked cross-entropy
  (executor/memsave.py: lm_head + loss per chunk under torch.utils.checkpoint): the hidden states
  are saved and one chunk's three fp32 c·V buffers exist at a time; settings.activation_offload
  moves the saved activations to host RAM (host_bytes) and keeps one block in flight;
  estimate(compiled_loss=True) models a torch.compile'd loss, which saves the 16-bit logits instead
  (checked with saved_tensors_hooks on CPU). Fused kernels (Liger, CCE) are not modelled.
* Framework overhead: CUDA context, cuBLAS workspace and kernels (0.75 GiB; facts: "about
  1-2 GB" [S], counted conservatively low because the caller also keeps DEFAULT_HEADROOM free)
  plus 5% of the churned allocations (activations and logits) for caching-allocator
  fragmentation. On CPU: the Python + torch + transformers + peft process (0.375 GiB, measured
  VmRSS 386 MiB with torch 2.13 / transformers 5) plus the same 5%.
* Sharding (facts 6b, ZeRO paper): none/ddp replicate all states (DDP also holds gradient-sized
  allreduce buckets); deepspeed-zero2 shards gradients and optimizer states over num_devices;
  fsdp/deepspeed-zero3 also shard the parameters and add an all-gather buffer of one block (x2 for
  prefetch). cpu_offload moves optimizer states (and, under fsdp/zero3, parameters and gradients)
  to host memory: 0 device bytes, with the host bytes stated in the term.

Limits (known)
--------------
* Sequence packing effects, torch.compile fusion outside the loss and fused losses lower real
  peaks; activation offload on top of gradient checkpointing (torchtune offloads the checkpointed
  inputs) is priced as moving nothing; tensor/sequence parallelism is not modelled.
* Activation offload host_bytes is the unique saved-tensor inventory; the executor's hooks copy a
  few shared tensors twice (measured 183 vs 147 MiB host store on the embedded model at 128 tokens).
* GPT-2-style blocks are approximated (tanh-GELU intermediates and attention dropout are not
  itemised); Gemma 2 soft-capping tensors are not itemised.
* The kbit_upcast activation effects (fp32 residual/MLP outputs, lm_head cast) are derived from
  the peft/bitsandbytes/autocast source, not measured on a GPU.
* Allocator behaviour is summarised by one fragmentation share; peaks reported by
  torch.cuda.max_memory_allocated exclude the CUDA context and cudaMallocManaged (paged) memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from tuneplan.schemas import (
    MemoryBreakdown,
    MemoryEstimate,
    MemorySettings,
    MemoryTerm,
    ModelSpec,
)

from .modelspec import resolve_targets
from .moe import active_ffn_width

DEFAULT_HEADROOM = 0.10
"""Fraction of device capacity kept free for allocator fragmentation and transient spikes.
accelerate's model-size docs tell users to "add up to an additional 20%" on top of an estimate
(facts 6a [P]); the estimate already itemises the known transients, so 10% is kept in reserve."""

GiB = 1024**3
MiB = 1024**2

CUDA_CONTEXT_BYTES = 3 * GiB // 4
"""CUDA context + cuBLAS workspace + kernel images: facts 6c/R-memory "about 1-2 GB" [S]; 0.75 GiB
is the low end of what nvidia-smi shows for an idle torch process on recent GPUs."""
CPU_RUNTIME_BYTES = 384 * MiB
"""Resident memory of `import torch, transformers, peft` + model classes: measured VmRSS 386 MiB
(torch 2.13 CPU, transformers 5, this repository's .venv)."""
FRAGMENTATION_SHARE = 0.05
"""Share of the churned allocations (activations, logits) lost to caching-allocator
fragmentation (reserved minus allocated); an assumption, kept small because DEFAULT_HEADROOM
also absorbs it."""

# ----------------------------------------------------------------------------- sources

SRC_ZERO = "ZeRO (Rajbhandari et al. 2020, arXiv 1910.02054) §3.1 and Fig. 1; facts 6a/6b [P]"
SRC_HF_ANATOMY = "HF transformers docs 'Anatomy of Model's Memory' (18/16 B/param, 8-bit AdamW 2 B); facts 6a [P]"
SRC_BIDERMAN_H = "Biderman et al. 2024 App. H (fp32 Adam 4+4+8 B/param; LoRA 2Ψ+16Ψ_lora); facts 3/6a [P]"
SRC_PURE_BF16 = "pure bf16 AdamW 2+2+4 B/param; facts 6a [D] (LLaMA-Factory 'pure_bf16' 8x GB row)"
SRC_LORA = "LoRA (Hu et al. 2021) §4.1-4.2: only A,B trained, frozen W0 keeps no grads/states; facts 1, 6a [P]/[D]"
SRC_NF4 = "QLoRA (Dettmers et al. 2023) §3 NF4 4-bit storage; bitsandbytes quantize_4bit blocksize 64; facts 2a/2c [P]"
SRC_DQ = "QLoRA §3 double quantisation 8/64 + 32/(64*256) = 0.127 bits/param (0.5 without); facts 2a/2c [P]/[D]"
SRC_KBIT_UPCAST = ("peft utils/other.py prepare_model_for_kbit_training: 'cast all non INT8 parameters to fp32' "
                   "(every fp16/bf16 param that is not Params4bit: embeddings, lm_head, norms, biases); "
                   "executor/models.py calls it on the QLoRA path")
SRC_CHUNKED_CE = ("torchtune modules/loss/ce_chunked_output_loss.py CEWithChunkedOutputLoss: the model returns "
                  "the 16-bit logits in num_output_chunks pieces, each upcast with .float() only inside "
                  "cross_entropy of its chunk; facts 6c (chunked CE) [P]/[D]")
SRC_CHUNKED_RECOMPUTE = ("executor/memsave.py chunked_token_loss_sum: lm_head + fp32 cross_entropy per chunk of "
                         "loss_chunk_size tokens under torch.utils.checkpoint (recomputed in backward), so only the "
                         "hidden states are saved; one chunk's log_softmax output + nll_loss and log_softmax "
                         "gradients (3 fp32 c·V buffers) at a time; torchtune CEWithChunkedOutputLoss (per-chunk "
                         "upcast) [D]; [M] tests/test_memsave.py on the embedded model")
SRC_ACT_OFFLOAD = ("torchtune training/_activation_offloading.py OffloadActivations (saved_tensors_hooks: pack "
                   "copies each saved tensor >= 1 KiB that is not a parameter to CPU, unpack brings it back in "
                   "backward); torch.autograd.graph.save_on_cpu; executor/memsave.py ActivationOffload [D]; "
                   "[M] tests/test_memsave.py on the embedded model")
SRC_COMPILED_CE = (SRC_CHUNKED_CE + "; torch.compile'd cross_entropy saves the 16-bit input + fp32 logsumexp, "
                   "[M] saved_tensors_hooks on CPU (2.016 vs eager 4.0085 B per logit element)")
SRC_KEEP16 = "transformers get_keys_to_not_convert keeps lm_head/embeddings unquantised; facts 2c [P]"
SRC_DEQUANT = "bitsandbytes MatMul4Bit: dequantize_4bit(W) to the compute dtype per matmul (forward and backward); QLoRA §3 [P]"
SRC_PAGED = "bitsandbytes optimizers docs: paging 'only becomes active if you run out of GPU memory'; facts 2c [P]"
SRC_KORTHIKANTI = ("Korthikanti et al. 2022 (arXiv 2205.05198) Eq. 1 sbh(34+5as/h), re-derived per tensor for this "
                   "architecture (RMSNorm, GQA, gated MLP, no dropout); facts 6c [S]; checked vs torch saved "
                   "tensors on CPU [M]")
SRC_ATTN_SDPA = ("sdpa/flash store q, k, v, output and fp32 logsumexp, never the s*s scores; facts 6c [S] "
                 "('FlashAttention never materialises the s x s scores'); [M] saved tensors on CPU")
SRC_ATTN_EAGER = ("Korthikanti 5as/h attention-score term; transformers eager_attention_forward keeps "
                  "softmax(dtype=float32) and its cast; [M] saved tensors on CPU")
SRC_LORA_ACT = ("peft lora.Linear.forward: x cast to the adapter dtype, per-module dropout (mask saved), "
                "lora_A saves its input, lora_B saves A's r-wide output; frozen base linears save no input "
                "(autograd saves a matmul input only when the weight needs a grad) [D]; QLoRA §2 memory [P]")
SRC_GC = ("Korthikanti et al. 2022 full recomputation: 2sbh per layer (layer input only) + one layer "
          "recomputed during backward; facts 6c [S]")
SRC_LOGITS = ("transformers 5 loss_utils.ForCausalLMLoss (logits.float() + cross_entropy = log_softmax + "
              "nll_loss); facts 6c logits b*s*V [P]/[D]; [M] peak RSS on CPU fp32")
SRC_CUDA_CTX = "CUDA context/kernels 'about 1-2 GB' (facts 6a/Memory model notes [S]); 0.75 GiB chosen"
SRC_CPU_RT = "measured VmRSS of python + torch 2.13 + transformers 5 + peft imports: 386 MiB [M]"
SRC_FRAG = "caching-allocator fragmentation share (assumption, 5% of activations+logits); accelerate '+~20%' [P]"
SRC_DDP = ("PyTorch DistributedDataParallel docs: gradient_as_bucket_view=False (default) keeps allreduce "
           "buckets the size of all gradients")
SRC_FSDP_GATHER = ("FSDP/ZeRO-3 all-gather one block's parameters before use, next block prefetched (x2); "
                   "ZeRO §5 / facts 6b [P]/[D]")
SRC_OFFLOAD = "ZeRO-Offload / FSDP CPUOffload: optimizer states (and params/grads under zero3/fsdp) live in host RAM; facts 6b [S]"

Component = Literal[
    "weights", "quantization_constants", "adapter_weights", "gradients",
    "optimizer_states", "activations", "logits_and_loss", "framework_overhead",
]

# ----------------------------------------------------------------------------- helpers


def _n(x: int | float) -> str:
    """Format a number with thousands separators for formula text."""
    if isinstance(x, float) and not x.is_integer():
        return f"{x:,.6g}"
    return f"{int(x):,}"


def _gib(x: int) -> str:
    """Format bytes as GiB for labels."""
    return f"{x / GiB:.2f} GiB"


def _ceil_div(a: int, b: int) -> int:
    """Integer ceiling division (shards round up: the largest rank holds the remainder)."""
    return -(-a // b)


@dataclass(frozen=True)
class _Regime:
    """Derived dtypes and switches for one (method, precision, device) combination."""

    method: str
    precision: str
    device: str
    act: int
    """Bytes per element of tensors produced by matmuls (compute dtype): 2 under bf16/fp16, 4 fp32."""
    resid: int
    """Bytes per element of the residual stream / norm outputs: 4 when the weights are fp32."""
    autocast: bool
    """torch.autocast is active (mixed precision or 16-bit LoRA with fp32 adapters)."""
    cast_per_linear: bool
    """Full fine-tuning under *-mixed: each linear saves its own 16-bit cast of an fp32 input."""
    adapter_in: int
    """Bytes per element of a LoRA adapter's saved input (fp32 adapters; 2 when autocast re-casts)."""
    mask: int
    """Bytes per element of a dropout mask: bool on CUDA, input dtype on CPU."""
    mlp_out: int
    """Bytes per element of the gate/up outputs and their product (4 when a 4-bit base's outputs are
    cast back to an fp32 residual stream)."""
    kbit_upcast: bool
    """QLoRA under peft's prepare_model_for_kbit_training: non-quantised params fp32, fp32 residual."""
    adapter_cast: bool
    """Each LoRA target makes its own copy of its input (autocast or a dtype cast to the adapters)."""


def _regime(method: str, precision: str, device: str, kbit_upcast: bool = False) -> _Regime:
    """Work out the storage dtypes that decide activation bytes for these settings.

    kbit_upcast (QLoRA as the executor runs it): peft's prepare_model_for_kbit_training casts every
    16-bit parameter that is not Params4bit to fp32, so the embedding output and the residual stream
    are fp32; bitsandbytes Linear4bit casts its input to the compute dtype and its output back to the
    input dtype (fp32), so gate/up outputs are fp32 too; the executor runs the adapters under autocast
    to the compute dtype (sdpa/flash then see 16-bit q, k, v).
    """
    fp32 = precision == "fp32"
    mixed = precision in ("bf16-mixed", "fp16-mixed")
    act = 4 if fp32 else 2
    upcast = kbit_upcast and method == "qlora" and not fp32
    if method == "full":
        resid = 4 if (fp32 or mixed) else 2
        autocast = mixed
        cast_per_linear = mixed
    else:  # frozen 16-bit (or 4-bit) base: residual stream in the compute dtype
        resid = 4 if fp32 else 2
        autocast = mixed
        cast_per_linear = False
    mlp_out = act
    if upcast:
        resid, mlp_out, autocast = 4, 4, True
    adapter_in = 2 if autocast else 4
    mask = 1 if device == "cuda" else 4
    adapter_cast = autocast or act != 4 or resid != 4
    return _Regime(method, precision, device, act, resid, autocast, cast_per_linear, adapter_in, mask,
                   mlp_out, upcast, adapter_cast)


class _Terms:
    """Accumulates MemoryTerms."""

    def __init__(self) -> None:
        self.items: list[MemoryTerm] = []

    def add(self, component: Component, label: str, nbytes: int, formula: str, source: str) -> None:
        """Append one itemised line (bytes are clamped at 0 and made integer)."""
        self.items.append(
            MemoryTerm(component=component, label=label, bytes=max(0, int(nbytes)),
                       formula=formula, source=source)
        )


# ----------------------------------------------------------------------------- parameter counts


def _linear_weight_params(model: ModelSpec) -> int:
    """Weights (no biases) of all block linear layers: what bitsandbytes quantises."""
    return model.num_layers * sum(m.weight_params for m in model.linear_modules)  # all experts (moe.py)


def _block_params(model: ModelSpec) -> int:
    """Parameters of one decoder block (linears with biases + its norms)."""
    linear = model.params.linear // model.num_layers
    norms = max(0, model.params.norm - model.hidden_size) // model.num_layers
    return linear + norms


# ----------------------------------------------------------------------------- model states


@dataclass
class _Shard:
    """How each kind of state is divided over devices, and what is offloaded."""

    weights: int
    grads: int
    optim: int
    offload_params: bool
    offload_grads: bool
    offload_optim: bool
    note: str


def _sharding(settings: MemorySettings) -> _Shard:
    """Translate strategy/num_devices/cpu_offload into divisors (ZeRO stages, facts 6b)."""
    n = settings.num_devices
    s = settings.strategy
    off = settings.cpu_offload
    if s in ("none", "ddp"):
        return _Shard(1, 1, 1, False, False, off, f"{s}: replicated")
    if s == "deepspeed-zero2":
        return _Shard(1, n, n, False, False, off, f"ZeRO-2 over N_d={n}: gradients and optimizer states /N_d")
    # fsdp / deepspeed-zero3
    return _Shard(n, n, n, off, off, off, f"{s} over N_d={n}: parameters, gradients and optimizer states /N_d")


def _state_terms(t: _Terms, model: ModelSpec, st: MemorySettings, rg: _Regime, trainable: int,
                 targets: list[str], shard: _Shard) -> None:
    """Weights, quantisation constants, adapters, gradients and optimizer states."""
    P = model.total_params
    opt = st.optimizer
    zero_itemisation = st.strategy in ("deepspeed-zero2", "deepspeed-zero3")

    def place(component: Component, label: str, raw: int, divisor: int, offloaded: bool,
              formula: str, source: str) -> None:
        """Add a state term after sharding; offloaded states become a 0-byte host-memory note."""
        per_dev = _ceil_div(raw, divisor)
        shard_txt = f" / N_d={divisor}" if divisor > 1 else ""
        if offloaded:
            t.add(component, f"{label} — offloaded to host RAM ({_gib(per_dev)} per rank on the host)", 0,
                  f"{formula}{shard_txt} = {_n(per_dev)} B in host memory, 0 B on the device", SRC_OFFLOAD)
        else:
            t.add(component, label, per_dev, f"{formula}{shard_txt} = {_n(per_dev)} B", source)

    def optimizer_bytes(param_bytes: int) -> tuple[int, str, str]:
        """Optimizer state bytes per trainable param (without any fp32 master copy)."""
        if opt == "adamw":
            per = 2 * param_bytes
            return per, f"AdamW m+v in the parameter dtype ({param_bytes} B each)", (
                SRC_PURE_BF16 if param_bytes == 2 else SRC_HF_ANATOMY)
        if opt in ("adamw-8bit", "paged-adamw-8bit"):
            extra = " (paged: device-resident until the GPU runs out)" if opt.startswith("paged") else ""
            return 2, f"8-bit AdamW m+v (1 B each){extra}", SRC_HF_ANATOMY + ("; " + SRC_PAGED if extra else "")
        return 8, "paged 32-bit AdamW m+v (4 B each; device-resident until the GPU runs out)", (
            SRC_HF_ANATOMY + "; " + SRC_PAGED)

    if st.method == "full":
        if st.precision in ("bf16-mixed", "fp16-mixed"):
            if zero_itemisation:
                place("weights", "16-bit working copy of all parameters", 2 * P, shard.weights,
                      shard.offload_params, f"{_n(P)} params × 2 B", SRC_ZERO)
                place("gradients", "16-bit gradients of all parameters", 2 * P, shard.grads,
                      shard.offload_grads, f"{_n(P)} params × 2 B", SRC_ZERO)
                per, what, src = optimizer_bytes(4)
                place("optimizer_states", f"fp32 master weights (4 B) + {what}", (4 + per) * P, shard.optim,
                      shard.offload_optim, f"{_n(P)} params × (4 + {per}) B", SRC_ZERO + "; " + src)
            else:
                place("weights", "fp32 master weights (autocast computes in 16-bit)", 4 * P, shard.weights,
                      shard.offload_params, f"{_n(P)} params × 4 B", SRC_HF_ANATOMY + "; " + SRC_ZERO)
                place("gradients", "fp32 gradients of all parameters", 4 * P, shard.grads, shard.offload_grads,
                      f"{_n(P)} params × 4 B", SRC_HF_ANATOMY)
                per, what, src = optimizer_bytes(4)
                place("optimizer_states", what, per * P, shard.optim, shard.offload_optim,
                      f"{_n(P)} params × {per} B", src)
        else:
            pb = 4 if st.precision == "fp32" else 2
            src_w = SRC_BIDERMAN_H if pb == 4 else SRC_PURE_BF16
            place("weights", f"{'fp32' if pb == 4 else 'bf16'} weights", pb * P, shard.weights,
                  shard.offload_params, f"{_n(P)} params × {pb} B", src_w)
            place("gradients", f"{'fp32' if pb == 4 else 'bf16'} gradients", pb * P, shard.grads,
                  shard.offload_grads, f"{_n(P)} params × {pb} B", src_w)
            per, what, src = optimizer_bytes(pb)
            place("optimizer_states", what, per * P, shard.optim, shard.offload_optim,
                  f"{_n(P)} params × {per} B", src if opt != "adamw" else src_w)
        return

    # ---- LoRA / QLoRA: frozen base + fp32 adapters
    base_b = 4 if st.precision == "fp32" else 2
    if st.method == "lora":
        place("weights", f"frozen base weights in {'fp32' if base_b == 4 else '16-bit'}", base_b * P,
              shard.weights, shard.offload_params, f"{_n(P)} params × {base_b} B", SRC_LORA + "; " + SRC_BIDERMAN_H)
    else:
        qw = _linear_weight_params(model)
        rest = P - qw
        place("weights", "NF4 block linear weights (4 bits/param)", _ceil_div(qw, 2), shard.weights,
              shard.offload_params, f"{_n(qw)} params × 4 bits / 8", SRC_NF4)
        place("weights", "unquantised embeddings, lm_head, norms and biases",
              base_b * rest, shard.weights, shard.offload_params,
              f"{_n(rest)} params × {base_b} B", SRC_KEEP16)
        if rg.kbit_upcast:
            place("weights", "fp32 upcast of the unquantised parameters (prepare_model_for_kbit_training)",
                  (4 - base_b) * rest, shard.weights, shard.offload_params,
                  f"{_n(rest)} params × (4 − {base_b}) B", SRC_KBIT_UPCAST)
        blocks = _ceil_div(qw, 64)
        if st.double_quant:
            # 8-bit absmax per 64 weights + an fp32 absmax per 256 first-level constants.
            consts = blocks * 1 + _ceil_div(blocks, 256) * 4
            f = (f"{_n(qw)} params: {_n(blocks)} blocks of 64 × 1 B (8-bit absmax) + "
                 f"{_n(_ceil_div(blocks, 256))} × 4 B (fp32 absmax per 256 constants) "
                 f"[= 8/64 + 32/(64·256) bits/param]")
            label = "NF4 double-quantised block constants"
        else:
            consts = blocks * 4
            f = f"{_n(qw)} params: {_n(blocks)} blocks of 64 × 4 B (fp32 absmax) [= 32/64 bits/param]"
            label = "NF4 block constants (fp32 absmax, no double quantisation)"
        place("quantization_constants", label, consts, shard.weights, shard.offload_params, f, SRC_DQ)
    place("adapter_weights", f"LoRA A,B for {', '.join(targets)} (r={st.lora_rank}) in fp32", 4 * trainable,
          shard.weights, shard.offload_params, f"{_n(trainable)} adapter params × 4 B", SRC_LORA)
    place("gradients", "fp32 gradients of the adapters", 4 * trainable, shard.grads, shard.offload_grads,
          f"{_n(trainable)} adapter params × 4 B", SRC_LORA)
    per, what, src = optimizer_bytes(4)
    place("optimizer_states", f"{what} for the adapters", per * trainable, shard.optim, shard.offload_optim,
          f"{_n(trainable)} adapter params × {per} B", src)


# ----------------------------------------------------------------------------- activations


@dataclass
class _Item:
    """One saved tensor kind in a block: bytes per token and how it was computed."""

    group: str
    label: str
    per_token: int
    formula: str


def _block_inventory(model: ModelSpec, st: MemorySettings, rg: _Regime, targets: list[str]) -> list[_Item]:
    """Bytes per token saved for backward by ONE decoder block (no checkpointing).

    The groups: norms, attention core, attention scores (eager only), MLP internals, linear inputs
    (full fine-tuning), LoRA adapter inputs. Verified tensor-by-tensor against
    torch.autograd.graph.saved_tensors_hooks on a tiny Llama (fp32, CPU).
    """
    h, f = model.hidden_size, active_ffn_width(model)
    a, kv, hd = model.num_attention_heads, model.num_key_value_heads, model.head_dim
    q_w, kv_w = a * hd, kv * hd
    D, R = rg.act, rg.resid
    full = st.method == "full"
    gpt = model.family in ("gpt2", "gpt3")
    items: list[_Item] = []

    # Norms: RMSNorm keeps its fp32 upcast input (+ a 4 B rsqrt per token); LayerNorm its input (+ mean,
    # rstd). With a trainable norm weight, RMSNorm also keeps the normalised tensor for the weight grad.
    n_norms = 4 if model.family == "gemma2" else 2
    if gpt:
        per = n_norms * (R * h + 8)
        items.append(_Item("norms", f"{n_norms} LayerNorm inputs (+mean, rstd)", per,
                           f"{n_norms}·({R}·h + 8) = {n_norms}·({R}·{h} + 8)"))
    else:
        normed = R * h if full else 0
        per = n_norms * (4 * h + 4 + normed)
        items.append(_Item("norms", f"{n_norms} RMSNorm fp32 inputs + rsqrt" + (" + normalised (trainable weight)" if full else ""),
                           per, f"{n_norms}·(4·h + 4{f' + {R}·h' if full else ''}) with h={h}"))

    # Attention core.
    if st.attention in ("sdpa", "flash"):
        per = D * (q_w + 2 * kv_w + q_w) + 4 * a
        items.append(_Item("attention", "sdpa/flash: q, k, v, output (+fp32 logsumexp)", per,
                           f"{D}·(q {q_w} + k {kv_w} + v {kv_w} + out {q_w}) + 4·a {a}"))
    else:
        s = st.seq_len
        per_qkv = D * 3 * q_w
        cast = D * a * s if D == 2 else 0
        items.append(_Item("attention", "eager: q and k, v repeated to all heads", per_qkv,
                           f"{D}·3·a·head_dim = {D}·3·{q_w}"))
        items.append(_Item("scores", "eager: fp32 softmax(QK^T)" + (" + its 16-bit cast" if cast else ""),
                           4 * a * s + cast,
                           f"(4{' + ' + str(D) if cast else ''})·a·s = {4 + (D if cast else 0)}·{a}·{s}"))

    # MLP internals needed for input gradients regardless of which weights train.
    M = rg.mlp_out
    if model.gated_mlp:
        items.append(_Item("mlp", "gated MLP: gate, up and act(gate) outputs"
                           + (" (fp32: Linear4bit casts back to the fp32 input dtype)" if M != D else ""),
                           3 * M * f, f"3·{M}·ffn = 3·{M}·{f}"))
    else:
        items.append(_Item("mlp", "MLP: fc output (activation input)", M * f, f"{M}·ffn = {M}·{f}"))
    if gpt:
        items.append(_Item("mlp", "GPT-2 residual dropout masks (2 per block)", 2 * rg.mask * h,
                           f"2·{rg.mask}·h = 2·{rg.mask}·{h}"))

    # Inputs of the linear layers, grouped by the tensor they read.
    attn = [m for m in model.linear_modules if m.kind == "attention"]
    mlp = [m for m in model.linear_modules if m.kind == "mlp"]
    groups = [
        ("attention input (norm output)", attn[:-1], "norm"),
        ("attention output", attn[-1:], "attn_out"),
        ("MLP input (norm output)", mlp[:-1], "norm"),
        ("MLP hidden (down-projection input)", mlp[-1:], "hidden"),
    ]
    if full:
        per = 0
        parts: list[str] = []
        for label, mods, kind in groups:
            if not mods:
                continue
            width = mods[0].in_features
            if kind == "norm":
                if rg.cast_per_linear:  # autocast: one 16-bit copy per consuming linear
                    b = len(mods) * D * width
                    parts.append(f"{len(mods)}·{D}·{width} ({label}, autocast copy per linear)")
                else:
                    b = R * width
                    parts.append(f"{R}·{width} ({label})")
            elif kind == "attn_out":
                if st.attention in ("sdpa", "flash"):
                    continue  # the sdpa output itself (already counted) is what the projection saves
                b = D * width
                parts.append(f"{D}·{width} ({label}, contiguous copy)")
            else:
                b = D * width
                parts.append(f"{D}·{width} ({label})")
            per += b
        items.append(_Item("linear_inputs", "inputs saved by trainable linear layers", per, " + ".join(parts)))
    else:
        r = st.lora_rank or 0
        dropout = st.lora_dropout is None or st.lora_dropout > 0
        A = rg.adapter_in
        per = 0
        parts = []
        for _label, mods, kind in groups:
            shared_done = False
            for m in mods:
                if m.name not in targets:
                    continue
                if dropout:
                    # each target drops its own copy of the input and keeps the mask
                    b = (rg.mask + A) * m.in_features + A * r
                    parts.append(f"{m.name}: ({rg.mask} mask + {A} dropped input)·{m.in_features} + {A}·{r}")
                elif rg.adapter_cast:
                    # nn.Identity, but autocast/dtype cast still gives each lora_A its own copy
                    b = A * m.in_features + A * r
                    parts.append(f"{m.name}: {A}·{m.in_features} (cast input) + {A}·{r}")
                else:
                    # nn.Identity and no cast: lora_A saves the shared input tensor itself, once per
                    # input (the sdpa output is already counted in the attention core)
                    same = shared_done or (kind == "attn_out" and st.attention in ("sdpa", "flash"))
                    b = (0 if same else A * m.in_features) + A * r
                    parts.append(f"{m.name}: {'shared input' if same else f'{A}·{m.in_features}'} + {A}·{r}")
                    shared_done = True
                per += b
        if per:
            what = ("dropout mask + dropped input" if dropout else
                    "input (dropout 0: no mask, no dropped copy)") + " + A output per target"
            items.append(_Item("lora", f"LoRA: {what}", per, " + ".join(parts)))
    return items


def _block_phase(model: ModelSpec, st: MemorySettings, rg: _Regime, items: list[_Item]) -> tuple[int, str]:
    """Bytes per token while ONE block is back-propagated: its saved inventory plus its gradient
    transients (the gate/up gradients, 2·M·ffn; with eager attention the fp32 softmax gradients,
    8·a·s, while the MLP's saved tensors are already freed), and the formula text."""
    s = st.seq_len
    block = sum(i.per_token for i in items)
    f_mlp = active_ffn_width(model)
    mlp_saved = sum(i.per_token for i in items if i.group == "mlp")
    phase_mlp = block + 2 * rg.mlp_out * f_mlp
    phase_attn = block - mlp_saved + 8 * model.num_attention_heads * s if st.attention == "eager" else 0
    f = (f"max(block {_n(block)} + 2·{rg.mlp_out}·ffn {f_mlp}"
         + (f", block − MLP {_n(mlp_saved)} + 8·a·s (fp32 softmax grads)" if st.attention == "eager" else "")
         + ")")
    return max(phase_mlp, phase_attn), f


def _backward_working_set(model: ModelSpec, st: MemorySettings, rg: _Regime, targets: list[str]) -> tuple[int, str]:
    """Activation-like bytes still live at the end of backward, when every gradient exists.

    The last block back-propagated (block 0) still holds its saved tensors (recomputed under
    gradient checkpointing, plus its checkpointed input) and its gradient transients; everything the
    later blocks and the loss saved is already freed. QLoRA adds the dequantised-weight temporary.
    The state in between is linear in the number of blocks done (activations freed, gradients
    created), so the two ends bound the whole backward pass.
    """
    b, s, h = st.micro_batch, st.seq_len, model.hidden_size
    tokens = b * s
    items = _block_inventory(model, st, rg, targets)
    per, f = _block_phase(model, st, rg, items)
    out = per * tokens
    text = f"b·s·{f} = {b}·{s}·{_n(per)} = {_n(per * tokens)} B (block 0 back-propagated)"
    if st.gradient_checkpointing:
        ck = rg.resid * h * tokens
        out += ck
        text += f" + its checkpointed input b·s·h·{rg.resid} = {_n(ck)} B"
    if st.method == "qlora":
        big = max(m.in_features * m.out_features for m in model.linear_modules) * rg.act
        out += big
        text += f" + dequantised weight {_n(big)} B"
    return out, text


def _grads_persist(st: MemorySettings) -> tuple[bool, str]:
    """Whether the parameter gradients are resident during forward (and why)."""
    if st.gradient_accumulation_steps > 1:
        return True, (f"gradient accumulation {st.gradient_accumulation_steps}: gradients persist across "
                      f"micro-batches, so they are resident at the loss peak")
    if st.strategy in ("deepspeed-zero2", "deepspeed-zero3"):
        return True, ("DeepSpeed keeps its flat gradient partitions allocated across steps "
                      "(assumed, conservative)")
    return False, ("accumulation 1 with zero_grad(set_to_none=True): gradients are created during backward "
                   "while the saved activations are freed")


def _phase_max(terms: list[MemoryTerm], grad_idx: list[int], work: int, work_text: str,
               persist: bool, why: str) -> list[MemoryTerm]:
    """Replace the plain sum by the max over the two phases of a step.

    Loss peak (start of backward): states + activations + loss buffers (+ gradients if they persist).
    End of backward: states + all gradients + the backward working set `work`.
    With S the other states: peak = S + max(A + G_p, G_p + G_n + W) = S + G_p + A + max(0, G_n + W − A),
    where A = activations + logits_and_loss and G_n the gradients that do not persist. The
    activation terms keep their full (loss-peak) value; the non-persistent gradient terms count
    only max(0, G_n + W − A), in order; any excess beyond G_n (W > A) is one more activation term.
    """
    if persist or not grad_idx:
        return terms
    act = sum(x.bytes for x in terms if x.component in ("activations", "logits_and_loss"))
    g_n = sum(terms[i].bytes for i in grad_idx)
    if g_n == 0:
        return terms
    extra = max(0, g_n + work - act)
    left = extra
    out = list(terms)
    for i in grad_idx:
        x = terms[i]
        c = min(left, x.bytes)
        left -= c
        out[i] = x.model_copy(update={
            "bytes": c,
            "label": f"{x.label} (counted where they exceed the activations freed by then)",
            "formula": (f"{x.formula}; {why}: peak = max(loss peak: activations + loss A = {_n(act)} B, "
                        f"end of backward: gradients G = {_n(g_n)} B + working set W = {_n(work)} B) ⇒ "
                        f"gradients counted max(0, G + W − A) = {_n(extra)} B in all, {_n(c)} B here; "
                        f"W = {work_text}"),
            "source": x.source + "; torch Optimizer.zero_grad(set_to_none=True) docs; [M] torch.profiler on CPU "
                                 "(SmolLM2-135M: gradients absent at the loss peak)",
        })
    if left > 0:
        out.append(MemoryTerm(
            component="activations", label="backward working set beyond the loss-peak activations", bytes=left,
            formula=f"G + W − A − G = {_n(work)} − {_n(act)} = {_n(left)} B; W = {work_text}",
            source=SRC_GC + "; " + SRC_KORTHIKANTI))
    return out


def _activation_terms(t: _Terms, model: ModelSpec, st: MemorySettings, rg: _Regime, targets: list[str],
                      compiled_loss: bool = False) -> None:
    """Saved activations over all blocks (or checkpointed inputs + one block) plus outside-block tensors."""
    b, s, L, h = st.micro_batch, st.seq_len, model.num_layers, model.hidden_size
    tokens = b * s
    items = _block_inventory(model, st, rg, targets)
    detail = "; ".join(f"{i.label}: {i.formula} = {_n(i.per_token)}" for i in items)

    if not st.gradient_checkpointing:
        by_group: dict[str, list[_Item]] = {}
        for i in items:
            by_group.setdefault(i.group, []).append(i)
        names = {
            "norms": "activations: block norms", "attention": "activations: attention core",
            "scores": "activations: eager attention scores (Korthikanti 5as/h term)",
            "mlp": "activations: MLP internals", "linear_inputs": "activations: inputs of trainable linears",
            "lora": "activations: LoRA adapter inputs",
        }
        for g, its in by_group.items():
            per = sum(i.per_token for i in its)
            f = "; ".join(f"{i.label}: {i.formula} = {_n(i.per_token)} B/token" for i in its)
            src = {"attention": SRC_ATTN_SDPA if st.attention != "eager" else SRC_ATTN_EAGER,
                   "scores": SRC_ATTN_EAGER, "lora": SRC_LORA_ACT}.get(g, SRC_KORTHIKANTI)
            t.add("activations", names[g], per * tokens * L,
                  f"b·s·L·({f}) = {b}·{s}·{L}·{_n(per)} = {_n(per * tokens * L)} B", src)
    else:
        ck = rg.resid * h * tokens * L
        t.add("activations", "checkpointed block inputs (gradient checkpointing)", ck,
              f"b·s·h·L·{rg.resid} B = {b}·{s}·{h}·{L}·{rg.resid} = {_n(ck)} B", SRC_GC)
        # While the last block is recomputed and back-propagated the loss buffers are already freed,
        # so that phase and the loss phase do not add up: only the excess over the loss buffers counts.
        phase_tok, phase_f = _block_phase(model, st, rg, items)
        phase = phase_tok * tokens
        loss = _loss_bytes(model, st, rg, compiled_loss)
        extra = max(0, phase - loss)
        t.add("activations", "one block recomputed in backward (+ its gradient transients), beyond the loss buffers",
              extra,
              f"max(0, b·s·{phase_f} − loss buffers {_n(loss)}) = max(0, {_n(phase)} − {_n(loss)}) = {_n(extra)} B; "
              f"block: {detail}",
              SRC_GC + "; " + SRC_KORTHIKANTI + "; [M] peak RSS with checkpointing on CPU")

    # Outside the blocks: final norm (+ lm_head input when lm_head trains) and the token ids.
    full = st.method == "full"
    if model.family in ("gpt2", "gpt3"):
        norm = rg.resid * h + 8
        nf = f"{rg.resid}·h + 8"
    else:
        norm = 4 * h + 4 + (rg.resid * h if full else 0)
        nf = f"4·h + 4{f' + {rg.resid}·h' if full else ''}"
    # chunked loss: lm_head runs inside the loss (its input is priced there), not in the model forward
    head_in = (rg.act if rg.cast_per_linear else rg.resid) * h if full and st.loss_chunk_size is None else 0
    ids = 8 if full else 0
    per = norm + head_in + ids
    t.add("activations", "final norm, lm_head input and token ids", per * tokens,
          f"b·s·({nf} [final norm] + {head_in // h if h else 0}·h [lm_head input] + {ids} [int64 ids]) "
          f"= {b}·{s}·{_n(per)} = {_n(per * tokens)} B", SRC_KORTHIKANTI)

    if rg.cast_per_linear and st.strategy in ("none", "ddp"):
        # autocast caches a 16-bit cast of every fp32 leaf weight it feeds to a matmul and F.linear
        # saves it for backward (HF anatomy's 6 B "weights": fp32 + 16-bit copy). Under FSDP/ZeRO
        # mixed precision the gathered parameters are already 16-bit, so there is no copy.
        lw = _linear_weight_params(model) + model.vocab_size * model.hidden_size
        sh = lw * 2
        t.add("activations", "16-bit autocast copies of the linear and lm_head weights, saved for backward", sh,
              f"({_n(_linear_weight_params(model))} linear + {_n(model.vocab_size * model.hidden_size)} lm_head "
              f"weights) × 2 B = {_n(sh)} B", SRC_HF_ANATOMY + "; [M] saved tensors under CPU autocast")

    if rg.kbit_upcast:
        # The upcast lm_head is a frozen fp32 leaf: autocast casts it to 16 bits on every call without
        # caching (only grad-requiring leaves are cached) and F.linear saves that cast for the input grad.
        lh = model.vocab_size * model.hidden_size * 2
        t.add("activations", "16-bit autocast cast of the fp32 (upcast) lm_head weight, saved for backward", lh,
              f"V·h·2 B = {model.vocab_size}·{model.hidden_size}·2 = {_n(lh)} B",
              SRC_KBIT_UPCAST + "; torch.autocast casts fp32 weights per call, F.linear saves the cast [D]")

    if st.method == "qlora":
        big = max(m.in_features * m.out_features for m in model.linear_modules)
        t.add("activations", "dequantised weight temporary (largest linear of a block)", big * rg.act,
              f"max(in·out) {_n(big)} × {rg.act} B = {_n(big * rg.act)} B", SRC_DEQUANT)


def _loss_parts(model: ModelSpec, st: MemorySettings, rg: _Regime,
                compiled: bool = False) -> list[tuple[str, int, str, str]]:
    """The loss buffers at their peak as (label, bytes, formula, source) lines.

    Unchunked (loss_chunk_size None), as transformers 5 ForCausalLMLoss and the executor's
    token_loss_sum run it: logits.float() + cross_entropy = log_softmax + nll_loss. In forward the
    logits (2 or 4 B), their fp32 copy and the saved fp32 log-softmax coexist (10 V bytes under
    16-bit); the caller drops the logits before backward, where nll_loss's fp32 gradient and
    log_softmax's fp32 input gradient join the saved log-softmax: 12 V bytes, the larger of the two.

    Chunked (settings.loss_chunk_size, as the executor runs it): see _chunked_loss_parts.

    compiled (estimate(compiled_loss=True): torch.compile'd cross-entropy, torchtune's recommended
    use): AOTAutograd saves the 16-bit chunk itself and an fp32 logsumexp per token instead of the
    fp32 log-softmax (measured with saved_tensors_hooks on CPU: 2.016 vs 4.0085 B per logit element
    for bf16 logits [M]). Peak: lb·n·V (the logits, saved by the loss; in backward replaced chunk by
    chunk by their 16-bit gradients) + 4·n (logsumexp) + 8·c·V (one chunk's fp32 buffers, an upper
    bound: inductor may fuse them away); c = n when the loss is not chunked.
    """
    b, s, V = st.micro_batch, st.seq_len, model.vocab_size
    n = b * s
    lb = rg.act
    if compiled:
        c = min(st.loss_chunk_size or n, n)
        kept = lb * n * V + 4 * n
        return [
            (f"{lb * 8}-bit logits + fp32 logsumexp saved by the compiled cross-entropy", kept,
             f"b·s·V·{lb} + b·s·4 = {b}·{s}·{V}·{lb} + {n}·4 = {_n(kept)} B", SRC_COMPILED_CE),
            ("fp32 buffers of one loss chunk (upper bound; may be fused away)", 8 * c * V,
             f"c·V·8 = {c}·{V}·8 = {_n(8 * c * V)} B (c = {c} tokens)", SRC_COMPILED_CE),
        ]
    if st.loss_chunk_size is None:
        e = n * V
        return [
            ("fp32 log-softmax saved by cross_entropy", 4 * e,
             f"b·s·V·4 = {b}·{s}·{V}·4 = {_n(4 * e)} B", SRC_LOGITS),
            ("fp32 gradients in loss backward: d(log-softmax) from nll_loss + d(logits)", 8 * e,
             f"b·s·V·(4+4) = {b}·{s}·{V}·8 = {_n(8 * e)} B (the {lb}-byte logits and their fp32 copy, "
             f"{lb}+4 = {lb + 4} B/element, are freed before backward and peak lower in forward)", SRC_LOGITS),
        ]
    return _chunked_loss_parts(model, st, rg)


def _loss_bytes(model: ModelSpec, st: MemorySettings, rg: _Regime, compiled: bool = False) -> int:
    """Bytes of the loss buffers at their peak (see _loss_parts)."""
    return sum(p[1] for p in _loss_parts(model, st, rg, compiled))


def _logits_terms(t: _Terms, model: ModelSpec, st: MemorySettings, rg: _Regime, compiled: bool = False) -> None:
    """Add the loss-buffer terms (unchunked or chunked, eager or compiled cross-entropy)."""
    for label, nbytes, formula, source in _loss_parts(model, st, rg, compiled):
        t.add("logits_and_loss", label, nbytes, formula, source)


# ----------------------------------------------------------------------------- memory-saving settings
# Chunked cross-entropy and activation offloading, as executor/memsave.py runs them (issue 14).

_OFFLOADABLE = ("activations: ", "final norm, lm_head input and token ids",
                "16-bit autocast cast of the fp32 (upcast) lm_head weight")


def _chunked_loss_parts(model: ModelSpec, st: MemorySettings, rg: _Regime) -> list[tuple[str, int, str, str]]:
    """Loss buffers of the executor's chunked cross-entropy (training.loss_chunk_size = c tokens).

    The model returns the final hidden states; each chunk of c tokens runs lm_head + logits.float()
    + cross_entropy under torch.utils.checkpoint, so forward saves only the (shifted) hidden-state
    copy, b·s·h in the residual dtype, and no logits survive a chunk. In backward each chunk is
    recomputed: its saved fp32 log-softmax output, nll_loss's fp32 gradient and log_softmax's fp32
    input gradient coexist (12·c·V bytes; the forward transient, logits + fp32 copy + log-softmax,
    is at most as large), one chunk at a time.
    """
    b, s, V, h = st.micro_batch, st.seq_len, model.vocab_size, model.hidden_size
    n = b * s
    c = min(st.loss_chunk_size or n, n)
    hid = rg.resid * n * h
    chunk = 12 * c * V
    return [
        ("hidden states saved as the chunked loss's input", hid,
         f"b·s·h·{rg.resid} = {b}·{s}·{h}·{rg.resid} = {_n(hid)} B", SRC_CHUNKED_RECOMPUTE),
        ("fp32 buffers of one loss chunk (recomputed in backward: log-softmax + 2 gradients)", chunk,
         f"c·V·(4+4+4) = {c}·{V}·12 = {_n(chunk)} B (c = {c} of {n} tokens per chunk; unchunked: "
         f"b·s·V·12 = {_n(12 * n * V)} B)", SRC_CHUNKED_RECOMPUTE),
    ]


def _untied_head_terms(t: _Terms, model: ModelSpec, st: MemorySettings, rg: _Regime, shard: _Shard) -> None:
    """settings.untied_head on a tied-embedding model: the stack gives lm_head its own V·h weight,
    stored like the other parameters (full fine-tuning: the same bytes per parameter for weights,
    gradients and optimizer states as the rest; LoRA/QLoRA: a frozen 16-bit weight, fp32 under the
    kbit upcast). Counted once when the model is untied already."""
    if not st.untied_head or not model.tie_word_embeddings:
        return
    n = model.vocab_size * model.hidden_size
    P = max(1, model.total_params)
    src = "transformers tie_word_embeddings=False gives lm_head its own weight [D]"
    if st.method == "full":
        for comp, div in (("weights", shard.weights), ("gradients", shard.grads), ("optimizer_states", shard.optim)):
            have = sum(x.bytes for x in t.items if x.component == comp)
            per = have * div / P
            nb = _ceil_div(int(round(per * n)), div) if have else 0
            t.add(comp, "untied lm_head (its own V·h weight)", nb,
                  f"V·h {_n(n)} × {per:.3g} B/param (as the other parameters){f' / N_d={div}' if div > 1 else ''} "
                  f"= {_n(nb)} B", src)
        return
    pb = (4 if st.precision == "fp32" or rg.kbit_upcast else 2)
    nb = _ceil_div(pb * n, shard.weights)
    t.add("weights", "untied lm_head (frozen, its own V·h weight)", nb, f"V·h {_n(n)} × {pb} B = {_n(nb)} B", src)


def _offload_activation_terms(t: _Terms, model: ModelSpec, st: MemorySettings, rg: _Regime,
                              targets: list[str]) -> int:
    """Under training.activation_offload, move the saved activations to host RAM; returns host bytes.

    The executor's saved-tensor hooks copy every saved tensor of >= 1 KiB that is not a parameter
    to host memory during forward and bring each back as backward reaches it, so the device keeps
    one block's tensors in flight (priced as one block's inventory; the end-of-backward working
    set, block 0 back-propagated, is unchanged). The per-block terms become 0-byte lines stating
    their host bytes. Under gradient checkpointing torch.utils.checkpoint keeps the block inputs
    itself (its own saved-tensor hooks run innermost), so nothing moves; the plan says so.
    """
    if not st.activation_offload:
        return 0
    if st.gradient_checkpointing:
        t.add("activations", "activation offload: nothing moved under gradient checkpointing", 0,
              "torch.utils.checkpoint holds the checkpointed block inputs itself; 0 B moved", SRC_ACT_OFFLOAD)
        return 0
    host = 0
    out: list[MemoryTerm] = []
    for x in t.items:
        if x.component == "activations" and x.label.startswith(_OFFLOADABLE) and x.bytes > 0:
            host += x.bytes
            out.append(x.model_copy(update={
                "bytes": 0, "label": f"{x.label} — offloaded to host RAM ({_gib(x.bytes)})",
                "formula": f"{x.formula}; in host memory, 0 B on the device",
                "source": x.source + "; " + SRC_ACT_OFFLOAD}))
        else:
            out.append(x)
    t.items = out
    b, s = st.micro_batch, st.seq_len
    per = sum(i.per_token for i in _block_inventory(model, st, rg, targets))
    flight = min(host, per * b * s)
    t.add("activations", "activation offload: one block's saved tensors in flight", flight,
          f"b·s·(one block's inventory) = {b}·{s}·{_n(per)} = {_n(flight)} B; host RAM holds {_n(host)} B",
          SRC_ACT_OFFLOAD)
    return host


# ----------------------------------------------------------------------------- public API


def estimate(
    model: ModelSpec,
    settings: MemorySettings,
    *,
    capacity_bytes: int,
    device: Literal["cuda", "cpu"] = "cuda",
    headroom_fraction: float = DEFAULT_HEADROOM,
    calibration: Optional[dict[str, float]] = None,
    kbit_upcast: Optional[bool] = None,
    compiled_loss: bool = False,
) -> MemoryEstimate:
    """Predict the peak memory of one training step on each device, itemised.

    model: the architecture (exact parameter counts). settings: method, precision, optimizer,
    checkpointing, attention, micro-batch (per device), sequence length, LoRA rank/targets (targets
    default to all-linear), strategy, num_devices, cpu_offload. capacity_bytes: memory of ONE
    device (GPU memory, or RAM for device="cpu"). headroom_fraction: share of capacity kept free;
    fits = per_device_bytes <= int(capacity*(1-headroom)). calibration: optional multipliers per
    breakdown component (e.g. {"activations": 0.9}) from measured runs; calibration_factor is the
    overall after/before ratio. kbit_upcast (None: settings.kbit_upcast, the plan's
    quantization.kbit_upcast): QLoRA runs through peft's prepare_model_for_kbit_training
    as the executor does (non-quantised params upcast to fp32, fp32 residual stream); False for stacks
    that keep them in 16 bits (torchtune, the QLoRA paper's qlora.py, which re-casts them to bf16).
    compiled_loss: the cross-entropy runs under torch.compile (torchtune with compile: True), which
    saves the 16-bit logits instead of the fp32 log-softmax; the executor runs it eagerly (False).

    Two predicted figures: per_device_bytes (everything, what must fit) and allocated_peak_bytes
    (tensor bytes: per_device_bytes − framework_overhead, what torch.cuda.max_memory_allocated and
    published peaks report). host_bytes: activations moved to host RAM by activation_offload.

    Raises ValueError on inconsistent settings (LoRA without rank, unknown targets, bad headroom,
    unknown calibration keys).
    """
    if capacity_bytes <= 0:
        raise ValueError("capacity_bytes must be > 0")
    if not 0 <= headroom_fraction < 1:
        raise ValueError("headroom_fraction must be in [0, 1)")
    if device not in ("cuda", "cpu"):
        raise ValueError("device must be 'cuda' or 'cpu'")
    st = settings
    targets: list[str] = []
    if st.method == "full":
        trainable = model.total_params
    else:
        if st.lora_rank is None:
            raise ValueError(f"settings.lora_rank is required for method {st.method!r}")
        targets = resolve_targets(model, st.target_modules or ["all-linear"])
        trainable = model.lora_params(st.lora_rank, targets)

    rg = _regime(st.method, st.precision, device, st.kbit_upcast if kbit_upcast is None else kbit_upcast)
    shard = _sharding(st)
    t = _Terms()
    _state_terms(t, model, st, rg, trainable, targets, shard)
    _untied_head_terms(t, model, st, rg, shard)
    # Parameter gradients (not the DDP buckets below, which are allocated once and persist).
    grad_idx = [i for i, x in enumerate(t.items) if x.component == "gradients" and x.bytes > 0]

    # Strategy-specific buffers.
    if st.strategy == "ddp" and st.num_devices > 1:
        g = sum(x.bytes for x in t.items if x.component == "gradients")
        t.add("gradients", "DDP allreduce buckets (gradient-sized)", g,
              f"= gradient bytes {_n(g)} B (gradient_as_bucket_view=False)", SRC_DDP)
    if st.strategy in ("fsdp", "deepspeed-zero3") and st.num_devices > 1:
        bp = _block_params(model)
        if st.method == "qlora":
            per, per_f = ((0.5 + 0.127 / 8, "0.516 B (NF4+DQ)") if st.double_quant
                          else (0.5 + 0.5 / 8, "0.5625 B (NF4, fp32 absmax)"))
            gb = int(2 * bp * per)
        else:
            pb = 4 if st.precision == "fp32" else 2
            per_f = f"{pb} B"
            gb = 2 * bp * pb
        t.add("weights", "all-gathered parameters of one block (+ the prefetched next block)", gb,
              f"2 × {_n(bp)} block params × {per_f} = {_n(gb)} B", SRC_FSDP_GATHER)

    _activation_terms(t, model, st, rg, targets, compiled_loss)
    host = _offload_activation_terms(t, model, st, rg, targets)
    _logits_terms(t, model, st, rg, compiled_loss)

    churn = sum(x.bytes for x in t.items if x.component in ("activations", "logits_and_loss"))
    frag = int(churn * FRAGMENTATION_SHARE)
    if device == "cuda":
        t.add("framework_overhead", "CUDA context, cuBLAS workspace and kernels", CUDA_CONTEXT_BYTES,
              f"0.75 GiB = {_n(CUDA_CONTEXT_BYTES)} B", SRC_CUDA_CTX)
    else:
        t.add("framework_overhead", "Python + torch + transformers + peft process", CPU_RUNTIME_BYTES,
              f"384 MiB = {_n(CPU_RUNTIME_BYTES)} B", SRC_CPU_RT)
    t.add("framework_overhead", "allocator fragmentation", frag,
          f"{FRAGMENTATION_SHARE} × (activations + logits) {_n(churn)} B = {_n(frag)} B", SRC_FRAG)

    work, work_text = _backward_working_set(model, st, rg, targets)
    persist, why = _grads_persist(st)
    terms = t.items
    factor: Optional[float] = None
    if calibration:
        fields = set(MemoryBreakdown.model_fields)
        bad = sorted(set(calibration) - fields)
        if bad:
            raise ValueError(f"unknown calibration components {bad}; use {sorted(fields)}")
        out: list[MemoryTerm] = []
        for x in terms:
            m = calibration.get(x.component)
            if m is None:
                out.append(x)
                continue
            if m < 0:
                raise ValueError(f"calibration multiplier for {x.component} must be >= 0")
            nb = int(round(x.bytes * m))
            out.append(x.model_copy(update={
                "bytes": nb,
                "formula": f"{x.formula}; × calibration {m:g} (tuneplan calibrate) = {_n(nb)} B",
            }))
        before = sum(x.bytes for x in _phase_max(terms, grad_idx, work, work_text, persist, why))
        terms = out
        work = int(round(work * calibration.get("activations", 1.0)))
        terms = _phase_max(terms, grad_idx, work, work_text, persist, why)
        after = sum(x.bytes for x in terms)
        factor = after / before if before else 1.0
    else:
        terms = _phase_max(terms, grad_idx, work, work_text, persist, why)

    comp = {f: 0 for f in MemoryBreakdown.model_fields}
    for x in terms:
        comp[x.component] += x.bytes
    breakdown = MemoryBreakdown(**comp)
    total = breakdown.total
    usable = int(capacity_bytes * (1 - headroom_fraction))
    return MemoryEstimate(
        method=st.method,
        per_device_bytes=total,
        allocated_peak_bytes=total - breakdown.framework_overhead,
        host_bytes=host,
        device_capacity_bytes=capacity_bytes,
        usable_bytes=max(1, usable),
        fits=total <= usable,
        headroom_bytes=capacity_bytes - total,
        headroom_fraction=headroom_fraction,
        breakdown=breakdown,
        terms=terms,
        settings=st,
        trainable_params=trainable,
        calibration_factor=factor,
    )


__all__ = ["DEFAULT_HEADROOM", "estimate"]
