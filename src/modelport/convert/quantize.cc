// The whole-model half of quantize.h: which tensors a scheme applies to, the lazy Quantize and
// Dequantize views, the metadata that describes the result, and the report.
#include "modelport/convert/quantize.h"

#include <fnmatch.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <utility>

#include "modelport/convert/cast.h"
#include "modelport/core/parallel.h"
#include "modelport/formats/gguf/quants.h"

namespace mp {
namespace {

// Elements per work item when one tensor is split across threads: big enough that thread
// hand-off is noise, small enough that a 4096 x 4096 weight still keeps every core busy.
constexpr uint64_t kChunk = uint64_t{1} << 18;
constexpr uint64_t kBlockElems = 32;
// Elements a chunk is quantized, dequantized and measured in, one piece at a time, so the three
// passes over a piece run in L1 (8 KiB of input, 8 KiB dequantized) instead of three trips
// through a megabyte.
constexpr uint64_t kPiece = 2048;

std::string Quote(const std::string& name) { return "'" + name + "'"; }

const std::string* FirstMatch(const std::vector<std::string>& patterns, const std::string& name) {
  for (const std::string& p : patterns) {
    if (fnmatch(p.c_str(), name.c_str(), 0) == 0) return &p;
  }
  return nullptr;
}

bool IsBlockScheme(QuantScheme s) { return IsQuantized(SchemeDType(s)); }

// llama.cpp's llama_ftype for a model whose weights are mostly `scheme` (general.file_type);
// nothing for schemes llama.cpp has no file type for.
std::optional<uint32_t> LlamaFileType(QuantScheme scheme) {
  switch (scheme) {
    case QuantScheme::kF16:
      return 1;
    case QuantScheme::kQ4_0:
      return 2;
    case QuantScheme::kQ4_1:
      return 3;
    case QuantScheme::kQ8_0:
      return 7;
    case QuantScheme::kQ5_0:
      return 8;
    case QuantScheme::kQ5_1:
      return 9;
    case QuantScheme::kBF16:
      return 32;
    default:
      return std::nullopt;
  }
}

constexpr std::string_view kFileTypeKey = "general.file_type";
constexpr std::string_view kQuantVersionKey = "general.quantization_version";

// The size of ForChunks' items for `align`: kChunk rounded down to a multiple of it (at least
// one `align`).
uint64_t ChunkFor(uint64_t align) { return std::max<uint64_t>(align, kChunk / align * align); }

// Splits [0, n) into kChunk-element items (multiples of `align`) and runs fn(begin, end) on the
// worker pool; fn's errors come back as ParallelFor reports them (lowest index first).
Status ForChunks(uint64_t n, uint64_t align, unsigned threads,
                 const std::function<Status(uint64_t, uint64_t)>& fn) {
  const uint64_t chunk = ChunkFor(align);
  const uint64_t items = (n + chunk - 1) / chunk;
  return ParallelFor(
      static_cast<size_t>(items),
      [&](size_t k) {
        const uint64_t begin = k * chunk;
        return fn(begin, std::min(n, begin + chunk));
      },
      items > 1 ? threads : 1);
}

// The error of `out` against `ref` (n elements each), in kChunk pieces summed in a fixed order
// so the report does not depend on the thread count.
ErrorStats MeasureError(const float* ref, const float* out, uint64_t n, unsigned threads) {
  std::vector<ErrorStats> parts((n + kChunk - 1) / kChunk);
  (void)ForChunks(n, 1, threads, [&](uint64_t b, uint64_t e) {
    parts[b / kChunk].Add(ref + b, out + b, e - b);
    return Status::Ok();
  });
  ErrorStats total;
  for (const ErrorStats& p : parts) total.Merge(p);
  return total;
}

const float* F32Data(const TensorView& v) { return reinterpret_cast<const float*>(v.data->data()); }

// The tensor's values as f32 (itself when it already is).
Result<TensorView> AsF32(const TensorView& v) { return CastTensor(v, DType::kF32); }

Json QuantizationConfig(const QuantizeOptions& o, const std::vector<std::string>& targets,
                        const std::vector<std::string>& ignored) {
  Json weights = Json::object();
  weights["num_bits"] = 8;
  weights["type"] = "int";
  weights["symmetric"] = true;
  weights["strategy"] = o.per_tensor ? "tensor" : "channel";
  weights["dynamic"] = false;
  Json group = Json::object();
  group["targets"] = targets;
  group["weights"] = std::move(weights);
  group["input_activations"] = nullptr;
  group["output_activations"] = nullptr;
  Json config = Json::object();
  config["quant_method"] = "compressed-tensors";
  config["format"] = "int-quantized";
  config["quantization_status"] = "compressed";
  config["config_groups"] = Json::object({{"group_0", std::move(group)}});
  config["ignore"] = ignored;
  // What compressed-tensors leaves implicit, spelled out for other readers.
  config["scale_suffix"] = kScaleSuffix;
  config["scale_dtype"] = "float32";
  if (!o.per_tensor) config["axis"] = o.axis;
  config["producer"] = "modelport";
  return config;
}

class QuantizedSource final : public ModelSource {
 public:
  enum class Kind { kPass, kCast, kBlocks, kInt8Values, kInt8Scale };
  struct Entry {
    size_t src;
    Kind kind;
    size_t report = 0;  // index in report_->tensors
    ChannelLayout layout;
  };

