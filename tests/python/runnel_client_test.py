"""Runnel's gRPC API as a client in another language sees it.

Stock grpcio against a real broker, with nothing but the .proto files: the stubs are generated
from proto/runnel/v1/*.proto into a temporary directory at start (grpcio-tools carries its own
protoc). Every check follows what the .proto files (and DESIGN.md's error codes) document.

    python runnel_client_test.py HOST:PORT

Exits 0 with one summary line when every check passes; otherwise prints each failed check with
what the broker answered, and exits 1. Run by integration/tests/python_client.rs, in the venv
that scripts/python-tools.sh makes.
"""

import os
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto"


def generate_stubs(out_dir):
    """Compiles proto/runnel/v1/*.proto into `out_dir` with grpcio-tools' protoc."""
    protos = sorted(str(p) for p in (PROTO_ROOT / "runnel" / "v1").glob("*.proto"))
    if not protos:
        sys.exit(f"runnel_client_test: no .proto files under {PROTO_ROOT}/runnel/v1")
    command = [
        sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_ROOT}",
        f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *protos,
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"runnel_client_test: protoc failed ({' '.join(command)}):\n{done.stderr}")
    sys.path.insert(0, out_dir)


# The stubs exist only once protoc has run, so they are imported here rather than at the top.
_STUBS = tempfile.TemporaryDirectory(prefix="runnel-python-stubs-")
generate_stubs(_STUBS.name)
from runnel.v1 import (  # noqa: E402
    admin_pb2, admin_pb2_grpc, broker_pb2, broker_pb2_grpc, common_pb2, groups_pb2, groups_pb2_grpc,
)

TIMEOUT = 10  # seconds, for every call: the broker is local and the test must end by itself
ORDERS = "py-orders"  # produce and placement checks
ORDERS_PARTITIONS = 4
LOG = "py-log"  # one partition of known batches, for fetch and subscribe
LARGE = "py-large"  # a backlog larger than one 3 MiB fetch

FETCH_MAX_BYTES = 3 << 20
# What a fetch answer can weigh: at most max_bytes of batches (the broker caps max_bytes at
# 32 MiB), or a single batch up to the topic's max.message.bytes (1 MiB unless set) when the
# first one is larger, plus a few hundred bytes of framing; decoded records
# (RECORD_FORMAT_RECORDS) weigh about what their batches do uncompressed, so more than
# max_bytes when the batches were compressed. grpcio refuses any answer above its receive limit
# (4 MiB by default) with RESOURCE_EXHAUSTED: the 3 MiB fetch below would fit under it only just,
# so the channel takes the largest fetch the broker serves, 32 MiB, plus room for framing.
RECEIVE_LIMIT = (32 << 20) + (1 << 20)

# A fixed create time (2023-11-14T22:13:20Z) for records whose timestamps must round-trip.
T0 = 1_700_000_000_000


class CheckFailed(Exception):
    """A documented behaviour the broker did not show."""


CHECKS = [0]


def check(condition, message):
    """Counts one check; raises CheckFailed with `message` when it does not hold."""
    CHECKS[0] += 1
    if not condition:
        raise CheckFailed(message)


def short(message, limit=600):
    """A protobuf message (or anything) as one bounded line, for failure messages."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[:limit] + " …"


def murmur2(data):
    """Kafka's murmur2 (Utils.murmur2, what its default partitioner hashes keys with), as a
    signed 32-bit int. Java's int arithmetic is emulated with & 0xffffffff; on those unsigned
    values Python's >> is Java's >>>."""
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    tail = data[whole:]  # bytes are 0..255 already: Java's `& 0xff`
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if len(tail) >= 1:
        h ^= tail[0]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def kafka_partition(key, partitions):
    """Kafka's default partitioner for a keyed record: toPositive(murmur2(key)) % partitions."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def check_murmur2_vectors():
    """Kafka's own test vectors, so that the placement checks rest on a right hash."""
    for data, want in ((b"21", -973932308), (b"foobar", -790332482), (b"", 275646681)):
        got = murmur2(data)
        check(got == want, f"murmur2({data!r}) is {got}, Kafka's is {want}: the test's hash is wrong")


