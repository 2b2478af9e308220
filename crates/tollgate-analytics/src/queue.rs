//! The event queue between the request path and the roll-up: one buffer per
//! recording thread, each bounded by the number of events it holds, taken
//! whole by the roll-up thread when it polls.
//!
//! Recording an event is a push onto the recording thread's own buffer
//! under a lock that only the roll-up thread ever contends for, a few times
//! a second. Nothing is allocated or freed per event once a buffer has
//! grown to the size of one poll's batch: the roll-up thread swaps each
//! buffer's vector for an empty one it keeps, so the memory goes back and
//! forth instead of being returned. A shared channel would instead touch
//! cache lines that every worker writes, and allocate blocks of slots on
//! the workers that the roll-up thread frees, which the workers' allocator
//! must then collect.
//!
//! Flush requests travel on a channel of their own. The receiver takes
//! every buffer's events after it has seen a flush request and before it
//! answers it, so a flush comes after every event recorded before it was
//! asked for.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::event::Event;

/// What the roll-up thread takes from the queue. Events are handed out by
/// value (no allocation per request); the rare flush is the small variant.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Msg {
    Event(Event),
    /// Write everything queued before this, then signal.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// A queue of at most `capacity` events per recording thread (flush
/// requests are not counted).
pub(crate) fn bounded(capacity: usize) -> (QueueTx, QueueRx) {
    let (control, requests) = std::sync::mpsc::channel();
    let shared = Arc::new(Shared {
        capacity: capacity.max(1),
        buffers: Mutex::new(Vec::new()),
        closed: AtomicBool::new(false),
    });
    (
        QueueTx {
            shared: shared.clone(),
            control,
        },
        QueueRx {
            shared,
            requests,
            pending: VecDeque::new(),
            spare: Vec::new(),
            flush_due: None,
        },
    )
}

#[derive(Debug)]
struct Shared {
    capacity: usize,
    /// Every recording thread's buffer.
    buffers: Mutex<Vec<Arc<Buffer>>>,
    /// The receiving end is gone.
    closed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One thread's events, waiting for the roll-up thread.
#[derive(Debug, Default)]
struct Buffer {
    events: Mutex<Vec<Event>>,
}

/// A thread's buffers: one per live queue it has recorded into.
type LocalBuffers = Vec<(Weak<Shared>, Arc<Buffer>)>;

thread_local! {
    static LOCAL: RefCell<LocalBuffers> = const { RefCell::new(Vec::new()) };
}

/// Why an event was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// This thread's buffer holds `capacity` events already (or the thread
    /// is exiting and has no buffer any more).
    Full,
    Closed,
}

/// The sending side, held by the recorder.
#[derive(Debug, Clone)]
pub(crate) struct QueueTx {
    shared: Arc<Shared>,
    control: Sender<tokio::sync::oneshot::Sender<()>>,
}

impl QueueTx {
    /// Queues the event unless this thread's buffer holds `capacity`
    /// already. Never blocks on another worker.
    pub(crate) fn try_send(&self, event: Event) -> Result<(), Refused> {
        if self.shared.closed.load(Ordering::Relaxed) {
            return Err(Refused::Closed);
        }
        let pushed = LOCAL.try_with(|local| {
            let Ok(mut local) = local.try_borrow_mut() else {
                return Err(Refused::Full);
            };
            let mine = Arc::as_ptr(&self.shared);
            let buffer = match local.iter().position(|(q, _)| q.as_ptr() == mine) {
                Some(i) => &local[i].1,
                None => {
                    let buffer = Arc::new(Buffer::default());
                    lock(&self.shared.buffers).push(buffer.clone());
                    // Forget the buffers of queues that are gone.
                    local.retain(|(q, _)| q.strong_count() > 0);
                    local.push((Arc::downgrade(&self.shared), buffer));
                    &local[local.len() - 1].1
                }
            };
            let mut events = lock(&buffer.events);
            if events.len() >= self.shared.capacity {
                return Err(Refused::Full);
            }
            events.push(event);
            Ok(())
        });
        pushed.unwrap_or(Err(Refused::Full))
    }

    /// Queues a flush request behind every event queued so far. False when
    /// the roll-up is gone.
    pub(crate) fn flush(&self, done: tokio::sync::oneshot::Sender<()>) -> bool {
        self.control.send(done).is_ok()
    }
}

/// The receiving end, drained by the roll-up thread (or a test).
#[derive(Debug)]
pub(crate) struct QueueRx {
    shared: Arc<Shared>,
    requests: Receiver<tokio::sync::oneshot::Sender<()>>,
    /// Events taken from the buffers and not yet handed out, in the order
    /// each thread recorded them.
    pending: VecDeque<Event>,
    /// An empty vector with room, swapped into the next buffer taken.
    spare: Vec<Event>,
    /// A flush request to answer once `pending` is empty.
    flush_due: Option<tokio::sync::oneshot::Sender<()>>,
}

impl QueueRx {
    /// The next event or flush request. `Disconnected` once every sender
    /// is gone and every event has been handed out.
    pub(crate) fn try_recv(&mut self) -> Result<Msg, TryRecvError> {
        if let Some(event) = self.pending.pop_front() {
            return Ok(Msg::Event(event));
        }
        if let Some(done) = self.flush_due.take() {
            return Ok(Msg::Flush(done));
        }
        // The request first, then the buffers: every event recorded before
        // the flush was asked for is taken before it is answered.
        let request = self.requests.try_recv();
        self.take_buffers();
        match request {
            Ok(done) => match self.pending.pop_front() {
                Some(event) => {
                    self.flush_due = Some(done);
                    Ok(Msg::Event(event))
                }
                None => Ok(Msg::Flush(done)),
            },
            Err(e) => self.pending.pop_front().map(Msg::Event).ok_or(e),
        }
    }

