// The ONNX reader on models built here with libprotobuf's onnx classes and on hand-encoded
// protobuf bytes: typed fields packed and unpacked, zero-copy raw_data, detection, metadata,
// and one hostile file per rule (external data escaping the folder, symlinks, hard links,
// special files, out-of-range offsets and lengths, malformed wire format, bad tensors).
#include "modelport/formats/onnx/onnx.h"

#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "test_util.h"

namespace mp {
namespace {

namespace fs = std::filesystem;
using testing::kIoModes;
using testing::TempDir;

::onnx::ModelProto BaseModel() {
  ::onnx::ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name("unit");
  m.set_producer_version("1.0");
  m.add_opset_import()->set_version(17);
  ::onnx::GraphProto* g = m.mutable_graph();
  g->set_name("g");
  ::onnx::NodeProto* n = g->add_node();
  n->set_op_type("Identity");
  n->add_input("x");
  n->add_output("y");
  auto set = [](::onnx::ValueInfoProto* v, const char* name) {
    v->set_name(name);
    auto* t = v->mutable_type()->mutable_tensor_type();
    t->set_elem_type(1);
    t->mutable_shape()->add_dim()->set_dim_param("batch");
    t->mutable_shape()->add_dim()->set_dim_value(4);
  };
  set(g->add_input(), "x");
  set(g->add_output(), "y");
  return m;
}

::onnx::TensorProto* AddInit(::onnx::ModelProto& m, const std::string& name, int dtype,
                             std::vector<int64_t> dims) {
  ::onnx::TensorProto* t = m.mutable_graph()->add_initializer();
  t->set_name(name);
  t->set_data_type(dtype);
  for (int64_t d : dims) t->add_dims(d);
  return t;
}

void SetExternal(::onnx::TensorProto* t,
                 const std::vector<std::pair<std::string, std::string>>& kv) {
  t->set_data_location(::onnx::TensorProto::EXTERNAL);
  for (const auto& [k, v] : kv) {
    auto* e = t->add_external_data();
    e->set_key(k);
    e->set_value(v);
  }
}

std::string Save(const std::string& path, const std::string& bytes) {
  testing::WriteBytes(path, std::vector<uint8_t>(bytes.begin(), bytes.end()));
  return path;
}
std::string Save(const std::string& path, const ::onnx::ModelProto& m) {
  return Save(path, m.SerializeAsString());
}

std::vector<uint8_t> Bytes(const TensorView& t) { return {t.bytes().begin(), t.bytes().end()}; }

template <typename T>
std::vector<uint8_t> AsBytes(const std::vector<T>& v) {
  std::vector<uint8_t> out(v.size() * sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), v.data(), out.size());
  return out;
}

/// A model folder "m" inside a temp dir, so "../x" lands in a folder the test owns.
class OnnxExternal : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directory(model_dir());
    const std::vector<uint8_t> data = AsBytes(std::vector<float>{1, 2, 3, 4});
    testing::WriteBytes(model_dir() + "/w.bin", data);
    testing::WriteBytes(dir_.File("secret"), data);  // outside the model's folder
  }
  std::string model_dir() const { return dir_.File("m"); }

  /// A model with one f32 [4] initializer "w" in external data described by `kv`.
  Result<std::unique_ptr<ModelSource>> OpenWith(
      const std::vector<std::pair<std::string, std::string>>& kv, IoMode mode = IoMode::kMmap) {
    ::onnx::ModelProto m = BaseModel();
    SetExternal(AddInit(m, "w", 1, {4}), kv);
    ReadOptions o;
    o.io_mode = mode;
    return onnx::Open(Save(model_dir() + "/model.onnx", m), o);
  }

  void ExpectRefused(const std::vector<std::pair<std::string, std::string>>& kv, StatusCode code,
                     const std::string& gist) {
    for (IoMode mode : kIoModes) {
      auto r = OpenWith(kv, mode);
      ASSERT_FALSE(r.ok());
      EXPECT_EQ(r.status().code(), code) << r.status().ToString();
      EXPECT_NE(r.status().message().find(gist), std::string::npos) << r.status().ToString();
      // One line naming the file and the tensor.
      EXPECT_NE(r.status().message().find("model.onnx: initializer 'w': "), std::string::npos)
          << r.status().message();
      EXPECT_EQ(r.status().message().find('\n'), std::string::npos);
    }
  }

  TempDir dir_;
};

TEST_F(OnnxExternal, ReadsInsideTheFolder) {
  for (IoMode mode : kIoModes) {
    auto r = OpenWith({{"location", "w.bin"}, {"offset", "4"}, {"length", "12"}}, mode);
    // 12 bytes are 3 floats, but the tensor is [4]: Corrupt; the whole file works.
    EXPECT_EQ(r.status().code(), StatusCode::kCorrupt);
    r = OpenWith({{"location", "./w.bin"}}, mode);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    auto t = (*r)->Load(0);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    EXPECT_EQ(Bytes(*t), AsBytes(std::vector<float>{1, 2, 3, 4}));
    EXPECT_EQ((*r)->files().files.size(), 2u);
  }
}

