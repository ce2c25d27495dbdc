#!/usr/bin/env python3
"""`make bench`: the broker against a raw-sled baseline, on loopback, written to docs/benchmarks.md.

Each case runs against a fresh release broker (`--standalone`, data in a temporary directory on
the same disk as the baseline's). The baseline, `runnel-storage-bench`, writes the same batches
straight into sled with the broker's flush policy, in the same run, so the broker's overhead is a
ratio. Nothing else should run on the machine meanwhile.
"""
import collections
import contextlib
import datetime
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# RUNNEL_BENCH_BIN: where the binaries are (default target/release), e.g. a debug build for a
# dry run of the harness.
BIN = os.environ.get("RUNNEL_BENCH_BIN") or os.path.join(ROOT, "target", "release")
QUICK = os.environ.get("RUNNEL_BENCH_QUICK") == "1"
# RUNNEL_BENCH_ONLY=groups (or replication): only the consumer-group (or replication) cases, their section printed to stdout and
# docs/benchmarks.md left as it is (a check of the harness, not a report).
ONLY = os.environ.get("RUNNEL_BENCH_ONLY", "")
# Each case runs this many times; the tables show the median run and the range. Synchronous
# writes on this kind of machine vary a lot from one run to the next.
REPEATS = 1 if QUICK else 3
SCALE = 0.2 if QUICK else 1.0
# The producer's default max_in_flight: the acks=all baseline keeps as many batches undurable.
WINDOW = 48


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine_cpu():
    """(busy, total) clock ticks of all cores since boot, from /proc/stat; idle and iowait are not busy."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return sum(v) - v[3] - v[4], sum(v)


def children_cpu():
    """CPU seconds (user + system) of every child process waited for so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measured(run):
    """Calls `run()` and returns its result, the CPU seconds of the child processes it waited for, and
    how many cores of the machine were busy on average meanwhile (all processes, kernel threads too)."""
    m0, c0 = machine_cpu(), children_cpu()
    res = run()
    m1, c1 = machine_cpu(), children_cpu()
    busy = (m1[0] - m0[0]) / max(1, m1[1] - m0[1]) * (os.cpu_count() or 1)
    return res, c1 - c0, busy


class Broker:
    def __init__(self, workdir, extra=(), data=None):
        self.data = data or tempfile.mkdtemp(prefix="broker-", dir=workdir)
        self.addr = f"127.0.0.1:{free_port()}"
        self.metrics = f"127.0.0.1:{free_port()}"
        self.extra = list(extra)
        self.log = open(os.path.join(workdir, "broker.log"), "ab")
        self.start()

    def start(self):
        """Starts the broker process and waits until it listens."""
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "runnel-broker"), "--standalone", "--data-dir", self.data, "--listen", self.addr,
             "--metrics-listen", self.metrics, *self.extra],
            stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                socket.create_connection(tuple([self.addr.split(":")[0], int(self.addr.split(":")[1])]), 0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise SystemExit("runnel-broker exited at start; see broker.log")
                time.sleep(0.05)
        raise SystemExit("runnel-broker did not start")

    def ready(self):
        """Whether `/readyz` answers 200."""
        host, port = self.metrics.split(":")
        try:
            with socket.create_connection((host, int(port)), 0.2) as c:
                c.sendall(b"GET /readyz HTTP/1.0\r\n\r\n")
                return c.recv(64).startswith(b"HTTP/1.0 200") or False
        except OSError:
            return False

    def memory_mb(self):
        """(resident, peak resident) MB of the broker process."""
        rss = hwm = 0
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) / 1024
        return rss, hwm

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def cpu_seconds(self):
        """CPU seconds (user + system, all threads) the broker has used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, keep_data=False):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if not keep_data:
            shutil.rmtree(self.data, ignore_errors=True)


def runnel(addr, *args):
    out = subprocess.run([os.path.join(BIN, "runnel"), "--bootstrap", addr, "--output", "json", *args],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def spread_runs(workdir):
    """Marks `workdir` as a top of directory hierarchies (ext4's `chattr +T`), so that each run's
    data directory, made in it, goes to a block group of its own.

    Every run creates and deletes thousands of sled blob files. ext4 without a journal (as here)
    skips inodes freed in the last minute when it allocates new ones, checking each in turn, so a
    run whose files land among the previous runs' freed inodes creates files more and more
    slowly: back to back, the sixth raw-sled run was 23% slower than the first. Spread out, runs
    do not meet each other's leftovers. Returns whether the attribute could be set.
    """
    try:
        subprocess.run(["chattr", "+T", workdir], check=True, capture_output=True)
        return True
    except (OSError, subprocess.CalledProcessError):
        return False


DiskCounters = collections.namedtuple("DiskCounters", "completed in_flight sectors_written sectors_discarded")


def disk_stat_path(path):
    """The /sys stat file of the block device that holds `path`."""
    st = os.stat(path)
    return f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/stat"


def disk_counters(stat_path):
    """The device's counters now (None where they cannot be read). Fields of the file: reads, -, -,
    -, writes, -, sectors written, -, in flight, -, -, discards, -, sectors discarded, -, flushes."""
    try:
        with open(stat_path) as f:
            v = [int(x) for x in f.read().split()]
    except OSError:
        return None
    at = lambda i: v[i] if len(v) > i else 0
    return DiskCounters(v[0] + v[4] + at(11) + at(15), v[8], v[6], at(13))


def settle(path, seconds=2):
    """Lets the disk finish the previous case's (or the build's) writes and deletions before the next
    starts: syncs, waits `seconds`, then until the device under `path` has been idle (nothing in
    flight, nothing completed) for a second, or 10 s more have passed."""
    os.sync()
    time.sleep(seconds)
    stat_path = disk_stat_path(path)
    last, quiet_since, deadline = disk_counters(stat_path), time.monotonic(), time.monotonic() + 10
    while last is not None and time.monotonic() < deadline:
        time.sleep(0.1)
        cur = disk_counters(stat_path)
        if cur is None or cur.in_flight > 0 or cur.completed != last.completed:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= 1:
            return
        last = cur


class DeviceWatch(threading.Thread):
    """Watches the block device under `path` while a run goes (its counters, every 10 ms): the
    longest time it held requests in flight without completing any (a stall of the device, which
    every flush waiting on it sees), and how many MB it was asked to write and to discard. Used with
    `with`; `result()` after."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.stat_path = disk_stat_path(path)
        self.done = threading.Event()
        self.longest = 0.0
        self.first = self.last = None

    def run(self):
        self.first = self.last = disk_counters(self.stat_path)
        if self.first is None:
            return
        since, then = None, time.monotonic()
        while not self.done.wait(0.01):
            now, cur = time.monotonic(), disk_counters(self.stat_path)
            if cur is None:
                continue
            if cur.in_flight > 0 and cur.completed == self.last.completed:
                # Nothing completed since the last sample, with requests in flight.
                since = since or then
                self.longest = max(self.longest, now - since)
            else:
                since = None
            self.last, then = cur, now

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.join()

    def result(self):
        if self.first is None:
            return None
        return {"longest_stall_ms": self.longest * 1000,
                "written_mb": (self.last.sectors_written - self.first.sectors_written) * 512 / 1e6,
                "discarded_mb": (self.last.sectors_discarded - self.first.sectors_discarded) * 512 / 1e6}


