"""The systems `make bench-peers` compares, each started fresh for every run on loopback with its
data in a new directory of the run's work directory, and stopped after it:

- `Kafka`: Apache Kafka 4.4.0 in KRaft mode (one node that is broker and controller, or three),
  from the jars `bench/tools.sh` installed, driven by its own perf tools;
- `Nats`: NATS Server with JetStream file storage, driven by `nats bench`;
- `Runnel`: a standalone `runnel-broker` (or three brokers of `runnel-loopback-cluster`), driven by
  `runnel bench`.

Every `produce`/`consume`/`latency` returns one dict: records, records_per_sec, mb_per_sec (10^6
bytes of values per second), latency_ms {p50, p99, p999} (None where the tool gives none), the
client's CPU seconds, and the command. The servers' CPU seconds and peak RSS are read from /proc
by `server_cpu()` and `server_peak_rss_mb()` before they stop.
"""
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import bench as core  # noqa: E402  (scripts/bench.py: ports, /proc readings, the disk's settling)

CACHE = os.environ.get("RUNNEL_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "runnel")
PEERS = os.path.join(CACHE, "peers")
KAFKA_VERSION = "4.4.0"
KAFKA_LIBS = os.path.join(PEERS, f"kafka-{KAFKA_VERSION}", "libs")
NATS_BIN = os.path.join(PEERS, "bin")
# Kafka's brokers and tools: a fixed heap (the JVM's default is a quarter of the RAM).
KAFKA_HEAP = "-Xmx1G"
MAXBYTES = "16GB"


def installed():
    """Fails with the command that installs the peers when they are missing."""
    missing = [p for p in (KAFKA_LIBS, os.path.join(NATS_BIN, "nats-server"), os.path.join(NATS_BIN, "nats"))
               if not os.path.exists(p)]
    if missing:
        raise SystemExit(f"missing: {', '.join(missing)} — install them with: bench/tools.sh (or make bench-tools)")


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_clients(cmds, log, env=None):
    """Runs the client commands at once and waits for all; returns their stdouts and the CPU
    seconds they used (all of them together). A client that fails stops the run."""
    c0 = children_cpu()
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=log, text=True, env=env) for c in cmds]
    outs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=1800)
            outs.append(out)
            if p.returncode != 0:
                raise SystemExit(f"{' '.join(p.args)} failed ({p.returncode}); see {log.name}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return outs, children_cpu() - c0


def wait_for_line(path, pattern, proc, seconds=120, count=1):
    """Waits until the log file has `count` lines matching `pattern`."""
    deadline = time.monotonic() + seconds
    rx = re.compile(pattern)
    while time.monotonic() < deadline:
        try:
            with open(path, errors="replace") as f:
                if sum(1 for line in f if rx.search(line)) >= count:
                    return
        except OSError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[0]} exited at start; see {path}")
        time.sleep(0.05)
    raise SystemExit(f"no `{pattern}` in {path} after {seconds} s")


def stop(procs):
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def result(records, size, seconds, latency, cpu, command, rate=None):
    rate = rate if rate is not None else records / seconds if seconds > 0 else 0.0
    return {"records": records, "records_per_sec": rate, "mb_per_sec": rate * size / 1e6,
            "latency_ms": latency, "client_cpu": cpu, "command": command}


class Server:
    """What the three systems share: their processes, CPU and memory."""
    procs = ()

    def server_cpu(self):
        return sum(core.pid_cpu_seconds(p.pid) for p in self.procs)

    def server_peak_rss_mb(self):
        return sum(peak_rss_mb(p.pid) for p in self.procs)

    def close(self):
        stop(self.procs)
        shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------------------------------- Kafka

KAFKA_LOG4J = """status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = out
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
"""

# ProducerPerformance's summary: "N records sent, R records/sec (M MB/sec), A ms avg latency, X ms
# max latency, P50 ms 50th, P95 ms 95th, P99 ms 99th, P999 ms 99.9th."
# With --warmup-records a second summary follows: "N steady state records sent, ...".
KAFKA_PERF = re.compile(r"(\d+) (?:steady state )?records sent, ([\d.]+) records/sec .*?, ([\d.]+) ms 50th, ([\d.]+) ms 95th, "
                        r"([\d.]+) ms 99th, ([\d.]+) ms 99.9th")


