//! `watch --metrics ADDR:PORT` (also spelled `--web.listen-address`): `GET /metrics`, and a
//! landing page at `/`, on hyper's HTTP/1.1 server.
//!
//! The endpoint faces whatever can reach its port, so it is built to stay up (README
//! "Prometheus"):
//! - One thread in all, running a single-threaded tokio runtime: no thread per
//!   connection, so no task limit and no failed thread spawn can take it or the process
//!   down. The thread holds no capability (it drops them first thing).
//! - At most `Limits::max_connections` connections; a new one beyond that closes the one
//!   that has been quiet longest, so idle or trickling connections cannot lock a scraper
//!   out, and the descriptors it uses are bounded.
//! - A request's head must arrive within `header_timeout` and fit in `max_header_bytes`
//!   (else 431 and close); a connection on which no byte moves for `idle_timeout` is
//!   closed, so is a TLS handshake not done within `header_timeout`.
//! - A failed `accept` (out of descriptors) is logged and retried after a pause.
//!
//! Two steps, because of how kaprobe starts:
//! - `bind` opens the listening sockets and reads `--web.config.file` (a TLS key may be
//!   readable by root only). Call it before entering `--netns`/`--pid`, so that the
//!   endpoint is on the host's network, and before dropping privileges (a port below 1024
//!   needs CAP_NET_BIND_SERVICE).
//! - `MetricsListener::serve` starts the thread. Call it after the process's privileges
//!   are dropped (capabilities are per thread; `privilege::drop_capabilities` refuses to
//!   run while other threads exist). The thread blocks SIGINT, SIGTERM and SIGHUP, so they
//!   reach the thread that polls (`sys::catch_stop_signals`).
//!
//! `/metrics` answers in the OpenMetrics text format when the scraper's `Accept` asks for
//! it (as Prometheus does), else in the classic text format 0.0.4; gzip-compressed when
//! `Accept-Encoding` allows it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::web_config::WebConfig;
use super::{Metrics, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};
use crate::error::{Error, Result};

/// An address to listen on. `dual_stack`: an IPv6 wildcard that also takes IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenAddr {
    pub addr: SocketAddr,
    pub dual_stack: bool,
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr.fmt(f)
    }
}

/// Reads `ADDR:PORT` for `--metrics`: `127.0.0.1:9479`, `[::1]:9479`, or `:9479` and
/// `[::]:9479` for every address of both families (as exporters read `:9100`).
pub fn parse_listen_addr(s: &str) -> std::result::Result<ListenAddr, String> {
    let full = if s.starts_with(':') {
        format!("[::]{s}")
    } else {
        s.to_string()
    };
    let addr = full.parse::<SocketAddr>().map_err(|_| {
        format!("'{s}' is not ADDR:PORT; write e.g. 127.0.0.1:9479, [::1]:9479 or :9479")
    })?;
    let dual_stack = matches!(addr, SocketAddr::V6(a) if a.ip().is_unspecified());
    Ok(ListenAddr { addr, dual_stack })
}

/// What one connection may cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
}

/// hyper refuses a read buffer below 8 KiB (it would panic).
const MIN_HEADER_BYTES: usize = 8 * 1024;

pub const LIMITS: Limits = Limits {
    max_connections: 64,
    header_timeout: Duration::from_secs(10),
    idle_timeout: Duration::from_secs(30),
    max_header_bytes: 16 * 1024,
};

/// Bound listening sockets and the web config, with no thread yet.
#[derive(Debug)]
pub struct MetricsListener {
    sockets: Vec<(std::net::TcpListener, SocketAddr)>,
    web: WebConfig,
    limits: Limits,
}

/// Binds every address in `addrs` (in the calling thread's network namespace) and reads
/// `web_config`. Errors: an address in use or not on this host, a bad web config → exit 2;
/// a privileged port without CAP_NET_BIND_SERVICE → exit 6.
pub fn bind(addrs: &[ListenAddr], web_config: Option<&Path>) -> Result<MetricsListener> {
    if addrs.is_empty() {
        return Err(Error::Usage("--metrics: no address to listen on".into()));
    }
    let mut sockets = Vec::with_capacity(addrs.len());
    for a in addrs {
        let listener = bind_one(a)?;
        let addr = listener.local_addr().map_err(|e| Error::Io {
            context: "reading the --metrics socket's address".into(),
            source: e,
        })?;
        sockets.push((listener, addr));
    }
    let web = match web_config {
        Some(path) => WebConfig::load(path)?,
        None => WebConfig::default(),
    };
    Ok(MetricsListener {
        sockets,
        web,
        limits: LIMITS,
    })
}

