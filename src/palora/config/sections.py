"""The typed sections of the configuration, one dataclass each, assembled in :class:`RunConfig`.

Every field has a one-line help (``metadata["help"]``) that ``palora <verb> --help`` prints,
and every section checks its invariants in ``__post_init__``, naming the key and the value.
Method names come from :mod:`palora.methods.registry`, the only list of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError
from ..methods.registry import COMPARE_ONLY, FOR_EXPERT, METHODS, PAPER
from .comparison import CompareConfig
from .data_gen import DataSpec
from .fields import check_value, documented

PACKAGED_DEFAULT_MODEL = "smollm2-135m-instruct"
#: the injection methods ``palora run`` runs by default: the ones docs/results.md recommends
#: (the skill's input-covariance directions protected) and plain LoRA to measure them against
DEFAULT_METHODS = ["act-protect", "lora"]

#: keys that were settings once: the value that meant what palora does now (an old run directory's
#: config.yaml holds it, and is read as before), and what replaced the key for any other value
REMOVED_KEYS = {
    "probe.basis": ("singular", "the method names the basis it protects: palora (the paper's singular components) "
                    "reads the singular probe, act-protect (the skill's input covariance) the activation probe; "
                    "delete the key and choose with --methods"),
}


@dataclass
class ModelConfig:
    name: str = documented(PACKAGED_DEFAULT_MODEL, "local folder, hub id, or packaged model name")
    dtype: Literal["float32", "bfloat16", "float16"] = documented(
        "float32", "dtype the model's weights are loaded and trained in"
    )
    target_modules: list[str] | None = documented(
        None, "names (last path component) of the matrices to adapt; default: the MLP of the family"
    )
    trust_remote_code: bool = documented(False, "allow a hub model to run its own Python code")


@dataclass
class DataConfig:
    skill_train: str | None = documented(None, "JSONL of the reasoning skill, for the SVF expert")
    skill_eval: str | None = documented(None, "JSONL {prompt, answer} to measure the skill")
    knowledge_train: str | None = documented(None, "JSONL of the facts to inject")
    knowledge_eval: str | None = documented(None, "JSONL {prompt, answer} to measure recall of the facts")
    known_eval: str | None = documented(
        None, "optional JSONL {prompt, answer} of facts the base model already knows (old-fact retention)"
    )
    known_val: str | None = documented(
        None, "optional JSONL {prompt, answer}: validation split of the known facts (experiments choose settings on it)"
    )
    skill_val: str | None = documented(
        None, "JSONL {prompt, answer}: validation split of the skill (palora compare chooses learning rates on it)"
    )
    knowledge_val: str | None = documented(
        None, "JSONL {prompt, answer}: validation split of the facts (palora compare chooses learning rates on it)"
    )
    chat_template: bool = documented(False, "wrap prompts in the tokenizer's chat template when it has one")
    max_length: int = documented(256, "longest training sequence in tokens (longer ones are cut)")
    padding_free: bool = documented(
        True, "train on padding-free batches (a batch's sequences joined in one row, each attending to itself "
        "only; the padded batch's loss, fewer positions) when the model keeps them apart, else on right-padded "
        "ones; the same computation up to rounding, so not part of a stage's digest"
    )
    skill_checker: Literal["numeric", "exact", "contains"] = documented(
        "numeric", "how a skill answer is checked"
    )
    knowledge_checker: Literal["numeric", "exact", "contains"] = documented(
        "contains", "how a recalled fact is checked"
    )

    def __post_init__(self) -> None:
        check_value(self.max_length > 0, "data.max_length", self.max_length, "must be positive")


@dataclass
class TrainConfig:
    steps: int = documented(100, "optimizer steps")
    batch_size: int = documented(16, "sequences per micro-batch and process")
    grad_accum: int = documented(1, "micro-batches per optimizer step")
    lr: float = documented(1e-3, "peak learning rate")
    warmup_ratio: float = documented(0.05, "fraction of the steps with a linear warm-up")
    schedule: Literal["cosine", "linear", "constant"] = documented("cosine", "decay after warm-up")
    max_grad_norm: float = documented(1.0, "gradient-norm clip (0 turns it off)")
    weight_decay: float = documented(0.0, "AdamW weight decay on parameters that allow it (never on z)")
    log_every: int = documented(1, "optimizer steps between two lines of metrics.jsonl")
    sharding: Literal["none", "fsdp2"] = documented(
        "none", "with several processes: none = data parallel (DDP); fsdp2 = every decoder layer sharded with "
        "torch's fully_shard (any device; also chosen when accelerate launches with an FSDP config)"
    )
    checkpoint_every: int = documented(
        50, "optimizer steps between two checkpoints (<run>/checkpoints/), from which a killed run resumes; 0: none"
    )

    def __post_init__(self) -> None:
        check_value(self.steps > 0, "steps", self.steps, "must be positive")
        check_value(self.batch_size > 0, "batch_size", self.batch_size, "must be positive")
        check_value(self.grad_accum > 0, "grad_accum", self.grad_accum, "must be positive")
        check_value(self.lr > 0, "lr", self.lr, "must be positive")
        check_value(0 <= self.warmup_ratio < 1, "warmup_ratio", self.warmup_ratio, "must be in [0, 1)")
        check_value(self.max_grad_norm >= 0, "max_grad_norm", self.max_grad_norm, "must be >= 0")
        check_value(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        check_value(self.log_every > 0, "log_every", self.log_every, "must be positive")
        check_value(self.checkpoint_every >= 0, "checkpoint_every", self.checkpoint_every, "must be >= 0")


@dataclass
class ReinforceConfig(TrainConfig):
    """``svf.objective=reinforce``: the training settings (Transformer²'s defaults: Adam at lr 2e-3,
    gradient-norm clip 1e-3, constant rate) and the sampling of the answers (:mod:`palora.training.reinforce`).
    ``batch_size`` counts prompts; each step scores ``batch_size * samples_per_prompt`` answers."""

    batch_size: int = documented(16, "prompts per micro-batch and process (each sampled samples_per_prompt times)")
    lr: float = documented(2e-3, "peak learning rate (Transformer²: 2e-3)")
    warmup_ratio: float = documented(0.0, "fraction of the steps with a linear warm-up")
    schedule: Literal["cosine", "linear", "constant"] = documented("constant", "decay after warm-up")
    max_grad_norm: float = documented(1e-3, "gradient-norm clip (Transformer²: 1e-3; 0 turns it off)")
    samples_per_prompt: int = documented(4, "answers sampled per prompt at every step")
    temperature: float = documented(1.0, "sampling temperature; the log-probabilities are those of the sampled policy")
    max_new_tokens: int = documented(16, "longest sampled answer in tokens")
    kl_coeff: float = documented(0.0, "weight of KL(base || expert) on the answer tokens (0: no penalty)")
    reward_norm: bool = documented(False, "normalise the rewards of a micro-batch to mean 0, std 1 (Transformer²'s rw_norm)")
    token_reduction: Literal["sum", "mean"] = documented(
        "sum", "log-probability of an answer: sum over its tokens (Transformer²) or mean"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_value(self.samples_per_prompt > 0, "samples_per_prompt", self.samples_per_prompt, "must be positive")
        check_value(self.temperature > 0, "temperature", self.temperature, "must be positive")
        check_value(self.max_new_tokens > 0, "max_new_tokens", self.max_new_tokens, "must be positive")
        check_value(self.kl_coeff >= 0, "kl_coeff", self.kl_coeff, "must be >= 0")


@dataclass
class SVFConfig:
    parametrization: Literal["linear", "t2"] = documented(
        "linear", "linear: s = z; t2: s = sigmoid(z) * sum(sigma) / sum(sigma * sigmoid(z))"
    )
    t2_init: float = documented(0.1, "initial z of the t2 parametrization (any constant is the identity)")
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=100, batch_size=16, lr=1e-2),
        metadata={"help": "optimisation of the SVF expert (objective sft)"},
    )
    objective: Literal["sft", "reinforce"] = documented(
        "sft", "sft: next-token loss on the skill's completions (svf.train); reinforce: policy gradient with a "
        "+1/-1 reward from data.skill_checker on sampled answers (svf.reinforce)"
    )
    reinforce: ReinforceConfig = field(
        default_factory=ReinforceConfig, metadata={"help": "objective reinforce: optimisation and sampling"}
    )
    init_from: str | None = documented(
        None, "svf_expert.safetensors of the same base model whose scales start the training (e.g. an sft "
        "expert refined by reinforce); null: the identity"
    )


@dataclass
class ProbeConfig:
    """Stage 2: the protected subspaces. ``palora probe`` writes one per basis the methods read:
    singular components of ``W_z`` (``score`` and the rule; the paper's probe, for palora and its
    variants) and the top eigenvectors of the skill's input covariance (the rule; act-protect)."""

    score: Literal["delta", "sigma_delta", "amplified", "damped", "activation", "activation_delta",
                   "fisher"] = documented(
        "delta",
        "singular components: delta: |s-1|; sigma_delta: sigma*|s-1|; amplified: max(s-1, 0); damped: max(1-s, 0); "
        "activation: (sigma*s)^2 * E_skill[(v^T x)^2]; "
        "activation_delta: activation*|s-1|; fisher: E_skill[(dL/dz)^2]",
    )
    stat_batches: int = documented(16, "batches of the skill training data for the activation / fisher scores and the "
                                       "input covariance")
    stat_batch_size: int = documented(16, "sequences per batch for those statistics")
    rule: Literal["fraction", "topk", "global", "threshold", "energy"] = documented(
        "fraction",
        "fraction / topk: per matrix; global: one budget over all matrices; "
        "threshold: score above a value; energy: smallest set holding that share of the score",
    )
    fraction: float = documented(0.25, "rule=fraction or global: share of the components protected")
    k: int = documented(64, "rule=topk: components protected per matrix")
    threshold: float = documented(0.05, "rule=threshold: protect components whose score exceeds it")
    energy: float = documented(0.5, "rule=energy: share of the total score the protected set holds")
    store_vectors: bool = documented(True, "store U_S and V_S in subspace.safetensors (else indices only)")
    extra_runs: list[str] = documented(
        [], "run directories of other SVF experts on the same base model (each probed with its own "
        "data.skill_train from its config.yaml), protected together with this run's expert"
    )
    skill_data: list[str] = documented(
        [], "JSONL files of several skills one expert was trained on: each is probed through this run's "
        "expert with these settings, and the selections are united by probe.combine (empty: data.skill_train)"
    )
    keep_data: list[str] = documented(
        [], "JSONL files of what the model already knows and must keep beside the skill (general text {text}, "
        "known facts {prompt, completion}; palora demo: its general.jsonl and known_protect.jsonl): act-protect "
        "keeps its update off the top directions of these inputs too, each probed through the expert like the "
        "skill, all within one probe's budget (probe.keep_share of it for these files; the singular probe ignores them)"
    )
    keep_share: float = documented(
        0.5, "with keep_data: the share of the probe's budget that goes to the keep_data files (equal parts); the "
        "skill's selections share the rest (by combine_weights)"
    )
    combine: Literal["union", "weighted"] = documented(
        "union", "with skill_data or extra_runs: union = every expert's own selection, united (singular: the union of the "
        "index sets; activation: the span of all bases, orthonormalised), so the budgets add up; weighted = "
        "the same, with one probe's budget split among them by combine_weights (docs/results.md: the rule "
        "that kept two skills at a one-skill probe's recall)"
    )
    combine_weights: list[float] | None = documented(
        None, "combine=weighted: budget share of each selection, this run's first (one per skill_data file), "
        "then extra_runs in order "
        "(normalised to sum 1; null: equal shares)"
    )

    def __post_init__(self) -> None:
        check_value(0 <= self.fraction <= 1, "probe.fraction", self.fraction, "must be in [0, 1]")
        check_value(len(set(self.extra_runs)) == len(self.extra_runs), "probe.extra_runs", self.extra_runs, "repeated")
        check_value(len(set(self.skill_data)) == len(self.skill_data), "probe.skill_data", self.skill_data, "repeated")
        check_value(len(set(self.keep_data)) == len(self.keep_data), "probe.keep_data", self.keep_data, "repeated")
        check_value(0 < self.keep_share < 1, "probe.keep_share", self.keep_share, "must be in (0, 1)")
        w = self.combine_weights
        if w is not None:
            check_value(all(x >= 0 for x in w) and sum(w) > 0, "probe.combine_weights", w,
                        "must be >= 0 with a positive sum")
            own = max(1, len(self.skill_data))
            check_value(len(w) == len(self.extra_runs) + own, "probe.combine_weights", w,
                        f"needs one weight per selection: {own} of this run's expert (probe.skill_data) "
                        f"and {len(self.extra_runs)} in probe.extra_runs")
        check_value(not (self.combine == "weighted" and self.rule == "threshold"), "probe.combine", self.combine,
                    "a threshold rule has no budget to split: use rule fraction, global, topk or energy")
        check_value(not (self.keep_data and self.rule == "threshold"), "probe.keep_data", self.keep_data,
                    "kept data share the probe's budget, which a threshold rule does not have: use rule fraction, "
                    "global, topk or energy")
        check_value(self.k >= 0, "probe.k", self.k, "must be >= 0")
        check_value(0 <= self.energy <= 1, "probe.energy", self.energy, "must be in [0, 1]")
        check_value(self.stat_batches > 0, "probe.stat_batches", self.stat_batches, "must be positive")
        check_value(self.stat_batch_size > 0, "probe.stat_batch_size", self.stat_batch_size, "must be positive")


