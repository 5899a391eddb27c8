// The model registry: versions of named models, stored as content-addressed blobs (one per
// distinct tensor, asset and manifest: blob_store.h) and described in a metadata database
// (SQLite by default, PostgreSQL for teams: db.h). docs/REGISTRY.md is the user's guide.
//
// A version is a manifest (JSON, itself a blob) listing its tensors (name, dtype, shape, bytes,
// blob digest) and assets (config, tokenizer, preprocessing files); tensors equal across
// versions and models are stored once. Registering writes every blob durably first and then
// adds the version in one transaction, so a crash leaves either no version or a complete one.
//
// References (everywhere in the CLI): NAME (latest version), NAME@3, NAME@production,
// NAME@<alias>, NAME@<label>, NAME@sha256:<manifest digest>, NAME@latest.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "modelport/core/tensor.h"
#include "modelport/formats/format.h"
#include "modelport/registry/blob_store.h"
#include "modelport/registry/db.h"

namespace mp::registry {

/// Model names, aliases, tags and labels: 1 to 128 characters from [A-Za-z0-9._-], starting
/// with a letter or digit, no "..". Names are never turned into paths; the pattern keeps them
/// printable and unambiguous in references. InvalidArgument naming `what` otherwise.
Status CheckName(std::string_view name, std::string_view what);

struct Ref {
  std::string name;
  std::string selector;  ///< "" or "latest", a version number, a stage, an alias, a label, a digest
};
/// Parses "NAME" or "NAME@SELECTOR" (InvalidArgument when malformed).
Result<Ref> ParseRef(std::string_view text);

/// Where a version came from: converted, quantized, fine-tuned ... from another version.
struct Lineage {
  std::string model;
  int64_t version = 0;
  std::string relation;  ///< "derived" unless given
  std::string command;   ///< how it was made (free text)
  Json params = Json::object();
};

struct VersionRecord {
  std::string model;
  int64_t version = 0;
  std::string manifest;  ///< digest of the manifest blob
  std::string label;     ///< optional user label (a semver such as "1.2.0"); unique per model
  std::string stage;     ///< "staged", "production" or "archived"
  std::string format;    ///< the format it was pushed from
  uint64_t tensors = 0;
  uint64_t logical_bytes = 0;  ///< tensor + asset bytes as pushed
  Json metadata = Json::object();
  Json metrics = Json::object();
  Json params = Json::object();
  std::vector<std::string> tags;
  std::vector<std::string> aliases;  ///< aliases pointing at this version
  std::string created_at;            ///< ISO 8601 UTC
  std::string created_by;
  std::optional<Lineage> parent;
};

/// Sample inputs and expected outputs kept with a version (as two of its assets) and the
/// tolerances `modelport validate` compares its outputs with.
struct VersionSamples {
  std::string inputs;    ///< asset name (Push: the file to store)
  std::string expected;  ///< asset name (Push: the file to store)
  double atol = 1e-5;
  double rtol = 1e-5;
  std::map<std::string, std::pair<double, double>> per_output;  ///< name -> (atol, rtol)
};

struct PushOptions {
  std::vector<std::string> assets;        ///< files versioned with the weights, stored by file name
  std::optional<VersionSamples> samples;  ///< stored as two more assets
  Json metrics = Json::object();
  Json params = Json::object();
  std::vector<std::string> tags;
  std::vector<std::string> aliases;  ///< set (moved) to the new version
  std::string label;
  std::optional<Ref> from;  ///< lineage parent
  std::string relation = "derived";
  std::string command;
  bool durable = true;  ///< fsync blobs (off only for scratch stores)
  ProgressFn progress;
};

struct Event {
  int64_t seq = 0;
  std::string at;
  std::string who;
  /// "push", "promote", "archive", "rollback", "alias", "unalias", "rm", "policy"
  std::string action;
  std::string model;
  int64_t version = 0;  ///< 0 when not about one version
  Json detail = Json::object();
};

struct StorageReport {
  uint64_t versions = 0;
  uint64_t logical_bytes = 0;  ///< what the live versions add up to
  uint64_t stored_bytes = 0;   ///< what the blob store holds
  uint64_t blobs = 0;
};

struct GcReport {
  uint64_t removed_blobs = 0;
  uint64_t removed_bytes = 0;
  uint64_t kept_young = 0;  ///< unreferenced but within the grace period
  uint64_t removed_temporaries = 0;
};

struct FsckReport {
  uint64_t blobs_checked = 0;
  uint64_t versions_checked = 0;
  std::vector<std::string> problems;  ///< one line each; empty when clean
};

class Registry {
 public:
  /// `root` holds the blobs (and, for SQLite, registry.db); `db_url` "" means SQLite in root,
  /// "postgresql://..." (or a libpq "host=... dbname=..." string) a shared server.
  static Result<std::unique_ptr<Registry>> Init(const std::string& root, const std::string& db_url);
  /// NotFound when `root` holds no registry.
  static Result<std::unique_ptr<Registry>> Open(const std::string& root, const std::string& db_url);
  ~Registry();