def record(key=None, value=None, headers=(), timestamp_ms=0):
    """A plain Record; None leaves an optional field unset (Kafka's null)."""
    r = common_pb2.Record(timestamp_ms=timestamp_ms)
    if key is not None:
        r.key = key
    if value is not None:
        r.value = value
    for k, v in headers:
        h = r.headers.add(key=k)
        if v is not None:
            h.value = v
    return r


def optional(message, field):
    """The value of an optional field, or None when it is unset."""
    return getattr(message, field) if message.HasField(field) else None


def header_list(message):
    return [(h.key, optional(h, "value")) for h in message.headers]


def differences(got, want):
    """How a ConsumedRecord differs from the Record it should be (empty when it does not);
    a `want` timestamp of 0 is the broker's clock and is checked by the caller."""
    out = []
    for field in ("key", "value"):
        if optional(got, field) != optional(want, field):
            out.append(f"{field} {short(optional(got, field), 80)} != {short(optional(want, field), 80)}")
    if header_list(got) != header_list(want):
        out.append(f"headers {header_list(got)} != {header_list(want)}")
    if want.timestamp_ms != 0 and got.timestamp_ms != want.timestamp_ms:
        out.append(f"timestamp_ms {got.timestamp_ms} != {want.timestamp_ms}")
    return out


def produce(broker, topic, records, partition=None, compression=common_pb2.COMPRESSION_NONE):
    """Produces plain records with acks=all; `partition` None leaves the optional field unset."""
    request = broker_pb2.ProduceRequest(
        topic=topic, acks=broker_pb2.ACKS_ALL, records=records, compression=compression
    )
    if partition is not None:
        request.partition = partition
    return broker.Produce(request, timeout=TIMEOUT)


def fetch(broker, topic, partition, offset, max_bytes=1 << 20, fmt=broker_pb2.RECORD_FORMAT_RECORDS):
    return broker.Fetch(
        broker_pb2.FetchRequest(
            topic=topic, partition=partition, offset=offset, max_bytes=max_bytes,
            max_wait_ms=0, min_bytes=0, format=fmt,
        ),
        timeout=TIMEOUT,
    )


def split_batches(data):
    """(base_offset, last_offset, codec, size) of each RecordBatch v2 in `data`, from the
    headers alone: baseOffset int64 @0, batchLength int32 @8 (bytes after it), magic int8 @16,
    attributes int16 @21 (codec in bits 0-2), lastOffsetDelta int32 @23."""
    out, pos = [], 0
    while pos < len(data):
        check(len(data) - pos >= 61, f"{len(data) - pos} bytes at {pos} are no whole batch header")
        base_offset, batch_length = struct.unpack_from(">qi", data, pos)
        size = 12 + batch_length
        check(data[pos + 16] == 2, f"batch at byte {pos} has magic {data[pos + 16]}, not 2")
        check(pos + size <= len(data), f"batch at byte {pos} ({size} bytes) is cut off at {len(data)}")
        (attributes,) = struct.unpack_from(">h", data, pos + 21)
        (last_delta,) = struct.unpack_from(">i", data, pos + 23)
        out.append((base_offset, base_offset + last_delta, attributes & 0x07, size))
        pos += size
    return out


def expect_error(what, code, words, call):
    """Runs `call`, which must fail with `code` and a message naming every one of `words`."""
    try:
        answer = call()
    except grpc.RpcError as e:
        details = e.details() or ""
        check(e.code() == code, f"{what}: expected {code.name}, got {e.code().name}: {details!r}")
        for word in words:
            check(str(word).lower() in details.lower(), f"{what}: the message {details!r} does not name {word!r}")
        return details
    raise CheckFailed(f"{what}: expected {code.name}, the call succeeded: {short(answer)}")


# a. Topics.


