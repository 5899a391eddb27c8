// The registry on both backends (SQLite in the registry folder; a real PostgreSQL server from
// tests/pg_server.h): push and resolve every kind of reference, load bit-exact, deduplicate
// across versions, promote / compare-and-swap / rollback, aliases, lineage, rm + gc, fsck
// catching a flipped bit, the event log, names that must be refused, and several processes
// pushing and promoting at once.
#include "modelport/registry/registry.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "modelport/core/hash.h"
#include "pg_server.h"
#include "test_util.h"

namespace mp::registry {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

// A model of `n` f32 tensors of `elems` elements; tensor i's values depend on seeds[i].
Model MakeModel(const std::vector<uint32_t>& seeds, uint64_t elems = 1024) {
  Model m("safetensors");
  for (size_t i = 0; i < seeds.size(); ++i) {
    EXPECT_TRUE(m.Add(testing::PatternTensor("layer." + std::to_string(i) + ".weight", DType::kF32,
                                             Shape({elems}), seeds[i]))
                    .ok());
  }
  m.mutable_metadata()["format"] = "pt";
  return m;
}

class RegistryTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "postgresql") {
      std::string reason;
      db_ = testing::PostgresConninfo(&reason);
      if (db_.empty()) GTEST_SKIP() << reason;
    }
    auto r = Registry::Init(root(), db_);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    reg_ = std::move(*r);
  }
  std::string root() const { return dir_.File("registry"); }
  Registry& reg() { return *reg_; }
  std::unique_ptr<Registry> Reopen() {
    auto r = Registry::Open(root(), db_);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(*r) : nullptr;
  }
  VersionRecord MustPush(const std::string& name, const ModelSource& m, PushOptions o = {}) {
    o.durable = false;
    auto v = reg().Push(name, m, o);
    EXPECT_TRUE(v.ok()) << v.status().ToString();
    return v.ok() ? *v : VersionRecord{};
  }
  VersionRecord MustResolve(const std::string& text) {
    auto ref = ParseRef(text);
    EXPECT_TRUE(ref.ok()) << ref.status().ToString();
    auto v = reg().Resolve(*ref);
    EXPECT_TRUE(v.ok()) << text << ": " << v.status().ToString();
    return v.ok() ? *v : VersionRecord{};
  }
  Status ResolveStatus(const std::string& text) {
    auto ref = ParseRef(text);
    if (!ref.ok()) return ref.status();
    return reg().Resolve(*ref).status();
  }

  TempDir dir_;
  std::string db_;
  std::unique_ptr<Registry> reg_;
};

