//! The warm fetch: one HTTP/1.1 GET to tierd's own listener over loopback, carrying the
//! warmer's marker, read to its end and discarded (the cache stored it on the way).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cache::{WARM_HEADER, WARM_RESULT_HEADER};

/// The head of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// The `tierd-warm-result` value, when the cache sent one.
    pub result: Option<String>,
    /// The `Age` of the entry served, when there is one.
    pub age: Option<u64>,
}

/// Largest response head read.
const MAX_HEAD: usize = 64 * 1024;

/// GETs `target` on `host` from the listener at `addr`, within `timeout` in all. `host` and
/// `target` must be visible ASCII ([`super::plan::sendable`]).
pub async fn get(
    addr: SocketAddr,
    host: &str,
    target: &str,
    secret: &str,
    timeout: Duration,
) -> io::Result<Reply> {
    match tokio::time::timeout(timeout, exchange(addr, host, target, secret)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "warm fetch timed out",
        )),
    }
}

async fn exchange(addr: SocketAddr, host: &str, target: &str, secret: &str) -> io::Result<Reply> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\n{WARM_HEADER}: {secret}\r\nUser-Agent: tierd-warmer\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(i) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "response head too large",
            ));
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the response head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let reply = parse_head(&buf[..head_end])?;
    // The body: read to the end (the server closes after it) and dropped.
    let mut sink = [0u8; 16 * 1024];
    while s.read(&mut sink).await? > 0 {}
    Ok(reply)
}

fn parse_head(head: &[u8]) -> io::Result<Reply> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed response head");
    let text = std::str::from_utf8(head).map_err(|_| bad())?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().ok_or_else(bad)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().ok_or_else(bad)?;
    if !version.starts_with("HTTP/1.") {
        return Err(bad());
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(bad)?;
    let (mut result, mut age) = (None, None);
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case(WARM_RESULT_HEADER) {
            result = Some(value.trim().to_owned());
        } else if name.eq_ignore_ascii_case("age") {
            age = value.trim().parse().ok();
        }
    }
    Ok(Reply {
        status,
        result,
        age,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_gives_the_status_and_the_result() {
        let r = parse_head(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nAge: 7\r\nTierd-Warm-Result: outcome=miss; ttl=60",
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.result.as_deref(), Some("outcome=miss; ttl=60"));
        assert_eq!(r.age, Some(7));
        let r = parse_head(b"HTTP/1.1 502 Bad Gateway").unwrap();
        assert_eq!((r.status, r.result, r.age), (502, None, None));
        assert!(parse_head(b"SSH-2.0 hello").is_err());
        assert!(parse_head(b"HTTP/1.1 abc").is_err());
    }
}
