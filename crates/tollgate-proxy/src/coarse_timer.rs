//! A coarse timer for the HTTP/1 keep-alive deadline, and the first stage
//! of precise deadlines that are rarely reached ([`deadline`]).
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
//! read on the request path at all. The same tick measures the offset
//! between the wall clock and the monotonic one, from which a request's
//! wall-clock time and responses' `Date` second are derived ([`unix_us_at`],
//! [`unix_secs`]) without reading the wall clock again.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How often deadlines are checked, and how stale the coarse clock may be.
pub const TICK: Duration = Duration::from_millis(250);

struct Entry {
    deadline: Instant,
    waker: Option<Waker>,
    fired: bool,
    /// Ended by [`drain`] too.
    drainable: bool,
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
    /// How many times [`drain`] has run; changed under the table's lock.
    drains: AtomicU64,
    /// The wall clock minus the monotonic one (microseconds since the Unix
    /// epoch at `base`), as read at the last tick: one value, so it is
    /// never read half-updated.
    wall_offset_us: AtomicI64,
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
        self.wall_offset_us
            .store(wall_offset_us(self.base, now), Ordering::Relaxed);
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
        let base = Instant::now();
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            table: Mutex::new(Table::default()),
            base,
            elapsed_ns: AtomicU64::new(0),
            drains: AtomicU64::new(0),
            wall_offset_us: AtomicI64::new(wall_offset_us(base, base)),
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
    (unix_us_at(now()) / 1_000_000).max(0) as u64
}

/// The wall clock, in microseconds since the Unix epoch, at the monotonic
/// instant `t`, from the offset between the two clocks read at the last
/// tick: the time of a request without a second clock read for it. A step
/// of the wall clock shows here within a tick.
pub(crate) fn unix_us_at(t: Instant) -> i64 {
    let s = shared();
    let since_base = t.saturating_duration_since(s.base).as_micros() as i64;
    s.wall_offset_us.load(Ordering::Relaxed) + since_base
}

/// Microseconds since the Unix epoch at `base`, from readings of both
/// clocks at `now`.
fn wall_offset_us(base: Instant, now: Instant) -> i64 {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    wall - now.saturating_duration_since(base).as_micros() as i64
}

/// A deadline `duration` after the coarse clock's current reading.
pub(crate) fn sleep(duration: Duration) -> CoarseSleep {
    CoarseSleep {
        deadline: now() + duration,
        slot: None,
        drain: None,
    }
}

/// A sleep until `deadline` that [`drain`] also ends: a keep-alive
/// connection's wait for its next request, which the server's shutdown
/// must end at once. A `drain` after this call ends it even if it comes
/// before the first poll, so a caller that checks its own shutdown flag
/// after making the sleep cannot miss a shutdown.
pub(crate) fn drainable_until(deadline: Instant) -> CoarseSleep {
    CoarseSleep {
        deadline,
        slot: None,
        drain: Some(shared().drains.load(Ordering::Acquire)),
    }
}

/// Ends every drainable sleep now: a server is shutting down. Sleeps of
/// other servers in the process end too, and their owners, finding their
/// own server still running, sleep again.
pub(crate) fn drain() {
    let s = shared();
    let woken: Vec<Waker> = {
        let mut table = s.lock();
        s.drains.fetch_add(1, Ordering::AcqRel);
        table
            .slots
            .iter_mut()
            .flatten()
            .filter(|e| e.drainable && !e.fired)
            .filter_map(|e| {
                e.fired = true;
                e.waker.take()
            })
            .collect()
    };
    woken.into_iter().for_each(Waker::wake);
}

/// A precise deadline at `at` that costs little while it is far off: it
/// waits in the coarse table until about a tick before `at`, and only then
/// on tokio's timer. A deadline that is nearly always cancelled long before
/// it is reached (an upstream's read timeout, counted in seconds, against
/// answers that take microseconds) so never enters tokio's timer wheel,
/// yet still fires on time. One that is near when made (two ticks or less
/// after `now`) goes on tokio's timer at once.
pub(crate) fn deadline(at: tokio::time::Instant, now: tokio::time::Instant) -> Deadline {
    let stage = if at.saturating_duration_since(now) <= 2 * TICK {
        Stage::Precise(Box::pin(tokio::time::sleep_until(at)))
    } else {
        Stage::Coarse(CoarseSleep {
            deadline: (at - TICK).into_std(),
            slot: None,
            drain: None,
        })
    };
    Deadline { at, stage }
}

/// See [`deadline`].
#[derive(Debug)]
pub(crate) struct Deadline {
    at: tokio::time::Instant,
    stage: Stage,
}

