#include "modelport/registry/registry.h"

#include <onnx/onnx_pb.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>

#include "modelport/core/file.h"
#include "modelport/core/hash.h"
#include "modelport/core/json.h"
#include "modelport/core/parallel.h"
#include "modelport/formats/onnx/onnx.h"
#include "modelport/formats/torch/torch.h"
#include "modelport/formats/zip/zip.h"

namespace mp::registry {
namespace {

namespace fs = std::filesystem;

constexpr char kManifestSchema[] = "modelport.manifest.v1";
constexpr uint64_t kMaxManifestBytes = 256 << 20;
// The data file a stored ONNX graph names; export renames it after its destination.
constexpr char kOnnxDataName[] = "model.onnx.data";
// The database a registry folder was initialised with, when it is not the folder's own SQLite
// file: later commands in that folder find it without --db.
constexpr char kDatabaseFile[] = "database.url";
constexpr uint64_t kMaxDatabaseUrlBytes = 64 * 1024;

// The schema, identical in both dialects but for the event sequence column. TEXT holds JSON.
// One production version per model is a partial unique index, so the database itself refuses
// a second one whatever the code does.
std::string SchemaV1(std::string_view dialect) {
  const std::string seq = dialect == "postgresql" ? "seq BIGSERIAL PRIMARY KEY"
                                                  : "seq INTEGER PRIMARY KEY AUTOINCREMENT";
  return R"sql(
CREATE TABLE IF NOT EXISTS models (
  name TEXT PRIMARY KEY,
  created_at TEXT NOT NULL,
  next_version BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
  model TEXT NOT NULL REFERENCES models(name),
  version BIGINT NOT NULL,
  manifest TEXT NOT NULL,
  label TEXT,
  stage TEXT NOT NULL CHECK (stage IN ('staged', 'production', 'archived')),
  format TEXT NOT NULL,
  tensors BIGINT NOT NULL,
  logical_bytes BIGINT NOT NULL,
  metadata TEXT NOT NULL,
  metrics TEXT NOT NULL,
  params TEXT NOT NULL,
  tags TEXT NOT NULL,
  created_at TEXT NOT NULL,
  created_by TEXT NOT NULL,
  parent_model TEXT,
  parent_version BIGINT,
  relation TEXT,
  command TEXT,
  lineage_params TEXT,
  PRIMARY KEY (model, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS versions_one_production ON versions (model)
  WHERE stage = 'production';
CREATE UNIQUE INDEX IF NOT EXISTS versions_label ON versions (model, label)
  WHERE label IS NOT NULL;
CREATE TABLE IF NOT EXISTS aliases (
  model TEXT NOT NULL,
  alias TEXT NOT NULL,
  version BIGINT NOT NULL,
  PRIMARY KEY (model, alias),
  FOREIGN KEY (model, version) REFERENCES versions (model, version)
);
CREATE TABLE IF NOT EXISTS events (
  )sql" + seq +
         R"sql(,
  at TEXT NOT NULL,
  who TEXT NOT NULL,
  action TEXT NOT NULL,
  model TEXT NOT NULL,
  version BIGINT NOT NULL,
  detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS registry_meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
)sql";
}

// How each schema version is reached from the one before it: step k makes version k + 1.
// Later schema changes append a step; `registry init` applies the missing ones in one
// transaction, and Open refuses a database that is behind (naming the command that migrates
// it) or ahead (a newer modelport made it).
std::vector<std::string> Migrations(std::string_view dialect) {
  return {SchemaV1(dialect),
          // 2: per-model promotion policy (validate before promote).
          "ALTER TABLE models ADD COLUMN require_validation BIGINT NOT NULL DEFAULT 0;"};
}

int64_t LatestSchema() { return static_cast<int64_t>(Migrations("sqlite").size()); }

// The database's schema version; 0 for one that holds no registry yet.
Result<int64_t> SchemaVersion(Db& db) {
  auto rows = db.Query("SELECT value FROM registry_meta WHERE key = 'schema_version'");
  if (!rows) return int64_t{0};  // no registry_meta table: an empty database
  if (rows->empty()) return int64_t{0};
  return AsInt((*rows)[0][0]);
}

// Names from files may hold anything: quoted and escaped so an error stays on one line.
std::string Quote(std::string_view s) { return zip::QuoteName(s); }

std::string NowUtc() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

std::string CurrentUser() {
  if (const char* u = std::getenv("MODELPORT_USER"); u != nullptr && *u != '\0') return u;
  if (const passwd* pw = getpwuid(geteuid()); pw != nullptr && pw->pw_name != nullptr) {
    return pw->pw_name;
  }
  return "uid " + std::to_string(geteuid());
}

bool AllDigits(std::string_view s) {
  return !s.empty() && s.size() <= 18 &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Selectors a reference resolves by meaning, which aliases and labels may not take.
bool IsReservedSelector(std::string_view s) {
  return s == "latest" || s == "production" || AllDigits(s) || s.starts_with("sha256:");
}

Json ParseJsonText(const std::string& text, Json fallback) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  return j.is_discarded() ? fallback : j;
}

std::vector<std::string> TagsOf(const std::string& text) {
  std::vector<std::string> out;
  const Json j = ParseJsonText(text, Json::array());
  if (j.is_array()) {
    for (const auto& t : j) {
      if (t.is_string()) out.push_back(t.get<std::string>());
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The manifest: what a version is made of.

struct ManifestTensor {
  TensorInfo info;
  std::string blob;
  std::string xxh3;  // the blob's BlobInfo::xxh3 ("" in manifests written before it was kept)
};
struct Manifest {
  std::string format;
  Json metadata = Json::object();
  std::vector<ManifestTensor> tensors;
  std::vector<std::pair<std::string, BlobInfo>> assets;  // file name, blob
  // The model's graph, for formats that have one: an ONNX model with every initializer's data
  // left out (external_data naming "model.onnx.data", a file that is never written), or a
  // TorchScript archive without the storages its tensors rebuild (torch::SplitTorchScript).
  std::optional<BlobInfo> graph;
  std::string graph_format;  // "onnx" or "torchscript"
  // Validation samples: {"inputs", "expected" (asset names), "atol", "rtol", "per_output":
  // {"name": {"atol", "rtol"}}}.
  std::optional<Json> validation;
};

// Every blob a manifest names besides its own: (what, digest, bytes).
// Every blob a manifest references, with what it is ("tensor 'w'", "asset 'x'", "graph").
struct BlobRef {
  std::string what, digest;
  uint64_t bytes = 0;
  std::string xxh3;
};
std::vector<BlobRef> BlobsOf(const Manifest& m) {
  std::vector<BlobRef> out;
  for (const auto& t : m.tensors) {
    out.push_back({"tensor " + Quote(t.info.name), t.blob, t.info.byte_size, t.xxh3});
  }
  for (const auto& [path, blob] : m.assets) {
    out.push_back({"asset " + Quote(path), blob.digest, blob.size, blob.xxh3});
  }
  if (m.graph) out.push_back({"graph", m.graph->digest, m.graph->size, m.graph->xxh3});
  return out;
}

std::string ManifestJson(const Manifest& m) {
  Json doc = Json::object();
  doc["schema"] = kManifestSchema;
  doc["format"] = m.format;
  doc["metadata"] = m.metadata;
  Json tensors = Json::array();
  for (const auto& t : m.tensors) {
    tensors.push_back({{"name", t.info.name},
                       {"dtype", DTypeName(t.info.dtype)},
                       {"shape", t.info.shape.dims()},
                       {"bytes", t.info.byte_size},
                       {"blob", t.blob}});
    if (!t.xxh3.empty()) tensors.back()["xxh3"] = t.xxh3;
  }
  doc["tensors"] = std::move(tensors);
  Json assets = Json::array();
  for (const auto& [path, blob] : m.assets) {
    assets.push_back({{"path", path}, {"bytes", blob.size}, {"blob", blob.digest}});
    if (!blob.xxh3.empty()) assets.back()["xxh3"] = blob.xxh3;
  }
  doc["assets"] = std::move(assets);
  if (m.graph) {
    doc["graph"] = {
        {"format", m.graph_format}, {"bytes", m.graph->size}, {"blob", m.graph->digest}};
    if (!m.graph->xxh3.empty()) doc["graph"]["xxh3"] = m.graph->xxh3;
  }
  if (m.validation) doc["validation"] = *m.validation;
  return doc.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Result<Manifest> ParseManifest(std::span<const uint8_t> bytes, const std::string& digest) {
  auto fail = [&](const std::string& why) { return Corrupt("manifest " + digest + ": " + why); };
  // A blob's optional XXH3 checksum (absent from manifests written before it was kept).
  auto checksum = [&](const Json& entry, std::string* out) {
    if (!entry.contains("xxh3")) return true;
    *out = entry.at("xxh3").get<std::string>();
    return IsXxh3Hex(*out);
  };
  auto doc =
      ParseStrictJson(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
                      "manifest", /*max_depth=*/64);
  if (!doc) return fail(doc.error().message());
  const Json& j = *doc;
  if (!j.is_object() || j.value("schema", "") != kManifestSchema) {
    return fail("not a " + std::string(kManifestSchema) + " document");
  }
  Manifest m;
  try {
    m.format = j.at("format").get<std::string>();
    m.metadata = j.at("metadata");
    for (const auto& t : j.at("tensors")) {
      auto dtype = ParseDType(t.at("dtype").get<std::string>());
      if (!dtype) return fail("tensor dtype " + t.at("dtype").dump());
      MP_ASSIGN_OR_RETURN(TensorInfo info,
                          TensorInfo::Make(t.at("name").get<std::string>(), *dtype,
                                           Shape(t.at("shape").get<std::vector<uint64_t>>())));
      if (info.byte_size != t.at("bytes").get<uint64_t>()) return fail("tensor size mismatch");
      std::string blob = t.at("blob").get<std::string>();
      if (!IsDigest(blob)) return fail("bad blob digest " + Quote(blob));
      std::string xxh3;
      if (!checksum(t, &xxh3)) return fail("bad xxh3 checksum of " + Quote(info.name));
      m.tensors.push_back({std::move(info), std::move(blob), std::move(xxh3)});
    }
    for (const auto& a : j.at("assets")) {
      BlobInfo b{a.at("blob").get<std::string>(), a.at("bytes").get<uint64_t>(), false, {}};
      if (!IsDigest(b.digest)) return fail("bad blob digest " + Quote(b.digest));
      if (!checksum(a, &b.xxh3)) return fail("bad xxh3 checksum of asset " + a.at("path").dump());
      m.assets.emplace_back(a.at("path").get<std::string>(), std::move(b));
    }
    if (j.contains("graph")) {
      const Json& g = j.at("graph");
      if (g.at("format") != "onnx" && g.at("format") != "torchscript") {
        return fail("graph format " + g.at("format").dump());
      }
      m.graph_format = g.at("format").get<std::string>();
      BlobInfo b{g.at("blob").get<std::string>(), g.at("bytes").get<uint64_t>(), false, {}};
      if (!IsDigest(b.digest)) return fail("bad blob digest " + Quote(b.digest));
      if (!checksum(g, &b.xxh3)) return fail("bad xxh3 checksum of the graph");
      m.graph = std::move(b);
    }
    if (j.contains("validation")) {
      const Json& v = j.at("validation");
      std::set<std::string> asset_names;
      for (const auto& a : m.assets) asset_names.insert(a.first);
      if (!asset_names.count(v.at("inputs").get<std::string>()) ||
          !asset_names.count(v.at("expected").get<std::string>())) {
        return fail("validation samples name an asset the version does not have");
      }
      m.validation = v;
    }
  } catch (const Json::exception& e) {
    return fail(std::string("malformed: ") + e.what());
  }
  return m;
}

// A stored version read back as a model: tensors mapped from their blobs.
class StoredModel final : public ModelSource {
 public:
  StoredModel(const BlobStore& blobs, Manifest manifest, bool verify)
      : blobs_(blobs), manifest_(std::move(manifest)), verify_(verify) {
    for (const auto& t : manifest_.tensors) infos_.push_back(t.info);
  }
  std::string_view format() const override { return "registry"; }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const Json& metadata() const override { return manifest_.metadata; }
  Result<TensorView> Load(size_t index) const override {
    if (index >= infos_.size()) return NotFound("tensor #" + std::to_string(index));
    const ManifestTensor& t = manifest_.tensors[index];
    // Verified reads check the blob's XXH3 checksum where the manifest keeps one (SHA-256
    // otherwise): the manifest itself was checked against its SHA-256 name.
    auto bytes = blobs_.Read(t.blob, verify_, t.xxh3);
    if (!bytes) return bytes.error().WithContext("tensor " + Quote(t.info.name));
    if ((*bytes)->size() != t.info.byte_size) {
      return Corrupt("tensor " + Quote(t.info.name) + ": blob " + t.blob + " holds " +
                     std::to_string((*bytes)->size()) + " bytes, the manifest says " +
                     std::to_string(t.info.byte_size));
    }
    MP_ASSIGN_OR_RETURN(auto aligned, AlignedFor(t.info.dtype, std::move(*bytes)));
    return TensorView{t.info, std::move(aligned)};
  }
  ModelFiles files() const override {
    ModelFiles out;
    for (const auto& t : manifest_.tensors) {
      if (auto p = blobs_.PathOf(t.blob)) out.files.push_back(*p);
    }
    return out;
  }

 private:
  const BlobStore& blobs_;
  Manifest manifest_;
  bool verify_;
  std::vector<TensorInfo> infos_;
};

constexpr char kVersionColumns[] =
    "model, version, manifest, label, stage, format, tensors, logical_bytes, metadata, metrics, "
    "params, tags, created_at, created_by, parent_model, parent_version, relation, command, "
    "lineage_params";

VersionRecord RecordOf(const SqlRow& r) {
  VersionRecord v;
  v.model = AsText(r[0]);
  v.version = AsInt(r[1]);
  v.manifest = AsText(r[2]);
  v.label = AsText(r[3]);
  v.stage = AsText(r[4]);
  v.format = AsText(r[5]);
  v.tensors = static_cast<uint64_t>(AsInt(r[6]));
  v.logical_bytes = static_cast<uint64_t>(AsInt(r[7]));
  v.metadata = ParseJsonText(AsText(r[8]), Json::object());
  v.metrics = ParseJsonText(AsText(r[9]), Json::object());
  v.params = ParseJsonText(AsText(r[10]), Json::object());
  v.tags = TagsOf(AsText(r[11]));
  v.created_at = AsText(r[12]);
  v.created_by = AsText(r[13]);
  if (!IsNull(r[14])) {
    v.parent = Lineage{AsText(r[14]), AsInt(r[15]), AsText(r[16]), AsText(r[17]),
                       ParseJsonText(AsText(r[18]), Json::object())};
  }
  return v;
}

std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

}  // namespace

Status CheckName(std::string_view name, std::string_view what) {
  const std::string shown(name.substr(0, 64));
  auto bad = [&](const std::string& why) {
    std::string printable;
    for (char c : shown) printable += (c >= 0x20 && c < 0x7f) ? c : '?';
    return InvalidArgument(std::string(what) + " '" + printable + "' " + why +
                           " (1-128 characters from A-Z a-z 0-9 . _ -, starting with a letter "
                           "or digit)");
  };
  if (name.empty()) return bad("is empty");
  if (name.size() > 128) return bad("is longer than 128 characters");
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return bad("has a character outside the allowed set");
  }
  if (!std::isalnum(static_cast<unsigned char>(name[0]))) {
    return bad("does not start with a letter or digit");
  }
  if (name.find("..") != std::string_view::npos) return bad("contains '..'");
  return Status::Ok();
}

Result<Ref> ParseRef(std::string_view text) {
  Ref ref;
  const size_t at = text.find('@');
  ref.name = std::string(text.substr(0, at));
  MP_RETURN_IF_ERROR(CheckName(ref.name, "model name"));
  if (at == std::string_view::npos) return ref;
  ref.selector = std::string(text.substr(at + 1));
  if (ref.selector.starts_with("sha256:")) {
    if (!IsDigest(ref.selector)) {
      return InvalidArgument("reference " + Quote(text) +
                             ": sha256: needs 64 lowercase hex digits");
    }
    return ref;
  }
  if (AllDigits(ref.selector)) return ref;
  MP_RETURN_IF_ERROR(CheckName(ref.selector, "version selector"));
  return ref;
}

struct Registry::Impl {
  std::string root;
  std::unique_ptr<BlobStore> blobs;
  std::unique_ptr<Db> db;
  std::string who = CurrentUser();

  static Result<std::unique_ptr<Db>> Connect(const std::string& root, const std::string& url) {
    if (url.empty() || url.starts_with("sqlite:")) {
      const std::string path = url.empty() ? (fs::path(root) / "registry.db").string()
                                           : url.substr(std::string_view("sqlite:").size());
      return OpenSqlite(path);
    }
    return OpenPostgres(url);
  }

  Status AddEvent(const std::string& action, const std::string& model, int64_t version,
                  const Json& detail) {
    return db
        ->Query(
            "INSERT INTO events (at, who, action, model, version, detail) VALUES "
            "($1, $2, $3, $4, $5, $6)",
            {NowUtc(), who, action, model, version, Dump(detail)})
        .status();
  }

  Result<std::vector<std::string>> AliasesOf(const std::string& model, int64_t version) {
    MP_ASSIGN_OR_RETURN(auto rows, db->Query("SELECT alias FROM aliases WHERE model = $1 AND "
                                             "version = $2 ORDER BY alias",
                                             {model, version}));
    std::vector<std::string> out;
    for (const auto& r : rows) out.push_back(AsText(r[0]));
    return out;
  }

  Result<VersionRecord> Fetch(const std::string& model, int64_t version) {
    MP_ASSIGN_OR_RETURN(auto rows, db->Query(std::string("SELECT ") + kVersionColumns +
                                                 " FROM versions WHERE model = $1 AND version = $2",
                                             {model, version}));
    if (rows.empty()) {
      return NotFound(model + "@" + std::to_string(version) + ": no such version");
    }
    VersionRecord v = RecordOf(rows[0]);
    MP_ASSIGN_OR_RETURN(v.aliases, AliasesOf(model, version));
    return v;
  }

  // The version number a reference names (NotFound when none).
  Result<int64_t> VersionOf(const Ref& ref) {
    const std::string shown = ref.selector.empty() ? ref.name : ref.name + "@" + ref.selector;
    auto one = [&](std::string_view sql, std::vector<SqlValue> params) -> Result<int64_t> {
      MP_ASSIGN_OR_RETURN(auto rows, db->Query(sql, std::move(params)));
      if (rows.empty() || IsNull(rows[0][0])) return NotFound(shown + ": no such version");
      return AsInt(rows[0][0]);
    };
    MP_ASSIGN_OR_RETURN(auto model,
                        db->Query("SELECT name FROM models WHERE name = $1", {ref.name}));
    if (model.empty()) return NotFound(ref.name + ": no such model");
    const std::string& s = ref.selector;
    if (s.empty() || s == "latest") {
      return one("SELECT MAX(version) FROM versions WHERE model = $1", {ref.name});
    }
    if (AllDigits(s)) {
      return one("SELECT version FROM versions WHERE model = $1 AND version = $2",
                 {ref.name, static_cast<int64_t>(std::stoll(s))});
    }
    if (s == "production") {
      return one("SELECT version FROM versions WHERE model = $1 AND stage = 'production'",
                 {ref.name});
    }
    if (s.starts_with("sha256:")) {
      return one("SELECT MAX(version) FROM versions WHERE model = $1 AND manifest = $2",
                 {ref.name, s});
    }
    auto alias = one("SELECT version FROM aliases WHERE model = $1 AND alias = $2", {ref.name, s});
    if (alias || alias.error().code() != StatusCode::kNotFound) return alias;
    return one("SELECT version FROM versions WHERE model = $1 AND label = $2", {ref.name, s});
  }

  Result<Manifest> ReadManifest(const std::string& digest, bool verify) {
    MP_ASSIGN_OR_RETURN(const uint64_t size, blobs->Size(digest));
    if (size > kMaxManifestBytes) return LimitExceeded("manifest " + digest + " is too large");
    MP_ASSIGN_OR_RETURN(auto bytes, blobs->Read(digest, verify));
    return ParseManifest(bytes->span(), digest);
  }

  Result<int64_t> Production(const std::string& model) {
    MP_ASSIGN_OR_RETURN(
        auto rows,
        db->Query("SELECT version FROM versions WHERE model = $1 AND stage = 'production'",
                  {model}));
    return rows.empty() ? 0 : AsInt(rows[0][0]);
  }

  // InvalidArgument when `version` is the production version (which archive and rm leave alone
  // unless forced).
  Status NotProduction(const std::string& model, int64_t version) {
    MP_ASSIGN_OR_RETURN(const int64_t production, Production(model));
    if (production != version) return Status::Ok();
    return InvalidArgument(model + "@" + std::to_string(version) +
                           " is the production version; promote another first (or --force)");
  }

  // Inside a transaction: production moves to `version`, the previous one is archived.
  Status MoveProduction(const std::string& model, int64_t from, int64_t to) {
    if (from == to) return Status::Ok();
    if (from != 0) {
      MP_RETURN_IF_ERROR(db->Query("UPDATE versions SET stage = 'archived' WHERE model = $1 AND "
                                   "version = $2",
                                   {model, from})
                             .status());
    }
    return db
        ->Query("UPDATE versions SET stage = 'production' WHERE model = $1 AND version = $2",
                {model, to})
        .status();
  }
};

Registry::~Registry() = default;
BlobStore& Registry::blobs() { return *impl_->blobs; }

namespace {

// The database URL remembered in `root`, or "" when the folder uses its own SQLite file.
Result<std::string> RememberedDatabase(const std::string& root) {
  const fs::path path = fs::path(root) / kDatabaseFile;
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::string();
  MP_ASSIGN_OR_RETURN(auto file, InputFile::Open(path.string(), IoMode::kPread));
  if (file->size() > kMaxDatabaseUrlBytes) {
    return Corrupt(path.string() + ": " + std::to_string(file->size()) +
                   " bytes, not a database address");
  }
  std::string url(file->size(), '\0');
  MP_RETURN_IF_ERROR(file->ReadInto(0, url.size(), reinterpret_cast<uint8_t*>(url.data())));
  while (!url.empty() && (url.back() == '\n' || url.back() == '\r' || url.back() == ' ')) {
    url.pop_back();
  }
  if (url.empty()) return Corrupt(path.string() + ": empty database address");
  return url;
}

// Writes `url` to root/database.url, readable by its owner only (a libpq URL may carry a
// password; docs/REGISTRY.md recommends ~/.pgpass instead).
Status RememberDatabase(const std::string& root, const std::string& url) {
  const std::string path = (fs::path(root) / kDatabaseFile).string();
  MP_ASSIGN_OR_RETURN(auto file, AtomicFile::Create(path));
  const std::string text = url + "\n";
  MP_RETURN_IF_ERROR(file->Write(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  MP_RETURN_IF_ERROR(file->Commit());
  std::error_code ec;
  fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write, ec);
  if (ec) return IoError(path + ": cannot restrict its permissions: " + ec.message());
  return Status::Ok();
}

// The database to use: the one given, else the one `root` remembers, else its SQLite file. A
// given one that differs from the remembered one is refused: blobs and metadata would part.
Result<std::string> ChooseDatabase(const std::string& root, const std::string& given,
                                   bool initialising) {
  MP_ASSIGN_OR_RETURN(const std::string remembered, RememberedDatabase(root));
  if (given.empty()) return remembered;
  if (!remembered.empty() && given != remembered && !initialising) {
    return InvalidArgument(root + " belongs to the database in " + kDatabaseFile + ", not " +
                           given + " (run `modelport registry init --db URL` there to move it)");
  }
  return given;
}

}  // namespace

Result<std::unique_ptr<Registry>> Registry::Init(const std::string& root,
                                                 const std::string& given_url) {
  MP_ASSIGN_OR_RETURN(const std::string db_url, ChooseDatabase(root, given_url, true));
  std::unique_ptr<Registry> r(new Registry());
  r->impl_ = std::make_unique<Impl>();
  r->impl_->root = root;
  MP_ASSIGN_OR_RETURN(r->impl_->blobs, BlobStore::Open(root, /*create=*/true));
  MP_ASSIGN_OR_RETURN(r->impl_->db, Impl::Connect(root, db_url));
  Db& db = *r->impl_->db;
  MP_ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(db));
  // Created first, so reading the version never fails inside the transaction (PostgreSQL
  // aborts a transaction at its first failed statement).
  MP_RETURN_IF_ERROR(db.ExecScript(
      "CREATE TABLE IF NOT EXISTS registry_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"));
  MP_ASSIGN_OR_RETURN(const int64_t current, SchemaVersion(db));
  const std::vector<std::string> steps = Migrations(db.dialect());
  if (current > static_cast<int64_t>(steps.size())) {
    return Unsupported("registry schema version " + std::to_string(current) +
                       " is newer than this modelport's (" + std::to_string(steps.size()) + ")");
  }
  for (auto v = static_cast<size_t>(current); v < steps.size(); ++v) {
    MP_RETURN_IF_ERROR(db.ExecScript(steps[v]));
    MP_RETURN_IF_ERROR(db.Query("DELETE FROM registry_meta WHERE key = 'schema_version'").status());
    MP_RETURN_IF_ERROR(db.Query("INSERT INTO registry_meta (key, value) VALUES "
                                "('schema_version', $1)",
                                {std::to_string(v + 1)})
                           .status());
  }
  MP_RETURN_IF_ERROR(txn.Commit());
  if (!db_url.empty() && !db_url.starts_with("sqlite:")) {
    MP_RETURN_IF_ERROR(RememberDatabase(root, db_url));
  }
  return r;
}

Result<std::unique_ptr<Registry>> Registry::Open(const std::string& root,
                                                 const std::string& given_url) {
  MP_ASSIGN_OR_RETURN(const std::string db_url, ChooseDatabase(root, given_url, false));
  std::unique_ptr<Registry> r(new Registry());
  r->impl_ = std::make_unique<Impl>();
  r->impl_->root = root;
  std::error_code ec;
  if (!fs::is_directory(fs::path(root) / "blobs", ec) ||
      (db_url.empty() && !fs::exists(fs::path(root) / "registry.db", ec))) {
    return NotFound(root +
                    ": no registry here (create one with `modelport registry init`; one on "
                    "PostgreSQL needs --db or MODELPORT_DB)");
  }
  MP_ASSIGN_OR_RETURN(r->impl_->blobs, BlobStore::Open(root, /*create=*/false));
  MP_ASSIGN_OR_RETURN(r->impl_->db, Impl::Connect(root, db_url));
  MP_ASSIGN_OR_RETURN(const int64_t schema, SchemaVersion(*r->impl_->db));
  if (schema == 0) {
    return NotFound(root + ": the database holds no registry (modelport registry init)");
  }
  if (schema > LatestSchema()) {
    return Unsupported("registry schema version " + std::to_string(schema) +
                       " is newer than this modelport's (" + std::to_string(LatestSchema()) + ")");
  }
  if (schema < LatestSchema()) {
    return InvalidArgument("registry schema version " + std::to_string(schema) +
                           " is older than this modelport's (" + std::to_string(LatestSchema()) +
                           "): run `modelport registry init` to migrate it");
  }
  return r;
}

Result<VersionRecord> Registry::Push(const std::string& name, const ModelSource& model,
                                     const PushOptions& options) {
  Impl& I = *impl_;
  MP_RETURN_IF_ERROR(CheckName(name, "model name"));
  if (!options.label.empty()) {
    MP_RETURN_IF_ERROR(CheckName(options.label, "label"));
    if (IsReservedSelector(options.label)) {
      return InvalidArgument("label " + Quote(options.label) + " is a reserved selector");
    }
  }
  for (const auto& t : options.tags) MP_RETURN_IF_ERROR(CheckName(t, "tag"));
  for (const auto& a : options.aliases) {
    MP_RETURN_IF_ERROR(CheckName(a, "alias"));
    if (IsReservedSelector(a)) return InvalidArgument("alias " + Quote(a) + " is reserved");
  }
  if (!options.metrics.is_object() || !options.params.is_object()) {
    return InvalidArgument("metrics and params must be JSON objects");
  }
  std::optional<VersionRecord> parent;
  if (options.from) {
    MP_ASSIGN_OR_RETURN(parent, Resolve(*options.from));
  }

  // Blobs first, durably: the version row that makes them reachable comes last.
  Manifest manifest;
  manifest.format = std::string(model.format());
  manifest.metadata = model.metadata().is_object() ? model.metadata() : Json::object();
  const auto& infos = model.tensors();
  manifest.tensors.resize(infos.size());
  uint64_t total = 0;
  for (const auto& t : infos) total += t.byte_size;
  std::mutex progress_mu;
  uint64_t done_tensors = 0, done_bytes = 0;
  // Tensors go in one batch: written in parallel, then synced and made visible together.
  const std::unique_ptr<BlobStore::Batch> batch = I.blobs->NewBatch(options.durable);
  MP_RETURN_IF_ERROR(ParallelFor(infos.size(), [&](size_t i) -> Status {
    auto view = model.Load(i);
    if (!view) return view.error().WithContext("tensor " + Quote(infos[i].name));
    MP_ASSIGN_OR_RETURN(BlobInfo blob, batch->Put(view->bytes()));
    manifest.tensors[i] = {infos[i], blob.digest, blob.xxh3};
    if (options.progress) {
      std::lock_guard<std::mutex> lock(progress_mu);
      ++done_tensors;
      done_bytes += infos[i].byte_size;
      options.progress(done_tensors, infos.size(), done_bytes, total);
    }
    return Status::Ok();
  }));
  MP_RETURN_IF_ERROR(batch->Publish());
  uint64_t logical = total;
  std::vector<std::string> asset_paths = options.assets;
  if (options.samples) {
    asset_paths.push_back(options.samples->inputs);
    asset_paths.push_back(options.samples->expected);
    Json per_output = Json::object();
    for (const auto& [out, tol] : options.samples->per_output) {
      per_output[out] = {{"atol", tol.first}, {"rtol", tol.second}};
    }
    manifest.validation =
        Json{{"inputs", fs::path(options.samples->inputs).filename().string()},
             {"expected", fs::path(options.samples->expected).filename().string()},
             {"atol", options.samples->atol},
             {"rtol", options.samples->rtol},
             {"per_output", std::move(per_output)}};
  }
  std::set<std::string> asset_names;
  for (const auto& path : asset_paths) {
    const std::string file = fs::path(path).filename().string();
    if (!asset_names.insert(file).second) {
      return InvalidArgument("two assets are named " + Quote(file));
    }
    MP_ASSIGN_OR_RETURN(BlobInfo blob, I.blobs->PutFile(path, options.durable));
    logical += blob.size;
    manifest.assets.emplace_back(file, std::move(blob));
  }
  // An ONNX model's graph is kept too, without its weights (they are the tensors above), so
  // the version exports back to ONNX.
  std::string graph_file;
  struct RemoveFile {
    const std::string& path;
    ~RemoveFile() {
      std::error_code ec;
      if (!path.empty()) fs::remove(path, ec);
    }
  } remove_graph_file{graph_file};
  static std::atomic<uint64_t> counter{0};
  if (const auto* onnx_model = dynamic_cast<const onnx::OnnxSource*>(&model)) {
    graph_file = (fs::path(I.root) / "tmp" /
                  ("graph." + std::to_string(getpid()) + "." + std::to_string(++counter) + ".onnx"))
                     .string();
    onnx::RewriteOptions graph_only;
    graph_only.placement = onnx::Placement::kExternal;
    graph_only.size_threshold = 0;
    graph_only.data_file = kOnnxDataName;
    graph_only.write_data = false;
    graph_only.write.durable = false;
    MP_RETURN_IF_ERROR(onnx_model->Rewrite(graph_file, graph_only).status());
    MP_ASSIGN_OR_RETURN(manifest.graph, I.blobs->PutFile(graph_file, options.durable));
    manifest.graph_format = "onnx";
  } else if (model.format() == "torch") {
    // A TorchScript archive keeps its code, pickles and constants the same way.
    graph_file = (fs::path(I.root) / "tmp" /
                  ("graph." + std::to_string(getpid()) + "." + std::to_string(++counter) + ".pt"))
                     .string();
    MP_ASSIGN_OR_RETURN(const bool scripted,
                        torch::SplitTorchScript(model, graph_file, /*durable=*/false));
    if (scripted) {
      MP_ASSIGN_OR_RETURN(manifest.graph, I.blobs->PutFile(graph_file, options.durable));
      manifest.graph_format = "torchscript";
    }
  }
  const std::string manifest_text = ManifestJson(manifest);
  MP_ASSIGN_OR_RETURN(
      BlobInfo manifest_blob,
      I.blobs->Put({reinterpret_cast<const uint8_t*>(manifest_text.data()), manifest_text.size()},
                   options.durable));

  // One transaction makes the version visible with its aliases, lineage and event. It holds the
  // database's write lock, which gc holds too while it deletes: a blob this push reused can only
  // have been deleted by a gc that finished before the transaction began, and none can be
  // deleted while it runs. So checking inside it that every blob exists, and putting back any
  // that are gone, makes the version whole whatever gc did meanwhile, grace period or not.
  int64_t version = 0;
  {
    MP_ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(*I.db));
    std::vector<size_t> gone;  // tensor indexes; infos.size(): the manifest; past it: assets
    for (size_t i = 0; i < manifest.tensors.size(); ++i) {
      if (!I.blobs->Contains(manifest.tensors[i].blob)) gone.push_back(i);
    }
    if (!I.blobs->Contains(manifest_blob.digest)) gone.push_back(infos.size());
    for (size_t a = 0; a < manifest.assets.size(); ++a) {
      if (!I.blobs->Contains(manifest.assets[a].second.digest))
        gone.push_back(infos.size() + 1 + a);
    }
    if (manifest.graph && !I.blobs->Contains(manifest.graph->digest)) {
      MP_RETURN_IF_ERROR(I.blobs->PutFile(graph_file, options.durable).status());
    }
    for (size_t g : gone) {
      if (g < infos.size()) {
        auto view = model.Load(g);
        if (!view) return view.error().WithContext("tensor " + Quote(infos[g].name));
        MP_RETURN_IF_ERROR(I.blobs->Put(view->bytes(), options.durable).status());
      } else if (g == infos.size()) {
        MP_RETURN_IF_ERROR(I.blobs
                               ->Put({reinterpret_cast<const uint8_t*>(manifest_text.data()),
                                      manifest_text.size()},
                                     options.durable)
                               .status());
      } else {
        MP_RETURN_IF_ERROR(
            I.blobs->PutFile(asset_paths[g - infos.size() - 1], options.durable).status());
      }
    }
    const std::string now = NowUtc();
    MP_RETURN_IF_ERROR(I.db->Query("INSERT INTO models (name, created_at, next_version) VALUES "
                                   "($1, $2, 1) ON CONFLICT (name) DO NOTHING",
                                   {name, now})
                           .status());
    MP_ASSIGN_OR_RETURN(auto next,
                        I.db->Query("SELECT next_version FROM models WHERE name = $1", {name}));
    if (next.empty()) return Internal("model row missing after insert");
    version = AsInt(next[0][0]);
    MP_RETURN_IF_ERROR(
        I.db->Query("UPDATE models SET next_version = $1 WHERE name = $2", {version + 1, name})
            .status());
    Json tags = Json::array();
    for (const auto& t : options.tags) tags.push_back(t);
    std::vector<SqlValue> row = {
        name,
        version,
        manifest_blob.digest,
        options.label.empty() ? SqlValue(nullptr) : SqlValue(options.label),
        std::string("staged"),
        manifest.format,
        static_cast<int64_t>(manifest.tensors.size()),
        static_cast<int64_t>(logical),
        Dump(manifest.metadata),
        Dump(options.metrics),
        Dump(options.params),
        Dump(tags),
        now,
        I.who};
    if (parent) {
      row.insert(row.end(), {parent->model, parent->version, options.relation, options.command,
                             Dump(Json::object())});
    } else {
      row.insert(row.end(), {nullptr, nullptr, nullptr, nullptr, nullptr});
    }
    auto inserted = I.db->Query(std::string("INSERT INTO versions (") + kVersionColumns +
                                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, "
                                    "$13, $14, $15, $16, $17, $18, $19)",
                                row);
    if (!inserted) {
      if (inserted.error().code() == StatusCode::kAlreadyExists && !options.label.empty()) {
        return AlreadyExists(name + ": label " + Quote(options.label) +
                             " is already on another version");
      }
      return inserted.error();
    }
    for (const auto& alias : options.aliases) {
      MP_RETURN_IF_ERROR(I.db->Query("INSERT INTO aliases (model, alias, version) VALUES ($1, $2, "
                                     "$3) ON CONFLICT (model, alias) DO UPDATE SET version = "
                                     "excluded.version",
                                     {name, alias, version})
                             .status());
    }
    Json detail = {{"manifest", manifest_blob.digest},
                   {"tensors", manifest.tensors.size()},
                   {"bytes", logical}};
    if (parent) detail["from"] = parent->model + "@" + std::to_string(parent->version);
    MP_RETURN_IF_ERROR(I.AddEvent("push", name, version, detail));
    MP_RETURN_IF_ERROR(txn.Commit());
  }
  return I.Fetch(name, version);
}

Result<VersionRecord> Registry::Resolve(const Ref& ref) {
  MP_ASSIGN_OR_RETURN(const int64_t version, impl_->VersionOf(ref));
  return impl_->Fetch(ref.name, version);
}

Result<std::vector<Registry::ModelSummary>> Registry::ListModels() {
  MP_ASSIGN_OR_RETURN(
      auto rows, impl_->db->Query("SELECT m.name, COUNT(v.version), MAX(v.version), "
                                  "MAX(CASE WHEN v.stage = 'production' THEN v.version ELSE 0 END) "
                                  "FROM models m LEFT JOIN versions v ON v.model = m.name GROUP BY "
                                  "m.name ORDER BY m.name"));
  std::vector<ModelSummary> out;
  for (const auto& r : rows) {
    out.push_back({AsText(r[0]), static_cast<uint64_t>(AsInt(r[1])), AsInt(r[2]), AsInt(r[3])});
  }
  return out;
}

Result<std::vector<VersionRecord>> Registry::ListVersions(const std::string& name) {
  MP_RETURN_IF_ERROR(CheckName(name, "model name"));
  MP_ASSIGN_OR_RETURN(auto model,
                      impl_->db->Query("SELECT name FROM models WHERE name = $1", {name}));
  if (model.empty()) return NotFound(name + ": no such model");
  MP_ASSIGN_OR_RETURN(auto rows,
                      impl_->db->Query(std::string("SELECT ") + kVersionColumns +
                                           " FROM versions WHERE model = $1 ORDER BY version",
                                       {name}));
  std::vector<VersionRecord> out;
  for (const auto& r : rows) {
    VersionRecord v = RecordOf(r);
    MP_ASSIGN_OR_RETURN(v.aliases, impl_->AliasesOf(v.model, v.version));
    out.push_back(std::move(v));
  }
  return out;
}

Result<std::unique_ptr<ModelSource>> Registry::Load(const VersionRecord& version, bool verify) {
  MP_ASSIGN_OR_RETURN(Manifest m, impl_->ReadManifest(version.manifest, verify));
  return std::unique_ptr<ModelSource>(new StoredModel(*impl_->blobs, std::move(m), verify));
}

Status Registry::Verify(const VersionRecord& version) {
  MP_ASSIGN_OR_RETURN(Manifest m, impl_->ReadManifest(version.manifest, /*verify=*/true));
  const auto blobs = BlobsOf(m);
  return ParallelFor(blobs.size(), [&](size_t i) -> Status {
    Status s = impl_->blobs->Verify(blobs[i].digest, blobs[i].xxh3);
    return s.ok() ? s : std::move(s).WithContext(blobs[i].what);
  });
}

Result<std::vector<std::pair<std::string, std::string>>> Registry::Assets(
    const VersionRecord& version) {
  MP_ASSIGN_OR_RETURN(Manifest m, impl_->ReadManifest(version.manifest, true));
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [path, blob] : m.assets) out.emplace_back(path, blob.digest);
  return out;
}

Status Registry::ExportAsset(const std::string& digest, const std::string& dest) {
  MP_ASSIGN_OR_RETURN(auto bytes, impl_->blobs->Read(digest, /*verify=*/true));
  MP_ASSIGN_OR_RETURN(auto out, AtomicFile::Create(dest));
  MP_RETURN_IF_ERROR(out->Write(bytes->data(), bytes->size()));
  return out->Commit();
}

Status Registry::ExportOnnx(const VersionRecord& version, const std::string& dest,
                            const WriteOptions& options, bool verify) {
  Impl& I = *impl_;
  const std::string who = version.model + "@" + std::to_string(version.version);
  MP_ASSIGN_OR_RETURN(Manifest m, I.ReadManifest(version.manifest, verify));
  if (!m.graph || m.graph_format != "onnx") {
    return Unsupported(who + " has no ONNX graph (it was pushed from " + m.format +
                       "); only versions pushed from ONNX export to ONNX");
  }
  MP_ASSIGN_OR_RETURN(auto graph_bytes, I.blobs->Read(m.graph->digest, verify, m.graph->xxh3));
  ::onnx::ModelProto proto;
  if (graph_bytes->size() > INT_MAX ||
      !proto.ParseFromArray(graph_bytes->data(), static_cast<int>(graph_bytes->size()))) {
    return Corrupt(who + ": its stored ONNX graph " + m.graph->digest + " does not parse");
  }
  std::map<std::string, size_t> by_name;
  for (size_t i = 0; i < m.tensors.size(); ++i) by_name[m.tensors[i].info.name] = i;
  // Each external initializer gets its place in the data file as OnnxSource::Rewrite lays it
  // out (64-byte aligned, 4 KiB pages from 1 MiB up), so an export equals a rewrite.
  const std::string data_name = fs::path(dest).filename().string() + ".data";
  const std::string data_path = (fs::path(dest).parent_path() / data_name).string();
  std::vector<std::pair<size_t, uint64_t>> placed;  // tensor index, offset
  uint64_t end = 0;
  for (auto& t : *proto.mutable_graph()->mutable_initializer()) {
    if (t.data_location() != ::onnx::TensorProto::EXTERNAL) continue;
    auto it = by_name.find(t.name());
    if (it == by_name.end()) {
      return Corrupt(who + ": the graph's initializer " + Quote(t.name()) +
                     " is not among the version's tensors");
    }
    const uint64_t bytes = m.tensors[it->second].info.byte_size;
    const uint64_t align = bytes >= onnx::kPageAlignFrom ? onnx::kPageAlign : onnx::kExternalAlign;
    const uint64_t offset = (end + align - 1) / align * align;
    t.clear_external_data();
    for (const auto& [key, value] : {std::pair<std::string, std::string>{"location", data_name},
                                     {"offset", std::to_string(offset)},
                                     {"length", std::to_string(bytes)}}) {
      auto* entry = t.add_external_data();
      entry->set_key(key);
      entry->set_value(value);
    }
    placed.emplace_back(it->second, offset);
    end = offset + bytes;
  }
  std::error_code ec;
  if (options.no_overwrite) {
    if (fs::exists(fs::symlink_status(dest, ec))) return AlreadyExists(dest + ": exists");
    if (!placed.empty() && fs::exists(fs::symlink_status(data_path, ec))) {
      return AlreadyExists(data_path + ": exists");
    }
  }
  std::unique_ptr<AtomicFile> data;
  if (!placed.empty()) {
    MP_ASSIGN_OR_RETURN(data, AtomicFile::Create(data_path));
    for (const auto& [index, offset] : placed) {
      const ManifestTensor& t = m.tensors[index];
      MP_RETURN_IF_ERROR(data->WriteZeros(offset - data->bytes_written()));
      auto bytes = I.blobs->Read(t.blob, verify, t.xxh3);
      if (!bytes) return bytes.error().WithContext("tensor " + Quote(t.info.name));
      MP_RETURN_IF_ERROR(data->Write((*bytes)->data(), (*bytes)->size()));
    }
  }
  const std::string text = proto.SerializeAsString();
  MP_ASSIGN_OR_RETURN(auto model, AtomicFile::Create(dest));
  MP_RETURN_IF_ERROR(model->Write(text.data(), text.size()));
  if (data) MP_RETURN_IF_ERROR(data->Commit(options.durable));
  return model->Commit(options.durable);
}

Result<bool> Registry::ExportTorchScript(const VersionRecord& version, const std::string& dest,
                                         const WriteOptions& options, bool verify) {
  Impl& I = *impl_;
  MP_ASSIGN_OR_RETURN(Manifest m, I.ReadManifest(version.manifest, verify));
  if (!m.graph || m.graph_format != "torchscript") return false;
  if (verify) MP_RETURN_IF_ERROR(I.blobs->Verify(m.graph->digest, m.graph->xxh3));
  MP_ASSIGN_OR_RETURN(const std::string graph_path, I.blobs->PathOf(m.graph->digest));
  MP_ASSIGN_OR_RETURN(auto model, Load(version, verify));
  MP_RETURN_IF_ERROR(torch::JoinTorchScript(graph_path, *model, dest, options));
  return true;
}

Result<std::optional<VersionSamples>> Registry::SamplesOf(const VersionRecord& version) {
  MP_ASSIGN_OR_RETURN(Manifest m, impl_->ReadManifest(version.manifest, true));
  if (!m.validation) return std::optional<VersionSamples>();
  VersionSamples s;
  try {
    const Json& v = *m.validation;
    s.inputs = v.at("inputs").get<std::string>();
    s.expected = v.at("expected").get<std::string>();
    s.atol = v.at("atol").get<double>();
    s.rtol = v.at("rtol").get<double>();
    for (const auto& [out, tol] : v.at("per_output").items()) {
      s.per_output[out] = {tol.at("atol").get<double>(), tol.at("rtol").get<double>()};
    }
  } catch (const Json::exception& e) {
    return Corrupt("manifest " + version.manifest + ": malformed validation samples: " + e.what());
  }
  return std::optional<VersionSamples>(std::move(s));
}

Status Registry::SetRequireValidation(const std::string& name, bool required) {
  Impl& I = *impl_;
  MP_RETURN_IF_ERROR(CheckName(name, "model name"));
  MP_ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(*I.db));
  MP_ASSIGN_OR_RETURN(auto rows, I.db->Query("UPDATE models SET require_validation = $1 WHERE "
                                             "name = $2 RETURNING name",
                                             {std::to_string(required ? 1 : 0), name}));
  if (rows.empty()) return NotFound("no model named " + Quote(name));
  MP_RETURN_IF_ERROR(I.AddEvent("policy", name, 0, {{"require_validation", required}}));
  return txn.Commit();
}

Result<bool> Registry::RequiresValidation(const std::string& name) {
  MP_RETURN_IF_ERROR(CheckName(name, "model name"));
  MP_ASSIGN_OR_RETURN(auto rows, impl_->db->Query("SELECT require_validation FROM models WHERE "
                                                  "name = $1",
                                                  {name}));
  if (rows.empty()) return NotFound("no model named " + Quote(name));
  return AsInt(rows[0][0]) != 0;
}

Result<VersionRecord> Registry::Promote(const Ref& given, std::optional<int64_t> expect_current,
                                        const PromotionGate& gate) {
  Impl& I = *impl_;
  Ref ref = given;
  MP_ASSIGN_OR_RETURN(const bool gated, RequiresValidation(ref.name));
  if (gated) {
    if (!gate) {
      return InvalidArgument(ref.name +
                             " requires validation before promotion, and none was "
                             "run");
    }
    // The version is pinned first: the one validated is the one promoted, whatever the
    // reference points at by then.
    MP_ASSIGN_OR_RETURN(const VersionRecord candidate, Resolve(ref));
    MP_RETURN_IF_ERROR(gate(candidate));
    ref.selector = std::to_string(candidate.version);
  }
  MP_ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(*I.db));
  MP_ASSIGN_OR_RETURN(const int64_t version, I.VersionOf(ref));
  MP_ASSIGN_OR_RETURN(const int64_t current, I.Production(ref.name));
  if (expect_current && *expect_current != current) {
    auto shown = [](int64_t v) {
      std::string out = v == 0 ? "none" : "@";
      if (v != 0) out += std::to_string(v);
      return out;
    };
    return AlreadyExists(ref.name + ": production is " + shown(current) + ", not " +
                         shown(*expect_current) + " as expected (another promotion won)");
  }
  MP_RETURN_IF_ERROR(I.MoveProduction(ref.name, current, version));
  MP_RETURN_IF_ERROR(
      I.AddEvent("promote", ref.name, version, {{"previous", current}, {"validated", gated}}));
  MP_RETURN_IF_ERROR(txn.Commit());
  return I.Fetch(ref.name, version);
}

Result<VersionRecord> Registry::Rollback(const std::string& name) {
  Impl& I = *impl_;
  MP_RETURN_IF_ERROR(CheckName(name, "model name"));
  MP_ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(*I.db));
  MP_ASSIGN_OR_RETURN(const int64_t current, I.Production(name));
  if (current == 0) return NotFound(name + ": no production version to roll back");
  // The production history as a stack: a promotion pushes its version, a rollback pops one.
  // Rolling back pops the current version; the target is the newest one below it that still
  // exists, so successive rollbacks walk back through earlier promotions.
  MP_ASSIGN_OR_RETURN(auto rows,
                      I.db->Query("SELECT action, version FROM events WHERE model = $1 AND "
                                  "action IN ('promote', 'rollback') ORDER BY seq",
                                  {name}));
  std::vector<int64_t> history;
  for (const auto& r : rows) {
    if (AsText(r[0]) == "promote") {
      history.push_back(AsInt(r[1]));
    } else if (!history.empty()) {
      history.pop_back();
    }
  }
  while (!history.empty() && history.back() == current) history.pop_back();
  int64_t target = 0;
  while (!history.empty() && target == 0) {
    const int64_t v = history.back();
    MP_ASSIGN_OR_RETURN(auto exists, I.db->Query("SELECT 1 FROM versions WHERE model = $1 AND "
                                                 "version = $2",
                                                 {name, v}));
    if (!exists.empty() && v != current) {
      target = v;
    } else {
      history.pop_back();
    }
  }
  if (target == 0) return NotFound(name + ": no earlier production version to roll back to");
  MP_RETURN_IF_ERROR(I.MoveProduction(name, current, target));
  MP_RETURN_IF_ERROR(I.AddEvent("rollback", name, target, {{"previous", current}}));
  MP_RETURN_IF_ERROR(txn.Commit());
  return I.Fetch(name, target);
}

