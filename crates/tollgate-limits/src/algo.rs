//! The counting rules as pure functions of a state and the time, shared by
//! the in-process backend and mirrored line for line by the Redis script
//! (`decide.lua`). Times are microseconds since the Unix epoch; integer
//! arithmetic except where the sliding window weighs the previous window,
//! which both implementations do in IEEE doubles so they agree exactly.

use chrono_tz::Tz;

/// One second in microseconds.
pub const SECOND_US: i64 = 1_000_000;

/// What a limit counts and how.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// Generic cell rate algorithm: one request every `interval_us`, with up
    /// to `burst` at once from idle.
    Gcra { interval_us: i64, burst: u64 },
    /// Sliding-window counter of `limit` requests per `window_us`.
    Window { window_us: i64, limit: u64 },
    /// `limit` requests per calendar month in `tz`.
    Month { limit: u64, tz: Tz },
    /// At most `max` requests in flight.
    Concurrency { max: u64 },
}

impl Rule {
    /// `requests` per `period_us` as a GCRA with the given burst (default:
    /// `requests`). The interval is rounded up so the rate is never exceeded.
    pub fn gcra(requests: u64, period_us: i64, burst: Option<u64>) -> Rule {
        let requests = requests.max(1);
        let interval_us = (period_us as u128).div_ceil(requests as u128).max(1) as i64;
        Rule::Gcra {
            interval_us,
            burst: burst.unwrap_or(requests).max(1),
        }
    }

    /// The quota (`q`) and window in seconds (`w`) advertised for this rule
    /// in `RateLimit-Policy`.
    pub fn advertised(&self, requests: u64, period_us: i64) -> (u64, Option<i64>) {
        match self {
            Rule::Concurrency { max } => (*max, None),
            Rule::Month { limit, .. } => (*limit, None),
            _ => {
                if period_us < SECOND_US {
                    // Scale sub-second windows to one second.
                    let q =
                        (requests as u128 * SECOND_US as u128 / period_us.max(1) as u128) as u64;
                    (q, Some(1))
                } else {
                    (requests, Some(period_us.div_euclid(SECOND_US)))
                }
            }
        }
    }
}

/// The outcome of one limit for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    pub allowed: bool,
    /// Requests left after this one (allowed) or now (refused).
    pub remaining: u64,
    /// Microseconds until the allowance is whole again (for a quota: until
    /// the period ends).
    pub reset_us: i64,
    /// Microseconds until this request could pass; 0 when it passed.
    pub retry_after_us: i64,
}

/// GCRA step. `tat` is the theoretical arrival time (0 when unknown).
/// Returns the status and, when allowed, the new `tat`.
pub fn gcra(tat: i64, now: i64, interval: i64, burst: u64, cost: u64) -> (Status, i64) {
    let tat = tat.max(now);
    let span = interval.saturating_mul(burst as i64);
    let new_tat = tat.saturating_add(interval.saturating_mul(cost as i64));
    let allow_at = new_tat - span;
    if allow_at <= now {
        (
            Status {
                allowed: true,
                remaining: ((now - allow_at) / interval) as u64,
                reset_us: new_tat - now,
                retry_after_us: 0,
            },
            new_tat,
        )
    } else {
        let room = now + span - tat;
        (
            Status {
                allowed: false,
                remaining: if room > 0 {
                    (room / interval) as u64
                } else {
                    0
                },
                reset_us: tat - now,
                retry_after_us: allow_at - now,
            },
            tat,
        )
    }
}

/// Sliding-window state: the index of the current window and the counts of
/// it and of the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowState {
    pub index: i64,
    pub current: u64,
    pub previous: u64,
}

fn weighted(previous: u64, window: i64, elapsed: i64) -> u64 {
    ((previous as f64) * ((window - elapsed) as f64) / (window as f64)).ceil() as u64
}