  /// Registers `model` as the next version of `name` (creating the model).
  Result<VersionRecord> Push(const std::string& name, const ModelSource& model,
                             const PushOptions& options);

  /// The version a reference names. NotFound when none.
  Result<VersionRecord> Resolve(const Ref& ref);
  /// Every model with its version count and latest version, by name.
  struct ModelSummary {
    std::string name;
    uint64_t versions = 0;
    int64_t latest = 0;
    int64_t production = 0;  ///< 0: none
  };
  Result<std::vector<ModelSummary>> ListModels();
  Result<std::vector<VersionRecord>> ListVersions(const std::string& name);

  /// A version as a ModelSource reading its tensors from the blob store (zero-copy mappings;
  /// re-hashed on load unless `verify` is false).
  Result<std::unique_ptr<ModelSource>> Load(const VersionRecord& version, bool verify = true);
  /// Re-hashes the version's manifest and every blob it names, on all cores: ChecksumMismatch
  /// (naming the tensor or asset) or NotFound. Export runs it before writing anything.
  Status Verify(const VersionRecord& version);
  /// Writes a version pushed from ONNX back as an ONNX model: its stored graph with every
  /// initializer in `dest`.data (laid out as `modelport onnx rewrite --external-data` does).
  /// Unsupported for versions pushed from formats without a graph.
  Status ExportOnnx(const VersionRecord& version, const std::string& dest,
                    const WriteOptions& options, bool verify = true);
  /// Writes a version pushed from a TorchScript archive back as that archive (its code,
  /// pickles and constants as stored, its storages from the version's tensors); false, writing
  /// nothing, for versions without a TorchScript graph.
  Result<bool> ExportTorchScript(const VersionRecord& version, const std::string& dest,
                                 const WriteOptions& options, bool verify = true);
  /// The asset paths of a version (as pushed) and their blob digests.
  Result<std::vector<std::pair<std::string, std::string>>> Assets(const VersionRecord& version);
  /// Writes a stored asset's bytes to `dest` (atomically), verifying them.
  Status ExportAsset(const std::string& digest, const std::string& dest);

  /// The samples a version was pushed with; nullopt when none.
  Result<std::optional<VersionSamples>> SamplesOf(const VersionRecord& version);

  /// Whether promoting a version of `name` requires it to pass validation first.
  Status SetRequireValidation(const std::string& name, bool required);
  Result<bool> RequiresValidation(const std::string& name);

  /// Runs validation on a version; an error refuses the promotion (and is returned as is).
  using PromotionGate = std::function<Status(const VersionRecord&)>;

  /// Makes `ref` the production version, archiving the previous one. With `expect_current`,
  /// only if production is that version now (0: none) - a compare-and-swap: of two racing
  /// promotions with the same expectation exactly one wins (the other: AlreadyExists). When the
  /// model requires validation, `gate` runs on the version first (outside the write lock:
  /// versions are immutable) and a failure refuses the promotion; with no gate such a model
  /// cannot be promoted (InvalidArgument).
  Result<VersionRecord> Promote(const Ref& ref, std::optional<int64_t> expect_current,
                                const PromotionGate& gate = nullptr);
  /// Puts production back on the version that held it before the current one.
  Result<VersionRecord> Rollback(const std::string& name);
  /// Moves a staged version to archived (a production version is archived by promoting
  /// another, or with `force`, leaving the model without one).
  Result<VersionRecord> Archive(const Ref& ref, bool force);
  Status SetAlias(const Ref& ref, const std::string& alias);
  Status RemoveAlias(const std::string& name, const std::string& alias);
  /// Removes a version (its blobs go at the next gc); a production version must be demoted
  /// first unless `force`.
  Status Remove(const Ref& ref, bool force);

  /// Removes blobs no version references that are older than `grace_seconds` (blobs of pushes
  /// still running are younger), and temporaries untouched for max(grace, 10 minutes). Safe
  /// while pushes run, even with no grace period: it sweeps under the database's write lock,
  /// and a push puts back, inside its own transaction, any blob that went meanwhile.
  Result<GcReport> Gc(int64_t grace_seconds, bool dry_run);
  /// Re-hashes every blob and checks every version's manifest and the blobs it references.
  Result<FsckReport> Fsck();
  Result<std::vector<Event>> Log(const std::string& name, size_t limit);
  Result<StorageReport> Du();

  BlobStore& blobs();

 private:
  Registry() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mp::registry
