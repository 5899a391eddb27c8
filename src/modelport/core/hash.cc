#include "modelport/core/hash.h"

#include <openssl/evp.h>

#include <atomic>
#include <cstdio>
#include <mutex>
#include <thread>

#include "modelport/core/file.h"

namespace mp {

struct Sha256::Impl {
  EVP_MD_CTX* ctx = nullptr;
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) {
  impl_->ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(impl_->ctx, EVP_sha256(), nullptr);
}

Sha256::~Sha256() { EVP_MD_CTX_free(impl_->ctx); }

void Sha256::Update(std::span<const uint8_t> bytes) {
  if (!bytes.empty()) EVP_DigestUpdate(impl_->ctx, bytes.data(), bytes.size());
}

void Sha256::Update(std::string_view text) {
  Update(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

Digest Sha256::Finish() {
  Digest out{};
  unsigned int len = 0;
  EVP_DigestFinal_ex(impl_->ctx, out.data(), &len);
  return out;
}

std::string ToHex(const Digest& digest) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(digest.size() * 2, '0');
  for (size_t i = 0; i < digest.size(); ++i) {
    out[2 * i] = kHex[digest[i] >> 4];
    out[2 * i + 1] = kHex[digest[i] & 15];
  }
  return out;
}

Result<std::string> FileSha256(const std::string& path) {
  MP_ASSIGN_OR_RETURN(auto file, InputFile::Open(path));
  file->Advise(0, file->size(), AccessHint::kSequential);
  Sha256 sha;
  constexpr uint64_t kChunk = 8 << 20;
  for (uint64_t off = 0; off < file->size(); off += kChunk) {
    const uint64_t n = std::min(kChunk, file->size() - off);
    MP_ASSIGN_OR_RETURN(auto chunk, file->Read(off, n));
    sha.Update(chunk->span());
  }
  return ToHex(sha.Finish());
}

std::string TensorDigest(const TensorView& tensor) {
  Sha256 sha;
  std::string prefix = "modelport.tensor.v1\n";
  prefix += DTypeName(tensor.info.dtype);
  prefix += "\n";
  const auto& dims = tensor.info.shape.dims();
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) prefix += ",";
    prefix += std::to_string(dims[i]);
  }
  prefix += "\n";
  sha.Update(prefix);
  sha.Update(tensor.bytes());
  return ToHex(sha.Finish());
}

Result<std::vector<std::string>> TensorDigests(const ModelSource& source, unsigned threads) {
  const size_t n = source.tensors().size();
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  threads = static_cast<unsigned>(std::min<size_t>(threads, std::max<size_t>(n, 1)));
  std::vector<std::string> digests(n);
  std::atomic<size_t> next{0};
  std::mutex error_mutex;
  Status first_error;
  auto work = [&] {
    for (size_t i = next++; i < n; i = next++) {
      auto tensor = source.Load(i);
      if (!tensor) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (first_error.ok()) first_error = tensor.error();
        next = n;  // stop the other workers early
        return;
      }
      digests[i] = TensorDigest(*tensor);
    }
  };
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (!first_error.ok()) return first_error;
  return digests;
}

}  // namespace mp
