//! What a produced batch must be before a partition stores it: Kafka's broker-side validation.
//! Pure and allocation-free for uncompressed batches; run before the partition's lock is taken.

use super::{LogConfig, LogError};
use runnel_codec::{self as codec, BatchHeader, CodecError};

/// Checks one produced batch: its size against `max.message.bytes`, its header and CRC, that it
/// is exactly one batch, that it holds records, that `lastOffsetDelta` is its records count
/// minus one (its offsets are its own, not the client's choice), that it is neither
/// transactional nor a control batch, and every record's framing (a compressed batch is
/// inflated to check it). A batch that passes is one every reader can parse.
pub fn check_batch(batch: &[u8], config: &LogConfig) -> Result<BatchHeader, LogError> {
    if batch.len() > config.max_message_bytes {
        return Err(LogError::BatchTooLarge {
            size: batch.len(),
            max: config.max_message_bytes,
        });
    }
    let h = codec::validate_batch(batch)?;
    if h.total_len() != batch.len() {
        return Err(CodecError::MalformedRecord(format!(
            "{} trailing bytes after the batch",
            batch.len() - h.total_len()
        ))
        .into());
    }
    if h.records_count == 0 {
        return Err(LogError::EmptyProduce);
    }
    if i64::from(h.last_offset_delta) != i64::from(h.records_count) - 1 {
        return Err(LogError::OffsetDeltaMismatch {
            last_offset_delta: h.last_offset_delta,
            records_count: h.records_count,
        });
    }
    if h.is_transactional() || h.is_control() {
        return Err(LogError::Unsupported(
            "transactional and control batches are not supported",
        ));
    }
    let checked = codec::validate_records(batch, &h, codec::MAX_UNCOMPRESSED_LEN)?;
    if config.compact && checked.keyless > 0 {
        return Err(LogError::KeylessInCompactedTopic {
            keyless: checked.keyless,
        });
    }
    Ok(h)
}

/// Checks every batch of a request; the first failure is named by its place in the request.
pub(crate) fn check_batches<B: AsRef<[u8]>>(
    batches: &[B],
    config: &LogConfig,
) -> Result<Vec<BatchHeader>, LogError> {
    if batches.is_empty() {
        return Err(LogError::EmptyProduce);
    }
    batches
        .iter()
        .enumerate()
        .map(|(i, b)| check_batch(b.as_ref(), config).map_err(|e| in_batch(i, batches.len(), e)))
        .collect()
}

/// Names the batch an error is about when a request carries several.
pub(crate) fn in_batch(index: usize, count: usize, e: LogError) -> LogError {
    if count <= 1 {
        return e;
    }
    LogError::InBatch {
        index,
        count,
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, Bytes};
    use runnel_codec::{BatchBuilder, Compression};

    fn batch(compression: Compression, n: usize) -> Bytes {
        let mut b = BatchBuilder::new(compression, 0);
        for i in 0..n {
            b.append(0, Some(format!("k{i}").as_bytes()), Some(b"value"), &[]);
        }
        b.build().expect("build")
    }

    /// Rewrites bytes covered by the CRC and fixes the CRC, as a client with a bug (or a
    /// hostile one) would send them.
    fn with_valid_crc(mut b: Vec<u8>) -> Vec<u8> {
        let crc = codec::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn batches_with_a_valid_crc_but_bad_records_are_refused() {
        let good = batch(Compression::None, 3).to_vec();
        check_batch(&good, &LogConfig::default()).expect("good");

        // recordsCount says 4, the section holds 3 (lastOffsetDelta adjusted to match).
        let mut count = good.clone();
        count[57..61].copy_from_slice(&4i32.to_be_bytes());
        count[23..27].copy_from_slice(&3i32.to_be_bytes());
        let e = check_batch(&with_valid_crc(count), &LogConfig::default()).expect_err("count");
        assert!(e.to_string().contains("says 4 records"), "{e}");

        // lastOffsetDelta that is not recordsCount - 1.
        let mut delta = good.clone();
        delta[23..27].copy_from_slice(&9i32.to_be_bytes());
        let e = check_batch(&with_valid_crc(delta), &LogConfig::default()).expect_err("delta");
        assert!(matches!(e, LogError::OffsetDeltaMismatch { .. }), "{e}");

        // A record length varint that runs past the batch.
        let mut len = good.clone();
        len[61] = 0x7e;
        let e = check_batch(&with_valid_crc(len), &LogConfig::default()).expect_err("len");
        assert!(e.to_string().contains("record #0"), "{e}");

        // A gzip payload that does not inflate.
        let mut gz = batch(Compression::Gzip, 3).to_vec();
        let n = gz.len();
        for b in &mut gz[n - 12..n - 4] {
            *b ^= 0xa5;
        }
        let e = check_batch(&with_valid_crc(gz), &LogConfig::default()).expect_err("gzip");
        assert!(e.to_string().contains("gzip"), "{e}");
    }

    #[test]
    fn a_request_names_the_batch_that_failed() {
        let good = batch(Compression::None, 1);
        let mut bad = good.to_vec();
        bad.put_u8(0);
        let e = check_batches(
            &[good.clone(), good, Bytes::from(bad)],
            &LogConfig::default(),
        )
        .expect_err("bad third");
        assert!(e.to_string().starts_with("batch 2 of 3"), "{e}");
    }
}
