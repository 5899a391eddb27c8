"""Oracle: a checkpoint written by modelport's torch writer, checked by Debian's torch 1.13 and by
Python's own zipfile and pickle modules.

  torch_load_check.py check PT MANIFEST
      torch.load(PT, weights_only=True) gives an OrderedDict with exactly the manifest's entries,
      in order: names, dtypes, shapes, contiguous strides and raw bytes bit for bit (NaN
      payloads included); entries with "tied_to" share their target's storage, every other
      non-empty tensor has a storage of its own. With "torch_save_same_pickle": torch.save of
      the same OrderedDict (tensors rebuilt from the manifest's bytes, ties as views) writes a
      data.pkl byte-identical to PT's.
  torch_load_check.py pickle PT MANIFEST
      For dtypes torch 1.13 lacks (float8, uint16..64): no torch needed. The pickle is run by
      Python's pickle.Unpickler with stand-ins for the allow-listed torch globals, checking the
      call form torch 2.x writes (_rebuild_tensor_v3 with an UntypedStorage persistent id and a
      torch dtype global), and the storage bytes are read with zipfile.
  torch_load_check.py form PT NAME GOLDEN GOLDEN_NAME
      The opcodes that pickle entry NAME of PT (from its key to the REDUCE that builds it) are
      those torch 2.x wrote for GOLDEN_NAME in GOLDEN (a file torch 2.x saved), memo indices,
      storage keys and numbers aside; GLOBAL arguments must match exactly.
  torch_load_check.py same PT REFERENCE
      torch.load(weights_only=True) of PT and of REFERENCE (a file torch itself saved) hold the
      same tensors in the same order, bit for bit, with the same groups of tensors sharing a
      storage (PT's root may be an OrderedDict where REFERENCE's is a dict).
  torch_load_check.py sharded INDEX MANIFEST
      A Hugging Face sharded checkpoint (INDEX = *.bin.index.json): every shard loads with
      torch.load(weights_only=True) as an OrderedDict holding exactly the keys the weight_map
      gives it, 64-byte aligned; together they hold the manifest's entries (dtypes, shapes,
      bytes, ties within a shard); metadata.total_size is the bytes of the stored tensors.
  check and pickle also check the zip layout: one top folder, torch's record names, every record's
  data 64-byte aligned, stored (uncompressed), and modelport_metadata.json equal to the
  manifest's "metadata" (absent when the manifest has none).

MANIFEST: {"entries": [{"name", "dtype" ("torch.float32"), "shape", "hex" | "file" (raw bytes
beside the manifest), "tied_to"?}], "metadata"?: {...}, "torch_save_same_pickle"?: bool}
"""
import collections
import io
import json
import os
import pickle
import struct
import sys
import zipfile


def fail(msg):
    print("MISMATCH: " + msg)
    sys.exit(1)


def expected_bytes(entry, manifest_dir):
    if "hex" in entry:
        return bytes.fromhex(entry["hex"])
    with open(os.path.join(manifest_dir, entry["file"]), "rb") as f:
        return f.read()


def contiguous_strides(shape):
    strides, s = [], 1
    for d in reversed(shape):
        strides.append(s)
        s *= max(d, 1)
    return list(reversed(strides))