@dataclass
class InjectConfig:
    methods: list[str] = documented(
        DEFAULT_METHODS, f"injection methods to run (each a plain peft adapter for the expert): {', '.join(FOR_EXPERT)}; "
        f"{PAPER} is the paper's method"
    )
    rank: int = documented(16, "LoRA rank r")
    alpha: float = documented(32.0, "LoRA alpha; the update is scaled by alpha / rank")
    dropout: float = documented(0.0, "LoRA dropout")
    side: Literal["both", "in", "out"] = documented(
        "both", "PALoRA projection: both (exact guarantee), in (A P_in) or out (P_out B)"
    )
    soft: bool = documented(False, "soft projector I - V diag(w) V^T, w from the probe scores")
    penalty_weight: float = documented(0.1, "olora-penalty: lambda of lambda * (|A V_S|^2 + |U_S^T B|^2)")
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=100, batch_size=16, lr=1e-3),
        metadata={"help": "optimisation of the injection (same budget for every method)"},
    )
    replay_share: float = documented(
        0.25, "lora-replay: share of its training lines replayed from probe.keep_data (the rest are the facts)"
    )
    protect_adapter: str | None = documented(
        None, "folder of an earlier round's peft adapter for expert_model/ (methods/<method>/adapter): every "
        "method starts from the expert with it merged, and its update avoids that adapter's spaces"
    )
    protect_adapter_side: Literal["both", "in", "out", "none"] = documented(
        "both", "with protect_adapter: the update avoids the earlier update's column space (out), row space (in), "
        "both, or none (start from it merged, unprotected: the ablation)"
    )
    snapshot_every: int | None = documented(
        None, "also save each method's adapter every this many steps, as trained to that step "
        "(methods/<method>/snapshots/step-NNNNNN/, plain peft adapters for the expert): the points to stop "
        "early at, chosen on the validation splits (experiments/early_stop.py); null: none"
    )

    def __post_init__(self) -> None:
        check_value(self.rank > 0, "inject.rank", self.rank, "must be positive")
        check_value(self.alpha > 0, "inject.alpha", self.alpha, "must be positive")
        check_value(0 <= self.dropout < 1, "inject.dropout", self.dropout, "must be in [0, 1)")
        check_value(0 < self.replay_share < 1, "inject.replay_share", self.replay_share, "must be in (0, 1)")
        check_value(self.penalty_weight >= 0, "inject.penalty_weight", self.penalty_weight, "must be >= 0")
        check_value(len(self.methods) > 0, "inject.methods", self.methods, "name at least one method")
        for m in self.methods:
            if m in COMPARE_ONLY:
                raise ConfigError(f"inject.methods={m}: its result is not an adapter for the expert (it rewrites or "
                                  f"trains the base weights); run it with `palora compare --methods {m}`")
            check_value(m in FOR_EXPERT, "inject.methods", m, f"unknown method; known: {', '.join(FOR_EXPERT)}")
        check_value(len(set(self.methods)) == len(self.methods), "inject.methods", self.methods, "repeated")
        check_value(not (self.soft and self.protect_adapter), "inject.soft", self.soft,
                    "the soft projector has no weights for an earlier adapter's spaces: unset inject.protect_adapter")
        if self.snapshot_every is not None:
            check_value(0 < self.snapshot_every < self.train.steps, "inject.snapshot_every", self.snapshot_every,
                        f"must be in [1, inject.train.steps = {self.train.steps}) (the last step's adapter is "
                        "the method's own)")
            check_value(self.train.sharding == "none", "inject.snapshot_every", self.snapshot_every,
                        "snapshots are written from a whole model: not with inject.train.sharding=fsdp2")
            finishing = [m for m in self.methods if m in METHODS and METHODS[m].finish is not None]
            check_value(not finishing, "inject.snapshot_every", self.snapshot_every,
                        f"{', '.join(finishing)} change the adapter after training, which a snapshot would not include")


