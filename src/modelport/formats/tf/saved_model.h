// TensorFlow SavedModel folders (tensorflow/core/protobuf/saved_model.proto, meta_graph.proto):
//
//   <base>/<numeric version>/saved_model.pb       SavedModel {schema_version = 1, meta_graphs = 2}
//                            variables/variables.{index,data-*}   a tensor bundle (bundle.h)
//                            assets/, assets.extra/, fingerprint.pb (optional)
//
// MetaGraphDef {meta_info_def = 1 {tags = 4, tensorflow_version = 5}, graph_def = 2,
// signature_def = 5 (map: key = 1, value = 2), asset_file_def = 6 {tensor_info = 1,
// filename = 2}}; SignatureDef {inputs = 1, outputs = 2 (maps of TensorInfo), method_name = 3};
// TensorInfo {name = 1 | coo_sparse = 4 | composite_tensor = 5, dtype = 2, tensor_shape = 3}.
// TF Serving loads <base>/<version>/ for numeric version folder names.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "modelport/formats/format.h"
#include "modelport/formats/tf/bundle.h"

namespace mp::tf {

/// A SignatureDef input or output.
struct SignatureTensor {
  std::string key;       ///< the map key ("x")
  std::string name;      ///< graph tensor name ("x:0"); empty for sparse/composite
  std::string encoding;  ///< "name", "coo_sparse" or "composite_tensor"
  int32_t dtype = 0;     ///< TF DataType
  bool unknown_rank = false;
  std::vector<int64_t> dims;  ///< -1 for unknown dimensions
};

struct Signature {
  std::string key;  ///< "serving_default"
  std::string method_name;
  std::vector<SignatureTensor> inputs;   ///< sorted by key
  std::vector<SignatureTensor> outputs;  ///< sorted by key
};

struct MetaGraph {
  std::vector<std::string> tags;
  std::string tensorflow_version;
  std::vector<Signature> signatures;  ///< sorted by key
  std::vector<std::string> asset_files;
  uint64_t graph_def_bytes = 0;
  bool has_object_graph = false;  ///< TF2 (SavedObjectGraph present)
};

struct SavedModelInfo {
  int64_t schema_version = 0;
  std::vector<MetaGraph> meta_graphs;
};

/// Parses saved_model.pb bytes. Corrupt (naming the field) for malformed protobuf.
Result<SavedModelInfo> ParseSavedModel(std::span<const uint8_t> bytes);

/// {"schema_version", "meta_graphs": [{"tags", "tensorflow_version", "signatures": {key:
/// {"method_name", "inputs": {key: {"name", "dtype", "shape"}}, "outputs"}}, "asset_files"}]}.
Json SavedModelJson(const SavedModelInfo& info);
/// The signatures as `saved_model_cli show --all` prints them.
std::string FormatSignatures(const SavedModelInfo& info);

/// The version folder `path` names: a folder holding saved_model.pb, the saved_model.pb file
/// itself, or a TF Serving base folder (the highest numeric version that holds saved_model.pb).
Result<std::string> ResolveVersionDir(const std::string& path);

/// A SavedModel open for reading: its variables as tensors (a BundleSource; none when the
/// model has no variables/ folder) and its parsed saved_model.pb.
class SavedModelSource final : public ModelSource {
 public:
  static Result<std::unique_ptr<SavedModelSource>> Open(const std::string& path,
                                                        const ReadOptions& options);

  std::string_view format() const override { return "saved_model"; }
  const std::vector<TensorInfo>& tensors() const override;
  const Json& metadata() const override { return metadata_; }
  Result<TensorView> Load(size_t index) const override;
  Status LoadInto(size_t index, std::span<uint8_t> dest) const override;
  ModelFiles files() const override;
  std::vector<std::string> notes() const override;

  const std::string& dir() const { return dir_; }
  const SavedModelInfo& info() const { return info_; }
  /// The variables bundle; null when the model has none.
  const BundleSource* variables() const { return variables_.get(); }

 private:
  SavedModelSource() = default;
  std::string dir_;
  SavedModelInfo info_;
  std::unique_ptr<BundleSource> variables_;
  std::vector<std::string> notes_;
  Json metadata_ = Json::object();
};

struct SaveWithVariablesOptions {
  /// Version folder name under out_dir; 0: the source's numeric folder name as it is spelled
  /// ("00000123"), else "1".
  uint64_t version = 0;
  /// Keep the old value of variables the new weights lack (else InvalidArgument).
  bool allow_missing = false;
  /// Ignore new tensors that match no variable (else InvalidArgument).
  bool allow_unused = false;
  WriteOptions write;
};

/// What SaveWithVariables wrote.
struct SaveWithVariablesReport {
  std::string source_dir;             ///< the SavedModel version folder read
  std::string version_dir;            ///< the version folder's path
  std::vector<std::string> replaced;  ///< variables given the new tensor of their name
  std::vector<std::string> kept;      ///< variables that kept their value (allow_missing)
  std::vector<std::string> unused;    ///< new tensors that matched no variable (allow_unused)
};

/// Writes a copy of the SavedModel at `saved_model_dir` to `out_dir`/<version>/ with every
/// variable replaced by the tensor of the same name in `weights` (dtype and shape must match):
/// saved_model.pb, fingerprint.pb, assets/ and assets.extra/ are copied byte for byte; string
/// tensors (the TF2 object graph) are kept. The version folder is built under a hidden
/// temporary name and renamed into place, so TF Serving never sees a partial version;
/// AlreadyExists if it exists.
Result<SaveWithVariablesReport> SaveWithVariables(const std::string& saved_model_dir,
                                                  const ModelSource& weights,
                                                  const std::string& out_dir,
                                                  const SaveWithVariablesOptions& options = {});

/// Format table entry points.
Result<std::unique_ptr<ModelSource>> OpenSavedModel(const std::string& path,
                                                    const ReadOptions& options);
/// saved_model.pb content: optional schema version, then a MetaGraphDef field.
bool DetectSavedModel(std::span<const uint8_t> prefix, uint64_t file_size);
inline constexpr size_t kSavedModelDetectBytes = 16;
/// A version folder (saved_model.pb) or a TF Serving base folder.
bool DetectSavedModelDir(const std::string& dir);

}  // namespace mp::tf