Result<VersionRecord> Registry::Archive(const Ref& ref, bool force) {
  Impl& I = *impl_;
  MP_ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(*I.db));
  MP_ASSIGN_OR_RETURN(const int64_t version, I.VersionOf(ref));
  if (!force) MP_RETURN_IF_ERROR(I.NotProduction(ref.name, version));
  MP_RETURN_IF_ERROR(I.db->Query("UPDATE versions SET stage = 'archived' WHERE model = $1 AND "
                                 "version = $2",
                                 {ref.name, version})
                         .status());
  MP_RETURN_IF_ERROR(I.AddEvent("archive", ref.name, version, Json::object()));
  MP_RETURN_IF_ERROR(txn.Commit());
  return I.Fetch(ref.name, version);
}

Status Registry::SetAlias(const Ref& ref, const std::string& alias) {
  Impl& I = *impl_;
  MP_RETURN_IF_ERROR(CheckName(alias, "alias"));
  if (IsReservedSelector(alias)) return InvalidArgument("alias " + Quote(alias) + " is reserved");
  MP_ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(*I.db));
  MP_ASSIGN_OR_RETURN(const int64_t version, I.VersionOf(ref));
  MP_RETURN_IF_ERROR(I.db->Query("INSERT INTO aliases (model, alias, version) VALUES ($1, $2, $3) "
                                 "ON CONFLICT (model, alias) DO UPDATE SET version = "
                                 "excluded.version",
                                 {ref.name, alias, version})
                         .status());
  MP_RETURN_IF_ERROR(I.AddEvent("alias", ref.name, version, {{"alias", alias}}));
  return txn.Commit();
}

