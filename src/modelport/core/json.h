// Strict JSON parsing for headers and indexes read from untrusted files.
#pragma once

#include <string_view>

#include "modelport/core/status.h"
#include "modelport/core/tensor.h"

namespace mp {

/// Deepest nesting a safetensors header or sharded index may have: a valid one nests 3 levels
/// ({"name": {"shape": [..]}}). Anything deeper is refused before it is built, so later code
/// never recurses through a hostile structure.
inline constexpr int kMaxHeaderJsonDepth = 8;

/// Parses JSON, rejecting duplicate keys at any depth (nlohmann keeps the last silently, which
/// would let two readers of one file disagree about its content) and nesting deeper than
/// `max_depth`. Errors are Corrupt and start with `what` ("header", "index").
Result<Json> ParseStrictJson(std::string_view text, std::string_view what,
                             int max_depth = kMaxHeaderJsonDepth);

/// True when `text` is well-formed UTF-8: no stray or missing continuation bytes, overlong
/// forms, surrogates or code points past U+10FFFF. JSON strings must be (nlohmann throws on
/// dumping anything else), and so must names that become JSON.
bool IsValidUtf8(std::string_view text);

}  // namespace mp