#[derive(Debug)]
enum Stage {
    /// In the coarse table, until a tick or less before the deadline.
    Coarse(CoarseSleep),
    /// On tokio's timer, for the last stretch.
    Precise(Pin<Box<tokio::time::Sleep>>),
}

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match &mut this.stage {
                Stage::Coarse(sleep) => {
                    if Pin::new(sleep).poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    // The coarse deadline fires within a tick after it is
                    // due, so at or a little before `at`: the rest is
                    // tokio's, which is ready at once if the tick was late.
                    this.stage = Stage::Precise(Box::pin(tokio::time::sleep_until(this.at)));
                }
                Stage::Precise(sleep) => return sleep.as_mut().poll(cx),
            }
        }
    }
}

/// A deadline in the coarse table: armed on its first poll, removed when
/// dropped.
#[derive(Debug)]
pub struct CoarseSleep {
    deadline: Instant,
    slot: Option<usize>,
    /// For a drainable sleep, the [`drain`] count when it was made.
    drain: Option<u64>,
}

impl CoarseSleep {
    /// When it is due.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let s = shared();
        let mut table = s.lock();
        if this
            .drain
            .is_some_and(|seen| s.drains.load(Ordering::Acquire) != seen)
        {
            return Poll::Ready(());
        }
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
                    drainable: this.drain.is_some(),
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
    async fn a_deadline_fires_on_time_whether_far_or_near() {
        // 700 ms is past two ticks: it waits in the coarse table first,
        // whose deadline alone would fire up to a tick early.
        for wait in [Duration::from_millis(700), Duration::from_millis(100)] {
            let now = tokio::time::Instant::now();
            let at = now + wait;
            deadline(at, now).await;
            let fired = tokio::time::Instant::now();
            assert!(fired >= at, "{wait:?}: fired {:?} early", at - fired);
            assert!(
                fired - at < Duration::from_millis(150),
                "{wait:?}: fired {:?} late",
                fired - at
            );
        }
    }

    #[tokio::test]
    async fn a_far_deadline_waits_in_the_coarse_table() {
        let now = tokio::time::Instant::now();
        let mut far = Box::pin(deadline(now + Duration::from_secs(60), now));
        assert!(
            std::future::poll_fn(|cx| Poll::Ready(far.as_mut().poll(cx)))
                .await
                .is_pending()
        );
        assert!(matches!(
            far.stage,
            Stage::Coarse(CoarseSleep { slot: Some(_), .. })
        ));
        let near = deadline(now + 2 * TICK, now);
        assert!(matches!(near.stage, Stage::Precise(_)));
    }

    #[tokio::test]
    async fn a_drain_ends_drainable_sleeps_only_even_those_not_yet_polled() {
        let far = now() + Duration::from_secs(3600);
        let mut polled = Box::pin(drainable_until(far));
        let mut plain = Box::pin(sleep(Duration::from_secs(3600)));
        let unpolled = drainable_until(far);
        let poll = |s: &mut Pin<Box<CoarseSleep>>| {
            let waker = std::task::Waker::noop();
            s.as_mut().poll(&mut Context::from_waker(waker))
        };
        assert!(poll(&mut polled).is_pending());
        assert!(poll(&mut plain).is_pending());
        drain();
        assert!(poll(&mut polled).is_ready());
        assert!(poll(&mut Box::pin(unpolled)).is_ready());
        assert!(
            poll(&mut plain).is_pending(),
            "a plain sleep is not drained"
        );
        let after = drainable_until(far);
        assert!(poll(&mut Box::pin(after)).is_pending());
    }

    #[tokio::test]
    async fn a_dropped_sleep_leaves_the_table() {
        // A deadline no other test uses, to tell this entry apart.
        let unique = Instant::now() + Duration::from_secs(7777);
        let mut sleep = Box::pin(CoarseSleep {
            deadline: unique,
            slot: None,
            drain: None,
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
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let lag = wall.abs_diff(unix_secs());
        assert!(lag <= 1, "{lag} s behind");
    }

    #[test]
    fn the_wall_clock_of_an_instant_matches_a_direct_reading() {
        let _ = now();
        std::thread::sleep(2 * TICK);
        let t = Instant::now();
        let derived = unix_us_at(t);
        let direct = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        // The same moment, read two ways: well within a millisecond.
        assert!(
            (direct - derived).abs() < 1_000,
            "{} µs apart",
            direct - derived
        );
        let later = unix_us_at(t + Duration::from_millis(1500));
        assert_eq!(later - derived, 1_500_000);
    }

    #[test]
    fn the_coarse_clock_trails_the_real_one_by_at_most_about_a_tick() {
        let _ = now();
        std::thread::sleep(2 * TICK);
        let lag = Instant::now().saturating_duration_since(now());
        assert!(lag <= 2 * TICK, "{lag:?}");
    }
}
