#include "modelport/formats/torch/scan.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <utility>

#include "modelport/core/file.h"
#include "modelport/formats/format.h"
#include "modelport/formats/numpy/numpy.h"

namespace mp::torch {
namespace {

using namespace std::string_literals;
using Bytes = std::span<const uint8_t>;
constexpr uint64_t kNone = std::numeric_limits<uint64_t>::max();

uint64_t Le(Bytes b, uint64_t at, int n) {
  uint64_t v = 0;
  for (int k = 0; k < n; ++k) v |= uint64_t{b[at + k]} << (8 * k);
  return v;
}

bool StartsWith(Bytes b, std::string_view magic) {
  return b.size() >= magic.size() && std::memcmp(b.data(), magic.data(), magic.size()) == 0;
}

std::string_view BaseName(std::string_view name) {
  const size_t slash = name.find_last_of('/');
  return slash == std::string_view::npos ? name : name.substr(slash + 1);
}

// Text from the file, made safe for a one-line message: control bytes become \xNN.
std::string Printable(std::string_view s, size_t max = 300) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < max; ++i) {
    const auto c = static_cast<uint8_t>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > max) out += "...";
  return out;
}

// VM messages count bytes from the start of the pickle; reports count from the start of the
// file or entry. Shifts the first "byte N" in `text` by `base`.
std::string Rebase(const std::string& text, uint64_t base) {
  if (base == 0) return text;
  const size_t at = text.find("byte ");
  if (at == std::string::npos) return text;
  size_t end = at + 5;
  uint64_t n = 0;
  while (end < text.size() && text[end] >= '0' && text[end] <= '9' && end - at < 25)
    n = n * 10 + static_cast<uint64_t>(text[end++] - '0');
  if (end == at + 5) return text;
  return text.substr(0, at + 5) + std::to_string(n + base) + text.substr(end);
}

// A dotted Python path that an import could resolve ("os.system"), as opposed to the bytes a
// non-pickle file happens to hold between two newlines.
bool IsIdentifierPath(std::string_view name) {
  if (name.empty()) return false;
  bool start = true;
  for (const char ch : name) {
    const auto c = static_cast<uint8_t>(ch);
    if (c == '.') {
      if (start) return false;
      start = true;
      continue;
    }
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
    const bool digit = c >= '0' && c <= '9';
    if (!alpha && !(digit && !start)) return false;
    start = false;
  }
  return !start;
}

// The VM's own allow-list, asked through the VM (one list, no copy that could drift): a
// one-global pickle is scanned and its import's `allowed` flag read back.
class AllowList {
 public:
  bool Allowed(const std::string& name, PickleMode mode) {
    const size_t dot = name.rfind('.');
    if (dot == std::string::npos || dot == 0 || dot + 1 == name.size() ||
        name.find('\n') != std::string::npos)
      return false;
    const auto key = std::make_pair(name, static_cast<int>(mode));
    if (auto it = cache_.find(key); it != cache_.end()) return it->second;
    const std::string p = "\x80\x02c"s + name.substr(0, dot) + "\n" + name.substr(dot + 1) + "\n.";
    auto r = ScanPickle(Bytes(reinterpret_cast<const uint8_t*>(p.data()), p.size()), {}, mode);
    const bool ok = r.has_value() && r->imports.size() == 1 && r->imports[0].allowed;
    cache_.emplace(key, ok);
    return ok;
  }

 private:
  std::map<std::pair<std::string, int>, bool> cache_;
};

// ---------------------------------------------------------------------------------------------
// Opcode walk: the stream as pickle.load reads it (argument lengths, no values), for the part
// of a pickle the VM did not get through. Opcodes from CPython Lib/pickletools.py.

enum class Arg : uint8_t { kBad, kNone, kU1, kU2, kU4, kU8, kLine, kTwoLines, kLen1, kLen4, kLen8 };

Arg ArgOf(uint8_t op) {
  using namespace std::string_view_literals;
  static constexpr std::pair<std::string_view, Arg> kGroups[] = {
      {"(.012NQRabd}el]ost)u\x81\x85\x86\x87\x88\x89\x8f\x90\x91\x92\x93\x94\x97\x98"sv,
       Arg::kNone},
      {"Khq\x80\x82"sv, Arg::kU1},
      {"M\x83"sv, Arg::kU2},
      {"Jjr\x84"sv, Arg::kU4},
      {"G\x95"sv, Arg::kU8},
      {"ILFSVPgp"sv, Arg::kLine},
      {"ci"sv, Arg::kTwoLines},
      {"UC\x8c\x8a"sv, Arg::kLen1},
      {"XBT\x8b"sv, Arg::kLen4},
      {"\x8d\x8e\x96"sv, Arg::kLen8},
  };
  for (const auto& [ops, arg] : kGroups)
    if (ops.find(static_cast<char>(op)) != std::string_view::npos) return arg;
  return Arg::kBad;
}

struct WalkImport {
  uint64_t offset = 0;
  std::string name;  // "module.name"; empty when a STACK_GLOBAL's names are not known
  std::string opcode;
};

struct WalkCall {
  uint64_t offset = 0;
  std::string opcode;
};

struct Walk {
  uint64_t end = 0;      // just past STOP, or where the walk stopped
  bool stopped = false;  // reached STOP
  std::string error;
  std::vector<WalkImport> imports;
  std::vector<WalkCall> calls;
};

