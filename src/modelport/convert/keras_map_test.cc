#include "modelport/convert/keras_map.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "modelport/convert/cast.h"
#include "test_util.h"

namespace mp {
namespace {

// A f32 tensor whose element i is base + i, so every element's origin is known.
TensorView Seq(const std::string& name, Shape shape, float base) {
  const uint64_t n = *shape.NumElements();
  std::vector<float> v(n);
  for (uint64_t i = 0; i < n; ++i) v[i] = base + static_cast<float>(i);
  std::vector<uint8_t> bytes(n * 4);
  std::memcpy(bytes.data(), v.data(), bytes.size());
  return testing::BytesTensor(name, DType::kF32, std::move(shape), bytes);
}

std::vector<float> Floats(const TensorView& t) {
  std::vector<float> v(t.info.byte_size / 4);
  std::memcpy(v.data(), t.bytes().data(), t.info.byte_size);
  return v;
}

struct Mapped {
  std::unique_ptr<ModelSource> view;
  MapReport report;

  TensorView Get(const std::string& name) const {
    const auto index = view->Find(name);
    EXPECT_TRUE(index.has_value()) << "no output tensor '" << name << "'";
    if (!index) return Seq("missing", Shape{1}, 0);
    auto t = view->Load(*index);
    EXPECT_TRUE(t.ok()) << t.error().message();
    return *t;
  }
  std::vector<std::string> Names() const {
    std::vector<std::string> names;
    for (const auto& t : view->tensors()) names.push_back(t.name);
    return names;
  }
};

Result<std::unique_ptr<ModelSource>> RunMap(const ModelSource& source, MapDirection direction,
                                            const std::vector<std::string>& layers,
                                            MapReport* report) {
  MapOptions options;
  options.direction = direction;
  for (const auto& l : layers) EXPECT_TRUE(AddLayerOption(l, &options).ok()) << l;
  return MapLayers(source, options, report);
}

Mapped Map(const ModelSource& source, MapDirection direction,
           const std::vector<std::string>& layers = {}) {
  Mapped m;
  auto view = RunMap(source, direction, layers, &m.report);
  EXPECT_TRUE(view.ok()) << view.error().message();
  if (view.ok()) m.view = std::move(*view);
  return m;
}

Status MapError(const ModelSource& source, MapDirection direction,
                const std::vector<std::string>& layers = {}) {
  MapReport report;
  auto view = RunMap(source, direction, layers, &report);
  EXPECT_FALSE(view.ok());
  return view.ok() ? Status::Ok() : view.error();
}

Model MakeModel(std::vector<TensorView> tensors) {
  Model model;
  for (auto& t : tensors) EXPECT_TRUE(model.Add(std::move(t)).ok());
  return model;
}

// Everything in `back` equals `orig` byte for byte (names, dtypes, shapes, bytes).
void ExpectSame(const ModelSource& orig, const ModelSource& back) {
  EXPECT_TRUE(testing::SameModel(orig, back, /*compare_metadata=*/false));
}

constexpr auto kToKeras = MapDirection::kTorchToKeras;
constexpr auto kToTorch = MapDirection::kKerasToTorch;

const MappedTensor* Line(const MapReport& report, const std::string& source) {
  for (const auto& t : report.tensors) {
    if (!t.sources.empty() && t.sources[0] == source) return &t;
  }
  return nullptr;
}

TEST(KerasMap, LinearTransposesAndRoundTrips) {
  Model torch = MakeModel({Seq("fc1.weight", Shape{3, 2}, 0), Seq("fc1.bias", Shape{3}, 100)});
  Mapped k = Map(torch, kToKeras);
  EXPECT_EQ(k.Names(), (std::vector<std::string>{"fc1/kernel", "fc1/bias"}));
  const TensorView kernel = k.Get("fc1/kernel");
  EXPECT_EQ(kernel.info.shape, (Shape{2, 3}));
  // kernel[i][o] = weight[o][i]; weight[o][i] = 2*o + i.
  EXPECT_EQ(Floats(kernel), (std::vector<float>{0, 2, 4, 1, 3, 5}));
  EXPECT_EQ(Floats(k.Get("fc1/bias")), (std::vector<float>{100, 101, 102}));
  const MappedTensor* line = Line(k.report, "fc1.weight");
  ASSERT_NE(line, nullptr);
  EXPECT_EQ(line->target, "fc1/kernel");
  EXPECT_EQ(line->kind, "linear");
  EXPECT_EQ(line->transform, "transpose [3, 2] -> [2, 3]");
  EXPECT_TRUE(k.report.unmapped.empty());

  Mapped t = Map(*k.view, kToTorch);
  EXPECT_EQ(t.Names(), (std::vector<std::string>{"fc1.weight", "fc1.bias"}));
  ExpectSame(torch, *t.view);
}

// Element (o, i, k0, k1, ...) of a torch conv weight sits at keras (k0, k1, ..., i, o).
void CheckConv(Shape torch_shape, const std::vector<std::string>& layers, const char* transform) {
  SCOPED_TRACE(torch_shape.ToString());
  Model torch =
      MakeModel({Seq("c.weight", torch_shape, 0), Seq("c.bias", Shape{torch_shape[0]}, 500)});
  Mapped k = Map(torch, kToKeras, layers);
  const TensorView kernel = k.Get("c/kernel");
  const auto& d = torch_shape.dims();
  const size_t r = d.size();
  std::vector<uint64_t> kd(d.begin() + 2, d.end());
  kd.push_back(d[1]);
  kd.push_back(d[0]);
  ASSERT_EQ(kernel.info.shape, Shape(kd));
  const std::vector<float> out = Floats(kernel);
  // Walk every torch index; compute both flat offsets by hand.
  const uint64_t n = *torch_shape.NumElements();
  for (uint64_t flat = 0; flat < n; ++flat) {
    std::vector<uint64_t> idx(r);
    uint64_t rest = flat;
    for (size_t a = r; a-- > 0;) {
      idx[a] = rest % d[a];
      rest /= d[a];
    }
    std::vector<uint64_t> kidx(idx.begin() + 2, idx.end());
    kidx.push_back(idx[1]);
    kidx.push_back(idx[0]);
    uint64_t kflat = 0;
    for (size_t a = 0; a < r; ++a) kflat = kflat * kd[a] + kidx[a];
    ASSERT_EQ(out[kflat], static_cast<float>(flat)) << "torch flat index " << flat;
  }
  EXPECT_EQ(Line(k.report, "c.weight")->transform, transform);
  Mapped t = Map(*k.view, kToTorch, layers);
  ExpectSame(torch, *t.view);
}

TEST(KerasMap, ConvPermutesEveryElementAndRoundTrips) {
  CheckConv(Shape{3, 2, 5}, {}, "O,I,W -> W,I,O");
  CheckConv(Shape{3, 2, 2, 4}, {}, "O,I,H,W -> H,W,I,O");
  CheckConv(Shape{2, 3, 2, 3, 2}, {}, "O,I,D,H,W -> D,H,W,I,O");
  // One input channel in 3-D: Keras has no depthwise 3-D convolution, so conv is the only reading.
  CheckConv(Shape{2, 1, 2, 2, 2}, {}, "O,I,D,H,W -> D,H,W,I,O");
  // ConvTranspose weights [in, out, k...] take the same permutation to [k..., out, in].
  CheckConv(Shape{3, 2, 2, 4}, {"c=conv_transpose"}, "I,O,H,W -> H,W,O,I");
  CheckConv(Shape{4, 1, 3}, {"c=conv"}, "O,I,W -> W,I,O");
}

TEST(KerasMap, DepthwiseWithMultiplier) {
  // C = 3 channels, M = 2: torch output channel c*M + m.
  Model torch = MakeModel({Seq("dw.weight", Shape{6, 1, 2, 2}, 0), Seq("dw.bias", Shape{6}, 50)});
  Status ambiguous = MapError(torch, kToKeras);
  EXPECT_EQ(ambiguous.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ambiguous.message(),
            "module 'dw': conv weight [6, 1, 2, 2] has one input channel per group: a "
            "convolution or a depthwise convolution: add --layer dw=conv or --layer dw=depthwise "
            "(depthwise:M for channel multiplier M)");

  Mapped k = Map(torch, kToKeras, {"dw=depthwise:2"});
  const TensorView kernel = k.Get("dw/depthwise_kernel");
  ASSERT_EQ(kernel.info.shape, (Shape{2, 2, 3, 2}));
  const std::vector<float> out = Floats(kernel);
  for (uint64_t c = 0; c < 3; ++c)
    for (uint64_t m = 0; m < 2; ++m)
      for (uint64_t h = 0; h < 2; ++h)
        for (uint64_t w = 0; w < 2; ++w) {
          const float torch_value = static_cast<float>(((c * 2 + m) * 2 + h) * 2 + w);
          EXPECT_EQ(out[((h * 2 + w) * 3 + c) * 2 + m], torch_value) << c << m << h << w;
        }
  EXPECT_EQ(Line(k.report, "dw.weight")->transform, "C*M,1,H,W -> H,W,C,M (M = 2)");
  // Keras -> torch needs no hint: the kernel shape holds C and M.
  Mapped t = Map(*k.view, kToTorch);
  ExpectSame(torch, *t.view);

  // Multiplier 1 by default; 1-D works too.
  Model torch1 = MakeModel({Seq("dw.weight", Shape{4, 1, 3}, 0)});
  Mapped k1 = Map(torch1, kToKeras, {"dw=depthwise"});
  EXPECT_EQ(k1.Get("dw/depthwise_kernel").info.shape, (Shape{3, 4, 1}));
  ExpectSame(torch1, *Map(*k1.view, kToTorch).view);

  MapOptions bad;
  ASSERT_TRUE(AddLayerOption("dw=depthwise:4", &bad).ok());
  MapReport report;
  Status wrong = MapLayers(torch, bad, &report).error();
  EXPECT_EQ(wrong.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(wrong.message(),
            "module 'dw' is not a depthwise layer: depthwise weight [6, 1, 2, 2] is not [C*M, 1, "
            "...] with channel multiplier M = 4");
}

TEST(KerasMap, BatchNormDropsAndRestoresTheCounter) {
  std::vector<uint8_t> seven(8, 0);
  seven[0] = 7;
  Model torch =
      MakeModel({Seq("bn.weight", Shape{3}, 0), Seq("bn.bias", Shape{3}, 10),
                 Seq("bn.running_mean", Shape{3}, 20), Seq("bn.running_var", Shape{3}, 30),
                 testing::BytesTensor("bn.num_batches_tracked", DType::kI64, Shape{}, seven)});
  Mapped k = Map(torch, kToKeras);
  EXPECT_EQ(k.Names(), (std::vector<std::string>{"bn/gamma", "bn/beta", "bn/moving_mean",
                                                 "bn/moving_variance"}));
  EXPECT_EQ(Floats(k.Get("bn/moving_variance")), (std::vector<float>{30, 31, 32}));
  const MappedTensor* dropped = Line(k.report, "bn.num_batches_tracked");
  ASSERT_NE(dropped, nullptr);
  EXPECT_EQ(dropped->target, "");
  EXPECT_EQ(dropped->kind, "batchnorm");
  EXPECT_EQ(dropped->transform, "dropped: Keras BatchNormalization keeps no step counter");
  const Json json = k.report.ToJson();
  EXPECT_TRUE(json["tensors"][4]["target"].is_null());
  EXPECT_EQ(json["mapped"], 4);

  Mapped t = Map(*k.view, kToTorch);
  EXPECT_EQ(t.Names(), (std::vector<std::string>{"bn.weight", "bn.bias", "bn.running_mean",
                                                 "bn.running_var", "bn.num_batches_tracked"}));
  const TensorView counter = t.Get("bn.num_batches_tracked");
  EXPECT_EQ(counter.info.dtype, DType::kI64);
  EXPECT_EQ(counter.info.shape, Shape{});
  EXPECT_EQ(counter.info.byte_size, 8u);
  EXPECT_EQ(std::vector<uint8_t>(counter.bytes().begin(), counter.bytes().end()),
            std::vector<uint8_t>(8, 0));
  EXPECT_EQ(Floats(t.Get("bn.running_mean")), (std::vector<float>{20, 21, 22}));

  // affine=False: only the statistics.
  Model plain =
      MakeModel({Seq("bn.running_mean", Shape{2}, 0), Seq("bn.running_var", Shape{2}, 5)});
  EXPECT_EQ(Map(plain, kToKeras).Names(),
            (std::vector<std::string>{"bn/moving_mean", "bn/moving_variance"}));
}

TEST(KerasMap, LayerNormAndEmbedding) {
  Model torch = MakeModel({Seq("ln.weight", Shape{4}, 0), Seq("ln.bias", Shape{4}, 10),
                           Seq("emb.weight", Shape{5, 3}, 100)});
  Status ambiguous = MapError(torch, kToKeras);
  EXPECT_EQ(ambiguous.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ambiguous.message(),
            "module 'emb': a rank-2 weight [5, 3] without bias is a linear layer without bias or "
            "an embedding: add --layer emb=linear or --layer emb=embedding");
  Mapped k = Map(torch, kToKeras, {"emb=embedding"});
  EXPECT_EQ(k.Names(), (std::vector<std::string>{"ln/gamma", "ln/beta", "emb/embeddings"}));
  const TensorView emb = k.Get("emb/embeddings");
  EXPECT_EQ(emb.info.shape, (Shape{5, 3}));
  EXPECT_EQ(Floats(emb), Floats(Seq("x", Shape{5, 3}, 100)));
  EXPECT_EQ(Line(k.report, "ln.weight")->kind, "layernorm");
  Mapped t = Map(*k.view, kToTorch);
  ExpectSame(torch, *t.view);

  // The same weight read as a bias-free linear layer is transposed.
  Mapped lin = Map(torch, kToKeras, {"emb=linear"});
  EXPECT_EQ(lin.Get("emb/kernel").info.shape, (Shape{3, 5}));
}

// Gate block g of a torch recurrent tensor, as floats.
struct RecurrentCase {
  const char* kind;
  uint64_t gates;
  std::vector<int> keras_from_torch;
  const char* cell;
};

void CheckRecurrent(const RecurrentCase& c) {
  SCOPED_TRACE(c.kind);
  const uint64_t u = 2, in = 3, G = c.gates;
  Model torch = MakeModel(
      {Seq("rnn.weight_ih_l0", Shape{G * u, in}, 0), Seq("rnn.weight_hh_l0", Shape{G * u, u}, 1000),
       Seq("rnn.bias_ih_l0", Shape{G * u}, 2000), Seq("rnn.bias_hh_l0", Shape{G * u}, 3000.5f)});
  Mapped k = Map(torch, kToKeras);
  const std::string p = std::string("rnn/") + c.cell + "/";
  EXPECT_EQ(k.Names(),
            (std::vector<std::string>{p + "kernel", p + "recurrent_kernel", p + "bias"}));
  const TensorView kernel = k.Get(p + "kernel");
  const TensorView rec = k.Get(p + "recurrent_kernel");
  ASSERT_EQ(kernel.info.shape, (Shape{in, G * u}));
  ASSERT_EQ(rec.info.shape, (Shape{u, G * u}));
  const auto kv = Floats(kernel), rv = Floats(rec), bv = Floats(k.Get(p + "bias"));
  for (uint64_t kb = 0; kb < G; ++kb) {
    const uint64_t tb = static_cast<uint64_t>(c.keras_from_torch[kb]);
    for (uint64_t j = 0; j < u; ++j) {
      const uint64_t torch_row = tb * u + j, keras_col = kb * u + j;
      for (uint64_t i = 0; i < in; ++i) {
        EXPECT_EQ(kv[i * G * u + keras_col], static_cast<float>(torch_row * in + i));
      }
      for (uint64_t i = 0; i < u; ++i) {
        EXPECT_EQ(rv[i * G * u + keras_col], 1000 + static_cast<float>(torch_row * u + i));
      }
      if (G == 3) {  // GRU: [2, 3u] = [b_ih; b_hh] reordered
        EXPECT_EQ(bv[keras_col], 2000 + static_cast<float>(torch_row));
        EXPECT_EQ(bv[G * u + keras_col], 3000.5f + static_cast<float>(torch_row));
      } else {  // LSTM, RNN: b_ih + b_hh
        EXPECT_EQ(bv[keras_col], (2000 + static_cast<float>(torch_row)) +
                                     (3000.5f + static_cast<float>(torch_row)));
      }
    }
  }
  Mapped t = Map(*k.view, kToTorch);
  EXPECT_EQ(t.Names(), (std::vector<std::string>{"rnn.weight_ih_l0", "rnn.weight_hh_l0",
                                                 "rnn.bias_ih_l0", "rnn.bias_hh_l0"}));
  for (const char* name : {"rnn.weight_ih_l0", "rnn.weight_hh_l0"}) {
    EXPECT_EQ(Floats(t.Get(name)), Floats(torch.Load(*torch.Find(name)).value())) << name;
  }
  const auto b_ih = Floats(t.Get("rnn.bias_ih_l0")), b_hh = Floats(t.Get("rnn.bias_hh_l0"));
  if (G == 3) {
    ExpectSame(torch, *t.view);
  } else {
    // The split is exact in sum: bias_ih carries b_ih + b_hh, bias_hh is zero.
    for (uint64_t r = 0; r < G * u; ++r) {
      EXPECT_EQ(b_hh[r], 0.0f);
      EXPECT_EQ(b_ih[r] + b_hh[r],
                (2000 + static_cast<float>(r)) + (3000.5f + static_cast<float>(r)));
    }
  }
}

TEST(KerasMap, RecurrentGateOrderAndBiases) {
  CheckRecurrent({"lstm", 4, {0, 1, 2, 3}, "lstm_cell"});
  CheckRecurrent({"gru", 3, {1, 0, 2}, "gru_cell"});
  CheckRecurrent({"rnn", 1, {0}, "simple_rnn_cell"});
}

TEST(KerasMap, RecurrentReportAndBiasFree) {
  Model torch =
      MakeModel({Seq("g.weight_ih_l0", Shape{6, 3}, 0), Seq("g.weight_hh_l0", Shape{6, 2}, 0),
                 Seq("g.bias_ih_l0", Shape{6}, 0), Seq("g.bias_hh_l0", Shape{6}, 0)});
  Mapped k = Map(torch, kToKeras);
  EXPECT_EQ(Line(k.report, "g.weight_ih_l0")->transform,
            "gates r,z,n -> z,r,h, transpose [3u, n] -> [n, 3u]");
  EXPECT_EQ(Line(k.report, "g.bias_ih_l0")->transform,
            "stack [bias_ih; bias_hh] -> [2, 3u], gates r,z,n -> z,r,h");
  EXPECT_EQ(Line(k.report, "g.bias_ih_l0")->sources,
            (std::vector<std::string>{"g.bias_ih_l0", "g.bias_hh_l0"}));
  EXPECT_EQ(k.Get("g/gru_cell/bias").info.shape, (Shape{2, 6}));

  Model no_bias =
      MakeModel({Seq("l.weight_ih_l0", Shape{8, 3}, 0), Seq("l.weight_hh_l0", Shape{8, 2}, 0)});
  Mapped nb = Map(no_bias, kToKeras);
  EXPECT_EQ(nb.Names(),
            (std::vector<std::string>{"l/lstm_cell/kernel", "l/lstm_cell/recurrent_kernel"}));
  ExpectSame(no_bias, *Map(*nb.view, kToTorch).view);

  Model half = MakeModel({Seq("l.weight_ih_l0", Shape{8, 3}, 0),
                          Seq("l.weight_hh_l0", Shape{8, 2}, 0), Seq("l.bias_ih_l0", Shape{8}, 0)});
  Mapped h = Map(half, kToKeras);
  EXPECT_EQ(h.report.unmapped.size(), 3u);
  EXPECT_EQ(h.report.unmapped[0].second,
            "looks like an lstm layer but has 'l.bias_ih_l0' without its partner (2 tensors make "
            "'bias')");
}

TEST(KerasMap, IntegerRecurrentBiasesAreNotSummed) {
  Model torch =
      MakeModel({Seq("l.weight_ih_l0", Shape{4, 3}, 0), Seq("l.weight_hh_l0", Shape{4, 1}, 0),
                 testing::PatternTensor("l.bias_ih_l0", DType::kI32, Shape{4}, 1),
                 testing::PatternTensor("l.bias_hh_l0", DType::kI32, Shape{4}, 2)});
  Mapped k = Map(torch, kToKeras);
  ASSERT_EQ(k.report.unmapped.size(), 4u);
  EXPECT_EQ(k.report.unmapped[0].second,
            "looks like an lstm layer but 'l.bias_ih_l0' is i32: the biases' sum needs f16, bf16, "
            "f32 or f64");
}

TEST(KerasMap, MultiLayerAndBidirectionalRecurrentAreRefused) {
  Model two = MakeModel(
      {Seq("lstm.weight_ih_l0", Shape{8, 3}, 0), Seq("lstm.weight_hh_l0", Shape{8, 2}, 0),
       Seq("lstm.weight_ih_l1", Shape{8, 2}, 0), Seq("lstm.weight_hh_l1", Shape{8, 2}, 0)});
  Status s = MapError(two, kToKeras);
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_EQ(s.message(),
            "module 'lstm': tensor 'weight_hh_l1' belongs to a multi-layer or bidirectional "
            "recurrent module, which is not mapped (use one torch module per layer and direction)");
  Model bi =
      MakeModel({Seq("gru.weight_ih_l0", Shape{6, 3}, 0), Seq("gru.weight_hh_l0", Shape{6, 2}, 0),
                 Seq("gru.weight_ih_l0_reverse", Shape{6, 3}, 0)});
  EXPECT_EQ(MapError(bi, kToKeras).code(), StatusCode::kUnsupported);
}

TEST(KerasMap, KerasSideInference) {
  Model keras = MakeModel({
      Seq("conv/kernel", Shape{3, 3, 2, 4}, 0),
      Seq("conv/bias", Shape{4}, 0),
      Seq("bn/gamma", Shape{4}, 0),
      Seq("bn/beta", Shape{4}, 0),
      Seq("bn/moving_mean", Shape{4}, 0),
      Seq("bn/moving_variance", Shape{4}, 0),
      Seq("dense/kernel", Shape{4, 5}, 0),
      Seq("emb/embeddings", Shape{7, 2}, 0),
      Seq("ln/gamma", Shape{5}, 0),
      Seq("ln/beta", Shape{5}, 0),
      Seq("lstm/lstm_cell/kernel", Shape{2, 12}, 0),
      Seq("lstm/lstm_cell/recurrent_kernel", Shape{3, 12}, 0),
      Seq("lstm/lstm_cell/bias", Shape{12}, 0),
      Seq("loose", Shape{1}, 0),
  });
  Mapped t = Map(keras, kToTorch);
  EXPECT_EQ(t.Names(), (std::vector<std::string>{
                           "conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean",
                           "bn.running_var", "bn.num_batches_tracked", "dense.weight", "emb.weight",
                           "ln.weight", "ln.bias", "lstm.weight_ih_l0", "lstm.weight_hh_l0",
                           "lstm.bias_ih_l0", "lstm.bias_hh_l0", "loose"}));
  EXPECT_EQ(t.Get("conv.weight").info.shape, (Shape{4, 2, 3, 3}));
  EXPECT_EQ(t.Get("dense.weight").info.shape, (Shape{5, 4}));
  EXPECT_EQ(t.Get("lstm.weight_hh_l0").info.shape, (Shape{12, 3}));
  EXPECT_EQ(Line(t.report, "conv/kernel")->transform, "H,W,I,O -> O,I,H,W");
  EXPECT_EQ(Line(t.report, "lstm/lstm_cell/bias")->transform,
            "Keras bias (= bias_ih + bias_hh), gates i,f,c,o -> i,f,g,o");
  ASSERT_EQ(t.report.unmapped.size(), 1u);
  EXPECT_EQ(t.report.unmapped[0].first, "loose");
  EXPECT_EQ(t.report.unmapped[0].second, "no layer prefix (LAYER/WEIGHT)");

  Model gru_v1 = MakeModel({Seq("gru/gru_cell/kernel", Shape{2, 9}, 0),
                            Seq("gru/gru_cell/recurrent_kernel", Shape{3, 9}, 0),
                            Seq("gru/gru_cell/bias", Shape{9}, 0)});
  Status s = MapError(gru_v1, kToTorch);
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_EQ(s.message(),
            "layer 'gru': GRU bias [9] is reset_after=False, which torch's GRU cannot express");

  // A Bidirectional wrapper holds two cells: not mapped, carried and listed.
  Model bi = MakeModel({Seq("bi/forward_lstm/lstm_cell/kernel", Shape{2, 8}, 0),
                        Seq("bi/forward_lstm/lstm_cell/recurrent_kernel", Shape{2, 8}, 0),
                        Seq("bi/backward_lstm/lstm_cell/kernel", Shape{2, 8}, 0),
                        Seq("bi/backward_lstm/lstm_cell/recurrent_kernel", Shape{2, 8}, 0)});
  Mapped wrapped = Map(bi, kToTorch);
  ASSERT_EQ(wrapped.report.unmapped.size(), 4u);
  EXPECT_EQ(wrapped.report.unmapped[0].second,
            "looks like an lstm layer but has two weights named 'kernel' (a layer wrapper such as "
            "Bidirectional)");
  EXPECT_EQ(wrapped.Names()[0], "bi/forward_lstm/lstm_cell/kernel");

  Model transposed = MakeModel({Seq("up/kernel", Shape{2, 2, 3, 5}, 0)});
  Mapped up = Map(transposed, kToTorch, {"up=conv_transpose"});
  EXPECT_EQ(up.Get("up.weight").info.shape, (Shape{5, 3, 2, 2}));
  EXPECT_EQ(Line(up.report, "up/kernel")->transform, "H,W,O,I -> I,O,H,W");
  EXPECT_EQ(Line(up.report, "up/kernel")->kind, "conv_transpose");
}

TEST(KerasMap, UnmappedTensorsAreCarriedAndListed) {
  Model torch = MakeModel({Seq("step", Shape{1}, 0), Seq("fc.weight", Shape{2, 2}, 0),
                           Seq("fc.bias", Shape{2}, 0), Seq("wn.weight_g", Shape{2, 1}, 9),
                           Seq("wn.weight_v", Shape{2, 3}, 0), Seq("scale.weight", Shape{3}, 4)});
  Mapped k = Map(torch, kToKeras);
  EXPECT_EQ(k.Names(), (std::vector<std::string>{"step", "fc/kernel", "fc/bias", "wn.weight_g",
                                                 "wn.weight_v", "scale.weight"}));
  EXPECT_EQ(Floats(k.Get("wn.weight_g")), (std::vector<float>{9, 10}));
  ASSERT_EQ(k.report.unmapped.size(), 4u);
  EXPECT_EQ(k.report.unmapped[0],
            (std::pair<std::string, std::string>{"step", "no module prefix (MODULE.PARAM)"}));
  EXPECT_EQ(k.report.unmapped[1].second, "no rule has these tensor names");
  EXPECT_EQ(k.report.unmapped[3].second, "a rank-1 weight");
  const Json json = k.report.ToJson();
  EXPECT_EQ(json["direction"], "torch-to-keras");
  EXPECT_EQ(json["mapped"], 2);
  EXPECT_EQ(json["unmapped"].size(), 4u);
  EXPECT_TRUE(json["tensors"][0]["kind"].is_null());
  EXPECT_EQ(json["tensors"][0]["target"], "step");
  EXPECT_EQ(json["tensors"][0]["transform"], "carried over unchanged (unmapped)");
}

TEST(KerasMap, OptionErrors) {
  Model torch = MakeModel({Seq("fc.weight", Shape{2, 3}, 0), Seq("fc.bias", Shape{2}, 0)});
  Status missing = MapError(torch, kToKeras, {"nope=linear"});
  EXPECT_EQ(missing.code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.message(), "--layer nope=linear: the model has no module 'nope'");
  Status wrong = MapError(torch, kToKeras, {"fc=conv"});
  EXPECT_EQ(wrong.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(wrong.message(),
            "module 'fc' is not a conv layer: 'weight' has rank 2; a conv "
            "layer's has 3 to 5");
  Status lacks = MapError(torch, kToKeras, {"fc=batchnorm"});
  EXPECT_EQ(lacks.message(),
            "module 'fc' is not a batchnorm layer: 'weight' has rank 2; a batchnorm layer's has 1");

  MapOptions options;
  Status bad_kind = AddLayerOption("fc=dense", &options);
  EXPECT_EQ(bad_kind.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad_kind.message(),
            "layer kind 'dense': expected one of linear, conv, conv_transpose, depthwise, "
            "batchnorm, layernorm, embedding, lstm, gru, rnn");
  EXPECT_EQ(AddLayerOption("fc", &options).message(),
            "--layer 'fc': expected MODULE=KIND (linear, conv, conv_transpose, depthwise, "
            "batchnorm, layernorm, embedding, lstm, gru, rnn)");
  EXPECT_EQ(AddLayerOption("fc=conv:2", &options).message(),
            "layer kind 'conv:2': only depthwise takes a channel multiplier (depthwise:M, M >= 1)");
  EXPECT_EQ(AddLayerOption("fc=depthwise:0", &options).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(AddLayerOption("fc=linear", &options).ok());
  ASSERT_TRUE(AddLayerOption("fc=linear", &options).ok());
  EXPECT_EQ(AddLayerOption("fc=embedding", &options).message(),
            "--layer 'fc=embedding': module 'fc' already has kind linear");
  EXPECT_EQ(ParseMapDirection("torch-keras").error().message(),
            "--map 'torch-keras': expected torch-to-keras or keras-to-torch");
}

TEST(KerasMap, EveryKindParsesBackFromItsName) {
  for (int k = 0; k <= static_cast<int>(LayerKind::kRnn); ++k) {
    const auto kind = static_cast<LayerKind>(k);
    auto parsed = ParseLayerChoice(LayerKindName(kind));
    ASSERT_TRUE(parsed.ok()) << LayerKindName(kind);
    EXPECT_EQ(parsed->kind, kind);
    EXPECT_EQ(parsed->depth_multiplier, 1u);
  }
  EXPECT_EQ(ParseLayerChoice("depthwise:12")->depth_multiplier, 12u);
}

TEST(KerasMap, MapFile) {
  testing::TempDir dir;
  {
    std::ofstream(dir.File("map.json")) << R"({"emb": "embedding", "dw": "depthwise:2"})";
    std::ofstream(dir.File("bad.json")) << R"({"emb": 3})";
    std::ofstream(dir.File("broken.json")) << R"({"emb": )";
  }
  MapOptions options;
  ASSERT_TRUE(AddLayerMapFile(dir.File("map.json"), &options).ok());
  ASSERT_EQ(options.layers.size(), 2u);
  EXPECT_EQ(options.layers.at("emb").kind, LayerKind::kEmbedding);
  EXPECT_EQ(options.layers.at("dw").depth_multiplier, 2u);
  EXPECT_EQ(AddLayerMapFile(dir.File("bad.json"), &options).message(),
            dir.File("bad.json") + ": module 'emb': the kind is not a string");
  EXPECT_EQ(AddLayerMapFile(dir.File("broken.json"), &options).message(),
            dir.File("broken.json") + ": expected a JSON object {\"MODULE\": \"KIND\", ...}");
  EXPECT_EQ(AddLayerMapFile(dir.File("none.json"), &options).code(), StatusCode::kNotFound);
}

TEST(KerasMap, CollidingOutputNames) {
  Model torch = MakeModel({Seq("fc/kernel", Shape{3, 2}, 0), Seq("fc.weight", Shape{2, 3}, 0),
                           Seq("fc.bias", Shape{2}, 0)});
  Status s = MapError(torch, kToKeras);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "mapping torch-to-keras: two output tensors would be named 'fc/kernel'");
}

TEST(KerasMap, HalfPrecisionBiasSum) {
  // f16 biases add exactly in f64 and round once: 1 + 2^-11 is a tie that rounds to even (1).
  auto f16 = [](const std::string& name, Shape shape, std::vector<float> values) {
    std::vector<uint8_t> bytes;
    for (float v : values) {
      const uint16_t h = F32ToF16(v);
      bytes.push_back(static_cast<uint8_t>(h));
      bytes.push_back(static_cast<uint8_t>(h >> 8));
    }
    return testing::BytesTensor(name, DType::kF16, std::move(shape), bytes);
  };
  Model proper = MakeModel(
      {f16("r.weight_ih_l0", Shape{1, 2}, {1, 2}), f16("r.weight_hh_l0", Shape{1, 1}, {3}),
       f16("r.bias_ih_l0", Shape{1}, {1}), f16("r.bias_hh_l0", Shape{1}, {0.00048828125f})});
  Mapped k = Map(proper, kToKeras);
  const TensorView bias = k.Get("r/simple_rnn_cell/bias");
  ASSERT_EQ(bias.info.dtype, DType::kF16);
  uint16_t h = 0;
  std::memcpy(&h, bias.bytes().data(), 2);
  EXPECT_EQ(h, F32ToF16(1.0f));
}

}  // namespace
}  // namespace mp