TEST_P(RegistryTest, PushResolvesEveryReferenceAndLoadsBitExact) {
  const Model m = MakeModel({1, 2, 3});
  const std::string config = dir_.File("config.json");
  std::ofstream(config) << R"({"hidden": 64})";
  PushOptions o;
  o.metrics = {{"accuracy", 0.91}};
  o.params = {{"lr", "3e-4"}};
  o.tags = {"baseline"};
  o.aliases = {"champion"};
  o.label = "1.0.0";
  o.assets = {config};
  const VersionRecord v1 = MustPush("gpt", m, o);
  EXPECT_EQ(v1.version, 1);
  EXPECT_EQ(v1.stage, "staged");
  EXPECT_EQ(v1.tensors, 3u);
  EXPECT_EQ(v1.logical_bytes, 3 * 4096u + 14u);
  EXPECT_EQ(v1.metrics.at("accuracy"), 0.91);
  EXPECT_EQ(v1.tags, std::vector<std::string>{"baseline"});
  EXPECT_EQ(v1.aliases, std::vector<std::string>{"champion"});
  EXPECT_EQ(v1.format, "safetensors");
  EXPECT_FALSE(v1.created_by.empty());
  const VersionRecord v2 = MustPush("gpt", MakeModel({1, 2, 4}));
  EXPECT_EQ(v2.version, 2);

  EXPECT_EQ(MustResolve("gpt").version, 2);
  EXPECT_EQ(MustResolve("gpt@latest").version, 2);
  EXPECT_EQ(MustResolve("gpt@1").version, 1);
  EXPECT_EQ(MustResolve("gpt@champion").version, 1);
  EXPECT_EQ(MustResolve("gpt@1.0.0").version, 1);
  EXPECT_EQ(MustResolve("gpt@" + v1.manifest).version, 1);
  EXPECT_EQ(ResolveStatus("gpt@3").code(), StatusCode::kNotFound);
  EXPECT_EQ(ResolveStatus("gpt@production").code(), StatusCode::kNotFound);
  EXPECT_EQ(ResolveStatus("nope").code(), StatusCode::kNotFound);
  EXPECT_EQ(ResolveStatus("gpt@nobody").code(), StatusCode::kNotFound);

  // From a fresh connection: the tensors, metadata and assets as pushed, verified on load.
  auto again = Reopen();
  ASSERT_TRUE(again);
  auto loaded = again->Load(MustResolve("gpt@1"));
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_TRUE(testing::SameModel(m, **loaded));
  auto assets = again->Assets(v1);
  ASSERT_TRUE(assets.ok());
  ASSERT_EQ(assets->size(), 1u);
  EXPECT_EQ((*assets)[0].first, "config.json");
  ASSERT_TRUE(again->ExportAsset((*assets)[0].second, dir_.File("out.json")).ok());
  EXPECT_EQ(testing::ReadBytes(dir_.File("out.json")), testing::ReadBytes(config));

  auto models = reg().ListModels();
  ASSERT_TRUE(models.ok());
  ASSERT_EQ(models->size(), 1u);
  EXPECT_EQ((*models)[0].versions, 2u);
  EXPECT_EQ((*models)[0].latest, 2);
  auto versions = reg().ListVersions("gpt");
  ASSERT_TRUE(versions.ok());
  ASSERT_EQ(versions->size(), 2u);

  // A label is unique within its model.
  PushOptions same_label;
  same_label.label = "1.0.0";
  same_label.durable = false;
  EXPECT_EQ(reg().Push("gpt", m, same_label).status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(MustResolve("gpt").version, 2);  // the refused push left no version
}

TEST_P(RegistryTest, IdenticalTensorsAreStoredOnce) {
  // Ten fine-tunes of a 20-tensor base, each changing 2 tensors (10%).
  std::vector<uint32_t> base(20);
  for (uint32_t i = 0; i < 20; ++i) base[i] = i + 1;
  MustPush("base", MakeModel(base));
  for (uint32_t k = 0; k < 10; ++k) {
    std::vector<uint32_t> tuned = base;
    tuned[2 * k] = 1000 + 2 * k;
    tuned[2 * k + 1] = 1001 + 2 * k;
    MustPush("tuned", MakeModel(tuned));
  }
  // The same model again stores nothing new.
  auto before = reg().Du();
  ASSERT_TRUE(before.ok());
  MustPush("base", MakeModel(base));
  auto du = reg().Du();
  ASSERT_TRUE(du.ok());
  EXPECT_EQ(du->versions, 12u);
  const uint64_t tensor_bytes = 4096;
  EXPECT_EQ(du->logical_bytes, 12 * 20 * tensor_bytes);
  // Stored: the base's 20 tensors, 20 changed ones, and one manifest per distinct version.
  uint64_t manifests = 0;
  std::set<std::string> distinct;
  for (const std::string name : {"base", "tuned"}) {
    auto versions = reg().ListVersions(name);
    ASSERT_TRUE(versions.ok());
    for (const auto& v : *versions) {
      if (distinct.insert(v.manifest).second) manifests += *reg().blobs().Size(v.manifest);
    }
  }
  EXPECT_EQ(distinct.size(), 11u);  // base@2 is base@1's manifest
  EXPECT_EQ(du->stored_bytes, 40 * tensor_bytes + manifests);
  EXPECT_EQ(du->stored_bytes, before->stored_bytes);
}

TEST_P(RegistryTest, PromoteCompareAndSwapAndRollback) {
  for (uint32_t s : {1u, 2u, 3u}) MustPush("m", MakeModel({s}));
  auto promote = [&](const std::string& ref, std::optional<int64_t> expect) {
    return reg().Promote(*ParseRef(ref), expect);
  };
  ASSERT_TRUE(promote("m@1", std::nullopt).ok());
  EXPECT_EQ(MustResolve("m@production").version, 1);
  ASSERT_TRUE(promote("m@2", 1).ok());
  EXPECT_EQ(MustResolve("m@production").version, 2);
  EXPECT_EQ(MustResolve("m@1").stage, "archived");
  // A promotion expecting a production that is no longer there loses.
  auto lost = promote("m@3", 1);
  EXPECT_EQ(lost.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(lost.status().message().find("production is @2, not @1"), std::string::npos)
      << lost.status().ToString();
  EXPECT_EQ(MustResolve("m@production").version, 2);
  ASSERT_TRUE(promote("m@3", 2).ok());
  // Rollback walks the production history back: 3 -> 2 -> 1.
  auto back = reg().Rollback("m");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->version, 2);
  EXPECT_EQ(back->stage, "production");
  EXPECT_EQ(MustResolve("m@3").stage, "archived");
  back = reg().Rollback("m");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->version, 1);  // each rollback undoes one more promotion
  // The production version is not removed without force.
  EXPECT_EQ(reg().Rollback("m").status().code(), StatusCode::kNotFound);  // nothing before 1
  EXPECT_EQ(reg().Remove(*ParseRef("m@1"), false).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(reg().Remove(*ParseRef("m@1"), true).ok());
  EXPECT_EQ(ResolveStatus("m@production").code(), StatusCode::kNotFound);
  // Version numbers are never reused.
  EXPECT_EQ(MustPush("m", MakeModel({9})).version, 4);
}

TEST_P(RegistryTest, AliasesMoveAndReservedNamesAreRefused) {
  MustPush("m", MakeModel({1}));
  MustPush("m", MakeModel({2}));
  ASSERT_TRUE(reg().SetAlias(*ParseRef("m@1"), "champion").ok());
  EXPECT_EQ(MustResolve("m@champion").version, 1);
  ASSERT_TRUE(reg().SetAlias(*ParseRef("m@2"), "champion").ok());
  EXPECT_EQ(MustResolve("m@champion").version, 2);
  EXPECT_EQ(MustResolve("m@2").aliases, std::vector<std::string>{"champion"});
  for (const char* reserved : {"latest", "production", "12", "sha256:x"}) {
    EXPECT_EQ(reg().SetAlias(*ParseRef("m@1"), reserved).code(), StatusCode::kInvalidArgument)
        << reserved;
  }
  ASSERT_TRUE(reg().RemoveAlias("m", "champion").ok());
  EXPECT_EQ(ResolveStatus("m@champion").code(), StatusCode::kNotFound);
  EXPECT_EQ(reg().RemoveAlias("m", "champion").code(), StatusCode::kNotFound);
}

TEST_P(RegistryTest, LineageAndTheEventLog) {
  const VersionRecord base = MustPush("base", MakeModel({1}));
  PushOptions o;
  o.from = *ParseRef("base@1");
  o.relation = "quantized";
  o.command = "modelport convert --dtype f16";
  const VersionRecord q = MustPush("base-f16", MakeModel({5}), o);
  ASSERT_TRUE(q.parent.has_value());
  EXPECT_EQ(q.parent->model, "base");
  EXPECT_EQ(q.parent->version, base.version);
  EXPECT_EQ(q.parent->relation, "quantized");
  EXPECT_EQ(q.parent->command, "modelport convert --dtype f16");
  o.from = *ParseRef("base@7");
  o.durable = false;
  EXPECT_EQ(reg().Push("x", MakeModel({1}), o).status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(reg().Promote(*ParseRef("base@1"), std::nullopt).ok());
  auto log = reg().Log("", 0);
  ASSERT_TRUE(log.ok());
  ASSERT_EQ(log->size(), 3u);
  EXPECT_EQ((*log)[0].action, "promote");
  EXPECT_EQ((*log)[1].action, "push");
  EXPECT_EQ((*log)[1].model, "base-f16");
  EXPECT_EQ((*log)[1].detail.at("from"), "base@1");
  EXPECT_EQ((*log)[2].action, "push");
  EXPECT_GT((*log)[0].seq, (*log)[1].seq);
  auto mine = reg().Log("base", 1);
  ASSERT_TRUE(mine.ok());
  ASSERT_EQ(mine->size(), 1u);
  EXPECT_EQ((*mine)[0].action, "promote");
}

TEST_P(RegistryTest, GcRemovesOnlyWhatNoVersionReaches) {
  MustPush("m", MakeModel({1, 2, 3}));
  MustPush("m", MakeModel({1, 2, 4}));
  ASSERT_TRUE(reg().Remove(*ParseRef("m@1"), false).ok());
  // Young blobs are kept (a push may be about to reference them).
  auto kept = reg().Gc(3600, false);
  ASSERT_TRUE(kept.ok()) << kept.status().ToString();
  EXPECT_EQ(kept->removed_blobs, 0u);
  EXPECT_EQ(kept->kept_young, 2u);  // v1's manifest and its third tensor
  auto dry = reg().Gc(0, true);
  ASSERT_TRUE(dry.ok());
  EXPECT_EQ(dry->removed_blobs, 2u);
  auto gc = reg().Gc(0, false);
  ASSERT_TRUE(gc.ok());
  EXPECT_EQ(gc->removed_blobs, 2u);
  EXPECT_EQ(gc->removed_bytes, dry->removed_bytes);
  EXPECT_GT(gc->removed_bytes, 4096u);  // the tensor and the manifest
  auto loaded = reg().Load(MustResolve("m@2"));
  ASSERT_TRUE(loaded.ok());
  EXPECT_TRUE(testing::SameModel(MakeModel({1, 2, 4}), **loaded));
  auto fsck = reg().Fsck();
  ASSERT_TRUE(fsck.ok());
  EXPECT_TRUE(fsck->problems.empty()) << fsck->problems[0];
}

TEST_P(RegistryTest, GcKeepsOldBlobsThatAPushJustReused) {
  MustPush("m", MakeModel({1, 2}));
  ASSERT_TRUE(reg().Remove(*ParseRef("m@1"), false).ok());
  // Its blobs are unreferenced and two hours old: gc would take them...
  auto age = [&] {
    const timespec old[2] = {{time(nullptr) - 7200, 0}, {time(nullptr) - 7200, 0}};
    for (const auto& e : fs::recursive_directory_iterator(root() + "/blobs")) {
      if (e.is_regular_file()) {
        ASSERT_EQ(::utimensat(AT_FDCWD, e.path().c_str(), old, 0), 0);
      }
    }
  };
  age();
  // ...but a push that reuses them (before its version row exists) makes them young again.
  MustPush("m", MakeModel({1, 2}));
  auto gc = reg().Gc(3600, false);
  ASSERT_TRUE(gc.ok()) << gc.status().ToString();
  EXPECT_EQ(gc->removed_blobs, 0u);
  auto loaded = reg().Load(MustResolve("m@2"));
  ASSERT_TRUE(loaded.ok());
  EXPECT_TRUE(testing::SameModel(MakeModel({1, 2}), **loaded));
  auto fsck = reg().Fsck();
  ASSERT_TRUE(fsck.ok());
  EXPECT_TRUE(fsck->problems.empty());
}

TEST_P(RegistryTest, GcWithNoGracePeriodDuringPushesLosesNothingReachable) {
  // Old unreferenced blobs: two that the pushes below reuse, two that nobody does.
  MustPush("m", MakeModel({1, 2, 3, 4}));
  ASSERT_TRUE(reg().Remove(*ParseRef("m@1"), false).ok());
  const timespec old[2] = {{time(nullptr) - 7200, 0}, {time(nullptr) - 7200, 0}};
  for (const auto& e : fs::recursive_directory_iterator(root() + "/blobs")) {
    if (e.is_regular_file()) {
      ASSERT_EQ(::utimensat(AT_FDCWD, e.path().c_str(), old, 0), 0);
    }
  }
  auto model_of = [](int p, int k) {
    return MakeModel({1, 2, static_cast<uint32_t>(1000 + p * 10 + k)});
  };
  constexpr int kPushers = 3, kEach = 4;
  const std::string stop = dir_.File("stop");
  const pid_t collector = fork();
  ASSERT_GE(collector, 0);
  if (collector == 0) {
    auto r = Registry::Open(root(), db_);
    if (!r.ok()) _exit(10);
    int sweeps = 0;
    while (!fs::exists(stop) || sweeps < 3) {
      auto gc = (*r)->Gc(0, false);
      if (!gc.ok()) {
        std::fprintf(stderr, "gc failed: %s\n", gc.status().ToString().c_str());
        _exit(11);
      }
      ++sweeps;
    }
    _exit(0);
  }
  std::vector<pid_t> pushers;
  for (int p = 0; p < kPushers; ++p) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto r = Registry::Open(root(), db_);
      if (!r.ok()) _exit(10);
      for (int k = 0; k < kEach; ++k) {
        PushOptions o;
        o.durable = false;
        o.tags = {"p" + std::to_string(p) + "k" + std::to_string(k)};
        auto pushed = (*r)->Push("m", model_of(p, k), o);
        if (!pushed.ok()) {
          std::fprintf(stderr, "push failed: %s\n", pushed.status().ToString().c_str());
          _exit(11);
        }
      }
      _exit(0);
    }
    pushers.push_back(pid);
  }
  for (pid_t pid : pushers) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  std::ofstream(stop) << "stop";
  int status = 0;
  ASSERT_EQ(waitpid(collector, &status, 0), collector);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;

  // Every version is whole and holds what was pushed; the two blobs nobody reused are gone.
  auto versions = reg().ListVersions("m");
  ASSERT_TRUE(versions.ok());
  ASSERT_EQ(versions->size(), static_cast<size_t>(kPushers * kEach));
  for (const auto& v : *versions) {
    ASSERT_EQ(v.tags.size(), 1u);
    const int p = v.tags[0][1] - '0', k = v.tags[0][3] - '0';
    auto loaded = reg().Load(v, /*verify=*/true);
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    EXPECT_TRUE(testing::SameModel(model_of(p, k), **loaded)) << "m@" << v.version;
  }
  auto fsck = reg().Fsck();
  ASSERT_TRUE(fsck.ok());
  EXPECT_TRUE(fsck->problems.empty()) << fsck->problems[0];
  const Model first = MakeModel({1, 2, 3, 4});
  for (size_t i = 2; i < 4; ++i) {
    auto t = first.Load(i);
    ASSERT_TRUE(t.ok());
    auto digest = reg().blobs().Put(t->bytes(), false);  // re-adding it shows it was gone
    ASSERT_TRUE(digest.ok());
    EXPECT_TRUE(digest->written) << "tensor " << i << " of the removed version survived gc";
  }
}