// Walks the pickle at the start of `b` to its STOP, recording the imports and calls of opcodes
// that end after byte `from` (the VM got through everything before). STACK_GLOBAL names are
// followed through string literals and the memo (PUT/BINPUT/LONG_BINPUT/MEMOIZE, GET/...) when
// they are pushed just before it; any other way of computing them leaves the name unknown.
Walk WalkOpcodes(Bytes b, uint64_t from) {
  constexpr size_t kMaxMemo = 1 << 20;
  Walk w;
  std::map<uint64_t, std::optional<std::string>> memo;
  bool memo_lost = false;
  std::vector<std::optional<std::string>> recent;  // the last pushes, newest last (at most 2)
  auto push = [&](std::optional<std::string> v) {
    recent.push_back(std::move(v));
    if (recent.size() > 2) recent.erase(recent.begin());
  };
  auto put = [&](uint64_t index) {
    if (memo_lost) return;
    if (memo.size() >= kMaxMemo && memo.count(index) == 0) {
      memo_lost = true;
      memo.clear();
      return;
    }
    memo[index] = recent.empty() ? std::nullopt : recent.back();
  };
  auto get = [&](uint64_t index) {
    auto it = memo.find(index);
    push(it == memo.end() ? std::nullopt : it->second);
  };
  uint64_t pos = 0;
  while (true) {
    if (pos >= b.size()) {
      w.error = "ends without STOP";
      break;
    }
    const uint64_t at = pos;
    const uint8_t op = b[pos++];
    const Arg arg = ArgOf(op);
    if (arg == Arg::kBad) {
      w.error = "unknown opcode";
      pos = at;
      break;
    }
    uint64_t ival = 0;
    std::string_view line1, line2, data;
    auto read_line = [&](std::string_view* out) {
      const void* nl = std::memchr(b.data() + pos, '\n', b.size() - pos);
      if (nl == nullptr) return false;
      const size_t n = static_cast<const uint8_t*>(nl) - (b.data() + pos);
      *out = std::string_view(reinterpret_cast<const char*>(b.data() + pos), n);
      pos += n + 1;
      return true;
    };
    bool ok = true;
    switch (arg) {
      case Arg::kNone:
        break;
      case Arg::kU1:
      case Arg::kU2:
      case Arg::kU4:
      case Arg::kU8: {
        const int n = arg == Arg::kU1 ? 1 : arg == Arg::kU2 ? 2 : arg == Arg::kU4 ? 4 : 8;
        if (b.size() - pos < static_cast<uint64_t>(n)) {
          ok = false;
          break;
        }
        ival = Le(b, pos, n);
        pos += n;
        break;
      }
      case Arg::kLine:
        ok = read_line(&line1);
        break;
      case Arg::kTwoLines:
        ok = read_line(&line1) && read_line(&line2);
        break;
      case Arg::kLen1:
      case Arg::kLen4:
      case Arg::kLen8: {
        const int n = arg == Arg::kLen1 ? 1 : arg == Arg::kLen4 ? 4 : 8;
        if (b.size() - pos < static_cast<uint64_t>(n)) {
          ok = false;
          break;
        }
        uint64_t len = Le(b, pos, n);
        pos += n;
        // BINSTRING and LONG4 lengths are signed; pickle.load refuses negative ones.
        if ((op == 'T' || op == 0x8b) && len >= 0x80000000u) {
          ok = false;
          break;
        }
        if (len > b.size() - pos) {
          ok = false;
          break;
        }
        data = std::string_view(reinterpret_cast<const char*>(b.data() + pos), len);
        pos += len;
        break;
      }
      case Arg::kBad:
        break;
    }
    if (!ok) {
      w.error = "truncated argument";
      pos = at;
      break;
    }
    if (op == 0x80 && ival > 5) {
      w.error = "unsupported protocol";
      pos = at;
      break;
    }
    const bool record = pos >= from;
    switch (op) {
      case '.':
        w.stopped = true;
        break;
      case 0x95:  // FRAME
      case 0x80:  // PROTO
        break;
      case 'p':
      case 'q':
      case 'r':
      case 0x94: {
        uint64_t index = ival;
        if (op == 'p') {
          index = 0;
          for (char c : line1) {
            if (c < '0' || c > '9' || index > (uint64_t{1} << 40)) {
              index = kNone;
              break;
            }
            index = index * 10 + static_cast<uint64_t>(c - '0');
          }
        } else if (op == 0x94) {
          index = memo.size();
        }
        if (index != kNone) put(index);
        break;
      }
      case 'g':
      case 'h':
      case 'j': {
        uint64_t index = ival;
        if (op == 'g') {
          index = 0;
          for (char c : line1) {
            if (c < '0' || c > '9' || index > (uint64_t{1} << 40)) {
              index = kNone;
              break;
            }
            index = index * 10 + static_cast<uint64_t>(c - '0');
          }
        }
        if (memo_lost || index == kNone) {
          push(std::nullopt);
        } else {
          get(index);
        }
        break;
      }
      case 'X':
      case 0x8c:
      case 0x8d:
      case 'T':
      case 'U':
        push(std::string(data));
        break;
      case 'V':
      case 'S': {
        // Escapes are decoded differently by each; a name with one is left unknown.
        std::string_view s = line1;
        if (op == 'S') {
          if (s.size() >= 2 && (s[0] == '\'' || s[0] == '"') && s.back() == s[0]) {
            s = s.substr(1, s.size() - 2);
          } else {
            s = "\\";
          }
        }
        if (s.find('\\') == std::string_view::npos) {
          push(std::string(s));
        } else {
          push(std::nullopt);
        }
        break;
      }
      case '2':
        push(recent.empty() ? std::nullopt : recent.back());
        break;
      case 'c':
      case 'i':
        if (record) {
          w.imports.push_back(
              {at, std::string(line1) + "." + std::string(line2), op == 'c' ? "GLOBAL" : "INST"});
          if (op == 'i') w.calls.push_back({at, "INST"});
        }
        recent.clear();
        push(std::nullopt);
        break;
      case 0x93: {
        std::string name;
        if (recent.size() == 2 && recent[0].has_value() && recent[1].has_value())
          name = *recent[0] + "." + *recent[1];
        if (record) w.imports.push_back({at, name, "STACK_GLOBAL"});
        recent.clear();
        push(std::nullopt);
        break;
      }
      case 0x82:
      case 0x83:
      case 0x84:
        if (record) w.imports.push_back({at, "", std::string(PickleOpcodeName(op))});
        recent.clear();
        push(std::nullopt);
        break;
      case 'R':
      case 0x81:
      case 0x92:
      case 'o':
      case 'b':
        if (record) w.calls.push_back({at, std::string(PickleOpcodeName(op))});
        recent.clear();
        if (op != 'b') push(std::nullopt);
        break;
      default:
        recent.clear();
        // Everything else that pushes one value pushes one that is not a name.
        if (arg != Arg::kNone || op == 'N' || op == 0x88 || op == 0x89 || op == ']' || op == '}' ||
            op == ')' || op == 0x8f)
          push(std::nullopt);
        break;
    }
    if (w.stopped) break;
  }
  w.end = pos;
  return w;
}

// The legacy magic number pickle ("\x80\x02\x8a\x0a" + 0x1950a86a20f9469cfc6c LE + "."), in
// any protocol; the VM keeps ints in 64 bits, so this one is recognised by its bytes. Returns
// its length, or 0.
uint64_t LegacyMagicLength(Bytes b) {
  static constexpr uint8_t kMagic[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9,
                                         0x20, 0x6a, 0xa8, 0x50, 0x19};
  uint64_t pos = 0;
  if (b.size() >= 2 && b[0] == 0x80) pos = 2;
  if (b.size() >= pos + 9 && b[pos] == 0x95) pos += 9;
  bool number = false;
  if (b.size() >= pos + 12 && b[pos] == 0x8a && b[pos + 1] == 10 &&
      std::memcmp(b.data() + pos + 2, kMagic, 10) == 0) {
    pos += 12;
    number = true;
  } else {
    static constexpr std::string_view kText = "L119547037146038801333356";
    if (b.size() >= pos + kText.size() + 1 &&
        std::memcmp(b.data() + pos, kText.data(), kText.size()) == 0) {
      pos += kText.size();
      if (pos < b.size() && b[pos] == 'L') ++pos;
      if (pos < b.size() && b[pos] == '\n') {
        ++pos;
        number = true;
      }
    }
  }
  if (!number) return 0;
  if (pos < b.size() && b[pos] == 0x94) ++pos;        // MEMOIZE
  if (pos + 1 < b.size() && b[pos] == 'q') pos += 2;  // BINPUT
  if (pos < b.size() && b[pos] == 'p') {              // PUT
    while (pos < b.size() && b[pos] != '\n') ++pos;
    ++pos;
  }
  if (pos < b.size() && b[pos] == '.') return pos + 1;
  return 0;
}

// ---------------------------------------------------------------------------------------------

// One entry as a lenient walk finds it: the central directory record (if any) and the local
// header it points at.
struct LooseEntry {
  std::string name;  // central name, or the local name when found by walking local headers
  std::string local_name;
  bool has_central = false;
  bool has_local = false;
  uint16_t flags = 0, local_flags = 0;
  uint16_t method = 0, local_method = 0;
  uint64_t csize = 0, usize = 0;
  uint64_t local_csize = 0;
  uint64_t local_offset = 0, data_offset = 0;
  bool size_known = true;
};