@dataclass
class EvalConfig:
    batch_size: int = documented(32, "prompts per generation batch (left-padded, KV cache)")
    max_new_tokens: int = documented(16, "greedy tokens generated per answer")
    limit: int | None = documented(None, "evaluate at most this many items per set")
    lm_eval_tasks: list[str] | None = documented(
        None, "lm-evaluation-harness tasks (gsm8k, arc_challenge, ...) also run on every model (needs the eval extra)"
    )
    lm_eval_include_path: str | None = documented(None, "folder of custom lm-eval task YAML files")
    lm_eval_limit: int | None = documented(None, "lm-eval: at most this many items per task (null: all)")
    lm_eval_num_fewshot: int | None = documented(None, "lm-eval: few-shot examples per prompt (null: the task's own)")
    lm_eval_batch_size: int = documented(8, "lm-eval: requests per forward pass")
    lm_eval_chat_template: bool = documented(False, "lm-eval: wrap prompts in the tokenizer's chat template")
    lm_eval_unsafe_code: bool = documented(
        False, "lm-eval: allow tasks that execute the generated code (humaneval, mbpp); sets HF_ALLOW_CODE_EVAL=1"
    )

    def __post_init__(self) -> None:
        check_value(self.batch_size > 0, "eval.batch_size", self.batch_size, "must be positive")
        check_value(self.max_new_tokens > 0, "eval.max_new_tokens", self.max_new_tokens, "must be positive")
        check_value(self.limit is None or self.limit > 0, "eval.limit", self.limit, "must be positive (or null for all)")
        check_value(self.lm_eval_tasks is None or len(self.lm_eval_tasks) > 0, "eval.lm_eval_tasks",
                    self.lm_eval_tasks, "name at least one task (or null for none)")
        check_value(self.lm_eval_limit is None or self.lm_eval_limit > 0, "eval.lm_eval_limit", self.lm_eval_limit,
                    "must be positive (or null for all)")
        check_value(self.lm_eval_num_fewshot is None or self.lm_eval_num_fewshot >= 0, "eval.lm_eval_num_fewshot",
                    self.lm_eval_num_fewshot, "must be >= 0 (or null for the task's own)")
        check_value(self.lm_eval_batch_size > 0, "eval.lm_eval_batch_size", self.lm_eval_batch_size, "must be positive")


