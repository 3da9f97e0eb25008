//! One port, two protocols: a connection whose first byte is a TLS
//! handshake record (0x16) gets RA-TLS, anything else plain HTTP. So
//! validators that speak RA-TLS and Targon's validators (plain HTTP on 8080,
//! then 8980) both reach the agent on its default port.
//!
//! Connections are a bounded resource, so none is held for nothing: at most
//! [`MAX_PER_ADDRESS`] from one address (an IPv6 /64), a first signed
//! request within [`FIRST_SIGNED_TIMEOUT`], no new request for
//! [`IDLE_TIMEOUT`] or an age of [`MAX_AGE`] closes the connection
//! gracefully (requests in flight finish), and [`DRAIN_TIMEOUT`] after
//! that it is dropped. HTTP/2 keep-alive pings alone keep nothing open.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tower_service::Service;

/// TLS records of type handshake start with this byte; no HTTP method does.
const TLS_HANDSHAKE: u8 = 0x16;
/// A client that sends nothing (or no complete handshake) this long is dropped.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);
/// ...and one that takes this long to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 2048;
/// Connections from one address (IPv6: one /64); more are closed at once.
pub const MAX_PER_ADDRESS: usize = 64;
/// A connection that has made no signed request by then is closed.
pub const FIRST_SIGNED_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection that starts no request this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// No connection lives longer (clients reconnect).
pub const MAX_AGE: Duration = Duration::from_secs(15 * 60);
/// After a graceful close, requests in flight get this long to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// What one connection has done, for the timeouts above; put in each
/// request's extensions so that a handler can say the request was signed.
#[derive(Clone)]
pub struct ConnActivity(Arc<Activity>);

struct Activity {
    opened: Instant,
    /// Milliseconds after `opened` of the last request started.
    last_request_ms: AtomicU64,
    signed: AtomicBool,
    /// Told to drop the connection (room is needed for a new one).
    evict: tokio::sync::Notify,
}

impl ConnActivity {
    fn new() -> Self {
        ConnActivity(Arc::new(Activity {
            opened: Instant::now(),
            last_request_ms: AtomicU64::new(0),
            signed: AtomicBool::new(false),
            evict: tokio::sync::Notify::new(),
        }))
    }

    fn request_started(&self) {
        let ms = self.0.opened.elapsed().as_millis() as u64;
        self.0.last_request_ms.store(ms, Ordering::Release);
    }

    /// The connection made a request whose Epistula signature checked out.
    pub fn mark_signed(&self) {
        self.0.signed.store(true, Ordering::Release);
    }

    /// Why the connection should close now, if it should.
    fn close_reason(&self) -> Option<&'static str> {
        let age = self.0.opened.elapsed();
        let idle = age.saturating_sub(Duration::from_millis(
            self.0.last_request_ms.load(Ordering::Acquire),
        ));
        if !self.0.signed.load(Ordering::Acquire) && age >= FIRST_SIGNED_TIMEOUT {
            Some("no signed request")
        } else if idle >= IDLE_TIMEOUT {
            Some("idle")
        } else if age >= MAX_AGE {
            Some("maximum age")
        } else {
            None
        }
    }
}

/// Every open connection, oldest first: when all places are taken, the
/// oldest that has made no signed request gives its place to a new one, so
/// connections that only wait (from however many addresses) cannot keep a
/// validator out.
#[derive(Default)]
struct Open(Mutex<std::collections::VecDeque<std::sync::Weak<Activity>>>);

impl Open {
    fn add(&self, a: &ConnActivity) {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= 2 * MAX_CONNECTIONS {
            q.retain(|w| w.strong_count() > 0);
        }
        q.push_back(Arc::downgrade(&a.0));
    }

    /// Tell the oldest unsigned connection, if any, to go.
    fn evict_oldest_unsigned(&self) {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        q.retain(|w| w.strong_count() > 0);
        let victim = q.iter().position(|w| {
            w.upgrade()
                .is_some_and(|a| !a.signed.load(Ordering::Acquire))
        });
        // Out of the list: it is not chosen twice.
        if let Some(a) = victim.and_then(|i| q.remove(i)).and_then(|w| w.upgrade()) {
            a.evict.notify_one();
        }
    }
}

/// Connections per address; a slot is given back when its guard drops.
#[derive(Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

struct AddressSlot {
    table: Arc<PerAddress>,
    key: IpAddr,
}

