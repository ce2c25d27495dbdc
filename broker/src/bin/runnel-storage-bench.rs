//! `runnel-storage-bench`: the raw-storage baseline of `make bench`. It builds the same
//! RecordBatch v2 batches a producer would and writes them straight into sled (no gRPC, no
//! offset assignment, no validation) under the broker's flush policy: a flusher thread that
//! group-commits continuously, with the broker's flush (sled's, then an fsync of each file sled
//! wrote).
//!
//! `--checks-only` measures instead what the broker's checks of a produced batch cost (its CRC,
//! header and every record, as [`runnel_broker::log::check_batch`] runs them), on one core.
//!
//! `--window N` gives the writer acks=all semantics with N batches in flight, as a producer with
//! `max_in_flight = N` has: it never has more than N batches that are not yet durable. Without
//! it the writer never waits (raw ingest; what acks=1 is bounded by). The broker's throughput is
//! reported as a ratio of these.

use bytes::Bytes;
use clap::Parser;
use runnel_broker::storage::{BatchLog, SledLog, SledStorage, Storage};
use runnel_codec::{BatchBuilder, Compression};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
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
    /// Most batches written but not yet durable (acks=all with this many in flight).
    #[arg(long)]
    window: Option<u64>,
    /// Only run the broker's checks of a produced batch over the batches, without storing
    /// them, and report their cost.
    #[arg(long)]
    checks_only: bool,
}

/// Batches written, and batches known durable, shared by the writer and the flusher.
#[derive(Debug, Default)]
struct Progress {
    counts: Mutex<(u64, u64)>,
    durable: Condvar,
}

/// Times the broker's checks over `records` records in batches like `batch`.
fn checks_only(args: &Args, batch: &Bytes, per_batch: u64) -> anyhow::Result<()> {
    let config = runnel_broker::log::LogConfig::default();
    let batches = args.records.div_ceil(per_batch);
    let started = Instant::now();
    for _ in 0..batches {
        std::hint::black_box(runnel_broker::log::check_batch(
            std::hint::black_box(batch),
            &config,
        )?);
    }
    let secs = started.elapsed().as_secs_f64();
    let records = batches * per_batch;
    println!(
        "{}",
        serde_json::json!({
            "checks_only": true,
            "records": records,
            "record_size": args.record_size,
            "seconds": secs,
            "records_per_sec": records as f64 / secs,
            "ns_per_record": secs * 1e9 / records as f64,
        })
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let value = vec![b'x'; args.record_size];
    // One batch template per distinct record count; batches are built ahead so that only
    // storage is measured.
    let per_batch = (args.batch_size / (args.record_size + 12)).max(1) as u64;
    let mut b = BatchBuilder::new(Compression::None, 0);
    for _ in 0..per_batch {
        b.append(0, None, Some(&value), &[]);
    }
    let batch: Bytes = b.build()?;
    if args.checks_only {
        return checks_only(&args, &batch, per_batch);
    }
    let storage = Arc::new(SledStorage::open(&args.data_dir)?);
    let log = storage.open_log("baseline", 0)?;
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(Progress::default());
    let flusher = {
        let storage = storage.clone();
        let stop = stop.clone();
        let progress = progress.clone();
        std::thread::spawn(move || -> anyhow::Result<u64> {
            let mut flushes = 0;
            while !stop.load(Ordering::SeqCst) {
                let written = progress
                    .counts
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .0;
                storage.flush()?;
                flushes += 1;
                progress
                    .counts
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .1 = written;
                progress.durable.notify_all();
            }
            Ok(flushes)
        })
    };
    let started = Instant::now();
    let mut written = 0u64;
    let mut offset = 0i64;
    let mut buf = batch.to_vec();
    let mut batches = 0u64;
    while written < args.records {
        if let Some(window) = args.window {
            let mut counts = progress
                .counts
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?;
            while batches - counts.1 >= window {
                counts = progress
                    .durable
                    .wait(counts)
                    .map_err(|_| anyhow::anyhow!("poisoned"))?;
            }
        }
        runnel_codec::set_base_offset(&mut buf, offset);
        log.put(offset, SledLog::buffer(&buf))?;
        batches += 1;
        progress
            .counts
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .0 = batches;
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
            "window": args.window,
            "seconds": secs,
            "records_per_sec": written as f64 / secs,
            "mb_per_sec": mb / secs,
            "flushes": flushes,
        })
    );
    Ok(())
}