Status Registry::RemoveAlias(const std::string& name, const std::string& alias) {
  Impl& I = *impl_;
  MP_RETURN_IF_ERROR(CheckName(name, "model name"));
  MP_RETURN_IF_ERROR(CheckName(alias, "alias"));
  MP_ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(*I.db));
  MP_ASSIGN_OR_RETURN(auto rows, I.db->Query("SELECT version FROM aliases WHERE model = $1 AND "
                                             "alias = $2",
                                             {name, alias}));
  if (rows.empty()) return NotFound(name + "@" + alias + ": no such alias");
  MP_RETURN_IF_ERROR(
      I.db->Query("DELETE FROM aliases WHERE model = $1 AND alias = $2", {name, alias}).status());
  MP_RETURN_IF_ERROR(I.AddEvent("unalias", name, AsInt(rows[0][0]), {{"alias", alias}}));
  return txn.Commit();
}

Status Registry::Remove(const Ref& ref, bool force) {
  Impl& I = *impl_;
  MP_ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(*I.db));
  MP_ASSIGN_OR_RETURN(const int64_t version, I.VersionOf(ref));
  if (!force) MP_RETURN_IF_ERROR(I.NotProduction(ref.name, version));
  MP_RETURN_IF_ERROR(
      I.db->Query("DELETE FROM aliases WHERE model = $1 AND version = $2", {ref.name, version})
          .status());
  MP_RETURN_IF_ERROR(
      I.db->Query("DELETE FROM versions WHERE model = $1 AND version = $2", {ref.name, version})
          .status());
  MP_RETURN_IF_ERROR(I.AddEvent("rm", ref.name, version, Json::object()));
  return txn.Commit();
}

