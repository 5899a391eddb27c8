#include "modelport/formats/torch/pickle.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "modelport/formats/zip/zip.h"
#include "test_util.h"

namespace mp::torch {
namespace {

using ::mp::testing::PythonHas;
using ::mp::testing::ReadBytes;
using ::mp::testing::Run;
using ::mp::testing::TempDir;

// Runs `script` with Debian's python; the script gets the output path as sys.argv[1] and the
// test gets that file's bytes back. Stdout is returned in `out` when asked for.
std::vector<uint8_t> RunPython(const TempDir& dir, const std::string& script,
                               std::string* out = nullptr) {
  const std::string py = dir.File("gen.py");
  const std::string result = dir.File("out.bin");
  std::ofstream(py) << script;
  auto r =
      Run("cd '" + dir.path().string() + "' && /usr/bin/python3 '" + py + "' '" + result + "'");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  if (out != nullptr) *out = r.out;
  return ReadBytes(result);
}

// data.pkl of a torch zip checkpoint, read through modelport's own zip reader.
std::vector<uint8_t> DataPkl(const std::string& path) {
  auto file = InputFile::Open(path);
  EXPECT_TRUE(file.has_value());
  auto reader = zip::Reader::Open(*file);
  EXPECT_TRUE(reader.has_value()) << reader.status().ToString();
  for (size_t i = 0; i < (*reader)->entries().size(); ++i) {
    const std::string& name = (*reader)->entries()[i].name;
    if (name.size() >= 9 && name.substr(name.size() - 9) == "/data.pkl") {
      auto buf = (*reader)->Read(i);
      EXPECT_TRUE(buf.has_value());
      return std::vector<uint8_t>((*buf)->data(), (*buf)->data() + (*buf)->size());
    }
  }
  ADD_FAILURE() << "no data.pkl in " << path;
  return {};
}

std::vector<uint8_t> Bytes(std::string_view s) { return std::vector<uint8_t>(s.begin(), s.end()); }

const Value* Tuple(const Value* v, size_t n) {
  EXPECT_EQ(v->kind, ValueKind::kTuple);
  EXPECT_EQ(v->items.size(), n);
  return v;
}

TEST(PickleTest, PlainContainersEveryProtocol) {
  if (!PythonHas("")) GTEST_SKIP() << "/usr/bin/python3 is absent";
  for (int proto = 2; proto <= 5; ++proto) {
    SCOPED_TRACE("protocol " + std::to_string(proto));
    TempDir dir;
    const std::string script = R"(
import pickle, sys
shared = [7, 8]
obj = {'none': None, 't': True, 'f': False, 'ints': [0, 1, -1, 255, 256, 65535, 65536, -2**31,
       2**31, 2**40, -2**63, 2**63 - 1], 'float': 1.5, 'neg': -0.25, 'str': 'h\u00e9llo \u2603',
       'long_str': 'x' * 300, 'bytes': b'\x00\xff', 'long_bytes': b'y' * 300, 'e': (), 't1': (1,),
       't2': (1, 2), 't3': (1, 2, 3), 't4': (1, 2, 3, 4), 'd': {1: 'a', (2, 'b'): 'c'},
       'shared1': shared, 'shared2': shared, 'nested': [[[]]]}
if )" + std::to_string(proto) + R"( >= 4:
    obj['set'] = {3}
    obj['frozen'] = frozenset([4])
if )" + std::to_string(proto) + R"( >= 5:
    obj['bytearray'] = bytearray(b'ab')
open(sys.argv[1], 'wb').write(pickle.dumps(obj, protocol=)" +
                               std::to_string(proto) + R"())
)";
    auto bytes = RunPython(dir, script);
    auto r = Unpickle(bytes);
    ASSERT_TRUE(r.has_value()) << r.status().ToString();
    EXPECT_EQ(r->end_offset, bytes.size());
    const Value* root = r->root;
    ASSERT_EQ(root->kind, ValueKind::kDict);
    EXPECT_EQ(root->Get("none")->kind, ValueKind::kNone);
    EXPECT_TRUE(root->Get("t")->b);
    EXPECT_FALSE(root->Get("f")->b);
    const std::vector<int64_t> ints = {
        0, 1, -1, 255, 256, 65535, 65536, -(1LL << 31), 1LL << 31, 1LL << 40, INT64_MIN, INT64_MAX};
    const Value* iv = root->Get("ints");
    ASSERT_EQ(iv->kind, ValueKind::kList);
    ASSERT_EQ(iv->items.size(), ints.size());
    for (size_t k = 0; k < ints.size(); ++k) EXPECT_EQ(iv->items[k]->i, ints[k]) << k;
    EXPECT_EQ(root->Get("float")->f, 1.5);
    EXPECT_EQ(root->Get("neg")->f, -0.25);
    EXPECT_EQ(root->Get("str")->kind, ValueKind::kStr);
    EXPECT_EQ(root->Get("str")->text, "h\xc3\xa9llo \xe2\x98\x83");
    EXPECT_EQ(root->Get("long_str")->text, std::string(300, 'x'));
    EXPECT_EQ(root->Get("bytes")->kind, ValueKind::kBytes);
    EXPECT_EQ(root->Get("bytes")->text, std::string("\x00\xff", 2));
    EXPECT_EQ(root->Get("long_bytes")->text, std::string(300, 'y'));
    Tuple(root->Get("e"), 0);
    EXPECT_EQ(Tuple(root->Get("t1"), 1)->items[0]->i, 1);
    EXPECT_EQ(Tuple(root->Get("t2"), 2)->items[1]->i, 2);
    EXPECT_EQ(Tuple(root->Get("t3"), 3)->items[2]->i, 3);
    EXPECT_EQ(Tuple(root->Get("t4"), 4)->items[3]->i, 4);
    const Value* d = root->Get("d");
    ASSERT_EQ(d->entries.size(), 2u);
    EXPECT_EQ(d->entries[0].first->i, 1);
    EXPECT_EQ(d->entries[0].second->text, "a");
    EXPECT_EQ(d->entries[1].first->items[1]->text, "b");
    EXPECT_EQ(d->entries[1].second->text, "c");
    // The memo makes one list, referenced twice.
    EXPECT_EQ(root->Get("shared1"), root->Get("shared2"));
    EXPECT_EQ(root->Get("shared1")->items[1]->i, 8);
    EXPECT_EQ(root->Get("nested")->items[0]->items[0]->kind, ValueKind::kList);
    if (proto >= 4) {
      EXPECT_EQ(root->Get("set")->kind, ValueKind::kSet);
      EXPECT_EQ(root->Get("set")->items[0]->i, 3);
      EXPECT_EQ(root->Get("frozen")->kind, ValueKind::kSet);
    }
    if (proto >= 5) {
      EXPECT_EQ(root->Get("bytearray")->text, "ab");
    }

    auto scan = ScanPickle(bytes);
    ASSERT_TRUE(scan.has_value());
    EXPECT_TRUE(scan->stream_status.ok());
    EXPECT_TRUE(scan->safe());
  }
}

TEST(PickleTest, TextOpcodesOfProtocol0) {
  if (!PythonHas("")) GTEST_SKIP() << "/usr/bin/python3 is absent";
  TempDir dir;
  auto bytes = RunPython(dir, R"(
import pickle, sys
open(sys.argv[1], 'wb').write(pickle.dumps({'a': [1, -5, 2**70 // 2**10, 2.5, 'x\u00e9\u2603', None, True],
                                           'b': ('q', 'q')}, protocol=0))
)");
  auto r = Unpickle(bytes);
  ASSERT_TRUE(r.has_value()) << r.status().ToString();
  const Value* a = r->root->Get("a");
  ASSERT_EQ(a->items.size(), 7u);
  EXPECT_EQ(a->items[0]->i, 1);
  EXPECT_EQ(a->items[1]->i, -5);
  EXPECT_EQ(a->items[2]->i, int64_t{1} << 60);
  EXPECT_EQ(a->items[3]->f, 2.5);
  EXPECT_EQ(a->items[4]->text, "x\xc3\xa9\xe2\x98\x83");
  EXPECT_EQ(a->items[5]->kind, ValueKind::kNone);
  EXPECT_TRUE(a->items[6]->b);
  EXPECT_EQ(r->root->Get("b")->items[1]->text, "q");

  // Python 2 STRING with escapes.
  auto s = Unpickle(Bytes("S'ab\\x41\\n'\n."));
  ASSERT_TRUE(s.has_value()) << s.status().ToString();
  EXPECT_EQ(s->root->text, "abA\n");

  // UNICODE (raw-unicode-escape) as CPython decodes it: \u is an escape only after an odd run
  // of backslashes (values from pickle.loads).
  for (const auto& [line, want] :
       std::vector<std::pair<std::string, std::string>>{{"V\\\\u0041\n.", "\\\\u0041"},
                                                        {"V\\\\\\u0041\n.", "\\\\A"},
                                                        {"V\\x\\u00e9\n.", "\\x\xc3\xa9"}}) {
    auto u = Unpickle(Bytes(line));
    ASSERT_TRUE(u.has_value()) << u.status().ToString();
    EXPECT_EQ(u->root->text, want) << line;
  }
}

TEST(PickleTest, Protocol2BytesUseCodecsEncodeAndSetsAreRefused) {
  if (!PythonHas("")) GTEST_SKIP() << "/usr/bin/python3 is absent";
  TempDir dir;
  auto bytes = RunPython(dir, R"(
import pickle, sys
open(sys.argv[1], 'wb').write(pickle.dumps([b'\x00\xe9A', b''], protocol=2))
)");
  auto r = Unpickle(bytes);
  ASSERT_TRUE(r.has_value()) << r.status().ToString();
  EXPECT_EQ(r->root->items[0]->kind, ValueKind::kBytes);
  EXPECT_EQ(r->root->items[0]->text, std::string("\x00\xe9"
                                                 "A",
                                                 3));
  EXPECT_EQ(r->root->items[1]->kind, ValueKind::kBytes);

  auto set = RunPython(dir, R"(
import pickle, sys
open(sys.argv[1], 'wb').write(pickle.dumps({1, 2}, protocol=2))
)");
  auto s = Unpickle(set);
  ASSERT_FALSE(s.has_value());
  EXPECT_EQ(s.error().code(), StatusCode::kUnsafe);
  EXPECT_EQ(s.error().message(), "pickle imports '__builtin__.set', which is not allow-listed");
}

struct ExpectedTensor {
  std::string dtype;
  std::vector<int64_t> size, stride;
  int64_t offset = 0;
  std::string key;
  bool requires_grad = false;
  bool parameter = false;
};

const std::map<std::string, DType>& TorchDTypes() {
  static const std::map<std::string, DType> m = {
      {"torch.float32", DType::kF32},   {"torch.float16", DType::kF16},
      {"torch.bfloat16", DType::kBF16}, {"torch.float64", DType::kF64},
      {"torch.int64", DType::kI64},     {"torch.int32", DType::kI32},
      {"torch.int16", DType::kI16},     {"torch.int8", DType::kI8},
      {"torch.uint8", DType::kU8},      {"torch.bool", DType::kBool},
      {"torch.complex64", DType::kC64}, {"torch.float8_e4m3fn", DType::kF8E4M3}};
  return m;
}

TEST(PickleTest, TorchSaveStateDictMatchesTorch) {
  if (!PythonHas("torch")) GTEST_SKIP() << "/usr/bin/python3 lacks torch";
  TempDir dir;
  std::string listing;
  // torch writes the checkpoint and lists, per tensor, what modelport must find.
  RunPython(dir, R"(
import sys, torch, zipfile
from collections import OrderedDict
sd = OrderedDict()
for name, dt in [('f32', torch.float32), ('f16', torch.float16), ('bf16', torch.bfloat16),
                 ('f64', torch.float64), ('i64', torch.int64), ('i32', torch.int32),
                 ('i16', torch.int16), ('i8', torch.int8), ('u8', torch.uint8),
                 ('bool', torch.bool), ('c64', torch.complex64)]:
    sd[name] = torch.arange(6).reshape(2, 3).to(dt)
base = torch.arange(20.).reshape(4, 5)
sd['view'] = base[1:, 1::2]
w = torch.randn(3, 2)
sd['tied_a'] = w
sd['tied_b'] = w
sd['tied_t'] = w.t()
sd['param'] = torch.nn.Parameter(torch.ones(2))
sd['scalar'] = torch.tensor(3.0)
torch.save(sd, sys.argv[1])
keys = {}
for name, t in sd.items():
    key = keys.setdefault(t.storage().data_ptr(), str(len(keys)))
    print(name, t.dtype, ','.join(map(str, t.shape)) or '-', ','.join(map(str, t.stride())) or '-',
          t.storage_offset(), key, int(t.requires_grad), int(isinstance(t, torch.nn.Parameter)))
)",
            &listing);
  auto bytes = DataPkl(dir.File("out.bin"));
  auto r = Unpickle(bytes);
  ASSERT_TRUE(r.has_value()) << r.status().ToString();
  const Value* root = r->root;
  ASSERT_EQ(root->kind, ValueKind::kDict);
  EXPECT_TRUE(root->ordered_dict);

  std::istringstream lines(listing);
  std::string name, dtype, size, stride, key;
  int64_t offset;
  int rg, param;
  size_t index = 0;
  // modelport's storage keys are torch's; map them to torch's data_ptr groups.
  std::map<std::string, std::string> key_of_group;
  while (lines >> name >> dtype >> size >> stride >> offset >> key >> rg >> param) {
    SCOPED_TRACE(name);
    ASSERT_LT(index, root->entries.size());
    EXPECT_EQ(root->entries[index].first->text, name);
    const Value* v = root->entries[index].second;
    ++index;
    EXPECT_EQ(v->kind, param ? ValueKind::kParameter : ValueKind::kTensor);
    ASSERT_NE(v->tensor, nullptr);
    const TensorRef& t = *v->tensor;
    EXPECT_EQ(t.dtype, TorchDTypes().at(dtype));
    auto csv = [](const std::vector<int64_t>& xs) {
      std::string s;
      for (int64_t x : xs) s += (s.empty() ? "" : ",") + std::to_string(x);
      return s.empty() ? std::string("-") : s;
    };
    EXPECT_EQ(csv(t.size), size);
    EXPECT_EQ(csv(t.stride), stride);
    EXPECT_EQ(t.storage_offset, offset);
    EXPECT_EQ(t.requires_grad, rg == 1);
    EXPECT_EQ(t.storage->dtype, t.dtype);
    EXPECT_EQ(t.storage->location, "cpu");
    auto [it, fresh] = key_of_group.emplace(key, t.storage->key);
    EXPECT_EQ(it->second, t.storage->key) << "tensors sharing a torch storage share a key";
    if (name == "tied_b") {
      EXPECT_EQ(root->Get("tied_a")->tensor->storage, t.storage);
    }
    if (name == "view") {
      EXPECT_EQ(t.storage->numel, 20);
    }
  }
  EXPECT_EQ(index, root->entries.size());
  EXPECT_EQ(index, 17u);
  // Distinct torch storages get distinct keys.
  std::set<std::string> keys;
  for (const auto& [g, k] : key_of_group) keys.insert(k);
  EXPECT_EQ(keys.size(), key_of_group.size());

  auto scan = ScanPickle(bytes);
  ASSERT_TRUE(scan.has_value());
  EXPECT_TRUE(scan->safe());
  EXPECT_TRUE(scan->stream_status.ok());
  bool saw_rebuild = false;
  for (const auto& c : scan->imports)
    saw_rebuild |= c.callable == "torch._utils._rebuild_tensor_v2";
  EXPECT_TRUE(saw_rebuild);
}

TEST(PickleTest, NestedCheckpointWithModuleStateDictMetadata) {
  if (!PythonHas("torch")) GTEST_SKIP() << "/usr/bin/python3 lacks torch";
  TempDir dir;
  RunPython(dir, R"(
import sys, torch
m = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
torch.save({'state_dict': m.state_dict(), 'epoch': 3, 'config': {'lr': 0.1, 'name': 'x'},
            'steps': [1, 2]}, sys.argv[1])
)");
  auto r = Unpickle(DataPkl(dir.File("out.bin")));
  ASSERT_TRUE(r.has_value()) << r.status().ToString();
  EXPECT_EQ(r->root->Get("epoch")->i, 3);
  EXPECT_EQ(r->root->Get("config")->Get("lr")->f, 0.1);
  const Value* sd = r->root->Get("state_dict");
  ASSERT_NE(sd, nullptr);
  ASSERT_EQ(sd->entries.size(), 4u);
  EXPECT_EQ(sd->entries[0].first->text, "0.weight");
  EXPECT_EQ(sd->entries[0].second->tensor->size, (std::vector<int64_t>{2, 3}));
  // state_dict() carries `_metadata` (module versions) as OrderedDict state.
  ASSERT_NE(sd->attributes, nullptr);
  EXPECT_NE(sd->attributes->Get("_metadata"), nullptr);
}

TEST(PickleTest, GoldenTorch211CheckpointWithFloat8) {
  MP_SKIP_WITHOUT_GOLDEN();
  const auto path = ::mp::testing::GoldenDir() / "torch" / "current_torch_state_dict.pt";
  auto r = Unpickle(DataPkl(path.string()));
  ASSERT_TRUE(r.has_value()) << r.status().ToString();
  std::ifstream in(::mp::testing::GoldenDir() / "torch" / "current_torch_state_dict.expected.json");
  const auto expected = nlohmann::json::parse(in, nullptr, false);
  ASSERT_FALSE(expected.is_discarded());
  ASSERT_EQ(r->root->entries.size(), expected.size());
  size_t i = 0;
  for (const auto& [name, e] : expected.items()) {
    SCOPED_TRACE(name);
    const Value* v = r->root->Get(name);
    ASSERT_NE(v, nullptr);
    ASSERT_NE(v->tensor, nullptr);
    EXPECT_EQ(v->tensor->dtype, TorchDTypes().at(e["dtype"].get<std::string>()));
    EXPECT_EQ(v->tensor->size, e["shape"].get<std::vector<int64_t>>());
    ++i;
  }
  EXPECT_EQ(r->root->Get("f8")->tensor->storage->storage_class, "torch.storage.UntypedStorage");
  EXPECT_EQ(r->root->Get("tied")->tensor->storage, r->root->Get("w")->tensor->storage);
}

// Builds a malicious pickle whose __reduce__ calls `func` with `args` (Python source).
std::vector<uint8_t> Payload(const TempDir& dir, const std::string& imports,
                             const std::string& func, const std::string& args, int proto = 2) {
  return RunPython(dir, "import pickle, sys\n" + imports + R"(
class P:
    def __reduce__(self):
        return ()" + func + ", " +
                            args + R"()
open(sys.argv[1], 'wb').write(pickle.dumps(P(), protocol=)" +
                            std::to_string(proto) + "))\n");
}

TEST(PickleTest, MaliciousGlobalsAreRefusedByName) {
  if (!PythonHas("")) GTEST_SKIP() << "/usr/bin/python3 is absent";
  TempDir dir;
  const std::string marker = dir.File("PWNED");
  const std::string touch = "('touch " + marker + "',)";
  struct Case {
    std::string imports, func, args, global;
  };
  const std::vector<Case> cases = {
      {"import os", "os.system", touch, "posix.system"},
      {"import posix", "posix.system", touch, "posix.system"},
      {"", "eval", "(\"__import__('os').system('touch " + marker + "')\",)", "builtins.eval"},
      {"", "exec", "(\"import os; os.system('touch " + marker + "')\",)", "builtins.exec"},
      {"", "getattr", "('x', 'upper')", "builtins.getattr"},
      {"", "__import__", "('os',)", "builtins.__import__"},
      {"import pkgutil", "pkgutil.resolve_name", "('os:system',)", "pkgutil.resolve_name"},
      {"import importlib", "importlib.import_module", "('os',)", "importlib.import_module"},
      {"import marshal", "marshal.loads", "(b'',)", "marshal.loads"},
  };
  for (const Case& c : cases) {
    for (int proto : {2, 4}) {
      SCOPED_TRACE(c.func + " protocol " + std::to_string(proto));
      // Protocol 2 writes Python 2 module names (fix_imports); the message names what is there.
      std::string global = c.global;
      if (proto < 3 && global.rfind("builtins.", 0) == 0) global = "__builtin__" + global.substr(8);
      auto bytes = Payload(dir, c.imports, c.func, c.args, proto);
      auto r = Unpickle(bytes);
      ASSERT_FALSE(r.has_value());
      EXPECT_EQ(r.error().code(), StatusCode::kUnsafe);
      EXPECT_EQ(r.error().message(), "pickle imports '" + global + "', which is not allow-listed");
      auto scan = ScanPickle(bytes);
      ASSERT_TRUE(scan.has_value());
      EXPECT_FALSE(scan->safe());
      auto named = [&](const PickleCall& p) { return p.callable == global; };
      auto import = std::find_if(scan->imports.begin(), scan->imports.end(), named);
      ASSERT_NE(import, scan->imports.end());
      EXPECT_FALSE(import->allowed);
      auto call = std::find_if(scan->calls.begin(), scan->calls.end(), named);
      ASSERT_NE(call, scan->calls.end());
      EXPECT_EQ(call->opcode, "REDUCE");
      EXPECT_FALSE(call->allowed);
    }
  }
  // Hand-made: the literal os.system global.
  auto os = Unpickle(Bytes("cos\nsystem\n(S'touch " + marker + "'\ntR."));
  ASSERT_FALSE(os.has_value());
  EXPECT_EQ(os.error().code(), StatusCode::kUnsafe);
  EXPECT_EQ(os.error().message(), "pickle imports 'os.system', which is not allow-listed");
  EXPECT_FALSE(std::filesystem::exists(marker));
}

TEST(PickleTest, StackGlobalWithNamesFromTheMemoIsStillChecked) {
  // PROTO 4; 'os' MEMOIZE; 'system' MEMOIZE; POP POP; BINGET 0 BINGET 1 STACK_GLOBAL;
  // 'id' TUPLE1 REDUCE STOP.
  const std::string p = std::string(
      "\x80\x04\x8c\x02os\x94\x8c\x06system\x94"
      "00h\x00h\x01\x93\x8c\x02id\x85R.",
      30);
  auto r = Unpickle(Bytes(p));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kUnsafe);
  EXPECT_EQ(r.error().message(), "pickle imports 'os.system', which is not allow-listed");
  auto scan = ScanPickle(Bytes(p));
  ASSERT_TRUE(scan.has_value());
  ASSERT_EQ(scan->imports.size(), 1u);
  EXPECT_EQ(scan->imports[0].opcode, "STACK_GLOBAL");
  EXPECT_EQ(scan->imports[0].callable, "os.system");
  EXPECT_TRUE(scan->stream_status.ok());

  // Names that are not strings (a list from the memo) are refused, not stringified.
  auto odd = Unpickle(Bytes(std::string("\x80\x04]\x94]\x93.", 7)));
  ASSERT_FALSE(odd.has_value());
  EXPECT_EQ(odd.error().code(), StatusCode::kUnsafe);
}

TEST(PickleTest, ScanListsEveryUnsafeGlobalAndSurvivesAMissingStop) {
  if (!PythonHas("")) GTEST_SKIP() << "/usr/bin/python3 is absent";
  TempDir dir;
  const std::string marker = dir.File("PWNED");
  auto bytes = RunPython(dir, R"(
import pickle, sys, os, builtins
class A:
    def __reduce__(self): return (os.system, ('touch )" +
                                  marker + R"(',))
class B:
    def __reduce__(self): return (builtins.eval, ('1',))
data = pickle.dumps([A(), B(), {'ok': 1}], protocol=2)
open(sys.argv[1], 'wb').write(data[:-1])  # the STOP is cut off
)");
  auto r = Unpickle(bytes);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kUnsafe);  // the payload comes before the break
  auto scan = ScanPickle(bytes);
  ASSERT_TRUE(scan.has_value());
  ASSERT_EQ(scan->unsafe.size(), 2u);
  EXPECT_NE(scan->unsafe[0].find("'posix.system'"), std::string::npos) << scan->unsafe[0];
  EXPECT_NE(scan->unsafe[1].find("'__builtin__.eval'"), std::string::npos) << scan->unsafe[1];
  EXPECT_EQ(scan->stream_status.code(), StatusCode::kCorrupt);
  EXPECT_NE(scan->stream_status.message().find("without STOP"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(marker));

  // A harmless pickle without STOP is Corrupt.
  auto cut = Unpickle(Bytes(std::string("\x80\x02]q\x00K\x01a", 7)));
  ASSERT_FALSE(cut.has_value());
  EXPECT_EQ(cut.error().code(), StatusCode::kCorrupt);
  EXPECT_EQ(cut.error().message(), "pickle ends at byte 7 without STOP");
}

TEST(PickleTest, StreamErrorsNameOffsetAndOpcode) {
  auto unknown = Unpickle(Bytes(std::string("\x80\x02\xff.", 4)));
  ASSERT_FALSE(unknown.has_value());
  EXPECT_EQ(unknown.error().code(), StatusCode::kCorrupt);
  EXPECT_EQ(unknown.error().message(), "pickle byte 2 (unknown): unknown opcode 0xff");

  auto underflow =
      Unpickle(Bytes(std::string("\x80\x02"
                                 "a.",
                                 4)));
  ASSERT_FALSE(underflow.has_value());
  EXPECT_EQ(underflow.error().message(), "pickle byte 2 (APPEND): stack underflow");

  auto nomark =
      Unpickle(Bytes(std::string("\x80\x02"
                                 "K\x01"
                                 "e.",
                                 6)));
  ASSERT_FALSE(nomark.has_value());
  EXPECT_EQ(nomark.error().message(), "pickle byte 4 (APPENDS): no MARK on the stack");

  auto leftover =
      Unpickle(Bytes(std::string("\x80\x02"
                                 "K\x01"
                                 "K\x02.",
                                 7)));
  ASSERT_FALSE(leftover.has_value());
  EXPECT_EQ(leftover.error().code(), StatusCode::kCorrupt);

  auto badutf8 = Unpickle(Bytes(std::string("\x8c\x02\xc3\x28.", 5)));
  ASSERT_FALSE(badutf8.has_value());
  EXPECT_EQ(badutf8.error().message(),
            "pickle byte 0 (SHORT_BINUNICODE): string is not valid UTF-8");

  auto ext = Unpickle(Bytes(std::string("\x80\x02\x82\x01.", 5)));
  ASSERT_FALSE(ext.has_value());
  EXPECT_EQ(ext.error().code(), StatusCode::kUnsafe);

  auto buffer = Unpickle(Bytes(std::string("\x80\x05\x97.", 4)));
  ASSERT_FALSE(buffer.has_value());
  EXPECT_EQ(buffer.error().code(), StatusCode::kUnsupported);
}

TEST(PickleTest, LimitsAreCheckedBeforeAllocating) {
  // Nesting bomb: 100000 lists, each appended into the one before.
  std::string nest = "\x80\x02";
  for (int k = 0; k < 100000; ++k) nest += ']';
  for (int k = 0; k < 99999; ++k) nest += 'a';
  nest += '.';
  auto deep = Unpickle(Bytes(nest));
  ASSERT_FALSE(deep.has_value());
  EXPECT_EQ(deep.error().code(), StatusCode::kLimitExceeded);
  EXPECT_EQ(deep.error().message(), "pickle nests containers deeper than max_depth (1000)");

  // MARK bomb.
  PickleLimits small;
  small.max_stack = 1000;
  auto marks = Unpickle(Bytes(std::string(5000, '(')), small);
  ASSERT_FALSE(marks.has_value());
  EXPECT_EQ(marks.error().code(), StatusCode::kLimitExceeded);

  // LONG_BINPUT 0xffffffff.
  auto memo =
      Unpickle(Bytes(std::string("\x80\x02N"
                                 "r\xff\xff\xff\xff.",
                                 9)));
  ASSERT_FALSE(memo.has_value());
  EXPECT_EQ(memo.error().code(), StatusCode::kLimitExceeded);
  EXPECT_EQ(memo.error().message(),
            "pickle byte 3 (LONG_BINPUT): memo index 4294967295 exceeds max_memo_entries "
            "(10000000)");
  auto get = Unpickle(Bytes(std::string("\x80\x02j\xf0\xff\xff\xff.", 8)));
  ASSERT_FALSE(get.has_value());
  EXPECT_EQ(get.error().message(),
            "pickle byte 2 (LONG_BINGET): memo index 4294967280 was never stored");

  // LONG4 with a 2^31 length (negative as int32) and with 2^31 - 1 bytes that are not there.
  auto long4 = Unpickle(Bytes(std::string("\x80\x02\x8b\x00\x00\x00\x80.", 8)));
  ASSERT_FALSE(long4.has_value());
  EXPECT_EQ(long4.error().message(), "pickle byte 2 (LONG4): LONG4 length -2147483648 is negative");
  auto long4b = Unpickle(Bytes(std::string("\x80\x02\x8b\xff\xff\xff\x7f.", 8)));
  ASSERT_FALSE(long4b.has_value());
  EXPECT_EQ(long4b.error().message(),
            "pickle byte 2 (LONG4): needs 2147483647 bytes but only 1 remain");
  // A LONG1 integer of 9 significant bytes.
  auto big =
      Unpickle(Bytes(std::string("\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.", 14)));
  ASSERT_FALSE(big.has_value());
  EXPECT_EQ(big.error().code(), StatusCode::kLimitExceeded);
  auto neg = Unpickle(Bytes(std::string("\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\xff.", 12)));
  ASSERT_TRUE(neg.has_value()) << neg.status().ToString();
  EXPECT_EQ(neg->root->i, INT64_MIN);

  // BINUNICODE8 claiming 2^63 bytes.
  auto huge = Unpickle(Bytes(std::string("\x80\x04\x8d\x00\x00\x00\x00\x00\x00\x00\x80.", 12)));
  ASSERT_FALSE(huge.has_value());
  EXPECT_EQ(huge.error().code(), StatusCode::kLimitExceeded);
  EXPECT_EQ(huge.error().message(),
            "pickle byte 2 (BINUNICODE8): string of 9223372036854775808 bytes exceeds "
            "max_string_bytes (268435456)");

  // Total allocation: many small strings.
  PickleLimits tiny;
  tiny.max_alloc_bytes = 4096;
  std::string many = "\x80\x02(";
  for (int k = 0; k < 1000; ++k) many += "U\x01x";
  many += "l.";
  auto alloc = Unpickle(Bytes(many), tiny);
  ASSERT_FALSE(alloc.has_value());
  EXPECT_EQ(alloc.error().code(), StatusCode::kLimitExceeded);
}

TEST(PickleTest, TorchCallsNeedTheRightArguments) {
  // _rebuild_tensor_v2 with a non-storage argument; OrderedDict called with arguments;
  // a persistent id that is not the storage tuple.
  auto bad_tensor = Unpickle(Bytes("ctorch._utils\n_rebuild_tensor_v2\n(NK\x00)NNNtR."));
  ASSERT_FALSE(bad_tensor.has_value());
  EXPECT_EQ(bad_tensor.error().code(), StatusCode::kCorrupt);
  auto pid =
      Unpickle(Bytes("U\x03"
                     "abcQ."));
  ASSERT_FALSE(pid.has_value());
  EXPECT_EQ(pid.error().code(), StatusCode::kUnsupported);
  auto build = Unpickle(Bytes("]}b."));
  ASSERT_FALSE(build.has_value());
  EXPECT_EQ(build.error().code(), StatusCode::kUnsafe);
  auto newobj = Unpickle(Bytes("ccollections\nOrderedDict\n)\x81."));
  ASSERT_FALSE(newobj.has_value());
  EXPECT_EQ(newobj.error().code(), StatusCode::kUnsafe);
}

TEST(PickleTest, HandMadeTensorMustLieInsideItsStorage) {
  auto tensor = [](int size, std::string hooks) {
    return Bytes(std::string("ctorch._utils\n_rebuild_tensor_v2\n(") +
                 "(U\x07storagectorch\nFloatStorage\nU\x01"
                 "0U\x03"
                 "cpuK\x04tQ" +
                 std::string("K\x00", 2) + "K" + std::string(1, static_cast<char>(size)) + "\x85" +
                 "K\x01\x85" + "\x89" + hooks + "tR.");
  };
  auto ok = Unpickle(tensor(4, "ccollections\nOrderedDict\n)R"));
  ASSERT_TRUE(ok.has_value()) << ok.status().ToString();
  ASSERT_EQ(ok->root->kind, ValueKind::kTensor);
  EXPECT_EQ(ok->root->tensor->size, std::vector<int64_t>{4});
  EXPECT_EQ(ok->root->tensor->storage->key, "0");
  EXPECT_EQ(ok->root->tensor->storage->numel, 4);
  EXPECT_EQ(ok->root->tensor->dtype, DType::kF32);

  auto past = Unpickle(tensor(5, "N"));
  ASSERT_FALSE(past.has_value());
  EXPECT_EQ(past.error().code(), StatusCode::kCorrupt);
  EXPECT_EQ(past.error().message(),
            "'torch._utils._rebuild_tensor_v2' view reaches element 4 but storage '0' holds 4");

  // Backward hooks would be called by torch: refused.
  auto hooks = Unpickle(tensor(4, "}K\x01K\x02s"));
  ASSERT_FALSE(hooks.has_value());
  EXPECT_EQ(hooks.error().code(), StatusCode::kUnsafe);
}

TEST(PickleTest, SharedTupleKeysCannotExplode) {
  // A key of 2^k leaves from k memo-shared levels (DUP + TUPLE2): refused, not walked.
  for (int levels : {40, 100}) {
    std::string p = "\x80\x02}K\x01";
    for (int k = 0; k < levels; ++k) p += "2\x86";
    p += "Ns.";
    auto r = Unpickle(Bytes(p));
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code(), StatusCode::kLimitExceeded);
    EXPECT_EQ(r.error().message(), "pickle byte " + std::to_string(p.size() - 2) +
                                       " (SETITEM): dict key is too large or too deeply nested");
  }
}

}  // namespace
}  // namespace mp::torch