// What makes a run of bytes count as a pickle when it is not known to be one.
enum class Evidence : uint8_t {
  kNone,              // it is a pickle whatever it holds
  kImportable,        // an import of a name Python could resolve (the file is another format too)
  kImportableOrStop,  // kImportable, or a STOP reached cleanly (bytes after a pickle)
  // kImportable, or clean pickles up to the end of the input. Text often starts with opcode
  // bytes: "import x" reads "mport x" as a module name (INST), "Git 1.7.3." is a float (BINFLOAT
  // then STOP) followed by prose; neither imports anything that exists.
  kImportableOrWhole,
};

// Whether b[start..] is clean pickles up to its end.
bool WholeStream(Bytes b, uint64_t start) {
  for (int n = 0; start < b.size(); ++n) {
    if (n == 64) return false;
    auto r = ScanPickle(b.subspan(start));
    if (!r.has_value() || !r->stream_status.ok() || r->end_offset == 0) return false;
    start += r->end_offset;
  }
  return true;
}

// Roles of the five pickles of a legacy checkpoint after the magic number.
constexpr std::string_view kLegacyRoles[] = {"protocol version", "sys_info", "object",
                                             "storage keys"};

struct Span {
  uint64_t offset = 0;
  uint64_t end = 0;  // just past STOP
  bool clean = false;
};

class Scanner {
 public:
  Scanner(FileScan& out, const ScanOptions& options) : out_(out), options_(options) {}

  void Reason(Verdict severity, const std::string& where, std::string text) {
    out_.reasons.push_back({severity, where, Printable(text, 600)});
  }

  // Scans the pickles in a row in b[start..): at most `max_count` (0: options.max_pickles).
  // Returns the pickles found (empty if the first does not meet `first`).
  std::vector<Span> ScanStream(Bytes b, uint64_t start, const std::string& where, PickleMode mode,
                               Evidence first, size_t max_count = 0,
                               std::span<const std::string_view> roles = {},
                               bool trailing_is_reported = true);

  void ScanZip(const std::shared_ptr<InputFile>& file, Bytes b);
  bool ScanAppendedZip(Bytes b);
  void ScanNpy(Bytes b, const std::string& where);
  void ScanLegacy(Bytes b, uint64_t magic_end);
  bool ScanTar(Bytes b);

 private:
  struct One {
    bool is_pickle = false;
    bool clean = false;
    uint64_t next = kNone;  // where the next pickle would start; kNone: the stream cannot go on
  };
  One ScanOne(Bytes b, uint64_t off, const std::string& where, PickleMode mode, Evidence evidence,
              std::string_view role);
  void WalkRest(Bytes b, uint64_t off, const std::string& where, PickleMode mode);
  void AddWalkFindings(const Walk& walk, const ScanReport* report, uint64_t base,
                       const std::string& where, PickleMode mode, bool after_break);
  void ScanZipEntry(const std::string& name, Bytes data, PickleMode mode);
  PickleMode ArchiveKind(const std::vector<std::string>& names, bool set_format);
  void ScanLoose(Bytes b, const std::vector<LooseEntry>& loose, bool set_format);

  FileScan& out_;
  const ScanOptions& options_;
  AllowList allow_;
};

void Scanner::AddWalkFindings(const Walk& walk, const ScanReport* report, uint64_t base,
                              const std::string& where, PickleMode mode, bool after_break) {
  std::set<uint64_t> seen;
  if (report != nullptr)
    for (const auto& i : report->imports) seen.insert(i.offset);
  for (const WalkImport& i : walk.imports) {
    if (seen.count(i.offset) != 0) continue;
    const uint64_t at = base + i.offset;
    const bool known = !i.name.empty();
    const bool allowed = known && allow_.Allowed(i.name, mode);
    out_.imports.push_back(
        {where, at, known ? Printable(i.name) : "<unknown>", i.opcode, allowed, after_break});
    const std::string context =
        after_break ? " after the point where modelport's VM stopped (pickle.load would go on)"
                    : "";
    if (!known && i.opcode == "STACK_GLOBAL") {
      Reason(Verdict::kUnsafe, where,
             "byte " + std::to_string(at) + ": STACK_GLOBAL" + context +
                 " imports a name that cannot be told without running the pickle");
    } else if (!known) {
      Reason(Verdict::kUnsafe, where,
             "byte " + std::to_string(at) + ": " + i.opcode + context +
                 ": extension registry codes import globals that cannot be checked");
    } else if (!allowed) {
      Reason(Verdict::kUnsafe, where,
             "byte " + std::to_string(at) + ": pickle imports '" + i.name + "' (" + i.opcode + ")" +
                 context + ", which is not allow-listed");
    }
  }
  std::set<uint64_t> seen_calls;
  if (report != nullptr)
    for (const auto& c : report->calls) seen_calls.insert(c.offset);
  for (const WalkCall& c : walk.calls) {
    if (seen_calls.count(c.offset) != 0) continue;
    out_.calls.push_back({where, base + c.offset, "<unknown>", c.opcode, false, after_break});
  }
}

Scanner::One Scanner::ScanOne(Bytes b, uint64_t off, const std::string& where, PickleMode mode,
                              Evidence evidence, std::string_view role) {
  One one;
  const Bytes rest = b.subspan(off);
  auto scanned = ScanPickle(rest, options_.limits, mode);
  if (!scanned.has_value()) return one;  // empty
  const ScanReport& r = *scanned;
  const bool broken = !r.stream_status.ok();
  Walk walk;
  if (broken) walk = WalkOpcodes(rest, r.end_offset);
  if (evidence != Evidence::kNone) {
    bool enough =
        (evidence == Evidence::kImportableOrStop && !broken) ||
        (evidence == Evidence::kImportableOrWhole && !broken && WholeStream(rest, r.end_offset));
    for (const auto& i : r.imports) enough |= IsIdentifierPath(i.callable);
    for (const auto& i : walk.imports) enough |= IsIdentifierPath(i.name);
    if (!enough) return one;
  }
  one.is_pickle = true;
  one.clean = !broken;
  ScannedPickle p;
  p.where = where;
  p.offset = off;
  p.size = broken ? (walk.stopped ? walk.end : r.end_offset) : r.end_offset;
  p.role = std::string(role);
  p.torchscript = mode == PickleMode::kTorchScript;
  p.stream_status =
      broken ? Status(r.stream_status.code(), Printable(Rebase(r.stream_status.message(), off)))
             : Status::Ok();
  out_.pickles.push_back(std::move(p));
  for (const PickleCall& i : r.imports)
    out_.imports.push_back(
        {where, off + i.offset, Printable(i.callable), i.opcode, i.allowed, false});
  for (const PickleCall& c : r.calls)
    out_.calls.push_back({where, off + c.offset,
                          c.callable.empty() ? "<unknown>" : Printable(c.callable), c.opcode,
                          c.allowed, false});
  for (const std::string& u : r.unsafe) Reason(Verdict::kUnsafe, where, Rebase(u, off));
  if (!broken) {
    one.next = off + r.end_offset;
    return one;
  }
  Reason(Verdict::kSuspicious, where,
         "pickle at byte " + std::to_string(off) +
             " is broken: " + Rebase(r.stream_status.message(), off));
  AddWalkFindings(walk, &r, off, where, mode, true);
  if (walk.stopped) one.next = off + walk.end;
  return one;
}

void Scanner::WalkRest(Bytes b, uint64_t off, const std::string& where, PickleMode mode) {
  while (off < b.size()) {
    const Walk walk = WalkOpcodes(b.subspan(off), 0);
    AddWalkFindings(walk, nullptr, off, where, mode, false);
    if (!walk.stopped || walk.end == 0) return;
    off += walk.end;
  }
}

