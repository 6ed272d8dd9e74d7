// Python bindings of the CPU kernels. The ops' schemas and their registration live in
// lamp_kernels/ops.py (torch.library); this module only exposes the kernels.
#include <torch/extension.h>

#include "balanced_rows.h"
#include "cut_solver.h"
#include "float_mode.h"
#include "cuda_scan_emulation.h"
#include "layer_kernels.h"
#include "row_kernels.h"
#include "summaries.h"
#include "nm_masks.h"
#include "owl_stats.h"
#include "scores_cpu.h"
#include "value_check.h"

namespace py = pybind11;
using lamp::CutSolver;

// Every kernel runs without the GIL and in the default floating-point mode (float_mode.h).
using Guard = py::call_guard<py::gil_scoped_release, lamp::DefaultFloatMode>;

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "lamp_kernels C++ CPU kernels";
  m.def("bin_summary", &lamp::bin_summary, Guard());
  m.def("bin_summaries", &lamp::bin_summaries, Guard());
  m.def("bin_summaries_scanned", &lamp::bin_summaries_scanned, Guard());
  m.def("significand_sums", &lamp::significand_sums, Guard());
  m.def("count_above", &lamp::count_above, Guard());
  m.def("significand_sums_scaled", &lamp::significand_sums_scaled, Guard());
  m.def("count_above_scaled", &lamp::count_above_scaled, Guard());
  m.def("nm_keep", &lamp::nm_keep, Guard());
  m.def("nm_keep_scaled", &lamp::nm_keep_scaled, Guard());
  m.def("gather_bin_keys", &lamp::gather_bin_keys, Guard());
  m.def("gather_bin_keys_many", &lamp::gather_bin_keys_many, Guard());
  m.def("bin_summaries_scaled", &lamp::bin_summaries_scaled, Guard());
  m.def("gather_bin_keys_scaled", &lamp::gather_bin_keys_scaled, Guard());
  m.def("apply_cuts_scaled", &lamp::apply_cuts_scaled, Guard());
  m.def("apply_cut", &lamp::apply_cut, Guard());
  m.def("zero_cut_", &lamp::zero_cut_, Guard());
  m.def("apply_cuts", &lamp::apply_cuts, Guard());
  m.def("zero_cuts_", &lamp::zero_cuts_, Guard());
  m.def("masked_copy_", &lamp::masked_copy_, Guard());
  m.def("cut_and_gather", &lamp::cut_and_gather, Guard());
  m.def("fix_cuts_", &lamp::fix_cuts_, Guard());
  m.def("lamp_scores", &lamp::lamp_scores, Guard());
  m.def("row_order_values", &lamp::row_order_values, Guard());
  m.def("row_lamp_scores", &lamp::row_lamp_scores, Guard());
  m.def("row_cut_masks", &lamp::row_cut_masks, Guard());
  m.def("row_cut_masks_scaled", &lamp::row_cut_masks_scaled, Guard());
  m.def("row_cuts", &lamp::row_cuts, Guard());
  m.def("balanced_cut_mask", &lamp::balanced_cut_mask, Guard());
  m.def("row_value_window", &lamp::row_value_window, Guard());
  m.def("masked_per_row", &lamp::masked_per_row, Guard());
  m.def("lamp_scores_by", &lamp::lamp_scores_by, Guard());  // tests: one path
  m.def("alive_max_abs", &lamp::alive_max_abs, Guard());
  m.def("alive_max_abs_scaled", &lamp::alive_max_abs_scaled, Guard());
  m.def("value_scan", &lamp::value_scan, Guard());
  m.def("cuda_scan_emulation", &lamp::cuda_scan_emulation, Guard());
  py::class_<CutSolver>(m, "CutSolver")
      .def(py::init<const std::vector<int64_t>&, const std::vector<at::Tensor>&, const std::vector<at::Tensor>&,
                    const std::vector<at::Tensor>&, bool>(),
           Guard())
      .def("plan_global",
           [](CutSolver& s, int64_t k, const std::vector<int64_t>& least, const std::vector<int64_t>& most) {
             std::vector<std::tuple<bool, int64_t, int64_t>> out;
             for (const auto& r : s.plan_global(k, least, most)) out.emplace_back(r.gather, r.bin_lo, r.bin_hi);
             return out;
           },
           py::arg("k"), py::arg("least") = std::vector<int64_t>(), py::arg("most") = std::vector<int64_t>())
      .def("plan_counts",
           [](CutSolver& s, const std::vector<int64_t>& pruned) {
             std::vector<std::tuple<bool, int64_t, int64_t>> out;
             for (const auto& r : s.plan_counts(pruned)) out.emplace_back(r.gather, r.bin_lo, r.bin_hi);
             return out;
           })
      .def("finish",
           [](CutSolver& s, const std::vector<at::Tensor>& gathered) {
             py::gil_scoped_release release;
             std::vector<std::tuple<int64_t, int64_t, int64_t>> out;
             for (const auto& c : s.finish(gathered)) out.emplace_back(c.cut_key, c.ties, c.pruned);
             return out;
           })
      .def_property_readonly("threshold", &CutSolver::threshold);
}
