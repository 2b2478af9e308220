//! The request id: the `X-Request-Id` a client sent when it is plain, or a
//! new ULID. The gateway and the admin API use the same rule, so an id seen
//! in one place can be searched for in the other.

use http::{HeaderMap, HeaderName, HeaderValue};

/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id: its `X-Request-Id` when that is 1 to 128 of
/// `A-Z a-z 0-9 - _ . :`, else a new ULID.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
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
    let id = ulid::Ulid::new().array_to_str(&mut buf);
    HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("invalid"))
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
}