std::vector<Span> Scanner::ScanStream(Bytes b, uint64_t start, const std::string& where,
                                      PickleMode mode, Evidence first, size_t max_count,
                                      std::span<const std::string_view> roles,
                                      bool trailing_is_reported) {
  std::vector<Span> spans;
  const size_t limit = max_count != 0 ? max_count : options_.max_pickles;
  uint64_t off = start;
  while (off < b.size()) {
    if (spans.size() >= limit) {
      if (max_count == 0) {
        Reason(Verdict::kSuspicious, where,
               "more than " + std::to_string(limit) + " pickles in a row; the " +
                   std::to_string(b.size() - off) + " bytes from byte " + std::to_string(off) +
                   " were only walked for imports");
        WalkRest(b, off, where, mode);
      }
      break;
    }
    const std::string_view role = spans.size() < roles.size() ? roles[spans.size()] : "";
    const One one =
        ScanOne(b, off, where, mode, spans.empty() ? first : Evidence::kImportableOrStop, role);
    if (!one.is_pickle) {
      if (!spans.empty() && trailing_is_reported)
        Reason(Verdict::kSuspicious, where,
               std::to_string(b.size() - off) + " bytes after the pickle ending at byte " +
                   std::to_string(off) + " are not a pickle");
      break;
    }
    spans.push_back({off, one.next == kNone ? b.size() : one.next, one.clean});
    if (one.next == kNone) break;
    off = one.next;
  }
  return spans;
}

// ---------------------------------------------------------------------------------------------
// NumPy: an object array is a pickle after the header; np.load(allow_pickle=True) runs it.

void Scanner::ScanNpy(Bytes b, const std::string& where) {
  if (!StartsWith(b, "\x93NUMPY")) return;  // np.load of an .npz hands such members out raw
  if (b.size() < 10) {
    Reason(Verdict::kSuspicious, where, ".npy header is truncated");
    return;
  }
  const int major = b[6];
  const uint64_t len_bytes = major == 1 ? 2 : 4;
  if (b.size() < 8 + len_bytes) {
    Reason(Verdict::kSuspicious, where, ".npy header is truncated");
    return;
  }
  const uint64_t data_offset = 8 + len_bytes + Le(b, 8, static_cast<int>(len_bytes));
  if (data_offset > b.size()) {
    Reason(Verdict::kSuspicious, where, ".npy header runs past the end of the data");
    return;
  }
  auto header = numpy::ParseHeader(b.first(data_offset), numpy::kMaxHeaderBytes, 64);
  if (header.has_value()) return;  // a plain array: no pickle
  if (header.error().code() != StatusCode::kUnsafe) {
    // numpy reads dtypes modelport does not (structured ones may hold objects): whatever the
    // header means, a pickle after it is found.
    Reason(Verdict::kSuspicious, where,
           ".npy header not understood (" + header.error().message() +
               "); the data was checked for a pickle");
    ScanStream(b, data_offset, where, PickleMode::kCheckpoint, Evidence::kImportableOrStop, 0,
               std::array<std::string_view, 1>{"object array"});
    return;
  }
  if (data_offset == b.size()) {
    Reason(Verdict::kSuspicious, where, ".npy object array has no data");
    return;
  }
  ScanStream(b, data_offset, where, PickleMode::kCheckpoint, Evidence::kNone, 0,
             std::array<std::string_view, 1>{"object array"});
}

// ---------------------------------------------------------------------------------------------
// Legacy checkpoints (torch/serialization.py _legacy_save).

void Scanner::ScanLegacy(Bytes b, uint64_t magic_end) {
  ScannedPickle magic;
  magic.size = magic_end;
  magic.role = "magic number";
  out_.pickles.push_back(magic);
  const auto spans =
      ScanStream(b, magic_end, "", PickleMode::kCheckpoint, Evidence::kNone, 4, kLegacyRoles);
  if (spans.size() < 4) {
    if (spans.empty() || spans.back().clean)
      Reason(
          Verdict::kSuspicious, "",
          "legacy checkpoint ends after " + std::to_string(spans.size() + 1) + " of its 5 pickles");
    return;
  }
  for (const Span& s : spans)
    if (!s.clean) return;  // already reported
  // The storages follow: for each key, an int64 element count and the raw bytes. Knowing
  // their sizes needs the object and key pickles, unpickled (they are safe or we stop here).
  auto object =
      Unpickle(b.subspan(spans[2].offset, spans[2].end - spans[2].offset), options_.limits);
  auto keys = Unpickle(b.subspan(spans[3].offset, spans[3].end - spans[3].offset), options_.limits);
  if (!object.has_value() || !keys.has_value()) return;
  std::map<std::string, std::shared_ptr<const StorageRef>> storages;
  for (const auto& node : object->nodes)
    if (node->kind == ValueKind::kStorage) storages[node->storage->key] = node->storage;
  if (keys->root->kind != ValueKind::kList) {
    Reason(Verdict::kSuspicious, "", "legacy checkpoint's storage key pickle is not a list");
    return;
  }
  uint64_t pos = spans[3].end;
  for (const Value* k : keys->root->items) {
    auto it = k->kind == ValueKind::kStr ? storages.find(k->text) : storages.end();
    if (it == storages.end() || !it->second->dtype.has_value()) return;  // cannot size it
    if (b.size() - pos < 8) {
      Reason(Verdict::kSuspicious, "",
             "legacy checkpoint is truncated in storage '" + Printable(k->text) + "'");
      return;
    }
    const uint64_t numel = Le(b, pos, 8);
    const uint64_t elem = ElementSize(*it->second->dtype);
    pos += 8;
    if (numel > (b.size() - pos) / elem) {
      Reason(Verdict::kSuspicious, "",
             "legacy checkpoint is truncated in storage '" + Printable(k->text) + "'");
      return;
    }
    pos += numel * elem;
  }
  if (pos != b.size())
    Reason(Verdict::kSuspicious, "",
           std::to_string(b.size() - pos) + " bytes after the last storage (byte " +
               std::to_string(pos) + ") are not part of the checkpoint");
}

// ---------------------------------------------------------------------------------------------
// Zip archives.

// Raw inflate of `in`, up to `cap` bytes out; stops quietly at the cap (what is scanned is a
// prefix) and reports invalid data in `error`.
std::vector<uint8_t> InflateLoose(Bytes in, uint64_t cap, std::string* error) {
  std::vector<uint8_t> out;
  z_stream zs{};
  if (inflateInit2(&zs, -MAX_WBITS) != Z_OK) {
    *error = "zlib inflateInit2 failed";
    return out;
  }
  zs.next_in = const_cast<Bytef*>(in.data());
  uint64_t in_left = in.size();
  uint8_t chunk[1 << 16];
  int ret = Z_OK;
  while (ret != Z_STREAM_END && out.size() < cap) {
    if (zs.avail_in == 0) {
      if (in_left == 0) break;
      const uInt n = static_cast<uInt>(std::min<uint64_t>(in_left, 1u << 30));
      zs.avail_in = n;
      in_left -= n;
    }
    zs.next_out = chunk;
    zs.avail_out = static_cast<uInt>(std::min<uint64_t>(sizeof chunk, cap - out.size()));
    ret = inflate(&zs, Z_NO_FLUSH);
    if (ret != Z_OK && ret != Z_STREAM_END && ret != Z_BUF_ERROR) {
      *error = std::string("deflate data is invalid: ") + (zs.msg ? zs.msg : "zlib error");
      break;
    }
    const size_t made = static_cast<size_t>(zs.next_out - chunk);
    out.insert(out.end(), chunk, chunk + made);
    if (ret == Z_BUF_ERROR && made == 0) break;
  }
  inflateEnd(&zs);
  return out;
}