  QuantizedSource(const ModelSource& source, QuantizeOptions options, QuantReport* report)
      : source_(source), options_(std::move(options)), report_(report) {}

  Status Plan() {
    report_->scheme = options_.scheme;
    report_->tensors.clear();
    const DType to = SchemeDType(options_.scheme);
    std::map<std::string, size_t> names;
    for (const TensorInfo& t : source_.tensors()) names.emplace(t.name, 0);
    std::vector<std::string> targets, ignored;
    for (size_t i = 0; i < source_.tensors().size(); ++i) {
      const TensorInfo& t = source_.tensors()[i];
      TensorQuantReport r;
      r.name = t.name;
      r.from = t.dtype;
      r.to = t.dtype;
      r.bytes_before = t.byte_size;
      r.bytes_after = t.byte_size;
      r.reason = KeepReason(t, options_);
      MP_ASSIGN_OR_RETURN(r.elements, t.shape.NumElements());
      const size_t report_index = report_->tensors.size();
      if (!r.reason.empty()) {
        if (t.shape.rank() >= 2 && IsFloat(t.dtype)) ignored.push_back(t.name);
        entries_.push_back({i, Kind::kPass, report_index, {}});
        infos_.push_back(t);
        report_->tensors.push_back(std::move(r));
        continue;
      }
      const std::string context = "tensor " + Quote(t.name);
      MP_ASSIGN_OR_RETURN(TensorInfo out, TensorInfo::Make(t.name, to, t.shape));
      r.quantized = true;
      r.to = to;
      r.bytes_after = out.byte_size;
      if (options_.scheme == QuantScheme::kInt8) {
        auto layout = LayoutFor(t.shape, options_.axis, options_.per_tensor);
        if (!layout) return layout.status().WithContext(context);
        const std::string scale_name = t.name + std::string(kScaleSuffix);
        if (names.count(scale_name) != 0) {
          return InvalidArgument(context + ": the model already has a tensor " + Quote(scale_name) +
                                 ", the name its int8 scale would take");
        }
        std::vector<uint64_t> dims(t.shape.rank(), 1);
        if (options_.per_tensor) {
          dims.assign(1, 1);
        } else {
          const int rank = static_cast<int>(t.shape.rank());
          const size_t a =
              static_cast<size_t>(options_.axis < 0 ? options_.axis + rank : options_.axis);
          dims[a] = t.shape[a];
          r.axis = static_cast<int>(a);
        }
        MP_ASSIGN_OR_RETURN(TensorInfo scale,
                            TensorInfo::Make(scale_name, DType::kF32, Shape(std::move(dims))));
        r.bytes_after += scale.byte_size;
        entries_.push_back({i, Kind::kInt8Values, report_index, *layout});
        infos_.push_back(std::move(out));
        entries_.push_back({i, Kind::kInt8Scale, report_index, *layout});
        infos_.push_back(std::move(scale));
        targets.push_back(t.name);
      } else {
        entries_.push_back(
            {i, IsBlockScheme(options_.scheme) ? Kind::kBlocks : Kind::kCast, report_index, {}});
        infos_.push_back(std::move(out));
      }
      report_->tensors.push_back(std::move(r));
    }
    BuildMetadata(targets, ignored);
    return Status::Ok();
  }

