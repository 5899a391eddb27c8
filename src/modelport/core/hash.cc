#include "modelport/core/hash.h"

#include <openssl/evp.h>
#include <xxhash.h>

#include <algorithm>
#include <cstdio>

#include "modelport/core/file.h"
#include "modelport/core/parallel.h"

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

struct Xxh3::Impl {
  XXH3_state_t* state = nullptr;
};

Xxh3::Xxh3() : impl_(std::make_unique<Impl>()) {
  impl_->state = XXH3_createState();
  XXH3_128bits_reset(impl_->state);
}

Xxh3::~Xxh3() { XXH3_freeState(impl_->state); }

void Xxh3::Update(std::span<const uint8_t> bytes) {
  if (!bytes.empty()) XXH3_128bits_update(impl_->state, bytes.data(), bytes.size());
}

std::string Xxh3::FinishHex() {
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, XXH3_128bits_digest(impl_->state));
  return ToHex(canonical.digest);
}

bool IsLowerHex(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool IsXxh3Hex(std::string_view text) { return text.size() == 32 && IsLowerHex(text); }

std::string ToHex(std::span<const uint8_t> bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(bytes.size() * 2, '0');
  for (size_t i = 0; i < bytes.size(); ++i) {
    out[2 * i] = kHex[bytes[i] >> 4];
    out[2 * i + 1] = kHex[bytes[i] & 15];
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
  std::vector<std::string> digests(source.tensors().size());
  MP_RETURN_IF_ERROR(ParallelFor(
      digests.size(),
      [&](size_t i) -> Status {
        MP_ASSIGN_OR_RETURN(TensorView tensor, source.Load(i));
        digests[i] = TensorDigest(tensor);
        return Status::Ok();
      },
      threads));
  return digests;
}

}  // namespace mp