def create_topics(admin, broker):
    for name, partitions in ((ORDERS, ORDERS_PARTITIONS), (LOG, 1), (LARGE, 1)):
        created = admin.CreateTopic(
            admin_pb2.CreateTopicRequest(name=name, partitions=partitions, replication_factor=1),
            timeout=TIMEOUT,
        )
        check(
            created.topic.name == name and len(created.topic.partitions) == partitions,
            f"CreateTopic {name} with {partitions} partitions answered {short(created)}",
        )
    listed = {t.name for t in admin.ListTopics(admin_pb2.ListTopicsRequest(), timeout=TIMEOUT).topics}
    check({ORDERS, LOG, LARGE} <= listed, f"ListTopics lacks the created topics: {sorted(listed)}")
    meta = broker.Metadata(broker_pb2.MetadataRequest(topics=[ORDERS]), timeout=TIMEOUT)
    parts = [t.partitions for t in meta.topics if t.name == ORDERS]
    check(
        parts and sorted(p.partition for p in parts[0]) == list(range(ORDERS_PARTITIONS))
        and all(p.leader == meta.broker_id for p in parts[0]),
        f"Metadata for {ORDERS}: expected partitions 0-3 led by broker {meta.broker_id}, got {short(meta)}",
    )
    return f"{ORDERS} ({ORDERS_PARTITIONS} partitions), {LOG}, {LARGE}"


# b. Produce: the broker's partitioner, explicit partitions, compression.


def check_read_back(broker, topic, placement, want, what):
    """The record at `placement` is `want`."""
    got = fetch(broker, topic, placement.partition, placement.offset).records
    check(
        got and got[0].offset == placement.offset,
        f"{what}: fetching {topic}/{placement.partition} at {placement.offset} returned "
        f"offsets {[r.offset for r in got]}",
    )
    diff = differences(got[0], want)
    check(not diff, f"{what}: the record at {topic}/{placement.partition}@{placement.offset}: {diff}")


def check_placements(response, records, what):
    """One placement per record; `partition`, `base_offset` and `last_offset` describe the
    first record's partition; offsets on each partition rise by one in request order."""
    placements = list(response.placements)
    check(
        len(placements) == len(records),
        f"{what}: {len(records)} records got {len(placements)} placements: {short(response)}",
    )
    first = placements[0].partition
    there = [p.offset for p in placements if p.partition == first]
    check(
        response.partition == first and response.base_offset == there[0] and response.last_offset == there[-1],
        f"{what}: the response names partition {response.partition} offsets "
        f"{response.base_offset}..{response.last_offset}, the first record went to "
        f"{first} at offsets {there}",
    )
    for partition in {p.partition for p in placements}:
        offsets = [p.offset for p in placements if p.partition == partition]
        check(
            offsets == list(range(offsets[0], offsets[0] + len(offsets))),
            f"{what}: offsets on partition {partition} in request order are {offsets}",
        )
    return placements


def produce_with_partitioner(broker):
    # Keys of every tail length (0-3 bytes past the 4-byte blocks), bytes above 0x7f, the
    # empty key (not null: Kafka hashes it), and Kafka's own vectors.
    keys = [b"21", b"foobar", b"", b"a", b"ab", b"abc", b"abcd", b"\xff\xfe\x80\x01\x7f",
            b"order-1", b"order-2", b"order-3", b"customer/42", "ключ".encode(), bytes(range(0, 256, 7))]
    records, keyless = [], []
    for i, key in enumerate(keys):
        records.append(record(key, b"keyed %d" % i, timestamp_ms=T0 + i))
        if i % 3 == 0:
            keyless.append(len(records))
            records.append(record(None, b"keyless %d" % i, timestamp_ms=T0 + i))
    request = broker_pb2.ProduceRequest(topic=ORDERS, acks=broker_pb2.ACKS_ALL, records=records)
    check(not request.HasField("partition"), "the generated ProduceRequest has `partition` set without asking")
    response = broker.Produce(request, timeout=TIMEOUT)
    placements = check_placements(response, records, "produce without a partition")
    for placement, r in zip(placements, records):
        if r.HasField("key"):
            want = kafka_partition(r.key, ORDERS_PARTITIONS)
            check(
                placement.partition == want,
                f"key {r.key!r} (murmur2 {murmur2(r.key)}) went to partition {placement.partition}, "
                f"Kafka's partitioner puts it on {want}",
            )
    keyless_partitions = {placements[i].partition for i in keyless}
    check(
        len(keyless_partitions) == 1,
        f"the keyless records of one request went to partitions {sorted(keyless_partitions)}, not one",
    )
    for placement, r in zip(placements, records):
        check_read_back(broker, ORDERS, placement, r, "produce without a partition")

    # Keyless requests take the partitions in turn: as many requests as partitions, one each.
    turns = []
    for i in range(ORDERS_PARTITIONS):
        batch = [record(None, b"turn %d.%d" % (i, j)) for j in range(3)]
        placements = check_placements(produce(broker, ORDERS, batch), batch, f"keyless request {i}")
        check(
            len({p.partition for p in placements}) == 1,
            f"keyless request {i} went to partitions {sorted({p.partition for p in placements})}, not one",
        )
        turns.append(placements[0].partition)
    check(
        sorted(turns) == list(range(ORDERS_PARTITIONS)),
        f"{ORDERS_PARTITIONS} keyless requests in a row went to partitions {turns}, "
        "not to each partition in turn",
    )
    return len(keys), len(keyless)


