//! A raw TCP client that writes exactly the bytes it is given.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Echo, find, within};

/// A response as parsed off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// The head as it arrived, status line to the empty line.
    pub head: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    /// Asserts a problem+json answer with `status` and returns its `code`.
    pub fn problem(&self, status: u16) -> String {
        super::assert_problem(self.status, self.header("content-type"), &self.body, status)
    }
    pub fn echo(&self) -> Echo {
        assert_eq!(
            self.status,
            200,
            "body: {:?}",
            String::from_utf8_lossy(&self.body)
        );
        Echo(self.json())
    }
}

/// A client connection that writes exactly the bytes it is given.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        let stream = within("connect", TcpStream::connect(addr))
            .await
            .expect("connect");
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, data: impl AsRef<[u8]>) {
        within("write", self.stream.write_all(data.as_ref()))
            .await
            .expect("write");
    }

    /// Reads more bytes; false on EOF or reset.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match within("read", self.stream.read(&mut chunk)).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    async fn line(&mut self) -> Vec<u8> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return line[..i].to_vec();
            }
            assert!(self.fill().await, "connection closed mid-line");
        }
    }

    async fn exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await, "connection closed mid-body");
        }
        self.buf.drain(..n).collect()
    }

    /// Reads one response, failing after [`DEADLINE`].
    pub async fn response(&mut self) -> RawResponse {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                self.fill().await,
                "connection closed before a response: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head: Vec<u8> = self.buf.drain(..head_end).collect();
        let mut hs = [httparse::EMPTY_HEADER; 128];
        let mut res = httparse::Response::new(&mut hs);
        res.parse(&head).expect("response head");
        let status = res.code.expect("status");
        let headers: Vec<(String, String)> = res
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let body = if (100..200).contains(&status) || status == 204 || status == 304 {
            Vec::new()
        } else if get("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
            let mut body = Vec::new();
            loop {
                let line = self.line().await;
                let size = String::from_utf8_lossy(&line)
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                let size = usize::from_str_radix(&size, 16).expect("chunk size");
                if size == 0 {
                    while !self.line().await.is_empty() {}
                    break;
                }
                body.extend(self.exact(size).await);
                self.exact(2).await;
            }
            body
        } else if let Some(len) = get("content-length") {
            self.exact(len.trim().parse().expect("content-length"))
                .await
        } else {
            while self.fill().await {}
            std::mem::take(&mut self.buf)
        };
        RawResponse {
            status,
            head,
            headers,
            body,
        }
    }

    /// A response if one starts arriving within `wait`; `None` otherwise.
    pub async fn response_within(&mut self, wait: Duration) -> Option<RawResponse> {
        let mut probe = [0u8; 1];
        match tokio::time::timeout(wait, self.stream.peek(&mut probe)).await {
            Err(_) => None,
            Ok(_) => Some(self.response().await),
        }
    }

    /// Waits until the peer closes the connection (EOF or reset), failing
    /// after [`DEADLINE`]. Bytes that arrive first are discarded.
    pub async fn closed(&mut self) {
        while self.fill().await {}
    }
}
