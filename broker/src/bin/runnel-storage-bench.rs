//! `runnel-storage-bench`: the raw-storage baseline of `make bench`. It builds the same
//! RecordBatch v2 batches a producer would and writes them straight into sled (no gRPC, no
//! offset assignment, no validation) under the broker's flush policy: a flusher thread that
//! group-commits continuously, with the broker's fsyncs. The broker's throughput is reported as a
//! ratio of this one.

use bytes::Bytes;
use clap::Parser;
use runnel_broker::storage::{BatchLog, SledStorage, Storage};
use runnel_codec::{BatchBuilder, Compression};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Parser)]
#[command(name = "runnel-storage-bench", about)]
struct Args {
    /// Directory for the sled database (created; must not hold a broker's data).
    #[arg(long)]
    data_dir: std::path::PathBuf,
    /// Records to write.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Bytes per record value.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Target batch size in bytes (as the producer's batch.size).
    #[arg(long, default_value_t = 64 * 1024)]
    batch_size: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let storage = Arc::new(SledStorage::open(&args.data_dir)?);
    let log = storage.open_log("baseline", 0)?;
    let value = vec![b'x'; args.record_size];
    // One batch template per distinct record count; batches are built ahead so that only
    // storage is measured.
    let per_batch = (args.batch_size / (args.record_size + 12)).max(1) as u64;
    let mut b = BatchBuilder::new(Compression::None, 0);
    for _ in 0..per_batch {
        b.append(0, None, Some(&value), &[]);
    }
    let batch: Bytes = b.build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flusher = {
        let storage = storage.clone();
        let stop = stop.clone();
        std::thread::spawn(move || -> anyhow::Result<u64> {
            let mut flushes = 0;
            while !stop.load(Ordering::SeqCst) {
                storage.flush()?;
                flushes += 1;
            }
            Ok(flushes)
        })
    };
    let started = Instant::now();
    let mut written = 0u64;
    let mut offset = 0i64;
    let mut buf = batch.to_vec();
    while written < args.records {
        runnel_codec::set_base_offset(&mut buf, offset);
        log.put(offset, &buf)?;
        offset += per_batch as i64;
        written += per_batch;
    }
    stop.store(true, Ordering::SeqCst);
    let flushes = flusher
        .join()
        .map_err(|_| anyhow::anyhow!("flusher panicked"))??;
    storage.flush()?;
    let secs = started.elapsed().as_secs_f64();
    let mb = (written as f64 * args.record_size as f64) / 1e6;
    println!(
        "{}",
        serde_json::json!({
            "records": written,
            "record_size": args.record_size,
            "batch_size": args.batch_size,
            "seconds": secs,
            "records_per_sec": written as f64 / secs,
            "mb_per_sec": mb / secs,
            "flushes": flushes,
        })
    );
    Ok(())
}
