"""Checks a torture history against the documented semantics (docs/SEMANTICS.md).

- No read returns bytes that are not one whole value (or a sequence of whole append records)
  some writer wrote.
- A value acknowledged at t (close returned 0) is what every host reads from its visibility
  deadline on, until a later acknowledged operation replaces it: t + 2 x TTL (index copy and the
  kernel's attribute cache) + group commit + margin for other hosts, t for the writing host;
  a fault overlapping that window pushes the deadline to the fault's end plus the same time.
  Reads before the deadline may return the older or the newer value.
- An operation that failed with an errno other than "did nothing" ones (EEXIST, ENOENT) may or
  may not have taken effect ("maybe"); so may an un-fsynced one on a host killed with SIGKILL
  within 5 s after it, and anything in flight during a fault on its host.
- An acknowledged append is never lost; no two holders hold one flock at once; of O_EXCL
  creates of one name only one succeeds until the name is removed. Azurite forgets its leases
  when it restarts (Azure does not): locks held across an Azurite restart, appends made under
  them, and appends of other holders while such a lock was still held, are not checked.
- A file being written that another process of its host renames keeps its writer, as on a local
  disk: what the writer saves lands under the new name (the write may take effect there). A file
  being read that its host renames takes its reader along: the read may return what a read of
  the new name could (another host's write there replaces the moved file, as on a local disk).
"""
import bisect

NO_EFFECT = {"EEXIST", "ENOENT"}
REPLACING = {"write", "excl", "rm", "mv"}
VALUE_READS = {"read", "scan-read", "final-read", "fresh-read"}
# A read is judged by the operations on its name that began within HORIZON seconds before it,
# and the KEEP before those (older ones are long visible and superseded): the check stays linear
# in the length of the run.
HORIZON = 60
KEEP = 200
LOG_READS = {"readlog", "scan-readlog", "final-readlog", "fresh-readlog"}