impl PerAddress {
    /// One address's key: an IPv4 address, or the /64 of an IPv6 one (what
    /// one machine is usually given).
    fn key(ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
            v4 => v4,
        }
    }

    fn take(table: &Arc<PerAddress>, ip: IpAddr) -> Option<AddressSlot> {
        let key = Self::key(ip);
        let mut m = table.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(key).or_default();
        if *n >= MAX_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: table.clone(),
            key,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut m = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

/// Drive a connection (`conn`), closing it gracefully when its
/// [`ConnActivity`] says it is held for nothing, and dropping it if it has not
/// drained in time. A macro: hyper's connection type is unwieldy to name.
macro_rules! supervise {
    ($conn:expr, $activity:expr, $peer:expr) => {{
        let mut conn = std::pin::pin!($conn);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let closing = loop {
            tokio::select! {
                r = conn.as_mut() => break Err(r),
                _ = tick.tick() => {
                    if let Some(why) = $activity.close_reason() {
                        break Ok(why);
                    }
                }
            }
        };
        match closing {
            Err(r) => r,
            // Never signed: dropped at once, not drained (a stream it keeps
            // open must not hold the connection for the drain time).
            Ok(why @ "no signed request") => {
                tracing::debug!(peer = %$peer, reason = why, "dropping the connection");
                Ok(())
            }
            Ok(why) => {
                tracing::debug!(peer = %$peer, reason = why, "closing the connection");
                conn.as_mut().graceful_shutdown();
                tokio::time::timeout(DRAIN_TIMEOUT, conn)
                    .await
                    .unwrap_or(Ok(()))
            }
        }
    }};
}

/// Serve `app`: RA-TLS and plain HTTP told apart by the first byte, or
/// plain HTTP only when `tls` is `None` (the optional second port).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let per_address = Arc::new(PerAddress::default());
    let open = Arc::new(Open::default());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over its share: closed before anything is read, holding nothing.
        let Some(slot) = PerAddress::take(&per_address, peer.ip()) else {
            tracing::debug!(%peer, "too many connections from this address");
            continue;
        };
        // Every place taken: the oldest connection that never signed a
        // request makes room; if every one has, the newcomer waits briefly.
        let permit = match connections.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => return Ok(()),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                open.evict_oldest_unsigned();
                match tokio::time::timeout(
                    Duration::from_secs(1),
                    connections.clone().acquire_owned(),
                )
                .await
                {
                    Ok(Ok(p)) => p,
                    _ => continue,
                }
            }
        };
        let activity = ConnActivity::new();
        open.add(&activity);
        let app = app.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _slot = slot;
            let evicted = activity.clone();
            tokio::select! {
                _ = evicted.0.evict.notified() => {
                    tracing::debug!(%peer, "dropped to make room for a new connection");
                }
                _ = connection(stream, peer, app, acceptor, activity) => {}
            }
        });
    }
}

/// Serve one accepted connection until it ends or is closed.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    app: Router,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    activity: ConnActivity,
) {
    let _ = stream.set_nodelay(true);
    let mut first = [0u8; 1];
    match tokio::time::timeout(FIRST_BYTES_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return,
    }
    let seen = activity.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        seen.request_started();
        req.extensions_mut().insert(seen.clone());
        app.clone().call(req)
    });
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    let tls = acceptor.filter(|_| first[0] == TLS_HANDSHAKE);
    let result = if let Some(acceptor) = tls {
        match tokio::time::timeout(FIRST_BYTES_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                supervise!(conn, activity, peer)
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        }
    } else {
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        supervise!(conn, activity, peer)
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened_ago(age: Duration, last_request: Option<Duration>, signed: bool) -> ConnActivity {
        let opened = Instant::now().checked_sub(age).unwrap();
        ConnActivity(Arc::new(Activity {
            opened,
            last_request_ms: AtomicU64::new(last_request.map_or(0, |d| d.as_millis() as u64)),
            signed: AtomicBool::new(signed),
            evict: tokio::sync::Notify::new(),
        }))
    }

    #[test]
    fn connections_close_when_held_for_nothing() {
        let s = Duration::from_secs;
        // A fresh connection, and a busy signed one, stay.
        assert_eq!(opened_ago(s(1), None, false).close_reason(), None);
        assert_eq!(opened_ago(s(600), Some(s(590)), true).close_reason(), None);
        // Nothing signed in the first 30 s (an HTTP/2 preface and pings).
        assert_eq!(
            opened_ago(s(31), Some(s(20)), false).close_reason(),
            Some("no signed request")
        );
        // Signed, then silent for a minute.
        assert_eq!(
            opened_ago(s(200), Some(s(100)), true).close_reason(),
            Some("idle")
        );
        // Busy, but old.
        assert_eq!(
            opened_ago(MAX_AGE + s(1), Some(MAX_AGE), true).close_reason(),
            Some("maximum age")
        );
    }

    #[test]
    fn one_address_gets_a_bounded_share() {
        let table = Arc::new(PerAddress::default());
        let a: IpAddr = "203.0.113.7".parse().unwrap();
        let slots: Vec<_> = (0..MAX_PER_ADDRESS)
            .map(|_| PerAddress::take(&table, a).unwrap())
            .collect();
        assert!(PerAddress::take(&table, a).is_none());
        // The same address mapped into IPv6 is the same address.
        assert!(PerAddress::take(&table, "::ffff:203.0.113.7".parse().unwrap()).is_none());
        assert!(PerAddress::take(&table, "203.0.113.8".parse().unwrap()).is_some());
        // One IPv6 /64 is one address.
        let v6: Vec<_> = (0..MAX_PER_ADDRESS)
            .map(|i| PerAddress::take(&table, format!("2001:db8::{i:x}").parse().unwrap()).unwrap())
            .collect();
        assert!(PerAddress::take(&table, "2001:db8::ffff".parse().unwrap()).is_none());
        assert!(PerAddress::take(&table, "2001:db8:0:1::1".parse().unwrap()).is_some());
        drop(slots);
        drop(v6);
        assert!(
            PerAddress::take(&table, a).is_some(),
            "slots are given back"
        );
    }
}
