//! The event queue between the request path and the roll-up: bounded by the
//! number of events it holds, with memory taken as it fills and given back
//! as it drains.
//!
//! A preallocated bounded channel (`sync_channel`) touches every slot when
//! it is made: the default 16,384 events cost about 5 MiB of resident memory
//! for a queue that is nearly always empty, since the roll-up thread drains
//! it every few milliseconds. Here the channel is the standard unbounded one
//! (its blocks of slots come and go with the events), and a shared count of
//! the events it holds enforces the bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};

use crate::event::Event;

/// Messages to the roll-up thread. Events travel by value (no allocation
/// per request); the rare flush is the small variant.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Msg {
    Event(Event),
    /// Write everything queued before this, then signal.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// A queue of at most `capacity` events (flush requests are not counted).
pub(crate) fn bounded(capacity: usize) -> (QueueTx, QueueRx) {
    let (tx, rx) = std::sync::mpsc::channel();
    let held = Arc::new(AtomicUsize::new(0));
    (
        QueueTx {
            tx,
            held: held.clone(),
            capacity: capacity.max(1),
        },
        QueueRx { rx, held },
    )
}

/// Why an event was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    Full,
    Closed,
}

/// The sending side, held by the recorder.
#[derive(Debug, Clone)]
pub(crate) struct QueueTx {
    tx: Sender<Msg>,
    held: Arc<AtomicUsize>,
    capacity: usize,
}

impl QueueTx {
    /// Queues the event unless the queue holds `capacity` already. Never blocks.
    pub(crate) fn try_send(&self, event: Event) -> Result<(), Refused> {
        if self.held.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.held.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Full);
        }
        self.tx.send(Msg::Event(event)).map_err(|_| {
            self.held.fetch_sub(1, Ordering::AcqRel);
            Refused::Closed
        })
    }

    /// Queues a flush request behind every event queued so far. False when
    /// the roll-up is gone.
    pub(crate) fn flush(&self, done: tokio::sync::oneshot::Sender<()>) -> bool {
        self.tx.send(Msg::Flush(done)).is_ok()
    }
}

/// The receiving end, drained by the roll-up thread (or a test).
#[derive(Debug)]
pub(crate) struct QueueRx {
    rx: Receiver<Msg>,
    held: Arc<AtomicUsize>,
}

impl QueueRx {
    pub(crate) fn try_recv(&self) -> Result<Msg, TryRecvError> {
        let msg = self.rx.try_recv()?;
        if matches!(msg, Msg::Event(_)) {
            self.held.fetch_sub(1, Ordering::AcqRel);
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(status: u16) -> Event {
        Event {
            at_ms: 0,
            route: None,
            service: None,
            who: crate::Who::Anonymous,
            method: http::Method::GET,
            status,
            error: None,
            upstream_us: None,
            total_us: 1,
            bytes_in: 0,
            bytes_out: 0,
            client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
            request_id: http::HeaderValue::from_static("r"),
        }
    }

    fn status(msg: Msg) -> Option<u16> {
        match msg {
            Msg::Event(e) => Some(e.status),
            Msg::Flush(_) => None,
        }
    }

    #[test]
    fn holds_at_most_its_capacity_and_takes_more_as_it_drains() {
        let (tx, rx) = bounded(3);
        for s in 0..3 {
            assert_eq!(tx.try_send(event(200 + s)), Ok(()));
        }
        assert_eq!(tx.try_send(event(299)), Err(Refused::Full));
        assert_eq!(status(rx.try_recv().unwrap()), Some(200));
        assert_eq!(tx.try_send(event(203)), Ok(()));
        assert_eq!(tx.try_send(event(298)), Err(Refused::Full));
        let rest: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(status)
            .collect();
        assert_eq!(rest, [Some(201), Some(202), Some(203)]);
        assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
    }

    #[test]
    fn a_flush_is_queued_behind_events_even_when_the_queue_is_full() {
        let (tx, rx) = bounded(1);
        assert_eq!(tx.try_send(event(200)), Ok(()));
        let (done, _wait) = tokio::sync::oneshot::channel();
        assert!(tx.flush(done));
        assert_eq!(status(rx.try_recv().unwrap()), Some(200));
        assert_eq!(status(rx.try_recv().unwrap()), None);
    }

    #[test]
    fn a_closed_queue_refuses_and_keeps_no_count() {
        let (tx, rx) = bounded(1);
        drop(rx);
        assert_eq!(tx.try_send(event(200)), Err(Refused::Closed));
        assert_eq!(tx.held.load(Ordering::Relaxed), 0);
    }
}