class Kafka(Server):
    """Kafka in KRaft mode on loopback: `brokers` nodes, each broker and controller (a static
    quorum of all of them), internal topics with as many copies as there are nodes (at most 3)."""
    name = "Kafka"

    def __init__(self, workdir, brokers=1, flush_messages=None):
        installed()
        self.dir = tempfile.mkdtemp(prefix="kafka-", dir=workdir)
        self.flush_messages = flush_messages
        self.log = open(os.path.join(workdir, "kafka.log"), "a")
        self.log4j = os.path.join(self.dir, "log4j2.properties")
        with open(self.log4j, "w") as f:
            f.write(KAFKA_LOG4J)
        ports = [(core.free_port(), core.free_port()) for _ in range(brokers)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports))
        self.bootstrap = ",".join(f"127.0.0.1:{p}" for p, _ in ports)
        rf = min(3, brokers)
        cluster_id = self.java("kafka.tools.StorageTool", "random-uuid").strip().splitlines()[-1]
        self.procs, logs = [], []
        for i, (port, cport) in enumerate(ports):
            node = os.path.join(self.dir, f"node-{i + 1}")
            os.makedirs(node)
            props = os.path.join(node, "server.properties")
            quorum = (f"controller.quorum.bootstrap.servers=127.0.0.1:{cport}" if brokers == 1
                      else f"controller.quorum.voters={voters}")
            with open(props, "w") as f:
                f.write("\n".join([
                    "process.roles=broker,controller", f"node.id={i + 1}",
                    f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    quorum, f"log.dirs={node}/data",
                    f"offsets.topic.replication.factor={rf}",
                    f"transaction.state.log.replication.factor={rf}", "transaction.state.log.min.isr=1",
                    f"share.coordinator.state.topic.replication.factor={rf}",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0", ""]))
            fmt = ["format", "-t", cluster_id, "-c", props] + (["--standalone"] if brokers == 1 else [])
            self.java("kafka.tools.StorageTool", *fmt)
            out = os.path.join(node, "server.log")
            logs.append(out)
            self.procs.append(subprocess.Popen(
                ["java", KAFKA_HEAP, "-Xms1G", f"-Dlog4j2.configurationFile={self.log4j}", "-cp",
                 os.path.join(KAFKA_LIBS, "*"), "kafka.Kafka", props],
                stdout=open(out, "w"), stderr=subprocess.STDOUT))
        for out, p in zip(logs, self.procs):
            wait_for_line(out, "Kafka Server started", p)

    def java(self, main, *args, capture=True):
        cmd = ["java", KAFKA_HEAP, f"-Dlog4j2.configurationFile={self.log4j}", "-cp",
               os.path.join(KAFKA_LIBS, "*"), main, *args]
        out = subprocess.run(cmd, capture_output=capture, text=True)
        if out.returncode != 0:
            raise SystemExit(f"{main} {' '.join(args)} failed: {out.stderr[-2000:]}")
        return out.stdout

    def tool(self, main, *args):
        return ["java", KAFKA_HEAP, f"-Dlog4j2.configurationFile={self.log4j}", "-cp",
                os.path.join(KAFKA_LIBS, "*"), f"org.apache.kafka.tools.{main}", *args]

    def create_topic(self, topic, partitions, replicas=1, min_insync=None):
        configs = []
        if self.flush_messages:
            configs += ["--config", f"flush.messages={self.flush_messages}"]
        if min_insync:
            configs += ["--config", f"min.insync.replicas={min_insync}"]
        self.java("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", self.bootstrap, "--create",
                  "--topic", topic, "--partitions", str(partitions), "--replication-factor", str(replicas),
                  *configs)

    def produce(self, topic, records, size, acks, producers, rate=None, warmup=0):
        """ProducerPerformance, one JVM per producer (its latencies: the slowest producer's)."""
        each = [records // producers + (1 if i < records % producers else 0) for i in range(producers)]
        per_rate = -1 if rate is None else max(1, rate // producers)
        cmds = [self.tool("ProducerPerformance", "--bootstrap-server", self.bootstrap, "--topic", topic,
                          "--num-records", str(n), "--record-size", str(size), "--throughput", str(per_rate),
                          *(["--warmup-records", str(warmup // producers)] if warmup else []),
                          "--producer-props", f"acks={acks}") for n in each]
        started = time.monotonic()
        outs, cpu = run_clients(cmds, self.log)
        wall = time.monotonic() - started
        parsed = []
        for out in outs:
            # With --warmup-records the last summary is the steady state's.
            found = KAFKA_PERF.findall(out)
            if not found:
                raise SystemExit(f"ProducerPerformance printed no summary: {out[-1000:]}")
            parsed.append([float(x) for x in found[-1]])
        # Throughput: the sum of each producer's own rate (each JVM times from its first send).
        total = sum(p[1] for p in parsed)
        worst = max(parsed, key=lambda p: p[4])
        lat = {"p50": worst[2], "p99": worst[4], "p999": worst[5]}
        cmd = ("ProducerPerformance --topic T --num-records " + str(each[0]) + f" --record-size {size} "
               f"--throughput {per_rate}" + (f" --warmup-records {warmup // producers}" if warmup else "")
               + f" --producer-props acks={acks}" + (f" (×{producers} JVMs)" if producers > 1 else ""))
        r = result(records, size, wall, lat, cpu, cmd, rate=total)
        r["wall_seconds"] = wall
        return r

    def consume(self, topic, records, size):
        """ConsumerPerformance from the beginning of the topic; its fetch rate, which leaves out
        the group's join (as `runnel bench consume` starts after its assignment)."""
        cmd = self.tool("ConsumerPerformance", "--bootstrap-server", self.bootstrap, "--topic", topic,
                        "--num-records", str(records), "--timeout", "60000")
        outs, cpu = run_clients([cmd], self.log)
        lines = [line for line in outs[0].splitlines() if line.strip() and line[0].isdigit()]
        if not lines:
            raise SystemExit(f"ConsumerPerformance printed no result: {outs[0][-1000:]}")
        # start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec,
        # rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
        f = [x.strip() for x in lines[-1].split(",")]
        n, fetch_rate = int(f[4]), float(f[9])
        return result(n, size, n / fetch_rate if fetch_rate else 0, None, cpu,
                      f"ConsumerPerformance --topic T --num-records {records}", rate=fetch_rate)

    def one_at_a_time(self, topic, records, size):
        """EndToEndLatency: one record produced (acks=all) and consumed before the next."""
        cmd = self.tool("EndToEndLatency", "--bootstrap-server", self.bootstrap, "--topic", topic,
                        "--num-records", str(records), "--producer-acks", "all", "--record-size", str(size))
        outs, cpu = run_clients([cmd], self.log)
        out = outs[0]
        m = re.search(r"Percentiles: 50th = ([\d.]+), 99th = ([\d.]+), 99.9th = ([\d.]+)", out)
        if not m:
            raise SystemExit(f"EndToEndLatency printed no percentiles: {out[-1000:]}")
        pct = dict(zip(("p50", "p99", "p999"), map(float, m.groups())))
        avg = float(re.search(r"Avg latency: ([\d.]+) ms", out).group(1))
        return result(records, size, records * avg / 1000, pct, cpu,
                      f"EndToEndLatency --topic T --num-records {records} --producer-acks all --record-size {size}")


# -------------------------------------------------------------------------------------------- NATS

# `nats bench` summaries: "... stats: 4,823 msgs/sec ~ 471 KiB/sec ~ ... P50: 104,211.30us ~ P90:
# ... ~ P99: 148,709.18us ~ P99.9: 148,709.18us"; with several clients an "aggregated stats" line
# and a "latencies per operation" line.
NATS_RATE = re.compile(r"stats: ([\d,.]+) msgs/sec")
NATS_PCT = re.compile(r"P50:? ([\d,.]+)us.*?P99:? ([\d,.]+)us.*?P99\.9:? ([\d,.]+)us")


def nats_num(s):
    return float(s.replace(",", ""))


class Nats(Server):
    """NATS Server with JetStream, file storage, its default sync (every 2 minutes) or
    `sync_interval: always` (an fsync per message)."""
    name = "NATS"

    def __init__(self, workdir, sync_always=False):
        installed()
        self.dir = tempfile.mkdtemp(prefix="nats-", dir=workdir)
        self.log = open(os.path.join(workdir, "nats.log"), "a")
        self.url = f"nats://127.0.0.1:{core.free_port()}"
        conf = os.path.join(self.dir, "nats.conf")
        with open(conf, "w") as f:
            f.write(f"listen: {self.url[len('nats://'):]}\njetstream {{\n  store_dir: {self.dir}/js\n"
                    + ("  sync_interval: always\n" if sync_always else "") + "}\n")
        out = os.path.join(self.dir, "server.log")
        self.procs = [subprocess.Popen([os.path.join(NATS_BIN, "nats-server"), "-c", conf],
                                       stdout=open(out, "w"), stderr=subprocess.STDOUT)]
        wait_for_line(out, "Server is ready", self.procs[0])

    def cli(self, *args):
        return [os.path.join(NATS_BIN, "nats"), "-s", self.url, "bench", "js", *args, "--no-progress"]

    def create_topic(self, topic, partitions, replicas=1, min_insync=None):
        self.stream = topic  # `pub --create` makes the stream

    def produce(self, topic, records, size, acks, producers, rate=None, warmup=0):
        """`nats bench js pub async`: 500 messages in flight per client; its latency is per batch of
        500. `acks` has no equivalent: a JetStream publish is acknowledged once the stream stored it."""
        args = ["pub", "async", f"{topic}.bench", "--create", "--storage=file", f"--stream={topic}",
                f"--maxbytes={MAXBYTES}", f"--msgs={records}", f"--size={size}", f"--clients={producers}"]
        if rate:
            args.append(f"--throughput={rate}")
        outs, cpu = run_clients([self.cli(*args)], self.log)
        out = outs[0]
        agg = [line for line in out.splitlines() if "aggregated stats" in line or "publisher stats" in line]
        if not agg:
            raise SystemExit(f"nats bench printed no stats: {out[-1000:]}")
        rate_seen = nats_num(NATS_RATE.search(agg[-1]).group(1))
        lat_line = [line for line in out.splitlines() if "latencies per operation" in line] or agg
        m = NATS_PCT.search(lat_line[-1].replace("P99.9:", "P99.9"))
        lat = {"p50": nats_num(m.group(1)) / 1000, "p99": nats_num(m.group(2)) / 1000,
               "p999": nats_num(m.group(3)) / 1000} if m else None
        return result(records, size, records / rate_seen, lat, cpu, "nats bench js " + " ".join(args[:2] + args[3:])
                      .replace(f"--stream={topic}", "--stream=S"), rate=rate_seen)

    def consume(self, topic, records, size):
        args = ["consume", f"--stream={topic}", f"--msgs={records}", f"--size={size}"]
        outs, cpu = run_clients([self.cli(*args)], self.log)
        m = NATS_RATE.search(outs[0])
        if not m:
            raise SystemExit(f"nats bench printed no stats: {outs[0][-1000:]}")
        rate = nats_num(m.group(1))
        return result(records, size, records / rate, None, cpu,
                      "nats bench js " + " ".join(args).replace(f"--stream={topic}", "--stream=S"), rate=rate)

    def one_at_a_time(self, topic, records, size):
        """`nats bench js pub sync`: one message published and acknowledged before the next."""
        args = ["pub", "sync", f"{topic}.bench", "--create", "--storage=file", f"--stream={topic}",
                f"--msgs={records}", f"--size={size}"]
        outs, cpu = run_clients([self.cli(*args)], self.log)
        line = [x for x in outs[0].splitlines() if "publisher stats" in x][-1]
        m = NATS_PCT.search(line.replace("P99.9:", "P99.9"))
        lat = {"p50": nats_num(m.group(1)) / 1000, "p99": nats_num(m.group(2)) / 1000,
               "p999": nats_num(m.group(3)) / 1000}
        rate = nats_num(NATS_RATE.search(line).group(1))
        return result(records, size, records / rate, lat, cpu,
                      "nats bench js pub sync --storage=file " + f"--msgs={records} --size={size}", rate=rate)


# ------------------------------------------------------------------------------------------ Runnel

class Runnel(Server):
    """A standalone release `runnel-broker`, or three (`runnel-loopback-cluster serve`) for
    replicated topics; `runnel bench` as the client (its JSON report)."""
    name = "Runnel"

    def __init__(self, workdir, brokers=1, topic=None):
        self.dir = tempfile.mkdtemp(prefix="runnel-", dir=workdir)
        self.cluster = None
        if brokers == 1:
            self.broker = core.Broker(self.dir, data=os.path.join(self.dir, "data"))
            self.bootstrap = self.broker.addr
            self.procs = [self.broker.proc]
        else:
            # The loopback cluster creates its topics before it reports them ready.
            name, partitions, replicas, min_insync = topic
            spec = f"{name}:{partitions}:{replicas}:{min_insync}"
            self.cluster = subprocess.Popen(core.loopback_cluster(self.dir, "serve", "--topic", spec),
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=open(os.path.join(workdir, "runnel.log"), "a"), text=True)
            line = self.cluster.stdout.readline()
            if not line:
                raise SystemExit("runnel-loopback-cluster exited at start; see runnel.log")
            info = json.loads(line)
            self.bootstrap = info["bootstrap"]
            self.pids = [b["pid"] for b in info["brokers"]]
            self.procs = []

    def server_cpu(self):
        if self.cluster:
            return sum(core.pid_cpu_seconds(p) for p in self.pids)
        return super().server_cpu()

    def server_peak_rss_mb(self):
        if self.cluster:
            return sum(peak_rss_mb(p) for p in self.pids)
        return super().server_peak_rss_mb()

    def close(self):
        if self.cluster:
            self.cluster.stdin.close()
            try:
                self.cluster.wait(60)
            except subprocess.TimeoutExpired:
                self.cluster.kill()
                self.cluster.wait()
        else:
            self.broker.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def cli(self, *args):
        return [os.path.join(core.BIN, "runnel"), "--bootstrap", self.bootstrap, "--output", "json", *args]

    def create_topic(self, topic, partitions, replicas=1, min_insync=None):
        self.partitions = partitions  # `bench produce` creates it

    def produce(self, topic, records, size, acks, producers, rate=None, warmup=0, extra=()):
        args = ["bench", "produce", "--topic", topic, "--partitions", str(self.partitions), "--records",
                str(records), "--record-size", str(size), "--acks", acks, "--producers", str(producers),
                *(["--rate", str(rate), "--e2e"] if rate else []), *extra]
        outs, cpu = run_clients([self.cli(*args)], sys.stderr)
        r = json.loads(outs[0].strip().splitlines()[-1])
        lat = {k: r["ack_latency_ms"][k] for k in ("p50", "p99", "p999")}
        res = result(r["records"], size, r["seconds"], lat, cpu, "runnel " + " ".join(args).replace(f"--topic {topic}", "--topic T"),
                     rate=r["records_per_sec"])
        if r.get("e2e_latency_ms"):
            res["e2e_latency_ms"] = {k: r["e2e_latency_ms"][k] for k in ("p50", "p99", "p999")}
        return res

    def consume(self, topic, records, size):
        args = ["bench", "consume", "--topic", topic, "--records", str(records)]
        outs, cpu = run_clients([self.cli(*args)], sys.stderr)
        r = json.loads(outs[0].strip().splitlines()[-1])
        return result(r["records"], size, r["seconds"], None, cpu, "runnel " + " ".join(args).replace(f"--topic {topic}", "--topic T"),
                      rate=r["records_per_sec"])

    def one_at_a_time(self, topic, records, size):
        """One record in flight at a time is not a mode of `runnel bench`: a low fixed rate (1,000
        records/s, linger 0) leaves each record alone in its batch; end to end through the
        in-process consumer."""
        r = self.produce(topic, records, size, "all", 1, rate=1000, extra=("--linger-ms", "0"))
        r["latency_ms"] = r.pop("e2e_latency_ms")
        return r


def measure(system, run):
    """Runs `run(system)` and adds the servers' CPU seconds it took and their peak RSS."""
    cpu0 = system.server_cpu()
    r = run(system)
    r["server_cpu"] = system.server_cpu() - cpu0
    r["peak_rss_mb"] = system.server_peak_rss_mb()
    return r
