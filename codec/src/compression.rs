//! The compression codecs of the records section: gzip, snappy (xerial-framed), lz4 (frame
//! format) and zstd, with Kafka's Java client's choices so that batches interoperate.

use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;

use crate::CodecError;

/// The compression codec of a batch's records section (attribute bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Compression {
    /// Records stored as they are.
    #[default]
    None,
    /// gzip (RFC 1952), compression level 6 like `java.util.zip.GZIPOutputStream`.
    Gzip,
    /// Snappy, written in xerial-java framing like Kafka's Java client; raw snappy is also read.
    Snappy,
    /// LZ4 frame format with independent 64 KiB blocks, as Kafka writes it.
    Lz4,
    /// Zstandard frame format, level 3 (Kafka's default).
    Zstd,
}

/// Mask of the compression codec in the batch attributes.
const COMPRESSION_MASK: i16 = 0x07;

impl Compression {
    /// Every codec, in attribute-code order.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// Extracts the codec from a batch's attributes (bits 0-2).
    pub fn from_attributes(attributes: i16) -> Result<Self, CodecError> {
        match attributes & COMPRESSION_MASK {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            other => Err(CodecError::UnknownCompression(other)),
        }
    }

    /// The codec's bits in the batch attributes.
    pub fn attribute_bits(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The codec's name as Kafka's `compression.type` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = CodecError;

    /// Parses `none`, `gzip`, `snappy`, `lz4` or `zstd` (ASCII case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Compression::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| CodecError::UnknownCompressionName(s.to_owned()))
    }
}

/// The 8-byte magic of snappy-java's stream format (`SnappyCodec.MAGIC_HEADER`).
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
/// Magic + version 1 + minimum compatible version 1, as `SnappyOutputStream` writes it.
const XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
/// snappy-java's default block size (`SnappyOutputStream.DEFAULT_BLOCK_SIZE`).
const XERIAL_BLOCK_SIZE: usize = 32 * 1024;
/// Kafka's default gzip level (`Deflater.DEFAULT_COMPRESSION`).
const GZIP_LEVEL: u32 = 6;
/// Kafka's default zstd level (`CompressionType.ZSTD.defaultLevel()`).
const ZSTD_LEVEL: i32 = 3;

fn codec_error(codec: Compression, err: impl fmt::Display) -> CodecError {
    CodecError::Compression {
        codec: codec.name(),
        message: err.to_string(),
    }
}

fn limit_error(codec: Compression, limit: usize) -> CodecError {
    CodecError::Compression {
        codec: codec.name(),
        message: format!("decompressed records exceed the limit of {limit} bytes"),
    }
}

/// Compresses `input` with `codec`, appending the result to `out`.
pub(crate) fn compress(
    codec: Compression,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    match codec {
        Compression::None => out.extend_from_slice(input),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
            enc.write_all(input).map_err(|e| codec_error(codec, e))?;
            enc.finish().map_err(|e| codec_error(codec, e))?;
        }
        Compression::Snappy => {
            out.extend_from_slice(XERIAL_HEADER);
            let mut enc = snap::raw::Encoder::new();
            for block in input.chunks(XERIAL_BLOCK_SIZE) {
                let len_at = out.len();
                out.extend_from_slice(&[0; 4]);
                let block_at = out.len();
                out.resize(block_at + snap::raw::max_compress_len(block.len()), 0);
                let n = enc
                    .compress(block, &mut out[block_at..])
                    .map_err(|e| codec_error(codec, e))?;
                out.truncate(block_at + n);
                let n = u32::try_from(n).map_err(|e| codec_error(codec, e))?;
                out[len_at..block_at].copy_from_slice(&n.to_be_bytes());
            }
        }
        Compression::Lz4 => {
            // KafkaLZ4BlockOutputStream: 64 KiB independent blocks, no checksums, no size.
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent)
                .block_checksums(false)
                .content_checksum(false);
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
            enc.write_all(input).map_err(|e| codec_error(codec, e))?;
            enc.finish().map_err(|e| codec_error(codec, e))?;
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)
                .map_err(|e| codec_error(codec, e))?;
            enc.write_all(input).map_err(|e| codec_error(codec, e))?;
            enc.finish().map_err(|e| codec_error(codec, e))?;
        }
    }
    Ok(())
}

/// Reads a decompressing reader to its end, failing once more than `limit` bytes come out.
fn read_limited(
    codec: Compression,
    reader: impl Read,
    limit: usize,
    size_hint: usize,
) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(size_hint.min(limit));
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| codec_error(codec, e))?;
    if out.len() > limit {
        return Err(limit_error(codec, limit));
    }
    Ok(out)
}

