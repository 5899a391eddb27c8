// Quantized serialization: the schemes `modelport quantize` writes, their kernels, and the error
// each run reports (docs/FORMATS.md, "Quantization").
//
// - Casts (f16, bf16, f8_e4m3, f8_e5m2): round to nearest even through convert/cast.h.
// - int8: weight-only, symmetric, per output channel (default) or per tensor. scale = max|x| /
//   127 in f32 (1 for an all-zero channel), q = clamp(round_half_even(x / scale), -127, 127),
//   value = q * scale. A quantized tensor NAME is stored as i8 NAME plus f32 NAME_scale whose
//   shape broadcasts against it (per channel along axis a: NAME's shape with every other
//   dimension 1, e.g. [out, 1] for a Linear weight, as compressed-tensors stores
//   `weight_scale`; per tensor: [1]).
// - ggml blocks (q8_0, q4_0, q4_1, q5_0, q5_1): bit-exact with ggml's quantize_row_*_ref, the
//   reference quantizers llama.cpp uses without an importance matrix. Blocks run along the last
//   dimension (ggml's ne[0]).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "modelport/core/dtype.h"
#include "modelport/core/shape.h"
#include "modelport/core/status.h"
#include "modelport/core/tensor.h"

namespace mp {

enum class QuantScheme : uint8_t {
  kF16,
  kBF16,
  kF8E4M3,
  kF8E5M2,
  kInt8,
  kQ8_0,
  kQ4_0,
  kQ4_1,
  kQ5_0,
  kQ5_1
};

/// "f16", "bf16", "f8_e4m3", "f8_e5m2", "int8", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1".
std::string_view SchemeName(QuantScheme scheme);
/// Parses a scheme name (case-insensitive; "fp16", "float16", "int8_per_channel"... are not
/// accepted: one spelling each). InvalidArgument listing the names otherwise.
Result<QuantScheme> ParseQuantScheme(std::string_view name);
/// The dtype a quantized tensor is stored as: f16 ... f8_e5m2, i8, q8_0 ... q5_1.
DType SchemeDType(QuantScheme scheme);
/// Every scheme, in enum order.
std::span<const QuantScheme> AllSchemes();

// --- Kernels ----------------------------------------------------------------------------------

/// Quantizes `src` (a whole number of 32-element blocks) into ggml blocks of `dtype` (kQ8_0,
/// kQ4_0, kQ4_1, kQ5_0 or kQ5_1) at `out` (src.size() / 32 * block_bytes bytes), bit-exact with
/// ggml's reference quantizers. InvalidArgument for another dtype, a partial block, or a
/// non-finite value (the formats cannot hold one; ggml's result would be garbage).
Status QuantizeBlocks(DType dtype, std::span<const float> src, uint8_t* out);

/// Index of the first NaN or infinity in x[0, n), or n.
uint64_t FirstNonFinite(const float* x, uint64_t n);
/// InvalidArgument for the non-finite x[index]: "NaN at flat index 7: a quantized format cannot
/// hold it" (callers add the tensor's name).
Status NonFiniteAt(const float* x, uint64_t index);

/// A tensor seen as [outer, channels, inner] around its channel axis (per tensor: channels 1).
struct ChannelLayout {
  uint64_t outer = 1, channels = 1, inner = 1;
  uint64_t elements() const { return outer * channels * inner; }
};
/// The layout of `shape` around `axis` (negative counts from the end); axis < 0 after that
/// adjustment is impossible, so per tensor is `per_tensor` = true. InvalidArgument for an axis
/// out of range.
Result<ChannelLayout> LayoutFor(const Shape& shape, int axis, bool per_tensor);

/// int8 scales: scale[c] = max |x| over channel c / 127 (f32 arithmetic), 1 for an all-zero
/// channel. InvalidArgument naming the flat index of a non-finite value.
Status Int8Scales(const float* x, const ChannelLayout& layout, float* scales);
/// q = clamp(round_half_even(x / scale[c]), -127, 127).
void QuantizeInt8(const float* x, const ChannelLayout& layout, const float* scales, int8_t* q);
/// value = q * scale[c] in f32 (what torch's `q.float() * scale` gives).
void DequantizeInt8(const int8_t* q, const ChannelLayout& layout, const float* scales, float* out);

/// The int8 kernels over the flat element range [begin, end) of one tensor (x, q and out point
/// at its element 0), so a tensor can be split across threads. Int8AbsMaxRange raises amax[c]
/// to the largest |x| of channel c in the range and returns the flat index of the first
/// non-finite value, or `end`.
uint64_t Int8AbsMaxRange(const float* x, const ChannelLayout& layout, uint64_t begin, uint64_t end,
                         float* amax);
/// scale = amax / 127, or 1 where amax is 0.
void Int8ScalesFromAbsMax(const float* amax, uint64_t channels, float* scales);
void QuantizeInt8Range(const float* x, const ChannelLayout& layout, const float* scales,
                       uint64_t begin, uint64_t end, int8_t* q);
void DequantizeInt8Range(const int8_t* q, const ChannelLayout& layout, const float* scales,
                         uint64_t begin, uint64_t end, float* out);

struct ErrorStats;
/// QuantizeInt8Range over n elements of one channel and stats->Add of their dequantized values,
/// in one pass with the same results. `scale` as Int8ScalesFromAbsMax gives it for a maximum
/// |x| at or above these elements' (|x| / scale <= 127 within rounding). `next`, when not null,
/// is n elements the caller reads next (the next row), fetched into L2 along the way.
void QuantizeInt8Measured(const float* x, uint64_t n, float scale, int8_t* q, ErrorStats* stats,
                          const float* next = nullptr);
/// QuantizeBlocks(kQ8_0, ...) and stats->Add of the dequantized blocks, in one pass with the
/// same results. False (out partly written, stats untouched) for what QuantizeBlocks refuses or
/// does in the reference's scalar arithmetic (a d that is an f32 subnormal).
/// `more`: how many elements after src the caller reads next (fetched along the way).
bool QuantizeQ8_0Measured(std::span<const float> src, uint8_t* out, ErrorStats* stats,
                          uint64_t more = 0);
/// The builds of the kernels above (and ErrorStats::Add's): by default the fastest this CPU
/// runs (AVX-512, AVX2 with FMA and F16C, or portable C++), all with the same results. Tests
/// pick a slower one to compare.
enum class KernelBuild { kBest, kAvx2, kPortable };
void UseKernelBuildForTesting(KernelBuild build);

/// Error of an approximation `out` of `ref`, accumulated in double.
struct ErrorStats {
  uint64_t count = 0;
  double max_abs = 0;      ///< max |out - ref|
  double sum_sq_err = 0;   ///< sum (out - ref)^2
  double sum_sq_ref = 0;   ///< sum ref^2
  double sum_ref_err = 0;  ///< sum ref * (out - ref)