  std::string_view format() const override { return source_.format(); }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const Json& metadata() const override { return metadata_; }
  ModelFiles files() const override { return {}; }

  Result<TensorView> Load(size_t index) const override {
    const Entry& e = entries_[index];
    if (e.kind == Kind::kPass) return source_.Load(e.src);
    auto out = LoadQuantized(e, infos_[index]);
    if (!out) return out.status().WithContext("tensor " + Quote(source_.tensors()[e.src].name));
    return out;
  }

 private:
  unsigned threads() const { return options_.threads == 0 ? WorkerCount() : options_.threads; }

  void Record(size_t report_index, const ErrorStats& error) const {
    std::lock_guard<std::mutex> lock(mu_);
    TensorQuantReport& r = report_->tensors[report_index];
    r.error = error;
    r.measured = true;
  }

  Result<TensorView> LoadQuantized(const Entry& e, const TensorInfo& info) const {
    if (e.kind == Kind::kInt8Scale) {
      // Writers load a weight just before its scale, which its quantization already computed.
      std::vector<float> scales;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (auto it = scale_cache_.find(e.src); it != scale_cache_.end()) {
          scales = std::move(it->second);
          scale_cache_.erase(it);
        }
      }
      if (scales.empty()) {
        MP_ASSIGN_OR_RETURN(const TensorView in, source_.Load(e.src));
        MP_ASSIGN_OR_RETURN(const TensorView ref, AsF32(in));
        MP_ASSIGN_OR_RETURN(scales, Scales(F32Data(ref), e.layout));
      }
      MP_ASSIGN_OR_RETURN(auto buffer, Buffer::Allocate(info.byte_size));
      std::copy(scales.begin(), scales.end(), reinterpret_cast<float*>(buffer->mutable_data()));
      return TensorView{info, std::move(buffer)};
    }
    MP_ASSIGN_OR_RETURN(const TensorView in, source_.Load(e.src));
    MP_ASSIGN_OR_RETURN(const TensorView ref, AsF32(in));
    const float* x = F32Data(ref);
    const uint64_t n = ref.info.byte_size / sizeof(float);
    switch (e.kind) {
      case Kind::kCast: {
        MP_ASSIGN_OR_RETURN(TensorView out, CastTensor(in, info.dtype));
        MP_ASSIGN_OR_RETURN(const TensorView back, AsF32(out));
        Record(e.report, MeasureFinite(x, F32Data(back), n));
        return out;
      }
      case Kind::kBlocks: {
        MP_ASSIGN_OR_RETURN(auto buffer, Buffer::Allocate(info.byte_size));
        uint8_t* dst = buffer->mutable_data();
        const uint32_t block_bytes = Traits(info.dtype).block_bytes;
        std::vector<ErrorStats> parts((n + kChunk - 1) / kChunk);
        MP_RETURN_IF_ERROR(ForChunks(n, kBlockElems, threads(), [&](uint64_t b, uint64_t end) {
          // q8_0 is quantized and measured in one pass (false: piece by piece below, the
          // separate passes where that pass refuses).
          if (info.dtype == DType::kQ8_0 &&
              QuantizeQ8_0Measured(std::span<const float>(x + b, end - b),
                                   dst + b / kBlockElems * block_bytes, &parts[b / kChunk],
                                   n - end)) {
            return Status::Ok();
          }
          std::vector<float> back(kPiece);
          for (uint64_t p = b; p < end; p += kPiece) {
            const uint64_t pe = std::min(end, p + kPiece);
            uint8_t* blocks = dst + p / kBlockElems * block_bytes;
            const std::span<const float> piece(x + p, pe - p);
            // q8_0 is quantized and measured in one pass (false: the separate passes below).
            if (info.dtype == DType::kQ8_0 &&
                QuantizeQ8_0Measured(piece, blocks, &parts[b / kChunk])) {
              continue;
            }
            if (!QuantizeBlocks(info.dtype, piece, blocks).ok()) {
              return NonFiniteAt(x, p + FirstNonFinite(x + p, pe - p));
            }
            MP_RETURN_IF_ERROR(gguf::DequantizeToF32(
                info.dtype, std::span<const uint8_t>(blocks, (pe - p) / kBlockElems * block_bytes),
                back.data()));
            parts[b / kChunk].Add(x + p, back.data(), pe - p);
          }
          return Status::Ok();
        }));
        ErrorStats total;
        for (const ErrorStats& p : parts) total.Merge(p);
        Record(e.report, total);
        return TensorView{info, std::move(buffer)};
      }
      case Kind::kInt8Values: {
        // Per channel along the first axis every channel is one contiguous row: chunks are
        // whole rows, and each row's scale is found just before the row is quantized, while it
        // is in cache (one pass over the weights instead of two). Otherwise the scales come
        // first, from a pass of their own.
        const ChannelLayout& l = e.layout;
        const bool rows = l.outer == 1 && l.channels > 1 && l.inner > 0;
        std::vector<float> scales, amax;
        if (rows) {
          scales.assign(l.channels, 1.0f);
          amax.assign(l.channels, 0.0f);
        } else {
          MP_ASSIGN_OR_RETURN(scales, Scales(x, l));
        }
        MP_ASSIGN_OR_RETURN(auto buffer, Buffer::Allocate(info.byte_size));
        auto* q = reinterpret_cast<int8_t*>(buffer->mutable_data());
        const uint64_t align = rows ? l.inner : 1;
        const uint64_t chunk = ChunkFor(align);
        std::vector<ErrorStats> parts((n + chunk - 1) / chunk);
        MP_RETURN_IF_ERROR(ForChunks(n, align, threads(), [&](uint64_t b, uint64_t end) {
          std::vector<float> back(kPiece);
          for (uint64_t row = b; row < end;) {
            const uint64_t row_end = rows ? row + l.inner : end;
            if (rows) {
              const uint64_t bad = Int8AbsMaxRange(x, l, row, row_end, amax.data());
              if (bad < row_end) return NonFiniteAt(x, bad);
              const uint64_t c = row / l.inner;
              Int8ScalesFromAbsMax(&amax[c], 1, &scales[c]);
              // The next row is fetched while this one is quantized, so its maximum is found
              // in cache.
              QuantizeInt8Measured(x + row, l.inner, scales[c], q + row, &parts[b / chunk],
                                   row_end < end ? x + row_end : nullptr);
              row = row_end;
              continue;
            }
            for (uint64_t p = row; p < row_end; p += kPiece) {
              const uint64_t pe = std::min(row_end, p + kPiece);
              // A piece within one channel is quantized and measured in one pass.
              const uint64_t c = p / l.inner % l.channels;
              if (p / l.inner == (pe - 1) / l.inner) {
                QuantizeInt8Measured(x + p, pe - p, scales[c], q + p, &parts[b / chunk]);
                continue;
              }
              QuantizeInt8Range(x, l, scales.data(), p, pe, q);
              DequantizeInt8Range(q, l, scales.data(), p, pe, back.data() - p);
              parts[b / chunk].Add(x + p, back.data(), pe - p);
            }
            row = row_end;
          }
          return Status::Ok();
        }));
        ErrorStats total;
        for (const ErrorStats& p : parts) total.Merge(p);
        Record(e.report, total);
        std::lock_guard<std::mutex> lock(mu_);
        scale_cache_[e.src] = std::move(scales);
        return TensorView{info, std::move(buffer)};
      }
      case Kind::kPass:
      case Kind::kInt8Scale:
        break;
    }
    return Internal("unreachable quantize entry");
  }