def produce_to_a_partition(broker):
    # Keys that hash elsewhere: the partition asked for wins over the partitioner.
    records = [record(b"order-%d" % i, b"explicit %d" % i, [("n", b"%d" % i)], T0 + i) for i in range(5)]
    response = produce(broker, ORDERS, records, partition=2)
    placements = check_placements(response, records, "produce to partition 2")
    check(
        {p.partition for p in placements} == {2},
        f"records produced to partition 2 went to {sorted({p.partition for p in placements})}",
    )
    for placement, r in zip(placements, records):
        check_read_back(broker, ORDERS, placement, r, "produce to partition 2")


def produce_compressed(broker):
    codecs = [("GZIP", common_pb2.COMPRESSION_GZIP), ("SNAPPY", common_pb2.COMPRESSION_SNAPPY),
              ("LZ4", common_pb2.COMPRESSION_LZ4), ("ZSTD", common_pb2.COMPRESSION_ZSTD)]
    for name, codec in codecs:
        records = [record(b"%s-%d" % (name.encode(), i), (b"compressible %s %d " % (name.encode(), i)) * 200,
                          [("codec", name.encode())], T0 + i) for i in range(4)]
        response = produce(broker, ORDERS, records, partition=3, compression=codec)
        placements = check_placements(response, records, f"produce with {name}")
        batches = split_batches(fetch(broker, ORDERS, 3, response.base_offset, fmt=broker_pb2.RECORD_FORMAT_BATCHES).batches)
        check(
            batches and batches[0][0] == response.base_offset,
            f"{name}: no stored batch starts at {response.base_offset}: {batches}",
        )
        check(
            batches[0][2] == codec,
            f"{name}: the stored batch's attributes say codec {batches[0][2]}, asked for {codec}",
        )
        for placement, r in zip(placements, records):
            check_read_back(broker, ORDERS, placement, r, f"produce with {name}")
    return [name for name, _ in codecs]


# c. Fetch from the middle of a batch, and Subscribe.


def log_records():
    """The records of LOG, by batch: offsets 0-2, 3-8 (headers, nulls, binary) and 9-10."""
    first = [record(b"a-%d" % i, b"first batch %d" % i, timestamp_ms=T0 + i) for i in range(3)]
    second = [
        record(b"user-1", b"signed up", [("trace-id", b"abc123"), ("source", b"web")], T0 + 10),
        record(None, b"no key", [("empty-value", b"")], T0 + 11),
        record(b"user-1", None, [("null-value", None)], T0 + 12),  # a tombstone
        record(b"", b"", [], T0 + 13),
        record(bytes(range(256)), bytes(range(255, -1, -1)),
               [("dup", b"1"), ("dup", b"2"), ("ключ-ü", b"\x00\xff")], T0 + 14),
        record(b"user-2", b"x" * 1000, [("null-value", None), ("after-null", b"v")], T0 + 15),
    ]
    third = [
        record(b"c-9", b"stamped by the broker", timestamp_ms=0),
        record(b"c-10", b"last", timestamp_ms=T0 + 20),
    ]
    return [first, second, third]


