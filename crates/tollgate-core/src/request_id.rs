//! The request id: the `X-Request-Id` a client sent when it is plain, or a
//! new ULID. The gateway and the admin API use the same rule, so an id seen
//! in one place can be searched for in the other.

use http::{HeaderMap, HeaderName, HeaderValue};

/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id: its `X-Request-Id` when that is 1 to 128 of
/// `A-Z a-z 0-9 - _ . :`, else a new ULID.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    request_id_at(headers, unix_ms)
}

/// [`request_id`] for a request that arrived at `unix_ms`, which a new ULID
/// carries as its time: the caller has already read the clock.
pub fn request_id_at(headers: &HeaderMap, unix_ms: u64) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty()
            && b.len() <= 128
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
        {
            return v.clone();
        }
    }
    let mut buf = [0u8; ulid::ULID_LEN];
    let id = ulid::Ulid::from_parts(unix_ms, rand::random::<u128>()).array_to_str(&mut buf);
    HeaderValue::from_maybe_shared(in_arena(id.as_bytes()))
        .unwrap_or(HeaderValue::from_static("invalid"))
}

/// Ids carved out of this many bytes at a time (39 ULIDs). A buffer lives
/// as long as its longest-lived id (a long download keeps its id in its
/// analytics event), so it is kept small.
const ARENA_BYTES: usize = 1024;

thread_local! {
    static ARENA: std::cell::RefCell<bytes::BytesMut> = std::cell::RefCell::new(bytes::BytesMut::new());
}

/// `bytes` copied into this thread's shared arena. A request's id is cloned
/// into its context, its upstream request, its response and its analytics
/// event: made as a value of its own, it costs an allocation, and the first
/// clone another (to make it shareable). Carved from a shared buffer, both
/// are one allocation per [`ARENA_BYTES`], and every clone only counts a
/// reference. A buffer is freed once the last id cut from it is dropped.
fn in_arena(bytes: &[u8]) -> bytes::Bytes {
    ARENA.with(|arena| {
        let mut arena = arena.borrow_mut();
        if arena.capacity() - arena.len() < bytes.len() {
            *arena = bytes::BytesMut::with_capacity(ARENA_BYTES.max(bytes.len()));
        }
        arena.extend_from_slice(bytes);
        arena.split().freeze()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ids_are_kept_and_others_replaced() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-1_2.3:4"));
        assert_eq!(request_id(&h), "abc-1_2.3:4");
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("has space"));
        assert_eq!(request_id(&h).len(), 26);
        assert_eq!(request_id(&HeaderMap::new()).len(), 26);
    }

    #[test]
    fn a_new_id_carries_the_arrival_time_and_fresh_randomness() {
        let at = 1_765_000_000_123;
        let a = request_id_at(&HeaderMap::new(), at);
        let b = request_id_at(&HeaderMap::new(), at);
        let parse =
            |v: &HeaderValue| ulid::Ulid::from_string(v.to_str().expect("ascii")).expect("a ULID");
        assert_eq!(parse(&a).timestamp_ms(), at);
        assert_eq!(parse(&b).timestamp_ms(), at);
        assert_ne!(a, b, "two ids of the same millisecond differ");
    }

    #[test]
    fn ids_carved_from_the_arena_stay_intact_across_refills() {
        let ids: Vec<HeaderValue> = (0..(2 * ARENA_BYTES / ulid::ULID_LEN + 3))
            .map(|i| request_id_at(&HeaderMap::new(), i as u64))
            .collect();
        for (i, id) in ids.iter().enumerate() {
            let parsed = ulid::Ulid::from_string(id.to_str().expect("ascii")).expect("a ULID");
            assert_eq!(parsed.timestamp_ms(), i as u64, "id {i} was overwritten");
        }
    }
}