Result<GcReport> Registry::Gc(int64_t grace_seconds, bool dry_run) {
  Impl& I = *impl_;
  GcReport report;
  // The blob list is taken first: a blob a push adds after it is not considered at all, and one
  // a push reuses had its time refreshed (BlobStore), so the grace period normally keeps it.
  MP_ASSIGN_OR_RETURN(auto entries, I.blobs->List());
  // The live set is read and the sweep done under the database's write lock, so no version
  // commits in between; a push whose reused blob goes here finds it gone inside its own
  // transaction and puts it back (Push).
  MP_ASSIGN_OR_RETURN(Transaction txn, Transaction::Begin(*I.db));
  MP_ASSIGN_OR_RETURN(auto manifests, I.db->Query("SELECT DISTINCT manifest FROM versions"));
  std::set<std::string> live;
  for (const auto& r : manifests) {
    const std::string digest = AsText(r[0]);
    live.insert(digest);
    MP_ASSIGN_OR_RETURN(Manifest m, I.ReadManifest(digest, /*verify=*/true));
    for (const BlobRef& b : BlobsOf(m)) live.insert(b.digest);
  }
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  for (const auto& e : entries) {
    if (live.count(e.digest)) continue;
    if (now - e.mtime < grace_seconds) {
      ++report.kept_young;
      continue;
    }
    if (!dry_run) {
      // Checked again just before removing: a push may have reused it since the list.
      MP_ASSIGN_OR_RETURN(const std::string path, I.blobs->PathOf(e.digest));
      struct stat st {};
      if (::stat(path.c_str(), &st) == 0 && now - st.st_mtime < grace_seconds) {
        ++report.kept_young;
        continue;
      }
      Status s = I.blobs->Remove(e.digest);
      if (!s.ok() && s.code() != StatusCode::kNotFound) return s;
    }
    ++report.removed_blobs;
    report.removed_bytes += e.size;
  }
  MP_RETURN_IF_ERROR(txn.Commit());
  if (!dry_run) {
    // A temporary being written has a fresh time; one untouched for ten minutes (or the grace
    // period, when longer) belongs to a writer that died.
    MP_ASSIGN_OR_RETURN(report.removed_temporaries,
                        I.blobs->RemoveStaleTemporaries(std::max<int64_t>(grace_seconds, 600)));
  }
  return report;
}