def fetch_from_mid_batch(broker):
    batches = log_records()
    before_ms = int(time.time() * 1000)
    for i, records in enumerate(batches):
        response = produce(broker, LOG, records, partition=0)
        check_placements(response, records, f"produce batch {i} to {LOG}")
    after_ms = int(time.time() * 1000)
    wanted = [r for b in batches for r in b]
    end = len(wanted)  # 11: offsets 0-10

    asked = 5  # the third record of the batch at offsets 3-8
    response = fetch(broker, LOG, 0, asked)
    got = list(response.records)
    check(got, f"fetch of {LOG} at {asked}, decoded, returned no records: {short(response)}")
    check(got[0].offset == asked, f"fetch at {asked}, decoded, starts at offset {got[0].offset}")
    check(
        [r.offset for r in got] == list(range(asked, end)),
        f"fetch at {asked}, decoded, returned offsets {[r.offset for r in got]}, expected {asked}..{end - 1}",
    )
    for r in got:
        diff = differences(r, wanted[r.offset])
        check(not diff, f"the record at {LOG}@{r.offset} did not round-trip: {diff}")
    stamped = got[9 - asked].timestamp_ms
    check(
        before_ms - 1000 <= stamped <= after_ms + 1000,
        f"a record produced with timestamp_ms 0 has {stamped}, not the broker's now "
        f"({before_ms}..{after_ms})",
    )
    check(
        response.next_offset == end and response.high_watermark == end,
        f"fetch at {asked}: next_offset {response.next_offset} and high_watermark "
        f"{response.high_watermark}, expected {end} for both",
    )

    # Stored batches are whole: the first one starts where its batch does, before the offset.
    stored = fetch(broker, LOG, 0, asked, fmt=broker_pb2.RECORD_FORMAT_BATCHES)
    spans = [(base, last) for base, last, _, _ in split_batches(stored.batches)]
    check(
        spans == [(3, 8), (9, 10)] and stored.next_offset == end,
        f"fetch at {asked} as batches returned batches {spans} and next_offset "
        f"{stored.next_offset}, expected [(3, 8), (9, 10)] and {end}",
    )

    subscribed = []
    stream = broker.Subscribe(
        broker_pb2.SubscribeRequest(topic=LOG, partition=0, offset=asked, max_bytes=1 << 20,
                                    format=broker_pb2.RECORD_FORMAT_RECORDS),
        timeout=TIMEOUT,
    )
    try:
        for pushed in stream:
            check(
                pushed.topic == LOG and pushed.partition == 0,
                f"Subscribe to {LOG}/0 pushed a message for {pushed.topic}/{pushed.partition}",
            )
            subscribed.extend(pushed.records)
            if subscribed and subscribed[-1].offset >= end - 1:
                break
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    finally:
        stream.cancel()
    check(
        [r.offset for r in subscribed] == [r.offset for r in got] and subscribed == got,
        f"Subscribe at {asked} pushed offsets {[r.offset for r in subscribed]} within {TIMEOUT} s; "
        f"differing from Fetch's: {[short(r, 120) for r, f in zip(subscribed, got) if r != f]}",
    )
    return asked, end


# d. Errors.


def errors(broker):
    StatusCode = grpc.StatusCode
    expect_error("produce to an unknown topic", StatusCode.NOT_FOUND, ["py-no-such-topic"],
                 lambda: produce(broker, "py-no-such-topic", [record(b"k", b"v")]))
    expect_error("produce to a partition the topic lacks", StatusCode.NOT_FOUND, [ORDERS, "9"],
                 lambda: produce(broker, ORDERS, [record(b"k", b"v")], partition=9))
    expect_error("fetch from an unknown topic", StatusCode.NOT_FOUND, ["py-no-such-topic"],
                 lambda: fetch(broker, "py-no-such-topic", 0, 0))
    beyond = 1000  # LOG ends at 11
    for fmt in (broker_pb2.RECORD_FORMAT_RECORDS, broker_pb2.RECORD_FORMAT_BATCHES):
        expect_error(f"fetch beyond the log ({broker_pb2.RecordFormat.Name(fmt)})", StatusCode.OUT_OF_RANGE,
                     [str(beyond)], lambda: fetch(broker, LOG, 0, beyond, fmt=fmt))
    garbage = b"these bytes are not a RecordBatch, whatever their length says"
    expect_error("produce garbage batches", StatusCode.INVALID_ARGUMENT, ["batch 0"],
                 lambda: broker.Produce(broker_pb2.ProduceRequest(topic=ORDERS, partition=0, acks=broker_pb2.ACKS_ALL,
                                                                  batches=garbage), timeout=TIMEOUT))
    expect_error("produce both batches and records", StatusCode.INVALID_ARGUMENT, ["batches", "records"],
                 lambda: broker.Produce(broker_pb2.ProduceRequest(topic=ORDERS, partition=0, acks=broker_pb2.ACKS_ALL,
                                                                  batches=garbage, records=[record(b"k", b"v")]),
                                        timeout=TIMEOUT))
    first = broker.InitProducerId(broker_pb2.InitProducerIdRequest(), timeout=TIMEOUT)
    check(first.producer_id >= 0 and first.producer_epoch >= 0, f"InitProducerId answered {short(first)}")
    bumped = broker.InitProducerId(
        broker_pb2.InitProducerIdRequest(producer_id=first.producer_id, producer_epoch=first.producer_epoch),
        timeout=TIMEOUT,
    )
    check(
        (bumped.producer_id, bumped.producer_epoch) == (first.producer_id, first.producer_epoch + 1),
        f"bumping producer {first.producer_id} epoch {first.producer_epoch} answered {short(bumped)}, "
        f"expected epoch {first.producer_epoch + 1} of the same id",
    )