  // Per-channel scales of `x`, the channels' maxima found in parallel pieces.
  Result<std::vector<float>> Scales(const float* x, const ChannelLayout& l) const {
    const uint64_t n = l.elements();
    const uint64_t items = (n + kChunk - 1) / kChunk;
    std::vector<std::vector<float>> amax(items, std::vector<float>(l.channels, 0.0f));
    MP_RETURN_IF_ERROR(ForChunks(n, 1, threads(), [&](uint64_t b, uint64_t end) {
      const uint64_t bad = Int8AbsMaxRange(x, l, b, end, amax[b / kChunk].data());
      return bad < end ? NonFiniteAt(x, bad) : Status::Ok();
    }));
    for (size_t k = 1; k < items; ++k) {
      for (uint64_t c = 0; c < l.channels; ++c) amax[0][c] = std::max(amax[0][c], amax[k][c]);
    }
    std::vector<float> scales(l.channels, 1.0f);
    if (items > 0) Int8ScalesFromAbsMax(amax[0].data(), l.channels, scales.data());
    return scales;
  }

  // The cast error over the finite elements (infinities and NaN cast as the format defines and
  // would only make the statistics meaningless).
  ErrorStats MeasureFinite(const float* ref, const float* out, uint64_t n) const {
    if (FirstNonFinite(ref, n) == n) return MeasureError(ref, out, n, threads());
    std::vector<float> r, o;
    for (uint64_t i = 0; i < n; ++i) {
      if (std::isfinite(ref[i])) {
        r.push_back(ref[i]);
        o.push_back(out[i]);
      }
    }
    return MeasureError(r.data(), o.data(), r.size(), threads());
  }