TEST_F(OnnxExternal, SubfolderAndChecksum) {
  fs::create_directory(model_dir() + "/sub");
  const std::vector<uint8_t> data = AsBytes(std::vector<float>{5, 6, 7, 8});
  testing::WriteBytes(model_dir() + "/sub/d", data);
  // SHA-1 of those 16 bytes, as `sha1sum` prints it.
  const auto sum = testing::Run("sha1sum '" + model_dir() + "/sub/d' | cut -c1-40");
  ASSERT_EQ(sum.exit_code, 0);
  const std::string sha1 = sum.out.substr(0, 40);
  auto r = OpenWith({{"location", "sub/d"}, {"checksum", sha1}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_TRUE((*r)->Load(0).ok());
  std::vector<uint8_t> into(16);
  EXPECT_TRUE((*r)->LoadInto(0, into).ok());
  EXPECT_EQ(into, data);

  r = OpenWith({{"location", "sub/d"}, {"checksum", std::string(40, '0')}});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->Load(0).status().code(), StatusCode::kChecksumMismatch);
  EXPECT_EQ((*r)->LoadInto(0, into).code(), StatusCode::kChecksumMismatch);
  ExpectRefused({{"location", "sub/d"}, {"checksum", "xyz"}}, StatusCode::kCorrupt,
                "not a SHA-1 hex digest");
}

TEST_F(OnnxExternal, TraversalAndAbsolutePathsAreUnsafe) {
  ExpectRefused({{"location", "../secret"}}, StatusCode::kUnsafe, "'..'");
  ExpectRefused({{"location", "sub/../../secret"}}, StatusCode::kUnsafe, "'..'");
  ExpectRefused({{"location", "..\\secret"}}, StatusCode::kUnsafe, "'..'");
  ExpectRefused({{"location", "/etc/passwd"}}, StatusCode::kUnsafe, "absolute path");
  ExpectRefused({{"location", dir_.File("secret")}}, StatusCode::kUnsafe, "absolute path");
  ExpectRefused({{"location", "C:\\secret"}}, StatusCode::kUnsafe, "absolute path");
  ExpectRefused({{"location", std::string("w.bin\0x", 7)}}, StatusCode::kUnsafe, "NUL");
}

TEST_F(OnnxExternal, SymlinksHardLinksAndSpecialFilesAreUnsafe) {
  fs::create_symlink(dir_.File("secret"), model_dir() + "/link");
  ExpectRefused({{"location", "link"}}, StatusCode::kUnsafe, "symbolic link");
  // Even a symlink that points inside the folder: never followed.
  fs::create_symlink("w.bin", model_dir() + "/inner_link");
  ExpectRefused({{"location", "inner_link"}}, StatusCode::kUnsafe, "symbolic link");
  // A symlinked folder on the way.
  fs::create_directory(dir_.File("outside"));
  testing::WriteBytes(dir_.File("outside/w.bin"), AsBytes(std::vector<float>{1, 2, 3, 4}));
  fs::create_directory_symlink(dir_.File("outside"), model_dir() + "/dirlink");
  ExpectRefused({{"location", "dirlink/w.bin"}}, StatusCode::kUnsafe, "symbolic link");
  // A hard link to a file outside looks like any file inside: more than one link is refused.
  fs::create_hard_link(dir_.File("secret"), model_dir() + "/hard");
  ExpectRefused({{"location", "hard"}}, StatusCode::kUnsafe, "2 hard links");
  // Not a regular file.
  ASSERT_EQ(::mkfifo((model_dir() + "/fifo").c_str(), 0600), 0);
  ExpectRefused({{"location", "fifo"}}, StatusCode::kUnsafe, "not a regular file");
  fs::create_directory(model_dir() + "/folder");
  ExpectRefused({{"location", "folder"}}, StatusCode::kUnsafe, "not a regular file");
  ExpectRefused({{"location", "w.bin/x"}}, StatusCode::kCorrupt, "is not a folder");
  ExpectRefused({{"location", "missing.bin"}}, StatusCode::kNotFound, "does not exist");
  // A hostile name stays on one line (ExpectRefused checks there is no newline).
  ExpectRefused({{"location", "a\nb"}}, StatusCode::kNotFound, "does not exist");
}

TEST_F(OnnxExternal, BadOffsetsLengthsAndKeys) {
  ExpectRefused({{"location", "w.bin"}, {"offset", "17"}}, StatusCode::kCorrupt,
                "offset 17 is past the end");
  ExpectRefused({{"location", "w.bin"}, {"offset", "8"}, {"length", "16"}}, StatusCode::kCorrupt,
                "runs past the end");
  ExpectRefused({{"location", "w.bin"}, {"length", "8"}}, StatusCode::kCorrupt,
                "length 8 but f32 [4] needs 16");
  ExpectRefused({{"location", "w.bin"}, {"offset", "18446744073709551615"}, {"length", "16"}},
                StatusCode::kCorrupt, "past the end");
  ExpectRefused({{"location", "w.bin"}, {"offset", "-1"}}, StatusCode::kCorrupt,
                "not a non-negative integer");
  ExpectRefused({{"location", "w.bin"}, {"length", "99999999999999999999999"}},
                StatusCode::kCorrupt, "not a non-negative integer");
  ExpectRefused({{"location", "w.bin"}, {"location", "w.bin"}}, StatusCode::kCorrupt, "twice");
  ExpectRefused({{"offset", "0"}}, StatusCode::kCorrupt, "no location");
  ExpectRefused({{"location", ""}}, StatusCode::kCorrupt, "is empty");
}

TEST_F(OnnxExternal, ExternalAndInlineDataConflict) {
  ::onnx::ModelProto m = BaseModel();
  auto* t = AddInit(m, "w", 1, {1});
  SetExternal(t, {{"location", "w.bin"}});
  t->set_raw_data(std::string(4, '\0'));
  auto r = onnx::Open(Save(model_dir() + "/a.onnx", m), {});
  EXPECT_EQ(r.status().code(), StatusCode::kCorrupt);
  EXPECT_NE(r.status().message().find("also holds data inline"), std::string::npos);
  t->clear_raw_data();
  t->set_data_location(::onnx::TensorProto::DEFAULT);
  r = onnx::Open(Save(model_dir() + "/a.onnx", m), {});
  EXPECT_EQ(r.status().code(), StatusCode::kCorrupt);
  EXPECT_NE(r.status().message().find("data_location is not EXTERNAL"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------

TEST(Onnx, RawAndTypedFieldsAndZeroCopy) {
  TempDir dir;
  ::onnx::ModelProto m = BaseModel();
  const std::vector<uint8_t> u8 = {0, 1, 2, 250, 251, 252, 253, 254, 255};
  AddInit(m, "u8", 2, {9})->set_raw_data(std::string(u8.begin(), u8.end()));
  auto* i8 = AddInit(m, "i8", 3, {3});
  for (int v : {-128, -1, 127}) i8->add_int32_data(v);
  auto* f16 = AddInit(m, "f16", 10, {2});
  for (int v : {0x3c00, 0xfc00}) f16->add_int32_data(v);
  auto* b = AddInit(m, "b", 9, {3});
  for (int v : {0, 1, 1}) b->add_int32_data(v);
  auto* i64 = AddInit(m, "i64", 7, {2});
  for (int64_t v : {INT64_MIN, int64_t{42}}) i64->add_int64_data(v);
  auto* u32 = AddInit(m, "u32", 12, {2});
  for (uint64_t v : {uint64_t{0xffffffff}, uint64_t{7}}) u32->add_uint64_data(v);
  auto* f64 = AddInit(m, "f64", 11, {1});
  f64->add_double_data(-2.5);
  auto* c64 = AddInit(m, "c64", 14, {1});
  for (float v : {1.5f, -3.0f}) c64->add_float_data(v);
  AddInit(m, "empty", 1, {0, 3});
  m.add_metadata_props()->set_key("author");
  m.mutable_metadata_props(0)->set_value("me");
  const std::string path = Save(dir.File("m.onnx"), m);

  for (IoMode mode : kIoModes) {
    ReadOptions o;
    o.io_mode = mode;
    auto r = onnx::Open(path, o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    const ModelSource& s = **r;
    ASSERT_EQ(s.tensors().size(), 9u);
    auto load = [&](const std::string& name) {
      auto t = s.Load(*s.Find(name));
      EXPECT_TRUE(t.ok()) << t.status().ToString();
      return t.ok() ? Bytes(*t) : std::vector<uint8_t>{};
    };
    EXPECT_EQ(load("u8"), u8);
    EXPECT_EQ(load("i8"), (std::vector<uint8_t>{0x80, 0xff, 0x7f}));
    EXPECT_EQ(load("f16"), AsBytes(std::vector<uint16_t>{0x3c00, 0xfc00}));
    EXPECT_EQ(load("b"), (std::vector<uint8_t>{0, 1, 1}));
    EXPECT_EQ(load("i64"), AsBytes(std::vector<int64_t>{INT64_MIN, 42}));
    EXPECT_EQ(load("u32"), AsBytes(std::vector<uint32_t>{0xffffffff, 7}));
    EXPECT_EQ(load("f64"), AsBytes(std::vector<double>{-2.5}));
    EXPECT_EQ(load("c64"), AsBytes(std::vector<float>{1.5f, -3.0f}));
    EXPECT_EQ(load("empty"), std::vector<uint8_t>{});
    EXPECT_EQ(s.tensors()[*s.Find("empty")].shape, (Shape{0, 3}));
    if (mode == IoMode::kMmap) {
      // raw_data of bytes is a view of the mapping: the same address every time.
      auto a = s.Load(*s.Find("u8"));
      auto c = s.Load(*s.Find("u8"));
      EXPECT_EQ(a->bytes().data(), c->bytes().data());
    }
    EXPECT_EQ(s.metadata().at("author"), "me");
    EXPECT_EQ(s.metadata().at("onnx.ir_version"), 8);
    EXPECT_EQ(s.metadata().at("onnx.opset_import"), (Json{{"", 17}}));
    const auto* o2 = dynamic_cast<const onnx::OnnxSource*>(&s);
    ASSERT_NE(o2, nullptr);
    ASSERT_EQ(o2->graph_info().inputs.size(), 1u);
    EXPECT_EQ(o2->graph_info().inputs[0].dims, (std::vector<std::string>{"batch", "4"}));
    EXPECT_EQ(o2->graph_info().inputs[0].type, "f32");
  }
}

// Hand-encoded protobuf, for what libprotobuf never writes (unpacked repeated fields) and
// for malformed input.
void Varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
void Tag(std::string& out, uint32_t field, uint32_t wire) { Varint(out, (field << 3) | wire); }
void Len(std::string& out, uint32_t field, const std::string& payload) {
  Tag(out, field, 2);
  Varint(out, payload.size());
  out += payload;
}
std::string ModelWithTensor(const std::string& tensor) {
  std::string graph, model;
  Len(graph, 5, tensor);
  Tag(model, 1, 0);
  Varint(model, 8);
  Len(model, 7, graph);
  return model;
}

TEST(Onnx, UnpackedTypedFieldsDecode) {
  TempDir dir;
  std::string t;
  Len(t, 8, "f");
  Tag(t, 2, 0);
  Varint(t, 1);  // FLOAT
  Tag(t, 1, 0);
  Varint(t, 3);                    // dims [3], unpacked
  for (float v : {1.0f, -2.0f}) {  // two unpacked fixed32 values, then a packed one
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    Tag(t, 4, 5);
    t.append(reinterpret_cast<const char*>(&bits), 4);
  }
  const float last = 0.5f;
  Len(t, 4, std::string(reinterpret_cast<const char*>(&last), 4));
  std::string i;
  Len(i, 8, "i");
  Tag(i, 2, 0);
  Varint(i, 5);  // INT16
  Tag(i, 1, 0);
  Varint(i, 2);
  Tag(i, 5, 0);
  Varint(i, static_cast<uint64_t>(int64_t{-2}));  // a 10-byte varint
  Tag(i, 5, 0);
  Varint(i, 300);
  std::string graph, model;
  Len(graph, 5, t);
  Len(graph, 5, i);
  Tag(model, 1, 0);
  Varint(model, 8);
  Len(model, 7, graph);
  auto r = onnx::Open(Save(dir.File("u.onnx"), model), {});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(Bytes(*(*r)->Load(0)), AsBytes(std::vector<float>{1.0f, -2.0f, 0.5f}));
  EXPECT_EQ(Bytes(*(*r)->Load(1)), AsBytes(std::vector<int16_t>{-2, 300}));
}

Status OpenTensor(const TempDir& dir, const std::string& tensor) {
  auto r = onnx::Open(Save(dir.File("t.onnx"), ModelWithTensor(tensor)), {});
  return r.status();
}

void ExpectStatus(const Status& s, StatusCode code, const std::string& gist) {
  EXPECT_EQ(s.code(), code) << s.ToString();
  EXPECT_NE(s.message().find(gist), std::string::npos) << s.ToString();
}

TEST(Onnx, BadTensorsAreRefusedNamingTheTensor) {
  TempDir dir;
  auto tensor = [](int dtype, std::vector<int64_t> dims, std::string name = "w") {
    ::onnx::TensorProto t;
    t.set_name(name);
    t.set_data_type(dtype);
    for (int64_t d : dims) t.add_dims(d);
    return t;
  };
  auto open = [&](const ::onnx::TensorProto& t) { return OpenTensor(dir, t.SerializeAsString()); };

  auto t = tensor(1, {2});
  t.set_raw_data(std::string(7, '\0'));
  ExpectStatus(open(t), StatusCode::kCorrupt, "initializer 'w': raw_data is 7 bytes but f32 [2]");
  t = tensor(1, {3});
  t.add_float_data(1);
  ExpectStatus(open(t), StatusCode::kCorrupt, "float_data holds 1 values but [3] needs 3");
  t = tensor(1, {1});
  t.add_int64_data(1);
  ExpectStatus(open(t), StatusCode::kCorrupt, "int64_data cannot hold FLOAT values");
  t = tensor(1, {1});
  t.add_float_data(1);
  t.set_raw_data(std::string(4, '\0'));
  ExpectStatus(open(t), StatusCode::kCorrupt, "raw_data and float_data are both set");
  t = tensor(1, {-1});
  ExpectStatus(open(t), StatusCode::kCorrupt,
               "initializer 'w': dims holds a negative dimension -1");
  t = tensor(1, {2});
  ExpectStatus(open(t), StatusCode::kCorrupt, "the tensor has no data");
  t = tensor(8, {1});
  t.add_string_data("hi");
  ExpectStatus(open(t), StatusCode::kUnsupported, "initializer 'w': STRING");
  for (int code : {15, 18, 20, 21, 22}) {
    t = tensor(code, {1});
    t.set_raw_data(std::string(16, '\0'));
    ExpectStatus(open(t), StatusCode::kUnsupported, "initializer 'w': data_type");
  }
  t = tensor(0, {1});
  ExpectStatus(open(t), StatusCode::kCorrupt, "UNDEFINED");
  t = tensor(99, {1});
  ExpectStatus(open(t), StatusCode::kUnsupported, "data_type 99");
  t = tensor(1, {1}, "");
  t.add_float_data(1);
  ExpectStatus(open(t), StatusCode::kCorrupt, "initializer #0: initializer has no name");
  t = tensor(1, {1});
  t.mutable_segment()->set_begin(0);
  ExpectStatus(open(t), StatusCode::kUnsupported, "segment");
  t = tensor(1, {1});
  t.add_float_data(1);
  // data_location 7 (field 14, varint): the generated setter refuses invalid enum values.
  ExpectStatus(OpenTensor(dir, t.SerializeAsString() + "\x70\x07"), StatusCode::kCorrupt,
               "initializer 'w': data_location 7");

  // Per-tensor bookkeeping is bounded.
  t = tensor(1, {1});
  SetExternal(&t, std::vector<std::pair<std::string, std::string>>(65, {"x", "y"}));
  ExpectStatus(open(t), StatusCode::kLimitExceeded, "initializer 'w': external_data has more");
  std::string pieces;
  Len(pieces, 8, "w");
  for (int k = 0; k < 4097; ++k) {
    Tag(pieces, 4, 5);
    pieces.append(4, '\0');
    Len(pieces, 12, "");  // doc_string between the pieces keeps them apart
  }
  ExpectStatus(OpenTensor(dir, pieces), StatusCode::kLimitExceeded, "more than 4096 pieces");

  // Two initializers of one name.
  ::onnx::ModelProto m = BaseModel();
  AddInit(m, "w", 1, {1})->add_float_data(1);
  AddInit(m, "w", 1, {1})->add_float_data(2);
  ExpectStatus(onnx::Open(Save(dir.File("d.onnx"), m), {}).status(), StatusCode::kCorrupt,
               "a second initializer has this name");
  // Limits.
  m = BaseModel();
  AddInit(m, "a", 1, {1})->add_float_data(1);
  AddInit(m, "b", 1, {1, 1, 1})->add_float_data(1);
  ReadOptions o;
  o.max_tensors = 1;
  ExpectStatus(onnx::Open(Save(dir.File("l.onnx"), m), o).status(), StatusCode::kLimitExceeded,
               "limit of 1");
  o = {};
  o.max_rank = 2;
  ExpectStatus(onnx::Open(dir.File("l.onnx"), o).status(), StatusCode::kLimitExceeded,
               "initializer 'b': rank");
  // metadata_props keys are unique.
  m = BaseModel();
  for (int k = 0; k < 2; ++k) m.add_metadata_props()->set_key("k");
  ExpectStatus(onnx::Open(Save(dir.File("p.onnx"), m), {}).status(), StatusCode::kCorrupt,
               "metadata_props has the key 'k' twice");
}

TEST(Onnx, MalformedWireFormatIsCorrupt) {
  TempDir dir;
  auto open = [&](const std::string& bytes) {
    return onnx::Open(Save(dir.File("w.onnx"), bytes), {}).status();
  };
  std::string s;
  Tag(s, 1, 0);
  Varint(s, 8);
  Tag(s, 7, 2);
  Varint(s, uint64_t{1} << 62);  // a graph far longer than the file
  ExpectStatus(open(s), StatusCode::kCorrupt, "claims 4611686018427387904 bytes");
  s = std::string("\x08\x08") + std::string(11, '\xff');
  ExpectStatus(open(s), StatusCode::kCorrupt, "longer than 64 bits");
  s = "\x08\x08\x0b";  // field 1, wire type 3 (a group)
  ExpectStatus(open(s), StatusCode::kCorrupt, "wire type 3");
  s = std::string("\x08\x08\x02\x00", 4);  // field number 0
  ExpectStatus(open(s), StatusCode::kCorrupt, "invalid field number 0");
  s = "\x08\x08\x3a\x02\x2a\x05";  // an initializer claiming 5 bytes of a 2-byte graph
  ExpectStatus(open(s), StatusCode::kCorrupt, "field 5 at byte 4 claims 5 bytes");
  s = "\x08\x08";
  ExpectStatus(open(s), StatusCode::kCorrupt, "no graph");
  s = std::string("\x08\x08\x3a\x00\x3a\x00", 6);
  ExpectStatus(open(s), StatusCode::kCorrupt, "two graph fields");
  s = std::string("\x08\x08\x3d\x00\x00\x00\x00", 7);  // graph as fixed32
  ExpectStatus(open(s), StatusCode::kCorrupt, "graph (field 7) at byte 2 is fixed32");

  // Truncated at every byte: a clean error or a shorter valid message, never a crash; cut
  // inside the graph, always Corrupt.
  ::onnx::ModelProto m = BaseModel();
  AddInit(m, "w", 1, {64})->set_raw_data(std::string(256, '\x01'));
  const std::string whole = m.SerializeAsString();
  const size_t graph_at = whole.find("\x3a");
  ASSERT_NE(graph_at, std::string::npos);
  std::string graph_header;
  Len(graph_header, 7, m.graph().SerializeAsString());
  const size_t graph_end = graph_at + graph_header.size();
  ASSERT_EQ(whole.substr(graph_at, graph_header.size()), graph_header);
  for (size_t n = 0; n < whole.size(); ++n) {
    for (IoMode mode : kIoModes) {
      ReadOptions o;
      o.io_mode = mode;
      auto r = onnx::Open(Save(dir.File("cut.onnx"), whole.substr(0, n)), o);
      if (n > graph_at && n < graph_end) {
        EXPECT_EQ(r.status().code(), StatusCode::kCorrupt) << n;
      }
    }
  }
}

TEST(Onnx, DetectsModelProtoByContent) {
  ::onnx::ModelProto m = BaseModel();
  AddInit(m, "w", 1, {1})->add_float_data(1);
  const std::string s = m.SerializeAsString();
  const auto bytes = [](const std::string& x) {
    return std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(x.data()), x.size());
  };
  EXPECT_TRUE(onnx::Detect(bytes(s.substr(0, onnx::kDetectBytes)), s.size()));
  EXPECT_TRUE(onnx::Detect(bytes(s.substr(0, 3)), s.size()));
  EXPECT_FALSE(onnx::Detect(bytes(""), 0));
  EXPECT_FALSE(onnx::Detect(bytes(std::string("\x08\x00", 2)), 2));      // ir_version 0
  EXPECT_FALSE(onnx::Detect(bytes(std::string("\x08\x08\x00", 3)), 3));  // field 0
  EXPECT_FALSE(onnx::Detect(bytes("\x08\x08\x52\x01x"), 5));             // field 10: not ModelProto
  EXPECT_FALSE(onnx::Detect(bytes("\x08\x08\x12\x7f"), 4));              // a string past the end
  EXPECT_FALSE(onnx::Detect(bytes("PK\x03\x04"), 4));
  TempDir dir;
  Save(dir.File("model.bin"), m);
  auto f = DetectFormat(dir.File("model.bin"));
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->name, "onnx");
}

TEST(Onnx, CliInspectShowsTheGraphAndConvertRefusesToWriteOnnx) {
  TempDir dir;
  ::onnx::ModelProto m = BaseModel();
  AddInit(m, "w", 1, {2})->set_raw_data(std::string(8, '\0'));
  const std::string path = Save(dir.File("m.onnx"), m);
  auto r = testing::RunCli("inspect '" + path + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("input:       x: f32 [batch, 4]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("nodes:       1 (Identity 1)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("opsets:      ai.onnx 17"), std::string::npos) << r.out;
  r = testing::RunCli("inspect --json '" + path + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Json doc = Json::parse(r.out);
  EXPECT_EQ(doc.at("graph").at("outputs").at(0).at("shape"), (Json{"batch", "4"}));
  EXPECT_EQ(doc.at("graph").at("op_counts").at("Identity"), 1);
  r = testing::RunCli("convert '" + path + "' '" + dir.File("out.onnx") + "'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("writing onnx is not supported"), std::string::npos) << r.err;
}

// ---------------------------------------------------------------------------------------------
// Rewrite: placement, alignment, set-weights and refusals.

std::unique_ptr<ModelSource> MustOpen(const std::string& path, IoMode mode = IoMode::kMmap) {
  ReadOptions o;
  o.io_mode = mode;
  auto r = onnx::Open(path, o);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(*r) : nullptr;
}

const onnx::OnnxSource& AsOnnx(const ModelSource& m) {
  return dynamic_cast<const onnx::OnnxSource&>(m);
}

::onnx::ModelProto Parsed(const std::string& path) {
  ::onnx::ModelProto m;
  const std::vector<uint8_t> bytes = testing::ReadBytes(path);
  EXPECT_TRUE(m.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) << path;
  return m;
}

std::map<std::string, std::string> ExternalOf(const ::onnx::TensorProto& t) {
  std::map<std::string, std::string> kv;
  for (const auto& e : t.external_data()) kv[e.key()] = e.value();
  return kv;
}

// Initializers of every size class: tiny (inline under the default threshold), a typed field
// (2000 bytes: 64-byte aligned outside), 2 MiB + 3 (page aligned outside), empty, int64.
::onnx::ModelProto SizesModel() {
  ::onnx::ModelProto m = BaseModel();
  AddInit(m, "small", 1, {4})->set_raw_data(std::string(16, '\x01'));
  auto* mid = AddInit(m, "mid", 1, {500});
  for (int i = 0; i < 500; ++i) mid->add_float_data(static_cast<float>(i) * 0.5f);
  std::string big((2 << 20) + 3, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7 + 1);
  auto* b = AddInit(m, "big", 2, {static_cast<int64_t>(big.size())});
  b->set_raw_data(big);
  b->set_doc_string("kept");
  AddInit(m, "empty", 1, {0, 3});
  auto* i64 = AddInit(m, "i64", 7, {3});
  for (int64_t v : {-1LL, 0LL, 1LL << 40}) i64->add_int64_data(v);
  return m;
}

TEST(OnnxRewrite, PlacesAlignsAndKeepsEveryValueAndTheGraph) {
  TempDir dir;
  const ::onnx::ModelProto original = SizesModel();
  const std::string in = Save(dir.File("in.onnx"), original);
  for (IoMode mode : kIoModes) {
    auto model = MustOpen(in, mode);
    ASSERT_TRUE(model);
    onnx::RewriteOptions opt;
    opt.placement = onnx::Placement::kExternal;
    const std::string ext = dir.File("ext.onnx");
    auto report = AsOnnx(*model).Rewrite(ext, opt);
    ASSERT_TRUE(report.ok()) << report.status().ToString();
    EXPECT_EQ(report->external_tensors, 2u);
    EXPECT_EQ(report->inline_tensors, 3u);
    EXPECT_EQ(report->data_path, dir.File("ext.onnx.data"));

    const ::onnx::ModelProto m = Parsed(ext);
    // The graph is the original's, field for field, but for the initializers' data.
    EXPECT_EQ(m.graph().node(0).SerializeAsString(), original.graph().node(0).SerializeAsString());
    EXPECT_EQ(m.graph().input(0).SerializeAsString(),
              original.graph().input(0).SerializeAsString());
    EXPECT_EQ(m.producer_name(), "unit");
    ASSERT_EQ(m.graph().initializer_size(), 5);
    std::map<std::string, const ::onnx::TensorProto*> by_name;
    for (const auto& t : m.graph().initializer()) by_name[t.name()] = &t;
    EXPECT_EQ(by_name.at("small")->data_location(), ::onnx::TensorProto::DEFAULT);
    EXPECT_EQ(by_name.at("small")->raw_data(), std::string(16, '\x01'));
    EXPECT_EQ(by_name.at("empty")->data_location(), ::onnx::TensorProto::DEFAULT);
    EXPECT_EQ(by_name.at("big")->doc_string(), "kept");
    const auto mid = ExternalOf(*by_name.at("mid"));
    const auto big = ExternalOf(*by_name.at("big"));
    EXPECT_EQ(mid.at("location"), "ext.onnx.data");
    EXPECT_EQ(std::stoull(mid.at("offset")) % onnx::kExternalAlign, 0u);
    EXPECT_EQ(mid.at("length"), "2000");
    EXPECT_EQ(std::stoull(big.at("offset")) % onnx::kPageAlign, 0u);
    EXPECT_EQ(std::stoull(big.at("offset")), 4096u);  // the first page after mid's 2000 bytes
    EXPECT_EQ(by_name.at("mid")->float_data_size(), 0);

    // Values: external -> inline -> as they were; kKeep keeps the external layout.
    auto external = MustOpen(ext, mode);
    ASSERT_TRUE(external);
    EXPECT_TRUE(testing::SameModel(*model, *external));
    const std::string back = dir.File("back.onnx");
    opt.placement = onnx::Placement::kInline;
    ASSERT_TRUE(AsOnnx(*external).Rewrite(back, opt).ok());
    const ::onnx::ModelProto b = Parsed(back);
    for (const auto& t : b.graph().initializer()) {
      EXPECT_EQ(t.data_location(), ::onnx::TensorProto::DEFAULT) << t.name();
      EXPECT_EQ(t.external_data_size(), 0) << t.name();
    }
    auto inlined = MustOpen(back, mode);
    ASSERT_TRUE(inlined);
    EXPECT_TRUE(testing::SameModel(*model, *inlined));
    opt.placement = onnx::Placement::kKeep;
    opt.data_file = "weights.bin";
    auto kept = AsOnnx(*external).Rewrite(dir.File("keep.onnx"), opt);
    ASSERT_TRUE(kept.ok()) << kept.status().ToString();
    EXPECT_EQ(kept->external_tensors, 2u);
    EXPECT_EQ(ExternalOf(Parsed(dir.File("keep.onnx")).graph().initializer(2)).at("location"),
              "weights.bin");
    EXPECT_TRUE(testing::SameModel(*model, *MustOpen(dir.File("keep.onnx"), mode)));
    opt.data_file.clear();
    // Threshold 0: every non-empty tensor goes outside.
    opt.placement = onnx::Placement::kExternal;
    opt.size_threshold = 0;
    auto all = AsOnnx(*model).Rewrite(dir.File("all.onnx"), opt);
    ASSERT_TRUE(all.ok());
    EXPECT_EQ(all->external_tensors, 4u);
    EXPECT_TRUE(testing::SameModel(*model, *MustOpen(dir.File("all.onnx"), mode)));
  }
}

TEST(OnnxRewrite, GoldenModelsRoundTripByteForByte) {
  MP_SKIP_WITHOUT_GOLDEN();
  const fs::path golden = testing::GoldenDir() / "onnx";
  TempDir dir;
  // torch 2.11 wrote both: the same weights inline and in mlp_opset17_external.onnx.data.
  auto inline_model = MustOpen((golden / "mlp_opset17.onnx").string());
  ASSERT_TRUE(inline_model);
  onnx::RewriteOptions opt;
  opt.placement = onnx::Placement::kExternal;
  opt.size_threshold = 0;
  const std::string ext = dir.File("mlp_opset17_external.onnx");
  ASSERT_TRUE(AsOnnx(*inline_model).Rewrite(ext, opt).ok());
  EXPECT_EQ(testing::ReadBytes(ext), testing::ReadBytes((golden / "mlp_opset17_external.onnx")));
  EXPECT_EQ(testing::ReadBytes(ext + ".data"),
            testing::ReadBytes((golden / "mlp_opset17_external.onnx.data")));

  auto external_model = MustOpen((golden / "mlp_opset17_external.onnx").string());
  ASSERT_TRUE(external_model);
  opt.placement = onnx::Placement::kInline;
  ASSERT_TRUE(AsOnnx(*external_model).Rewrite(dir.File("inline.onnx"), opt).ok());
  EXPECT_EQ(testing::ReadBytes(dir.File("inline.onnx")),
            testing::ReadBytes((golden / "mlp_opset17.onnx")));
}

Model Weights(std::vector<TensorView> tensors) {
  Model m;
  for (auto& t : tensors) EXPECT_TRUE(m.Add(std::move(t)).ok());
  return m;
}

TEST(OnnxRewrite, SetWeightsReplacesByNameAndChecksDtypeAndShape) {
  TempDir dir;
  const std::string in = Save(dir.File("in.onnx"), SizesModel());
  auto model = MustOpen(in);
  ASSERT_TRUE(model);
  const std::vector<uint8_t> tuned = AsBytes(std::vector<float>{9, 8, 7, 6});
  Model weights = Weights({testing::BytesTensor("small", DType::kF32, Shape({4}), tuned),
                           testing::PatternTensor("mid", DType::kF32, Shape({500}), 3)});
  onnx::RewriteOptions opt;
  opt.weights = &weights;
  auto report = AsOnnx(*model).Rewrite(dir.File("out.onnx"), opt);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->replaced, (std::vector<std::string>{"small", "mid"}));
  auto out = MustOpen(dir.File("out.onnx"));
  ASSERT_TRUE(out);
  EXPECT_EQ(Bytes(*out->Load(0)), tuned);
  EXPECT_EQ(Bytes(*out->Load(1)), Bytes(*weights.Load(1)));
  for (size_t i = 2; i < 5; ++i) EXPECT_EQ(Bytes(*out->Load(i)), Bytes(*model->Load(i)));

  // Tied weights: a name the weights list as an alias of another tensor.
  Model tied = Weights({testing::BytesTensor("tok", DType::kF32, Shape({4}), tuned)});
  tied.mutable_metadata()[kAliasesMetadataKey] = Json{{"small", "tok"}};
  opt.weights = &tied;  // "tok" itself is no initializer, but its values are used
  report = AsOnnx(*model).Rewrite(dir.File("tied.onnx"), opt);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->replaced, (std::vector<std::string>{"small"}));
  EXPECT_TRUE(report->unused.empty());
  EXPECT_EQ(Bytes(*MustOpen(dir.File("tied.onnx"))->Load(0)), tuned);

  auto refused = [&](const Model& w, bool allow_unused, StatusCode code, const std::string& gist) {
    onnx::RewriteOptions o;
    o.weights = &w;
    o.allow_unused_weights = allow_unused;
    const std::string dest = dir.File("refused.onnx");
    auto r = AsOnnx(*model).Rewrite(dest, o);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), code) << r.status().ToString();
    EXPECT_NE(r.status().message().find(gist), std::string::npos) << r.status().ToString();
    EXPECT_FALSE(fs::exists(dest));
    EXPECT_FALSE(fs::exists(dest + ".data"));
  };
  refused(Weights({testing::PatternTensor("small", DType::kF16, Shape({4}), 1)}), false,
          StatusCode::kInvalidArgument,
          "initializer 'small' is f32 [4] but the new weights give f16 [4]");
  refused(Weights({testing::PatternTensor("small", DType::kF32, Shape({2, 2}), 1)}), false,
          StatusCode::kInvalidArgument, "is f32 [4] but the new weights give f32 [2, 2]");
  refused(Weights({testing::BytesTensor("small", DType::kF32, Shape({4}), tuned),
                   testing::PatternTensor("lm_head", DType::kF32, Shape({4}), 1)}),
          false, StatusCode::kNotFound,
          "1 new weight(s) match no initializer of the model ('lm_head')");
  refused(Weights({testing::PatternTensor("other", DType::kF32, Shape({4}), 1)}), true,
          StatusCode::kNotFound, "none of the 1 new weights has the name of an initializer");
}

TEST(OnnxRewrite, RefusesBadRequestsAndLeavesNothingBehind) {
  TempDir dir;
  const std::string in = Save(dir.File("in.onnx"), SizesModel());
  auto model = MustOpen(in);
  ASSERT_TRUE(model);
  const auto count_files = [&] {
    return std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator());
  };
  auto before = count_files();
  auto expect = [&](const onnx::RewriteOptions& opt, const std::string& out, StatusCode code,
                    const std::string& gist) {
    auto r = AsOnnx(*model).Rewrite(out, opt);
    ASSERT_FALSE(r.ok()) << out;
    EXPECT_EQ(r.status().code(), code) << r.status().ToString();
    EXPECT_NE(r.status().message().find(gist), std::string::npos) << r.status().ToString();
    EXPECT_EQ(count_files(), before);
  };
  onnx::RewriteOptions opt;
  opt.placement = onnx::Placement::kExternal;
  const std::vector<std::string> bad_names = {"../x.data", "sub/x.data", "..", "out.onnx",
                                              std::string("a\0b", 3)};
  for (const std::string& bad : bad_names) {
    opt.data_file = bad;
    expect(opt, dir.File("out.onnx"), StatusCode::kInvalidArgument, "external data file name");
  }
  opt.data_file.clear();
  opt.write.no_overwrite = true;
  expect(opt, in, StatusCode::kAlreadyExists, "exists");
  testing::WriteBytes(dir.File("taken.onnx.data"), {1});
  before = count_files();
  expect(opt, dir.File("taken.onnx"), StatusCode::kAlreadyExists, "taken.onnx.data: exists");
  EXPECT_EQ(testing::ReadBytes(dir.File("taken.onnx.data")), std::vector<uint8_t>{1});
  fs::remove(dir.File("taken.onnx.data"));
  before = count_files();
  opt.write.no_overwrite = false;
  opt.write.shard_size = 10;
  expect(opt, dir.File("out.onnx"), StatusCode::kInvalidArgument, "shards");
}

TEST(OnnxRewrite, RefusesInlineModelsOverTwoGiBBeforeWritingAnything) {
  TempDir dir;
  // 2 GiB + 4 bytes of external data, as a sparse file: opening reads none of it.
  const std::string data = dir.File("w.bin");
  const uint64_t bytes = (uint64_t{1} << 31) + 4;
  ASSERT_EQ(::truncate(Save(data, std::string()).c_str(), static_cast<off_t>(bytes)), 0);
  ::onnx::ModelProto m = BaseModel();
  SetExternal(AddInit(m, "w", 2, {static_cast<int64_t>(bytes)}), {{"location", "w.bin"}});
  auto model = MustOpen(Save(dir.File("big.onnx"), m));
  ASSERT_TRUE(model);
  onnx::RewriteOptions opt;
  opt.placement = onnx::Placement::kInline;
  auto r = AsOnnx(*model).Rewrite(dir.File("inline.onnx"), opt);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("over protobuf's 2 GiB limit"), std::string::npos)
      << r.status().ToString();
  EXPECT_FALSE(fs::exists(dir.File("inline.onnx")));
}

