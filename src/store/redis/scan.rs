//! Purges without an index: a prefix, or everything. `SCAN` each server (every primary of a
//! cluster in turn) for candidate keys, match them exactly in Rust, `UNLINK` them on that server.

use deadpool_redis::redis;
use deadpool_redis::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

use super::{Conn, Failure, Inner, Pool};
use crate::selector::Selector;
use crate::store::TierError;

/// Keys asked for per `SCAN` step.
const SCAN_COUNT: usize = 1000;

impl Inner {
    /// A purge without an index (a prefix, or everything): `SCAN` each server for candidate
    /// keys, exact match in Rust, `UNLINK`. On a cluster each primary is scanned in turn and its
    /// keys unlinked on it. Purging everything also drops the tag sets; only records count.
    pub(super) async fn scan_purge(&self, selector: &Selector) -> Result<u64, TierError> {
        let records = match selector {
            Selector::Prefix {
                host: Some(h),
                prefix,
            } => format!("{}*", glob_escape(&self.key(&format!("{h}{prefix}")))),
            Selector::Prefix { host: None, prefix } => {
                format!("{}*{}*", glob_escape(&self.prefix), glob_escape(prefix))
            }
            _ => format!("{}*", glob_escape(&self.prefix)),
        };
        let mut removed = 0;
        for node in self.scan_targets().await? {
            removed += self
                .scan_unlink(node.as_ref(), &records, |k| {
                    k.strip_prefix(&self.prefix)
                        .is_some_and(|k| selector.matches_key(k))
                })
                .await?;
            if *selector == Selector::All {
                let tags = format!("{}*", glob_escape(&self.tag_prefix));
                self.scan_unlink(node.as_ref(), &tags, |_| true).await?;
            }
        }
        Ok(removed)
    }

    /// The servers a scan visits: the one server (`None`), or every primary of a cluster.
    async fn scan_targets(&self) -> Result<Vec<Option<Node>>, TierError> {
        if !matches!(self.pool, Pool::Cluster(_)) {
            return Ok(vec![None]);
        }
        let text: String = self
            .guarded(|c| async move {
                let Conn::Cluster(mut c) = c else {
                    return Err(Failure::Pool("not a cluster connection".into()));
                };
                let v = c
                    .route_command(
                        redis::cmd("CLUSTER").arg("NODES").clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                    )
                    .await?;
                Ok(redis::from_redis_value(v).map_err(redis::RedisError::from)?)
            })
            .await?;
        let primaries = cluster_primaries(&text);
        if primaries.is_empty() {
            return Err(TierError::Unavailable(
                "CLUSTER NODES lists no reachable primary".into(),
            ));
        }
        Ok(primaries.into_iter().map(Some).collect())
    }

    /// `SCAN`s `node` (the server when `None`) for keys matching `pattern`, unlinks those
    /// `select` keeps; the number unlinked.
    async fn scan_unlink(
        &self,
        node: Option<&Node>,
        pattern: &str,
        select: impl Fn(&str) -> bool,
    ) -> Result<u64, TierError> {
        let mut cursor: u64 = 0;
        let mut removed = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT);
            let (next, keys): (u64, Vec<String>) = self
                .guarded(|c| async move {
                    match (c, node) {
                        (Conn::Cluster(mut c), Some(n)) => {
                            let v = c.route_command(scan, n.route()).await?;
                            Ok(redis::from_redis_value(v).map_err(redis::RedisError::from)?)
                        }
                        (mut c, _) => Ok(scan.query_async(&mut c).await?),
                    }
                })
                .await?;
            let keys: Vec<String> = keys.into_iter().filter(|k| select(k)).collect();
            if !keys.is_empty() {
                removed += self
                    .guarded(|c| async move {
                        match (c, node) {
                            (Conn::Cluster(mut c), Some(n)) => {
                                // One key per command: keys of different slots cannot share one.
                                let mut pipe = redis::pipe();
                                for k in &keys {
                                    pipe.cmd("UNLINK").arg(k);
                                }
                                let v = c.route_pipeline(pipe, 0, keys.len(), n.address()).await?;
                                Ok(v.iter()
                                    .map(|v| match v {
                                        redis::Value::Int(n) => u64::try_from(*n).unwrap_or(0),
                                        _ => 0,
                                    })
                                    .sum())
                            }
                            (mut c, _) => {
                                let n: u64 =
                                    redis::cmd("UNLINK").arg(&keys).query_async(&mut c).await?;
                                Ok(n)
                            }
                        }
                    })
                    .await?;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }
}

/// A cluster primary, as `CLUSTER NODES` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    host: String,
    port: u16,
}

impl Node {
    fn address(&self) -> SingleNodeRoutingInfo {
        SingleNodeRoutingInfo::ByAddress {
            host: self.host.clone(),
            port: self.port,
        }
    }

    fn route(&self) -> RoutingInfo {
        RoutingInfo::SingleNode(self.address())
    }
}

/// The primaries `CLUSTER NODES` lists as serving (not failed, with an address): one line per
/// node, `<id> <ip:port@cport[,hostname]> <flags> ...`.
fn cluster_primaries(text: &str) -> Vec<Node> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (_id, addr, flags) = (f.next()?, f.next()?, f.next()?);
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master")
                || flags
                    .iter()
                    .any(|f| matches!(*f, "fail" | "noaddr" | "handshake"))
            {
                return None;
            }
            let hostport = addr.split(['@', ',']).next()?;
            let (host, port) = hostport.rsplit_once(':')?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return None;
            }
            Some(Node {
                host: host.to_owned(),
                port: port.parse().ok()?,
            })
        })
        .collect()
}

/// Escapes Redis glob metacharacters so a key prefix matches literally.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{cluster_primaries, glob_escape, Node};

    #[test]
    fn cluster_primaries_are_the_serving_masters() {
        let text = "\
07c37dfeb2352 127.0.0.1:30004@31004,cache-4 slave e7d1eecce10fd 0 1426238317239 4 connected
67ed2db8d677e 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7e 127.0.0.1:30003@31003 master,fail - 0 1426238318243 3 connected 10923-16383
e7d1eecce10fd 10.0.0.9:30001@31001,cache-1 myself,master - 0 0 1 connected 0-5460
aa11 [::1]:30005@31005 master - 0 0 5 connected
bad line
";
        assert_eq!(
            cluster_primaries(text),
            vec![
                Node {
                    host: "127.0.0.1".into(),
                    port: 30002
                },
                Node {
                    host: "10.0.0.9".into(),
                    port: 30001
                },
                Node {
                    host: "::1".into(),
                    port: 30005
                },
            ]
        );
    }

    #[test]
    fn glob_metacharacters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\d^"), "a\\*b\\?\\[c\\]\\\\d\\^");
        assert_eq!(glob_escape("host/path?q=1"), "host/path\\?q=1");
    }
}