  void BuildMetadata(const std::vector<std::string>& targets,
                     const std::vector<std::string>& ignored) {
    metadata_ = source_.metadata().is_object() ? source_.metadata() : Json::object();
    if (options_.scheme == QuantScheme::kInt8 && !targets.empty()) {
      metadata_[std::string(kQuantizationConfigKey)] =
          QuantizationConfig(options_, targets, ignored);
    }
    if (options_.output_format == "gguf") {
      if (auto ftype = LlamaFileType(options_.scheme)) {
        metadata_[std::string(kFileTypeKey)] = *ftype;
      }
      if (IsBlockScheme(options_.scheme)) metadata_[std::string(kQuantVersionKey)] = 2;
    }
  }

  const ModelSource& source_;
  QuantizeOptions options_;
  QuantReport* report_;
  std::vector<Entry> entries_;
  std::vector<TensorInfo> infos_;
  Json metadata_;
  mutable std::mutex mu_;  // guards report_'s entries and scale_cache_
  mutable std::map<size_t, std::vector<float>> scale_cache_;  // by source index
};

// --- Dequantize -------------------------------------------------------------------------------

class DequantizedSource final : public ModelSource {
 public:
  struct Entry {
    size_t src;
    std::optional<size_t> scale;  // the scale tensor of an int8 pair
    ChannelLayout layout;
  };

  DequantizedSource(const ModelSource& source, DType to) : source_(source), to_(to) {}

