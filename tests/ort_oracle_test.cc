// onnxruntime (npm onnxruntime-node, CPU, driven by tests/node/ort_run.mjs) as an independent
// runtime for ONNX models: here it must reproduce the golden MLP's torch output from the golden
// files (inline and external-data weights), which checks the oracle itself before other tests
// use RunOrt() on models modelport writes. Arrays are compared with numpy (/usr/bin/python3).
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "modelport/core/tensor.h"
#include "test_util.h"

namespace mp {
namespace {

namespace fs = std::filesystem;
using testing::CommandResult;
using testing::TempDir;

#define MP_SKIP_WITHOUT_NUMPY()     \
  if (!testing::PythonHas("numpy")) \
  GTEST_SKIP() << "/usr/bin/python3 cannot import numpy (apt-get install python3-numpy)"

/// numpy's verdict on `got` against `want`: same dtype and shape, allclose with tight
/// tolerances; prints "max_abs_diff=D" (and exits 1 on a mismatch, saying why).
CommandResult NumpyCompare(const std::string& got, const std::string& want) {
  return testing::Run(
      "/usr/bin/python3 -c \"import numpy as np,sys; a=np.load(sys.argv[1]); "
      "b=np.load(sys.argv[2]);"
      " same=a.dtype==b.dtype and a.shape==b.shape;"
      " d=float(np.max(np.abs(a.astype(np.float64)-b.astype(np.float64)))) if same else -1;"
      " print('max_abs_diff=%g'%d, a.dtype, a.shape, 'vs', b.dtype, b.shape);"
      " sys.exit(0 if same and np.allclose(a,b,rtol=1e-6,atol=1e-6) else 1)\" '" +
      got + "' '" + want + "'");
}

TEST(OrtOracle, GoldenMlpMatchesTorchOutput) {
  MP_SKIP_WITHOUT_GOLDEN();
  MP_SKIP_WITHOUT_ORT();
  MP_SKIP_WITHOUT_NUMPY();
  const fs::path dir = testing::GoldenDir() / "onnx";
  const std::string x = (dir / "mlp_opset17.x.npy").string();
  const std::string y = (dir / "mlp_opset17.y.npy").string();
  for (const char* name : {"mlp_opset17.onnx", "mlp_opset17_external.onnx"}) {
    SCOPED_TRACE(name);
    TempDir out;
    const CommandResult r = testing::RunOrt((dir / name).string(), out.path().string(), {"x=" + x});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const Json doc = Json::parse(r.out, nullptr, false);
    ASSERT_FALSE(doc.is_discarded()) << r.out;
    ASSERT_EQ(doc.at("outputs").size(), 1u) << r.out;
    const Json& y_out = doc["outputs"][0];
    EXPECT_EQ(y_out.at("name"), "y");
    EXPECT_EQ(y_out.at("dtype"), "float32");
    EXPECT_EQ(y_out.at("shape"), Json::parse("[3, 4]"));
    EXPECT_EQ(y_out.at("file"), out.File("y.npy"));
    const CommandResult cmp = NumpyCompare(out.File("y.npy"), y);
    EXPECT_EQ(cmp.exit_code, 0) << cmp.out << cmp.err;
  }
}

TEST(OrtOracle, MissingExternalDataIsOneLineError) {
  MP_SKIP_WITHOUT_GOLDEN();
  MP_SKIP_WITHOUT_ORT();
  TempDir tmp;
  const fs::path dir = testing::GoldenDir() / "onnx";
  // The model without its .onnx.data beside it: onnxruntime must not find the weights elsewhere.
  fs::copy_file(dir / "mlp_opset17_external.onnx", tmp.path() / "m.onnx");
  const CommandResult r =
      testing::RunOrt(tmp.File("m.onnx"), tmp.File("out"), {(dir / "mlp_opset17.x.npy").string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_TRUE(r.err.starts_with("ort_run: ")) << r.err;
  EXPECT_NE(r.err.find(tmp.File("mlp_opset17_external.onnx.data")), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << r.err;
}

}  // namespace
}  // namespace mp