def check_zip(path, manifest, records=True):
    """Layout rules: names, order (when `records`), alignment, stored entries, metadata record."""
    with open(path, "rb") as f:
        raw = f.read()
    z = zipfile.ZipFile(path)
    infos = z.infolist()
    if not infos:
        fail("empty archive")
    top = infos[0].filename.split("/")[0]
    names = [i.filename for i in infos]
    for i in infos:
        if not i.filename.startswith(top + "/"):
            fail(f"record {i.filename!r} is outside the top folder {top!r}")
        if i.compress_type != zipfile.ZIP_STORED:
            fail(f"record {i.filename!r} is compressed (method {i.compress_type})")
        # Data offset from the local header: 30 + name length + extra length.
        sig, = struct.unpack_from("<I", raw, i.header_offset)
        if sig != 0x04034B50:
            fail(f"record {i.filename!r}: no local header at {i.header_offset}")
        name_len, extra_len = struct.unpack_from("<HH", raw, i.header_offset + 26)
        data_offset = i.header_offset + 30 + name_len + extra_len
        if data_offset % 64 != 0:
            fail(f"record {i.filename!r}: data at offset {data_offset}, not 64-byte aligned")
        if z.read(i.filename) != raw[data_offset:data_offset + i.file_size]:
            fail(f"record {i.filename!r}: bytes at the local header's data offset differ")
    if not records:
        return z, top
    n_storages = sum(1 for e in manifest["entries"] if "tied_to" not in e)
    want = [f"{top}/data.pkl", f"{top}/.format_version", f"{top}/.storage_alignment",
            f"{top}/byteorder"]
    want += [f"{top}/data/{k}" for k in range(n_storages)]
    want += [f"{top}/version"]
    if manifest.get("metadata") is not None:
        want += [f"{top}/modelport_metadata.json"]
    if names != want:
        fail(f"records {names} != expected {want}")
    for rec, content in ((".format_version", b"1"), (".storage_alignment", b"64"),
                         ("byteorder", b"little"), ("version", b"3\n")):
        got = z.read(f"{top}/{rec}")
        if got != content:
            fail(f"record {rec}: {got!r} != {content!r}")
    if manifest.get("metadata") is not None:
        got = json.loads(z.read(f"{top}/modelport_metadata.json").decode("utf-8"))
        if got != manifest["metadata"]:
            fail(f"modelport_metadata.json {got!r} != {manifest['metadata']!r}")
    return z, top


def check_with_torch(path, manifest, manifest_dir):
    import torch

    z, top = check_zip(path, manifest)
    sd = torch.load(path, weights_only=True)
    if type(sd) is not collections.OrderedDict:
        fail(f"torch.load gave {type(sd).__name__}, not OrderedDict")
    entries = manifest["entries"]
    got_names = list(sd.keys())
    want_names = [e["name"] for e in entries]
    if got_names != want_names:
        fail(f"names/order {got_names!r} != {want_names!r}")
    ptrs = {}
    for e in entries:
        t = sd[e["name"]]
        name = e["name"]
        if type(t) is not torch.Tensor:
            fail(f"{name!r}: {type(t).__name__}, not a Tensor")
        if str(t.dtype) != e["dtype"]:
            fail(f"{name!r}: dtype {t.dtype} != {e['dtype']}")
        if list(t.shape) != e["shape"]:
            fail(f"{name!r}: shape {list(t.shape)} != {e['shape']}")
        if list(t.stride()) != contiguous_strides(e["shape"]) or t.storage_offset() != 0:
            fail(f"{name!r}: stride {t.stride()} offset {t.storage_offset()} not contiguous")
        if t.requires_grad:
            fail(f"{name!r}: requires_grad is set")
        # Raw bytes through a uint8 view of the same memory: no value conversion at all.
        got = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        want = expected_bytes(e, manifest_dir)
        if got != want:
            first = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]),
                         min(len(got), len(want)))
            fail(f"{name!r}: bytes differ (got {len(got)} B, want {len(want)} B, first "
                 f"difference at byte {first})")
        if t.storage().size() != t.numel():
            fail(f"{name!r}: storage holds {t.storage().size()} elements, tensor {t.numel()}")
        ptrs[name] = t.storage().data_ptr()
    for e in entries:
        if "tied_to" in e:
            a, b = sd[e["name"]], sd[e["tied_to"]]
            if a.data_ptr() != b.data_ptr() or a.storage().data_ptr() != b.storage().data_ptr():
                fail(f"{e['name']!r} does not share storage with {e['tied_to']!r}")
    owners = [e for e in entries if "tied_to" not in e and sd[e["name"]].numel() > 0]
    seen = {}
    for e in owners:
        p = ptrs[e["name"]]
        if p in seen:
            fail(f"{e['name']!r} shares storage with {seen[p]!r} but is not tied to it")
        seen[p] = e["name"]

    if manifest.get("torch_save_same_pickle"):
        import numpy as np
        rebuilt = collections.OrderedDict()
        for e in entries:
            if "tied_to" in e:
                rebuilt[e["name"]] = rebuilt[e["tied_to"]].detach()
                continue
            dtype = getattr(torch, e["dtype"].split(".")[1])
            t = torch.empty(e["shape"], dtype=dtype)
            raw = np.frombuffer(expected_bytes(e, manifest_dir), dtype=np.uint8).copy()
            t.reshape(-1).view(torch.uint8).copy_(torch.from_numpy(raw))
            rebuilt[e["name"]] = t
        buf = io.BytesIO()
        torch.save(rebuilt, buf)
        theirs = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
        their_pkl = theirs.read([n for n in theirs.namelist() if n.endswith("/data.pkl")][0])
        ours = z.read(f"{top}/data.pkl")
        if ours != their_pkl:
            first = next((i for i in range(min(len(ours), len(their_pkl)))
                          if ours[i] != their_pkl[i]), min(len(ours), len(their_pkl)))
            fail(f"data.pkl differs from torch.save's at byte {first} (ours {len(ours)} B, "
                 f"torch's {len(their_pkl)} B)")
    print(f"ok: {len(entries)} entries")


