// Operator schemas of the genrec library and the Python module stub.
//
// Importing ``genrec._C`` runs the static registrations below, after which any
// project can call ``torch.ops.genrec.<op>``. Device kernels register
// themselves in csrc/cpu, csrc/cuda and csrc/meta.cpp.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// An empty module: its only job is to make the shared library importable.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "genrec compiled operators (see torch.ops.genrec)", -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(genrec, m) {
  // Residual quantization: for each level l, code[:, l] = argmin_k ||r - codebooks[l, k]||^2
  // (ties to the smallest k), then r -= codebooks[l, code[:, l]]. Returns int64 [N, L].
  m.def("rq_encode(Tensor x, Tensor codebooks) -> Tensor");
  // Same, writing into a caller-owned int64 [N, L] buffer (every element is written).
  m.def("rq_encode_out(Tensor x, Tensor codebooks, Tensor(a!) out) -> ()");

  // The decoding trie of unique semantic IDs codes [N, L] (int64), CPU only (csrc/cpu/trie_build.cpp):
  // [leaf_items, row_ptr_0, child_tokens_0, ..., row_ptr_{L-1}, child_tokens_{L-1}], all int32.
  m.def("build_trie(Tensor codes, int[] level_sizes) -> Tensor[]");
  // A dropout mask as multipliers (csrc/cpu/dropout.cpp): a contiguous tensor shaped and typed like
  // `like` holding 0 where element i is dropped, 1 / (1 - p) where kept; element i's draw is output
  // i of splitmix64 started at `seed`, so the mask is a pure function of (seed, p, numel).
  m.def("dropout_multiplier(Tensor like, int seed, float p) -> Tensor");
  // One constrained beam-search step (see genrec/ops/beam_step.py): log-softmax of logits [U, B, V],
  // plus beam scores, masked by the trie level (CSR row_ptr/child_tokens, optional dense table) and an
  // optional per-user node list; the best beam_size (score desc, parent asc, token asc) per user.
  // Returns tokens int64 [U, K], parents int64 [U, K], scores float32 [U, K], next_states int32 [U, K].
  m.def(
      "constrained_beam_step(Tensor logits, Tensor beam_scores, Tensor states, Tensor row_ptr, "
      "Tensor child_tokens, Tensor? dense, Tensor? mask_offsets, Tensor? mask_nodes, Tensor? mask_allow, "
      "int beam_size) -> (Tensor, Tensor, Tensor, Tensor)");
  // Same, writing into caller-owned buffers (every element is written): for CUDA graphs.
  m.def(
      "constrained_beam_step_out(Tensor logits, Tensor beam_scores, Tensor states, Tensor row_ptr, "
      "Tensor child_tokens, Tensor? dense, Tensor? mask_offsets, Tensor? mask_nodes, Tensor? mask_allow, "
      "int beam_size, Tensor(a!) tokens, Tensor(b!) parents, Tensor(c!) scores, Tensor(d!) next_states) -> ()");
}