Result<FsckReport> Registry::Fsck() {
  Impl& I = *impl_;
  FsckReport report;
  MP_ASSIGN_OR_RETURN(auto entries, I.blobs->List());
  std::map<std::string, uint64_t> sizes;
  for (const auto& e : entries) {
    ++report.blobs_checked;
    sizes[e.digest] = e.size;
    Status s = I.blobs->Verify(e.digest);
    if (!s.ok()) report.problems.push_back(s.message());
  }
  MP_ASSIGN_OR_RETURN(auto rows, I.db->Query("SELECT model, version, manifest FROM versions "
                                             "ORDER BY model, version"));
  for (const auto& r : rows) {
    ++report.versions_checked;
    const std::string who = AsText(r[0]) + "@" + std::to_string(AsInt(r[1]));
    const std::string digest = AsText(r[2]);
    if (!sizes.count(digest)) {
      report.problems.push_back(who + ": manifest " + digest + " is missing");
      continue;
    }
    auto m = I.ReadManifest(digest, /*verify=*/false);
    if (!m) {
      report.problems.push_back(who + ": " + m.error().message());
      continue;
    }
    auto check = [&](const std::string& what, const std::string& blob, uint64_t bytes) {
      auto it = sizes.find(blob);
      if (it == sizes.end()) {
        report.problems.push_back(who + ": " + what + " blob " + blob + " is missing");
      } else if (it->second != bytes) {
        report.problems.push_back(who + ": " + what + " blob " + blob + " holds " +
                                  std::to_string(it->second) + " bytes, expected " +
                                  std::to_string(bytes));
      }
    };
    for (const BlobRef& b : BlobsOf(*m)) check(b.what, b.digest, b.bytes);
  }
  return report;
}