// A damaged archive, read the way a forgiving reader (torch's miniz, Python's zipfile) would
// still read it: end record found by searching back from the end, central directory records
// in order, each pointing at a local header; when there is no usable central directory, the
// local headers from the start of the file. Every disagreement goes to `problems`.
std::vector<LooseEntry> LooseZip(Bytes b, uint64_t max_entries, std::vector<std::string>& problems,
                                 bool central_only = false) {
  std::vector<LooseEntry> entries;
  auto read_local = [&](LooseEntry& e) {
    const uint64_t lo = e.local_offset;
    if (lo > b.size() || b.size() - lo < 30 || Le(b, lo, 4) != 0x04034b50) {
      problems.push_back("entry " + zip::QuoteName(e.name) + ": no local header at byte " +
                         std::to_string(lo));
      return;
    }
    e.has_local = true;
    e.local_flags = static_cast<uint16_t>(Le(b, lo + 6, 2));
    e.local_method = static_cast<uint16_t>(Le(b, lo + 8, 2));
    e.local_csize = Le(b, lo + 18, 4);
    const uint64_t nlen = Le(b, lo + 26, 2), elen = Le(b, lo + 28, 2);
    if (b.size() - lo - 30 < nlen + elen) {
      problems.push_back("entry " + zip::QuoteName(e.name) + ": local header runs past the end");
      e.has_local = false;
      return;
    }
    e.local_name.assign(reinterpret_cast<const char*>(b.data() + lo + 30), nlen);
    e.data_offset = lo + 30 + nlen + elen;
  };

  // End of central directory: the last signature within the comment window.
  uint64_t eocd = kNone;
  if (b.size() >= 22) {
    const uint64_t lowest = b.size() > 22 + 65535 ? b.size() - 22 - 65535 : 0;
    for (uint64_t p = b.size() - 22 + 1; p-- > lowest;) {
      if (Le(b, p, 4) == 0x06054b50) {
        eocd = p;
        break;
      }
    }
  }
  if (eocd != kNone) {
    uint64_t count = Le(b, eocd + 10, 2), cd_size = Le(b, eocd + 12, 4),
             cd_offset = Le(b, eocd + 16, 4);
    uint64_t cd_end = eocd;
    if ((count == 0xFFFF || cd_size == 0xFFFFFFFF || cd_offset == 0xFFFFFFFF) && eocd >= 20 &&
        Le(b, eocd - 20, 4) == 0x07064b50) {
      const uint64_t z = Le(b, eocd - 20 + 8, 8);
      if (z < b.size() && b.size() - z >= 56 && Le(b, z, 4) == 0x06064b50) {
        count = Le(b, z + 32, 8);
        cd_size = Le(b, z + 40, 8);
        cd_offset = Le(b, z + 48, 8);
        cd_end = z;
      }
    }
    // An archive appended to other data keeps offsets from its own start; zipfile finds it
    // where the directory really ends, as here.
    uint64_t concat = 0;
    if (cd_size <= cd_end && cd_end - cd_size > cd_offset && cd_end - cd_size + 4 <= b.size() &&
        Le(b, cd_end - cd_size, 4) == 0x02014b50)
      concat = cd_end - cd_size - cd_offset;
    uint64_t p = cd_offset + concat;
    for (uint64_t i = 0; i < count && i < max_entries; ++i) {
      if (p > b.size() || b.size() - p < 46 || Le(b, p, 4) != 0x02014b50) {
        problems.push_back("central directory record " + std::to_string(i) + " of " +
                           std::to_string(count) + " is missing or damaged");
        break;
      }
      LooseEntry e;
      e.has_central = true;
      e.flags = static_cast<uint16_t>(Le(b, p + 8, 2));
      e.method = static_cast<uint16_t>(Le(b, p + 10, 2));
      e.csize = Le(b, p + 20, 4);
      e.usize = Le(b, p + 24, 4);
      const uint64_t nlen = Le(b, p + 28, 2), elen = Le(b, p + 30, 2), clen = Le(b, p + 32, 2);
      e.local_offset = Le(b, p + 42, 4);
      if (b.size() - p - 46 < nlen + elen + clen) {
        problems.push_back("central directory record " + std::to_string(i) + " runs past the end");
        break;
      }
      e.name.assign(reinterpret_cast<const char*>(b.data() + p + 46), nlen);
      // ZIP64 extra field: the sentinel fields, in the order usize, csize, offset.
      uint64_t x = p + 46 + nlen;
      const uint64_t x_end = x + elen;
      while (x + 4 <= x_end) {
        const uint64_t id = Le(b, x, 2), len = Le(b, x + 2, 2);
        if (x + 4 + len > x_end) break;
        if (id == 1) {
          uint64_t f = x + 4;
          auto take = [&](uint64_t& v) {
            if (v == 0xFFFFFFFF && f + 8 <= x + 4 + len) {
              v = Le(b, f, 8);
              f += 8;
            }
          };
          take(e.usize);
          take(e.csize);
          take(e.local_offset);
        }
        x += 4 + len;
      }
      p += 46 + nlen + elen + clen;
      if (e.local_offset <= kNone - concat) e.local_offset += concat;
      read_local(e);
      entries.push_back(std::move(e));
    }
    if (count > max_entries)
      problems.push_back("archive claims " + std::to_string(count) + " entries; only " +
                         std::to_string(max_entries) + " were read");
  } else {
    problems.push_back("no end of central directory record");
  }
  if (!entries.empty() || central_only) return entries;
  // No usable central directory: the local headers in a row from the start.
  uint64_t p = 0;
  while (entries.size() < max_entries && p < b.size() && b.size() - p >= 30 &&
         Le(b, p, 4) == 0x04034b50) {
    LooseEntry e;
    e.local_offset = p;
    read_local(e);
    if (!e.has_local) break;
    e.name = e.local_name;
    e.flags = e.local_flags;
    e.method = e.local_method;
    e.csize = e.local_csize;
    e.usize = Le(b, p + 22, 4);
    // Sizes in a data descriptor (flag bit 3) are not known here: a stored entry is taken to
    // run to the end of the file (a pickle ends at its STOP anyway), and the walk ends.
    if ((e.flags & 8) != 0 && e.csize == 0) e.size_known = false;
    entries.push_back(e);
    if (!e.size_known || e.csize > b.size() - e.data_offset) break;
    p = e.data_offset + e.csize;
    if ((e.flags & 8) != 0) {
      if (b.size() - p >= 4 && Le(b, p, 4) == 0x08074b50) p += 4;
      p += 12;
    }
  }
  if (!entries.empty())
    problems.push_back(std::to_string(entries.size()) +
                       " entries were found by walking local headers from the start");
  return entries;
}

// Whether the .npy whose first bytes are `prefix` may hold a pickle (an object array, or a
// header modelport cannot tell about): only then is the whole member read.
bool NpyMayHoldPickle(Bytes prefix) {
  if (!StartsWith(prefix, "\x93NUMPY") || prefix.size() < 12)
    return StartsWith(prefix, "\x93NUMPY");
  const uint64_t len_bytes = prefix[6] == 1 ? 2 : 4;
  const uint64_t data_offset = 8 + len_bytes + Le(prefix, 8, static_cast<int>(len_bytes));
  if (data_offset > prefix.size()) return true;
  return !numpy::ParseHeader(prefix.first(data_offset), numpy::kMaxHeaderBytes, 64).has_value();
}