  void Add(const float* ref, const float* out, uint64_t n);
  /// Replaces max_abs and the three sums (in member order) and counts `added` more elements.
  void SetSums(double max, const double* sums, uint64_t added);
  void Merge(const ErrorStats& other);
  double rmse() const;
  /// 10 log10(signal / noise); +inf for an exact result, 0 for no elements.
  double snr_db() const;
  /// out . ref / (|out| |ref|); 1 when both are all zeros.
  double cosine() const;
  Json ToJson() const;  ///< {"max_abs", "rmse", "snr_db" (null for +inf), "cosine"}
};

// --- Whole models -----------------------------------------------------------------------------

struct QuantizeOptions {
  QuantScheme scheme = QuantScheme::kInt8;
  bool per_tensor = false;  ///< int8: one scale per tensor instead of per output channel
  int axis = 0;             ///< int8 per channel: the output-channel axis (PyTorch layout: 0)
  /// Glob patterns (fnmatch: *, ?, [...]) on tensor names: a tensor is a candidate when it
  /// matches an include pattern (or none are given) and no exclude pattern.
  std::vector<std::string> include, exclude;
  /// Candidates must be floating point, of rank >= 2 and hold at least this many elements;
  /// biases, norms and small tensors stay as they are.
  uint64_t min_elements = 1024;
  /// The format the result will be written in ("safetensors", "gguf", "pytorch", "numpy"):
  /// decides which metadata describe the quantization (GGUF's general.file_type; elsewhere a
  /// compressed-tensors style "quantization_config").
  std::string output_format;
  unsigned threads = 0;  ///< 0: WorkerCount()
};

/// Why `tensor` is not quantized under `options` ("not floating point", "rank 1", "512
/// elements < --min-size 1024", "excluded by 'lm_head*'", "already f16", "last dimension 10 is
/// not a multiple of 32"...), or empty when it is a candidate.
std::string KeepReason(const TensorInfo& tensor, const QuantizeOptions& options);

/// What happened to one tensor of the source.
struct TensorQuantReport {
  std::string name;
  DType from = DType::kF32;
  DType to = DType::kF32;  ///< the stored dtype (== from when kept)
  bool quantized = false;
  std::string reason;  ///< why it was kept (empty when quantized)
  int axis = -1;       ///< int8 per channel: the scale axis; -1 otherwise
  uint64_t elements = 0;
  uint64_t bytes_before = 0;
  uint64_t bytes_after = 0;  ///< including its scale tensor
  ErrorStats error;          ///< filled once the tensor was loaded (quantized ones only)
  bool measured = false;
};

/// The report of one quantize run: per tensor and overall.
struct QuantReport {
  QuantScheme scheme = QuantScheme::kInt8;
  std::vector<TensorQuantReport> tensors;  ///< source order