fn bind_one(a: &ListenAddr) -> Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let open = |addr: SocketAddr, dual: bool| -> std::io::Result<std::net::TcpListener> {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        if addr.is_ipv6() {
            s.set_only_v6(!dual)?;
        }
        s.bind(&addr.into())?;
        s.listen(1024)?;
        s.set_nonblocking(true)?;
        Ok(s.into())
    };
    let result = match open(a.addr, a.dual_stack) {
        // No IPv6 on this host: the wildcard means IPv4's.
        Err(e) if a.dual_stack && e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
            let v4 = SocketAddr::from(([0, 0, 0, 0], a.addr.port()));
            open(v4, false)
        }
        r => r,
    };
    result.map_err(|e| match e.raw_os_error() {
        Some(libc::EADDRINUSE) => {
            Error::Usage(format!("--metrics {a}: the address is already in use"))
        }
        Some(libc::EADDRNOTAVAIL) => Error::Usage(format!(
            "--metrics {a}: no such address on this host (or in this network namespace)"
        )),
        _ => Error::sys(
            format!("listening on --metrics {a}"),
            caps::Capability::CAP_NET_BIND_SERVICE,
            e,
        ),
    })
}

/// `bind` then `serve`, for callers that neither change namespace nor drop capabilities.
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<MetricsServer> {
    let a = ListenAddr {
        addr,
        dual_stack: false,
    };
    bind(&[a], None)?.serve(metrics)
}

impl MetricsListener {
    /// The first bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs()[0]
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets.iter().map(|(_, a)| *a).collect()
    }

    /// Other limits than `LIMITS` (tests).
    pub fn with_limits(mut self, limits: Limits) -> MetricsListener {
        self.limits = Limits {
            max_header_bytes: limits.max_header_bytes.max(MIN_HEADER_BYTES),
            max_connections: limits.max_connections.max(1),
            ..limits
        };
        self
    }

    /// Starts answering on one background thread. Call after dropping capabilities.
    pub fn serve(self, metrics: Arc<Metrics>) -> Result<MetricsServer> {
        let addrs = self.local_addrs();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| Error::Io {
                context: "starting the --metrics server".into(),
                source: e,
            })?;
        let listeners = runtime.block_on(async {
            self.sockets
                .into_iter()
                .map(|(l, _)| tokio::net::TcpListener::from_std(l))
                .collect::<std::io::Result<Vec<_>>>()
        });
        let listeners = listeners.map_err(|e| Error::Io {
            context: "starting the --metrics server".into(),
            source: e,
        })?;
        // `Site` is not Send: it is made on the server's thread, from these.
        let (web, limits) = (self.web, self.limits);
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = with_stop_signals_blocked(|| {
            std::thread::Builder::new()
                .name("kaprobe-metrics".into())
                .spawn(move || {
                    // Capabilities are per thread: this one, facing the network, keeps none
                    // of those the probing thread still holds.
                    if let Err(e) = crate::sys::privilege::drop_thread_capabilities() {
                        log::warn!("metrics: dropping the thread's capabilities: {e}");
                    }
                    let site = Rc::new(Site::new(metrics, &web, limits));
                    let local = tokio::task::LocalSet::new();
                    runtime.block_on(local.run_until(run(listeners, site, stopped)));
                })
        })
        .map_err(|e| Error::Io {
            context: "starting the --metrics thread".into(),
            source: e,
        })?;
        for a in &addrs {
            log::info!("serving metrics at http://{a}/metrics");
        }
        Ok(MetricsServer {
            stop: Some(stop),
            thread: Some(thread),
            addrs,
        })
    }
}

/// The running endpoint. Dropping it stops answering and closes the sockets.
pub struct MetricsServer {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    addrs: Vec<SocketAddr>,
}