TEST(OnnxRewrite, NestedExternalTensorsAreNotedAndRefused) {
  TempDir dir;
  testing::WriteBytes(dir.File("c.bin"), AsBytes(std::vector<float>{1, 2}));
  ::onnx::ModelProto m = BaseModel();
  AddInit(m, "w", 1, {1})->set_raw_data(std::string(4, '\0'));
  ::onnx::NodeProto* c = m.mutable_graph()->add_node();
  c->set_op_type("Constant");
  c->add_output("c");
  ::onnx::AttributeProto* a = c->add_attribute();
  a->set_name("value");
  a->set_type(::onnx::AttributeProto::TENSOR);
  a->mutable_t()->set_data_type(1);
  a->mutable_t()->add_dims(2);
  SetExternal(a->mutable_t(), {{"location", "c.bin"}});
  auto model = MustOpen(Save(dir.File("m.onnx"), m));
  ASSERT_TRUE(model);
  ASSERT_EQ(model->notes().size(), 1u);
  EXPECT_NE(model->notes()[0].find("1 tensor(s) inside nodes"), std::string::npos);
  auto r = AsOnnx(*model).Rewrite(dir.File("out.onnx"), {});
  EXPECT_EQ(r.status().code(), StatusCode::kUnsupported);
  EXPECT_FALSE(fs::exists(dir.File("out.onnx")));
}

