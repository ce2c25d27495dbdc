//! The new user's journey with the `runnel` CLI against a real broker: create a topic with 3
//! partitions, produce 100,000 keyed lines from stdin, consume them back in order per partition,
//! restart the broker, consume again from the beginning: same records, same offsets. Plus the
//! CLI's errors: clear message, non-zero exit.

use runnel_integration::{runnel, Broker};
use std::collections::BTreeMap;

const LINES: usize = 100_000;

/// Arguments, stdin, and what stderr must say.
type CliCase<'a> = (Vec<&'a str>, Option<&'a [u8]>, &'a str);

/// (partition, offset, key, value) of every record, from `runnel consume --output json`.
fn consume_all(addr: &str) -> anyhow::Result<Vec<(i64, i64, String, String)>> {
    let (status, out, err) = runnel(
        addr,
        &[
            "--output",
            "json",
            "consume",
            "orders",
            "--from-beginning",
            "--max-messages",
            &LINES.to_string(),
            "--timeout-ms",
            "20000",
        ],
        None,
    )?;
    assert!(status.success(), "consume failed: {err}");
    let mut records = Vec::new();
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        records.push((
            v["partition"].as_i64().unwrap_or(-1),
            v["offset"].as_i64().unwrap_or(-1),
            v["key"].as_str().unwrap_or_default().to_string(),
            v["value"].as_str().unwrap_or_default().to_string(),
        ));
    }
    Ok(records)
}

#[test]
fn produce_consume_restart_with_the_cli() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::start(&dir.path().join("data"), &[])?;
    let addr = broker.address.clone();

    let (status, _, err) = runnel(
        &addr,
        &["topic", "create", "orders", "--partitions", "3"],
        None,
    )?;
    assert!(status.success(), "{err}");
    let (status, out, _) = runnel(&addr, &["topic", "list"], None)?;
    assert!(status.success() && out.contains("orders"), "{out}");

    // 100,000 lines "key:value"; 50 distinct keys, so every partition gets records.
    let mut input = String::new();
    for i in 0..LINES {
        input.push_str(&format!("user-{}:event-{i:06}\n", i % 50));
    }
    let (status, out, err) = runnel(
        &addr,
        &["produce", "orders", "--key-separator", ":"],
        Some(input.as_bytes()),
    )?;
    assert!(status.success(), "produce failed: {err}");
    assert!(
        err.contains(&format!("produced {LINES} records")),
        "stderr: {err} stdout: {out}"
    );

    let first = consume_all(&addr)?;
    assert_eq!(first.len(), LINES);
    // Per partition: offsets 0.. with no gaps, and each key's values in the order produced;
    // one key always lands in one partition.
    let mut by_partition: BTreeMap<i64, Vec<&(i64, i64, String, String)>> = BTreeMap::new();
    for r in &first {
        by_partition.entry(r.0).or_default().push(r);
    }
    assert_eq!(by_partition.len(), 3, "all three partitions used");
    let mut key_partition: BTreeMap<&str, i64> = BTreeMap::new();
    let mut last_value: BTreeMap<&str, &str> = BTreeMap::new();
    for (p, records) in &by_partition {
        for (i, r) in records.iter().enumerate() {
            assert_eq!(
                r.1, i as i64,
                "partition {p}: offsets are contiguous from 0"
            );
            assert_eq!(
                *key_partition.entry(&r.2).or_insert(*p),
                *p,
                "key {} in two partitions",
                r.2
            );
            if let Some(prev) = last_value.insert(&r.2, &r.3) {
                assert!(prev < r.3.as_str(), "key {}: {} after {}", r.2, r.3, prev);
            }
        }
    }

    // The same records at the same offsets after a restart.
    let status = broker.terminate()?;
    assert!(status.success());
    broker.restart()?;
    let mut second = consume_all(&broker.address)?;
    let mut first_sorted = first.clone();
    first_sorted.sort();
    second.sort();
    assert_eq!(first_sorted, second);

    // offsets and describe agree with what was produced.
    let (status, out, err) = runnel(
        &broker.address,
        &["--output", "json", "offsets", "orders"],
        None,
    )?;
    assert!(status.success(), "{err}");
    let total: i64 = serde_json::from_str::<serde_json::Value>(out.trim())
        .map(|v| {
            v.as_array()
                .or_else(|| v["partitions"].as_array())
                .map(|a| a.iter().map(|p| p["offset"].as_i64().unwrap_or(0)).sum())
                .unwrap_or(0)
        })
        .unwrap_or(0);
    assert_eq!(
        total, LINES as i64,
        "latest offsets sum to the records produced: {out}"
    );
    let (status, out, _) = runnel(&broker.address, &["topic", "describe", "orders"], None)?;
    assert!(status.success() && out.contains("orders"), "{out}");
    Ok(())
}

#[test]
fn cli_errors_are_clear_and_exit_non_zero() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(&dir.path().join("data"), &[])?;
    let addr = broker.address.clone();
    let cases: Vec<CliCase> = vec![
        (
            vec!["topic", "create", "bad name", "--partitions", "1"],
            None,
            "invalid topic name",
        ),
        (
            vec!["topic", "create", "zero", "--partitions", "0"],
            None,
            "partition",
        ),
        (
            vec!["topic", "create", "neg", "--partitions=-2"],
            None,
            "partition",
        ),
        (vec!["topic", "describe", "missing"], None, "does not exist"),
        (vec!["produce", "missing"], Some(b"x\n"), "does not exist"),
        (
            vec!["consume", "missing", "--max-messages", "1"],
            None,
            "does not exist",
        ),
        (
            vec![
                "topic",
                "create",
                "cfg",
                "--partitions",
                "1",
                "--config",
                "colour=blue",
            ],
            None,
            "colour",
        ),
    ];
    for (args, stdin, needle) in cases {
        let (status, _, err) = runnel(&addr, &args, stdin)?;
        assert!(!status.success(), "{args:?} succeeded");
        assert!(
            err.to_lowercase().contains(needle),
            "{args:?}: stderr {err:?} lacks {needle:?}"
        );
    }
    runnel(&addr, &["topic", "create", "t", "--partitions", "1"], None)?;
    let (status, _, err) = runnel(
        &addr,
        &["produce", "t", "--key-separator", ":"],
        Some(b"k:v\nno separator here\n"),
    )?;
    assert!(!status.success());
    assert!(err.contains("line 2"), "{err}");
    let (status, _, err) = runnel(
        &addr,
        &[
            "consume",
            "t",
            "--offset",
            "99",
            "--max-messages",
            "1",
            "--timeout-ms",
            "2000",
        ],
        None,
    )?;
    assert!(!status.success());
    assert!(err.contains("out of range"), "{err}");
    let (status, _, err) = runnel("127.0.0.1:1", &["topic", "list"], None)?;
    assert!(!status.success());
    assert!(err.contains("127.0.0.1:1"), "{err}");
    Ok(())
}
