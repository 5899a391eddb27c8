#include "modelport/convert/keras_map.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <optional>
#include <set>
#include <utility>

#include "modelport/convert/cast.h"
#include "modelport/core/file.h"

namespace mp {
namespace {

// --- The rule table ---------------------------------------------------------------------------

// How one output tensor is made from its inputs. "Gates" ops reorder the G gate blocks of a
// recurrent weight (rows of torch's [G*u, n], columns of Keras's [n, G*u]).
enum class Op : uint8_t {
  kCopy,
  kTranspose,         // [a, b] -> [b, a]
  kConvToKeras,       // [A, B, k...] -> [k..., B, A]  (OIHW -> HWIO; IOHW -> HWOI)
  kConvToTorch,       // [k..., B, A] -> [A, B, k...]
  kDepthwiseToKeras,  // [C*M, 1, k...] -> [k..., C, M]
  kDepthwiseToTorch,  // [k..., C, M] -> [C*M, 1, k...]
  kGatesToKeras,      // [G*u, n] -> reorder gates -> transpose -> [n, G*u]
  kGatesToTorch,      // [n, G*u] -> transpose -> reorder gates -> [G*u, n]
  kGateSumToKeras,    // b_ih + b_hh, gates reordered
  kGateStackToKeras,  // [b_ih; b_hh] gates reordered -> [2, G*u]
  kGateRow0ToTorch,   // row 0 of [2, G*u], gates reordered back
  kGateRow1ToTorch,   // row 1
  kGateVecToTorch,    // [G*u] gates reordered back
  kZerosLike,         // zeros of the input's shape and dtype
  kCounterZero,       // int64 scalar 0 (no inputs)
  kDrop,              // no output: the input has no counterpart
};

struct Param {
  std::string_view name;
  int min_rank = 1, max_rank = 1;
  bool optional = false;
};

struct OutputRule {
  std::string_view target;  // short name; empty for kDrop
  std::vector<std::string_view> inputs;
  Op op;
};

// One layer kind: its tensors on each side and how each output is made, per direction.
struct Rule {
  LayerKind kind = LayerKind::kLinear;
  std::string_view name = {};
  std::string_view cell = {};  // Keras cell level of recurrent weights ("lstm_cell"), else empty
  int gates = 0;               // recurrent: gate blocks (LSTM 4, GRU 3, RNN 1)
  std::vector<int> keras_from_torch = {};  // Keras gate block k is torch's keras_from_torch[k]
  std::string_view torch_gates = {}, keras_gates = {};
  std::vector<Param> torch = {}, keras = {};
  std::vector<OutputRule> to_keras = {}, to_torch = {};
};

// Layers with a weight and an optional bias (Linear, convolutions).
Rule Dense(LayerKind kind, std::string_view name, std::string_view keras_kernel, int min_rank,
           int max_rank, Op to_keras, Op to_torch) {
  return Rule{
      .kind = kind,
      .name = name,
      .torch = {{"weight", min_rank, max_rank}, {"bias", 1, 1, true}},
      .keras = {{keras_kernel, min_rank, max_rank}, {"bias", 1, 1, true}},
      .to_keras = {{keras_kernel, {"weight"}, to_keras}, {"bias", {"bias"}, Op::kCopy}},
      .to_torch = {{"weight", {keras_kernel}, to_torch}, {"bias", {"bias"}, Op::kCopy}},
  };
}

// torch's RNN/LSTM/GRU (weight_ih_l0 [G*u, in], weight_hh_l0 [G*u, u], bias_ih_l0, bias_hh_l0)
// against Keras's (kernel [in, G*u], recurrent_kernel [u, G*u], bias [G*u], or [2, G*u] holding
// the input and the recurrent bias when `stacked_bias`).
Rule Recurrent(LayerKind kind, std::string_view name, std::string_view cell,
               std::vector<int> keras_from_torch, std::string_view torch_gates,
               std::string_view keras_gates, bool stacked_bias) {
  const int bias_rank = stacked_bias ? 2 : 1;
  return Rule{
      .kind = kind,
      .name = name,
      .cell = cell,
      .gates = static_cast<int>(keras_from_torch.size()),
      .keras_from_torch = std::move(keras_from_torch),
      .torch_gates = torch_gates,
      .keras_gates = keras_gates,
      .torch = {{"weight_ih_l0", 2, 2},
                {"weight_hh_l0", 2, 2},
                {"bias_ih_l0", 1, 1, true},
                {"bias_hh_l0", 1, 1, true}},
      .keras = {{"kernel", 2, 2}, {"recurrent_kernel", 2, 2}, {"bias", bias_rank, bias_rank, true}},
      .to_keras = {{"kernel", {"weight_ih_l0"}, Op::kGatesToKeras},
                   {"recurrent_kernel", {"weight_hh_l0"}, Op::kGatesToKeras},
                   {"bias",
                    {"bias_ih_l0", "bias_hh_l0"},
                    stacked_bias ? Op::kGateStackToKeras : Op::kGateSumToKeras}},
      .to_torch = {{"weight_ih_l0", {"kernel"}, Op::kGatesToTorch},
                   {"weight_hh_l0", {"recurrent_kernel"}, Op::kGatesToTorch},
                   {"bias_ih_l0",
                    {"bias"},
                    stacked_bias ? Op::kGateRow0ToTorch : Op::kGateVecToTorch},
                   {"bias_hh_l0", {"bias"}, stacked_bias ? Op::kGateRow1ToTorch : Op::kZerosLike}},
  };
}

// One entry per layer kind, in LayerKind order.
const std::vector<Rule>& Rules() {
  static const std::vector<Rule> rules = [] {
    std::vector<Rule> r;
    r.push_back(
        Dense(LayerKind::kLinear, "linear", "kernel", 2, 2, Op::kTranspose, Op::kTranspose));
    r.push_back(
        Dense(LayerKind::kConv, "conv", "kernel", 3, 5, Op::kConvToKeras, Op::kConvToTorch));
    r.push_back(Dense(LayerKind::kConvTranspose, "conv_transpose", "kernel", 3, 5, Op::kConvToKeras,
                      Op::kConvToTorch));
    r.push_back(Dense(LayerKind::kDepthwise, "depthwise", "depthwise_kernel", 3, 4,
                      Op::kDepthwiseToKeras, Op::kDepthwiseToTorch));
    r.push_back(Rule{
        .kind = LayerKind::kBatchNorm,
        .name = "batchnorm",
        .torch = {{"weight", 1, 1, true},
                  {"bias", 1, 1, true},
                  {"running_mean", 1, 1},
                  {"running_var", 1, 1},
                  {"num_batches_tracked", 0, 0, true}},
        .keras = {{"gamma", 1, 1, true},
                  {"beta", 1, 1, true},
                  {"moving_mean", 1, 1},
                  {"moving_variance", 1, 1}},
        .to_keras = {{"gamma", {"weight"}, Op::kCopy},
                     {"beta", {"bias"}, Op::kCopy},
                     {"moving_mean", {"running_mean"}, Op::kCopy},
                     {"moving_variance", {"running_var"}, Op::kCopy},
                     {"", {"num_batches_tracked"}, Op::kDrop}},
        .to_torch = {{"weight", {"gamma"}, Op::kCopy},
                     {"bias", {"beta"}, Op::kCopy},
                     {"running_mean", {"moving_mean"}, Op::kCopy},
                     {"running_var", {"moving_variance"}, Op::kCopy},
                     {"num_batches_tracked", {}, Op::kCounterZero}},
    });
    r.push_back(Rule{
        .kind = LayerKind::kLayerNorm,
        .name = "layernorm",
        .torch = {{"weight", 1, 5}, {"bias", 1, 5, true}},
        .keras = {{"gamma", 1, 5, true}, {"beta", 1, 5, true}},
        .to_keras = {{"gamma", {"weight"}, Op::kCopy}, {"beta", {"bias"}, Op::kCopy}},
        .to_torch = {{"weight", {"gamma"}, Op::kCopy}, {"bias", {"beta"}, Op::kCopy}},
    });
    r.push_back(Rule{
        .kind = LayerKind::kEmbedding,
        .name = "embedding",
        .torch = {{"weight", 2, 2}},
        .keras = {{"embeddings", 2, 2}},
        .to_keras = {{"embeddings", {"weight"}, Op::kCopy}},
        .to_torch = {{"weight", {"embeddings"}, Op::kCopy}},
    });
    // torch LSTM gates i,f,g,o = Keras i,f,c,o (same order); GRU r,z,n -> Keras z,r,h with
    // reset_after=True, whose bias [2, 3u] holds the input and the recurrent bias.
    r.push_back(Recurrent(LayerKind::kLstm, "lstm", "lstm_cell", {0, 1, 2, 3}, "i,f,g,o", "i,f,c,o",
                          false));
    r.push_back(Recurrent(LayerKind::kGru, "gru", "gru_cell", {1, 0, 2}, "r,z,n", "z,r,h", true));
    r.push_back(Recurrent(LayerKind::kRnn, "rnn", "simple_rnn_cell", {0}, "h", "h", false));
    return r;
  }();
  return rules;
}

const Rule& RuleFor(LayerKind kind) {
  const Rule& rule = Rules()[static_cast<size_t>(kind)];
  assert(rule.kind == kind);  // the table is in LayerKind order
  return rule;
}

std::string KindList() {
  std::string list;
  for (const Rule& rule : Rules()) list += (list.empty() ? "" : ", ") + std::string(rule.name);
  return list;
}

// --- Tensor operations ------------------------------------------------------------------------

std::string Dims(const Shape& shape) { return shape.ToString(); }

Result<std::shared_ptr<Buffer>> Alloc(uint64_t size) {
  return Buffer::Allocate(static_cast<size_t>(size));
}

// n elements of E bytes, `stride` elements apart in src, packed into dst.
template <size_t E>
void GatherRow(const uint8_t* src, uint64_t stride, uint64_t n, uint8_t* dst) {
  for (uint64_t i = 0; i < n; ++i) std::memcpy(dst + i * E, src + i * stride * E, E);
}

void GatherRow(size_t esize, const uint8_t* src, uint64_t stride, uint64_t n, uint8_t* dst) {
  switch (esize) {
    case 1:
      return GatherRow<1>(src, stride, n, dst);
    case 2:
      return GatherRow<2>(src, stride, n, dst);
    case 4:
      return GatherRow<4>(src, stride, n, dst);
    case 8:
      return GatherRow<8>(src, stride, n, dst);
    default:
      for (uint64_t i = 0; i < n; ++i)
        std::memcpy(dst + i * esize, src + i * stride * esize, esize);
  }
}

// dst[out index] = src[in index] where out dims[k] = in dims[perm[k]] (rank >= 1).
void Permute(const uint8_t* src, size_t esize, const std::vector<uint64_t>& dims,
             const std::vector<size_t>& perm, uint8_t* dst) {
  const size_t rank = dims.size();
  std::vector<uint64_t> in_stride(rank, 1);
  for (size_t k = rank; k-- > 1;) in_stride[k - 1] = in_stride[k] * dims[k];
  std::vector<uint64_t> out_dims(rank), stride(rank);
  uint64_t total = 1;
  for (size_t k = 0; k < rank; ++k) {
    out_dims[k] = dims[perm[k]];
    stride[k] = in_stride[perm[k]];
    total *= out_dims[k];
  }
  if (total == 0) return;
  // One output row (the last output axis) at a time; an odometer walks the outer axes.
  const uint64_t row = out_dims[rank - 1];
  std::vector<uint64_t> idx(rank, 0);
  uint64_t offset = 0;
  for (uint64_t n = 0; n < total; n += row) {
    GatherRow(esize, src + offset * esize, stride[rank - 1], row, dst + n * esize);
    for (size_t k = rank - 1; k-- > 0;) {
      if (++idx[k] < out_dims[k]) {
        offset += stride[k];
        break;
      }
      offset -= stride[k] * (out_dims[k] - 1);
      idx[k] = 0;
    }
  }
}

// Reorders the `order.size()` equal blocks of `bytes`: out block k = in block order[k].
void ReorderBlocks(const uint8_t* src, uint64_t bytes, const std::vector<int>& order,
                   uint8_t* dst) {
  const uint64_t block = bytes / order.size();
  for (size_t k = 0; k < order.size(); ++k) {
    std::memcpy(dst + k * block, src + static_cast<uint64_t>(order[k]) * block, block);
  }
}

std::vector<int> Inverse(const std::vector<int>& order) {
  std::vector<int> inv(order.size());
  for (size_t k = 0; k < order.size(); ++k)
    inv[static_cast<size_t>(order[k])] = static_cast<int>(k);
  return inv;
}

// The axis permutation of the layout ops (out axis k = in axis order[k]) over a tensor of `rank`
// (as PermutedView presents it): transpose; conv [A, B, k...] <-> [k..., B, A]; depthwise
// [C, M, k...] <-> [k..., C, M].
std::vector<size_t> AxisOrder(Op op, size_t rank) {
  std::vector<size_t> kernel;  // the spatial axes, in order
  const bool kernel_first = op == Op::kConvToTorch || op == Op::kDepthwiseToTorch;
  for (size_t k = kernel_first ? 0 : 2; k < (kernel_first ? rank - 2 : rank); ++k) {
    kernel.push_back(k);
  }
  switch (op) {
    case Op::kConvToKeras:
      kernel.insert(kernel.end(), {1, 0});
      return kernel;
    case Op::kDepthwiseToKeras:
      kernel.insert(kernel.end(), {0, 1});
      return kernel;
    case Op::kConvToTorch:
      kernel.insert(kernel.begin(), {rank - 1, rank - 2});
      return kernel;
    case Op::kDepthwiseToTorch:
      kernel.insert(kernel.begin(), {rank - 2, rank - 1});
      return kernel;
    default:
      return {1, 0};
  }
}

// The dims a layout op permutes: the tensor's own, except a torch depthwise weight [C*M, 1, k...],
// which is [C, M, k...] in memory.
std::vector<uint64_t> PermutedView(Op op, const std::vector<uint64_t>& dims, uint64_t mult) {
  if (op != Op::kDepthwiseToKeras) return dims;
  std::vector<uint64_t> view = {dims[0] / mult, mult};
  view.insert(view.end(), dims.begin() + 2, dims.end());
  return view;
}

// A planned output tensor: what it is made of and how.
struct Planned {
  TensorInfo info;
  Op op = Op::kCopy;
  std::vector<size_t> inputs;  // source tensor indices
  std::vector<int> order;      // gate order applied (out block k = in block order[k])
  uint64_t multiplier = 1;     // depthwise channel multiplier
};

// The output shape of `op` over `in`, or a reason it does not apply.
Result<Shape> OutShape(Op op, const std::vector<TensorInfo>& in, int gates, uint64_t mult) {
  auto dims = [&](size_t i) { return in[i].shape.dims(); };
  const auto blocks_ok = [&](uint64_t n) { return gates > 0 && n % gates == 0; };
  switch (op) {
    case Op::kCopy:
    case Op::kZerosLike:
      return in[0].shape;
    case Op::kDepthwiseToKeras:
      if (dims(0)[1] != 1 || mult == 0 || dims(0)[0] % mult != 0) {
        return InvalidArgument(
            "depthwise weight " + Dims(in[0].shape) +
            " is not [C*M, 1, ...] with channel multiplier M = " + std::to_string(mult));
      }
      [[fallthrough]];
    case Op::kTranspose:
    case Op::kConvToKeras:
    case Op::kConvToTorch:
    case Op::kDepthwiseToTorch: {
      const std::vector<uint64_t> view = PermutedView(op, dims(0), mult);
      const std::vector<size_t> axes = AxisOrder(op, view.size());
      std::vector<uint64_t> out;
      for (size_t a : axes) out.push_back(view[a]);
      if (op == Op::kDepthwiseToTorch) {  // [C, M, k...] -> [C*M, 1, k...]
        out[0] *= out[1];
        out[1] = 1;
      }
      return Shape(std::move(out));
    }
    case Op::kGatesToKeras:
      if (!blocks_ok(dims(0)[0])) break;
      return Shape{dims(0)[1], dims(0)[0]};
    case Op::kGatesToTorch:
      if (!blocks_ok(dims(0)[1])) break;
      return Shape{dims(0)[1], dims(0)[0]};
    case Op::kGateSumToKeras:
    case Op::kGateStackToKeras:
      if (!blocks_ok(dims(0)[0])) break;
      if (in[1].shape != in[0].shape || in[1].dtype != in[0].dtype) {
        return InvalidArgument("'" + in[0].name + "' " + Dims(in[0].shape) + " and '" + in[1].name +
                               "' " + Dims(in[1].shape) + " differ in shape or dtype");
      }
      if (op == Op::kGateSumToKeras) {
        const DType t = in[0].dtype;
        if (t != DType::kF32 && t != DType::kF64 && t != DType::kF16 && t != DType::kBF16) {
          return InvalidArgument("'" + in[0].name + "' is " + std::string(DTypeName(t)) +
                                 ": the biases' sum needs f16, bf16, f32 or f64");
        }
        return in[0].shape;
      }
      return Shape{2, dims(0)[0]};
    case Op::kGateRow0ToTorch:
    case Op::kGateRow1ToTorch:
      if (dims(0)[0] != 2 || !blocks_ok(dims(0)[1])) {
        return Unsupported("GRU bias " + Dims(in[0].shape) +
                           " is not [2, 3u] (reset_after=True): torch's GRU cannot express it");
      }
      return Shape{dims(0)[1]};
    case Op::kGateVecToTorch:
      if (!blocks_ok(dims(0)[0])) break;
      return in[0].shape;
    case Op::kCounterZero:
      return Shape{};
    case Op::kDrop:
      break;
  }
  return InvalidArgument("'" + in[0].name + "' " + Dims(in[0].shape) + " does not split into " +
                         std::to_string(gates) + " gate blocks");
}

Result<TensorView> ZeroTensor(const TensorInfo& info) {
  MP_ASSIGN_OR_RETURN(auto buffer, Alloc(info.byte_size));
  std::memset(buffer->mutable_data(), 0, buffer->size());
  return TensorView{info, std::move(buffer)};
}

// a + b elementwise, in the inputs' float dtype (f32 and f64 natively, as torch adds them;
// f16/bf16 exactly in f64, rounded once).
Result<TensorView> AddTensors(const TensorView& a, const TensorView& b, const TensorInfo& info) {
  const uint64_t n = info.byte_size / ElementSize(info.dtype);
  MP_ASSIGN_OR_RETURN(auto buffer, Alloc(info.byte_size));
  auto add = [&]<typename T>(T) {
    for (uint64_t i = 0; i < n; ++i) {
      T x, y;
      std::memcpy(&x, a.bytes().data() + i * sizeof(T), sizeof(T));
      std::memcpy(&y, b.bytes().data() + i * sizeof(T), sizeof(T));
      const T sum = x + y;
      std::memcpy(buffer->mutable_data() + i * sizeof(T), &sum, sizeof(T));
    }
  };
  if (info.dtype == DType::kF32) {
    add(float{});
  } else if (info.dtype == DType::kF64) {
    add(double{});
  } else if (info.dtype == DType::kF16 || info.dtype == DType::kBF16) {
    std::vector<double> x(n), y(n);
    MP_RETURN_IF_ERROR(DecodeToF64(info.dtype, a.bytes().data(), n, x.data()));
    MP_RETURN_IF_ERROR(DecodeToF64(info.dtype, b.bytes().data(), n, y.data()));
    for (uint64_t i = 0; i < n; ++i) x[i] += y[i];
    MP_ASSIGN_OR_RETURN(TensorInfo wide, TensorInfo::Make(info.name, DType::kF64, info.shape));
    MP_ASSIGN_OR_RETURN(auto wide_buf, Alloc(wide.byte_size));
    std::memcpy(wide_buf->mutable_data(), x.data(), wide.byte_size);
    MP_ASSIGN_OR_RETURN(TensorView narrow, CastTensor(TensorView{wide, wide_buf}, info.dtype));
    return TensorView{info, narrow.data};
  } else {
    return Unsupported("'" + a.info.name + "' + '" + b.info.name + "': cannot add " +
                       std::string(DTypeName(info.dtype)) + " tensors");
  }
  return TensorView{info, std::move(buffer)};
}

Result<TensorView> Compute(const Planned& p, const std::vector<TensorView>& in) {
  const TensorInfo& info = p.info;
  if (p.op == Op::kCopy) return TensorView{info, in[0].data};
  if (p.op == Op::kZerosLike || p.op == Op::kCounterZero) return ZeroTensor(info);
  if (p.op == Op::kGateSumToKeras) {
    if (p.order.size() <= 1 || std::is_sorted(p.order.begin(), p.order.end())) {
      return AddTensors(in[0], in[1], info);
    }
    MP_ASSIGN_OR_RETURN(auto a, Alloc(info.byte_size));
    MP_ASSIGN_OR_RETURN(auto b, Alloc(info.byte_size));
    ReorderBlocks(in[0].bytes().data(), info.byte_size, p.order, a->mutable_data());
    ReorderBlocks(in[1].bytes().data(), info.byte_size, p.order, b->mutable_data());
    return AddTensors(TensorView{in[0].info, a}, TensorView{in[1].info, b}, info);
  }
  const size_t esize = ElementSize(info.dtype);
  MP_ASSIGN_OR_RETURN(auto out, Alloc(info.byte_size));
  uint8_t* dst = out->mutable_data();
  const uint8_t* src = in[0].bytes().data();
  const auto& d = in[0].info.shape.dims();
  const size_t rank = d.size();
  switch (p.op) {
    case Op::kTranspose:
    case Op::kConvToKeras:
    case Op::kConvToTorch:
    case Op::kDepthwiseToKeras:
    case Op::kDepthwiseToTorch:
      Permute(src, esize, PermutedView(p.op, d, p.multiplier), AxisOrder(p.op, rank), dst);
      break;
    case Op::kGatesToKeras: {
      MP_ASSIGN_OR_RETURN(auto tmp, Alloc(info.byte_size));
      ReorderBlocks(src, info.byte_size, p.order, tmp->mutable_data());
      Permute(tmp->data(), esize, d, {1, 0}, dst);
      break;
    }
    case Op::kGatesToTorch: {
      MP_ASSIGN_OR_RETURN(auto tmp, Alloc(info.byte_size));
      Permute(src, esize, d, {1, 0}, tmp->mutable_data());
      ReorderBlocks(tmp->data(), info.byte_size, p.order, dst);
      break;
    }
    case Op::kGateStackToKeras: {
      const uint64_t half = info.byte_size / 2;
      ReorderBlocks(src, half, p.order, dst);
      ReorderBlocks(in[1].bytes().data(), half, p.order, dst + half);
      break;
    }
    case Op::kGateRow0ToTorch:
    case Op::kGateRow1ToTorch: {
      const uint64_t row = p.op == Op::kGateRow1ToTorch ? info.byte_size : 0;
      ReorderBlocks(src + row, info.byte_size, p.order, dst);
      break;
    }
    case Op::kGateVecToTorch:
      ReorderBlocks(src, info.byte_size, p.order, dst);
      break;
    default:
      return Internal("keras_map: unexpected op for '" + info.name + "'");
  }
  return TensorView{info, std::move(out)};
}

// --- The view ---------------------------------------------------------------------------------

class MappedSource final : public ModelSource {
 public:
  MappedSource(const ModelSource& source, std::vector<Planned> planned, Json metadata)
      : source_(source), planned_(std::move(planned)), metadata_(std::move(metadata)) {
    for (const Planned& p : planned_) infos_.push_back(p.info);
  }
  std::string_view format() const override { return source_.format(); }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const Json& metadata() const override { return metadata_; }
  ModelFiles files() const override { return source_.files(); }
  std::vector<std::string> notes() const override { return source_.notes(); }

