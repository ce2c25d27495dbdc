//! Zig-zag variable-length integers as used inside Kafka records
//! (protobuf-style base-128, least significant group first).

use crate::CodecError;

#[inline]
fn zigzag32(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

#[inline]
fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Appends `v` as a zig-zag varint (1 to 5 bytes).
#[inline]
pub fn put_varint(buf: &mut Vec<u8>, v: i32) {
    let mut z = zigzag32(v);
    while z >= 0x80 {
        buf.push((z as u8) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

/// Appends `v` as a zig-zag varlong (1 to 10 bytes).
#[inline]
pub fn put_varlong(buf: &mut Vec<u8>, v: i64) {
    let mut z = zigzag64(v);
    while z >= 0x80 {
        buf.push((z as u8) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

/// Reads a zig-zag varint from the front of `buf` and advances it past the varint.
///
/// Fails with [`CodecError::VarintTruncated`] if `buf` ends inside the varint and with
/// [`CodecError::VarintOverflow`] if it is longer than 5 bytes or carries bits beyond 32.
#[inline]
pub fn get_varint(buf: &mut &[u8]) -> Result<i32, CodecError> {
    let mut z: u32 = 0;
    for (i, &b) in buf.iter().enumerate().take(5) {
        if i == 4 && b > 0x0f {
            // Fifth byte: only the low 4 bits fit into 32 bits, and no continuation.
            return Err(CodecError::VarintOverflow);
        }
        z |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Ok(((z >> 1) as i32) ^ -((z & 1) as i32));
        }
    }
    // Every byte present had its continuation bit set (a 5th byte would have returned above).
    Err(CodecError::VarintTruncated)
}

/// Reads a zig-zag varlong from the front of `buf` and advances it past the varlong.
///
/// Fails with [`CodecError::VarintTruncated`] if `buf` ends inside the varlong and with
/// [`CodecError::VarintOverflow`] if it is longer than 10 bytes or carries bits beyond 64.
#[inline]
pub fn get_varlong(buf: &mut &[u8]) -> Result<i64, CodecError> {
    let mut z: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        if i == 9 && b > 0x01 {
            // Tenth byte: only the lowest bit fits into 64 bits, and no continuation.
            return Err(CodecError::VarintOverflow);
        }
        z |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    // Every byte present had its continuation bit set (a 10th byte would have returned above).
    Err(CodecError::VarintTruncated)
}

/// Number of bytes [`put_varint`] writes for `v`.
#[inline]
pub fn varint_len(v: i32) -> usize {
    ((38 - (zigzag32(v) | 1).leading_zeros()) / 7) as usize
}

/// Number of bytes [`put_varlong`] writes for `v`.
#[inline]
pub fn varlong_len(v: i64) -> usize {
    ((70 - (zigzag64(v) | 1).leading_zeros()) / 7) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_encodings() {
        // Values from Kafka's ByteUtilsTest.
        let cases: &[(i32, &[u8])] = &[
            (0, &[0x00]),
            (-1, &[0x01]),
            (1, &[0x02]),
            (63, &[0x7e]),
            (-64, &[0x7f]),
            (64, &[0x80, 0x01]),
            (-65, &[0x81, 0x01]),
            (8191, &[0xfe, 0x7f]),
            (-8192, &[0xff, 0x7f]),
            (i32::MAX, &[0xfe, 0xff, 0xff, 0xff, 0x0f]),
            (i32::MIN, &[0xff, 0xff, 0xff, 0xff, 0x0f]),
        ];
        for &(v, bytes) in cases {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf, bytes, "encoding of {v}");
            assert_eq!(varint_len(v), bytes.len());
            let mut s = bytes;
            assert_eq!(get_varint(&mut s), Ok(v));
            assert!(s.is_empty());
        }
    }

    #[test]
    fn varlong_extremes() {
        for v in [0, -1, 1, i64::MAX, i64::MIN, i64::from(i32::MAX) + 1] {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            assert_eq!(buf.len(), varlong_len(v));
            let mut s = &buf[..];
            assert_eq!(get_varlong(&mut s), Ok(v));
            assert!(s.is_empty());
        }
        let mut buf = Vec::new();
        put_varlong(&mut buf, i64::MIN);
        assert_eq!(buf.len(), 10);
    }

    #[test]
    fn errors() {
        assert_eq!(get_varint(&mut &[][..]), Err(CodecError::VarintTruncated));
        assert_eq!(
            get_varint(&mut &[0x80, 0x80][..]),
            Err(CodecError::VarintTruncated)
        );
        assert_eq!(
            get_varint(&mut &[0x80, 0x80, 0x80, 0x80, 0x80, 0x00][..]),
            Err(CodecError::VarintOverflow)
        );
        assert_eq!(
            get_varint(&mut &[0xff, 0xff, 0xff, 0xff, 0x1f][..]),
            Err(CodecError::VarintOverflow)
        );
        assert_eq!(
            get_varlong(&mut &[0xff; 9][..]),
            Err(CodecError::VarintTruncated)
        );
        assert_eq!(
            get_varlong(&mut &[0xff; 11][..]),
            Err(CodecError::VarintOverflow)
        );
        let mut ten = [0xffu8; 10];
        ten[9] = 0x02;
        assert_eq!(get_varlong(&mut &ten[..]), Err(CodecError::VarintOverflow));
    }
}
