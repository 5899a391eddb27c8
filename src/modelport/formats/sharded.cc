// Hugging Face sharded models: an index (*.index.json) whose "weight_map" names the shard file
// of every tensor, the shards beside it. Shared by every format that shards this way.
#include "modelport/formats/sharded.h"

#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <unordered_set>

#include "modelport/core/file.h"
#include "modelport/core/json.h"
#include "modelport/formats/zip/zip.h"

namespace mp {
namespace {

namespace fs = std::filesystem;

std::string Quote(std::string_view s) { return zip::QuoteName(s); }

}  // namespace

// A shard name from an index must be a plain file in the index's own folder.
Status CheckShardName(const std::string& dir, const std::string& name) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      name.find('\\') != std::string::npos || name.find('\0') != std::string::npos) {
    return Unsafe("shard file name " + Quote(name) +
                  " is not a plain file name in the index's folder");
  }
  struct stat st {};
  const std::string path = (fs::path(dir) / name).string();
  if (::lstat(path.c_str(), &st) != 0) return NotFound("shard " + Quote(name) + " is missing");
  if (S_ISLNK(st.st_mode)) return Unsafe("shard " + Quote(name) + " is a symbolic link");
  if (!S_ISREG(st.st_mode)) return Unsafe("shard " + Quote(name) + " is not a regular file");
  return Status::Ok();
}

namespace {

class ShardedReader final : public ModelSource {
 public:
  static Result<std::unique_ptr<ModelSource>> Open(const std::string& index_path,
                                                   const ReadOptions& options,
                                                   const ShardOpener& open_shard) {
    std::unique_ptr<ShardedReader> reader(new ShardedReader());
    Status s = reader->Init(index_path, options, open_shard);
    if (!s.ok()) return std::move(s).WithContext(index_path);
    return std::unique_ptr<ModelSource>(std::move(reader));
  }

  std::string_view format() const override { return shards_.front()->format(); }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const Json& metadata() const override { return metadata_; }
  Result<TensorView> Load(size_t index) const override {
    if (index >= where_.size()) return NotFound("tensor #" + std::to_string(index));
    const auto [shard, i] = where_[index];
    return shards_[shard]->Load(i);
  }
  Status LoadInto(size_t index, std::span<uint8_t> dest) const override {
    if (index >= where_.size()) return NotFound("tensor #" + std::to_string(index));
    const auto [shard, i] = where_[index];
    return shards_[shard]->LoadInto(i, dest);
  }
  ModelFiles files() const override {
    ModelFiles out{index_path_, {}};
    for (const auto& shard : shards_) out.files.push_back(shard->files().files[0]);
    return out;
  }

  ShardedReader() = default;

  std::vector<std::string> notes() const override {
    std::vector<std::string> out;
    for (const auto& shard : shards_)
      for (auto& n : shard->notes()) out.push_back(shard->files().files[0] + ": " + n);
    return out;
  }

 private:
  Status Init(const std::string& index_path, const ReadOptions& options,
              const ShardOpener& open_shard) {
    index_path_ = index_path;
    MP_ASSIGN_OR_RETURN(std::string text, ReadSmallFile(index_path, options.max_index_bytes));
    MP_ASSIGN_OR_RETURN(Json index, ParseStrictJson(text, "index"));
    if (!index.is_object()) return Corrupt("index is not a JSON object");
    auto wm = index.find("weight_map");
    if (wm == index.end() || !wm->is_object()) {
      return Corrupt("index has no \"weight_map\" object");
    }
    const std::string dir = fs::path(index_path).parent_path().string();
    // Shards in the order of their first appearance in the sorted file names, so tensors are
    // read file by file.
    std::map<std::string, std::vector<std::string>> tensors_by_shard;
    for (const auto& [tensor, file] : wm->items()) {
      if (!file.is_string())
        return Corrupt("weight_map entry " + Quote(tensor) + " is not a string");
      tensors_by_shard[file.get<std::string>()].push_back(tensor);
    }
    if (tensors_by_shard.size() > options.max_shards) {
      return LimitExceeded(std::to_string(tensors_by_shard.size()) +
                           " shards is over the limit of " + std::to_string(options.max_shards));
    }
    for (const auto& [file, listed] : tensors_by_shard) {
      MP_RETURN_IF_ERROR(CheckShardName(dir, file));
      MP_ASSIGN_OR_RETURN(auto shard, open_shard((fs::path(dir) / file).string(), options));
      // The index and the shard must agree exactly on which tensors live there (a tied alias
      // the shard keeps once counts as held).
      std::unordered_set<std::string> in_shard;
      for (const auto& t : shard->tensors()) in_shard.insert(t.name);
      const Json& shard_meta = shard->metadata();
      auto shard_aliases = shard_meta.find(kAliasesMetadataKey);
      if (shard_aliases != shard_meta.end() && shard_aliases->is_object())
        for (const auto& [alias, target] : shard_aliases->items()) in_shard.insert(alias);
      for (const auto& name : listed) {
        if (!in_shard.count(name)) {
          return Corrupt("index maps tensor " + Quote(name) + " to " + Quote(file) +
                         " but that shard does not hold it");
        }
      }
      if (listed.size() != in_shard.size()) {
        for (const auto& name : in_shard) {
          auto it = wm->find(name);
          if (it == wm->end() || *it != file) {
            return Corrupt("shard " + Quote(file) + " holds tensor " + Quote(name) +
                           " that the index does not map to it");
          }
        }
      }
      const size_t shard_no = shards_.size();
      for (size_t i = 0; i < shard->tensors().size(); ++i) {
        infos_.push_back(shard->tensors()[i]);
        where_.emplace_back(shard_no, i);
      }
      for (const auto& [key, value] : shard_meta.items()) {
        if (key == kAliasesMetadataKey && metadata_.contains(key) && value.is_object()) {
          metadata_[key].update(value);  // each shard's ties
        } else if (!metadata_.contains(key)) {
          metadata_[key] = value;
        }
      }
      shards_.push_back(std::move(shard));
    }
    return Status::Ok();
  }

  std::string index_path_;
  std::vector<std::unique_ptr<ModelSource>> shards_;
  std::vector<TensorInfo> infos_;
  std::vector<std::pair<size_t, size_t>> where_;
  Json metadata_ = Json::object();
};

}  // namespace

Result<std::unique_ptr<ModelSource>> OpenShardedIndex(const std::string& index_path,
                                                      const ReadOptions& options,
                                                      const ShardOpener& open_shard) {
  return ShardedReader::Open(index_path, options, open_shard);
}

std::vector<std::vector<size_t>> PlanShards(const std::vector<TensorInfo>& tensors,
                                            uint64_t shard_size) {
  std::vector<std::vector<size_t>> shards;
  uint64_t current = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t size = tensors[i].byte_size;
    if (shards.empty() || (shard_size > 0 && current > 0 && current + size > shard_size)) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(i);
    current += size;
  }
  if (shards.empty()) shards.emplace_back();
  return shards;
}

std::string ShardFileName(const std::string& prefix, size_t k, size_t n, const std::string& ext) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "-%05zu-of-%05zu", k, n);
  return prefix + buf + ext;
}

}  // namespace mp