def median_of(runs):
    """The median run by records/s, annotated with the range of all runs."""
    runs = sorted(runs, key=lambda r: r["records_per_sec"])
    m = dict(runs[len(runs) // 2])
    m["range"] = (runs[0]["records_per_sec"], runs[-1]["records_per_sec"])
    return m


def rng(r, scale=1.0, fmt="{:,.0f}"):
    lo, hi = r["range"]
    return f"{fmt.format(lo * scale)}–{fmt.format(hi * scale)}"


def paired_case(workdir, size, acks, producers, records):
    """Runs a broker case and its raw-sled baseline alternately (A B, B A, A B, ...).

    Both then meet the same state of the disk. That matters on this kind of machine: creating a
    file gets slower for minutes after many files were deleted (the filesystem skips recently
    freed inodes), and every run creates and deletes thousands of sled blob files, so whichever
    of the two ran later in a fixed order would be measured on a slower disk.
    """
    window = WINDOW if acks == "all" else None
    runs, bases = [], []
    for i in range(REPEATS):
        if i % 2 == 0:
            bases.append(baseline_once(workdir, size, records, window))
            runs.append(produce_once(workdir, size, acks, producers, records))
        else:
            runs.append(produce_once(workdir, size, acks, producers, records))
            bases.append(baseline_once(workdir, size, records, window))
    return median_of(runs), bases


def produce_once(workdir, size, acks, producers, records, extra=()):
    """One broker run. A latency run (`--e2e`) leaves its data directory for the caller to delete:
    deleting a run's few hundred megabytes makes this disk (online discard) trim them for seconds
    afterwards, and a flush of the next run that waits behind those trims (100-300 ms seen) is one
    stall in its p99, caused by the harness rather than the broker."""
    latency = "--e2e" in extra
    settle(workdir, 6 if latency else 2)
    b = Broker(workdir)
    try:
        cmd = ["bench", "produce", "--topic", "bench", "--partitions", str(max(1, producers)),
               "--records", str(records), "--record-size", str(size), "--acks", acks,
               "--producers", str(producers), *extra]
        # The disk is watched only where it is reported: the sampler costs a little CPU, and
        # throughput runs are compared with baseline runs that go without it.
        device = DeviceWatch(workdir) if latency else contextlib.nullcontext()
        with device:
            res, client_cpu, busy = measured(lambda: runnel(b.addr, *cmd))
        if latency:
            res["device"] = device.result()
        res["cpu"] = {"client": client_cpu, "broker": b.cpu_seconds(), "cores_busy": busy}
        res["command"] = "runnel " + " ".join(cmd)
        if not extra:
            c = runnel(b.addr, "bench", "consume", "--topic", "bench", "--records", str(records))
            res["consume"] = c
        return res
    finally:
        b.stop(keep_data=latency)


def baseline_once(workdir, size, records, window=None):
    settle(workdir)
    d = tempfile.mkdtemp(prefix="baseline-", dir=workdir)
    try:
        cmd = [os.path.join(BIN, "runnel-storage-bench"), "--data-dir", d, "--records", str(records),
               "--record-size", str(size)] + (["--window", str(window)] if window else [])
        out, cpu, busy = measured(lambda: subprocess.run(cmd, check=True, capture_output=True, text=True))
        res = json.loads(out.stdout.strip().splitlines()[-1])
        res["cpu"] = {"baseline": cpu, "cores_busy": busy}
        res["command"] = "runnel-storage-bench " + " ".join(cmd[2:]).replace(d, "DIR")
        return res
    finally:
        shutil.rmtree(d, ignore_errors=True)


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def restart_case(workdir, gigabytes):
    """A broker holding `gigabytes` GB of 1 KiB records (written with acks=1, one partition per
    GB), killed with `kill -9` right after the last produce, then started again: the time from
    the start to `/readyz`, and its memory then. Three kills and starts of the same data."""
    settle(workdir)
    b = Broker(workdir)
    runs = []
    try:
        records = int(gigabytes * 1e9 / 1024 * SCALE)
        partitions = max(1, int(gigabytes))
        cmd = ["bench", "produce", "--topic", "bench", "--partitions", str(partitions), "--records", str(records),
               "--record-size", "1024", "--acks", "1", "--producers", "1"]
        runnel(b.addr, *cmd)
        on_disk = dir_bytes(b.data)
        for _ in range(REPEATS):
            b.kill9()
            started = time.monotonic()
            b.start()
            while not b.ready():
                if time.monotonic() - started > 300:
                    raise SystemExit("the broker did not become ready within 300 s of a restart")
                time.sleep(0.01)
            took = time.monotonic() - started
            rss, hwm = b.memory_mb()
            runs.append({"seconds": took, "rss_mb": rss, "peak_rss_mb": hwm})
        return {"gigabytes": gigabytes, "records": records, "partitions": partitions, "on_disk": on_disk,
                "runs": runs, "command": "runnel " + " ".join(cmd)}
    finally:
        b.stop()


def checks_cost():
    """What the broker's checks of a produced batch cost on one core (CRC, header, every record)."""
    out = {}
    for size in (100, 1024):
        cmd = [os.path.join(BIN, "runnel-storage-bench"), "--data-dir", "/nonexistent", "--checks-only",
               "--records", str(int(20_000_000 * SCALE)), "--record-size", str(size)]
        runs = [json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                for _ in range(REPEATS)]
        r = median_of(runs)
        r["command"] = "runnel-storage-bench " + " ".join(cmd[2:])
        out[size] = r
    return out


def maintenance_case(workdir, kind):
    """Produce latency (acks=all, 100-byte records at 250,000/s, end to end) while the broker's
    log maintenance runs: `none` (a topic that is never cleaned), `retention` (retention.bytes of
    64 MB, checked every 200 ms: a retention pass deletes the oldest batches every few tenths of a
    second), or `compaction` (cleanup.policy=compact over 10,000 keys, cleaned every second)."""
    extra = {"none": [], "retention": ["--retention-check-interval-ms", "200"],
             "compaction": ["--cleaner-interval-ms", "1000"]}[kind]
    settle(workdir, 6)
    b = Broker(workdir, extra)
    try:
        config = {"none": [], "retention": ["--config", "retention.bytes=67108864"],
                  "compaction": ["--config", "cleanup.policy=compact", "--config", "min.cleanable.dirty.ratio=0.1"]}[kind]
        subprocess.run([os.path.join(BIN, "runnel"), "--bootstrap", b.addr, "topic", "create", "bench",
                        "--partitions", "1", *config], check=True, capture_output=True)
        rate = 250_000
        cmd = ["bench", "produce", "--topic", "bench", "--records", str(int(rate * 20 * SCALE)), "--record-size", "100",
               "--acks", "all", "--rate", str(rate), "--e2e"] + (["--keys", "10000"] if kind == "compaction" else [])
        res = runnel(b.addr, *cmd)
        res["command"] = "runnel " + " ".join(cmd)
        res["kind"] = kind
        log = open(os.path.join(workdir, "broker.log"), errors="replace").read()
        res["passes"] = {"retention": log.count("retention deleted batches"),
                         "compaction": log.count("compacted")}
        return res
    finally:
        b.stop()


GROUP_TOPIC = "groups"
GROUP_PARTITIONS = 6
GROUP_MEMBERS = 3


def group_case(workdir, records):
    """One broker holding `records` records of 100 B on 6 partitions (written by one producer
    without keys: its sticky partitioner spreads the batches over the partitions), read from the
    beginning by one plain consumer (`bench consume`) and by a new group of three members with
    automatic commit (`bench group`), taken in turn (plain, group; group, plain; ...) after one
    untimed read that warms the caches, as the produce cases are taken in turn with their
    baselines. Each group run also measures a handover: once the backlog is read, a producer
    writes a steady stream to every partition and the member owning the most partitions leaves
    cleanly. The runs share the broker and its data: a group run adds its stream's few thousand
    records, and every run reads the first `records` of the topic."""
    settle(workdir)
    b = Broker(workdir)
    try:
        fill = ["bench", "produce", "--topic", GROUP_TOPIC, "--partitions", str(GROUP_PARTITIONS),
                "--records", str(records), "--record-size", "100", "--acks", "all", "--producers", "1"]
        produced = runnel(b.addr, *fill)
        if produced["records"] != records or produced["failed"]:
            raise SystemExit(f"filling `{GROUP_TOPIC}`: {produced['records']} of {records} records acknowledged")
        offsets = runnel(b.addr, "offsets", GROUP_TOPIC)["partitions"]
        per_partition = [p["offset"] for p in sorted(offsets, key=lambda p: p["partition"])]
        if len(per_partition) != GROUP_PARTITIONS or min(per_partition) == 0 or sum(per_partition) != records:
            raise SystemExit(f"`{GROUP_TOPIC}` after the fill: records per partition {per_partition}, expected "
                             f"{records} over {GROUP_PARTITIONS} partitions, none empty")
        plain_cmd = ["bench", "consume", "--topic", GROUP_TOPIC, "--records", str(records)]
        group_cmd = ["bench", "group", "--topic", GROUP_TOPIC, "--records", str(records),
                     "--members", str(GROUP_MEMBERS)]

        def plain_once():
            settle(workdir, 1)
            r = runnel(b.addr, *plain_cmd)
            if not r["complete"]:
                raise SystemExit(f"bench consume read {r['records']} of {records} records")
            return r

        def group_once():
            settle(workdir, 1)
            return runnel(b.addr, *group_cmd)

        runnel(b.addr, *plain_cmd)  # warms the caches; not counted
        plain, group = [], []
        for i in range(REPEATS):
            if i % 2 == 0:
                plain.append(plain_once())
                group.append(group_once())
            else:
                group.append(group_once())
                plain.append(plain_once())
        p, g = median_of(plain), median_of(group)
        p["command"], g["command"] = "runnel " + " ".join(plain_cmd), "runnel " + " ".join(group_cmd)
        p["runs"], g["runs"] = plain, group
        return {"records": records, "per_partition": per_partition, "fill": "runnel " + " ".join(fill),
                "plain": p, "group": g}
    finally:
        b.stop()


def group_handover(groups):
    """The median handover time (ms) of the group runs, and all of them in run order."""
    times = [r["handover_ms"] for r in groups["group"]["runs"]]
    return sorted(times)[len(times) // 2], times


def group_ratio(groups):
    return groups["group"]["records_per_sec"] / groups["plain"]["records_per_sec"]


def group_section(groups):
    """The consumer-group section of docs/benchmarks.md, as lines."""
    g, p = groups["group"], groups["plain"]
    out = []
    out.append("\n## Consumer group: three members against one plain consumer, and a member's handover\n")
    out.append(f"One broker holds {groups['records']:,} records of 100 B on {GROUP_PARTITIONS} partitions, written by one "
               "producer without keys (its sticky partitioner spreads the batches: "
               + " / ".join(f"{n:,}" for n in groups["per_partition"]) + f" records per partition; `{groups['fill']}`). "
               f"They are read from the beginning by one plain consumer assigned every partition and by a new group of "
               f"{GROUP_MEMBERS} members committing automatically (every 5 s, the default; and when partitions move), "
               f"{REPEATS} run{'s' if REPEATS != 1 else ''} of each taken in turn (plain, group; group, plain; ...) after "
               "one untimed read that warms the caches. A run's clock starts at the assignment (plain) or at the first "
               "member's subscription (group; its members' connections are made before, as the plain consumer's is), so "
               "the group's time includes its members joining and the first rebalance; it stops at the poll that hands "
               "out the last record not handed out before: every record counts once over the members, and *duplicates* "
               "counts the records handed out more than once (in all runs, handovers included). The members are tasks of "
               "one `runnel` process, each a task with its own connections, fetchers and heartbeat; both readers run "
               f"on a runtime with one worker thread per core ({os.cpu_count()}). Medians, and the range over the runs; *records per member* "
               "is of the median run (a last poll may hand out a few more than the count).\n")
    out.append("| reader | records | records/s | range | MB/s | seconds | records per member | duplicates | command |")
    out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    out.append(f"| one plain consumer | {p['records']:,} | {p['records_per_sec']:,.0f} | {rng(p)} | {p['mb_per_sec']:.1f} | "
               f"{p['seconds']:.2f} | – | – | `{p['command']}` |")
    dups = sum(r["duplicates"] for r in g["runs"])
    out.append(f"| group of {g['members']} | {g['records']:,} | {g['records_per_sec']:,.0f} | {rng(g)} | {g['mb_per_sec']:.1f} | "
               f"{g['seconds']:.2f} | " + " / ".join(f"{n:,}" for n in g["member_records"]) +
               f" | {dups} | `{g['command']}` |")
    out.append(f"\nGroup over plain consumer: **{group_ratio(groups):.2f}** (median over median; target: at least 0.8).\n")
    median, times = group_handover(groups)
    out.append("*Handover*: after the backlog, each group run starts a producer writing 1,000 records/s of 100 B to the "
               "partitions in turn; once the new records of every partition reach the group and every member owns "
               "partitions, the member owning the most partitions leaves cleanly (`GroupConsumer::close`: it commits, "
               "then leaves the group). The time runs from the call of `close` until another member's poll has handed out "
               "a record of each of the partitions it owned: how long those partitions are consumed by no one. The "
               "others learn of their new partitions from the answer to the heartbeat each keeps waiting at the "
               "coordinator (`wait_ms`: answered as soon as its assignment changes), then fetch the committed offsets "
               "and the records.\n")
    out.append("| handover (median) | runs | partitions left (median run) | its close | command |")
    out.append("| --- | --- | --- | --- | --- |")
    mid = sorted(g["runs"], key=lambda r: r["handover_ms"])[len(times) // 2]
    out.append(f"| {median:.0f} ms | " + " / ".join(f"{t:.0f}" for t in times) + " ms | "
               f"{len(mid['handover_partitions'])} of {mid['partitions']} | {mid['close_ms']:.1f} ms | `{g['command']}` |")
    return out


REPLICATED_MIN_INSYNC = 2


def pid_cpu_seconds(pid):
    """CPU seconds (user + system, all threads) process `pid` has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loopback_cluster(workdir, *args):
    return [os.path.join(BIN, "runnel-loopback-cluster"), "--dir", workdir, *args]


def replicated_once(workdir, size, replicas, records):
    """One run on three fresh brokers (`runnel-loopback-cluster serve`, the integration tests'
    brokers and stand-in controller) with a one-partition topic of `replicas` copies, written by
    one producer with acks=all through the real CLI."""
    settle(workdir)
    spec = f"bench:1:{replicas}" + (f":{REPLICATED_MIN_INSYNC}" if replicas > 1 else "")
    serve = ["serve", "--topic", spec]
    log = open(os.path.join(workdir, "cluster.log"), "ab")
    proc = subprocess.Popen(loopback_cluster(workdir, *serve), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=log, text=True)
    try:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"runnel-loopback-cluster {' '.join(serve)} exited at start; see cluster.log")
        cluster = json.loads(line)
        pids = [b["pid"] for b in cluster["brokers"]]
        cpu0 = sum(pid_cpu_seconds(p) for p in pids)
        cmd = ["bench", "produce", "--topic", "bench", "--partitions", "1", "--records", str(records),
               "--record-size", str(size), "--acks", "all", "--producers", "1"]
        res, client_cpu, busy = measured(lambda: runnel(cluster["bootstrap"], *cmd))
        res["cpu"] = {"client": client_cpu, "brokers": sum(pid_cpu_seconds(p) for p in pids) - cpu0,
                      "cores_busy": busy}
        res["replicas"] = replicas
        res["command"] = (f"runnel-loopback-cluster {' '.join(serve)}; runnel --bootstrap BROKERS " + " ".join(cmd))
        proc.stdin.close()
        res["controller"] = json.loads(proc.stdout.readline())
        proc.wait(60)
        return res
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def replication_case(workdir, size, records):
    """Replication factor 1 against 3 on three brokers, acks=all, taken in turn (1, 3; 3, 1; ...)
    so that both meet the same state of the disk. Returns the two medians."""
    runs = {1: [], 3: []}
    for i in range(REPEATS):
        for replicas in ((1, 3) if i % 2 == 0 else (3, 1)):
            runs[replicas].append(replicated_once(workdir, size, replicas, records))
    out = {}
    for replicas, rs in runs.items():
        m = median_of(rs)
        m["runs"] = rs
        out[replicas] = m
    return out


def failover_case(workdir):
    """`runnel-loopback-cluster failover`, REPEATS times: the leader of each of three partitions
    killed in turn under acks=all load, and restarted."""
    runs = []
    for _ in range(REPEATS):
        settle(workdir)
        out = subprocess.run(loopback_cluster(workdir, "failover"), check=True, capture_output=True, text=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"runs": runs, "command": "runnel-loopback-cluster failover"}


def replication_ratio(rep, size):
    return rep[size][3]["records_per_sec"] / rep[size][1]["records_per_sec"]


def failover_times(fail):
    times = sorted(f["first_ack_ms"] for r in fail["runs"] for f in r["failovers"])
    return times[len(times) // 2], times[-1], times


def replication_section(rep, fail):
    """The replication section of docs/benchmarks.md, as lines."""
    out = []
    out.append("\n## Replication: three brokers, acks=all\n")
    out.append("Three release brokers on this machine (`runnel-loopback-cluster serve`: the brokers of the integration tests "
               "with their stand-in controller, which runs the operator's election code every 200 ms), each with its own "
               "data directory on the same disk, and one producer with acks=all writing one partition through the real "
               "CLI. With 3 replicas (`min.insync.replicas` "
               f"{REPLICATED_MIN_INSYNC}) the leader acknowledges a batch once every replica in the ISR has it on disk "
               "(its own group commit and each follower's, which fetches it over the `Replica` stream): every byte is "
               "written three times to one disk, by three processes sharing two cores with the client. Replication factor "
               "1 runs on the same three brokers, its partition on one of them. Fresh brokers for every run, "
               f"{REPEATS} runs of each taken in turn (1, 3; 3, 1; ...); medians, and the range over the runs. "
               "*CPU s / M records* is the client's and the three brokers' together; *ISR shrinks* counts what the "
               "controller saw during the runs (0: every replica stayed in sync throughout).\n")
    out.append("| record size | replicas | records/s | range | MB/s | ack p50 / p99 / p99.9 ms | CPU s / M records: client + brokers | cores busy | ISR shrinks (all runs) | command |")
    out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for size in sorted(rep):
        for replicas in (1, 3):
            r = rep[size][replicas]
            shrinks = sum(x["controller"]["isr_shrinks"] for x in r["runs"])
            out.append(f"| {size} B | {replicas} | {r['records_per_sec']:,.0f} | {rng(r)} | {r['mb_per_sec']:.1f} | "
                       f"{ms(r['ack_latency_ms'])} | {per_m(r['cpu']['client'], r['records']):.2f} + "
                       f"{per_m(r['cpu']['brokers'], r['records']):.2f} | {r['cpu']['cores_busy']:.2f} | {shrinks} | "
                       f"`{r['command']}` |")
    out.append("\n" + " ".join(f"{size}-byte records: replication factor 3 over 1 is **{replication_ratio(rep, size):.0%}**."
                                for size in sorted(rep)) + " (Target: at least 30%.)\n")
    median, worst, times = failover_times(fail)
    out.append("*Failover*: three brokers, a topic of 3 partitions with 3 replicas and `min.insync.replicas` 2, each "
               "partition led by another broker, three producers with acks=all. The leader of each partition in turn is "
               "killed with `kill -9`; the time runs from the kill to the first acknowledged produce (acks=all) on the new "
               "leader, elected by the stand-in controller; then the killed broker is restarted and the time until it is "
               f"back in every ISR is shown. {REPEATS} run{'s' if REPEATS != 1 else ''} of three failovers; after each run "
               "every acknowledged record is read back and checked (once, at its offset, in producer order).\n")
    out.append("| run | kill to first acknowledged produce on the new leader (ms) | restarted broker back in every ISR (ms) | acknowledged | lost | command |")
    out.append("| --- | --- | --- | --- | --- | --- |")
    for i, r in enumerate(fail["runs"], 1):
        out.append(f"| {i} | " + " / ".join(f"{f['first_ack_ms']:.0f}" for f in r["failovers"]) + " | "
                   + " / ".join(f"{f['rejoined_ms']:.0f}" for f in r["failovers"]) +
                   f" | {r['acknowledged']:,} | {r['lost']} | `{fail['command']}` |")
    out.append(f"\nFailover: median {median:.0f} ms, longest {worst:.0f} ms (target: under 3 s).\n")
    return out


def replication_checks(rep, fail):
    checks = []
    for size in sorted(rep):
        r1, r3 = rep[size][1], rep[size][3]
        checks.append((f"replication factor 3 vs 1, {size}-byte records, acks=all, three brokers (medians of runs taken in turn)",
                       f"{replication_ratio(rep, size):.0%} ({r3['records_per_sec']:,.0f} vs {r1['records_per_sec']:,.0f} records/s)",
                       "≥ 30%", replication_ratio(rep, size) >= 0.3))
    median, worst, _ = failover_times(fail)
    lost = sum(r["lost"] for r in fail["runs"])
    checks.append(("failover: kill -9 of a leader to the first acknowledged produce on its successor (longest)",
                   f"{worst:.0f} ms (median {median:.0f} ms), {lost} acknowledged records lost", "< 3 s, none lost",
                   worst < 3000 and lost == 0))
    return checks


def run_replication(workdir):
    """The replication cases: (by record size: {replicas: median}, failovers)."""
    n = {100: int(3_000_000 * SCALE), 1024: int(600_000 * SCALE)}
    rep = {}
    for size in (100, 1024):
        print(f"replication: {size}-byte records, acks=all, replication factor 1 and 3 on three brokers", file=sys.stderr)
        rep[size] = replication_case(workdir, size, n[size])
    print("replication: failover, kill -9 of each leader in turn", file=sys.stderr)
    return rep, failover_case(workdir)


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) // (1024 * 1024)
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), {mem} GiB RAM, {platform.system()} {platform.release()}"


def per_m(seconds, records):
    """CPU seconds per million records."""
    return seconds / max(1, records) * 1e6


def ms(p):
    return f"{p['p50']:.2f} / {p['p99']:.2f} / {p['p999']:.2f}"


def only_groups():
    """RUNNEL_BENCH_ONLY=groups: the consumer-group case alone, printed."""
    workdir = tempfile.mkdtemp(prefix="runnel-bench-")
    started = time.monotonic()
    try:
        spread_runs(workdir)
        groups = group_case(workdir, int(3_000_000 * SCALE))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n".join(group_section(groups)))
    print(f"(the case took {time.monotonic() - started:.0f} s)", file=sys.stderr)


def only_replication():
    """RUNNEL_BENCH_ONLY=replication: the replication cases alone, printed."""
    workdir = tempfile.mkdtemp(prefix="runnel-bench-")
    started = time.monotonic()
    try:
        spread_runs(workdir)
        rep, fail = run_replication(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n".join(replication_section(rep, fail)))
    print(f"(the cases took {time.monotonic() - started:.0f} s)", file=sys.stderr)


def main():
    if ONLY == "groups":
        return only_groups()
    if ONLY == "replication":
        return only_replication()
    if ONLY:
        raise SystemExit(f"RUNNEL_BENCH_ONLY={ONLY}: only `groups` and `replication` are known")
    workdir = tempfile.mkdtemp(prefix="runnel-bench-")
    spread = spread_runs(workdir)
    started = datetime.datetime.now(datetime.timezone.utc)
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    n = {100: int(3_000_000 * SCALE), 1024: int(600_000 * SCALE)}
    rows, base, base_w = [], {}, {}
    try:
        print("checks: the cost of the broker's produce checks", file=sys.stderr)
        check_cost = checks_cost()
        print("restart: 1 GB and 5 GB of 1 KiB records, kill -9, start, /readyz", file=sys.stderr)
        restarts = [restart_case(workdir, gb) for gb in (1, 5)]
        maintenance = []
        for _ in range(REPEATS):
            for kind in ("none", "retention", "compaction"):
                print(f"maintenance: produce latency with {kind}", file=sys.stderr)
                open(os.path.join(workdir, "broker.log"), "w").close()
                maintenance.append(maintenance_case(workdir, kind))
        # End-to-end latency at half of the target rates (500k rec/s of 100 B; 150 MB/s of 1 KiB),
        # first: after tens of gigabytes written and deleted by the throughput runs, this disk
        # still discards freed blocks in the background, and sled's own blob deletions then wait
        # for the device (synchronous discards, 12-55 ms seen with perf sched), which a p99 shows.
        e2e = []
        latency_dir = tempfile.mkdtemp(prefix="latency-", dir=workdir)
        spread_runs(latency_dir)
        for size, rate in ((100, 250_000), (1024, 73_000)):
            print(f"end-to-end: {size}-byte records at {rate} records/s", file=sys.stderr)
            for _ in range(REPEATS):
                res = produce_once(latency_dir, size, "all", 1, rate * (2 if QUICK else 10), ("--rate", str(rate), "--e2e"))
                e2e.append((size, rate, res))
        shutil.rmtree(latency_dir, ignore_errors=True)
        for size in (100, 1024):
            pooled = {"1": [], "all": []}
            for acks in ("1", "all"):
                for producers in (1, 4):
                    print(f"broker: {size}-byte records, acks={acks}, {producers} producer(s), with its baseline",
                          file=sys.stderr)
                    res, bases = paired_case(workdir, size, acks, producers, n[size])
                    res["baseline"] = median_of(bases)
                    pooled[acks] += bases
                    rows.append((size, acks, producers, res))
            base[size] = median_of(pooled["1"])
            base_w[size] = median_of(pooled["all"])
        # Last: reads, after the produce cases have written (and deleted) what they will.
        print(f"consumer group: {GROUP_MEMBERS} members vs one plain consumer, and a handover", file=sys.stderr)
        groups = group_case(workdir, int(3_000_000 * SCALE))
        rep, fail = run_replication(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    one_all = {size: r for size, acks, p, r in rows if acks == "all" and p == 1}
    out = []
    out.append("# Benchmarks\n")
    out.append(f"Written by `make bench` (`scripts/bench.py`) on {started:%Y-%m-%d %H:%M} UTC, commit `{rev}`.\n")
    out.append(f"Machine: {machine()}. Broker and client on the same machine, over loopback; data on the same disk as the baseline's.\n")
    out.append("Each run (broker or baseline) gets a new data directory of its own, " +
               ("in a directory marked `chattr +T`, so that ext4 places each run's files in a block group of its own "
                "and no run meets the inodes that earlier runs freed (see `spread_runs` in `scripts/bench.py`)."
                if spread else "but `chattr +T` failed here: runs share block groups and later runs may be slower.") + "\n")
    out.append("Every case starts a fresh `runnel-broker --standalone` (release build) with an empty data directory. "
               "Batches of 64 KiB, linger 5 ms, no compression, idempotent producers. Latencies are per record, "
               "from `send` to acknowledgement (ack) or to the consumer (end-to-end), in ms.\n")
    out.append("## Raw-sled baseline (`runnel-storage-bench`)\n")
    out.append("The same 64 KiB RecordBatch v2 batches written straight into one sled tree by one thread, with a "
               "flusher thread group-committing continuously (sled's flush, then an fsync of each file it wrote), as the broker does. "
               f"*acks=all*: the writer never has more than {WINDOW} batches that are not yet durable, as a producer "
               f"with `max_in_flight = {WINDOW}` (the client's default); the broker's acks=all rows are compared with it. "
               "*raw*: the writer never waits; the acks=1 rows are compared with it.\n")
    out.append(f"Every broker case below is measured together with its own {REPEATS} baseline runs, taken in turn with "
               "its runs (baseline, broker; broker, baseline; ...), so that both meet the same state of the disk; its "
               "*vs baseline* is its median over the median of those. This table pools all baseline runs of a record "
               "size and policy: medians, and the range over all runs.\n")
    out.append("*CPU s / M records* is the CPU time (user + system, all threads) of the baseline process per million "
               "records in the median run; *cores busy* is how many of the machine's cores were busy on average during "
               "that run, counting every process and the kernel's own threads (writeback).\n")
    out.append("| record size | policy | records | records/s | range | MB/s | CPU s / M records | cores busy | command |")
    out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for size in base:
        for policy, r in (("acks=all", base_w[size]), ("raw", base[size])):
            out.append(f"| {size} B | {policy} | {r['records']:,} | {r['records_per_sec']:,.0f} | {rng(r)} | {r['mb_per_sec']:.1f} | "
                       f"{per_m(r['cpu']['baseline'], r['records']):.2f} | {r['cpu']['cores_busy']:.2f} | `{r['command']}` |")
    out.append("\n## Broker: produce (and consume back)\n")
    out.append(f"Medians of {REPEATS} runs (the run with the median records/s; its latencies and CPU); the range is over all runs. "
               "*CPU s / M records* is the CPU time of the producing client and of the broker per million records "
               "(the broker's up to the end of the produce run, before the consume); *cores busy* as above.\n")
    out.append("| record size | acks | producers | records/s | range | MB/s | its baseline records/s | vs baseline | ack p50 / p99 / p99.9 ms | CPU s / M records: client + broker | cores busy | consume records/s | command |")
    out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for size, acks, producers, r in rows:
        ratio = r["records_per_sec"] / r["baseline"]["records_per_sec"]
        c = r.get("consume", {})
        out.append(f"| {size} B | {acks} | {producers} | {r['records_per_sec']:,.0f} | {rng(r)} | {r['mb_per_sec']:.1f} | "
                   f"{r['baseline']['records_per_sec']:,.0f} | {ratio:.0%} | {ms(r['ack_latency_ms'])} | "
                   f"{per_m(r['cpu']['client'], r['records']):.2f} + {per_m(r['cpu']['broker'], r['records']):.2f} | "
                   f"{r['cpu']['cores_busy']:.2f} | {c.get('records_per_sec', 0):,.0f} | `{r['command']}` |")
    out.append("\n## End-to-end latency at half the target rate (acks=all, one producer)\n")
    out.append(f"{REPEATS} run{'s' if REPEATS != 1 else ''} of each; the target is met when the median of their e2e p99s is below 20 ms, and every run "
               "is shown. While each run goes, the harness watches the disk's own counters (`/sys/dev/block/*/stat`, "
               "every 10 ms): *longest device stall* is the longest time the device held requests in flight without "
               "completing any. Every flush waits through such a stall, and one stall of about 120 ms holds more than "
               "1% of a 10-second run's records back by over 20 ms, which alone puts its p99 above 20 ms. *device "
               "written / discarded* is what the device was asked to write and to trim during the run (sled "
               "rewrites nodes as they fill, and deletes the blob files of those it rewrote; this disk trims what "
               "is deleted). These run before the throughput "
               "cases: sled deletes a blob file for every large node it rewrites, and on this disk (mounted with online "
               "discard) a deletion waits for the device, which is slower while it still discards what earlier runs "
               "freed. For the same reason each latency run keeps its data directory until all of them have run: "
               "deleting a run's few hundred megabytes keeps the device trimming for seconds, and the next run's "
               "flushes would wait behind those trims (100-300 ms stalls seen), a cost of the harness, not of the "
               "broker.\n")
    out.append("| record size | rate (records/s) | achieved records/s | ack p50 / p99 / p99.9 ms | end-to-end p50 / p99 / p99.9 ms | longest device stall | device written / discarded | command |")
    out.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for size, rate, r in e2e:
        d = r.get("device")
        stall = f"{d['longest_stall_ms']:.0f} ms" if d else "n/a"
        moved = f"{d['written_mb']:,.0f} / {d['discarded_mb']:,.0f} MB" if d else "n/a"
        out.append(f"| {size} B | {rate:,} | {r['records_per_sec']:,.0f} | {ms(r['ack_latency_ms'])} | "
                   f"{ms(r['e2e_latency_ms'])} | {stall} | {moved} | `{r['command']}` |")
    out.append("\n## Where the CPU goes (acks=all, one producer)\n")
    out.append("The baseline's work (sled's inserts, its io threads, flushes) is all the broker must do too; "
               "the broker run adds the producing client and the broker's gRPC path, on the same cores. "
               "Medians of the runs above.\n")
    out.append("| record size | baseline CPU s / M records | its cores busy | client CPU s / M records | broker CPU s / M records | broker run cores busy | client + broker over baseline CPU |")
    out.append("| --- | --- | --- | --- | --- | --- | --- |")
    for size in (100, 1024):
        r, b = one_all[size], one_all[size]["baseline"]
        bc, cc, kc = per_m(b["cpu"]["baseline"], b["records"]), per_m(r["cpu"]["client"], r["records"]), per_m(r["cpu"]["broker"], r["records"])
        out.append(f"| {size} B | {bc:.2f} | {b['cpu']['cores_busy']:.2f} | {cc:.2f} | {kc:.2f} | {r['cpu']['cores_busy']:.2f} | {(cc + kc) / bc:.2f}× |")
    out.append("\n## What the produce checks cost\n")
    out.append("Before it stores a batch the broker checks its CRC, its header and every record's framing "
               "(`runnel_broker::log::check_batch`, as every produce runs it). Timed alone on one core over batches "
               "like the producers' (64 KiB, uncompressed), median of the runs; *share of one core at the "
               "throughput above* is what the checks take of one core at the acks=all, one-producer rate of the "
               "table above.\n")
    out.append("| record size | records checked/s (one core) | ns per record | share of one core at the throughput above | command |")
    out.append("| --- | --- | --- | --- | --- |")
    for size, c in check_cost.items():
        share = one_all[size]["records_per_sec"] / c["records_per_sec"]
        out.append(f"| {size} B | {c['records_per_sec']:,.0f} | {c['ns_per_record']:.1f} | {share:.1%} | `{c['command']}` |")
    out.append("\n## Restart: kill -9, start, `/readyz`\n")
    out.append("A broker holding the data below (1 KiB records written with acks=1 as fast as it takes them, one "
               "partition per GB) is killed with `kill -9` right after the last produce and started again on the same "
               f"data, {REPEATS} times: the time from the start to `/readyz` answering 200, and the broker's memory "
               "then (*peak* is its high-water mark, recovery included). A restart reads each partition's index and "
               "only the batches stored since its last checkpoint (taken once the partitions together hold 64 MiB beyond their checkpoints, and every 10 s), so "
               "the time follows what was written since the checkpoint, not the size of the log.\n")
    out.append("| data | records | on disk | start to /readyz (runs) | RSS / peak RSS at ready (median run) | command |")
    out.append("| --- | --- | --- | --- | --- | --- |")
    for r in restarts:
        runs = sorted(r["runs"], key=lambda x: x["seconds"])
        mid = runs[len(runs) // 2]
        out.append(f"| {r['gigabytes']} GB in {r['partitions']} partition(s) | {r['records']:,} | {r['on_disk'] / 1e9:.1f} GB | "
                   + " / ".join(f"{x['seconds']:.2f} s" for x in r["runs"]) +
                   f" | {mid['rss_mb']:.0f} / {mid['peak_rss_mb']:.0f} MB | `{r['command']}` |")
    out.append("\n## Produce latency while retention or compaction runs\n")
    out.append("acks=all, one producer of 100-byte records at 250,000/s for 20 s, end to end through an in-process "
               "consumer; the same with no log maintenance due, with retention deleting batches every few tenths of a "
               "second (retention.bytes of 64 MB, checked every 200 ms), and with compaction over 10,000 keys (cleaned "
               "every second once a tenth of the log is dirty). Maintenance runs off the produce path: the partition's "
               "lock is held only to update what readers see. *passes* counts the retention or compaction passes "
               "logged during the run.\n")
    out.append("| maintenance | achieved records/s | ack p50 / p99 / p99.9 ms | end-to-end p50 / p99 / p99.9 ms | passes | command |")
    out.append("| --- | --- | --- | --- | --- | --- |")
    for r in maintenance:
        passes = r["passes"]["retention"] if r["kind"] == "retention" else r["passes"]["compaction"] if r["kind"] == "compaction" else 0
        out.append(f"| {r['kind']} | {r['records_per_sec']:,.0f} | {ms(r['ack_latency_ms'])} | {ms(r['e2e_latency_ms'])} | "
                   f"{passes} | `{r['command']}` |")
    out += group_section(groups)
    out += replication_section(rep, fail)
    out.append("\n## Targets (issues: broker data plane, partition logs, consumer groups, replication)\n")
    checks = [
        ("100-byte records, one producer, acks=all (median)", f"{one_all[100]['records_per_sec']:,.0f} records/s (runs: {rng(one_all[100])})",
         "≥ 500,000 records/s", one_all[100]["records_per_sec"] >= 500_000),
        ("1 KiB records, one producer, acks=all (median)", f"{one_all[1024]['mb_per_sec']:.1f} MB/s (runs: {rng(one_all[1024], 1024 / 1e6, '{:.1f}')})",
         "≥ 150 MB/s", one_all[1024]["mb_per_sec"] >= 150),
    ]
    for size, rate in sorted({(size, rate) for size, rate, _ in e2e}):
        p99s = [r["e2e_latency_ms"]["p99"] for s_, rt, r in e2e if (s_, rt) == (size, rate)]
        median = sorted(p99s)[len(p99s) // 2]
        checks.append((f"end-to-end p99, {size}-byte records at {rate:,}/s (median of the runs)",
                       f"{median:.2f} ms (runs: " + " / ".join(f"{p:.2f}" for p in p99s) + " ms)",
                       "< 20 ms", median < 20))
    for size in (100, 1024):
        r = one_all[size]
        ratio = r["records_per_sec"] / r["baseline"]["records_per_sec"]
        checks.append((f"broker vs raw sled, {size}-byte records, acks=all (same in-flight window)",
                       f"{ratio:.0%} ({r['records_per_sec']:,.0f} vs {r['baseline']['records_per_sec']:,.0f} records/s, "
                       f"medians of runs taken in turn)", "≥ 60%", ratio >= 0.6))
    five = [r for r in restarts if r["gigabytes"] == 5][0]
    times = sorted(x["seconds"] for x in five["runs"])
    peak = max(x["peak_rss_mb"] for x in five["runs"])
    checks_rows = [("restart of a broker holding 5 GB of 1 KiB records (kill -9, start, /readyz; median)",
                    f"{times[len(times) // 2]:.2f} s (runs: " + " / ".join(f"{x['seconds']:.2f}" for x in five["runs"]) + " s)",
                    "< 5 s", times[len(times) // 2] < 5),
                   ("its memory at ready (highest peak RSS of the runs)", f"{peak:.0f} MB", "< 300 MB", peak < 300)]
    share = one_all[100]["records_per_sec"] / check_cost[100]["records_per_sec"]
    checks_rows.append(("cost of checking every record, uncompressed 100-byte records (share of one core at the acks=all rate)",
                        f"{share:.1%}", "< 10% of throughput", share < 0.10))
    checks += checks_rows
    ratio = group_ratio(groups)
    checks.append((f"group of {GROUP_MEMBERS} consumers vs one plain consumer, {groups['records']:,} × 100 B on "
                   f"{GROUP_PARTITIONS} partitions, automatic commit (medians of runs taken in turn)",
                   f"{ratio:.2f} ({groups['group']['records_per_sec']:,.0f} vs {groups['plain']['records_per_sec']:,.0f} records/s)",
                   "≥ 0.8", ratio >= 0.8))
    checks += replication_checks(rep, fail)
    out.append("| what | measured | target | met |")
    out.append("| --- | --- | --- | --- |")
    for what, got, target, ok in checks:
        out.append(f"| {what} | {got} | {target} | {'yes' if ok else 'no'} |")
    if QUICK:
        out.append("\n(RUNNEL_BENCH_QUICK=1: shortened runs.)")
    path = os.path.join(ROOT, "docs", "benchmarks.md")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # `make bench-peers` writes its own section of this file: it is kept, at the end.
    peers = ""
    if os.path.exists(path):
        old = open(path).read()
        begin, end = "<!-- make bench-peers: begin -->", "<!-- make bench-peers: end -->"
        if begin in old and end in old:
            peers = "\n" + old[old.index(begin):old.index(end) + len(end)] + "\n"
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n" + peers)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
