"""Mixture-of-experts terms for the estimator, kept apart from the dense formulas.

Memory: every expert is resident (weights, and under full fine-tuning their gradients and optimizer
states), so weight terms use LinearModule.weight_params, which counts all `experts` copies.
Activations: a token passes through its top-k routed experts (plus any shared expert), so the
per-token MLP width the activation formulas use is k x the expert width plus the shared width
(Switch Transformer, Fedus et al. 2021 §2.1; Mixtral, Jiang et al. 2024 §2: "each token ... two
experts"; DeepSeekMoE, Dai et al. 2024 §3: shared + routed experts). FLOPs per token follow
ModelSpec.active_params. Pure: stdlib + the schemas.
"""

from __future__ import annotations

from tuneplan.schemas import ModelSpec


def active_ffn_width(model: ModelSpec) -> int:
    """MLP inner width one token's activations span: intermediate_size for a dense model; for a
    mixture of experts, active experts x expert width (+ the shared experts' width)."""
    routed = [m for m in model.linear_modules if m.kind == "mlp" and m.experts > 1]
    if not routed:
        return model.intermediate_size
    down = next((m for m in routed if m.name.endswith("down_proj")), routed[0])
    expert_width = down.in_features
    k = down.active_experts or down.experts
    shared = sum(
        m.in_features
        for m in model.linear_modules
        if m.kind == "mlp" and m.experts == 1 and m.name.endswith("down_proj")
    )
    return k * expert_width + shared
