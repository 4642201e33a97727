"""The estimator's one table of citations: id -> the readable source of a formula.

Every memory term cites its formula by id (`cite("zero", "hf-anatomy")`); the term's `source`
text is the cited entries joined by "; ". Tags refer to ../shared/research/facts.md: [P] primary,
[S] secondary, [D] derived, [M] measured here with torch on CPU. Adding a term means adding (or
reusing) an entry here; tests/test_estimator_citations.py checks every term's source is made of
entries of this table.
"""

from __future__ import annotations

SOURCES: dict[str, str] = {
    "zero": "ZeRO (Rajbhandari et al. 2020, arXiv 1910.02054) §3.1 and Fig. 1; facts 6a/6b [P]",
    "hf-anatomy": (
        "HF transformers docs 'Anatomy of Model's Memory' (18/16 B/param, 8-bit AdamW 2 B); facts 6a [P]"
    ),
    "biderman-app-h": "Biderman et al. 2024 App. H (fp32 Adam 4+4+8 B/param; LoRA 2Ψ+16Ψ_lora); facts 3/6a [P]",
    "pure-bf16": "pure bf16 AdamW 2+2+4 B/param; facts 6a [D] (LLaMA-Factory 'pure_bf16' 8x GB row)",
    "lora": (
        "LoRA (Hu et al. 2021) §4.1-4.2: only A,B trained, frozen W0 keeps no grads/states; facts 1, 6a [P]/[D]"
    ),
    "nf4": (
        "QLoRA (Dettmers et al. 2023) §3 NF4 4-bit storage; bitsandbytes quantize_4bit blocksize 64; facts 2a/2c [P]"
    ),
    "double-quant": (
        "QLoRA §3 double quantisation 8/64 + 32/(64*256) = 0.127 bits/param (0.5 without); facts 2a/2c [P]/[D]"
    ),
    "kbit-upcast": (
        "peft utils/other.py prepare_model_for_kbit_training: 'cast all non INT8 parameters to fp32' (every fp16/bf16 param that is not Params4bit: embeddings, lm_head, norms, biases); executor/loading/qlora.py calls it on the QLoRA path"
    ),
    "chunked-ce": (
        "torchtune modules/loss/ce_chunked_output_loss.py CEWithChunkedOutputLoss: the model returns the 16-bit logits in num_output_chunks pieces, each upcast with .float() only inside cross_entropy of its chunk; facts 6c (chunked CE) [P]/[D]"
    ),
    "chunked-recompute": (
        "executor/memsave.py chunked_token_loss_sum: lm_head + fp32 cross_entropy per chunk of loss_chunk_size tokens under torch.utils.checkpoint (recomputed in backward), so only the hidden states are saved; one chunk's log_softmax output + nll_loss and log_softmax gradients (3 fp32 c·V buffers) at a time; torchtune CEWithChunkedOutputLoss (per-chunk upcast) [D]; [M] tests/test_memsave.py on the embedded model"
    ),
    "activation-offload": (
        "torchtune training/_activation_offloading.py OffloadActivations (saved_tensors_hooks: pack copies each saved tensor >= 1 KiB that is not a parameter to CPU, unpack brings it back in backward); torch.autograd.graph.save_on_cpu; executor/memsave.py ActivationOffload [D]; [M] tests/test_memsave.py on the embedded model"
    ),
    "keep-16bit": "transformers get_keys_to_not_convert keeps lm_head/embeddings unquantised; facts 2c [P]",
    "dequant": (
        "bitsandbytes MatMul4Bit: dequantize_4bit(W) to the compute dtype per matmul (forward and backward); QLoRA §3 [P]"
    ),
    "paged": (
        "bitsandbytes optimizers docs: paging 'only becomes active if you run out of GPU memory'; facts 2c [P]"
    ),
    "korthikanti": (
        "Korthikanti et al. 2022 (arXiv 2205.05198) Eq. 1 sbh(34+5as/h), re-derived per tensor for this architecture (RMSNorm, GQA, gated MLP, no dropout); facts 6c [S]; checked vs torch saved tensors on CPU [M]"
    ),
    "attention-sdpa": (
        "sdpa/flash store q, k, v, output and fp32 logsumexp, never the s*s scores; facts 6c [S] ('FlashAttention never materialises the s x s scores'); [M] saved tensors on CPU"
    ),
    "attention-eager": (
        "Korthikanti 5as/h attention-score term; transformers eager_attention_forward keeps softmax(dtype=float32) and its cast; [M] saved tensors on CPU"
    ),
    "lora-activations": (
        "peft lora.Linear.forward: x cast to the adapter dtype, per-module dropout (mask saved), lora_A saves its input, lora_B saves A's r-wide output; frozen base linears save no input (autograd saves a matmul input only when the weight needs a grad) [D]; QLoRA §2 memory [P]"
    ),
    "checkpointing": (
        "Korthikanti et al. 2022 full recomputation: 2sbh per layer (layer input only) + one layer recomputed during backward; facts 6c [S]"
    ),
    "logits": (
        "transformers 5 loss_utils.ForCausalLMLoss (logits.float() + cross_entropy = log_softmax + nll_loss); facts 6c logits b*s*V [P]/[D]; [M] peak RSS on CPU fp32"
    ),
    "cuda-context": "CUDA context/kernels 'about 1-2 GB' (facts 6a/Memory model notes [S]); 0.75 GiB chosen",
    "cpu-runtime": "measured VmRSS of python + torch 2.13 + transformers 5 + peft imports: 386 MiB [M]",
    "fragmentation": (
        "caching-allocator fragmentation share (assumption, 5% of activations+logits); accelerate '+~20%' [P]"
    ),
    "ddp-buckets": (
        "PyTorch DistributedDataParallel docs: gradient_as_bucket_view=False (default) keeps allreduce buckets the size of all gradients"
    ),
    "fsdp-gather": (
        "FSDP/ZeRO-3 all-gather one block's parameters before use, next block prefetched (x2); ZeRO §5 / facts 6b [P]/[D]"
    ),
    "cpu-offload": (
        "ZeRO-Offload / FSDP CPUOffload: optimizer states (and params/grads under zero3/fsdp) live in host RAM; facts 6b [S]"
    ),
    "compiled-ce": (
        "torch.compile'd cross_entropy saves the 16-bit input + fp32 logsumexp, [M] saved_tensors_hooks on CPU (2.016 vs eager 4.0085 B per logit element)"
    ),
    "measured-checkpointing-rss": "[M] peak RSS with checkpointing on CPU",
    "zero-grad-set-to-none": (
        "torch Optimizer.zero_grad(set_to_none=True) docs; [M] torch.profiler on CPU (SmolLM2-135M: gradients absent at the loss peak)"
    ),
    "untied-head": "transformers tie_word_embeddings=False gives lm_head its own weight [D]",
    "measured-autocast-copies": "[M] saved tensors under CPU autocast",
    "autocast-per-call": "torch.autocast casts fp32 weights per call, F.linear saves the cast [D]",
}


def cite(*ids: str) -> str:
    """The source text for these citation ids, in order, joined by "; " (KeyError on an unknown id)."""
    return "; ".join(SOURCES[i] for i in ids)
