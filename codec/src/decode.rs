//! Full decoding: decompression and every record.

use bytes::Bytes;

use crate::compression::decompress;
use crate::varint::{get_varint, get_varlong};
use crate::{
    validate_batch, BatchHeader, CodecError, Compression, Header, Record, TimestampType,
    BATCH_HEADER_LEN,
};

/// The most bytes a compressed records section may inflate to in [`decode_batch`] and
/// [`decode_batch_bytes`] (256 MiB): a bound on what a small hostile batch can make a reader
/// allocate. Use [`decode_batch_with_limit`] for another bound.
pub const MAX_UNCOMPRESSED_LEN: usize = 256 << 20;

/// The smallest encoded record: length, attributes, timestamp delta, offset delta, key length,
/// value length and header count, one byte each.
const MIN_RECORD_LEN: usize = 7;

/// Full decode including decompression and every record; checks the header as
/// [`validate_batch`] does, each record's framing, and that the records count matches.
///
/// Keys and values of the returned records share one buffer per batch (no copy per record).
/// A log-append-time batch reports `maxTimestamp` as every record's timestamp, as Kafka does.
pub fn decode_batch(buf: &[u8]) -> Result<(BatchHeader, Vec<Record>), CodecError> {
    decode(buf, None, MAX_UNCOMPRESSED_LEN)
}

/// Like [`decode_batch`], but keys and values of an uncompressed batch point into `batch`
/// itself instead of a copy.
pub fn decode_batch_bytes(batch: &Bytes) -> Result<(BatchHeader, Vec<Record>), CodecError> {
    decode(batch, Some(batch), MAX_UNCOMPRESSED_LEN)
}

/// Like [`decode_batch`], with a caller-chosen bound on the decompressed records size.
pub fn decode_batch_with_limit(
    buf: &[u8],
    max_uncompressed_len: usize,
) -> Result<(BatchHeader, Vec<Record>), CodecError> {
    decode(buf, None, max_uncompressed_len)
}

fn decode(
    buf: &[u8],
    shared: Option<&Bytes>,
    limit: usize,
) -> Result<(BatchHeader, Vec<Record>), CodecError> {
    let header = validate_batch(buf)?;
    let total = header.total_len();
    let data = match header.compression()? {
        Compression::None => match shared {
            Some(bytes) => bytes.slice(BATCH_HEADER_LEN..total),
            None => Bytes::copy_from_slice(&buf[BATCH_HEADER_LEN..total]),
        },
        codec => Bytes::from(decompress(codec, &buf[BATCH_HEADER_LEN..total], limit)?),
    };
    let records = decode_records(&header, &data)?;
    Ok((header, records))
}

/// Decodes records until `data` is used up, then compares the count with the header's.
fn decode_records(header: &BatchHeader, data: &Bytes) -> Result<Vec<Record>, CodecError> {
    let expected = usize::try_from(header.records_count).unwrap_or(0);
    let mut records = Vec::with_capacity(expected.min(data.len() / MIN_RECORD_LEN));
    let log_append_time = header.timestamp_type() == TimestampType::LogAppendTime;
    walk_records(header, data, |raw| {
        let headers = raw
            .headers()
            .map(|(key, value)| Header {
                key: key.to_owned(),
                value: value.map(|v| data.slice_ref(v)),
            })
            .collect();
        let timestamp = if log_append_time {
            header.max_timestamp
        } else {
            header.base_timestamp.wrapping_add(raw.timestamp_delta)
        };
        records.push(Record {
            offset: header.base_offset.wrapping_add(i64::from(raw.offset_delta)),
            timestamp,
            key: raw.key.map(|k| data.slice_ref(k)),
            value: raw.value.map(|v| data.slice_ref(v)),
            headers,
        });
        Ok(())
    })?;
    Ok(records)
}