# Stand-ins for the few globals a state dict pickle may name (torch is not imported).
class Rebuilt:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args


def _stub(fn):
    return lambda *args: Rebuilt(fn, args)


class StubGlobal:
    def __init__(self, name):
        self.name = name


class StubUnpickler(pickle.Unpickler):
    ALLOWED_FUNCS = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor_v3")}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) in self.ALLOWED_FUNCS:
            return _stub(name)
        if module in ("torch", "torch.storage"):
            return StubGlobal(f"{module}.{name}")
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")

    def persistent_load(self, pid):
        return ("pid",) + tuple(pid)


def check_pickle_form(path, manifest, manifest_dir):
    z, top = check_zip(path, manifest)
    sd = StubUnpickler(io.BytesIO(z.read(f"{top}/data.pkl"))).load()
    if type(sd) is not collections.OrderedDict:
        fail(f"pickle root is {type(sd).__name__}, not OrderedDict")
    entries = manifest["entries"]
    if list(sd.keys()) != [e["name"] for e in entries]:
        fail(f"names/order {list(sd.keys())!r} != {[e['name'] for e in entries]!r}")
    v2_storage = {"torch.float32": "torch.FloatStorage", "torch.float64": "torch.DoubleStorage",
                  "torch.float16": "torch.HalfStorage", "torch.bfloat16": "torch.BFloat16Storage",
                  "torch.int64": "torch.LongStorage", "torch.int32": "torch.IntStorage",
                  "torch.int16": "torch.ShortStorage", "torch.int8": "torch.CharStorage",
                  "torch.uint8": "torch.ByteStorage", "torch.bool": "torch.BoolStorage",
                  "torch.complex64": "torch.ComplexFloatStorage"}
    keys = {}
    for e in entries:
        name, r = e["name"], sd[e["name"]]
        if not isinstance(r, Rebuilt):
            fail(f"{name!r}: not a rebuilt tensor")
        want = expected_bytes(e, manifest_dir)
        if e["dtype"] in v2_storage:
            if r.fn != "_rebuild_tensor_v2" or len(r.args) != 6:
                fail(f"{name!r}: {r.fn} with {len(r.args)} arguments, want _v2 with 6")
            pid, offset, size, stride, grad, hooks = r.args
            if pid[2].name != v2_storage[e["dtype"]]:
                fail(f"{name!r}: storage class {pid[2].name} for {e['dtype']}")
            numel = _numel(e["shape"])
        else:
            if r.fn != "_rebuild_tensor_v3" or len(r.args) != 7:
                fail(f"{name!r}: {r.fn} with {len(r.args)} arguments, want _v3 with 7")
            pid, offset, size, stride, grad, hooks, dtype = r.args
            if not isinstance(dtype, StubGlobal) or dtype.name != e["dtype"]:
                fail(f"{name!r}: dtype argument {getattr(dtype, 'name', dtype)!r} != "
                     f"{e['dtype']}")
            if pid[2].name != "torch.storage.UntypedStorage":
                fail(f"{name!r}: storage class {pid[2].name}, want torch.storage.UntypedStorage")
            numel = len(want)  # an UntypedStorage counts bytes
        if len(pid) != 6 or pid[1] != "storage" or pid[4] != "cpu":
            fail(f"{name!r}: persistent id {pid[1:]!r} is not ('storage', cls, key, 'cpu', n)")
        if pid[5] != numel:
            fail(f"{name!r}: storage numel {pid[5]} != {numel}")
        if (offset, list(size), list(stride), grad) != (0, e["shape"],
                                                         contiguous_strides(e["shape"]), False):
            fail(f"{name!r}: offset/size/stride/requires_grad {offset, size, stride, grad}")
        if type(hooks) is not collections.OrderedDict or hooks:
            fail(f"{name!r}: backward hooks {hooks!r} are not an empty OrderedDict")
        key = pid[3]
        if "tied_to" in e:
            if keys[e["tied_to"]] != key:
                fail(f"{name!r}: storage key {key!r} is not its target's {keys[e['tied_to']]!r}")
        else:
            if key in keys.values():
                fail(f"{name!r}: storage key {key!r} is used twice")
            got = z.read(f"{top}/data/{key}")
            if got != want:
                fail(f"{name!r}: storage bytes differ (got {len(got)} B, want {len(want)} B)")
        keys[name] = key
    print(f"ok: {len(entries)} entries")


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def entry_opcodes(path, name):
    """(opcode, GLOBAL argument or None) from BINUNICODE `name` at the dict level to the end of
    its value; memo and number arguments are dropped."""
    import pickletools
    z = zipfile.ZipFile(path)
    pkl = z.read([n for n in z.namelist() if n.endswith("/data.pkl")][0])
    ops = list(pickletools.genops(pkl))
    # Track MARK depth: dict keys sit one MARK deep (inside SETITEMS' MARK).
    depth, start = 0, None
    for i, (op, arg, _) in enumerate(ops):
        if op.name == "MARK":
            depth += 1
        elif op.name in ("TUPLE", "SETITEMS", "DICT", "LIST", "APPENDS"):
            depth -= 1
        if start is None and op.name == "BINUNICODE" and arg == name and depth == 1:
            start = i
        elif start is not None and depth == 1 and op.name == "REDUCE":
            seq = ops[start + 2:i + 1]  # skip the key and its BINPUT
            return [(o.name.replace("LONG_", "").replace("BINPUT", "PUT").replace("BINGET", "GET"),
                     a if o.name == "GLOBAL" else None) for o, a, _ in seq]
    fail(f"{path}: no entry {name!r} at the dict level")


