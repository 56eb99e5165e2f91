"""Decoding: the trie index of a catalogue's semantic IDs and the constrained beam search over it.

``TrieIndex.from_codes(codes)`` builds the index (C++, on the CPU) and ``index.to(device)`` moves
it once; ``beam_search(step_fn, index, num_users, beam_size, top_k)`` returns each user's best
valid items; ``GraphedBeamSearch`` replays the whole search as one CUDA graph for fixed shapes.
Decoding imports neither polars nor faiss nor transformers.
"""

from genrec.decoding.graphs import GraphedBeamSearch
from genrec.decoding.masks import RequestMasks
from genrec.decoding.search import BeamSearchResult, StepFn, beam_search, decode_loop
from genrec.decoding.trie import TRIE_FILE, TrieIndex, TrieLevel

__all__ = [
    "TRIE_FILE",
    "BeamSearchResult",
    "GraphedBeamSearch",
    "RequestMasks",
    "StepFn",
    "TrieIndex",
    "TrieLevel",
    "beam_search",
    "decode_loop",
]