/// The smallest offset into a window at which `count` weighted by the rest
/// of the window is at most `room`. The closed form is a guess that double
/// rounding can put a microsecond off either way (for 3 weighed down to 2
/// in a minute, `1 - 2/3` rounds up and the guess is 1 µs late); it is
/// settled on [`weighted`] itself, the test the request will face.
fn offset_for(count: u64, room: u64, window: i64) -> i64 {
    if count <= room {
        return 0;
    }
    let guess = ((window as f64) * (1.0 - (room as f64) / (count as f64))).ceil() as i64;
    let mut offset = guess.clamp(0, window);
    while offset > 0 && weighted(count, window, offset - 1) <= room {
        offset -= 1;
    }
    while offset < window && weighted(count, window, offset) > room {
        offset += 1;
    }
    offset
}

/// Sliding-window step. Returns the status and, when allowed, the new state.
pub fn window(
    state: WindowState,
    now: i64,
    window: i64,
    limit: u64,
    cost: u64,
) -> (Status, WindowState) {
    let index = now.div_euclid(window);
    let (previous, current) = if state.index == index {
        (state.previous, state.current)
    } else if state.index == index - 1 {
        (state.current, 0)
    } else {
        (0, 0)
    };
    let elapsed = now - index * window;
    let estimate = weighted(previous, window, elapsed) + current;
    let rest = window - elapsed;
    if estimate + cost <= limit {
        let current = current + cost;
        (
            Status {
                allowed: true,
                remaining: limit - estimate - cost,
                reset_us: rest + window,
                retry_after_us: 0,
            },
            WindowState {
                index,
                current,
                previous,
            },
        )
    } else {
        let retry = if current + cost <= limit {
            // The previous window's weight must shrink.
            (offset_for(previous, limit - current - cost, window) - elapsed).max(1)
        } else if cost <= limit {
            // Only the next window can take it, once this one weighs less.
            rest + offset_for(current, limit - cost, window)
        } else {
            i64::MAX / 2
        };
        (
            Status {
                allowed: false,
                remaining: limit.saturating_sub(estimate),
                reset_us: rest + window,
                retry_after_us: retry,
            },
            state,
        )
    }
}

/// Calendar-quota step for a period ending at `end`.
pub fn quota(count: u64, now: i64, end: i64, limit: u64, cost: u64) -> (Status, u64) {
    if count + cost <= limit {
        (
            Status {
                allowed: true,
                remaining: limit - count - cost,
                reset_us: end - now,
                retry_after_us: 0,
            },
            count + cost,
        )
    } else {
        (
            Status {
                allowed: false,
                remaining: limit.saturating_sub(count),
                reset_us: end - now,
                retry_after_us: end - now,
            },
            count,
        )
    }
}