# e. Reflection and health.


def reflection_and_health(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    [listed] = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                         timeout=TIMEOUT)
    check(not listed.HasField("error_response"), f"reflection list_services failed: {short(listed)}")
    services = {s.name for s in listed.list_services_response.service}
    check(
        {"runnel.v1.Broker", "runnel.v1.Admin", "runnel.v1.Groups"} <= services,
        f"reflection (v1alpha) lists {sorted(services)}, without runnel.v1.Broker, Admin and Groups",
    )

    [found] = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol="runnel.v1.Broker")]), timeout=TIMEOUT
    )
    check(not found.HasField("error_response"), f"reflection of runnel.v1.Broker failed: {short(found)}")
    files = {}
    for blob in found.file_descriptor_response.file_descriptor_proto:
        f = descriptor_pb2.FileDescriptorProto.FromString(blob)
        files[f.name] = f
    check("runnel/v1/broker.proto" in files,
          f"the file containing runnel.v1.Broker came back as {sorted(files)}, not runnel/v1/broker.proto")
    served = [m.name for s in files["runnel/v1/broker.proto"].service if s.name == "Broker" for m in s.method]
    local = [m.name for m in broker_pb2.DESCRIPTOR.services_by_name["Broker"].methods]
    check(served == local, f"reflection's runnel.v1.Broker has methods {served}, the .proto has {local}")

    # What a dynamic client does: resolve the service and its message types, imports included,
    # through reflection alone.
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    produce_method = pool.FindServiceByName("runnel.v1.Broker").FindMethodByName("Produce")
    record_fields = sorted(produce_method.input_type.fields_by_name["records"].message_type.fields_by_name)
    check(
        record_fields == ["headers", "key", "timestamp_ms", "value"],
        f"reflection resolves runnel.v1.Record with fields {record_fields}",
    )

    health = health_pb2_grpc.HealthStub(channel)
    for service in ("runnel.v1.Broker", "runnel.v1.Admin"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT).status
        check(
            status == health_pb2.HealthCheckResponse.SERVING,
            f"grpc.health.v1.Health/Check({service}) says {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}",
        )
    return len(services)


# f. Large answers.