  Status Plan() {
    const auto& in = source_.tensors();
    std::vector<bool> is_scale(in.size(), false);
    std::vector<std::optional<std::pair<size_t, ChannelLayout>>> pair(in.size());
    for (size_t i = 0; i < in.size(); ++i) {
      if (in[i].dtype != DType::kI8) continue;
      const auto j = source_.Find(in[i].name + std::string(kScaleSuffix));
      if (!j) continue;
      if (auto layout = Int8PairLayout(in[i], in[*j])) {
        pair[i] = std::make_pair(*j, *layout);
        is_scale[*j] = true;
      }
    }
    for (size_t i = 0; i < in.size(); ++i) {
      if (is_scale[i]) continue;
      const TensorInfo& t = in[i];
      const bool convert = pair[i] || IsQuantized(t.dtype) || IsFloat(t.dtype);
      if (!convert) {
        entries_.push_back({i, std::nullopt, {}});
        infos_.push_back(t);
        continue;
      }
      MP_ASSIGN_OR_RETURN(TensorInfo out, TensorInfo::Make(t.name, to_, t.shape));
      entries_.push_back({i, pair[i] ? std::optional<size_t>(pair[i]->first) : std::nullopt,
                          pair[i] ? pair[i]->second : ChannelLayout{}});
      infos_.push_back(std::move(out));
    }
    metadata_ = source_.metadata().is_object() ? source_.metadata() : Json::object();
    metadata_.erase(std::string(kQuantizationConfigKey));
    metadata_.erase(std::string(kQuantVersionKey));
    if (metadata_.contains(std::string(kFileTypeKey))) {
      const QuantScheme as = to_ == DType::kF16 ? QuantScheme::kF16 : QuantScheme::kBF16;
      if (to_ == DType::kF32) {
        metadata_[std::string(kFileTypeKey)] = 0;  // LLAMA_FTYPE_ALL_F32
      } else if (to_ == DType::kF16 || to_ == DType::kBF16) {
        metadata_[std::string(kFileTypeKey)] = *LlamaFileType(as);
      } else {
        metadata_.erase(std::string(kFileTypeKey));
      }
    }
    return Status::Ok();
  }

  std::string_view format() const override { return source_.format(); }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const Json& metadata() const override { return metadata_; }

  Result<TensorView> Load(size_t index) const override {
    const Entry& e = entries_[index];
    const TensorInfo& info = infos_[index];
    const std::string context = "tensor " + Quote(info.name);
    Result<TensorView> in =
        e.scale ? DequantizeInt8Pair(source_, e.src, *e.scale, e.layout) : source_.Load(e.src);
    if (!in) return in.status().WithContext(context);
    if (in->info.dtype == info.dtype) return in;  // already `to`, or passed through
    auto out = CastTensor(*in, to_);
    if (!out) return out.status().WithContext(context);
    return out;
  }

 private:
  const ModelSource& source_;
  DType to_;
  std::vector<Entry> entries_;
  std::vector<TensorInfo> infos_;
  Json metadata_;
};

}  // namespace

std::optional<ChannelLayout> Int8PairLayout(const TensorInfo& values, const TensorInfo& scale) {
  if (values.dtype != DType::kI8 || !IsFloat(scale.dtype)) return std::nullopt;
  const auto n = scale.shape.NumElements();
  if (!n) return std::nullopt;
  if (*n == 1) return LayoutFor(values.shape, 0, true).value();
  const size_t rank = values.shape.rank();
  if (scale.shape.rank() == 1 && rank >= 1 && scale.shape[0] == values.shape[0]) {
    return LayoutFor(values.shape, 0, false).value();
  }
  if (scale.shape.rank() != rank) return std::nullopt;
  std::optional<int> axis;
  for (size_t a = 0; a < rank; ++a) {
    if (scale.shape[a] == 1) continue;
    if (axis || scale.shape[a] != values.shape[a]) return std::nullopt;
    axis = static_cast<int>(a);
  }
  if (!axis) return std::nullopt;
  return LayoutFor(values.shape, *axis, false).value();
}

Result<TensorView> DequantizeInt8Pair(const ModelSource& source, size_t index, size_t scale_index,
                                      const ChannelLayout& layout) {
  MP_ASSIGN_OR_RETURN(const TensorView q, source.Load(index));
  MP_ASSIGN_OR_RETURN(const TensorView scale_in, source.Load(scale_index));
  auto scale = AsF32(scale_in);
  if (!scale) return scale.status().WithContext("its scale");
  const float* s = F32Data(*scale);
  std::vector<float> scales(layout.channels);
  for (uint64_t c = 0; c < layout.channels; ++c) scales[c] = s[layout.channels == 1 ? 0 : c];
  MP_ASSIGN_OR_RETURN(auto f32, Buffer::Allocate(layout.elements() * sizeof(float)));
  DequantizeInt8(reinterpret_cast<const int8_t*>(q.data->data()), layout, scales.data(),
                 reinterpret_cast<float*>(f32->mutable_data()));
  MP_ASSIGN_OR_RETURN(TensorInfo info, TensorInfo::Make(q.info.name, DType::kF32, q.info.shape));
  return TensorView{std::move(info), std::move(f32)};
}