impl MetricsServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops answering and waits for the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Dropping the sender wakes the server, which drops every connection and listener.
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("addrs", &self.addrs)
            .finish()
    }
}

/// What every connection of one server shares (on its one thread).
struct Site {
    metrics: Arc<Metrics>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    auth: Option<Arc<super::web_config::BasicAuth>>,
    headers: Vec<(header::HeaderName, HeaderValue)>,
    limits: Limits,
    conns: RefCell<Conns>,
}

impl Site {
    fn new(metrics: Arc<Metrics>, web: &WebConfig, limits: Limits) -> Site {
        Site {
            metrics,
            tls: web.tls.clone().map(tokio_rustls::TlsAcceptor::from),
            auth: web.auth.clone(),
            headers: web.headers.clone(),
            limits,
            conns: RefCell::new(Conns::default()),
        }
    }
}

/// The open connections: when each last moved a byte, and how to close it.
#[derive(Default)]
struct Conns {
    next: u64,
    live: HashMap<u64, (Rc<Cell<Instant>>, oneshot::Sender<()>)>,
}

impl Conns {
    /// Makes room for one more (closing the quietest while at `max`) and registers it.
    fn admit(&mut self, max: usize) -> (u64, Rc<Cell<Instant>>, oneshot::Receiver<()>) {
        while self.live.len() >= max {
            let Some(quietest) = self
                .live
                .iter()
                .min_by_key(|(id, (last, _))| (last.get(), **id))
                .map(|(id, _)| *id)
            else {
                break;
            };
            // Its task ends when the sender goes.
            self.live.remove(&quietest);
        }
        self.next += 1;
        let last = Rc::new(Cell::new(Instant::now()));
        let (close, closed) = oneshot::channel();
        self.live.insert(self.next, (last.clone(), close));
        (self.next, last, closed)
    }
}

async fn run(
    listeners: Vec<tokio::net::TcpListener>,
    site: Rc<Site>,
    stopped: oneshot::Receiver<()>,
) {
    for l in listeners {
        tokio::task::spawn_local(accept_loop(l, site.clone()));
    }
    // Returns when the MetricsServer is stopped or dropped.
    let _ = stopped.await;
}

async fn accept_loop(listener: tokio::net::TcpListener, site: Rc<Site>) {
    let mut warned: Option<Instant> = None;
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                let (id, last, closed) = site.conns.borrow_mut().admit(site.limits.max_connections);
                tokio::task::spawn_local(connection(stream, id, last, closed, site.clone()));
            }
            Err(e) => {
                // Out of descriptors, most likely: keep the listener, try again shortly.
                if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                    log::warn!("metrics: accepting a connection: {e}");
                    warned = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One connection, until it ends, is closed for room, or stays quiet for `idle_timeout`.
async fn connection(
    stream: tokio::net::TcpStream,
    id: u64,
    last: Rc<Cell<Instant>>,
    closed: oneshot::Receiver<()>,
    site: Rc<Site>,
) {
    let io = Activity {
        inner: stream,
        last: last.clone(),
    };
    let limits = site.limits;
    let work = async {
        match &site.tls {
            Some(acceptor) => {
                match tokio::time::timeout(limits.header_timeout, acceptor.accept(io)).await {
                    Ok(Ok(tls)) => serve_http(tls, &site).await,
                    Ok(Err(e)) => log::debug!("metrics: TLS handshake: {e}"),
                    Err(_) => log::debug!("metrics: TLS handshake timed out"),
                }
            }
            None => serve_http(io, &site).await,
        }
    };
    tokio::select! {
        _ = work => {}
        _ = closed => log::debug!("metrics: closed a quiet connection to make room"),
        _ = quiet_for(&last, limits.idle_timeout) => log::debug!("metrics: closed an idle connection"),
    }
    site.conns.borrow_mut().live.remove(&id);
}

/// Returns once no byte has moved for `idle`.
async fn quiet_for(last: &Cell<Instant>, idle: Duration) {
    loop {
        let until = last.get() + idle;
        if Instant::now() >= until {
            return;
        }
        tokio::time::sleep_until(until).await;
    }
}

async fn serve_http<IO>(io: IO, site: &Rc<Site>)
where
    IO: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let s = site.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let response = respond(&req, &s);
        async move { Ok::<_, Infallible>(response) }
    });
    let limits = site.limits;
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(MIN_HEADER_BYTES))
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
        .await;
    if let Err(e) = result {
        log::debug!("metrics: {e}");
    }
}