Result<std::vector<Event>> Registry::Log(const std::string& name, size_t limit) {
  std::vector<SqlValue> params;
  std::string sql = "SELECT seq, at, who, action, model, version, detail FROM events";
  if (!name.empty()) {
    MP_RETURN_IF_ERROR(CheckName(name, "model name"));
    sql += " WHERE model = $1";
    params.push_back(name);
  }
  sql += " ORDER BY seq DESC";
  if (limit > 0) sql += " LIMIT " + std::to_string(limit);
  MP_ASSIGN_OR_RETURN(auto rows, impl_->db->Query(sql, params));
  std::vector<Event> out;
  for (const auto& r : rows) {
    out.push_back({AsInt(r[0]), AsText(r[1]), AsText(r[2]), AsText(r[3]), AsText(r[4]), AsInt(r[5]),
                   ParseJsonText(AsText(r[6]), Json::object())});
  }
  return out;
}

Result<StorageReport> Registry::Du() {
  StorageReport report;
  MP_ASSIGN_OR_RETURN(auto rows,
                      impl_->db->Query("SELECT COUNT(*), COALESCE(SUM(logical_bytes), 0) FROM "
                                       "versions"));
  report.versions = static_cast<uint64_t>(AsInt(rows[0][0]));
  report.logical_bytes = static_cast<uint64_t>(AsInt(rows[0][1]));
  MP_ASSIGN_OR_RETURN(auto entries, impl_->blobs->List());
  for (const auto& e : entries) {
    ++report.blobs;
    report.stored_bytes += e.size;
  }
  return report;
}

}  // namespace mp::registry