constexpr uint64_t kNpyPrefix = numpy::kMaxHeaderBytes + 16;

bool IsPickleEntry(std::string_view name) { return name.ends_with("pkl"); }
bool IsNpyEntry(std::string_view name) { return name.ends_with(".npy"); }

void Scanner::ScanZipEntry(const std::string& name, Bytes data, PickleMode mode) {
  if (IsNpyEntry(name)) {
    ScanNpy(data, name);
    return;
  }
  if (data.empty()) {
    Reason(Verdict::kSuspicious, name, "pickle entry is empty");
    return;
  }
  ScanStream(data, 0, name, mode, Evidence::kNone);
}

PickleMode Scanner::ArchiveKind(const std::vector<std::string>& names, bool set_format) {
  // Zip-slip: a name that escapes the folder it is extracted into.
  std::set<std::string> checked;
  for (const std::string& n : names) {
    if (!checked.insert(n).second) continue;
    const Status s = zip::CheckName(n, false);
    if (!s.ok())
      Reason(Verdict::kUnsafe, n, "entry name is unsafe to extract (zip-slip): " + s.message());
  }
  bool torchscript = false, code = false, data_pkl = false, all_npy = !names.empty();
  size_t python_sources = 0;
  for (const std::string& n : names) {
    const std::string_view base = BaseName(n);
    torchscript |= base == "constants.pkl";
    data_pkl |= base == "data.pkl";
    code |= n.starts_with("code/") || n.find("/code/") != std::string::npos;
    all_npy &= IsNpyEntry(n);
    if (n.ends_with(".py")) ++python_sources;
  }
  if (set_format)
    out_.format = torchscript ? "torchscript" : data_pkl ? "torch" : all_npy ? "npz" : "zip";
  // torch.load hands archives with constants.pkl to torch.jit.load.
  if (torchscript || code)
    Reason(Verdict::kSuspicious, "",
           "TorchScript archive: torch.jit.load compiles and runs the code in its code/ folder "
           "(modelport never runs it)");
  else if (python_sources > 0)
    Reason(Verdict::kSuspicious, "",
           "archive holds " + std::to_string(python_sources) +
               " Python source file(s); a torch.package importer would run them");
  return torchscript ? PickleMode::kTorchScript : PickleMode::kCheckpoint;
}

void Scanner::ScanLoose(Bytes b, const std::vector<LooseEntry>& loose, bool set_format) {
  std::vector<std::string> names;  // every name any header gives
  std::map<std::string, int> seen;
  for (const LooseEntry& e : loose) {
    names.push_back(e.name);
    if (e.has_local && e.local_name != e.name) {
      names.push_back(e.local_name);
      Reason(Verdict::kSuspicious, e.name,
             "central directory name " + zip::QuoteName(e.name) +
                 " differs from the local header name " + zip::QuoteName(e.local_name) +
                 " (readers disagree on what the entry is)");
    }
    if (e.has_local && e.has_central && ((e.local_flags ^ e.flags) & 0x0001) != 0)
      Reason(Verdict::kSuspicious, e.name,
             "encryption flag differs between the central directory and the local header");
    if (((e.flags | e.local_flags) & 0x0001) != 0)
      Reason(Verdict::kSuspicious, e.name,
             "entry is flagged as encrypted; its bytes were scanned as they are");
    if (e.has_local && e.has_central && e.local_method != e.method)
      Reason(Verdict::kSuspicious, e.name,
             "compression method differs between the central directory (" +
                 std::to_string(e.method) + ") and the local header (" +
                 std::to_string(e.local_method) + ")");
    if (++seen[e.name] == 2)
      Reason(Verdict::kSuspicious, e.name,
             "name appears more than once (readers disagree on which is loaded); every copy "
             "was scanned");
  }
  const PickleMode mode = ArchiveKind(names, set_format);
  const uint64_t cap = std::min(options_.max_entry_bytes, options_.zip.max_inflated_bytes);
  for (const LooseEntry& e : loose) {
    const bool central_wanted = IsPickleEntry(e.name) || IsNpyEntry(e.name);
    const bool wanted = central_wanted ||
                        (e.has_local && (IsPickleEntry(e.local_name) || IsNpyEntry(e.local_name)));
    if (!wanted || !e.has_local) continue;
    const std::string& name = central_wanted ? e.name : e.local_name;
    // miniz and zipfile take the method from the central directory.
    const uint16_t method = e.has_central ? e.method : e.local_method;
    const uint64_t avail = b.size() - std::min<uint64_t>(e.data_offset, b.size());
    uint64_t csize = e.size_known ? e.csize : avail;
    if (csize > avail) {
      Reason(Verdict::kSuspicious, name, "entry data runs past the end of the file");
      csize = avail;
    }
    const Bytes raw = b.subspan(std::min<uint64_t>(e.data_offset, b.size()), csize);
    if (method == zip::kStored) {
      ScanZipEntry(name, raw.first(std::min<uint64_t>(raw.size(), cap)), mode);
    } else if (method == zip::kDeflated) {
      std::string error;
      if (IsNpyEntry(name) && !NpyMayHoldPickle(InflateLoose(raw, kNpyPrefix, &error))) continue;
      error.clear();
      const std::vector<uint8_t> data = InflateLoose(raw, cap, &error);
      if (!error.empty()) Reason(Verdict::kSuspicious, name, error);
      if (!data.empty()) ScanZipEntry(name, data, mode);
    } else {
      Reason(
          Verdict::kSuspicious, name,
          "compression method " + std::to_string(method) + " is not one torch reads; not scanned");
    }
  }
}

void Scanner::ScanZip(const std::shared_ptr<InputFile>& file, Bytes b) {
  zip::ReaderOptions zopts = options_.zip;
  zopts.allow_backslash = false;
  auto reader = zip::Reader::Open(file, zopts);
  if (!reader.has_value()) {
    std::string why = reader.error().message();
    if (why.starts_with(file->path() + ": ")) why = why.substr(file->path().size() + 2);
    Reason(Verdict::kSuspicious, "",
           "zip archive is damaged or tampered with (" + why + "); it was read again leniently");
    std::vector<std::string> problems;
    const std::vector<LooseEntry> loose = LooseZip(b, options_.zip.max_entries, problems);
    for (const std::string& p : problems) Reason(Verdict::kSuspicious, "", p);
    ScanLoose(b, loose, true);
    return;
  }
  const zip::Reader& r = **reader;
  std::vector<std::string> names;
  for (const zip::Entry& e : r.entries()) names.push_back(e.name);
  const PickleMode mode = ArchiveKind(names, true);
  for (size_t i = 0; i < r.entries().size(); ++i) {
    const zip::Entry& e = r.entries()[i];
    if (!IsPickleEntry(e.name) && !IsNpyEntry(e.name)) continue;
    if (e.size > options_.max_entry_bytes) {
      Reason(Verdict::kSuspicious, e.name,
             "entry of " + std::to_string(e.size) + " bytes is over the scan limit; not scanned");
      continue;
    }
    if (IsNpyEntry(e.name)) {
      auto prefix = r.ReadPrefix(i, std::min(e.size, kNpyPrefix));
      if (prefix.has_value() && !NpyMayHoldPickle((*prefix)->span())) continue;
    }
    auto data = r.Read(i);
    if (!data.has_value()) {
      std::string why = data.error().message();
      if (why.starts_with(file->path() + ": ")) why = why.substr(file->path().size() + 2);
      Reason(Verdict::kSuspicious, e.name, why);
      // What a reader that skips the check would load.
      data = r.ReadPrefix(i, e.size);
      if (!data.has_value()) continue;
    }
    ScanZipEntry(e.name, (*data)->span(), mode);
  }
}