TEST_P(RegistryTest, FsckAndVerifiedReadsCatchAFlippedBit) {
  const VersionRecord v = MustPush("m", MakeModel({1, 2}));
  auto fsck = reg().Fsck();
  ASSERT_TRUE(fsck.ok());
  EXPECT_TRUE(fsck->problems.empty());
  EXPECT_EQ(fsck->versions_checked, 1u);
  EXPECT_EQ(fsck->blobs_checked, 3u);
  // Flip one bit of the first tensor's blob.
  auto model = reg().Load(v);
  ASSERT_TRUE(model.ok());
  const std::string blob = (*model)->files().files[0];
  ::chmod(blob.c_str(), 0644);
  {
    std::fstream f(blob, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(100);
    char c = 0;
    f.read(&c, 1);
    c ^= 0x10;
    f.seekp(100);
    f.write(&c, 1);
  }
  ::chmod(blob.c_str(), 0444);
  fsck = reg().Fsck();
  ASSERT_TRUE(fsck.ok());
  ASSERT_EQ(fsck->problems.size(), 1u);
  auto verified = reg().Load(v, /*verify=*/true);
  ASSERT_TRUE(verified.ok());
  EXPECT_EQ((*verified)->Load(0).status().code(), StatusCode::kChecksumMismatch);
  const Status all = reg().Verify(v);
  EXPECT_EQ(all.code(), StatusCode::kChecksumMismatch) << all.ToString();
  EXPECT_NE(all.message().find("tensor 'layer.0.weight'"), std::string::npos) << all.ToString();
  // The manifest keeps each blob's XXH3 checksum, which verified reads check.
  EXPECT_NE(all.message().find("no longer matches its xxh3 checksum"), std::string::npos)
      << all.ToString();
  auto unverified = reg().Load(v, /*verify=*/false);
  ASSERT_TRUE(unverified.ok());
  EXPECT_TRUE((*unverified)->Load(0).ok());
}

TEST_P(RegistryTest, ManifestsWithoutChecksumsAreVerifiedBySha256) {
  // Versions pushed before manifests kept XXH3 checksums: their verified reads re-hash with
  // SHA-256, and still catch a flipped bit.
  const VersionRecord v = MustPush("m", MakeModel({1, 2}));
  auto store = BlobStore::Open(root(), /*create=*/false);
  ASSERT_TRUE(store.ok());
  auto text = (*store)->Read(v.manifest);
  ASSERT_TRUE(text.ok());
  Json manifest =
      Json::parse(std::string(reinterpret_cast<const char*>((*text)->data()), (*text)->size()));
  ASSERT_EQ(manifest.at("tensors").size(), 2u);
  for (auto& t : manifest.at("tensors")) {
    ASSERT_TRUE(IsXxh3Hex(t.at("xxh3").get<std::string>())) << t;
    t.erase("xxh3");
  }
  const std::string old_text = manifest.dump();
  auto old_blob = (*store)->Put(
      {reinterpret_cast<const uint8_t*>(old_text.data()), old_text.size()}, /*durable=*/false);
  ASSERT_TRUE(old_blob.ok());
  {
    auto db = GetParam() == "postgresql" ? OpenPostgres(db_) : OpenSqlite(root() + "/registry.db");
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    ASSERT_TRUE(
        (*db)
            ->Query("UPDATE versions SET manifest = $1 WHERE model = 'm'", {old_blob->digest})
            .ok());
  }
  const VersionRecord old = MustResolve("m@1");
  ASSERT_EQ(old.manifest, old_blob->digest);
  ASSERT_TRUE(reg().Verify(old).ok());
  auto model = reg().Load(old, /*verify=*/true);
  ASSERT_TRUE(model.ok());
  ASSERT_TRUE((*model)->Load(1).ok());
  const std::string blob = (*model)->files().files[1];
  ::chmod(blob.c_str(), 0644);
  {
    std::fstream f(blob, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(3);
    f.put('\x7f');
  }
  ::chmod(blob.c_str(), 0444);
  const Status s = (*model)->Load(1).status();
  EXPECT_EQ(s.code(), StatusCode::kChecksumMismatch) << s.ToString();
  EXPECT_NE(s.message().find("now hashes to sha256:"), std::string::npos) << s.ToString();
  EXPECT_EQ(reg().Verify(old).code(), StatusCode::kChecksumMismatch);
}

TEST_P(RegistryTest, SeveralProcessesPushAndPromoteAtOnce) {
  constexpr int kProcs = 6;
  constexpr int kEach = 3;
  std::vector<pid_t> children;
  for (int p = 0; p < kProcs; ++p) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto r = Registry::Open(root(), db_);
      if (!r.ok()) _exit(10);
      for (int k = 0; k < kEach; ++k) {
        PushOptions o;
        o.durable = false;
        o.tags = {"p" + std::to_string(p)};
        if (!(*r)->Push("shared", MakeModel({static_cast<uint32_t>(p * 100 + k)}), o).ok()) {
          _exit(11);
        }
      }
      _exit(0);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  auto versions = reg().ListVersions("shared");
  ASSERT_TRUE(versions.ok());
  ASSERT_EQ(versions->size(), static_cast<size_t>(kProcs * kEach));  // nothing lost
  for (int i = 0; i < kProcs * kEach; ++i) EXPECT_EQ((*versions)[i].version, i + 1);

  // Racing promotions that all expect "no production": exactly one wins.
  children.clear();
  for (int p = 0; p < kProcs; ++p) {
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto r = Registry::Open(root(), db_);
      if (!r.ok()) _exit(10);
      auto won = (*r)->Promote(*ParseRef("shared@" + std::to_string(p + 1)), 0);
      _exit(won.ok() ? 0 : won.status().code() == StatusCode::kAlreadyExists ? 1 : 12);
    }
    children.push_back(pid);
  }
  int winners = 0;
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_LE(WEXITSTATUS(status), 1) << "unexpected failure in a promoting process";
    winners += WEXITSTATUS(status) == 0;
  }
  EXPECT_EQ(winners, 1);
  auto production = reg().Resolve(*ParseRef("shared@production"));
  ASSERT_TRUE(production.ok());
  EXPECT_LE(production->version, kProcs);
}

