#!/usr/bin/env python3
"""A small, independent reader of remotedict's folder index (docs/FORMAT.md), formats 1 and 2.

Usage: index-reader.py DIR
  DIR holds the folder's `.remotedict/` blobs as files named like the blobs' last component:
  `index` (the head), and for format 2 `index-<generation>.snapshot` and
  `index-<generation>.journal` (download them with any Azure tool, e.g. `az storage blob
  download-batch --pattern '<folder>/.remotedict/index*'`).

Prints one JSON object per listed key, in key order:
  {"key": ..., "kind": "file"|"dir"|"symlink"|"special", "size": ..., "stored_size": ...,
   "etag": ..., "mtime_ns": ..., "mode": ...}
plus "target" for symlinks and special files ("fifo", "socket", "char M:m", "block M:m") and
"atime_ns" when an access time was set apart from the mtime, and "xattrs" (name: hex of the
value) when the file has extended attributes.
and, on stderr, the format and (format 2) the generations read.

Needs Python's `lz4` package (lz4.frame). Written from docs/FORMAT.md alone.
"""

import json
import os
import struct
import sys
import zlib

import lz4.frame

KINDS = {0: "file", 1: "dir", 2: "symlink", 3: "special"}
HAS_ATIME = 0x80
HAS_XATTRS = 0x40


class Reader:
    def __init__(self, buf, pos=0):
        self.buf, self.pos = buf, pos

    def byte(self):
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def varint(self):
        v, shift = 0, 0
        while True:
            b = self.byte()
            v |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return v

    def zigzag(self):
        v = self.varint()
        return (v >> 1) ^ -(v & 1)

    def bytes(self):
        n = self.varint()
        b = self.buf[self.pos:self.pos + n]
        if len(b) != n:
            raise ValueError("length past the end")
        self.pos += n
        return b

    def entry(self):
        flags = self.byte()
        kind = flags & ~(HAS_ATIME | HAS_XATTRS)
        e = {"kind": KINDS[kind], "size": self.varint(), "stored_size": self.varint(),
             "mtime_ns": self.zigzag()}
        self.zigzag()  # ctime
        e["etag"] = self.bytes().decode()
        e["mode"] = self.varint()
        self.varint()  # uid
        self.varint()  # gid
        if kind in (2, 3):
            e["target"] = self.bytes().decode()
        if flags & HAS_ATIME:
            e["atime_ns"] = self.zigzag()
        if flags & HAS_XATTRS:
            xattrs = {}
            for _ in range(self.varint()):
                name = self.bytes().decode()
                xattrs["user." + name] = self.bytes().hex()
            e["xattrs"] = xattrs
        return e


def entry_list(body):
    """The entries of a version-1 entry list body."""
    r = Reader(body, 5)
    r.varint()  # flags
    entries, prev = {}, b""
    for _ in range(r.varint()):
        shared = r.varint()
        key = prev[:shared] + r.bytes()
        entries[key.decode()] = r.entry()
        prev = key
    if r.pos != len(body):
        raise ValueError("trailing bytes after the entries")
    return entries


def records(data):
    """The journal's whole records: (ops) each; a record cut short at the end is not there yet."""
    pos = 0
    while len(data) - pos >= 12:
        magic, length, crc = data[pos:pos + 4], *struct.unpack("<II", data[pos + 4:pos + 12])
        if magic != b"RDJR":
            raise ValueError("bad record magic at %d" % pos)
        payload = data[pos + 12:pos + 12 + length]
        if len(payload) < length:
            return
        if zlib.crc32(payload) != crc:
            raise ValueError("record checksum mismatch at %d" % pos)
        r = Reader(payload, 16)  # after the batch id
        ops = []
        for _ in range(r.varint()):
            tag = r.byte()
            if tag == 1:
                key = r.bytes().decode()
                ops.append(("put", key, r.entry()))
            elif tag == 2:
                ops.append(("remove", r.bytes().decode(), None))
            elif tag in (3, 4):
                ops.append(("seal" if tag == 3 else "seal-replaced", r.bytes().decode(), None))
            else:
                raise ValueError("unknown op %d" % tag)
        yield ops
        pos += 12 + length


def main():
    d = sys.argv[1]
    with open(os.path.join(d, "index"), "rb") as f:
        head = lz4.frame.decompress(f.read())
    if head[:4] != b"RDIX":
        raise SystemExit("not a remotedict index")
    if head[4] == 1:
        print("format 1", file=sys.stderr)
        entries = entry_list(head)
    elif head[4] == 2:
        r = Reader(head, 5)
        r.varint()
        generation = r.bytes().decode()
        read = []

        def snapshot(g):
            with open(os.path.join(d, "index-%s.snapshot" % g), "rb") as f:
                return entry_list(lz4.frame.decompress(f.read()))

        entries = snapshot(generation)
        while generation:
            read.append(generation)
            with open(os.path.join(d, "index-%s.journal" % generation), "rb") as f:
                data = f.read()
            following = None
            for ops in records(data):
                for op, key, e in ops:
                    if op == "put":
                        entries[key] = e
                    elif op == "remove":
                        entries.pop(key, None)
                    else:
                        following = key
                        if op == "seal-replaced":
                            entries = snapshot(key)
                if following:
                    break
            generation = following
        print("format 2, generations %s" % " ".join(read), file=sys.stderr)
    else:
        raise SystemExit("index format %d is newer than this reader" % head[4])
    for key in sorted(entries, key=lambda k: k.encode()):
        print(json.dumps(dict(key=key, **entries[key])))


if __name__ == "__main__":
    main()
