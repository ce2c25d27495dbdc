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
    let count = header.records_count;
    let expected = usize::try_from(count).unwrap_or(0);
    let mut records = Vec::with_capacity(expected.min(data.len() / MIN_RECORD_LEN));
    let log_append_time = header.timestamp_type() == TimestampType::LogAppendTime;
    let mut rest: &[u8] = data;
    while !rest.is_empty() {
        let record = decode_record(header, log_append_time, data, &mut rest).map_err(|msg| {
            CodecError::MalformedRecord(format!(
                "record #{} of a batch whose header says {count} records: {msg}",
                records.len()
            ))
        })?;
        records.push(record);
    }
    if records.len() != expected || count < 0 {
        return Err(CodecError::RecordCountMismatch {
            header: count,
            decoded: records.len(),
        });
    }
    Ok(records)
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

/// Decodes the record at the front of `rest`, advancing `rest` past it. Keys and values are
/// slices of `data`, which `rest` points into.
fn decode_record(
    header: &BatchHeader,
    log_append_time: bool,
    data: &Bytes,
    rest: &mut &[u8],
) -> Result<Record, String> {
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
    let key = take_nullable(&mut b, "key")?.map(|k| data.slice_ref(k));
    let value = take_nullable(&mut b, "value")?.map(|v| data.slice_ref(v));

    let headers_count = get_varint(&mut b).map_err(|e| format!("headers count: {e}"))?;
    let Ok(headers_count) = usize::try_from(headers_count) else {
        return Err(format!("invalid headers count {headers_count}"));
    };
    // Each header takes at least two bytes (two lengths), which bounds the allocation.
    let mut headers = Vec::with_capacity(headers_count.min(b.len() / 2));
    for i in 0..headers_count {
        let Some(key) = take_nullable(&mut b, "header key")? else {
            return Err(format!("header #{i} has a null key"));
        };
        let key = std::str::from_utf8(key)
            .map_err(|e| format!("header #{i} key is not UTF-8: {e}"))?
            .to_owned();
        let value = take_nullable(&mut b, "header value")?.map(|v| data.slice_ref(v));
        headers.push(Header { key, value });
    }
    if !b.is_empty() {
        return Err(format!(
            "{} unread bytes after the headers (record length {len})",
            b.len()
        ));
    }

    let timestamp = if log_append_time {
        header.max_timestamp
    } else {
        header.base_timestamp.wrapping_add(timestamp_delta)
    };
    Ok(Record {
        offset: header.base_offset.wrapping_add(i64::from(offset_delta)),
        timestamp,
        key,
        value,
        headers,
    })
}
