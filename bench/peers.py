#!/usr/bin/env python3
"""`make bench-peers`: Runnel next to Apache Kafka and NATS JetStream on this machine, on loopback,
one system at a time, the same workloads, runs interleaved (A, B, C, A, B, C, ...) so that all meet
the same state of the machine. Writes its section of docs/benchmarks.md (between the markers
below) and the charts in docs/img/.

RUNNEL_PEERS_SMOKE=1: one tiny run of each system's setup (start, produce, consume, a three-node
cluster, stop) and the report and charts written to RUNNEL_PEERS_OUT (a directory), not docs/:
what `make test` runs so that the harness cannot rot.
"""
import datetime
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import systems
from systems import Kafka, Nats, Runnel, core, measure

ROOT = systems.ROOT
SMOKE = os.environ.get("RUNNEL_PEERS_SMOKE") == "1"
OUT = os.environ.get("RUNNEL_PEERS_OUT")
REPEATS = 1 if SMOKE else int(os.environ.get("RUNNEL_PEERS_REPEATS", "3"))
BEGIN = "<!-- make bench-peers: begin -->"
END = "<!-- make bench-peers: end -->"

# Records per run. NATS with `sync_interval: always` fsyncs every message (~3,000/s here): it gets
# fewer records, said in its rows.
RECORDS = {100: 1_000_000, 1024: 250_000}
SLOW_RECORDS = {100: 20_000, 1024: 10_000}
# The fixed rate of the latency rows is half of Kafka's acks=all peak in the same run (its median
# with one producer; so that no system is measured saturated), 10 s of records; Kafka's first 10%
# are its warm-up (`--warmup-records`).
FIXED_RATE = {100: None, 1024: None}
ONE_AT_A_TIME = 10_000
if SMOKE:
    RECORDS = {100: 20_000, 1024: 5_000}
    SLOW_RECORDS = {100: 500, 1024: 200}
    FIXED_RATE = {100: 10_000}
    ONE_AT_A_TIME = 200


class Config:
    """One system in one setting: a label, how to start it, what its acknowledgement means."""

    def __init__(self, label, start, durability, slow=False):
        self.label, self.start, self.durability, self.slow = label, start, durability, slow


KAFKA = Config("Kafka", lambda wd: Kafka(wd),
               "page cache: acknowledged once in the leader's log, fsync left to the OS (Kafka's default)")
KAFKA_FSYNC = Config("Kafka flush.messages=1", lambda wd: Kafka(wd, flush_messages=1),
                     "fsync of every produce batch before the acknowledgement")
NATS = Config("NATS", lambda wd: Nats(wd),
              "acknowledged once stored in the stream's file, fsync every 2 min (NATS's default)")
NATS_SYNC = Config("NATS sync always", lambda wd: Nats(wd, sync_always=True),
                   "fsync of every message before the acknowledgement", slow=True)
RUNNEL = Config("Runnel", lambda wd: Runnel(wd),
                "acks=all: group-committed fsync before the acknowledgement; acks=1: in the leader's log")


def run_case(workdir, config, case):
    """One run: a fresh system, the case's topic, the case, the system stopped."""
    core.settle(workdir, 1)
    system = config.start(workdir)
    try:
        return case(system)
    finally:
        system.close()


