// Strict JSON parsing for headers and indexes read from untrusted files.
#include "modelport/core/json.h"

#include <cstdio>
#include <set>
#include <string>
#include <vector>

namespace mp {
namespace {

// 'key', with quotes, backslashes and control bytes escaped so the message stays one line.
std::string QuoteJsonKey(const std::string& key) {
  std::string out = "'";
  for (const char c : key) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\'' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "'";
}

}  // namespace

Result<Json> ParseStrictJson(std::string_view text, std::string_view what, int max_depth) {
  std::vector<std::set<std::string>> keys_at_depth;
  std::string duplicate;
  bool too_deep = false;
  auto callback = [&](int depth, Json::parse_event_t event, Json& parsed) {
    const auto d = static_cast<size_t>(depth);
    if ((event == Json::parse_event_t::object_start || event == Json::parse_event_t::array_start) &&
        depth >= max_depth) {
      too_deep = true;
      return false;  // skip the value instead of building it
    }
    if (too_deep) return false;
    if (event == Json::parse_event_t::object_start) {
      if (keys_at_depth.size() <= d) keys_at_depth.resize(d + 1);
      keys_at_depth[d].clear();
    } else if (event == Json::parse_event_t::key) {
      // Keys of an object at depth d arrive with depth d + 1.
      auto& keys = keys_at_depth[d - 1];
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!keys.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  try {
    Json json = Json::parse(text.begin(), text.end(), callback);
    if (too_deep) {
      return Corrupt(std::string(what) + " nests deeper than " + std::to_string(max_depth) +
                     " levels");
    }
    if (!duplicate.empty())
      return Corrupt(std::string(what) + ": duplicate key " + QuoteJsonKey(duplicate));
    return json;
  } catch (const Json::exception& e) {
    return Corrupt(std::string(what) + " is not valid JSON: " + e.what());
  }
}

bool IsValidUtf8(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<uint8_t>(text[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (len > text.size() - i) return false;
    for (size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<uint8_t>(text[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += len;
  }
  return true;
}

}  // namespace mp
