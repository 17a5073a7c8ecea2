//! What tests need for servers they start in other processes (tierd, redis-server, prometheus):
//! free ports, and the checkout's own files.
//!
//! Such a server binds the port some time after the test picked it. A port taken from
//! `bind("127.0.0.1:0")` comes from the kernel's ephemeral range, the very range every other
//! `:0` bind in the run (the in-process gateways, the origins, outgoing connections) draws from,
//! so between the pick and the server's bind the kernel may hand the same port to someone else,
//! and the test then talks to the wrong server. Ports here come from below the ephemeral range
//! (32768+ on Linux), where the kernel never hands out ports on its own, and each process walks
//! its own sequence, so no two picks in one run collide.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// The picks: `10000..20000`. `20000..30000` is left alone for Redis Cluster bus ports, which
/// are the client port + 10000.
const FIRST: u32 = 10_000;
const SPAN: u32 = 10_000;
const BUS_OFFSET: u16 = 10_000;

/// A loopback port nothing listens on now and no other pick in this run will return.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Overlapping test runs (two checkouts) start at different places.
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (start + n) % SPAN) as u16;
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + BUS_OFFSET) {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + SPAN);
}

/// The checkout under test. Read when the test runs (cargo sets it then too) rather than baked
/// in at build time: with a target directory shared by two checkouts, a test binary built in one
/// may be reused, unchanged, by the other.
/// Every file under `dir` whose name ends in `.ext`, in no particular order.
pub fn files(dir: &std::path::Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
    }
    out
}

pub fn repo() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