TEST(OnnxRewrite, ReplacesItsOwnInputAndDataFileInPlace) {
  TempDir dir;
  const std::string path = Save(dir.File("model.onnx"), SizesModel());
  onnx::RewriteOptions opt;
  opt.placement = onnx::Placement::kExternal;
  auto original = MustOpen(path);
  ASSERT_TRUE(original);
  Model expected;
  for (size_t i = 0; i < original->tensors().size(); ++i) {
    auto t = original->Load(i);
    ASSERT_TRUE(t.ok());
    ASSERT_TRUE(
        expected.Add(testing::BytesTensor(t->info.name, t->info.dtype, t->info.shape, Bytes(*t)))
            .ok());
  }
  ASSERT_TRUE(AsOnnx(*original).Rewrite(path, opt).ok());
  original.reset();
  // Again, now that model.onnx.data is the input's own data file.
  auto external = MustOpen(path);
  ASSERT_TRUE(external);
  opt.size_threshold = 0;
  ASSERT_TRUE(AsOnnx(*external).Rewrite(path, opt).ok());
  external.reset();
  auto result = MustOpen(path);
  ASSERT_TRUE(result);
  EXPECT_TRUE(testing::SameModel(expected, *result, /*compare_metadata=*/false));
  EXPECT_EQ(result->files().files.size(), 2u);
}

}  // namespace
}  // namespace mp