bool Scanner::ScanAppendedZip(Bytes b) {
  std::vector<std::string> problems;
  const std::vector<LooseEntry> loose = LooseZip(b, options_.zip.max_entries, problems, true);
  if (loose.empty() || !problems.empty()) return false;
  Reason(Verdict::kSuspicious, "",
         "a zip archive is appended (its first entry starts at byte " +
             std::to_string(loose.front().local_offset) +
             "); readers that look for the archive at the end of the file read it");
  ScanLoose(b, loose, false);
  return true;
}

// ---------------------------------------------------------------------------------------------
// Tar checkpoints (torch < 0.4; still read by torch.load's legacy_load): members 'storages'
// (a count pickle, then per storage an args pickle (key, location, storage type) and an int64
// element count with the raw bytes, then a storage-views pickle), 'tensors' (a count pickle,
// then per tensor an args pickle and int32 ndim, 4 skipped bytes, ndim int64 sizes and strides,
// an int64 offset) and 'pickle' (the object).

bool TarChecksumOk(Bytes h) {
  uint64_t stored = 0;
  bool digits = false;
  for (int i = 148; i < 156; ++i) {
    const uint8_t c = h[i];
    if (c >= '0' && c <= '7') {
      stored = stored * 8 + (c - '0');
      digits = true;
    } else if (c != ' ' && c != 0) {
      return false;
    } else if (digits) {
      break;
    }
  }
  if (!digits) return false;
  uint64_t sum_unsigned = 0;
  int64_t sum_signed = 0;
  for (int i = 0; i < 512; ++i) {
    const uint8_t c = (i >= 148 && i < 156) ? ' ' : h[i];
    sum_unsigned += c;
    sum_signed += static_cast<int8_t>(c);
  }
  return stored == sum_unsigned || static_cast<int64_t>(stored) == sum_signed;
}

// A tar size field: octal digits (leading spaces, ended by a space or NUL), or base-256 when
// the top bit is set. kNone when it is neither.
uint64_t TarNumber(Bytes h, int at, int len) {
  uint64_t v = 0;
  if ((h[at] & 0x80) != 0) {
    for (int i = at + 1; i < at + len; ++i) {
      if (v >> 55 != 0) return kNone;
      v = (v << 8) | h[i];
    }
    return v;
  }
  int i = at;
  while (i < at + len && h[i] == ' ') ++i;
  for (; i < at + len && h[i] >= '0' && h[i] <= '7'; ++i) v = v * 8 + (h[i] - '0');
  if (i < at + len && h[i] != ' ' && h[i] != 0) return kNone;
  return v;
}

std::optional<int64_t> IntOf(const PickleResult& r) {
  if (r.root != nullptr && r.root->kind == ValueKind::kInt) return r.root->i;
  return std::nullopt;
}

// The element size of a storage class name ("torch.FloatStorage"), through the VM's storage
// table: a one-storage persistent id is unpickled and its dtype read back.
std::optional<uint64_t> StorageElementSize(const std::string& cls) {
  const size_t dot = cls.rfind('.');
  if (dot == std::string::npos) return std::nullopt;
  const std::string p = "\x80\x02(X\x07\x00\x00\x00storagec"s + cls.substr(0, dot) + "\n" +
                        cls.substr(dot + 1) + "\nX\x01\x00\x00\x00kX\x03\x00\x00\x00cpuK\x01tQ."s;
  auto r = Unpickle(Bytes(reinterpret_cast<const uint8_t*>(p.data()), p.size()));
  if (!r.has_value() || r->root->kind != ValueKind::kStorage || !r->root->storage->dtype)
    return std::nullopt;
  return ElementSize(*r->root->storage->dtype);
}

bool Scanner::ScanTar(Bytes b) {
  if (b.size() < 512 || !TarChecksumOk(b.first(512))) return false;
  out_.format = "torch-tar";
  uint64_t p = 0;
  std::string long_name;
  bool torch_members = false;
  while (p + 512 <= b.size()) {
    const Bytes h = b.subspan(p, 512);
    if (std::all_of(h.begin(), h.end(), [](uint8_t c) { return c == 0; })) break;
    if (!TarChecksumOk(h)) {
      Reason(
          Verdict::kSuspicious, "",
          "tar header at byte " + std::to_string(p) + " has a bad checksum; the rest was not read");
      break;
    }
    std::string name(reinterpret_cast<const char*>(h.data()),
                     strnlen(reinterpret_cast<const char*>(h.data()), 100));
    if (std::memcmp(h.data() + 257, "ustar", 5) == 0 && h[345] != 0) {
      const std::string prefix(reinterpret_cast<const char*>(h.data() + 345),
                               strnlen(reinterpret_cast<const char*>(h.data() + 345), 155));
      name = prefix + "/" + name;
    }
    const uint8_t type = h[156];
    const uint64_t size = TarNumber(h, 124, 12);
    const uint64_t data = p + 512;
    if (size == kNone || size > b.size() - data) {
      Reason(Verdict::kSuspicious, "",
             "tar member " + zip::QuoteName(name) + " runs past the end of the file");
      break;
    }
    const Bytes body = b.subspan(data, size);
    if (!long_name.empty()) {
      name = long_name;
      long_name.clear();
    }
    if (type == 'L') {  // GNU long name for the next member
      long_name.assign(reinterpret_cast<const char*>(body.data()),
                       strnlen(reinterpret_cast<const char*>(body.data()), body.size()));
    } else if (type == 'x') {  // PAX: "len key=value\n" records; path= renames the next member
      std::string_view rec(reinterpret_cast<const char*>(body.data()), body.size());
      const size_t at = rec.find(" path=");
      if (at != std::string_view::npos) {
        const size_t end = rec.find('\n', at);
        long_name =
            std::string(rec.substr(at + 6, end == std::string_view::npos ? end : end - at - 6));
      }
    } else if (type == '1' || type == '2') {
      if (name == "storages" || name == "tensors" || name == "pickle")
        Reason(Verdict::kSuspicious, name,
               "tar member torch reads is a link; torch would read whatever it points at");
    } else if (type == '0' || type == 0 || type == '7') {
      const Status zip_name = zip::CheckName(name, false);
      if (!zip_name.ok())
        Reason(Verdict::kUnsafe, name,
               "tar member name escapes the folder it would be extracted "
               "into: " +
                   zip_name.message());
      torch_members |= name == "pickle" || name == "storages" || name == "tensors";
      if (name == "pickle" || name == "sys_info") {
        ScanStream(body, 0, name, PickleMode::kCheckpoint, Evidence::kNone, 1,
                   std::array<std::string_view, 1>{name == "pickle" ? "object" : "sys_info"});
      } else if (name == "storages" || name == "tensors") {
        const bool storages = name == "storages";
        uint64_t off = 0;
        auto one = [&](std::string_view role, std::optional<PickleResult>* value) {
          const auto spans = ScanStream(body, off, name, PickleMode::kCheckpoint, Evidence::kNone,
                                        1, std::array<std::string_view, 1>{role}, false);
          if (spans.empty() || !spans[0].clean) return false;
          off = spans[0].end;
          if (value != nullptr) {
            auto r = Unpickle(body.subspan(spans[0].offset, spans[0].end - spans[0].offset),
                              options_.limits);
            if (!r.has_value()) return false;
            *value = std::move(*r);
          }
          return true;
        };
        std::optional<PickleResult> count;
        bool ok = one("count", &count) && IntOf(*count).has_value() && *IntOf(*count) >= 0;
        const int64_t n = ok ? *IntOf(*count) : 0;
        for (int64_t i = 0; ok && i < n; ++i) {
          std::optional<PickleResult> args;
          ok = one(storages ? "storage" : "tensor", &args);
          if (!ok) break;
          const Value* a = args->root;
          if (a->kind != ValueKind::kTuple || a->items.size() != 3) {
            ok = false;
            break;
          }
          if (storages) {
            const Value* cls = a->items[2];
            const auto elem =
                cls->kind == ValueKind::kGlobal ? StorageElementSize(cls->text) : std::nullopt;
            if (!elem || body.size() - off < 8) {
              ok = false;
              break;
            }
            const uint64_t numel = Le(body, off, 8);
            off += 8;
            if (numel > (body.size() - off) / *elem) {
              ok = false;
              break;
            }
            off += numel * *elem;
          } else {
            if (body.size() - off < 8) {
              ok = false;
              break;
            }
            const uint64_t ndim = Le(body, off, 4);
            off += 8;
            if (ndim > 64 || body.size() - off < 16 * ndim + 8) {
              ok = false;
              break;
            }
            off += 16 * ndim + 8;
          }
        }
        if (ok && storages) ok = one("storage views", nullptr);
        if (!ok) {
          Reason(Verdict::kSuspicious, name,
                 "tar member could not be followed to its end; the rest (from byte " +
                     std::to_string(off) + ") was only walked for imports");
          WalkRest(body, off, name, PickleMode::kCheckpoint);
        } else if (off != body.size()) {
          Reason(Verdict::kSuspicious, name,
                 std::to_string(body.size() - off) + " bytes after byte " + std::to_string(off) +
                     " are not part of the checkpoint");
        }
      }
    }
    p = data + (size + 511) / 512 * 512;
  }
  if (!torch_members) out_.format = "tar";
  return true;
}