/// Decompresses a records section; fails if the output would exceed `limit` bytes, so that a
/// small hostile batch cannot make the decoder allocate without bound.
pub(crate) fn decompress(
    codec: Compression,
    input: &[u8],
    limit: usize,
) -> Result<Vec<u8>, CodecError> {
    // A first guess for the output size; the readers grow it as needed.
    let hint = input.len().saturating_mul(4);
    match codec {
        Compression::None => {
            if input.len() > limit {
                return Err(limit_error(codec, limit));
            }
            Ok(input.to_vec())
        }
        // Java's GZIPInputStream reads concatenated members, so do we.
        Compression::Gzip => {
            read_limited(codec, flate2::read::MultiGzDecoder::new(input), limit, hint)
        }
        Compression::Lz4 => read_limited(
            codec,
            lz4_flex::frame::FrameDecoder::new(input),
            limit,
            hint,
        ),
        Compression::Zstd => {
            let dec = zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|e| codec_error(codec, e))?;
            read_limited(codec, dec, limit, hint)
        }
        Compression::Snappy => {
            if input.starts_with(XERIAL_MAGIC) {
                decompress_xerial(input, limit)
            } else {
                let mut out = Vec::new();
                snappy_raw_into(input, &mut out, limit)?;
                Ok(out)
            }
        }
    }
}

/// Decompresses one raw snappy block, appending to `out` while keeping `out.len() <= limit`.
fn snappy_raw_into(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), CodecError> {
    let codec = Compression::Snappy;
    let n = snap::raw::decompress_len(block).map_err(|e| codec_error(codec, e))?;
    let start = out.len();
    if n > limit.saturating_sub(start) {
        return Err(limit_error(codec, limit));
    }
    out.resize(start + n, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| codec_error(codec, e))?;
    out.truncate(start + written);
    Ok(())
}

/// Decodes snappy-java's stream format: a 16-byte header, then `[i32 length][raw block]`*.
fn decompress_xerial(input: &[u8], limit: usize) -> Result<Vec<u8>, CodecError> {
    let codec = Compression::Snappy;
    let Some(mut rest) = input.get(XERIAL_HEADER.len()..) else {
        return Err(codec_error(codec, "xerial snappy header truncated"));
    };
    let mut out = Vec::with_capacity(input.len().saturating_mul(2).min(limit));
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(codec_error(codec, "xerial snappy block length truncated"));
        };
        let len = i32::from_be_bytes(*len);
        let block = usize::try_from(len)
            .ok()
            .and_then(|len| tail.get(..len))
            .ok_or_else(|| {
                codec_error(
                    codec,
                    format!(
                        "xerial snappy block of {len} bytes, but {} remain",
                        tail.len()
                    ),
                )
            })?;
        snappy_raw_into(block, &mut out, limit)?;
        rest = &tail[block.len()..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Compression::ALL {
            assert_eq!(c.name().parse::<Compression>(), Ok(c));
            assert_eq!(Compression::from_attributes(c.attribute_bits()), Ok(c));
        }
        assert_eq!("ZSTD".parse::<Compression>(), Ok(Compression::Zstd));
        assert_eq!(
            "brotli".parse::<Compression>(),
            Err(CodecError::UnknownCompressionName("brotli".into()))
        );
        assert_eq!(
            Compression::from_attributes(0x0d),
            Err(CodecError::UnknownCompression(5))
        );
    }

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..200_000u32)
            .map(|i| (i % 251) as u8 ^ (i / 1000) as u8)
            .collect();
        for c in Compression::ALL {
            for input in [&data[..], &data[..1], &[][..]] {
                let mut out = Vec::new();
                compress(c, input, &mut out).expect("compress");
                assert_eq!(
                    decompress(c, &out, usize::MAX).expect("decompress"),
                    input,
                    "{c}"
                );
            }
        }
    }

    #[test]
    fn snappy_writes_xerial_frames_and_reads_raw() {
        let data = vec![7u8; 100_000];
        let mut out = Vec::new();
        compress(Compression::Snappy, &data, &mut out).expect("compress");
        assert!(out.starts_with(XERIAL_HEADER));
        // 100_000 bytes = 4 blocks of at most 32 KiB.
        let mut rest = &out[16..];
        let mut blocks = 0;
        while let Some((len, tail)) = rest.split_first_chunk::<4>() {
            let len = u32::from_be_bytes(*len) as usize;
            rest = &tail[len..];
            blocks += 1;
        }
        assert_eq!(blocks, 4);

        let raw = snap::raw::Encoder::new().compress_vec(&data).expect("raw");
        assert_eq!(decompress(Compression::Snappy, &raw, usize::MAX), Ok(data));
    }

    #[test]
    fn decompression_is_bounded() {
        let data = vec![0u8; 1 << 20];
        for c in Compression::ALL {
            let mut out = Vec::new();
            compress(c, &data, &mut out).expect("compress");
            let err = decompress(c, &out, 1000).expect_err("over the limit");
            assert!(matches!(err, CodecError::Compression { .. }), "{c}: {err}");
            assert_eq!(decompress(c, &out, 1 << 20).map(|v| v.len()), Ok(1 << 20));
        }
    }
}