def large_fetch(broker):
    # 8 batches of 4 records of 128 KiB (about 512 KiB each, under max.message.bytes): 4 MiB,
    # more than one 3 MiB fetch holds. Random values, so that no codec shrinks them.
    values = []
    for i in range(8):
        batch = [record(b"big-%d" % (4 * i + j), os.urandom(128 << 10), timestamp_ms=T0) for j in range(4)]
        values.extend(r.value for r in batch)
        check_placements(produce(broker, LARGE, batch, partition=0), batch, f"produce large batch {i}")

    response = fetch(broker, LARGE, 0, 0, max_bytes=FETCH_MAX_BYTES, fmt=broker_pb2.RECORD_FORMAT_BATCHES)
    batches = split_batches(response.batches)
    total = len(response.batches)
    check(batches, f"a {FETCH_MAX_BYTES}-byte fetch of a 4 MiB backlog returned no batch: next_offset {response.next_offset}")
    check(
        batches[0][0] == 0 and all(b[0] == a[1] + 1 for a, b in zip(batches, batches[1:])),
        f"the fetched batches are not contiguous from offset 0: {[(b[0], b[1]) for b in batches]}",
    )
    check(
        len(batches) == 1 or total <= FETCH_MAX_BYTES,
        f"fetch with max_bytes {FETCH_MAX_BYTES} returned {total} bytes in {len(batches)} batches "
        f"(more than max_bytes, and more than one batch)",
    )
    check(
        response.next_offset == batches[-1][1] + 1,
        f"next_offset {response.next_offset} after batches ending at {batches[-1][1]}",
    )

    # Decoded, from the middle of the second batch: exact start, the values intact.
    asked = 6
    response = fetch(broker, LARGE, 0, asked, max_bytes=FETCH_MAX_BYTES)
    offsets = [r.offset for r in response.records]
    check(
        offsets and offsets == list(range(asked, asked + len(offsets))),
        f"decoded {FETCH_MAX_BYTES}-byte fetch at {asked} returned offsets {offsets}",
    )
    check(
        all(r.value == values[r.offset] for r in response.records),
        f"decoded large records at {offsets} do not hold the values produced",
    )
    value_bytes = sum(len(r.value) for r in response.records)
    check(
        value_bytes <= FETCH_MAX_BYTES and response.next_offset == offsets[-1] + 1,
        f"decoded fetch at {asked} with max_bytes {FETCH_MAX_BYTES}: {value_bytes} bytes of values, "
        f"next_offset {response.next_offset} after offset {offsets[-1]}",
    )
    return total, len(batches)


def consumer_group(broker, groups):
    """A consumer group as a client in another language runs one: find the coordinator, join
    with a heartbeat, commit what was read, leave; a fenced member's commit is refused."""
    group = "py-group"
    found = broker.FindCoordinator(groups_pb2.FindCoordinatorRequest(group_id=group), timeout=TIMEOUT)
    check(found.address != "", f"FindCoordinator of {group} named no broker: {short(found)}")
    join = groups_pb2.HeartbeatRequest(
        group_id=group, subscribed_topics=[ORDERS], session_timeout_ms=1000,
        owned_partitions=groups_pb2.PartitionSet(), client_id="python",
    )
    member = groups.Heartbeat(join, timeout=TIMEOUT)
    owned = {(t.topic, p) for t in member.assignment for p in t.partitions}
    check(member.member_id and member.member_epoch > 0, f"joining {group}: {short(member)}")
    check(owned == {(ORDERS, p) for p in range(ORDERS_PARTITIONS)},
          f"the only member of {group} owns {sorted(owned)}, not all {ORDERS_PARTITIONS} partitions of {ORDERS}")
    ends = broker.ListOffsets(broker_pb2.ListOffsetsRequest(topic=ORDERS, spec=broker_pb2.OFFSET_SPEC_LATEST),
                              timeout=TIMEOUT)
    commits = [groups_pb2.OffsetCommit(topic=ORDERS, partition=p.partition, offset=p.offset, leader_epoch=-1)
               for p in ends.partitions]
    groups.CommitOffsets(groups_pb2.CommitOffsetsRequest(
        group_id=group, member_id=member.member_id, member_epoch=member.member_epoch, offsets=commits),
        timeout=TIMEOUT)
    fetched = groups.FetchOffsets(groups_pb2.FetchOffsetsRequest(group_id=group), timeout=TIMEOUT)
    got = {(o.topic, o.partition): o.offset for o in fetched.offsets}
    want = {(ORDERS, c.partition): c.offset for c in commits}
    check(got == want, f"FetchOffsets of {group}: {got}, committed {want}")
    described = groups.DescribeGroup(groups_pb2.DescribeGroupRequest(group_id=group), timeout=TIMEOUT)
    check(described.state == "Stable" and [m.client_id for m in described.members] == ["python"],
          f"DescribeGroup of {group}: {short(described)}")
    # Silent past its session timeout: removed, and its commit is fenced.
    time.sleep(1.6)
    expect_error(
        "a commit by a member whose session timed out", grpc.StatusCode.ABORTED, ["fenced", group],
        lambda: groups.CommitOffsets(groups_pb2.CommitOffsetsRequest(
            group_id=group, member_id=member.member_id, member_epoch=member.member_epoch, offsets=commits),
            timeout=TIMEOUT),
    )
    again = groups.Heartbeat(join, timeout=TIMEOUT)
    groups.LeaveGroup(groups_pb2.LeaveGroupRequest(group_id=group, member_id=again.member_id), timeout=TIMEOUT)
    described = groups.DescribeGroup(groups_pb2.DescribeGroupRequest(group_id=group), timeout=TIMEOUT)
    check(described.state == "Empty" and len(described.offsets) == ORDERS_PARTITIONS,
          f"after LeaveGroup, {group} is {short(described)}")
    return len(commits)