def check_form(path, name, golden, golden_name):
    ours, theirs = entry_opcodes(path, name), entry_opcodes(golden, golden_name)
    if ours != theirs:
        fail(f"opcodes of {name!r}:\n  {ours}\n!= torch 2.x's for {golden_name!r}:\n  {theirs}")
    print(f"ok: {len(ours)} opcodes match")


def check_same(path, reference):
    import torch

    ours = torch.load(path, weights_only=True)
    theirs = torch.load(reference, weights_only=True)
    if list(ours.keys()) != list(theirs.keys()):
        fail(f"names/order {list(ours.keys())!r} != {list(theirs.keys())!r}")

    def groups(sd):
        by_ptr = collections.defaultdict(list)
        for k, t in sd.items():
            if t.numel() > 0:
                by_ptr[t.storage().data_ptr()].append(k)
        return sorted(v for v in by_ptr.values())

    for k, t in theirs.items():
        o = ours[k]
        if (o.dtype, o.shape) != (t.dtype, t.shape):
            fail(f"{k!r}: {o.dtype} {list(o.shape)} != {t.dtype} {list(t.shape)}")
        a = o.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        b = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        if a != b:
            fail(f"{k!r}: bytes differ")
    if groups(ours) != groups(theirs):
        fail(f"storage sharing {groups(ours)} != {groups(theirs)}")
    print(f"ok: {len(theirs)} tensors")