/// A stream that notes when a byte last moved either way.
struct Activity<S> {
    inner: S,
    last: Rc<Cell<Instant>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Activity<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.last.set(Instant::now());
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Activity<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.last.set(Instant::now());
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Answer {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn plain(status: StatusCode, body: &'static str) -> Answer {
    answer(status, "text/plain; charset=utf-8", body)
}

const LANDING_PAGE: &str = concat!(
    "<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"><title>kaprobe</title></head>\n",
    "<body>\n<h1>kaprobe</h1>\n<p>TCP keepalive prober, version ",
    env!("CARGO_PKG_VERSION"),
    ": <code>kaprobe watch</code>.</p>\n<ul><li><a href=\"metrics\">Metrics</a></li></ul>\n",
    "</body>\n</html>\n"
);

fn respond(req: &Request<Incoming>, site: &Site) -> Answer {
    let mut r = route(req, site);
    for (name, value) in &site.headers {
        r.headers_mut().insert(name.clone(), value.clone());
    }
    r
}

fn route(req: &Request<Incoming>, site: &Site) -> Answer {
    let h = req.headers();
    if let Some(auth) = &site.auth
        && !auth.allows(h.get(header::AUTHORIZATION).map(HeaderValue::as_bytes))
    {
        let mut r = plain(StatusCode::UNAUTHORIZED, "Unauthorized\n");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
        return r;
    }
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => {
            let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
    };
    let text = |name| h.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    let (body, content_type) = match req.uri().path() {
        "/metrics" => {
            if wants_openmetrics(text(header::ACCEPT)) {
                (site.metrics.encode_openmetrics(), OPENMETRICS_CONTENT_TYPE)
            } else {
                (site.metrics.encode(), TEXT_CONTENT_TYPE)
            }
        }
        "/" => (LANDING_PAGE.to_string(), "text/html; charset=utf-8"),
        _ => {
            return plain(
                StatusCode::NOT_FOUND,
                "not found: kaprobe serves / and /metrics\n",
            );
        }
    };
    let gzipped = accepts_gzip(text(header::ACCEPT_ENCODING))
        .then(|| gzip(body.as_bytes()))
        .flatten();
    let mut r = match gzipped {
        Some(g) => {
            let mut r = answer(StatusCode::OK, content_type, g);
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        }
        None => answer(StatusCode::OK, content_type, body),
    };
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if head {
        // hyper sends no body for HEAD; the headers stay those of GET.
        *r.body_mut() = Full::new(Bytes::new());
    }
    r
}

fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    let mut e = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 8),
        flate2::Compression::fast(),
    );
    e.write_all(body).ok()?;
    e.finish().ok()
}

/// The entries of an `Accept` or `Accept-Encoding` list not refused with `q=0`.
fn accepted(list: Option<&str>) -> impl Iterator<Item = &str> {
    list.unwrap_or("").split(',').filter_map(|part| {
        let mut params = part.split(';').map(str::trim);
        let value = params.next().unwrap_or("");
        let refused = params.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f64>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        (!refused && !value.is_empty()).then_some(value)
    })
}

/// Whether the scraper asked for OpenMetrics (Prometheus lists it first in `Accept`).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accepted(accept).any(|m| m.eq_ignore_ascii_case("application/openmetrics-text"))
}

/// Whether `Accept-Encoding` takes gzip (Prometheus sends `gzip`).
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    accepted(accept_encoding)
        .any(|c| c.eq_ignore_ascii_case("gzip") || c.eq_ignore_ascii_case("x-gzip"))
}

/// Runs `f` with SIGINT, SIGTERM and SIGHUP blocked in the calling thread, so threads it
/// starts (and the threads those start) inherit the block; then restores the mask.
fn with_stop_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use; the masks only
    // affect the calling thread.
    unsafe {
        let mut block: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut block, sig);
        }
        let blocked = libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old) == 0;
        let out = f();
        if blocked {
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        }
        out
    }
}

#[cfg(test)]
mod tests;
