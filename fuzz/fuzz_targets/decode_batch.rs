//! Arbitrary bytes into every reading function of the codec: nothing may panic.
//!
//! Run with `cargo +nightly fuzz run decode_batch` from `fuzz/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runnel_codec::{
    decode_batch, read_header, set_log_append_time, split_batches, split_batches_lenient,
    validate_batch, BATCH_HEADER_LEN,
};

/// Decodes `buf` and checks what the decoder accepts against the header.
fn check(buf: &[u8]) {
    let header = read_header(buf);
    if let Ok(valid) = validate_batch(buf) {
        assert_eq!(header.ok(), Some(valid));
        assert!(valid.total_len() <= buf.len());
        if let Ok((h, records)) = decode_batch(buf) {
            assert_eq!(h, valid);
            assert_eq!(records.len(), h.records_count as usize);
        }
        let mut copy = buf.to_vec();
        assert!(set_log_append_time(&mut copy, 1).is_ok());
        assert!(validate_batch(&copy).is_ok());
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);

    // A fuzzer rarely guesses a CRC-32C, so also try the input with its CRC fixed up: that
    // lets mutations reach the decompressors and the record decoder.
    if data.len() >= BATCH_HEADER_LEN {
        let mut fixed = data.to_vec();
        let len = i32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);
        let end = usize::try_from(len)
            .ok()
            .map(|l| l.saturating_add(12))
            .filter(|end| (21..=fixed.len()).contains(end))
            .unwrap_or(fixed.len());
        let crc = runnel_codec::crc32c(&fixed[21..end]);
        fixed[17..21].copy_from_slice(&crc.to_be_bytes());
        check(&fixed);
    }

    let mut yielded = 0;
    for batch in split_batches(data) {
        match batch {
            Ok(b) => {
                yielded += b.len();
                let _ = decode_batch(b);
            }
            Err(_) => break,
        }
    }
    assert!(yielded <= data.len());
    let mut lenient = split_batches_lenient(data);
    let whole: usize = lenient
        .by_ref()
        .filter_map(Result::ok)
        .map(<[u8]>::len)
        .sum();
    assert_eq!(whole + lenient.remainder().len(), data.len());
});
