"""``[model]``: the generative model's settings (genrec.models builds the model they name), with the
settings of the ranking after training (genrec.fusion) and of cold items. Standard library only.

One table holds every kind's settings (the TOML files users know stay flat); :data:`KIND_SETTINGS`
says which of them each kind reads, and loading a config names every setting the chosen kind does
not read (:meth:`ModelConfig.unread_settings`), so none is ignored silently."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any

from genrec.settings import require

MODEL_KINDS = ("tiger", "decoder_only", "item_decoder", "sasrec")

_EVERY_KIND = (
    "kind",
    "d_model",
    "num_heads",
    "head_dim",
    "d_ff",
    "dropout",
    "decoder_layers",
    "exclude_seen",
)
_GENERATIVE = ("user_buckets", "user_dropout", "tie_embeddings", "item_embeddings")
#: The item head, content vectors, and the ranking after training (genrec.fusion) that needs the head.
_ITEM_SIDE = (
    "depth_layers",
    "item_loss",
    "item_negatives",
    "content_vectors",
    "content_dropout",
    "rerank_weight",
    "cooccurrence_weight",
    "cooccurrence_eps",
    "fusion_candidates",
    "tune_fusion",
    "tune_users",
    "cold_candidates",
    "profile_embeddings",
    "cold_objective",
    "cold_share_cap",
    "cold_bias",
    "cold_epsilon",
)
#: The settings each kind reads (genrec.models.build_model and the stages after training).
KIND_SETTINGS: dict[str, frozenset[str]] = {
    "tiger": frozenset((*_EVERY_KIND, *_GENERATIVE, "encoder_layers", "history_tokens")),
    "decoder_only": frozenset((*_EVERY_KIND, *_GENERATIVE)),
    "item_decoder": frozenset((*_EVERY_KIND, *_GENERATIVE, *_ITEM_SIDE)),
    "sasrec": frozenset((*_EVERY_KIND, "loss", "negatives")),
}


def migrate_model_table(table: dict[str, Any], where: str, warn: bool = True) -> dict[str, Any]:
    """``table`` (a whole config's) with the old spelling of the item decoder, ``kind = "decoder_only"``
    plus ``history_tokens = "items"``, rewritten as ``kind = "item_decoder"``. ``warn``: say so, naming
    ``where`` (a user's file; a saved run's config migrates silently)."""
    model = table.get("model")
    if not (
        isinstance(model, dict)
        and model.get("kind") == "decoder_only"
        and model.get("history_tokens") == "items"
    ):
        return table
    if warn:
        warnings.warn(
            f'{where}: model.kind = "decoder_only" with model.history_tokens = "items" is now written '
            f'model.kind = "item_decoder"; loaded as that. Change the [model] table to kind = "item_decoder" '
            "and drop history_tokens (runs and caches made with the old spelling are still found).",
            FutureWarning,
            stacklevel=3,
        )
    model = {k: v for k, v in model.items() if k != "history_tokens"}
    return {**table, "model": {**model, "kind": "item_decoder"}}


@dataclass
class ModelConfig:
    """The generative model (defaults: TIGER's)."""

    kind: str = "tiger"
    """"tiger" (encoder-decoder), "decoder_only" (one token per semantic-ID level), "item_decoder"
    (one token per history item, a depth decoder for the levels, and the item head the fusion and
    cold items need; genrec.models.ItemDecoder), or "sasrec" (the item-ID baseline: no semantic
    IDs, top-K by inner product). KIND_SETTINGS lists what each reads."""
    d_model: int = 128
    encoder_layers: int = 4
    decoder_layers: int = 4
    """Decoder layers (the decoder-only model's layer count)."""
    num_heads: int = 6
    head_dim: int = 64
    d_ff: int = 1024
    dropout: float = 0.1
    user_buckets: int = 2000
    """Hashed user tokens (TIGER: 2000 buckets); 0 turns them off."""
    user_dropout: float = 0.1
    """In training, hide the user token with this probability (teaches the unknown-user token)."""
    tie_embeddings: bool = True
    """Output heads share the semantic-ID embedding tables."""
    history_tokens: str = "levels"
    """tiger: "levels", one encoder token per semantic-ID level of each history item (TIGER); "items":
    one token per item, the sum of its levels' embeddings (T times shorter sequences)."""
    depth_layers: int = 1
    """item_decoder: layers of the depth decoder that emits the levels."""
    item_embeddings: bool = False
    """History items also add a learned embedding of their own (memorised identity)."""
    item_loss: float = 0.0
    """item_decoder with item_embeddings: weight of an auxiliary
    next-item cross-entropy over the whole catalogue, scored against the item embeddings (trains
    the history states faster; decoding still generates semantic IDs). 0 turns it off."""
    item_negatives: int = 0
    """item_loss over the target and this many uniformly drawn items shared by the batch (a sampled
    softmax, about catalogue / item_negatives times cheaper); 0: over the whole catalogue."""
    rerank_weight: float = 0.0
    """With item_loss > 0: rank the items the beam search found (every beam, only real items) by
    their sequence log-probability plus this weight times the item head's log-probability, a
    hybrid of generative and dense scoring (as in LIGER, Yang et al. 2024). 0 keeps the beam order."""
    cooccurrence_weight: float = 0.0
    """With item_loss > 0: also score each candidate by this weight times log(cooccurrence_eps + the
    co-occurrence votes of the history's recent items for it) (genrec.fusion; the statistics come from
    the training split, as genrec.eval's co-occurrence baseline's do). 0 leaves co-occurrence out."""
    cooccurrence_eps: float = 1e-3
    """The floor inside that logarithm (items no recent item votes for score log(eps))."""
    fusion_candidates: int = 0
    """With item_loss > 0: the item head and (with tune_fusion or cooccurrence_weight > 0) the
    co-occurrence statistics each add this many of their best items outside the history to the
    beam's items before ranking; each is scored on the beam's scale (its semantic ID's
    log-probability, teacher-forced). 0: rank the beam's items only."""
    tune_fusion: bool = False
    """After training, choose rerank_weight, cooccurrence_weight and cooccurrence_eps on the
    validation split (genrec.fusion_tuning.tune_fusion, by NDCG@10); the test and genrec recommend use
    the chosen weights (run.json "fusion"). The beam alone and the beam with the item head are
    reported beside the final list."""
    tune_users: int = 0
    """Validation users tune_fusion reads (a fixed seeded sample); 0: all of them."""
    content_vectors: bool = False
    """ItemDecoder with item_embeddings: each item's vector (history input and item head) adds a
    learned projection of its embedding from the embed stage, and only items seen in training keep
    a free embedding, so items nobody interacted with (cold start, items added after training)
    score by what they are (genrec.models.ItemDecoder.item_vectors)."""
    content_dropout: float = 0.5
    """With content_vectors: in each training step, drop this share of the items' free embeddings,
    so the content part alone learns to rank, on the scale cold items are scored on."""
    cold_candidates: int = 0
    """With content_vectors and item_loss: items never seen in training also enter the candidates,
    from a beam search restricted to them (this many beams) and from the item head's best of them
    (this many); genrec.fusion scores them on the same scale, plus cold_bias. 0: none."""
    profile_embeddings: str = ""
    """With item_loss: the item embeddings of the fusion's content similarity (genrec.profile_similarity):
    "text" (the text encoder's embeddings of the items' text, an embed stage of its own), "content"
    (the embed stage's output). Every candidate's cosine to the history's recency-weighted profile
    joins its fused score (the weight chosen on validation with tune_fusion), and with
    fusion_candidates the most similar items join the candidates. "": none (cold candidates then
    measure similarity with the model's content rows)."""
    cold_objective: str = "ndcg"
    """What tune_fusion maximises with cold candidates, keeping warm-target Recall@10 at >= 98% of the
    ranking without content knowledge (genrec.fusion_tuning.tune_cold): "ndcg" (NDCG@10 of all validation
    users) or "cold_recall" (the cold-target Recall@10: as much exposure for new items as the warm
    floor allows)."""
    cold_share_cap: bool = False
    """With tune_fusion and cold candidates: TIGER's epsilon is at most the share of validation
    targets that are cold items, as the nearest whole number of places in a top 10 (at least one;
    about 10% cold targets: at most 1 of a top 10). New items get the places users' choices give
    them, whatever the objective would spend; validation cannot show how much a wider share costs
    warm users on test (histories there may end with a new item; bench/results/cold-beauty/NOTES.md)."""
    cold_bias: float = 0.0
    """Added to the fused score of every cold candidate (chosen on validation with tune_fusion)."""
    cold_epsilon: float = 1.0
    """At most ceil(cold_epsilon * K) cold items in a top K (TIGER's epsilon); 1: no cap (chosen on
    validation with tune_fusion)."""
    loss: str = "ce"
    """sasrec: "ce" (cross-entropy over the whole catalogue) or "bce" (sampled binary cross-entropy)."""
    negatives: int = 1
    """sasrec with loss "bce": random negative items per target."""
    exclude_seen: bool = False
    """Recommend only items outside the user's history (validation and test alike); generative models
    mask them in the beam search, so no beam is spent on them."""

    def hash_form(self, settings: dict[str, Any]) -> dict[str, Any]:
        """What genrec.settings.hashed_settings hashes: an item_decoder as the ``decoder_only`` with
        ``history_tokens = "items"`` it was spelt before it became a kind, so the runs and caches
        made then keep their keys."""
        if self.kind == "item_decoder":
            return {**settings, "kind": "decoder_only", "history_tokens": "items"}
        return settings

    def validate(self) -> None:
        require(self.kind in MODEL_KINDS, "model.kind", self.kind, f"one of {', '.join(MODEL_KINDS)}")
        require(
            not (self.kind == "decoder_only" and self.history_tokens == "items"),
            "model.history_tokens",
            self.history_tokens,
            '"levels" for kind = "decoder_only" (one token per history item is kind = "item_decoder")',
        )
        self._validate_network()
        self._validate_item_side()
        self._validate_ranking()

    def unread_settings(self) -> list[str]:
        """One message per setting the kind does not read that is not at its default: it changes
        nothing, and genrec.config.load_config says so rather than ignore it silently. (Not an error:
        a profile may switch the kind of a base config, and saved runs must load. The item head's
        settings, which later stages act on, stay errors for other kinds: _validate_item_side.)"""
        reads = KIND_SETTINGS[self.kind]
        out = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name not in reads and value != f.default:
                readers = ", ".join(k for k in MODEL_KINDS if f.name in KIND_SETTINGS[k])
                out.append(
                    f'model.{f.name} = {value!r} is not read by model.kind = "{self.kind}" (only by: {readers}); '
                    "it changes nothing"
                )
        return out

    def _validate_network(self) -> None:
        for name in ("d_model", "num_heads", "head_dim", "d_ff", "decoder_layers"):
            require(getattr(self, name) >= 1, f"model.{name}", getattr(self, name), ">= 1")
        require(self.encoder_layers >= 0, "model.encoder_layers", self.encoder_layers, ">= 0")
        require(self.depth_layers >= 1, "model.depth_layers", self.depth_layers, ">= 1")
        require(0 <= self.dropout < 1, "model.dropout", self.dropout, "in [0, 1)")
        require(self.user_buckets >= 0, "model.user_buckets", self.user_buckets, ">= 0")
        require(
            self.history_tokens in ("levels", "items"),
            "model.history_tokens",
            self.history_tokens,
            "levels or items",
        )
        require(0 <= self.user_dropout <= 1, "model.user_dropout", self.user_dropout, "in [0, 1]")
        require(self.loss in ("ce", "bce"), "model.loss", self.loss, '"ce" or "bce"')
        require(
            self.loss == "ce" or self.kind == "sasrec",
            "model.loss",
            self.loss,
            '"ce" for generative models (sampled "bce" is a sasrec option)',
        )
        require(self.negatives >= 1, "model.negatives", self.negatives, ">= 1")

    def _validate_item_side(self) -> None:
        """The item head, content vectors and cold items (item_decoder settings)."""
        require(
            self.item_loss == 0 or (self.kind == "item_decoder" and self.item_embeddings),
            "model.item_loss",
            self.item_loss,
            '0 unless kind = "item_decoder" and item_embeddings = true (the item head scores against the item vectors)',
        )
        require(self.item_loss >= 0, "model.item_loss", self.item_loss, ">= 0")
        require(
            not self.content_vectors or (self.kind == "item_decoder" and self.item_embeddings),
            "model.content_vectors",
            self.content_vectors,
            'false unless kind = "item_decoder" and item_embeddings = true (content is added to the item vectors)',
        )
        require(0 <= self.content_dropout < 1, "model.content_dropout", self.content_dropout, "in [0, 1)")
        require(self.cold_candidates >= 0, "model.cold_candidates", self.cold_candidates, ">= 0")
        require(
            self.cold_candidates == 0 or (self.content_vectors and self.item_loss > 0),
            "model.cold_candidates",
            self.cold_candidates,
            "0 unless content_vectors = true and item_loss > 0 (cold items are scored by the item head)",
        )
        require(0 <= self.cold_epsilon <= 1, "model.cold_epsilon", self.cold_epsilon, "in [0, 1]")
        require(self.item_negatives >= 0, "model.item_negatives", self.item_negatives, ">= 0")

    def _validate_ranking(self) -> None:
        """The settings of the ranking after training (genrec.fusion): they need the item head."""
        require(
            self.cold_objective in ("ndcg", "cold_recall"),
            "model.cold_objective",
            self.cold_objective,
            'one of "ndcg", "cold_recall"',
        )
        require(
            self.profile_embeddings in ("", "text", "content"),
            "model.profile_embeddings",
            self.profile_embeddings,
            'one of "", "text", "content"',
        )
        require(
            not self.profile_embeddings or self.item_loss > 0,
            "model.profile_embeddings",
            self.profile_embeddings,
            "set only with an item head (item_loss > 0): it is a fusion term",
        )
        require(
            self.rerank_weight == 0 or self.item_loss > 0,
            "model.rerank_weight",
            self.rerank_weight,
            "0 unless model.item_loss > 0 (the item head it re-ranks with)",
        )
        require(self.rerank_weight >= 0, "model.rerank_weight", self.rerank_weight, ">= 0")
        fused = self.cooccurrence_weight > 0 or self.fusion_candidates > 0 or self.tune_fusion
        require(
            not fused or self.item_loss > 0,
            "model.cooccurrence_weight / fusion_candidates / tune_fusion",
            "set",
            "off unless model.item_loss > 0 (fusion ranks with the item head)",
        )
        require(self.cooccurrence_weight >= 0, "model.cooccurrence_weight", self.cooccurrence_weight, ">= 0")
        require(self.cooccurrence_eps > 0, "model.cooccurrence_eps", self.cooccurrence_eps, "> 0")
        require(self.fusion_candidates >= 0, "model.fusion_candidates", self.fusion_candidates, ">= 0")
        require(self.tune_users >= 0, "model.tune_users", self.tune_users, ">= 0")