  uint64_t quantized_count() const;
  uint64_t bytes_before() const;
  uint64_t bytes_after() const;
  /// The error over every quantized element together.
  ErrorStats overall() const;
  /// {"scheme", "tensors": [{"name", "from", "to", "quantized", "reason", "axis", "elements",
  ///  "bytes_before", "bytes_after", "error"}], "quantized", "kept", "bytes_before",
  ///  "bytes_after", "ratio", "error"}.
  Json ToJson() const;
};

/// A view of `source` with the scheme applied, computed lazily tensor by tensor as a writer
/// loads it (memory bounded by the largest tensor; each tensor's work spread over `threads`).
/// Loading a quantized tensor fills its error in `*report`, which must outlive the view (as must
/// `source`). InvalidArgument for options that cannot apply (an axis out of range for a
/// candidate); a non-finite value fails the Load of its tensor, naming it.
Result<std::unique_ptr<ModelSource>> Quantize(const ModelSource& source,
                                              const QuantizeOptions& options, QuantReport* report);

/// A view of `source` with every quantized tensor back in float `to` (f16, bf16, f32, f64):
/// int8 NAME + NAME_scale pairs (the scale tensors disappear), ggml block types, and float
/// tensors of another width. Integer and bool tensors without a scale pass through. The
/// quantization metadata written by Quantize is dropped.
Result<std::unique_ptr<ModelSource>> Dequantize(const ModelSource& source, DType to);

/// How int8 `values` and the float tensor `scale` (its NAME_scale) pair up: one scale (per
/// tensor), a scale shaped like the values with every dimension but one set to 1 (per channel,
/// as Quantize writes and compressed-tensors stores [out, 1]), or a 1-D scale along the first
/// dimension (torch's per-channel scales). Nothing for any other shape or dtype.
std::optional<ChannelLayout> Int8PairLayout(const TensorInfo& values, const TensorInfo& scale);

/// Tensor `index` of `source` (an i8 tensor paired with its scale tensor `scale_index`)
/// dequantized to f32: q * scale.
Result<TensorView> DequantizeInt8Pair(const ModelSource& source, size_t index, size_t scale_index,
                                      const ChannelLayout& layout);

/// The metadata key Quantize writes for non-GGUF outputs (compressed-tensors' name for it).
inline constexpr std::string_view kQuantizationConfigKey = "quantization_config";
/// The suffix of an int8 tensor's scale tensor.
inline constexpr std::string_view kScaleSuffix = "_scale";

}  // namespace mp
