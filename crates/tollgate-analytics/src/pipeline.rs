//! The roll-up thread: it drains the event queue, feeds the [`Aggregator`]
//! and the raw event file, and hands changed rows to the writer (the binary
//! writes them to the store) every flush interval.
//!
//! The thread polls the queue every few milliseconds instead of blocking on
//! it: a blocked receiver would make every request's `try_send` pay for a
//! futex wake-up, and the request path must stay free of system calls that
//! analytics adds. Each poll takes every worker's buffered events at once
//! (see [`crate::queue`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::TryRecvError;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use crate::events_file::EventsFile;
use crate::queue::{Msg, QueueRx};
use crate::recorder::Recorder;
use crate::rollup::{Aggregator, Rollup, RollupKey};

/// How often the thread looks at the queue when it found it empty.
const POLL: Duration = Duration::from_millis(5);

/// Settings of the analytics pipeline.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Events each recording thread's buffer holds before it drops new ones.
    pub queue: usize,
    /// How often changed roll-up rows go to the writer.
    pub flush_every: Duration,
    /// Where raw events go as JSON lines, if anywhere.
    pub events_file: Option<EventsFileSettings>,
}

/// The raw event file and its rotation.
#[derive(Debug, Clone)]
pub struct EventsFileSettings {
    pub path: PathBuf,
    /// The file is rotated when it grows past this.
    pub max_bytes: u64,
    /// Rotated files kept (`events.jsonl.1` is the newest).
    pub keep: u32,
}

/// Rows for the writer. `done`, when set, is signalled once they are written
/// (or the writer gave up on them).
#[derive(Debug)]
pub struct Batch {
    pub rows: Vec<(RollupKey, Rollup)>,
    pub done: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Starts the roll-up thread. Returns the recorder for the request path and
/// the stream of batches for the writer. The thread ends when every
/// recorder is gone and the queue is empty.
pub fn start(
    settings: PipelineSettings,
) -> std::io::Result<(Arc<Recorder>, tokio::sync::mpsc::UnboundedReceiver<Batch>)> {
    let (tx, rx) = crate::queue::bounded(settings.queue);
    let (out_tx, out_rx) = tokio::sync::mpsc::unbounded_channel();
    let file = match &settings.events_file {
        Some(f) => Some(EventsFile::open(f.clone())?),
        None => None,
    };
    let flush_every = settings.flush_every.max(Duration::from_millis(10));
    std::thread::Builder::new()
        .name("tollgate-analytics".into())
        .spawn(move || run(rx, out_tx, file, flush_every))?;
    Ok((Arc::new(Recorder::with_queue(Some(tx))), out_rx))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn run(
    mut rx: QueueRx,
    out: UnboundedSender<Batch>,
    mut file: Option<EventsFile>,
    flush_every: Duration,
) {
    let mut agg = Aggregator::new();
    let mut next_flush = Instant::now() + flush_every;
    loop {
        let mut got_any = false;
        loop {
            match rx.try_recv() {
                Ok(Msg::Event(ev)) => {
                    got_any = true;
                    agg.add(&ev);
                    if let Some(f) = &mut file {
                        f.write(&ev);
                    }
                }
                Ok(Msg::Flush(done)) => {
                    if let Some(f) = &mut file {
                        f.flush();
                    }
                    let rows = agg.take_changed(now_ms());
                    let _ = out.send(Batch {
                        rows,
                        done: Some(done),
                    });
                    next_flush = Instant::now() + flush_every;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let rows = agg.take_changed(now_ms());
                    if let Some(f) = &mut file {
                        f.flush();
                    }
                    let _ = out.send(Batch { rows, done: None });
                    return;
                }
            }
        }
        if got_any && let Some(f) = &mut file {
            f.flush();
        }
        if Instant::now() >= next_flush {
            let rows = agg.take_changed(now_ms());
            if !rows.is_empty() && out.send(Batch { rows, done: None }).is_err() {
                // No writer: keep aggregating for the metrics' sake, write nothing.
            }
            next_flush = Instant::now() + flush_every;
        }
        if !got_any {
            std::thread::sleep(POLL);
        }
    }
}