def check_sharded(index_path, manifest, manifest_dir):
    import torch

    with open(index_path, encoding="utf-8") as f:
        index = json.load(f)
    folder = os.path.dirname(os.path.abspath(index_path))
    by_shard = collections.defaultdict(set)
    for key, shard in index["weight_map"].items():
        by_shard[shard].add(key)
    merged, shard_of = {}, {}
    for shard in sorted(by_shard):
        path = os.path.join(folder, shard)
        check_zip(path, manifest, records=False)
        sd = torch.load(path, weights_only=True)
        if type(sd) is not collections.OrderedDict:
            fail(f"{shard}: torch.load gave {type(sd).__name__}, not OrderedDict")
        if set(sd.keys()) != by_shard[shard]:
            fail(f"{shard}: holds {sorted(sd.keys())}, index says {sorted(by_shard[shard])}")
        for k, t in sd.items():
            merged[k] = t
            shard_of[k] = shard
    entries = manifest["entries"]
    if sorted(merged) != sorted(e["name"] for e in entries):
        fail(f"shards hold {sorted(merged)}, want {sorted(e['name'] for e in entries)}")
    total = 0
    for e in entries:
        t = merged[e["name"]]
        if str(t.dtype) != e["dtype"] or list(t.shape) != e["shape"]:
            fail(f"{e['name']!r}: {t.dtype} {list(t.shape)} != {e['dtype']} {e['shape']}")
        want = expected_bytes(e, manifest_dir)
        if t.reshape(-1).view(torch.uint8).numpy().tobytes() != want:
            fail(f"{e['name']!r}: bytes differ")
        if "tied_to" in e:
            target = e["tied_to"]
            if shard_of[e["name"]] != shard_of[target] or \
                    t.storage().data_ptr() != merged[target].storage().data_ptr():
                fail(f"{e['name']!r} does not share storage with {target!r}")
        else:
            total += len(want)
    if index.get("metadata", {}).get("total_size") != total:
        fail(f"index metadata {index.get('metadata')} has not total_size {total}")
    print(f"ok: {len(entries)} entries in {len(by_shard)} shards")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "sharded":
        with open(sys.argv[3], encoding="utf-8") as f:
            manifest = json.load(f)
        check_sharded(sys.argv[2], manifest, os.path.dirname(os.path.abspath(sys.argv[3])))
        return
    if len(sys.argv) == 4 and sys.argv[1] == "same":
        check_same(*sys.argv[2:])
        return
    if len(sys.argv) == 6 and sys.argv[1] == "form":
        check_form(*sys.argv[2:])
        return
    if len(sys.argv) != 4 or sys.argv[1] not in ("check", "pickle"):
        print(__doc__)
        sys.exit(2)
    mode, path, manifest_path = sys.argv[1:]
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    manifest_dir = os.path.dirname(os.path.abspath(manifest_path))
    if mode == "check":
        check_with_torch(path, manifest, manifest_dir)
    else:
        check_pickle_form(path, manifest, manifest_dir)


if __name__ == "__main__":
    main()