// A format modelport knows by content that holds no pickle (safetensors, GGUF, ...).
std::optional<std::string_view> NonPickleFormat(Bytes b) {
  for (const FormatDescriptor& f : Formats()) {
    if (f.name == "torch" || f.name == "numpy") continue;  // scanned here
    const Bytes prefix = b.first(std::min<size_t>(b.size(), f.detect_bytes));
    if (f.detect(prefix, b.size())) return f.name;
  }
  return std::nullopt;
}

Verdict Overall(const FileScan& s) {
  Verdict v = s.pickles.empty() ? Verdict::kNoPickle : Verdict::kSafe;
  for (const ScanReason& r : s.reasons) v = std::max(v, r.severity);
  return v;
}

}  // namespace

std::string_view VerdictName(Verdict verdict) {
  switch (verdict) {
    case Verdict::kNoPickle:
      return "no pickle";
    case Verdict::kSafe:
      return "safe";
    case Verdict::kSuspicious:
      return "suspicious";
    case Verdict::kUnsafe:
      return "unsafe";
  }
  return "unsafe";
}

Result<FileScan> ScanFile(const std::string& path, const ScanOptions& options) {
  MP_ASSIGN_OR_RETURN(std::shared_ptr<InputFile> file, InputFile::Open(path, IoMode::kMmap));
  FileScan out;
  out.path = path;
  if (file->size() == 0) {
    out.format = "empty";
    return out;
  }
  MP_ASSIGN_OR_RETURN(std::shared_ptr<Buffer> whole, file->Read(0, file->size()));
  const Bytes b = whole->span();
  Scanner scanner(out, options);
  const bool zip_start = StartsWith(b, "PK\x03\x04") || StartsWith(b, "PK\x05\x06");
  if (zip_start) {
    scanner.ScanZip(file, b);
  } else if (StartsWith(b, "\x93NUMPY")) {
    out.format = "npy";
    scanner.ScanNpy(b, "");
  } else if (const uint64_t magic = LegacyMagicLength(b); magic != 0) {
    out.format = "torch-legacy";
    scanner.ScanLegacy(b, magic);
  } else if (scanner.ScanTar(b)) {
    // pickle.load, np.load: byte 0 of a tar is read as a pickle too.
    if (!scanner.ScanStream(b, 0, "", PickleMode::kCheckpoint, Evidence::kImportable).empty())
      scanner.Reason(Verdict::kSuspicious, "",
                     "tar file is also a pickle that pickle.load would run");
  } else if (auto other = NonPickleFormat(b)) {
    // Before the PROTO test: a safetensors header of 640 bytes starts "\x80\x02". But
    // torch.load and pickle.load read any file that is not a zip as a pickle from byte 0, so a
    // file that is also a pickle importing something is reported.
    out.format = std::string(*other);
    if (!scanner.ScanStream(b, 0, "", PickleMode::kCheckpoint, Evidence::kImportable).empty())
      scanner.Reason(
          Verdict::kSuspicious, "",
          "file is " + out.format + " but also a pickle that torch.load or pickle.load would run");
  } else if (b.size() >= 2 && b[0] == 0x80 && b[1] <= 5) {
    out.format = "pickle";
    scanner.ScanStream(b, 0, "", PickleMode::kCheckpoint, Evidence::kNone);
  } else {
    const bool pickle =
        !scanner.ScanStream(b, 0, "", PickleMode::kCheckpoint, Evidence::kImportableOrWhole)
             .empty();
    out.format = pickle ? "pickle" : "unknown";
  }
  // A zip archive after other content is what zipfile-based loaders read.
  if (!zip_start) scanner.ScanAppendedZip(b);
  out.verdict = Overall(out);
  return out;
}

Json ScanToJson(const FileScan& scan) {
  Json doc = Json::object();
  doc["path"] = scan.path;
  doc["format"] = scan.format;
  doc["verdict"] = std::string(VerdictName(scan.verdict));
  Json reasons = Json::array();
  for (const ScanReason& r : scan.reasons) {
    Json j = Json::object();
    j["severity"] = std::string(VerdictName(r.severity));
    if (!r.where.empty()) j["where"] = Printable(r.where);
    j["reason"] = r.text;
    reasons.push_back(std::move(j));
  }
  doc["reasons"] = std::move(reasons);
  auto globals = [](const std::vector<ScannedGlobal>& list) {
    Json a = Json::array();
    for (const ScannedGlobal& g : list) {
      Json j = Json::object();
      j["name"] = g.name;
      j["opcode"] = g.opcode;
      if (!g.where.empty()) j["where"] = Printable(g.where);
      j["offset"] = g.offset;
      j["allowed"] = g.allowed;
      if (g.after_break) j["after_break"] = true;
      a.push_back(std::move(j));
    }
    return a;
  };
  doc["imports"] = globals(scan.imports);
  doc["calls"] = globals(scan.calls);
  Json pickles = Json::array();
  for (const ScannedPickle& p : scan.pickles) {
    Json j = Json::object();
    if (!p.where.empty()) j["where"] = Printable(p.where);
    j["offset"] = p.offset;
    j["bytes"] = p.size;
    if (!p.role.empty()) j["role"] = p.role;
    if (p.torchscript) j["torchscript"] = true;
    j["status"] = p.stream_status.ok() ? std::string("ok") : p.stream_status.message();
    pickles.push_back(std::move(j));
  }
  doc["pickles"] = std::move(pickles);
  return doc;
}

}  // namespace mp::torch
