//! Durability under `kill -9`: several producers send with `acks=all` through the real client,
//! the broker process is killed while they run, started again on the same data, and every
//! acknowledged record must be there exactly once, at the offset it was acknowledged with, in
//! each producer's order, with no gaps in any partition's offsets.

use runnel_integration::load::{read_back, Load};
use runnel_integration::Broker;
use std::time::Duration;

const PRODUCERS: usize = 4;
const PARTITIONS: i32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_kill_9() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut broker = Broker::start(&dir.path().join("data"), &[])?;
    broker.create_topic("durable", PARTITIONS, None).await?;

    let load = Load::start(&broker.address, "durable", PRODUCERS, PARTITIONS);
    // Let them run, then crash the broker under load.
    load.wait_for(20_000, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.kill9();
    // Give in-flight answers a moment to be counted, then stop the producers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acked = load.stop().await;
    assert!(
        acked.len() > 1000,
        "producers made too little progress: {} acknowledged",
        acked.len()
    );

    broker.restart()?;
    let found = read_back(&broker.endpoint(), "durable", PARTITIONS, &acked).await?;
    println!(
        "durability: {} producers, {} records acknowledged, {} read back after kill -9, {} acknowledged missing",
        PRODUCERS,
        acked.len(),
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