def median(runs):
    runs = sorted(runs, key=lambda r: r["records_per_sec"])
    m = dict(runs[len(runs) // 2])
    m["range"] = (runs[0]["records_per_sec"], runs[-1]["records_per_sec"])
    m["runs"] = runs
    return m


def interleaved(workdir, what, configs, case):
    """Each config's `case` REPEATS times, taken in turn (A, B, C, A, B, C, ...); their medians."""
    runs = {c.label: [] for c in configs}
    for i in range(REPEATS):
        for c in configs:
            print(f"{what}: {c.label} (run {i + 1} of {REPEATS})", file=sys.stderr)
            runs[c.label].append(run_case(workdir, c, lambda s, c=c: case(s, c)))
    return {label: median(rs) for label, rs in runs.items()}


def produce_case(size, acks, producers, consume):
    def case(system, config):
        records = (SLOW_RECORDS if config.slow else RECORDS)[size]
        system.create_topic("bench", producers)
        r = measure(system, lambda s: s.produce("bench", records, size, acks, producers))
        if consume and not config.slow:
            r["consume"] = measure(system, lambda s: s.consume("bench", records, size))
        return r
    return case


def fixed_rate_case(size):
    def case(system, config):
        rate = FIXED_RATE[size]
        records = rate * (1 if SMOKE else 10)
        system.create_topic("bench", 1)
        return measure(system, lambda s: s.produce("bench", records, size, "all", 1, rate=rate,
                                                   warmup=records // 10))
    return case


def one_case(system, config):
    system.create_topic("bench", 1)
    return measure(system, lambda s: s.one_at_a_time("bench", ONE_AT_A_TIME, 100))


def replicated_case(size):
    def case(system, config):
        system.create_topic("bench", 1, replicas=3, min_insync=2)
        return measure(system, lambda s: s.produce("bench", RECORDS[size], size, "all", 1))
    return case


KAFKA3 = Config("Kafka, 3 brokers", lambda wd: Kafka(wd, brokers=3),
                "acks=all with min.insync.replicas=2: in three brokers' page caches, no fsync")
RUNNEL3 = Config("Runnel, 3 brokers", lambda wd: Runnel(wd, brokers=3, topic=("bench", 1, 3, 2)),
                 "acks=all with min.insync.replicas=2: fsync'd on the leader and the in-sync followers")


def run_all(workdir):
    res = {"produce": [], "fixed_rate": [], "one_at_a_time": None, "replicated": []}
    sizes = (100,) if SMOKE else (100, 1024)
    for size in sizes:
        for producers in ((1,) if SMOKE else (1, 4)):
            for acks in ("1", "all"):
                configs = [KAFKA, RUNNEL] if acks == "1" else [KAFKA, KAFKA_FSYNC, NATS, NATS_SYNC, RUNNEL]
                if SMOKE and acks == "1":
                    continue
                what = f"produce {size} B, {producers} producer(s), acks={acks}"
                consume = producers == 1 and acks == "all"
                medians = interleaved(workdir, what, configs, produce_case(size, acks, producers, consume))
                res["produce"].append({"size": size, "producers": producers, "acks": acks, "systems": medians})
    for size in FIXED_RATE:
        if FIXED_RATE[size] is None:
            peak = next(w["systems"]["Kafka"]["records_per_sec"] for w in res["produce"]
                        if w["size"] == size and w["producers"] == 1 and w["acks"] == "all")
            FIXED_RATE[size] = max(1000, int(round(peak / 2, -3)))
        medians = interleaved(workdir, f"fixed rate {size} B", [KAFKA, KAFKA_FSYNC, NATS, RUNNEL],
                              fixed_rate_case(size))
        res["fixed_rate"].append({"size": size, "rate": FIXED_RATE[size], "systems": medians})
    res["one_at_a_time"] = interleaved(workdir, "one record at a time", [KAFKA, NATS_SYNC, RUNNEL], one_case)
    for size in sizes:
        medians = interleaved(workdir, f"replication factor 3, {size} B", [KAFKA3, RUNNEL3], replicated_case(size))
        res["replicated"].append({"size": size, "systems": medians})
    return res


# ------------------------------------------------------------------------------------------ report

def per_m(seconds, records):
    return seconds / max(1, records) * 1e6


def lat(r):
    p = r.get("latency_ms")
    if not p:
        return "—"
    return f"{p['p50']:.2f} / {p['p99']:.2f} / {p['p999']:.2f}"


def spread(r):
    lo, hi = r["range"]
    return f"{lo:,.0f}–{hi:,.0f}"


def row(label, r, runnel=None):
    ratio = f"{runnel['records_per_sec'] / r['records_per_sec']:.2f}×" if runnel and r is not runnel else ""
    cpu = per_m(r["client_cpu"] + r["server_cpu"], r["records"])
    return (f"| {label} | {r['records']:,} | {r['records_per_sec']:,.0f} | {spread(r)} | {r['mb_per_sec']:.1f} | "
            f"{lat(r)} | {cpu:.2f} | {r['peak_rss_mb']:.0f} | {ratio} | `{r['command']}` |")


HEADER = ("| system | records | records/s (median) | range | MB/s | latency p50 / p99 / p99.9 ms | "
          "CPU s / M records | peak RSS MB | Runnel / it | command |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def durability(configs):
    return "\n".join(f"- *{c.label}*: {c.durability}." for c in configs)


def versions():
    nats = subprocess.run([os.path.join(systems.NATS_BIN, "nats-server"), "--version"], capture_output=True,
                          text=True).stdout.strip()
    cli = subprocess.run([os.path.join(systems.NATS_BIN, "nats"), "--version"], capture_output=True,
                         text=True).stdout.strip()
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    return f"Apache Kafka {systems.KAFKA_VERSION} ({java}), {nats}, nats CLI {cli}"


def report(res, started, rev, took, load, charts):
    out = [BEGIN, "", "## Against Apache Kafka and NATS JetStream (`make bench-peers`)", ""]
    out.append(f"Written by `make bench-peers` (`bench/peers.py`) on {started:%Y-%m-%d %H:%M} UTC, commit `{rev}`, "
               f"in {took / 60:.0f} min. Machine: {core.machine()}; load average before / after: {load[0]} / {load[1]}. "
               f"{versions()}. Everything on loopback, one system at a time, each run on a freshly started "
               f"system with an empty data directory on the same disk; {REPEATS} run{'s' if REPEATS != 1 else ''} of each, taken in turn "
               "(A, B, C, A, B, C, ...); the median run is shown (its latencies, CPU and memory) with the range of "
               "all runs.")
    out.append("")
    out.append("How each tool measures: *records/s* is records over the time from the first send to the last "
               "acknowledgement (`ProducerPerformance`: per JVM, one JVM per producer, summed; `nats bench`: its "
               "aggregate; `runnel bench`: all producers together). *latency* is per record from send to "
               "acknowledgement for Kafka (`ProducerPerformance`, whole milliseconds; with several producers the "
               "slowest JVM's) and Runnel (`runnel bench`, microseconds), and per batch of 500 asynchronous "
               "publishes for NATS (`nats bench js pub async`), so NATS's figures are not per message. *CPU s / M "
               "records* counts the servers and the clients (JVM start included for Kafka's tools). *peak RSS* is "
               "the servers' high-water mark (VmHWM), summed over brokers. Runnel's producers batch 64 KiB with "
               "5 ms linger; Kafka's tools run with Kafka's producer defaults (16 KiB batches, 5 ms linger).")
    out.append("")
    out.append("What an acknowledgement means in each row:")
    out.append("")
    out.append(durability([KAFKA, KAFKA_FSYNC, NATS, NATS_SYNC, RUNNEL]))
    out.append("")
    out.append("NATS has one kind of acknowledgement (after the stream stored the message), so it appears only in "
               "the acks=all rows; a NATS stream is one ordered log, so four NATS producers write to one stream "
               "where Kafka and Runnel write to four partitions. *NATS sync always* runs "
               f"{SLOW_RECORDS[100]:,} (100 B) and {SLOW_RECORDS.get(1024, 0):,} (1 KiB) records: at an fsync per "
               "message it would take minutes per run.")
    out.append("")
    for charts_line in charts:
        out.append(charts_line)
    out.append("")
    out.append("### Produce")
    for w in res["produce"]:
        s = w["systems"]
        out.append("")
        out.append(f"**{w['size']} B records, {w['producers']} producer(s), acks={w['acks']}**")
        out.append("")
        out.append(HEADER)
        for label, r in s.items():
            out.append(row(label, r, s.get("Runnel")))
    out.append("")
    out.append("### Consume a backlog")
    out.append("")
    out.append("The records of the one-producer acks=all run, read from the beginning by one consumer right "
               "after they were written (Kafka: `ConsumerPerformance`'s fetch rate, which leaves out its group "
               "join; NATS: a durable consumer with `nats bench js consume`; Runnel: `runnel bench consume`).")
    out.append("")
    out.append("| record size | system | records | records/s (median) | range | MB/s | CPU s / M records | Runnel / it | command |")
    out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for w in res["produce"]:
        if not (w["producers"] == 1 and w["acks"] == "all"):
            continue
        cons = {label: median_consume(r) for label, r in w["systems"].items() if "consume" in r}
        for label, c in cons.items():
            ratio = f"{cons['Runnel']['records_per_sec'] / c['records_per_sec']:.2f}×" if label != "Runnel" else ""
            out.append(f"| {w['size']} B | {label} | {c['records']:,} | {c['records_per_sec']:,.0f} | {spread(c)} | "
                       f"{c['mb_per_sec']:.1f} | {per_m(c['client_cpu'] + c['server_cpu'], c['records']):.2f} | "
                       f"{ratio} | `{c['command']}` |")
    out.append("")
    out.append("### Latency at a fixed rate (acks=all, one producer)")
    out.append("")
    out.append("Each system paced at the same rate for 10 s: half of Kafka's median acks=all rate with one producer "
               "in the produce rows above, so that Kafka is measured below its peak. Kafka's latencies leave out its first 10% of records "
               "(`--warmup-records`, the JVM's warm-up); Runnel's and NATS's count every record. *end to end* is "
               "Runnel's in-process consumer (send to consumed); the others report send to acknowledgement only.")
    out.append("")
    out.append("| record size | rate | system | achieved records/s | ack latency p50 / p99 / p99.9 ms | end to end p50 / p99 / p99.9 ms | CPU s / M records | Runnel p99 / its p99 | command |")
    out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for w in res["fixed_rate"]:
        s = w["systems"]
        for label, r in s.items():
            e2e = lat({"latency_ms": r.get("e2e_latency_ms")})
            ratio = (f"{s['Runnel']['latency_ms']['p99'] / r['latency_ms']['p99']:.2f}"
                     if label != "Runnel" and r.get("latency_ms") and r["latency_ms"]["p99"] > 0 else "")
            out.append(f"| {w['size']} B | {w['rate']:,}/s | {label} | {r['records_per_sec']:,.0f} | {lat(r)} | {e2e} | "
                       f"{per_m(r['client_cpu'] + r['server_cpu'], r['records']):.2f} | {ratio} | `{r['command']}` |")
    out.append("")
    out.append("### One record at a time (100 B, acks=all)")
    out.append("")
    out.append("Kafka's `EndToEndLatency` produces a record and consumes it before the next (end to end; its "
               "percentiles are whole milliseconds); "
               "`nats bench js pub sync` publishes one message and waits for its acknowledgement (with "
               "`sync_interval: always`, an fsync each); Runnel has no one-at-a-time mode: 1,000 records/s with "
               "linger 0 leaves each record alone in its batch, measured end to end, each acknowledged after its fsync.")
    out.append("")
    out.append("| system | records | latency p50 / p99 / p99.9 ms | command |")
    out.append("| --- | --- | --- | --- |")
    for label, r in res["one_at_a_time"].items():
        out.append(f"| {label} | {r['records']:,} | {lat(r)} | `{r['command']}` |")
    out.append("")
    out.append("### Replication factor 3 (three brokers of each on this machine, acks=all, one producer)")
    out.append("")
    out.append(durability([KAFKA3, RUNNEL3]))
    out.append("")
    for w in res["replicated"]:
        s = w["systems"]
        out.append(f"**{w['size']} B records**")
        out.append("")
        out.append(HEADER)
        for label, r in s.items():
            out.append(row(label, r, s.get("Runnel, 3 brokers")))
        out.append("")
    out += targets(res)
    out.append("")
    out.append(END)
    return "\n".join(out) + "\n"


def median_consume(r):
    runs = sorted((x["consume"] for x in r["runs"] if "consume" in x), key=lambda c: c["records_per_sec"])
    m = dict(runs[len(runs) // 2])
    m["range"] = (runs[0]["records_per_sec"], runs[-1]["records_per_sec"])
    return m


def targets(res):
    out = ["### Targets", "", "| what | measured | target | met |", "| --- | --- | --- | --- |"]
    for w in res["produce"]:
        if w["acks"] != "all":
            continue
        k, r = w["systems"]["Kafka"], w["systems"]["Runnel"]
        ratio = r["records_per_sec"] / k["records_per_sec"]
        out.append(f"| produce {w['size']} B, {w['producers']} producer(s), acks=all: Runnel / Kafka | {ratio:.2f}× "
                   f"({r['records_per_sec']:,.0f} vs {k['records_per_sec']:,.0f} records/s) | ≥ 3× | "
                   f"{'yes' if ratio >= 3 else 'no'} |")
    for w in res["produce"]:
        if w["producers"] == 1 and w["acks"] == "all":
            k, r = median_consume(w["systems"]["Kafka"]), median_consume(w["systems"]["Runnel"])
            ratio = r["records_per_sec"] / k["records_per_sec"]
            out.append(f"| consume {w['size']} B backlog: Runnel / Kafka | {ratio:.2f}× | ≥ 3× | {'yes' if ratio >= 3 else 'no'} |")
    for w in res["fixed_rate"]:
        k, r = w["systems"]["Kafka"]["latency_ms"]["p99"], w["systems"]["Runnel"]["latency_ms"]["p99"]
        out.append(f"| ack p99 at {w['rate']:,}/s of {w['size']} B: Runnel vs Kafka | {r:.2f} ms vs {k:.2f} ms | "
                   f"≤ half of Kafka's | {'yes' if r <= k / 2 else 'no'} |")
    for w in res["replicated"]:
        k, r = w["systems"]["Kafka, 3 brokers"], w["systems"]["Runnel, 3 brokers"]
        ratio = r["records_per_sec"] / k["records_per_sec"]
        out.append(f"| replication factor 3, {w['size']} B: Runnel / Kafka | {ratio:.2f}× | > 1× | "
                   f"{'yes' if ratio > 1 else 'no'} |")
    return out


def write_report(section, path):
    """Puts the section between the markers of `path` (or at its end), leaving the rest as it is."""
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END) + 1:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(text)


def main():
    # SIGTERM (a test's deadline, a CI cancel) unwinds like an error: every system started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    systems.installed()
    if not os.path.exists(os.path.join(core.BIN, "runnel-broker")):
        raise SystemExit(f"missing: {core.BIN}/runnel-broker — build it with: make release")
    out_dir = OUT or os.path.join(ROOT, "docs")
    if SMOKE and not OUT:
        raise SystemExit("RUNNEL_PEERS_SMOKE=1 writes to RUNNEL_PEERS_OUT: set it to a directory")
    workdir = tempfile.mkdtemp(prefix="runnel-peers-")
    core.spread_runs(workdir)
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    load0 = open("/proc/loadavg").read().split()[0]
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    try:
        res = run_all(workdir)
    except BaseException:
        print(f"(logs kept in {workdir})", file=sys.stderr)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    load1 = open("/proc/loadavg").read().split()[0]
    import charts
    img = os.path.join(out_dir, "img")
    os.makedirs(img, exist_ok=True)
    drawn = charts.draw(res, img)
    links = [f"![{title}](img/{os.path.basename(p)})" for title, p in drawn]
    section = report(res, started, rev, time.monotonic() - t0, (load0, load1), links)
    path = os.path.join(out_dir, "benchmarks.md")
    write_report(section, path)
    print(f"wrote {path} and {len(drawn)} charts in {img}", file=sys.stderr)


if __name__ == "__main__":
    main()
