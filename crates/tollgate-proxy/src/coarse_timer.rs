//! A coarse timer for hyper's HTTP/1 header deadline.
//!
//! hyper arms a header-read deadline for every request head it waits for:
//! a clock read, a boxed tokio `Sleep` registered in the runtime's timer
//! wheel when the head is awaited and taken out again when it arrives. That
//! cost about 900 instructions per request (3% of a pass-through request
//! under callgrind) for a deadline that is only a backstop: the framing
//! guard answers a slow head with 408 itself (`crate::framing`), so hyper's
//! deadline, set a second later, only has to close keep-alive connections
//! that stay idle. For that, a quarter of a second late is as good as on
//! time.
//!
//! [`CoarseTimer`] keeps its deadlines in one process-wide table. A
//! background thread wakes every [`TICK`], wakes the sleeps whose deadline
//! has passed and refreshes the coarse clock that [`CoarseTimer::now`]
//! returns. Arming a sleep is one uncontended lock and a slot in a vector;
//! nothing is allocated beyond hyper's own box, and the clock is not read
//! on the request path at all.

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
            // Without the thread no deadline fires; the framing guard's
            // own deadlines (tokio timers) still answer slow heads.
            tracing::error!(error = %e, "cannot start the coarse timer thread");
        }
        shared
    })
}

/// hyper's timer for HTTP/1 connections. See the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct CoarseTimer;

impl hyper::rt::Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(CoarseSleep {
            deadline,
            slot: None,
        })
    }

    /// The time at the last tick: at most [`TICK`] behind the clock.
    fn now(&self) -> Instant {
        let s = shared();
        s.base + Duration::from_nanos(s.elapsed_ns.load(Ordering::Relaxed))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<CoarseSleep>() {
            Some(mut s) => s.as_mut().get_mut().reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// A deadline in the coarse table: armed on its first poll, removed when
/// dropped.
#[derive(Debug)]
pub struct CoarseSleep {
    deadline: Instant,
    slot: Option<usize>,
}

impl CoarseSleep {
    fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if let Some(i) = self.slot
            && let Some(Some(e)) = shared().lock().slots.get_mut(i)
        {
            e.deadline = deadline;
            e.fired = false;
        }
    }
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

impl hyper::rt::Sleep for CoarseSleep {}

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
    use hyper::rt::Timer;

    #[tokio::test]
    async fn a_sleep_fires_after_its_deadline_and_within_a_tick_or_two() {
        let timer = CoarseTimer;
        let started = Instant::now();
        timer.sleep(Duration::from_millis(300)).await;
        let took = started.elapsed();
        // The deadline counts from the coarse clock, which may lag by a tick.
        assert!(took >= Duration::from_millis(300) - TICK, "{took:?}");
        assert!(took < Duration::from_millis(300) + 3 * TICK, "{took:?}");
    }

    /// Polls once.
    async fn poll_once(sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>) -> Poll<()> {
        std::future::poll_fn(|cx| Poll::Ready(sleep.as_mut().poll(cx))).await
    }

    #[tokio::test]
    async fn a_reset_moves_the_deadline_earlier() {
        let timer = CoarseTimer;
        let mut sleep = timer.sleep(Duration::from_secs(3600));
        assert!(poll_once(&mut sleep).await.is_pending());
        let started = Instant::now();
        timer.reset(&mut sleep, timer.now() + Duration::from_millis(100));
        sleep.as_mut().await;
        assert!(started.elapsed() < Duration::from_millis(100) + 3 * TICK);
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
    fn the_coarse_clock_trails_the_real_one_by_at_most_about_a_tick() {
        let timer = CoarseTimer;
        let _ = timer.now();
        std::thread::sleep(2 * TICK);
        let lag = Instant::now().saturating_duration_since(timer.now());
        assert!(lag <= 2 * TICK, "{lag:?}");
    }
}
