// Status and Result<T>: the error model of the whole library. No exceptions cross the library
// boundary; every fallible call returns one of these. Result's member names follow
// std::expected (has_value, value, error, value_or) so a later move to C++23 is an alias.
#pragma once

#include <cassert>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace mp {

enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument,   ///< the caller asked for something malformed (bad flag, bad name)
  kNotFound,          ///< a file, tensor or key does not exist
  kAlreadyExists,     ///< refusing to overwrite
  kCorrupt,           ///< the input violates its format's rules
  kUnsupported,       ///< valid input that modelport does not handle (yet)
  kIoError,           ///< the operating system said no
  kChecksumMismatch,  ///< recorded and recomputed digests differ
  kLimitExceeded,     ///< a ReadOptions safety limit was hit
  kUnsafe,            ///< input that would make us run code or escape a folder
  kInternal,          ///< a bug in modelport
};

/// Short stable name of a code ("Corrupt", "IoError", ...).
std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  /// Prefixes the message with where the error happened: "file.safetensors: tensor 'x': ...".
  Status WithContext(std::string_view context) const&;
  Status WithContext(std::string_view context) &&;

  /// "Corrupt: file.safetensors: tensor 'x': data_offsets end 90 is past the buffer (80 bytes)".
  std::string ToString() const;

  /// Marks a status as deliberately ignored.
  void IgnoreError() const {}

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) {
  return {StatusCode::kInvalidArgument, std::move(m)};
}
inline Status NotFound(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status AlreadyExists(std::string m) { return {StatusCode::kAlreadyExists, std::move(m)}; }
inline Status Corrupt(std::string m) { return {StatusCode::kCorrupt, std::move(m)}; }
inline Status Unsupported(std::string m) { return {StatusCode::kUnsupported, std::move(m)}; }
inline Status IoError(std::string m) { return {StatusCode::kIoError, std::move(m)}; }
inline Status ChecksumMismatch(std::string m) {
  return {StatusCode::kChecksumMismatch, std::move(m)};
}
inline Status LimitExceeded(std::string m) { return {StatusCode::kLimitExceeded, std::move(m)}; }
inline Status Unsafe(std::string m) { return {StatusCode::kUnsafe, std::move(m)}; }
inline Status Internal(std::string m) { return {StatusCode::kInternal, std::move(m)}; }

/// Either a value or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT: implicit by design
    assert(!std::get<Status>(v_).ok() && "Result built from an OK Status");
  }

  /// Converts from a Result of a convertible type (e.g. unique_ptr<Derived> to unique_ptr<Base>).
  template <typename U>
  requires(!std::is_same_v<U, T> && std::is_convertible_v<U&&, T>)
      Result(Result<U>&& other)  // NOLINT: implicit like std::expected's
      : v_(other.has_value()
               ? std::variant<T, Status>(std::in_place_index<0>, std::move(other).value())
               : std::variant<T, Status>(std::in_place_index<1>, other.error())) {}

  bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }
  bool ok() const { return has_value(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  /// The error; Status::Ok() when there is a value.
  Status status() const { return has_value() ? Status() : std::get<1>(v_); }
  const Status& error() const { return std::get<1>(v_); }

  template <typename U>
  T value_or(U&& other) const& {
    return has_value() ? value() : static_cast<T>(std::forward<U>(other));
  }

 private:
  std::variant<T, Status> v_;
};

namespace internal {
inline const Status& ToStatus(const Status& s) { return s; }
template <typename T>
Status ToStatus(const Result<T>& r) {
  return r.status();
}
}  // namespace internal

}  // namespace mp

#define MP_CONCAT_INNER(a, b) a##b
#define MP_CONCAT(a, b) MP_CONCAT_INNER(a, b)

/// Returns from the enclosing function if `expr` (a Status or Result) is an error.
#define MP_RETURN_IF_ERROR(expr)                                                           \
  do {                                                                                     \
    auto&& mp_status_or_result_ = (expr);                                                  \
    if (!mp_status_or_result_.ok()) return ::mp::internal::ToStatus(mp_status_or_result_); \
  } while (0)

#define MP_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.has_value()) return tmp.error();      \
  lhs = std::move(tmp).value()

/// `MP_ASSIGN_OR_RETURN(auto x, MakeX());` assigns the value or returns the error.
#define MP_ASSIGN_OR_RETURN(lhs, expr) \
  MP_ASSIGN_OR_RETURN_IMPL(MP_CONCAT(mp_result_, __LINE__), lhs, expr)
