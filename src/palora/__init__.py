"""palora: inject facts with LoRA kept orthogonal to the singular components a skill relies on.

The method in five calls (components do no I/O; the recipes in ``palora.recipes`` do)::

    layers = add_svf(model, "linear")                 # stage 1: W_z = U diag(σ ⊙ s(z)) Vᵀ, train z
    state = svf_state(model); merge_svf(model)        # the expert, as a stock model
    subspaces, stats = select_subspace(find_targets(base), state, "linear", "delta",
                                       SelectionRule("fraction", fraction=0.25))   # stage 2
    peft_model = add_orthogonal_lora(model, subspaces, rank=16)   # stage 3: ΔW = P_out B A P_in
    bake_projections(peft_model); peft_model.save_pretrained(dir)   # a plain peft LoRA adapter
"""

__version__ = "0.1.0"

from .linalg import SVD, fingerprint, thin_svd  # noqa: E402
from .orthogonal import add_lora, add_orthogonal_lora, bake_projections, certificate, lora_delta  # noqa: E402
from .probe import SelectionRule, component_scores, select, select_subspace, spectrum_stats  # noqa: E402
from .subspace import Subspace  # noqa: E402
from .svf import SVFLinear, add_svf, load_svf_state, merge_svf, svf_state  # noqa: E402
from .targets import find_targets  # noqa: E402

__all__ = [
    "SVD", "SVFLinear", "SelectionRule", "Subspace", "add_lora", "add_orthogonal_lora", "add_svf",
    "bake_projections", "certificate", "component_scores", "find_targets", "fingerprint", "load_svf_state",
    "lora_delta", "merge_svf", "select", "select_subspace", "spectrum_stats", "svf_state", "thin_svd",
]