def main(argv):
    if len(argv) != 2:
        sys.exit(f"usage: {argv[0]} HOST:PORT (a runnel-broker's gRPC address)")
    address = argv[1]
    check_murmur2_vectors()
    channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", RECEIVE_LIMIT)])
    try:
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
    except grpc.FutureTimeoutError:
        sys.exit(f"runnel_client_test: no gRPC server answers on {address} within {TIMEOUT} s")
    broker = broker_pb2_grpc.BrokerStub(channel)
    admin = admin_pb2_grpc.AdminStub(channel)
    groups = groups_pb2_grpc.GroupsStub(channel)

    # Each step stands on its own after the topics exist, so that one run reports every
    # behaviour that differs from the .proto, not only the first.
    steps = [
        ("a. CreateTopic", lambda: create_topics(admin, broker)),
        ("b. Produce without a partition", lambda: produce_with_partitioner(broker)),
        ("b. Produce to a partition", lambda: produce_to_a_partition(broker)),
        ("b. Produce compressed", lambda: produce_compressed(broker)),
        ("c. Fetch mid-batch and Subscribe", lambda: fetch_from_mid_batch(broker)),
        ("d. Errors", lambda: errors(broker)),
        ("e. Reflection and health", lambda: reflection_and_health(channel)),
        ("f. Large fetch", lambda: large_fetch(broker)),
        ("g. A consumer group", lambda: consumer_group(broker, groups)),
    ]
    results, failures = {}, []
    for name, step in steps:
        try:
            results[name] = step()
        except CheckFailed as e:
            failures.append(f"{name}: {e}")
        except grpc.RpcError as e:
            failures.append(f"{name}: unexpected {e.code().name}: {e.details()!r}")
        except Exception:  # an answer the checks could not even read: say where
            failures.append(f"{name}: {traceback.format_exc(limit=-2).strip()}")
        if failures and name.startswith("a."):
            break
    channel.close()

    if failures:
        print(f"runnel_client_test: {len(failures)} of {len(steps)} steps FAILED against {address}:", file=sys.stderr)
        for f in failures:
            print(f"  FAILED {f}", file=sys.stderr)
        sys.exit(1)
    keyed, keyless = results["b. Produce without a partition"]
    asked, end = results["c. Fetch mid-batch and Subscribe"]
    large_bytes, large_batches = results["f. Large fetch"]
    print(
        f"runnel_client_test: {CHECKS[0]} checks passed against {address} with grpcio {grpc.__version__}: "
        f"topics {results['a. CreateTopic']}; {keyed} keyed records on murmur2's partitions, "
        f"{keyless} keyless on one, keyless requests in turn, an explicit partition, "
        f"{'/'.join(results['b. Produce compressed'])}; decoded fetch and Subscribe from offset "
        f"{asked} mid-batch to {end}; NOT_FOUND, OUT_OF_RANGE, INVALID_ARGUMENT, producer epoch bump; "
        f"reflection v1alpha ({results['e. Reflection and health']} services) and health SERVING; "
        f"a {FETCH_MAX_BYTES >> 20} MiB fetch of {large_bytes} bytes in {large_batches} batches; "
        f"a consumer group joined, committed {results['g. A consumer group']} offsets, was fenced and left"
    )


if __name__ == "__main__":
    main(sys.argv)
