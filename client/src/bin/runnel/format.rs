//! Pure helpers of the command line: splitting input lines, rendering records and tables.

use base64::Engine as _;
use runnel_client::ConsumerRecord;
use serde_json::{json, Value};

/// Strips the line ending (`\n` or `\r\n`) that `read_until` leaves on a line.
pub(crate) fn trim_line_end(mut line: &[u8]) -> &[u8] {
    if let Some(rest) = line.strip_suffix(b"\n") {
        line = rest;
        if let Some(rest) = line.strip_suffix(b"\r") {
            line = rest;
        }
    }
    line
}

/// Splits a line into key and value at the first occurrence of `separator`; `None` when the
/// separator does not occur (or is empty).
pub(crate) fn split_key_value<'a>(
    line: &'a [u8],
    separator: &[u8],
) -> Option<(&'a [u8], &'a [u8])> {
    if separator.is_empty() || separator.len() > line.len() {
        return None;
    }
    let at = line.windows(separator.len()).position(|w| w == separator)?;
    Some((&line[..at], &line[at + separator.len()..]))
}

/// Bytes as JSON: a string when they are UTF-8, else base64; with the encoding's name.
pub(crate) fn bytes_json(b: Option<&[u8]>) -> (Value, Value) {
    match b {
        None => (Value::Null, Value::Null),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => (Value::String(s.to_owned()), Value::String("utf8".into())),
            Err(_) => (
                Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
                Value::String("base64".into()),
            ),
        },
    }
}

/// One consumed record as a JSON object (one line of `runnel consume --output json`).
pub(crate) fn record_json(r: &ConsumerRecord) -> Value {
    let (key, key_encoding) = bytes_json(r.key.as_deref());
    let (value, value_encoding) = bytes_json(r.value.as_deref());
    let headers: Vec<Value> = r
        .headers
        .iter()
        .map(|h| {
            let (v, enc) = bytes_json(h.value.as_deref());
            json!({ "key": h.key, "value": v, "value_encoding": enc })
        })
        .collect();
    json!({
        "topic": &*r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "timestamp": r.timestamp,
        "key": key,
        "key_encoding": key_encoding,
        "value": value,
        "value_encoding": value_encoding,
        "headers": headers,
    })
}

/// A piece of a `--format` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Literal(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Timestamp,
    Key,
    Value,
}

/// A parsed `--format` template: `%T` topic, `%p` partition, `%o` offset,
/// `%t` timestamp, `%k` key, `%v` value, `%%` a percent sign; `\n`, `\t`, `\\` escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template(Vec<Piece>);

