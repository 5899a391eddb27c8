// TensorFlow.js (npm @tensorflow/tfjs, CPU backend, through tests/node/tfjs_run.mjs) as the
// oracle of the tfjs format: what modelport writes, TF.js's own decoder (tf.io.decodeWeights)
// reads with the same values; what TF.js saves, modelport reads exactly; a TF.js model.json taken
// through safetensors and back still loads in tf.loadLayersModel and predicts the same.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "modelport/convert/cast.h"
#include "modelport/formats/format.h"
#include "modelport/formats/numpy/numpy.h"
#include "modelport/formats/tfjs/tfjs.h"
#include "test_util.h"

namespace mp {
namespace {

namespace fs = std::filesystem;
using testing::PatternTensor;
using testing::ReadBytes;
using testing::RunCli;
using testing::RunTfjs;
using testing::TempDir;

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

nlohmann::json ReadJson(const std::string& path) {
  const std::vector<uint8_t> text = ReadBytes(path);
  return nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
}

/// The tensors TF.js decoded ("decode" + "dump" of tfjs_run.mjs): name -> (dtype, shape, bytes).
struct Decoded {
  std::string dtype;
  std::vector<uint64_t> shape;
  std::vector<uint8_t> bytes;
};
std::map<std::string, Decoded> ReadDump(const std::string& dir) {
  std::map<std::string, Decoded> out;
  for (const auto& e : ReadJson(dir + "/index.json")) {
    out[e["name"].get<std::string>()] = {e["dtype"].get<std::string>(),
                                         e["shape"].get<std::vector<uint64_t>>(),
                                         ReadBytes(e["file"].get<std::string>())};
  }
  return out;
}

/// What TF.js's decoder should give for a tensor modelport wrote: its TF.js dtype and bytes
/// (f16 widened to float32, 8/16-bit integers to int32).
std::pair<std::string, std::vector<uint8_t>> ExpectedTfjs(const TensorView& t) {
  const std::span<const uint8_t> b = t.bytes();
  std::vector<uint8_t> out;
  auto push = [&out](const auto& v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    out.insert(out.end(), p, p + sizeof v);
  };
  const size_t n = t.info.byte_size / std::max<size_t>(1, ElementSize(t.info.dtype));
  switch (t.info.dtype) {
    case DType::kF32:
      return {"float32", {b.begin(), b.end()}};
    case DType::kI32:
      return {"int32", {b.begin(), b.end()}};
    case DType::kBool:
      return {"bool", {b.begin(), b.end()}};
    case DType::kC64:
      return {"complex64", {b.begin(), b.end()}};
    case DType::kF16:
      for (size_t i = 0; i < n; ++i)
        push(F16ToF32(static_cast<uint16_t>(b[2 * i] | b[2 * i + 1] << 8)));
      return {"float32", out};
    case DType::kU8:
      for (size_t i = 0; i < n; ++i) push(int32_t{b[i]});
      return {"int32", out};
    case DType::kI8:
      for (size_t i = 0; i < n; ++i) push(int32_t{static_cast<int8_t>(b[i])});
      return {"int32", out};
    default:
      ADD_FAILURE() << "no expectation for " << DTypeName(t.info.dtype);
      return {};
  }
}

/// `t` (a tensor modelport wrote or read) holds what TF.js decoded for the weight of its name.
void ExpectAsTfjsDecoded(const TensorView& t, const std::map<std::string, Decoded>& decoded) {
  SCOPED_TRACE(t.info.name);
  ASSERT_TRUE(decoded.count(t.info.name));
  const Decoded& d = decoded.at(t.info.name);
  const auto [dtype, bytes] = ExpectedTfjs(t);
  EXPECT_EQ(d.dtype, dtype);
  EXPECT_EQ(d.shape, t.info.shape.dims());
  ASSERT_EQ(d.bytes.size(), bytes.size());
  if (t.info.dtype != DType::kF16) {
    EXPECT_TRUE(d.bytes == bytes);
    return;
  }
  // f16 NaNs widen to some float32 NaN; every other value must match bit for bit.
  size_t mismatches = 0;
  for (size_t k = 0; k < bytes.size(); k += 4) {
    float got, want;
    std::memcpy(&got, &d.bytes[k], 4);
    std::memcpy(&want, &bytes[k], 4);
    const bool same = std::isnan(want) ? std::isnan(got) : std::memcmp(&got, &want, 4) == 0;
    if (!same && mismatches++ < 5)
      ADD_FAILURE() << "element " << k / 4 << ": " << got << " vs " << want;
  }
  EXPECT_EQ(mismatches, 0u);
}

TEST(TfjsOracleTest, WhatModelportWritesTfjsDecodesExactly) {
  MP_SKIP_WITHOUT_TFJS();
  TempDir dir;
  Model model;
  // 1.1 M floats (4.4 MB) after a few small tensors: the 4 MiB cut falls inside it.
  ASSERT_TRUE(model.Add(PatternTensor("dense/bias", DType::kF32, {5}, 1)).ok());
  ASSERT_TRUE(model.Add(PatternTensor("emb/embeddings", DType::kF32, {1100, 1000}, 2)).ok());
  ASSERT_TRUE(model.Add(PatternTensor("steps", DType::kI32, {3, 7}, 3)).ok());
  ASSERT_TRUE(model.Add(PatternTensor("mask", DType::kBool, {9}, 4)).ok());
  // complex64 goes through JavaScript numbers (real and imaginary split, merged again): finite
  // values, whose bits survive that; float32 and int32 bytes are copied untouched.
  std::vector<uint8_t> z(24);
  const float parts[6] = {1.5f, -2.0f, 3.25e-3f, 7.0e12f, -0.0f, 1.0f / 3.0f};
  std::memcpy(z.data(), parts, 24);
  ASSERT_TRUE(model.Add(testing::BytesTensor("z", DType::kC64, {3}, z)).ok());
  ASSERT_TRUE(model.Add(PatternTensor("half", DType::kF16, {2, 6}, 6)).ok());
  ASSERT_TRUE(model.Add(PatternTensor("u8", DType::kU8, {11}, 7)).ok());
  ASSERT_TRUE(model.Add(PatternTensor("i8", DType::kI8, {13}, 8)).ok());
  ASSERT_TRUE(model.Add(PatternTensor("scalar", DType::kF32, {}, 9)).ok());
  const std::string out = dir.File("js");
  ASSERT_TRUE(tfjs::Write(model, out, {}).ok());
  ASSERT_TRUE(fs::exists(out + "/group1-shard2of2.bin"));

  WriteText(dir.File("spec.json"),
            nlohmann::json{{"decode", out + "/model.json"}, {"dump", dir.File("dump")}}.dump());
  const auto r = RunTfjs(dir.File("spec.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto decoded = ReadDump(dir.File("dump"));
  ASSERT_EQ(decoded.size(), model.tensors().size());
  for (size_t i = 0; i < model.tensors().size(); ++i) ExpectAsTfjsDecoded(*model.Load(i), decoded);
}

TEST(TfjsOracleTest, QuantizedWeightsReadAsTfjsDecodesThem) {
  MP_SKIP_WITHOUT_TFJS();
  TempDir dir;
  // Affine uint8/uint16 on float32 and int32 weights (the int32 ones hit Math.round's halves,
  // negative ones included, and Int32Array's wrap-around), every float16 bit pattern, and the
  // exact 8-bit forms; in two groups whose shards cut the weights at odd places.
  std::vector<uint8_t> g1, g2;
  for (int v = 0; v < 256; ++v) g1.push_back(static_cast<uint8_t>(v));  // q8: [256]
  for (int v = 0; v < 300; ++v) {                                       // q16: [300]
    const uint16_t q = static_cast<uint16_t>(v * 211 % 65536);
    g1.push_back(static_cast<uint8_t>(q));
    g1.push_back(static_cast<uint8_t>(q >> 8));
  }
  for (int v = 0; v < 64; ++v) g1.push_back(static_cast<uint8_t>(v * 3));  // r8: [64]
  for (uint32_t h = 0; h < 65536; ++h) {                                   // half: [65536]
    g2.push_back(static_cast<uint8_t>(h));
    g2.push_back(static_cast<uint8_t>(h >> 8));
  }
  for (int v = 0; v < 40; ++v) g2.push_back(static_cast<uint8_t>(v * 7));  // i8: [40]
  for (int v = 0; v < 50; ++v) {                                           // w16: [50]
    g2.push_back(static_cast<uint8_t>(v * 97));
    g2.push_back(static_cast<uint8_t>(0xff - v));
  }
  fs::create_directory(dir.File("q"));
  auto cut = [&dir](const std::vector<uint8_t>& bytes, const std::string& a, const std::string& b,
                    size_t at) {
    testing::WriteBytes(dir.File("q/" + a), {bytes.begin(), bytes.begin() + static_cast<long>(at)});
    testing::WriteBytes(dir.File("q/" + b), {bytes.begin() + static_cast<long>(at), bytes.end()});
  };
  cut(g1, "g1a.bin", "g1b.bin", 301);
  cut(g2, "g2a.bin", "g2b.bin", 65537);
  WriteText(dir.File("q/model.json"), R"({"format": "layers-model", "modelTopology": null,
    "weightsManifest": [
      {"paths": ["g1a.bin", "g1b.bin"], "weights": [
        {"name": "q8", "shape": [16, 16], "dtype": "float32",
         "quantization": {"dtype": "uint8", "scale": 0.013071895424836602, "min": -1.7000000476837158}},
        {"name": "q16", "shape": [300], "dtype": "int32",
         "quantization": {"dtype": "uint16", "scale": 0.5, "min": -3000.5}},
        {"name": "r8", "shape": [64], "dtype": "int32",
         "quantization": {"dtype": "uint8", "scale": 70000000.5, "min": -2.5}}]},
      {"paths": ["g2a.bin", "g2b.bin"], "weights": [
        {"name": "half", "shape": [256, 256], "dtype": "float32", "quantization": {"dtype": "float16"}},
        {"name": "i8", "shape": [40], "dtype": "int32",
         "quantization": {"dtype": "uint8", "scale": 1, "min": -128}},
        {"name": "w16", "shape": [5, 10], "dtype": "float32",
         "quantization": {"dtype": "uint16", "scale": 3.0517578125e-05, "min": -1}}]}]})");
  WriteText(
      dir.File("spec.json"),
      nlohmann::json{{"decode", dir.File("q/model.json")}, {"dump", dir.File("dump")}}.dump());
  const auto r = RunTfjs(dir.File("spec.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto decoded = ReadDump(dir.File("dump"));

  auto opened = OpenModel(dir.File("q"));
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  ASSERT_EQ((*opened)->tensors().size(), 6u);
  EXPECT_EQ((*opened)->tensors()[0].dtype, DType::kF32);
  EXPECT_EQ((*opened)->tensors()[1].dtype, DType::kI32);
  EXPECT_EQ((*opened)->tensors()[3].dtype, DType::kF16);
  EXPECT_EQ((*opened)->tensors()[4].dtype, DType::kI8);
  for (size_t i = 0; i < (*opened)->tensors().size(); ++i) {
    auto t = (*opened)->Load(i);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    ExpectAsTfjsDecoded(*t, decoded);
  }
  EXPECT_EQ((*opened)->metadata()["tfjs.quantization"].size(), 4u);
}

/// A small network TF.js builds, saves (shards of 256 bytes, so tensors span shards) and decodes
/// (tfjs_run.mjs spec), plus its prediction on a fixed input.
std::string SaveSpec(const TempDir& dir) {
  const nlohmann::json layers = nlohmann::json::parse(R"([
    {"class": "conv2d", "config": {"name": "conv1", "filters": 4, "kernelSize": 3,
                                   "inputShape": [6, 6, 2], "activation": "relu"}},
    {"class": "batchNormalization", "config": {"name": "bn1"}},
    {"class": "flatten", "config": {"name": "flat"}},
    {"class": "dense", "config": {"name": "fc1", "units": 6, "activation": "tanh"}},
    {"class": "reshape", "config": {"name": "seq", "targetShape": [3, 2]}},
    {"class": "lstm", "config": {"name": "lstm", "units": 5}},
    {"class": "dense", "config": {"name": "fc2", "units": 2}}
  ])");
  return nlohmann::json{{"layers", layers},
                        {"save", dir.File("saved")},
                        {"shardBytes", 256},
                        {"decode", dir.File("saved/model.json")},
                        {"dump", dir.File("dump")},
                        {"input", dir.File("x.npy")},
                        {"output", dir.File("y_saved.npy")}}
      .dump();
}

TEST(TfjsOracleTest, WhatTfjsSavesModelportReadsAndKeepsThroughSafetensors) {
  MP_SKIP_WITHOUT_TFJS();
  TempDir dir;
  // An input in [-1, 1].
  auto x = *Buffer::Allocate(2 * 6 * 6 * 2 * 4);
  for (size_t i = 0; i < 144; ++i) {
    const float v = static_cast<float>((i * 37) % 101) / 50.0f - 1.0f;
    std::memcpy(x->mutable_data() + 4 * i, &v, 4);
  }
  Model xs;
  ASSERT_TRUE(xs.Add(TensorView{*TensorInfo::Make("x", DType::kF32, {2, 6, 6, 2}), x}).ok());
  ASSERT_TRUE(numpy::Write(xs, dir.File("x.npy"), {}).ok());

  WriteText(dir.File("save.json"), SaveSpec(dir));
  auto r = RunTfjs(dir.File("save.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;

  // modelport reads what TF.js saved, value for value as TF.js's decoder gives them.
  const std::string saved = dir.File("saved/model.json");
  auto opened = OpenModel(dir.File("saved"));
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EXPECT_EQ((*opened)->format(), "tfjs");
  const auto decoded = ReadDump(dir.File("dump"));
  ASSERT_EQ((*opened)->tensors().size(), decoded.size());
  ASSERT_GE(decoded.size(), 13u);  // conv 2, bn 4, fc1 2, lstm 3, fc2 2
  for (size_t i = 0; i < (*opened)->tensors().size(); ++i) {
    const TensorInfo& info = (*opened)->tensors()[i];
    SCOPED_TRACE(info.name);
    ASSERT_TRUE(decoded.count(info.name));
    EXPECT_EQ(decoded.at(info.name).dtype, "float32");
    EXPECT_EQ(decoded.at(info.name).shape, info.shape.dims());
    auto t = (*opened)->Load(i);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    const std::span<const uint8_t> b = t->bytes();
    EXPECT_TRUE(std::vector<uint8_t>(b.begin(), b.end()) == decoded.at(info.name).bytes);
  }
  EXPECT_TRUE((*opened)->metadata()["tfjs.modelTopology"].is_object());
  EXPECT_EQ((*opened)->metadata()["tfjs.format"], "layers-model");

  // Through safetensors (metadata as strings) and back with the CLI; TF.js loads the result from
  // its preserved topology and predicts exactly what the saved model predicted.
  const std::string st = dir.File("w.safetensors");
  auto c = RunCli("convert '" + saved + "' '" + st + "'");
  ASSERT_EQ(c.exit_code, 0) << c.err;
  c = RunCli("convert '" + st + "' '" + dir.File("back/model.json") + "'");
  ASSERT_NE(c.exit_code, 0) << "the folder does not exist yet";
  fs::create_directory(dir.File("back"));
  c = RunCli("convert '" + st + "' '" + dir.File("back/model.json") + "'");
  ASSERT_EQ(c.exit_code, 0) << c.err;
  const nlohmann::json back = ReadJson(dir.File("back/model.json"));
  EXPECT_EQ(back["modelTopology"], ReadJson(saved)["modelTopology"]);
  EXPECT_EQ(back["format"], "layers-model");

  WriteText(dir.File("load.json"), nlohmann::json{{"load", dir.File("back/model.json")},
                                                  {"input", dir.File("x.npy")},
                                                  {"output", dir.File("y_back.npy")}}
                                       .dump());
  r = RunTfjs(dir.File("load.json"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ReadBytes(dir.File("y_back.npy")), ReadBytes(dir.File("y_saved.npy")));
  auto y = OpenModel(dir.File("y_back.npy"));
  ASSERT_TRUE(y.ok()) << y.status().ToString();
  EXPECT_EQ((*y)->tensors()[0].shape, (Shape{2, 2}));
}

}  // namespace
}  // namespace mp
