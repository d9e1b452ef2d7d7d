"""Self-describing values and append records: a read can be checked for being whole.

A value is a header line `TV <writer> <len> <sha256[:16]>\n` followed by <len> payload bytes; the
writer id names the host and operation (`h1.2000017`). An append file is a sequence of records,
each one line `AR <writer> <len> <sha256[:16]> <hex payload>\n`.
"""
import hashlib
import random

def _payload(writer, length):
    return random.Random(writer).randbytes(length)


def make_value(writer, length):
    body = _payload(writer, length)
    head = "TV %s %d %s\n" % (writer, length, hashlib.sha256(body).hexdigest()[:16])
    return head.encode() + body


def parse_value(data):
    """Returns ("absent"|"empty"|writer, None) or (None, why) when the bytes are no whole value."""
    if data is None:
        return "absent", None
    if len(data) == 0:
        return "empty", None
    nl = data.find(b"\n", 0, 200)
    if not data.startswith(b"TV ") or nl < 0:
        return None, "no value header (first bytes %r, %d bytes)" % (data[:40], len(data))
    try:
        _, writer, length, digest = data[:nl].decode().split(" ")
        length = int(length)
    except ValueError:
        return None, "bad header %r" % data[:nl]
    body = data[nl + 1:]
    if len(body) != length:
        return None, "value %s cut: %d payload bytes, header says %d" % (writer, len(body), length)
    if hashlib.sha256(body).hexdigest()[:16] != digest:
        return None, "value %s: checksum mismatch (mixed or corrupt bytes)" % writer
    return writer, None


def make_record(writer, length):
    body = _payload(writer, length).hex()
    return ("AR %s %d %s %s\n" % (writer, length, hashlib.sha256(body.encode()).hexdigest()[:16],
                                   body)).encode()


def parse_records(data):
    """Returns (list of writers, None) or (writers so far, why) when not a sequence of records."""
    writers = []
    if data is None:
        return writers, None
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:
            return writers, "torn record at byte %d: %r" % (pos, data[pos:pos + 60])
        line = data[pos:nl]
        try:
            tag, writer, length, digest, body = line.decode().split(" ")
            ok = tag == "AR" and len(body) == 2 * int(length) and \
                hashlib.sha256(body.encode()).hexdigest()[:16] == digest
        except ValueError:
            ok = False
        if not ok:
            return writers, "bad record at byte %d: %r" % (pos, line[:60])
        writers.append(writer)
        pos = nl + 1
    return writers, None
