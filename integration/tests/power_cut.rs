//! Durability under a power cut, not just `kill -9`: killing the process leaves the page cache
//! intact, so only a cut of what the disk has not made durable shows whether the broker really
//! syncs what it acknowledges. The broker's data directory sits on `runnel-lazyfs`, a test
//! filesystem that keeps every write that was not fsynced in a volatile state and drops it on a
//! cut (see its crate documentation for what it models and what it cannot). Producers send with
//! `acks=all`; the power is cut under load, the broker killed, the filesystem mounted again with
//! only what was durable, and the broker started on it: every acknowledged record must be there
//! exactly once, at its offset; what was not acknowledged may be missing, but nothing is corrupt.

use runnel_integration::load::{read_back, Load};
use runnel_integration::{bin, Broker};
use runnel_lazyfs::machine::Machine;
use std::time::Duration;

const PRODUCERS: usize = 4;
const PARTITIONS: i32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_a_power_cut() -> anyhow::Result<()> {
    let mut machine = Machine::new(bin("runnel-lazyfs"))?;
    machine.power_on()?;
    let logs = tempfile::tempdir()?;
    let data = machine.mnt().join("data");
    let log = logs.path().join("broker.log");
    let mut broker = Broker::start_logging_to(&data, &log, &[])?;
    broker.create_topic("durable", PARTITIONS, None).await?;

    // Records of 1 KiB in batches of 64 KiB: the database's nodes grow large enough to be
    // written to files of their own, which must be synced too.
    let load = Load::start_sized(
        &broker.address,
        "durable",
        PRODUCERS,
        PARTITIONS,
        1024,
        64 << 10,
    );
    load.wait_for(40_000, Duration::from_secs(8)).await;
    // The power goes: from this instant the disk keeps only what was made durable, and takes
    // nothing more (every write and fsync fails), so an acknowledgement that arrives after it
    // can only be for records synced before it.
    machine.cut()?;
    let at_cut = load.acknowledged();
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.kill9();
    let acked = load.stop().await;
    assert!(
        acked.len() > 1000,
        "producers made too little progress: {} acknowledged",
        acked.len()
    );

    // Power on: the filesystem shows the durable state, and the broker starts on it.
    machine.stop()?;
    machine.power_on()?;
    let blobs = std::fs::read_dir(data.join("blobs")).map_or(0, |d| d.count());
    assert!(
        blobs > 0,
        "the load wrote no blob files: the cut tested less than it should"
    );
    broker
        .restart()
        .map_err(|e| anyhow::anyhow!("the broker does not start after the cut: {e}"))?;
    let found = read_back(&broker.endpoint(), "durable", PARTITIONS, &acked).await?;
    println!(
        "power cut: {} producers, {} records acknowledged ({} at the cut), {} blob files durable, {} read back after the cut, {} acknowledged missing",
        PRODUCERS,
        acked.len(),
        at_cut,
        blobs,
        found.total,
        found.missing.len()
    );
    assert!(
        found.missing.is_empty(),
        "{} acknowledged records lost, e.g. {:?}",
        found.missing.len(),
        &found.missing[..found.missing.len().min(5)]
    );
    Ok(())
}