impl Template {
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut lit = Vec::new();
        let mut chars = s.chars().peekable();
        let flush = |lit: &mut Vec<u8>, pieces: &mut Vec<Piece>| {
            if !lit.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(lit)));
            }
        };
        while let Some(c) = chars.next() {
            match c {
                '%' => {
                    let piece = match chars.next() {
                        Some('T') => Piece::Topic,
                        Some('p') => Piece::Partition,
                        Some('o') => Piece::Offset,
                        Some('t') => Piece::Timestamp,
                        Some('k') => Piece::Key,
                        Some('v') => Piece::Value,
                        Some('%') => {
                            lit.push(b'%');
                            continue;
                        }
                        Some(other) => {
                            return Err(format!(
                                "unknown placeholder `%{other}` in format (known: %T %p %o %t %k %v %%)"
                            ))
                        }
                        None => return Err("format ends with a lone `%`".into()),
                    };
                    flush(&mut lit, &mut pieces);
                    pieces.push(piece);
                }
                '\\' => match chars.next() {
                    Some('n') => lit.push(b'\n'),
                    Some('t') => lit.push(b'\t'),
                    Some('\\') => lit.push(b'\\'),
                    Some(other) => {
                        lit.push(b'\\');
                        let mut buf = [0u8; 4];
                        lit.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                    }
                    None => lit.push(b'\\'),
                },
                c => {
                    let mut buf = [0u8; 4];
                    lit.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        flush(&mut lit, &mut pieces);
        Ok(Template(pieces))
    }

    /// Renders one record (no line end; the caller adds it). Null keys and values print as
    /// `null`, as Kafka's console consumer does.
    pub(crate) fn render(&self, r: &ConsumerRecord, out: &mut Vec<u8>) {
        for p in &self.0 {
            match p {
                Piece::Literal(l) => out.extend_from_slice(l),
                Piece::Topic => out.extend_from_slice(r.topic.as_bytes()),
                Piece::Partition => out.extend_from_slice(r.partition.to_string().as_bytes()),
                Piece::Offset => out.extend_from_slice(r.offset.to_string().as_bytes()),
                Piece::Timestamp => out.extend_from_slice(r.timestamp.to_string().as_bytes()),
                Piece::Key => out.extend_from_slice(r.key.as_deref().unwrap_or(b"null")),
                Piece::Value => out.extend_from_slice(r.value.as_deref().unwrap_or(b"null")),
            }
        }
    }
}

/// Renders rows as a left-aligned table with a header, columns two spaces apart.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.len());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let n = cells.len();
        for (i, cell) in cells.into_iter().enumerate() {
            out.push_str(cell);
            if i + 1 < n {
                out.push_str(&" ".repeat(widths[i] - cell.len() + 2));
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for row in rows {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// A list of broker ids as `1,2,3`.
pub(crate) fn ids(v: &[i32]) -> String {
    v.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use runnel_client::Header;
    use std::sync::Arc;

    fn record() -> ConsumerRecord {
        ConsumerRecord {
            topic: Arc::from("orders"),
            partition: 2,
            offset: 42,
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::from_static(b"k1")),
            value: Some(Bytes::from_static(b"hello")),
            headers: vec![Header::new("h", Bytes::from_static(&[0xff, 0x00]))],
        }
    }

    #[test]
    fn line_ends_are_trimmed() {
        assert_eq!(trim_line_end(b"abc\n"), b"abc");
        assert_eq!(trim_line_end(b"abc\r\n"), b"abc");
        assert_eq!(trim_line_end(b"abc"), b"abc");
        assert_eq!(trim_line_end(b"\n"), b"");
    }

    #[test]
    fn lines_split_at_the_first_separator() {
        assert_eq!(
            split_key_value(b"k:v:w", b":"),
            Some((&b"k"[..], &b"v:w"[..]))
        );
        assert_eq!(
            split_key_value(b"key::value", b"::"),
            Some((&b"key"[..], &b"value"[..]))
        );
        assert_eq!(split_key_value(b":v", b":"), Some((&b""[..], &b"v"[..])));
        assert_eq!(split_key_value(b"k:", b":"), Some((&b"k"[..], &b""[..])));
        assert_eq!(split_key_value(b"no separator", b":"), None);
        assert_eq!(split_key_value(b"", b":"), None);
        assert_eq!(split_key_value(b"a", b""), None);
    }

    #[test]
    fn json_records_name_their_encoding() {
        let j = record_json(&record());
        assert_eq!(j["partition"], 2);
        assert_eq!(j["offset"], 42);
        assert_eq!(j["key"], "k1");
        assert_eq!(j["key_encoding"], "utf8");
        assert_eq!(j["value"], "hello");
        assert_eq!(j["headers"][0]["key"], "h");
        assert_eq!(j["headers"][0]["value"], "/wA=");
        assert_eq!(j["headers"][0]["value_encoding"], "base64");
        let mut r = record();
        r.key = None;
        r.value = Some(Bytes::from_static(&[0xc3, 0x28]));
        let j = record_json(&r);
        assert!(j["key"].is_null());
        assert!(j["key_encoding"].is_null());
        assert_eq!(j["value"], "wyg=");
        assert_eq!(j["value_encoding"], "base64");
    }

    #[test]
    fn templates_render_placeholders() {
        let t = Template::parse("%T/%p@%o %t %k=%v 100%%\\t!").expect("valid");
        let mut out = Vec::new();
        t.render(&record(), &mut out);
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "orders/2@42 1700000000000 k1=hello 100%\t!"
        );
        let mut r = record();
        r.key = None;
        let mut out = Vec::new();
        Template::parse("%k|%v")
            .expect("valid")
            .render(&r, &mut out);
        assert_eq!(out, b"null|hello");
        assert!(Template::parse("%x").expect_err("unknown").contains("%x"));
        assert!(Template::parse("50%").is_err());
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["PARTITION", "OFFSET"],
            &[
                vec!["0".into(), "12345".into()],
                vec!["10".into(), "7".into()],
            ],
        );
        assert_eq!(t, "PARTITION  OFFSET\n0          12345\n10         7\n");
        assert_eq!(ids(&[1, 2, 3]), "1,2,3");
        assert_eq!(ids(&[]), "");
    }
}