    /// Moves every buffer's events to `pending`, and forgets the buffers of
    /// threads that have exited (only the queue still holds them).
    fn take_buffers(&mut self) {
        let mut buffers = lock(&self.shared.buffers);
        buffers.retain(|buffer| {
            // Read before the buffer is emptied: a buffer its thread has let
            // go of gets no more events, so emptied after that it can go. (A
            // thread may record and exit while the buffers are taken; read
            // after, this would forget what it recorded last.)
            let orphaned = Arc::strong_count(buffer) == 1;
            let taken = {
                let mut events = lock(&buffer.events);
                (!events.is_empty())
                    .then(|| std::mem::replace(&mut *events, std::mem::take(&mut self.spare)))
            };
            if let Some(mut taken) = taken {
                self.pending.extend(taken.drain(..));
                self.spare = taken;
            }
            !orphaned
        });
    }
}

impl Drop for QueueRx {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Relaxed);
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
        let (tx, mut rx) = bounded(3);
        for s in 0..3 {
            assert_eq!(tx.try_send(event(200 + s)), Ok(()));
        }
        assert_eq!(tx.try_send(event(299)), Err(Refused::Full));
        assert_eq!(status(rx.try_recv().unwrap()), Some(200));
        // The whole buffer was taken: there is room for three again.
        for s in 3..6 {
            assert_eq!(tx.try_send(event(200 + s)), Ok(()));
        }
        assert_eq!(tx.try_send(event(298)), Err(Refused::Full));
        let rest: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(status)
            .collect();
        assert_eq!(
            rest,
            [Some(201), Some(202), Some(203), Some(204), Some(205)]
        );
        assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
    }

    #[test]
    fn each_thread_has_a_buffer_of_its_own() {
        let (tx, mut rx) = bounded(2);
        assert_eq!(tx.try_send(event(200)), Ok(()));
        assert_eq!(tx.try_send(event(201)), Ok(()));
        assert_eq!(tx.try_send(event(202)), Err(Refused::Full));
        let other = tx.clone();
        std::thread::spawn(move || {
            assert_eq!(other.try_send(event(300)), Ok(()));
            assert_eq!(other.try_send(event(301)), Ok(()));
            assert_eq!(other.try_send(event(302)), Err(Refused::Full));
        })
        .join()
        .unwrap();
        let mut all: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(status)
            .collect();
        all.sort_unstable();
        assert_eq!(all, [200, 201, 300, 301]);
        // The exited thread's buffer was emptied and forgotten.
        assert_eq!(lock(&rx.shared.buffers).len(), 1);
    }

    #[test]
    fn a_flush_comes_after_every_event_recorded_before_it() {
        let (tx, mut rx) = bounded(1);
        assert_eq!(tx.try_send(event(200)), Ok(()));
        let other = tx.clone();
        std::thread::spawn(move || assert_eq!(other.try_send(event(201)), Ok(())))
            .join()
            .unwrap();
        let (done, _wait) = tokio::sync::oneshot::channel();
        assert!(tx.flush(done));
        let mut got: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(status)
            .collect();
        assert_eq!(got.pop(), Some(None), "the flush comes last");
        got.sort_unstable();
        assert_eq!(got, [Some(200), Some(201)]);
    }

    #[test]
    fn the_last_events_are_handed_out_before_disconnected() {
        let (tx, mut rx) = bounded(4);
        assert_eq!(tx.try_send(event(200)), Ok(()));
        drop(tx);
        assert_eq!(status(rx.try_recv().unwrap()), Some(200));
        assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Disconnected);
    }

    #[test]
    fn no_event_is_lost_while_threads_record_and_exit_during_the_drains() {
        let (tx, mut rx) = bounded(1_000_000);
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000u16 {
                        assert_eq!(tx.try_send(event(t * 10 + i % 10)), Ok(()));
                    }
                })
            })
            .collect();
        let mut got = 0usize;
        while !threads.iter().all(|t| t.is_finished()) {
            while let Ok(Msg::Event(_)) = rx.try_recv() {
                got += 1;
            }
        }
        for t in threads {
            t.join().unwrap();
        }
        while let Ok(Msg::Event(_)) = rx.try_recv() {
            got += 1;
        }
        assert_eq!(got, 40_000);
    }

    #[test]
    fn a_closed_queue_refuses() {
        let (tx, rx) = bounded(1);
        drop(rx);
        assert_eq!(tx.try_send(event(200)), Err(Refused::Closed));
    }

    #[test]
    fn a_thread_forgets_the_buffers_of_queues_that_are_gone() {
        for _ in 0..3 {
            let (tx, rx) = bounded(1);
            assert_eq!(tx.try_send(event(200)), Ok(()));
            drop((tx, rx));
        }
        let (tx, _rx) = bounded(1);
        assert_eq!(tx.try_send(event(200)), Ok(()));
        LOCAL.with(|l| assert_eq!(l.borrow().len(), 1));
    }
}
