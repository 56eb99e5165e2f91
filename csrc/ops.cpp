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
}