#: where ``log.report_to`` can send the training curves besides ``metrics.jsonl``
TRACKERS = ("tensorboard", "wandb")


@dataclass
class LogConfig:
    report_to: list[str] = documented(
        [], f"training curves also sent to: {', '.join(TRACKERS)} (metrics.jsonl is always written); "
        "TensorBoard files go to <run>/tensorboard/<stage>/"
    )
    project: str = documented("palora", "W&B project")
    run_name: str | None = documented(None, "W&B run name (default: the run directory's name)")

    def __post_init__(self) -> None:
        for name in self.report_to:
            check_value(name in TRACKERS, "log.report_to", name, f"unknown tracker; known: {', '.join(TRACKERS)}")
        check_value(len(set(self.report_to)) == len(self.report_to), "log.report_to", self.report_to, "repeated")
        check_value(bool(self.project.strip()), "log.project", self.project, "must not be empty")
        check_value(self.run_name is None or bool(self.run_name.strip()), "log.run_name", self.run_name,
                    "must not be empty (or null for the run directory's name)")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "the base model"})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "data files"})
    svf: SVFConfig = field(default_factory=SVFConfig, metadata={"help": "stage 1: SVF expert"})
    probe: ProbeConfig = field(default_factory=ProbeConfig, metadata={"help": "stage 2: probe"})
    inject: InjectConfig = field(default_factory=InjectConfig, metadata={"help": "stage 3: injection"})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "evaluation"})
    log: LogConfig = field(default_factory=LogConfig, metadata={
        "help": "training curves: metrics.jsonl, TensorBoard, W&B (never part of a stage digest)"})
    data_gen: DataSpec = field(default_factory=DataSpec, metadata={"help": "the demo's data sets (palora data)"})
    compare: CompareConfig = field(default_factory=CompareConfig, metadata={
        "help": "palora compare: every baseline and ablation under one budget (never part of a stage digest)"})
    out: str = documented("runs/palora", "run directory")
    seed: int = documented(0, "seed of every random choice (init, data order)")
    save_merged: bool = documented(True, "write methods/<method>/merged_model/ (large for big models)")
