//! A coarse timer for the HTTP/1 keep-alive deadline.
//!
//! Between requests an HTTP/1 connection waits for the next head, and a
//! connection that stays idle must be closed some time after the header
//! deadline. Arming a tokio timer for that on every request (a clock read, a
//! boxed `Sleep` put in the runtime's timer wheel and taken out again when
//! the head arrives) cost about 900 instructions per request under
//! callgrind, 3% of a pass-through request, for a deadline where a quarter
//! of a second late is as good as on time (decision 0013). A head that has
//! started and does not finish in time is answered 408 on tokio's precise
//! timer ([`crate::h1`]); only the idle wait uses this one.
//!
//! Deadlines live in one process-wide table. A background thread wakes
//! every [`TICK`], wakes the sleeps whose deadline has passed and refreshes
//! the coarse clock that [`now`] returns. Arming a sleep is one uncontended
//! lock and a slot in a vector; nothing is allocated, and the clock is not
//! read on the request path at all. The same tick keeps the wall-clock
//! second that responses' `Date` fields are made from.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How often deadlines are checked, and how stale the coarse clock may be.
pub const TICK: Duration = Duration::from_millis(250);

struct Entry {
    deadline: Instant,
    waker: Option<Waker>,
    fired: bool,
}

#[derive(Default)]
struct Table {
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
}

struct Shared {
    table: Mutex<Table>,
    /// When the clock started; [`Shared::elapsed_ns`] counts from here.
    base: Instant,
    /// Nanoseconds from `base` at the last tick.
    elapsed_ns: AtomicU64,
    /// Wall-clock seconds since the Unix epoch at the last tick.
    unix_secs: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tick(&self) {
        let now = Instant::now();
        self.elapsed_ns.store(
            now.duration_since(self.base).as_nanos() as u64,
            Ordering::Relaxed,
        );
        self.unix_secs.store(wall_secs(), Ordering::Relaxed);
        let due: Vec<Waker> = {
            let mut table = self.lock();
            table
                .slots
                .iter_mut()
                .flatten()
                .filter(|e| !e.fired && e.deadline <= now)
                .filter_map(|e| {
                    e.fired = true;
                    e.waker.take()
                })
                .collect()
        };
        due.into_iter().for_each(Waker::wake);
    }
}

/// The table, with its ticking thread started on first use.
fn shared() -> &'static Shared {
    static SHARED: OnceLock<&'static Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            table: Mutex::new(Table::default()),
            base: Instant::now(),
            elapsed_ns: AtomicU64::new(0),
            unix_secs: AtomicU64::new(wall_secs()),
        }));
        let started = std::thread::Builder::new()
            .name("tollgate-coarse-timer".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(TICK);
                    shared.tick();
                }
            });
        if let Err(e) = started {
            // Without the thread no idle deadline fires; slow heads are
            // still answered on tokio's timer.
            tracing::error!(error = %e, "cannot start the coarse timer thread");
        }
        shared
    })
}

/// The time at the last tick: at most [`TICK`] behind the clock.
pub(crate) fn now() -> Instant {
    let s = shared();
    s.base + Duration::from_nanos(s.elapsed_ns.load(Ordering::Relaxed))
}

/// Wall-clock seconds since the Unix epoch at the last tick: for a
/// response's `Date`, which has one-second grain, without a clock read per
/// response.
pub(crate) fn unix_secs() -> u64 {
    shared().unix_secs.load(Ordering::Relaxed)
}

fn wall_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A deadline `duration` after the coarse clock's current reading.
pub(crate) fn sleep(duration: Duration) -> CoarseSleep {
    CoarseSleep {
        deadline: now() + duration,
        slot: None,
    }
}

/// A deadline in the coarse table: armed on its first poll, removed when
/// dropped.
#[derive(Debug)]
pub struct CoarseSleep {
    deadline: Instant,
    slot: Option<usize>,
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut table = shared().lock();
        match this.slot {
            Some(i) => match table.slots.get_mut(i) {
                Some(Some(e)) if e.fired => Poll::Ready(()),
                Some(Some(e)) => {
                    if !e.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        e.waker = Some(cx.waker().clone());
                    }
                    Poll::Pending
                }
                _ => Poll::Ready(()),
            },
            None => {
                let entry = Entry {
                    deadline: this.deadline,
                    waker: Some(cx.waker().clone()),
                    fired: false,
                };
                let i = match table.free.pop() {
                    Some(i) => {
                        table.slots[i] = Some(entry);
                        i
                    }
                    None => {
                        table.slots.push(Some(entry));
                        table.slots.len() - 1
                    }
                };
                this.slot = Some(i);
                Poll::Pending
            }
        }
    }
}

impl Drop for CoarseSleep {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            let mut table = shared().lock();
            if let Some(slot) = table.slots.get_mut(i) {
                *slot = None;
                table.free.push(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sleep_fires_after_its_deadline_and_within_a_tick_or_two() {
        let started = Instant::now();
        sleep(Duration::from_millis(300)).await;
        let took = started.elapsed();
        // The deadline counts from the coarse clock, which may lag by a tick.
        assert!(took >= Duration::from_millis(300) - TICK, "{took:?}");
        assert!(took < Duration::from_millis(300) + 3 * TICK, "{took:?}");
    }

    #[tokio::test]
    async fn a_dropped_sleep_leaves_the_table() {
        // A deadline no other test uses, to tell this entry apart.
        let unique = Instant::now() + Duration::from_secs(7777);
        let mut sleep = Box::pin(CoarseSleep {
            deadline: unique,
            slot: None,
        });
        assert!(
            std::future::poll_fn(|cx| Poll::Ready(sleep.as_mut().poll(cx)))
                .await
                .is_pending()
        );
        let i = sleep.slot.expect("armed on its first poll");
        drop(sleep);
        let table = shared().lock();
        assert!(
            table.slots[i].as_ref().is_none_or(|e| e.deadline != unique),
            "the dropped sleep's entry is still in the table"
        );
    }

    #[test]
    fn the_wall_clock_second_follows_the_real_one() {
        let _ = unix_secs();
        std::thread::sleep(2 * TICK);
        let lag = wall_secs().abs_diff(unix_secs());
        assert!(lag <= 1, "{lag} s behind");
    }

    #[test]
    fn the_coarse_clock_trails_the_real_one_by_at_most_about_a_tick() {
        let _ = now();
        std::thread::sleep(2 * TICK);
        let lag = Instant::now().saturating_duration_since(now());
        assert!(lag <= 2 * TICK, "{lag:?}");
    }
}
