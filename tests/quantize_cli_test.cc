// `modelport quantize` / `dequantize` end to end on the golden tiny GPT-2 (transformers 5.17):
// the report, `validate --against` judging the result, dequantize restoring the layout, the
// errors (block types outside GGUF, an existing destination, ONNX from a non-ONNX model), and
// lineage when the source is a registry version.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "modelport/core/tensor.h"
#include "modelport/formats/format.h"
#include "test_util.h"

namespace mp {
namespace {

namespace fs = std::filesystem;
using testing::CommandResult;
using testing::RunCli;
using testing::TempDir;

std::string Gpt2() {
  return (testing::GoldenDir() / "transformers/tiny-gpt2-safetensors/model.safetensors").string();
}

TEST(QuantizeCli, Int8ReportValidateAndDequantize) {
  MP_SKIP_WITHOUT_GOLDEN();
  TempDir dir;
  const std::string out = dir.File("int8.safetensors");
  CommandResult r = RunCli("quantize '" + Gpt2() + "' '" + out + "' --scheme int8");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("transformer.wte.weight"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("f32 -> i8 (axis 0)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("kept: rank 1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("int8: 10 of 28 tensors quantized"), std::string::npos) << r.out;

  auto model = OpenModel(out).value();
  EXPECT_EQ(model->tensors().size(), 38u);  // 28 + 10 scales
  const auto w = model->Find("transformer.wte.weight");
  const auto s = model->Find("transformer.wte.weight_scale");
  ASSERT_TRUE(w && s);
  EXPECT_EQ(model->tensors()[*w].dtype, DType::kI8);
  EXPECT_EQ(model->tensors()[*s].shape, (Shape{256, 1}));
  // safetensors metadata values are strings: the config is JSON text.
  const Json config = Json::parse(model->metadata().at("quantization_config").get<std::string>());
  EXPECT_EQ(config.at("quant_method"), "compressed-tensors");
  EXPECT_EQ(config.at("format"), "int-quantized");

  // validate judges the pairs against the float original by SNR.
  r = RunCli("validate '" + out + "' --against '" + Gpt2() + "'");
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("28 of 28 tensors pass"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("i8 (SNR >= 30 dB)"), std::string::npos) << r.out;

  // dequantize: the original names, dtypes and shapes; kept tensors bit-identical, quantized
  // ones within half a step (diff reports them as different, validate as passing).
  const std::string back = dir.File("back.safetensors");
  r = RunCli("dequantize '" + out + "' '" + back + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto restored = OpenModel(back).value();
  auto original = OpenModel(Gpt2()).value();
  ASSERT_EQ(restored->tensors().size(), original->tensors().size());
  for (size_t i = 0; i < original->tensors().size(); ++i) {
    const TensorInfo& a = original->tensors()[i];
    const auto j = restored->Find(a.name);
    ASSERT_TRUE(j) << a.name;
    EXPECT_EQ(restored->tensors()[*j].dtype, DType::kF32) << a.name;
    EXPECT_EQ(restored->tensors()[*j].shape, a.shape) << a.name;
  }
  EXPECT_FALSE(restored->metadata().contains("quantization_config"));
  r = RunCli("diff '" + Gpt2() + "' '" + back + "'");
  EXPECT_NE(r.out.find("18 bit-equal"), std::string::npos) << r.out;

  // --json: the report.
  r = RunCli("quantize '" + Gpt2() + "' '" + dir.File("pt.safetensors") +
             "' --scheme int8 --per-tensor --exclude '*.wte.*' --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Json doc = Json::parse(r.out);
  EXPECT_EQ(doc.at("scheme"), "int8");
  EXPECT_EQ(doc.at("quantized"), 9);
  EXPECT_EQ(doc.at("format"), "safetensors");
  EXPECT_LT(doc.at("ratio").get<double>(), 0.5);
  EXPECT_GT(doc.at("error").at("cosine").get<double>(), 0.999);
  bool saw_wte = false;
  for (const Json& t : doc.at("tensors")) {
    if (t.at("name") == "transformer.wte.weight") {
      saw_wte = true;
      EXPECT_EQ(t.at("quantized"), false);
      EXPECT_EQ(t.at("reason"), "excluded by '*.wte.*'");
    }
    if (t.at("quantized") == true) {
      EXPECT_TRUE(t.at("axis").is_null());
      EXPECT_GT(t.at("error").at("snr_db").get<double>(), 30);
    }
  }
  EXPECT_TRUE(saw_wte);
}

TEST(QuantizeCli, TamperedScaleFailsValidation) {
  MP_SKIP_WITHOUT_GOLDEN();
  TempDir dir;
  const std::string out = dir.File("int8.safetensors");
  ASSERT_EQ(RunCli("quantize '" + Gpt2() + "' '" + out + "' --scheme int8").exit_code, 0);
  // The first scale of one weight made 64 times larger, found through the safetensors header.
  std::vector<uint8_t> bytes = testing::ReadBytes(out);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  const Json header = Json::parse(std::string(bytes.begin() + 8, bytes.begin() + 8 + header_len));
  const size_t at =
      8 + header_len +
      header.at("transformer.h.0.attn.c_attn.weight_scale").at("data_offsets")[0].get<size_t>();
  float scale;
  std::memcpy(&scale, bytes.data() + at, 4);
  scale *= 64.0f;
  std::memcpy(bytes.data() + at, &scale, 4);
  testing::WriteBytes(out, bytes);
  const CommandResult r = RunCli("validate '" + out + "' --against '" + Gpt2() + "'");
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.out.find("FAIL  fidelity   tensor 'transformer.h.0.attn.c_attn.weight': SNR"),
            std::string::npos)
      << r.out;
}

TEST(QuantizeCli, GgufBlocksAndRefusals) {
  MP_SKIP_WITHOUT_GOLDEN();
  TempDir dir;
  CommandResult r =
      RunCli("quantize '" + Gpt2() + "' '" + dir.File("m.gguf") + "' --scheme q4_0 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out).at("format"), "gguf");
  auto gguf = OpenModel(dir.File("m.gguf")).value();
  EXPECT_EQ(gguf->metadata().at("general.file_type"), 2);
  EXPECT_EQ(gguf->tensors()[*gguf->Find("transformer.wte.weight")].dtype, DType::kQ4_0);
  r = RunCli("validate '" + dir.File("m.gguf") + "' --against '" + Gpt2() + "'");
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  r = RunCli("dequantize '" + dir.File("m.gguf") + "' '" + dir.File("back.safetensors") + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(OpenModel(dir.File("back.safetensors")).value()->tensors()[0].dtype, DType::kF32);

  // Block types only go to GGUF: usage error, nothing written.
  r = RunCli("quantize '" + Gpt2() + "' '" + dir.File("x.safetensors") + "' --scheme q8_0");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("only GGUF holds"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir.File("x.safetensors")));
  // An existing destination is kept unless --force.
  r = RunCli("quantize '" + Gpt2() + "' '" + dir.File("m.gguf") + "' --scheme q8_0");
  EXPECT_EQ(r.exit_code, 6);
  EXPECT_NE(r.err.find("already exists"), std::string::npos) << r.err;
  EXPECT_EQ(OpenModel(dir.File("m.gguf")).value()->metadata().at("general.file_type"), 2);
  EXPECT_EQ(RunCli("quantize '" + Gpt2() + "' '" + dir.File("m.gguf") + "' --scheme q8_0 --force")
                .exit_code,
            0);
  // ONNX is written from an ONNX model only; an unknown scheme is a usage error.
  r = RunCli("quantize '" + Gpt2() + "' '" + dir.File("m.onnx") + "' --scheme int8");
  EXPECT_EQ(r.exit_code, 5);
  EXPECT_FALSE(fs::exists(dir.File("m.onnx")));
  r = RunCli("quantize '" + Gpt2() + "' '" + dir.File("y.safetensors") + "' --scheme int4");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown quantization scheme 'int4'"), std::string::npos) << r.err;
}

TEST(QuantizeCli, RegistrySourceRecordsLineage) {
  MP_SKIP_WITHOUT_GOLDEN();
  TempDir dir;
  const std::string where = " --registry '" + dir.File("reg") + "'";
  ASSERT_EQ(RunCli("registry init" + where).exit_code, 0);
  ASSERT_EQ(RunCli("registry push gpt2 '" + Gpt2() + "'" + where).exit_code, 0);
  CommandResult r = RunCli("quantize gpt2@1 '" + dir.File("q8.gguf") +
                           "' --scheme q8_0 --push gpt2-q8 --json" + where);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out).at("pushed"), "gpt2-q8@1");
  r = RunCli("registry show gpt2-q8@1 --json" + where);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Json v = Json::parse(r.out);
  EXPECT_EQ(v.at("parent").at("model"), "gpt2");
  EXPECT_EQ(v.at("parent").at("version"), 1);
  EXPECT_EQ(v.at("parent").at("relation"), "quantized");
  EXPECT_NE(v.at("parent").at("command").get<std::string>().find("--scheme q8_0"),
            std::string::npos);
  EXPECT_EQ(v.at("params").at("scheme"), "q8_0");
  // A version pushed from ONNX keeps its graph: quantized into a QDQ ONNX model, and the
  // scratch export made beside DST is gone afterwards.
  const std::string mlp = (testing::SourceDir() / "tests/data/mlp-onnx/model.onnx").string();
  ASSERT_EQ(RunCli("registry push mlp '" + mlp + "'" + where).exit_code, 0);
  fs::create_directory(dir.File("out"));
  r = RunCli("quantize mlp@1 '" + dir.File("out/mlp-int8.onnx") +
             "' --scheme int8 --min-size 64 --push mlp-int8" + where);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("int8: 2 of 6 tensors quantized"), std::string::npos) << r.out;
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir.File("out"))) left.push_back(e.path().filename());
  EXPECT_EQ(left, std::vector<std::string>{"mlp-int8.onnx"});
  r = RunCli("registry show mlp-int8@1 --json" + where);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out).at("parent").at("model"), "mlp");
  // A reference that resolves to nothing: not found.
  r = RunCli("quantize gpt2@7 '" + dir.File("x.gguf") + "' --scheme q8_0" + where);
  EXPECT_EQ(r.exit_code, 3) << r.err;
}

}  // namespace
}  // namespace mp