/// Checks every record of a batch whose header [`validate_batch`] has accepted, as a broker
/// does before it stores the batch: each record's framing (length, varints, key, value,
/// headers with UTF-8 keys, no bytes left over), offset deltas `0, 1, 2, …` in order (the
/// batch's own offsets, as Kafka's broker requires), and a records count that matches the
/// header. A compressed batch is inflated to check it, at most to `max_uncompressed_len`
/// bytes. Nothing is allocated for an uncompressed batch. Returns what a topic's rules may
/// still refuse (records without a key, in a compacted topic).
pub fn validate_records(
    batch: &[u8],
    header: &BatchHeader,
    max_uncompressed_len: usize,
) -> Result<RecordsChecked, CodecError> {
    let total = header.total_len();
    let Some(section) = batch.get(BATCH_HEADER_LEN..total) else {
        return Err(CodecError::Truncated {
            needed: total,
            available: batch.len(),
        });
    };
    let inflated;
    let data = match header.compression()? {
        Compression::None => section,
        codec => {
            inflated = decompress(codec, section, max_uncompressed_len)?;
            &inflated[..]
        }
    };
    let mut expected_delta = 0i32;
    let mut checked = RecordsChecked::default();
    walk_records(header, data, |raw| {
        if raw.key.is_none() {
            checked.keyless += 1;
        }
        if raw.offset_delta != expected_delta {
            return Err(format!(
                "offset delta {} where {expected_delta} was due: a batch's records carry offset deltas 0, 1, 2, … in order",
                raw.offset_delta
            ));
        }
        expected_delta = expected_delta.wrapping_add(1);
        Ok(())
    })?;
    Ok(checked)
}

/// What [`validate_records`] saw besides framing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordsChecked {
    /// Records whose key is null.
    pub keyless: u32,
}

/// One record as [`retain_records`] shows it to its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// The record's offset.
    pub offset: i64,
    /// The record's timestamp (create time; the batch's for log-append-time batches).
    pub timestamp: i64,
    /// The key, `None` when null.
    pub key: Option<&'a [u8]>,
    /// Whether the value is null: a tombstone in a compacted topic.
    pub tombstone: bool,
}

/// Rewrites a batch keeping only the records `keep` accepts, as log compaction does: the header
/// (base offset, `lastOffsetDelta`, timestamps, producer id, epoch and base sequence) and each
/// kept record's bytes stay as they are, so no offset moves; the records are compressed again
/// with the batch's codec; the records count, length and CRC are new. `None` when every record
/// is kept. The batch may end up with no records (a compacted batch kept for its producer).
pub fn retain_records(
    batch: &[u8],
    max_uncompressed_len: usize,
    mut keep: impl FnMut(&RecordView<'_>) -> bool,
) -> Result<Option<Vec<u8>>, CodecError> {
    let header = validate_batch(batch)?;
    let total = header.total_len();
    let section = &batch[BATCH_HEADER_LEN..total];
    let codec = header.compression()?;
    let inflated;
    let data = match codec {
        Compression::None => section,
        c => {
            inflated = decompress(c, section, max_uncompressed_len)?;
            &inflated[..]
        }
    };
    let log_append_time = header.timestamp_type() == TimestampType::LogAppendTime;
    let mut kept: Vec<u8> = Vec::with_capacity(data.len());
    let mut kept_count = 0i32;
    let mut dropped = false;
    let mut rest = data;
    let mut index = 0usize;
    while !rest.is_empty() {
        let before = rest;
        let raw = parse_record(&mut rest).map_err(|msg| {
            CodecError::MalformedRecord(format!("record #{index} of a stored batch: {msg}"))
        })?;
        index += 1;
        let view = RecordView {
            offset: header.base_offset.wrapping_add(i64::from(raw.offset_delta)),
            timestamp: if log_append_time {
                header.max_timestamp
            } else {
                header.base_timestamp.wrapping_add(raw.timestamp_delta)
            },
            key: raw.key,
            tombstone: raw.value.is_none(),
        };
        if keep(&view) {
            kept.extend_from_slice(&before[..before.len() - rest.len()]);
            kept_count += 1;
        } else {
            dropped = true;
        }
    }
    if !dropped {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + kept.len());
    out.extend_from_slice(&batch[..BATCH_HEADER_LEN]);
    match codec {
        Compression::None => out.extend_from_slice(&kept),
        c => crate::compression::compress(c, &kept, &mut out)?,
    }
    let mut h = header;
    h.batch_length = i32::try_from(out.len() - crate::header::LOG_OVERHEAD)
        .map_err(|_| CodecError::TooLarge(format!("{} bytes", out.len())))?;
    h.records_count = kept_count;
    crate::header::write_header(&mut out, &h);
    Ok(Some(out))
}

/// A record's fields as slices of the records section, before anything is copied.
#[derive(Debug, Clone, Copy)]
struct RawRecord<'a> {
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers_count: usize,
    /// The header bytes, whose framing [`parse_record`] has checked.
    headers: &'a [u8],
}

