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

}  // namespace mp