TEST_P(RegistryTest, ANewerSchemaIsRefusedAndInitIsIdempotent) {
  MustPush("m", MakeModel({1}));
  auto db = GetParam() == "postgresql" ? OpenPostgres(db_) : OpenSqlite(root() + "/registry.db");
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  auto set_version = [&](const std::string& v) {
    ASSERT_TRUE(
        (*db)->Query("UPDATE registry_meta SET value = $1 WHERE key = 'schema_version'", {v}).ok());
  };
  set_version("99");
  auto newer = Registry::Open(root(), db_);
  EXPECT_EQ(newer.status().code(), StatusCode::kUnsupported) << newer.status().ToString();
  EXPECT_EQ(Registry::Init(root(), db_).status().code(), StatusCode::kUnsupported);
  set_version("2");
  ASSERT_TRUE(Registry::Init(root(), db_).ok());  // init again: nothing to migrate, data kept
  auto reopened = Reopen();
  ASSERT_TRUE(reopened);
  auto v = reopened->Resolve(*ParseRef("m@1"));
  EXPECT_TRUE(v.ok()) << v.status().ToString();
}

TEST_P(RegistryTest, ASchemaOneRegistryMigratesToTwo) {
  MustPush("m", MakeModel({1}));
  {
    auto db = GetParam() == "postgresql" ? OpenPostgres(db_) : OpenSqlite(root() + "/registry.db");
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    // Back to what schema 1 had: no promotion policy column.
    ASSERT_TRUE((*db)->ExecScript("ALTER TABLE models DROP COLUMN require_validation").ok());
    ASSERT_TRUE((*db)
                    ->Query("UPDATE registry_meta SET value = '1' WHERE key = "
                            "'schema_version'")
                    .ok());
  }
  reg_.reset();
  auto old = Registry::Open(root(), db_);
  EXPECT_EQ(old.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(old.status().message().find("run `modelport registry init` to migrate it"),
            std::string::npos)
      << old.status().ToString();
  auto migrated = Registry::Init(root(), db_);
  ASSERT_TRUE(migrated.ok()) << migrated.status().ToString();
  reg_ = std::move(*migrated);
  EXPECT_EQ(reg().RequiresValidation("m").value_or(true), false);
  EXPECT_EQ(MustResolve("m@1").version, 1);
}

TEST_P(RegistryTest, SamplesTravelWithTheVersion) {
  const std::string inputs = dir_.File("inputs.npz"), expected = dir_.File("outputs.npz");
  testing::WriteBytes(inputs, {1, 2, 3});
  testing::WriteBytes(expected, {4, 5});
  PushOptions o;
  VersionSamples s;
  s.inputs = inputs;
  s.expected = expected;
  s.atol = 1e-3;
  s.rtol = 0;
  s.per_output["logits"] = {0.5, 0.25};
  o.samples = s;
  const VersionRecord v = MustPush("m", MakeModel({1}), o);
  auto got = reg().SamplesOf(v);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->inputs, "inputs.npz");
  EXPECT_EQ((*got)->expected, "outputs.npz");
  EXPECT_EQ((*got)->atol, 1e-3);
  EXPECT_EQ((*got)->rtol, 0);
  EXPECT_EQ((*got)->per_output.at("logits"), std::make_pair(0.5, 0.25));
  // The samples are assets of the version: exported, verified, reachable for gc.
  auto assets = reg().Assets(v);
  ASSERT_TRUE(assets.ok());
  ASSERT_EQ(assets->size(), 2u);
  EXPECT_TRUE(reg().ExportAsset((*assets)[0].second, dir_.File("back.npz")).ok());
  EXPECT_EQ(testing::ReadBytes(dir_.File("back.npz")), std::vector<uint8_t>({1, 2, 3}));
  auto gc = reg().Gc(0, false);
  ASSERT_TRUE(gc.ok());
  EXPECT_TRUE(reg().Verify(v).ok());
  // A version pushed without samples has none.
  auto none = reg().SamplesOf(MustPush("m", MakeModel({2})));
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST_P(RegistryTest, PromotionGateRunsWhenThePolicyRequiresIt) {
  for (uint32_t s : {1u, 2u, 3u}) MustPush("m", MakeModel({s}));
  EXPECT_EQ(reg().RequiresValidation("m").value_or(true), false);
  EXPECT_EQ(reg().SetRequireValidation("nope", true).code(), StatusCode::kNotFound);
  int gate_calls = 0;
  auto gate = [&](const VersionRecord& v) -> Status {
    ++gate_calls;
    return v.version == 2 ? InvalidArgument("m@2 failed validation") : Status::Ok();
  };
  // Without the policy the gate is not consulted.
  ASSERT_TRUE(reg().Promote(*ParseRef("m@2"), std::nullopt, gate).ok());
  EXPECT_EQ(gate_calls, 0);
  ASSERT_TRUE(reg().SetRequireValidation("m", true).ok());
  EXPECT_EQ(reg().RequiresValidation("m").value_or(false), true);
  // No gate: refused. A failing gate: refused, production unchanged.
  EXPECT_EQ(reg().Promote(*ParseRef("m@1"), std::nullopt).status().code(),
            StatusCode::kInvalidArgument);
  ASSERT_TRUE(reg().Promote(*ParseRef("m@1"), std::nullopt, gate).ok());
  EXPECT_EQ(gate_calls, 1);
  auto refused = reg().Promote(*ParseRef("m@2"), std::nullopt, gate);
  EXPECT_EQ(refused.status().message(), "m@2 failed validation");
  EXPECT_EQ(MustResolve("m@production").version, 1);
  // The version validated is the one promoted, even through a moving reference.
  auto latest = reg().Promote(*ParseRef("m@latest"), std::nullopt, gate);
  ASSERT_TRUE(latest.ok()) << latest.status().ToString();
  EXPECT_EQ(latest->version, 3);
  EXPECT_EQ(gate_calls, 3);
  auto log = reg().Log("m", 0);
  ASSERT_TRUE(log.ok());
  bool saw_policy = false;
  for (const Event& e : *log) saw_policy |= e.action == "policy";
  EXPECT_TRUE(saw_policy);
}

TEST_P(RegistryTest, TheFolderRemembersItsDatabase) {
  MustPush("gpt", MakeModel({1, 2}));
  const fs::path file = fs::path(root()) / "database.url";
  // Opened with no address: the folder's own SQLite file, or the server it was made on.
  auto reopened = Registry::Open(root(), "");
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  EXPECT_TRUE((*reopened)->Resolve(ParseRef("gpt@1").value()).ok());
  if (GetParam() == "sqlite") {
    EXPECT_FALSE(fs::exists(file));
    return;
  }
  ASSERT_TRUE(fs::exists(file));
  EXPECT_EQ(fs::status(file).permissions() & (fs::perms::group_all | fs::perms::others_all),
            fs::perms::none);
  // Another database for the same blobs is refused, not silently mixed.
  auto other = Registry::Open(root(), "postgresql://127.0.0.1:1/elsewhere");
  EXPECT_EQ(other.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(other.status().message().find("database.url"), std::string::npos)
      << other.status().message();
}

INSTANTIATE_TEST_SUITE_P(Backends, RegistryTest, ::testing::Values("sqlite", "postgresql"),
                         [](const auto& info) { return info.param; });

TEST(RegistryNames, StrictPatternAndReferences) {
  const std::vector<std::string> good = {"gpt2", "Llama-3.1-8B", "a", "x_y.z-1",
                                         std::string(128, 'a')};
  for (const std::string& ok : good) {
    EXPECT_TRUE(CheckName(ok, "model name").ok()) << ok;
  }
  const std::vector<std::string> bad_names = {"",
                                              "../x",
                                              "a/b",
                                              "a\\b",
                                              ".hidden",
                                              "-x",
                                              "a..b",
                                              "a b",
                                              std::string("a\0b", 3),
                                              "a\x01",
                                              std::string(129, 'a'),
                                              "\xc3\xa9"};
  for (const std::string& bad : bad_names) {
    const Status s = CheckName(bad, "model name");
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(s.message().find('\n'), std::string::npos);
  }
  auto r = ParseRef("gpt2@production");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->name, "gpt2");
  EXPECT_EQ(r->selector, "production");
  EXPECT_EQ(ParseRef("gpt2")->selector, "");
  EXPECT_EQ(ParseRef("gpt2@12")->selector, "12");
  EXPECT_FALSE(ParseRef("gpt2@sha256:abc").ok());
  EXPECT_FALSE(ParseRef("../etc@1").ok());
  EXPECT_FALSE(ParseRef("gpt2@a/b").ok());
  EXPECT_TRUE(ParseRef("gpt2@sha256:" + std::string(64, 'a')).ok());
}

TEST(RegistryOpen, AnEmptyFolderIsNoRegistry) {
  TempDir dir;
  auto r = Registry::Open(dir.File("none"), "");
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace mp::registry