impl<'a> RawRecord<'a> {
    /// The headers, as (UTF-8 key, value). Their framing was checked when the record was parsed.
    fn headers(&self) -> impl Iterator<Item = (&'a str, Option<&'a [u8]>)> + 'a {
        let mut rest = self.headers;
        (0..self.headers_count).map_while(move |_| take_header(&mut rest).ok())
    }
}

/// Parses the records of a section one after another until it is used up, hands each to
/// `visit` (which may refuse it), and checks the count against the header's. Errors name the
/// record.
fn walk_records<'a>(
    header: &BatchHeader,
    data: &'a [u8],
    mut visit: impl FnMut(RawRecord<'a>) -> Result<(), String>,
) -> Result<(), CodecError> {
    let count = header.records_count;
    let mut rest = data;
    let mut seen = 0usize;
    while !rest.is_empty() {
        parse_record(&mut rest)
            .and_then(&mut visit)
            .map_err(|msg| {
                CodecError::MalformedRecord(format!(
                    "record #{seen} of a batch whose header says {count} records: {msg}"
                ))
            })?;
        seen += 1;
    }
    if usize::try_from(count).ok() != Some(seen) {
        return Err(CodecError::RecordCountMismatch {
            header: count,
            decoded: seen,
        });
    }
    Ok(())
}

/// Takes a length-prefixed, nullable byte string (`-1` = null) off the front of `b`.
fn take_nullable<'a>(b: &mut &'a [u8], what: &str) -> Result<Option<&'a [u8]>, String> {
    let len = get_varint(b).map_err(|e| format!("{what} length: {e}"))?;
    if len == -1 {
        return Ok(None);
    }
    let Ok(len) = usize::try_from(len) else {
        return Err(format!("invalid {what} length {len}"));
    };
    if len > b.len() {
        return Err(format!(
            "{what} length {len} exceeds the {} bytes left in the record",
            b.len()
        ));
    }
    let (v, tail) = b.split_at(len);
    *b = tail;
    Ok(Some(v))
}

/// Takes one header (a non-null UTF-8 key and a nullable value) off the front of `b`.
fn take_header<'a>(b: &mut &'a [u8]) -> Result<(&'a str, Option<&'a [u8]>), String> {
    let Some(key) = take_nullable(b, "header key")? else {
        return Err("null key".to_owned());
    };
    let key = std::str::from_utf8(key).map_err(|e| format!("key is not UTF-8: {e}"))?;
    let value = take_nullable(b, "header value")?;
    Ok((key, value))
}

/// Parses the record at the front of `rest`, advancing `rest` past it.
fn parse_record<'a>(rest: &mut &'a [u8]) -> Result<RawRecord<'a>, String> {
    let len = get_varint(rest).map_err(|e| format!("length: {e}"))?;
    let Some(len) = usize::try_from(len).ok().filter(|l| *l <= rest.len()) else {
        return Err(format!(
            "record length {len} does not fit the {} bytes left in the batch",
            rest.len()
        ));
    };
    let (mut b, tail) = rest.split_at(len);
    *rest = tail;

    let Some((_attributes, tail)) = b.split_first() else {
        return Err("empty record (no attributes byte)".to_owned());
    };
    b = tail;
    let timestamp_delta = get_varlong(&mut b).map_err(|e| format!("timestamp delta: {e}"))?;
    let offset_delta = get_varint(&mut b).map_err(|e| format!("offset delta: {e}"))?;
    let key = take_nullable(&mut b, "key")?;
    let value = take_nullable(&mut b, "value")?;

    let headers_count = get_varint(&mut b).map_err(|e| format!("headers count: {e}"))?;
    let Ok(headers_count) = usize::try_from(headers_count) else {
        return Err(format!("invalid headers count {headers_count}"));
    };
    let headers = b;
    for i in 0..headers_count {
        take_header(&mut b).map_err(|e| format!("header #{i}: {e}"))?;
    }
    if !b.is_empty() {
        return Err(format!(
            "{} unread bytes after the headers (record length {len})",
            b.len()
        ));
    }
    Ok(RawRecord {
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers_count,
        headers,
    })
}