/// Concurrency step over the number in flight.
pub fn concurrency(in_flight: u64, max: u64) -> Status {
    if in_flight < max {
        Status {
            allowed: true,
            remaining: max - in_flight - 1,
            reset_us: 0,
            retry_after_us: 0,
        }
    } else {
        Status {
            allowed: false,
            remaining: 0,
            reset_us: 0,
            retry_after_us: SECOND_US,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = SECOND_US;

    #[test]
    fn gcra_allows_the_burst_then_the_rate() {
        // 10 per second, burst 10.
        let Rule::Gcra { interval_us, burst } = Rule::gcra(10, S, None) else {
            unreachable!()
        };
        let now = 1_000 * S;
        let mut tat = 0;
        for i in 0..10 {
            let (st, t) = gcra(tat, now, interval_us, burst, 1);
            assert!(st.allowed, "request {i}");
            assert_eq!(st.remaining, 9 - i);
            tat = t;
        }
        let (st, _) = gcra(tat, now, interval_us, burst, 1);
        assert!(!st.allowed);
        assert_eq!(st.retry_after_us, interval_us);
        assert_eq!(st.reset_us, S);
        // One interval later exactly one more passes.
        let (st, t) = gcra(tat, now + interval_us, interval_us, burst, 1);
        assert!(st.allowed);
        let (st, _) = gcra(t, now + interval_us, interval_us, burst, 1);
        assert!(!st.allowed);
    }

    #[test]
    fn gcra_retry_after_is_exact() {
        let (interval, burst) = (S / 2, 1);
        let (_, tat) = gcra(0, 10 * S, interval, burst, 1);
        let (st, _) = gcra(tat, 10 * S + 1, interval, burst, 1);
        assert!(!st.allowed);
        let at = 10 * S + 1 + st.retry_after_us;
        assert!(gcra(tat, at, interval, burst, 1).0.allowed);
        assert!(!gcra(tat, at - 1, interval, burst, 1).0.allowed);
    }

    #[test]
    fn gcra_interval_rounds_up() {
        let Rule::Gcra { interval_us, .. } = Rule::gcra(7, S, None) else {
            unreachable!()
        };
        assert!(interval_us * 7 >= S);
    }

    #[test]
    fn window_weighs_the_previous_window() {
        let w = 60 * S;
        let mut st = WindowState::default();
        let t0 = 100 * w;
        for _ in 0..10 {
            let (s, n) = window(st, t0, w, 10, 1);
            assert!(s.allowed);
            st = n;
        }
        assert!(!window(st, t0 + w - 1, w, 10, 1).0.allowed);
        // Half way into the next window, half of the previous still counts.
        let (s, n) = window(st, t0 + w + w / 2, w, 10, 1);
        assert!(s.allowed);
        assert_eq!(s.remaining, 4);
        st = n;
        for _ in 0..4 {
            let (s, n) = window(st, t0 + w + w / 2, w, 10, 1);
            assert!(s.allowed);
            st = n;
        }
        let (s, _) = window(st, t0 + w + w / 2, w, 10, 1);
        assert!(!s.allowed);
        // The promised retry time is when it passes, and not a moment before.
        let at = t0 + w + w / 2 + s.retry_after_us;
        assert!(window(st, at, w, 10, 1).0.allowed);
        assert!(!window(st, at - 1, w, 10, 1).0.allowed);
    }

    #[test]
    fn window_retry_when_the_current_window_is_full() {
        let w = 10 * S;
        let mut st = WindowState::default();
        let t0 = 7 * w + 3 * S;
        for _ in 0..5 {
            st = window(st, t0, w, 5, 1).1;
        }
        let (s, _) = window(st, t0, w, 5, 1);
        assert!(!s.allowed);
        let at = t0 + s.retry_after_us;
        assert!(window(st, at, w, 5, 1).0.allowed);
        assert!(!window(st, at - 1, w, 5, 1).0.allowed);
    }

    #[test]
    fn window_retry_is_exact_where_the_closed_form_rounds_up() {
        // 1 - 2/3 rounds up in doubles: the closed form said 20_000_001 µs.
        let w = 60 * S;
        let st = WindowState {
            index: 100,
            current: 2,
            previous: 3,
        };
        let (s, _) = window(st, 100 * w, w, 5, 1);
        assert!(!s.allowed);
        assert_eq!(s.retry_after_us, 20 * S);
        assert!(window(st, 100 * w + s.retry_after_us, w, 5, 1).0.allowed);
        assert!(
            !window(st, 100 * w + s.retry_after_us - 1, w, 5, 1)
                .0
                .allowed
        );
    }

    #[test]
    fn window_retry_is_exact_over_many_states() {
        for (w, limit) in [(60 * S, 5), (600 * S + 7, 9), (3600 * S, 1), (S + 3, 13)] {
            for previous in 0..=limit {
                for current in 0..=limit {
                    for elapsed in [0, 1, 7, 12_345, w / 3, w / 2, w - 1] {
                        let st = WindowState {
                            index: 1000,
                            current,
                            previous,
                        };
                        let now = 1000 * w + elapsed;
                        let (s, _) = window(st, now, w, limit, 1);
                        if s.allowed {
                            continue;
                        }
                        let at = now + s.retry_after_us;
                        let case = (w, limit, previous, current, elapsed);
                        assert!(window(st, at, w, limit, 1).0.allowed, "{case:?}");
                        assert!(!window(st, at - 1, w, limit, 1).0.allowed, "{case:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn quota_counts_exactly() {
        let mut c = 0;
        for _ in 0..3 {
            let (s, n) = quota(c, 0, 100, 3, 1);
            assert!(s.allowed);
            c = n;
        }
        let (s, n) = quota(c, 40, 100, 3, 1);
        assert!(!s.allowed);
        assert_eq!(n, 3);
        assert_eq!(s.retry_after_us, 60);
    }
}
