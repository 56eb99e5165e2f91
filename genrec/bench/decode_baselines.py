"""The usual ways of constrained decoding that ``genrec bench decode`` measures genrec against: a
beam search masking each beam through a Python callback over a dict trie (the
``prefix_allowed_tokens_fn`` pattern), and ``transformers``' ``generate`` on a T5 of TIGER's size
(imported only when that baseline runs: the GPU machine need not have transformers)."""

from __future__ import annotations

import contextlib
import importlib.util
import time

import torch

from genrec.bench.decode_fixtures import TIGER_SIZE, Catalogue


class PythonTrie:
    """A dict trie: prefix tuple -> allowed next tokens, and full ID -> item (the usual Python way)."""

    def __init__(self, codes: torch.Tensor):
        self.children: dict[tuple, list[int]] = {}
        self.items: dict[tuple, int] = {}
        levels = codes.shape[1]
        for item, row in enumerate(codes.tolist()):
            for t in range(levels):
                kids = self.children.setdefault(tuple(row[:t]), [])
                if not kids or kids[-1] != row[t]:
                    kids.append(row[t])
            self.items[tuple(row)] = item
        for kids in self.children.values():
            kids.sort()
        for key, kids in self.children.items():  # drop duplicates left by unsorted input
            self.children[key] = sorted(set(kids))

    def allowed(self, prefix: list[int]) -> list[int]:
        return self.children.get(tuple(prefix), [])


def python_trie_search(
    step_fn, trie: PythonTrie, users: int, beam: int, top_k: int, levels: int, device, timer=None
):
    """Beam search masking each beam with a Python callback, as ``prefix_allowed_tokens_fn`` does."""
    timer = timer or (lambda name: contextlib.nullcontext())
    prefix = torch.zeros(users, 1, 0, dtype=torch.long, device=device)
    parents = torch.zeros(users, 1, dtype=torch.long, device=device)
    scores = torch.zeros(users, 1, device=device)
    for t in range(levels):
        with timer("model"):
            logits = step_fn(prefix, parents)
        with timer("select"):
            K = beam if t < levels - 1 else top_k
            logp = torch.log_softmax(logits.float(), dim=-1) + scores[:, :, None]
            mask = torch.full_like(logp, float("-inf"))
            prefixes = prefix.tolist()
            alive = (scores > float("-inf")).tolist()
            for u in range(users):
                for b in range(logp.shape[1]):
                    if alive[u][b]:
                        mask[u, b, trie.allowed(prefixes[u][b])] = 0.0
            flat = (logp + mask).reshape(users, -1)
            if flat.shape[1] < K:  # keep exactly K beams (fixed shapes for the model), the extra ones dead
                flat = torch.cat([flat, flat.new_full((users, K - flat.shape[1]), float("-inf"))], dim=1)
            scores, idx = flat.topk(K, dim=1)
            V = logits.shape[2]
            idx = torch.where(scores > float("-inf"), idx, 0)
            parents, tokens = idx // V, idx % V
            prefix = torch.cat(
                [prefix.gather(1, parents[:, :, None].expand(users, K, t)), tokens[:, :, None]], 2
            )
    with timer("select"):
        rows = prefix.tolist()
        items = [[trie.items.get(tuple(r), -1) for r in user] for user in rows]
    return torch.tensor(items), scores


def hf_available() -> bool:
    return importlib.util.find_spec("transformers") is not None


class HFGenerateBaseline:
    """T5 of TIGER's size decoding with ``generate(num_beams, prefix_allowed_tokens_fn)``.

    Vocabulary: 0 pad (also the decoder start), 1 eos, then each level's codes at an offset.
    """

    def __init__(self, cat: Catalogue, trie: PythonTrie, device: torch.device):
        from transformers import T5Config, T5ForConditionalGeneration

        self.offsets = [2]
        for v in cat.level_sizes[:-1]:
            self.offsets.append(self.offsets[-1] + v)
        vocab = self.offsets[-1] + cat.level_sizes[-1]
        config = T5Config(
            vocab_size=vocab,
            d_model=TIGER_SIZE["d_model"],
            d_kv=TIGER_SIZE["head_dim"],
            num_heads=TIGER_SIZE["num_heads"],
            d_ff=TIGER_SIZE["d_ff"],
            num_layers=TIGER_SIZE["encoder_layers"],
            num_decoder_layers=TIGER_SIZE["decoder_layers"],
            dropout_rate=0.0,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
        torch.manual_seed(0)
        self.model = T5ForConditionalGeneration(config).to(device).eval()
        self.trie = trie
        self.cat = cat
        self.device = device
        self.levels = len(cat.level_sizes)
        self.callback_seconds = 0.0

    def _allowed(self, batch_id: int, sent: torch.Tensor) -> list[int]:
        t0 = time.perf_counter()
        generated = sent.tolist()[1:]  # after the decoder start token
        t = len(generated)
        if t >= self.levels:
            out = [1]
        else:
            prefix = [tok - self.offsets[i] for i, tok in enumerate(generated)]
            out = [self.offsets[t] + c for c in self.trie.allowed(prefix)]
        self.callback_seconds += time.perf_counter() - t0
        return out

    def decode(self, batch: dict[str, torch.Tensor], beam: int, top_k: int):
        history = batch["history"].cpu()
        ids = history + torch.tensor(self.offsets)
        lengths = batch["history_len"].cpu()
        U, S, T = ids.shape
        valid = (torch.arange(S)[None, :] < lengths[:, None]).repeat_interleave(T, dim=1)
        input_ids = torch.where(valid, ids.reshape(U, S * T), 0).to(self.device)
        with torch.no_grad():
            return self.model.generate(
                input_ids=input_ids,
                attention_mask=valid.long().to(self.device),
                num_beams=beam,
                num_return_sequences=min(top_k, beam),
                max_new_tokens=self.levels,
                do_sample=False,
                prefix_allowed_tokens_fn=self._allowed,
            )
