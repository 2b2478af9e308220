//! The response body: frames read from the upstream connection as the
//! client side polls them, and the connection handed back at the end.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;
use tollgate_core::fields::PassedFields;

use super::chunked::{Chunk, Decoded, decode_chunk};
use super::{COPY_BELOW, ClientError, Connection, READ_RESERVE, read_into};

/// How the rest of a response body is framed.
#[derive(Debug)]
pub(super) enum Kind {
    /// This many bytes remain.
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    Eof,
    /// The connection switched protocols; see [`ResponseBody::into_upgraded`].
    Upgrade,
    /// The body ended.
    Done,
}

/// A response body read from the upstream connection as it is polled.
#[derive(Debug)]
pub struct ResponseBody {
    pub(super) conn: Option<Box<Connection>>,
    pub(super) kind: Kind,
    /// Whether the connection may serve another request after this body.
    pub(super) reusable: bool,
    /// The response head's fields, until they are taken.
    pub(super) passed: Option<Box<PassedFields>>,
}

impl ResponseBody {
    /// The response head's fields (every one but the hop-by-hop ones); a
    /// 101's are in its map instead.
    pub fn take_fields(&mut self) -> Option<Box<PassedFields>> {
        self.passed.take()
    }

    /// For a 101 response: the connection and any bytes of the new protocol
    /// already read. `None` for any other response.
    pub fn into_upgraded(mut self) -> Option<(TcpStream, Bytes)> {
        if !matches!(self.kind, Kind::Upgrade) {
            return None;
        }
        let conn = *self.conn.take()?;
        Some((conn.io, conn.buf.freeze()))
    }

    /// The body ended: the connection goes back to its pool (or is closed).
    fn end(&mut self) {
        self.kind = Kind::Done;
        if let Some(conn) = self.conn.take()
            && self.reusable
            && conn.buf.is_empty()
        {
            crate::pool::release(conn);
        }
    }

    /// Body data from the buffer, at most `max` bytes.
    pub(super) fn take_data(buf: &mut BytesMut, max: u64) -> Bytes {
        let n = buf.len().min(usize::try_from(max).unwrap_or(usize::MAX));
        if n < COPY_BELOW {
            let data = Bytes::copy_from_slice(&buf[..n]);
            buf.advance(n);
            data
        } else {
            buf.split_to(n).freeze()
        }
    }

    fn poll_read(conn: &mut Connection, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        conn.buf.reserve(READ_RESERVE);
        read_into(&mut conn.io, &mut conn.buf, cx)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut self.kind {
                Kind::Done | Kind::Upgrade => return Poll::Ready(None),
                Kind::Length(0) => {
                    self.end();
                    return Poll::Ready(None);
                }
                Kind::Length(rem) => {
                    if conn.buf.is_empty() {
                        match std::task::ready!(Self::poll_read(conn, cx)) {
                            Ok(0) => return Poll::Ready(Some(Err(ClientError::IncompleteBody))),
                            Ok(_) => continue,
                            Err(e) => return Poll::Ready(Some(Err(e.into()))),
                        }
                    }
                    let data = Self::take_data(&mut conn.buf, *rem);
                    *rem -= data.len() as u64;
                    if *rem == 0 {
                        // The last frame: release before the caller sees the end.
                        self.end();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Kind::Eof => {
                    if conn.buf.is_empty() {
                        match std::task::ready!(Self::poll_read(conn, cx)) {
                            Ok(0) => {
                                self.end();
                                return Poll::Ready(None);
                            }
                            Ok(_) => continue,
                            Err(e) => return Poll::Ready(Some(Err(e.into()))),
                        }
                    }
                    let data = Self::take_data(&mut conn.buf, u64::MAX);
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Kind::Chunked(state) => match decode_chunk(&mut conn.buf, state, false) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Progress) => continue,
                    Ok(Decoded::End(trailers)) => {
                        self.end();
                        return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                    }
                    Ok(Decoded::NeedMore) => match std::task::ready!(Self::poll_read(conn, cx)) {
                        Ok(0) => return Poll::Ready(Some(Err(ClientError::IncompleteBody))),
                        Ok(_) => continue,
                        Err(e) => return Poll::Ready(Some(Err(e.into()))),
                    },
                    Err(e) => return Poll::Ready(Some(Err(e))),
                },
            }
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A body with nothing left to read (a HEAD or 204 answer, say) still
        // gives its connection back; one dropped part-way closes it.
        if matches!(self.kind, Kind::Length(0)) {
            self.end();
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = ClientError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientError>>> {
        let this = self.get_mut();
        let out = this.poll_next(cx);
        if let Poll::Ready(Some(Err(_))) = &out {
            this.kind = Kind::Done;
            this.conn = None;
        }
        out
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.kind, Kind::Done | Kind::Upgrade | Kind::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.kind {
            Kind::Length(n) => SizeHint::with_exact(n),
            Kind::Done | Kind::Upgrade => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