  Result<TensorView> Load(size_t index) const override {
    const Planned& p = planned_[index];
    std::vector<TensorView> in;
    for (size_t i : p.inputs) {
      Result<TensorView> view = source_.Load(i);
      if (!view) return view.error().WithContext("tensor '" + source_.tensors()[i].name + "'");
      in.push_back(std::move(*view));
    }
    Result<TensorView> out = Compute(p, in);
    if (!out) return out.error().WithContext("tensor '" + p.info.name + "'");
    return out;
  }

 private:
  const ModelSource& source_;
  std::vector<Planned> planned_;
  std::vector<TensorInfo> infos_;
  Json metadata_;
};

// --- Planning ---------------------------------------------------------------------------------

// The tensors of one torch module or Keras layer, by short name.
struct Group {
  std::string name;
  std::vector<size_t> members;             // source order
  std::map<std::string, size_t> by_short;  // short name -> source index
  std::string duplicate;                   // a short name seen twice (Keras wrappers)
};

struct SplitName {
  std::string group, short_name;
};

// torch "a.b.weight" -> {"a.b", "weight"}; Keras "a/b/kernel" -> {"a", "kernel"}.
std::optional<SplitName> Split(std::string_view name, MapDirection direction) {
  if (direction == MapDirection::kTorchToKeras) {
    const size_t dot = name.rfind('.');
    if (dot == std::string_view::npos || dot == 0 || dot + 1 == name.size()) return std::nullopt;
    return SplitName{std::string(name.substr(0, dot)), std::string(name.substr(dot + 1))};
  }
  const size_t first = name.find('/');
  const size_t last = name.rfind('/');
  if (first == std::string_view::npos || first == 0 || last + 1 == name.size()) {
    return std::nullopt;
  }
  return SplitName{std::string(name.substr(0, first)), std::string(name.substr(last + 1))};
}

// "weight_ih_l1", "bias_hh_l0_reverse": a torch RNN parameter of a layer or direction beyond
// the first.
bool IsLaterRecurrentLayer(std::string_view name) {
  if (name.ends_with("_reverse")) return true;
  const size_t l = name.rfind("_l");
  if (l == std::string_view::npos || l + 2 == name.size()) return false;
  const std::string_view digits = name.substr(l + 2);
  return std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
         digits != "0";
}

// The kind the tensors say, nothing when no rule fits (with `why`), or an error when the tensors
// fit several kinds whose layouts differ.
Result<std::optional<LayerKind>> InferTorch(const ModelSource& src, const Group& g,
                                            std::string* why) {
  auto has = [&](const char* n) { return g.by_short.count(n) > 0; };
  auto info = [&](const char* n) -> const TensorInfo& { return src.tensors()[g.by_short.at(n)]; };
  if (has("running_mean") || has("running_var")) return std::optional(LayerKind::kBatchNorm);
  if (has("weight_ih_l0")) {
    for (const auto& [name, index] : g.by_short) {
      if (IsLaterRecurrentLayer(name)) {
        return Unsupported("module '" + g.name + "': tensor '" + name +
                           "' belongs to a multi-layer or bidirectional recurrent module, which "
                           "is not mapped (use one torch module per layer and direction)");
      }
    }
    if (!has("weight_hh_l0") || info("weight_hh_l0").shape.rank() != 2 ||
        info("weight_hh_l0").shape[1] == 0 ||
        info("weight_hh_l0").shape[0] % info("weight_hh_l0").shape[1] != 0) {
      *why = "recurrent weights without a [G*u, u] weight_hh_l0";
      return std::optional<LayerKind>();
    }
    const uint64_t gates = info("weight_hh_l0").shape[0] / info("weight_hh_l0").shape[1];
    if (gates == 4) return std::optional(LayerKind::kLstm);
    if (gates == 3) return std::optional(LayerKind::kGru);
    if (gates == 1) return std::optional(LayerKind::kRnn);
    *why = "weight_hh_l0 holds " + std::to_string(gates) + " gate blocks (LSTM 4, GRU 3, RNN 1)";
    return std::optional<LayerKind>();
  }
  if (!has("weight")) {
    *why = "no rule has these tensor names";
    return std::optional<LayerKind>();
  }
  const Shape& w = info("weight").shape;
  const bool bias = has("bias");
  if (g.by_short.size() != (bias ? 2u : 1u)) {
    *why = "tensors besides weight and bias";
    return std::optional<LayerKind>();
  }
  if (w.rank() == 2 && bias) return std::optional(LayerKind::kLinear);
  if (w.rank() == 2) {
    return InvalidArgument("module '" + g.name + "': a rank-2 weight " + Dims(w) +
                           " without bias is a linear layer without bias or an embedding: add "
                           "--layer " +
                           g.name + "=linear or --layer " + g.name + "=embedding");
  }
  if (w.rank() >= 3 && w.rank() <= 5) {
    if (w[1] == 1 && w.rank() <= 4) {
      return InvalidArgument("module '" + g.name + "': conv weight " + Dims(w) +
                             " has one input channel per group: a convolution or a depthwise "
                             "convolution: add --layer " +
                             g.name + "=conv or --layer " + g.name +
                             "=depthwise (depthwise:M for channel multiplier M)");
    }
    // Conv and ConvTranspose weights take the same axis permutation, so "conv" is safe for both.
    return std::optional(LayerKind::kConv);
  }
  if (w.rank() == 1 && bias) return std::optional(LayerKind::kLayerNorm);
  *why = "a rank-" + std::to_string(w.rank()) + " weight" + (bias ? " with bias" : "");
  return std::optional<LayerKind>();
}

Result<std::optional<LayerKind>> InferKeras(const ModelSource& src, const Group& g,
                                            std::string* why) {
  auto has = [&](const char* n) { return g.by_short.count(n) > 0; };
  auto info = [&](const char* n) -> const TensorInfo& { return src.tensors()[g.by_short.at(n)]; };
  if (has("recurrent_kernel")) {
    const Shape& rk = info("recurrent_kernel").shape;
    if (rk.rank() != 2 || rk[0] == 0 || rk[1] % rk[0] != 0) {
      *why = "recurrent_kernel " + Dims(rk) + " is not [u, G*u]";
      return std::optional<LayerKind>();
    }
    const uint64_t gates = rk[1] / rk[0];
    if (gates == 4) return std::optional(LayerKind::kLstm);
    if (gates == 1) return std::optional(LayerKind::kRnn);
    if (gates == 3) {
      if (has("bias") && info("bias").shape.rank() == 1) {
        return Unsupported("layer '" + g.name + "': GRU bias " + Dims(info("bias").shape) +
                           " is reset_after=False, which torch's GRU cannot express");
      }
      return std::optional(LayerKind::kGru);
    }
    *why = "recurrent_kernel holds " + std::to_string(gates) + " gate blocks (LSTM 4, GRU 3)";
    return std::optional<LayerKind>();
  }
  if (has("moving_mean") || has("moving_variance")) return std::optional(LayerKind::kBatchNorm);
  if (has("depthwise_kernel")) return std::optional(LayerKind::kDepthwise);
  if (has("embeddings")) return std::optional(LayerKind::kEmbedding);
  if (has("gamma") || has("beta")) return std::optional(LayerKind::kLayerNorm);
  if (has("kernel")) {
    const size_t rank = info("kernel").shape.rank();
    if (rank == 2) return std::optional(LayerKind::kLinear);
    // Conv and ConvTranspose kernels take the same axis permutation back to torch.
    if (rank >= 3 && rank <= 5) return std::optional(LayerKind::kConv);
  }
  *why = "no rule has these weight names and ranks";
  return std::optional<LayerKind>();
}

std::string KernelAxes(size_t kernel_rank) {
  static constexpr std::string_view kAxes[] = {"", "W", "H,W", "D,H,W"};
  return std::string(kAxes[std::min<size_t>(kernel_rank, 3)]);
}

// "a conv", "an lstm": the kind with its article, for messages.
std::string AKind(const Rule& rule) {
  const bool vowel_sound = rule.name.starts_with("e") || rule.name == "lstm" || rule.name == "rnn";
  return (vowel_sound ? "an " : "a ") + std::string(rule.name);
}

// What `op` does, for the report.
std::string Describe(const Rule& rule, Op op, const std::vector<TensorInfo>& in, const Planned& p) {
  const bool tr = rule.kind == LayerKind::kConvTranspose;
  const std::string gates_to_keras =
      "gates " + std::string(rule.torch_gates) + " -> " + std::string(rule.keras_gates);
  const std::string gates_to_torch =
      "gates " + std::string(rule.keras_gates) + " -> " + std::string(rule.torch_gates);
  const std::string g = std::to_string(rule.gates) + "u";
  switch (op) {
    case Op::kCopy:
      return "copy";
    case Op::kTranspose:
      return "transpose " + Dims(in[0].shape) + " -> " + Dims(p.info.shape);
    case Op::kConvToKeras: {
      const std::string k = KernelAxes(in[0].shape.rank() - 2);
      return std::string(tr ? "I,O," : "O,I,") + k + " -> " + k + (tr ? ",O,I" : ",I,O");
    }
    case Op::kConvToTorch: {
      const std::string k = KernelAxes(in[0].shape.rank() - 2);
      return k + (tr ? ",O,I" : ",I,O") + " -> " + (tr ? "I,O," : "O,I,") + k;
    }
    case Op::kDepthwiseToKeras: {
      const std::string k = KernelAxes(in[0].shape.rank() - 2);
      return "C*M,1," + k + " -> " + k + ",C,M (M = " + std::to_string(p.multiplier) + ")";
    }
    case Op::kDepthwiseToTorch: {
      const std::string k = KernelAxes(in[0].shape.rank() - 2);
      return k + ",C,M -> C*M,1," + k;
    }
    case Op::kGatesToKeras:
      return gates_to_keras + ", transpose [" + g + ", n] -> [n, " + g + "]";
    case Op::kGatesToTorch:
      return "transpose [n, " + g + "] -> [" + g + ", n], " + gates_to_torch;
    case Op::kGateSumToKeras:
      return "bias_ih + bias_hh, " + gates_to_keras;
    case Op::kGateStackToKeras:
      return "stack [bias_ih; bias_hh] -> [2, " + g + "], " + gates_to_keras;
    case Op::kGateRow0ToTorch:
      return "row 0 (input bias) of [2, " + g + "], " + gates_to_torch;
    case Op::kGateRow1ToTorch:
      return "row 1 (recurrent bias) of [2, " + g + "], " + gates_to_torch;
    case Op::kGateVecToTorch:
      return "Keras bias (= bias_ih + bias_hh), " + gates_to_torch;
    case Op::kZerosLike:
      return "zeros (Keras keeps one bias, given whole to bias_ih)";
    case Op::kCounterZero:
      return "int64 scalar 0 (Keras keeps no step counter; torch's strict load needs one)";
    case Op::kDrop:
      return "dropped: Keras BatchNormalization keeps no step counter";
  }
  return {};
}

// The outputs of group `g` under `rule`, appended to `planned` and `report` when every tensor
// fits; otherwise nothing is appended and the result is why (without the group's name).
Result<std::string> PlanGroup(const ModelSource& src, const Group& g, const Rule& rule,
                              const LayerChoice& choice, MapDirection direction,
                              std::vector<Planned>* planned, MapReport* report) {
  const bool to_keras = direction == MapDirection::kTorchToKeras;
  const std::vector<Param>& params = to_keras ? rule.torch : rule.keras;
  const std::vector<OutputRule>& outputs = to_keras ? rule.to_keras : rule.to_torch;
  const std::string kind(rule.name);
  if (!g.duplicate.empty())
    return "has two weights named '" + g.duplicate + "' (a layer wrapper such as Bidirectional)";
  for (const auto& entry : g.by_short) {
    // Not a structured binding: clang 14 cannot capture one in the lambda below.
    const std::string& name = entry.first;
    const size_t index = entry.second;
    const auto it =
        std::find_if(params.begin(), params.end(), [&](const Param& p) { return p.name == name; });
    if (it == params.end()) return "has '" + name + "', which " + AKind(rule) + " layer does not";
    const size_t rank = src.tensors()[index].shape.rank();
    if (rank < static_cast<size_t>(it->min_rank) || rank > static_cast<size_t>(it->max_rank)) {
      return "'" + name + "' has rank " + std::to_string(rank) + "; " + AKind(rule) +
             " layer's has " +
             (it->min_rank == it->max_rank
                  ? std::to_string(it->min_rank)
                  : std::to_string(it->min_rank) + " to " + std::to_string(it->max_rank));
    }
    if (IsQuantized(src.tensors()[index].dtype)) {
      return "'" + name + "' is block-quantized (dequantize first)";
    }
  }
  for (const Param& p : params) {
    if (!p.optional && g.by_short.count(std::string(p.name)) == 0) {
      return "lacks '" + std::string(p.name) + "', which " + AKind(rule) + " layer has";
    }
  }
  const std::vector<int> order = to_keras ? rule.keras_from_torch : Inverse(rule.keras_from_torch);
  std::vector<Planned> mine;
  std::vector<MappedTensor> lines;
  for (const OutputRule& out : outputs) {
    std::vector<size_t> inputs;
    std::vector<TensorInfo> infos;
    for (std::string_view name : out.inputs) {
      const auto it = g.by_short.find(std::string(name));
      if (it == g.by_short.end()) continue;
      inputs.push_back(it->second);
      infos.push_back(src.tensors()[it->second]);
    }
    if (inputs.size() != out.inputs.size()) {
      if (inputs.empty()) continue;
      return "has '" + infos[0].name + "' without its partner (" +
             std::to_string(out.inputs.size()) + " tensors make '" + std::string(out.target) + "')";
    }
    MappedTensor line;
    for (const TensorInfo& info : infos) line.sources.push_back(info.name);
    line.kind = kind;
    Planned p;
    p.op = out.op;
    p.inputs = inputs;
    p.order = order;
    p.multiplier = choice.depth_multiplier;
    if (out.op != Op::kDrop) {
      std::string target = g.name;
      if (to_keras) {
        target += "/";
        if (!rule.cell.empty()) target += std::string(rule.cell) + "/";
      } else {
        target += ".";
      }
      target += out.target;
      Result<Shape> shape = OutShape(out.op, infos, rule.gates, choice.depth_multiplier);
      if (!shape) return shape.error().message();
      const DType dtype = out.op == Op::kCounterZero ? DType::kI64 : infos[0].dtype;
      MP_ASSIGN_OR_RETURN(p.info, TensorInfo::Make(target, dtype, std::move(*shape)));
      line.target = target;
    }
    line.transform = Describe(rule, out.op, infos, p);
    lines.push_back(std::move(line));
    if (out.op != Op::kDrop) mine.push_back(std::move(p));
  }
  for (Planned& p : mine) planned->push_back(std::move(p));
  for (MappedTensor& line : lines) report->tensors.push_back(std::move(line));
  return std::string();
}

}  // namespace

std::string_view MapDirectionName(MapDirection direction) {
  return direction == MapDirection::kTorchToKeras ? "torch-to-keras" : "keras-to-torch";
}

Result<MapDirection> ParseMapDirection(std::string_view text) {
  if (text == "torch-to-keras") return MapDirection::kTorchToKeras;
  if (text == "keras-to-torch") return MapDirection::kKerasToTorch;
  return InvalidArgument("--map '" + std::string(text) +
                         "': expected torch-to-keras or keras-to-torch");
}

std::string_view LayerKindName(LayerKind kind) { return RuleFor(kind).name; }

Result<LayerChoice> ParseLayerChoice(std::string_view text) {
  LayerChoice choice;
  std::string_view name = text;
  const size_t colon = text.find(':');
  if (colon != std::string_view::npos) {
    name = text.substr(0, colon);
    const std::string m(text.substr(colon + 1));
    const bool digits = !m.empty() && m.size() <= 9 && std::all_of(m.begin(), m.end(), [](char c) {
      return c >= '0' && c <= '9';
    });
    if (name != "depthwise" || !digits || std::stoull(m) == 0) {
      return InvalidArgument("layer kind '" + std::string(text) +
                             "': only depthwise takes a channel multiplier (depthwise:M, M >= 1)");
    }
    choice.depth_multiplier = std::stoull(m);
  }
  for (const Rule& rule : Rules()) {
    if (rule.name == name) {
      choice.kind = rule.kind;
      return choice;
    }
  }
  return InvalidArgument("layer kind '" + std::string(text) + "': expected one of " + KindList());
}

Status AddLayerOption(std::string_view text, MapOptions* options) {
  const size_t eq = text.rfind('=');
  if (eq == std::string_view::npos || eq == 0 || eq + 1 == text.size()) {
    return InvalidArgument("--layer '" + std::string(text) + "': expected MODULE=KIND (" +
                           KindList() + ")");
  }
  const std::string module(text.substr(0, eq));
  MP_ASSIGN_OR_RETURN(const LayerChoice choice, ParseLayerChoice(text.substr(eq + 1)));
  const auto [it, added] = options->layers.emplace(module, choice);
  if (!added &&
      (it->second.kind != choice.kind || it->second.depth_multiplier != choice.depth_multiplier)) {
    return InvalidArgument("--layer '" + std::string(text) + "': module '" + module +
                           "' already has kind " + std::string(LayerKindName(it->second.kind)));
  }
  return Status::Ok();
}

Status AddLayerMapFile(const std::string& path, MapOptions* options) {
  MP_ASSIGN_OR_RETURN(const std::string text, ReadSmallFile(path, 16u << 20));
  const Json doc = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return InvalidArgument(path + ": expected a JSON object {\"MODULE\": \"KIND\", ...}");
  }
  for (const auto& [module, kind] : doc.items()) {
    if (!kind.is_string()) {
      return InvalidArgument(path + ": module '" + module + "': the kind is not a string");
    }
    Status added = AddLayerOption(module + "=" + kind.get<std::string>(), options);
    if (!added.ok()) return added.WithContext(path);
  }
  return Status::Ok();
}