std::string KeepReason(const TensorInfo& t, const QuantizeOptions& o) {
  if (!IsFloat(t.dtype)) return "not floating point (" + std::string(DTypeName(t.dtype)) + ")";
  if (!o.include.empty() && FirstMatch(o.include, t.name) == nullptr) {
    return "matches no --include pattern";
  }
  if (const std::string* p = FirstMatch(o.exclude, t.name)) return "excluded by " + Quote(*p);
  if (t.shape.rank() < 2)
    return "rank " + std::to_string(t.shape.rank()) + " (bias, norm or scalar)";
  const uint64_t n = t.shape.NumElements().value_or(0);
  if (n < o.min_elements) {
    return std::to_string(n) + " elements < --min-size " + std::to_string(o.min_elements);
  }
  const DType to = SchemeDType(o.scheme);
  if (t.dtype == to) return "already " + std::string(DTypeName(to));
  if (IsQuantized(to) && t.shape.dims().back() % kBlockElems != 0) {
    return "last dimension " + std::to_string(t.shape.dims().back()) +
           " is not a multiple of the 32-element block";
  }
  return std::string();
}

uint64_t QuantReport::quantized_count() const {
  return static_cast<uint64_t>(
      std::count_if(tensors.begin(), tensors.end(), [](const auto& t) { return t.quantized; }));
}

uint64_t QuantReport::bytes_before() const {
  uint64_t total = 0;
  for (const auto& t : tensors) total += t.bytes_before;
  return total;
}

uint64_t QuantReport::bytes_after() const {
  uint64_t total = 0;
  for (const auto& t : tensors) total += t.bytes_after;
  return total;
}

ErrorStats QuantReport::overall() const {
  ErrorStats total;
  for (const auto& t : tensors) {
    if (t.measured) total.Merge(t.error);
  }
  return total;
}

Json QuantReport::ToJson() const {
  Json list = Json::array();
  for (const auto& t : tensors) {
    Json row = Json::object();
    row["name"] = t.name;
    row["from"] = DTypeName(t.from);
    row["to"] = DTypeName(t.to);
    row["quantized"] = t.quantized;
    row["reason"] = t.reason.empty() ? Json(nullptr) : Json(t.reason);
    row["axis"] = t.axis < 0 ? Json(nullptr) : Json(t.axis);
    row["elements"] = t.elements;
    row["bytes_before"] = t.bytes_before;
    row["bytes_after"] = t.bytes_after;
    row["error"] = t.measured ? t.error.ToJson() : Json(nullptr);
    list.push_back(std::move(row));
  }
  Json doc = Json::object();
  doc["scheme"] = SchemeName(scheme);
  doc["tensors"] = std::move(list);
  doc["quantized"] = quantized_count();
  doc["kept"] = tensors.size() - quantized_count();
  doc["bytes_before"] = bytes_before();
  doc["bytes_after"] = bytes_after();
  doc["ratio"] = bytes_before() == 0
                     ? 1.0
                     : static_cast<double>(bytes_after()) / static_cast<double>(bytes_before());
  doc["error"] = overall().ToJson();
  return doc;
}

Result<std::unique_ptr<ModelSource>> Quantize(const ModelSource& source,
                                              const QuantizeOptions& options, QuantReport* report) {
  auto view = std::make_unique<QuantizedSource>(source, options, report);
  MP_RETURN_IF_ERROR(view->Plan());
  return std::unique_ptr<ModelSource>(std::move(view));
}

Result<std::unique_ptr<ModelSource>> Dequantize(const ModelSource& source, DType to) {
  if (!IsFloat(to) || Traits(to).block_bytes < 2) {
    return InvalidArgument("dequantize: the target dtype must be f16, bf16, f32 or f64, not " +
                           std::string(DTypeName(to)));
  }
  auto view = std::make_unique<DequantizedSource>(source, to);
  MP_RETURN_IF_ERROR(view->Plan());
  return std::unique_ptr<ModelSource>(std::move(view));
}

}  // namespace mp