class Checker:
    def __init__(self, ops, faults, ttl, margin, commit=0.1):
        self.ops = sorted(ops, key=lambda o: o["t0"])
        self.faults = sorted(faults, key=lambda f: f["t0"])
        self.w_close = 2 * ttl + commit + margin
        self.w_fsync = 2 * ttl + margin
        self.by_name = {}
        for o in self.moved_writes():
            self.ops.append(o)
        self.ops.sort(key=lambda o: o["t0"])
        for o in self.ops:
            if o["kind"] in REPLACING:
                self.by_name.setdefault(o["path"], []).append(o)
                if o["kind"] == "mv":
                    self.by_name.setdefault(o.get("path2"), []).append(o)
        self.effective = {n: [o for o in ops if not self.no_effect(o)]
                          for n, ops in self.by_name.items()}
        self.starts = {n: [o["t0"] for o in ops] for n, ops in self.effective.items()}
        self.appends = {}
        for o in self.ops:
            if o["kind"] == "append":
                self.appends.setdefault(o["path"], []).append(o)
        self._maybe = {}
        self.longest = max((o["t1"] - o["t0"] for o in self.ops), default=0)
        self._deadline = {}
        self._old_appends = {}
        self._old_holds = None
        self.writers = {o["val"]: o for o in self.ops
                        if o["kind"] in ("write", "excl", "treewrite", "append") and "val" in o
                        and not o.get("synthetic")}
        self.kills = [f for f in self.faults if f["kind"] in ("kill-9", "sigterm")]
        self.restarts = [f for f in self.faults if f["kind"] == "azurite-restart"]
        self.violations = []
        self._ever = {}

    # -- the model

    def moved_writes(self):
        """For each write that a mv of its host moved while it ran (of the file or a directory
        above it), the same write under the new name (synthetic, not itself checked)."""
        out = []
        longest = max((o["t1"] - o["t0"] for o in self.ops), default=0)
        mvs = {}
        for m in self.ops:
            if m["kind"] in ("mv", "mvdir") and m["res"] == "ok":
                mvs.setdefault(m["host"], []).append(m)
        starts = {h: [m["t0"] for m in ms] for h, ms in mvs.items()}
        self.mvs, self.mv_starts = mvs, starts
        for w in self.ops:
            if w["kind"] not in ("write", "excl", "treewrite") or w["res"] != "ok":
                continue
            ms, st = mvs.get(w["host"], []), starts.get(w["host"], [])
            for m in ms[bisect.bisect_left(st, w["t0"] - longest):bisect.bisect_left(st, w["t1"])]:
                src = m["path"]
                if (w["t0"] < m["t1"] and m["t0"] < w["t1"]
                        and (w["path"] == src or w["path"].startswith(src + "/"))):
                    moved = dict(w, path=m["path2"] + w["path"][len(src):], synthetic=True)
                    if moved["path"].startswith("v/"):
                        moved["kind"] = "write" if w["kind"] == "treewrite" else w["kind"]
                    out.append(moved)
        return out

    def across_restart(self, t0, t1):
        return any(f["t0"] < t1 and f["t1"] > t0 for f in self.restarts)

    def unguarded(self, p):
        """Whether append `p` ran while its lock may have had two holders: its own hold spans an
        Azurite restart, or it overlaps the hold of another holder whose lock did (the old
        holder still acts under a lease Azurite forgot, so the new holder's append is at risk)."""
        t0 = p.get("locked", p["t0"])
        if self.across_restart(t0, p["t1"]):
            return True
        if not self.restarts:
            return False
        if self._old_holds is None:
            self._old_holds = {}
            for o in self.ops:
                if o["kind"] == "append" and "locked" in o:
                    end = o.get("unlock", o["t1"])
                    if self.across_restart(o["locked"], end):
                        self._old_holds.setdefault(o["path"], []).append((o["locked"], end))
        return any(a < p["t1"] and b > t0 for a, b in self._old_holds.get(p["path"], []))

    def no_effect(self, o):
        return o["res"] in NO_EFFECT

    def window(self, name, t_from, t_to):
        """The effective operations on `name` that began before `t_to`, from KEEP before
        `t_from` on."""
        ops, starts = self.effective.get(name, []), self.starts.get(name, [])
        hi = bisect.bisect_left(starts, t_to)
        lo = max(0, bisect.bisect_left(starts, t_from) - KEEP)
        return ops[lo:hi]

    def maybe(self, o):
        key = id(o)
        if key not in self._maybe:
            self._maybe[key] = self._maybe_uncached(o)
        return self._maybe[key]

    def _maybe_uncached(self, o):
        if o["res"] != "ok":
            return True
        t1 = o["t1"]
        for f in self.kills:
            if f["host"] == o["host"] and f["t0"] >= o["t0"] - 0.01:
                if f["t0"] <= t1 or (f["kind"] == "kill-9" and not o.get("fsync")
                                     and f["t0"] <= t1 + 5):
                    return True
        return False

    def deadline(self, o, reader):
        """When `reader` (a read op) must see what `o` did, at the latest."""
        same = o["host"] == reader["host"] and o["gen"] == reader["gen"]
        key = (id(o), reader["host"], same)
        if key not in self._deadline:
            self._deadline[key] = self._deadline_uncached(o, reader, same)
        return self._deadline[key]

    def _deadline_uncached(self, o, reader, same):
        if same:
            d = o["t1"] + 0.2
            w = self.w_close
        else:
            w = self.w_fsync if o.get("fsync") else self.w_close
            d = o["t1"] + w
        for f in self.faults:
            if f["host"] is not None and f["host"] not in (o["host"], reader["host"]):
                continue  # a fault of a third host delays neither the writer nor the reader
            if f["t0"] < d and f["t1"] > o["t0"]:
                d = max(d, f["t1"] + self.w_close)
        return d

    def states(self, o, name):
        if o["kind"] in ("write", "excl"):
            return {o["val"]}
        if o["kind"] == "rm" or (o["kind"] == "mv" and o["path"] == name):
            return {"absent"}
        return self.values_ever(o["path"], o["t1"], 0)  # mv into `name`

    def values_ever(self, name, t, depth):
        key = (name, t)
        if key in self._ever or depth > 30:
            return self._ever.get(key, set())
        out = set()
        for o in self.window(name, t, t):
            if o["t0"] >= t:
                continue
            if o["kind"] in ("write", "excl"):
                out.add(o["val"])
            elif o["kind"] == "mv" and o.get("path2") == name:
                out |= self.values_ever(o["path"], o["t1"], depth + 1)
        self._ever[key] = out
        return out

    def creates(self, o, name):
        return o["kind"] in ("write", "excl") or (o["kind"] == "mv" and o.get("path2") == name)

    def removes(self, o, name):
        return o["kind"] == "rm" or (o["kind"] == "mv" and o["path"] == name)

    # -- checks

    def violation(self, what, related, detail=""):
        self.violations.append(dict(what=what, detail=detail, ops=related))

    def followed_names(self, r):
        """Where a read's file may have moved while it ran: a mv of its host (of the file or a
        directory above it) overlapping the read takes the open file along, as on a local disk,
        so the read may return what is acceptable under the new name."""
        out = []
        ms, st = self.mvs.get(r["host"], []), self.mv_starts.get(r["host"], [])
        for m in ms[bisect.bisect_left(st, r["t0"] - self.longest):bisect.bisect_left(st, r["t1"])]:
            src = m["path"]
            if m["t0"] < r["t1"] and r["t0"] < m["t1"] and (
                    r["path"] == src or r["path"].startswith(src + "/")):
                out.append(m["path2"] + r["path"][len(src):])
        return out

    def check_value_read(self, r):
        name = r["path"]
        acceptable = self.acceptable(r, name)
        if r["val"] not in acceptable:
            for other in self.followed_names(r):
                acceptable = acceptable | self.acceptable(r, other)
        if r["val"] not in acceptable:
            cands = self.window(name, r["t0"] - HORIZON, r["t1"])
            last = self.last_visible(r, cands)
            near = [o for o in cands if o["t0"] < r["t1"] and o["t1"] > r["t0"] - 15]
            if last is not None and last not in near:
                near.insert(0, last)
            wrote = self.writers.get(r["val"])
            if wrote is not None and wrote not in near:
                near.insert(0, wrote)
            self.violation(
                "stale or lost value" if r["val"] in self.writers or r["val"] == "absent"
                else "read returned a value no writer wrote",
                near + [r], "%s read %s on h%d; acceptable then: %s"
                % (r["kind"], name, r["host"], brief(acceptable)))

    def last_visible(self, r, cands):
        """The visible acknowledged operation on the name that began last."""
        for p in reversed(cands):
            if p is not r and not self.maybe(p) and self.deadline(p, r) <= r["t0"]:
                return p
        return None

    def acceptable(self, r, name):
        """What a read `r` of `name` may return."""
        cands = self.window(name, r["t0"] - HORIZON, r["t1"])
        # The visible acknowledged operation that began last supersedes everything that ended
        # before it began (the candidates are in order of start).
        last = self.last_visible(r, cands)
        acceptable = set()
        for o in reversed(cands):
            if last is not None and o["t0"] < last["t0"] - self.longest:
                break  # nothing that began this early ended after `last` began
            if last is None or o["t1"] >= last["t0"]:
                acceptable |= self.states(o, name)
        if last is None:
            acceptable.add("absent")
        for o in reversed(cands):
            if o["t0"] < r["t0"] - HORIZON:
                break
            if o["kind"] in ("write", "excl") and (o["t1"] + self.w_close > r["t0"]
                                                  or self.maybe(o)):
                acceptable.add("empty")  # an O_EXCL claim, or a create seen before its close
                break
        return acceptable

    def check_integrity(self, r):
        if r.get("val") == "GARBAGE" or r.get("why"):
            self.violation("read returned bytes no writer wrote whole", [r], r.get("why", ""))
            return False
        vals = r.get("recs") or ([r["val"]] if r.get("val") not in (None, "absent", "empty")
                                 else [])
        for v in vals:
            w = self.writers.get(v)
            if w is None or w["t0"] >= r["t1"]:
                self.violation("read returned a value no writer wrote (or not yet)", [r], v)
                return False
        return True

    def check_log_read(self, r):
        recs = r["recs"]
        seen = set()
        for v in recs:
            if v in seen:
                self.violation("append record duplicated", [self.writers[v], r], v)
            seen.add(v)
            if self.writers[v]["path"] != r["path"]:
                self.violation("append record in the wrong file", [self.writers[v], r], v)
        # Appends older than the horizon must all be there (kept in one growing set per file,
        # as reads come in time order); newer ones once their deadline for this reader passed.
        appends = self.appends.get(r["path"], [])
        old, done = self._old_appends.setdefault(r["path"], [set(), 0])
        while done < len(appends) and appends[done]["t0"] < r["t0"] - HORIZON:
            p = appends[done]
            if not self.maybe(p) and not self.unguarded(p):
                old.add(p["val"])
            done += 1
        self._old_appends[r["path"]][1] = done
        missing = [self.writers[v] for v in old - seen]
        for p in appends[done:]:
            if p["t0"] >= r["t0"]:
                break
            if p["val"] not in seen and not self.maybe(p) and self.deadline(p, r) <= r["t0"] \
                    and not self.unguarded(p):
                missing.append(p)
        for p in missing:
            self.violation("acknowledged append missing from a later read", [p, r],
                           "record %s" % p["val"])

    def check_locks(self):
        holds = {}
        for o in self.ops:
            if o["kind"] == "append" and "locked" in o:
                end = o.get("unlock", o["t1"])
                for f in self.kills:
                    if f["host"] == o["host"] and o["locked"] <= f["t0"] < end:
                        end = f["t0"]
                if self.across_restart(o["locked"], end):
                    continue
                holds.setdefault(o["path"], []).append((o["locked"], end, o))
        for path, hs in holds.items():
            hs.sort(key=lambda h: h[0])
            for i, (a0, a1, a) in enumerate(hs):
                for b0, b1, b in hs[i + 1:]:
                    if b0 >= a1:
                        break
                    self.violation("flock held by two holders at once", [a, b],
                                   "%s: h%d/w%d %.3f-%.3f and h%d/w%d %.3f-%.3f"
                                   % (path, a["host"], a["w"], a0, a1, b["host"], b["w"], b0, b1))

    def check_excl(self):
        for name, ops in self.by_name.items():
            for e in ops:
                if e["kind"] != "excl" or e["res"] != "ok" or e.get("synthetic"):
                    continue
                prior = [p for p in ops if p is not e and self.creates(p, name)
                         and not self.maybe(p) and p["t1"] < e["t0"]]
                if not prior:
                    continue
                p = max(prior, key=lambda p: p["t1"])
                if not any(self.removes(x, name) and not self.no_effect(x)
                           and x["t1"] > p["t0"] and x["t0"] < e["t1"] for x in ops):
                    self.violation("O_EXCL create succeeded over an existing name", [p, e])

    def run(self):
        for r in self.ops:
            if r["res"] != "ok":
                continue
            if r["kind"] in VALUE_READS or r["kind"] == "tree-read" or r["kind"] in LOG_READS:
                if not self.check_integrity(r):
                    continue
            if r["kind"] in VALUE_READS:
                self.check_value_read(r)
            elif r["kind"] in LOG_READS:
                self.check_log_read(r)
        self.check_locks()
        self.check_excl()
        return self.violations


def brief(values, most=12):
    """A few of `values`, sorted, and how many more."""
    vs = sorted(values)
    more = " and %d more" % (len(vs) - most) if len(vs) > most else ""
    return ", ".join(vs[:most]) + more


def fmt_op(o):
    s = "#%d %8.3f-%8.3f h%d.w%d g%d %-12s %s" % (
        o["id"], o["t0"], o.get("t1", -1), o["host"], o.get("w", 0), o.get("gen", 0), o["kind"],
        o["path"])
    if o.get("path2"):
        s += " -> " + o["path2"]
    s += " = " + o["res"]
    for k in ("val", "fsync", "stage", "mode", "why"):
        if k in o and o[k] not in (None, False):
            s += " %s=%s" % (k, o[k])
    if "recs" in o:
        s += " recs=%d" % len(o["recs"])
    return s