Json MapReport::ToJson() const {
  Json doc = Json::object();
  doc["direction"] = MapDirectionName(direction);
  Json list = Json::array();
  uint64_t mapped = 0;
  for (const MappedTensor& t : tensors) {
    Json entry = Json::object();
    entry["sources"] = t.sources;
    entry["target"] = t.target.empty() ? Json(nullptr) : Json(t.target);
    entry["kind"] = t.kind.empty() ? Json(nullptr) : Json(t.kind);
    entry["transform"] = t.transform;
    if (!t.kind.empty() && !t.target.empty()) ++mapped;
    list.push_back(std::move(entry));
  }
  doc["tensors"] = std::move(list);
  Json unmapped_list = Json::array();
  for (const auto& [name, reason] : unmapped) {
    unmapped_list.push_back(Json{{"name", name}, {"reason", reason}});
  }
  doc["unmapped"] = std::move(unmapped_list);
  doc["mapped"] = mapped;
  doc["notes"] = notes;
  return doc;
}

Result<std::unique_ptr<ModelSource>> MapLayers(const ModelSource& source, const MapOptions& options,
                                               MapReport* report) {
  *report = MapReport{};
  report->direction = options.direction;
  const bool to_keras = options.direction == MapDirection::kTorchToKeras;
  const std::string what = to_keras ? "module" : "layer";

  // Groups in order of first appearance; tensors without a group are carried alone.
  std::vector<Group> groups;
  std::map<std::string, size_t> group_index;
  std::vector<std::optional<size_t>> group_of(source.tensors().size());
  for (size_t i = 0; i < source.tensors().size(); ++i) {
    const std::string& name = source.tensors()[i].name;
    const std::optional<SplitName> split = Split(name, options.direction);
    if (!split) continue;
    auto [it, added] = group_index.emplace(split->group, groups.size());
    if (added) groups.push_back(Group{split->group, {}, {}, {}});
    Group& g = groups[it->second];
    g.members.push_back(i);
    if (!g.by_short.emplace(split->short_name, i).second && g.duplicate.empty()) {
      g.duplicate = split->short_name;
    }
    group_of[i] = it->second;
  }
  for (const auto& [name, choice] : options.layers) {
    if (group_index.count(name) == 0) {
      return NotFound("--layer " + name + "=" + std::string(LayerKindName(choice.kind)) +
                      ": the model has no " + what + " '" + name + "'");
    }
  }

  std::vector<Planned> planned;
  auto carry = [&](size_t i, const std::string& reason) {
    Planned p;
    p.info = source.tensors()[i];
    p.op = Op::kCopy;
    p.inputs = {i};
    planned.push_back(std::move(p));
    report->tensors.push_back(MappedTensor{{source.tensors()[i].name},
                                           source.tensors()[i].name,
                                           "",
                                           "carried over unchanged (unmapped)"});
    report->unmapped.emplace_back(source.tensors()[i].name, reason);
  };
  std::vector<bool> group_done(groups.size(), false);
  for (size_t i = 0; i < source.tensors().size(); ++i) {
    if (!group_of[i]) {
      carry(i, to_keras ? "no module prefix (MODULE.PARAM)" : "no layer prefix (LAYER/WEIGHT)");
      continue;
    }
    const size_t gi = *group_of[i];
    if (group_done[gi]) continue;
    group_done[gi] = true;
    const Group& g = groups[gi];
    const std::string where = what + " '" + g.name + "'";

    LayerChoice choice;
    std::string why;
    const auto named = options.layers.find(g.name);
    if (named != options.layers.end()) {
      choice = named->second;
    } else {
      Result<std::optional<LayerKind>> inferred =
          to_keras ? InferTorch(source, g, &why) : InferKeras(source, g, &why);
      if (!inferred) return inferred.error();
      if (!inferred->has_value()) {
        for (size_t m : g.members) carry(m, why);
        continue;
      }
      choice.kind = **inferred;
    }
    const Rule& rule = RuleFor(choice.kind);
    MP_ASSIGN_OR_RETURN(const std::string mismatch,
                        PlanGroup(source, g, rule, choice, options.direction, &planned, report));
    if (mismatch.empty()) continue;
    if (named != options.layers.end()) {
      return InvalidArgument(where + " is not " + AKind(rule) + " layer: " + mismatch);
    }
    // An inferred kind that does not fit (e.g. an LSTM with projections): keep the tensors.
    for (size_t m : g.members) carry(m, "looks like " + AKind(rule) + " layer but " + mismatch);
  }

  std::set<std::string> seen;
  for (const Planned& p : planned) {
    if (!seen.insert(p.info.name).second) {
      return InvalidArgument("mapping " + std::string(MapDirectionName(options.direction)) +
                             ": two output tensors would be named '" + p.info.name + "'");
    }
  }
  Json metadata = source.metadata().is_object() ? source.metadata() : Json::object();
  if (metadata.contains(kAliasesMetadataKey)) {
    metadata.erase(std::string(kAliasesMetadataKey));
    report->notes.push_back(
        "the source's tied-tensor aliases (" + std::string(kAliasesMetadataKey) +
        ") name tensors by their old names and were left out; each tied tensor is mapped once");
  }
  return std::unique_ptr<ModelSource>(
      std::make_unique<MappedSource>(source, std::move(planned), std::move(metadata)));
}

}  // namespace mp
