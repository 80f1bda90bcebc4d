//! `watch --metrics ADDR:PORT`: `GET /metrics` on a small HTTP server (`tiny_http`).
//!
//! Two steps, because of how kaprobe starts (README, "Fleet: Prometheus, containers,
//! packages"):
//! - `bind` opens the listening socket and starts no thread. Call it before entering
//!   `--netns`/`--pid` to serve on the host's network (a DaemonSet's Prometheus reaches it
//!   there), and before dropping capabilities (a port below 1024 needs
//!   CAP_NET_BIND_SERVICE). A socket stays in the namespace it was made in.
//! - `MetricsListener::serve` starts the threads. Call it after the capability drop:
//!   capabilities are per thread, and `privilege::drop_capabilities` refuses to run while
//!   other threads exist. The threads block SIGINT and SIGTERM, so those reach the thread
//!   that polls (`sys::catch_stop_signals`).
//!
//! The answer is the OpenMetrics text format when the scraper's `Accept` asks for it (as
//! Prometheus does), else the classic text format 0.0.4. Anything but `/metrics` is 404.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Metrics, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};
use crate::error::{Error, Result};

/// Reads `ADDR:PORT` for `--metrics`: `127.0.0.1:9479`, `[::1]:9479`, or `:9479` for every
/// IPv4 address.
pub fn parse_listen_addr(s: &str) -> std::result::Result<SocketAddr, String> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    full.parse::<SocketAddr>().map_err(|_| {
        format!("'{s}' is not ADDR:PORT; write e.g. 127.0.0.1:9479, [::1]:9479 or :9479")
    })
}

/// A bound listening socket with no thread yet.
#[derive(Debug)]
pub struct MetricsListener {
    listener: TcpListener,
    addr: SocketAddr,
}

/// Binds `addr` (in the calling thread's network namespace). Errors: address in use or not
/// on this host → exit 2; a privileged port without CAP_NET_BIND_SERVICE → exit 6.
pub fn bind(addr: SocketAddr) -> Result<MetricsListener> {
    let listener = TcpListener::bind(addr).map_err(|e| match e.raw_os_error() {
        Some(libc::EADDRINUSE) => {
            Error::Usage(format!("--metrics {addr}: the address is already in use"))
        }
        Some(libc::EADDRNOTAVAIL) => Error::Usage(format!(
            "--metrics {addr}: no such address on this host (or in this network namespace)"
        )),
        _ => Error::sys(
            format!("listening on --metrics {addr}"),
            caps::Capability::CAP_NET_BIND_SERVICE,
            e,
        ),
    })?;
    let addr = listener.local_addr().map_err(|e| Error::Io {
        context: "reading the --metrics socket's address".into(),
        source: e,
    })?;
    Ok(MetricsListener { listener, addr })
}

/// `bind` then `serve`, for callers that neither change namespace nor drop capabilities.
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<MetricsServer> {
    bind(addr)?.serve(metrics)
}

impl MetricsListener {
    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts answering scrapes on background threads. Call after dropping capabilities.
    pub fn serve(self, metrics: Arc<Metrics>) -> Result<MetricsServer> {
        let addr = self.addr;
        let stopping = Arc::new(AtomicBool::new(false));
        let (server, thread) = with_stop_signals_blocked(|| {
            let server = tiny_http::Server::from_listener(self.listener, None)
                .map(Arc::new)
                .map_err(|e| Error::Runtime(format!("starting the --metrics server: {e}")))?;
            let (s, stop) = (server.clone(), stopping.clone());
            let thread = std::thread::Builder::new()
                .name("kaprobe-metrics".into())
                .spawn(move || answer_scrapes(&s, &metrics, &stop))
                .map_err(|e| Error::Io {
                    context: "starting the --metrics thread".into(),
                    source: e,
                })?;
            Ok((server, thread))
        })?;
        log::info!("serving metrics at http://{addr}/metrics");
        Ok(MetricsServer {
            server,
            thread: Some(thread),
            stopping,
            addr,
        })
    }
}

/// The running endpoint. Dropping it stops answering.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    stopping: Arc<AtomicBool>,
    addr: SocketAddr,
}

impl MetricsServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops answering and waits for the answering thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.server.unblock();
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
            .field("addr", &self.addr)
            .finish()
    }
}

fn answer_scrapes(server: &tiny_http::Server, metrics: &Metrics, stopping: &AtomicBool) {
    loop {
        match server.recv() {
            Ok(request) => {
                let response = respond(
                    request.method(),
                    request.url(),
                    accept_header(&request).as_deref(),
                    metrics,
                );
                if let Err(e) = request.respond(response) {
                    log::debug!("metrics: answering a scrape: {e}");
                }
            }
            Err(_) if stopping.load(Ordering::SeqCst) => return,
            Err(e) => {
                // accept() failed (e.g. out of descriptors): keep serving, slowly.
                log::warn!("metrics: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn accept_header(request: &tiny_http::Request) -> Option<String> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Accept"))
        .map(|h| h.value.as_str().to_string())
}

type Response = tiny_http::Response<std::io::Cursor<Vec<u8>>>;

fn header(name: &str, value: &str) -> Option<tiny_http::Header> {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

fn plain(status: u16, body: &str) -> Response {
    let mut r = tiny_http::Response::from_string(body).with_status_code(status);
    if let Some(h) = header("Content-Type", "text/plain; charset=utf-8") {
        r.add_header(h);
    }
    r
}

/// Whether the scraper asked for OpenMetrics (Prometheus lists it first in `Accept`).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|part| {
            let mut params = part.split(';').map(str::trim);
            let media = params.next().unwrap_or("");
            let refused = params.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f64>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
    })
}

fn respond(
    method: &tiny_http::Method,
    url: &str,
    accept: Option<&str>,
    metrics: &Metrics,
) -> Response {
    let path = url.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return plain(404, "not found: kaprobe serves /metrics\n");
    }
    let head = match method {
        tiny_http::Method::Get => false,
        tiny_http::Method::Head => true,
        _ => {
            let mut r = plain(405, "only GET and HEAD\n");
            if let Some(h) = header("Allow", "GET, HEAD") {
                r.add_header(h);
            }
            return r;
        }
    };
    let (body, content_type) = if wants_openmetrics(accept) {
        (metrics.encode_openmetrics(), OPENMETRICS_CONTENT_TYPE)
    } else {
        (metrics.encode(), TEXT_CONTENT_TYPE)
    };
    let body = if head { String::new() } else { body };
    let mut r = tiny_http::Response::from_string(body);
    if let Some(h) = header("Content-Type", content_type) {
        r.add_header(h);
    }
    r
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
mod tests {
    use super::*;
    use crate::exit::ExitStatus;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// One HTTP/1.0 request; returns (status line, headers, body).
    fn get(addr: SocketAddr, request: &str) -> (String, String, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
        (status.to_string(), headers.to_string(), body.to_string())
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen_addr("127.0.0.1:9479").unwrap(),
            "127.0.0.1:9479".parse().unwrap()
        );
        assert_eq!(
            parse_listen_addr(":9479").unwrap(),
            "0.0.0.0:9479".parse().unwrap()
        );
        assert_eq!(
            parse_listen_addr("[::1]:9479").unwrap(),
            "[::1]:9479".parse().unwrap()
        );
        for bad in ["9479", "localhost:9479", "127.0.0.1", "127.0.0.1:99999", ""] {
            assert!(parse_listen_addr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn accept_negotiation() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(!wants_openmetrics(Some("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
        assert!(!wants_openmetrics(Some("application/openmetrics-text;q=0")));
    }

    #[test]
    fn serves_metrics_in_both_formats_and_404_elsewhere() {
        let metrics = Arc::new(Metrics::default());
        metrics.probe_sent(5);
        let server = serve("127.0.0.1:0".parse().unwrap(), metrics.clone()).unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);

        let (status, headers, body) = get(addr, "GET /metrics HTTP/1.0\r\n\r\n");
        assert!(status.contains(" 200"), "{status}");
        assert!(
            headers
                .to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{headers}"
        );
        assert!(body.contains("kaprobe_probes_sent_total 5\n"), "{body}");

        // Updates show in the next scrape.
        metrics.probe_sent(1);
        let (_, headers, body) = get(
            addr,
            "GET /metrics?x=1 HTTP/1.0\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n",
        );
        assert!(
            headers.contains(OPENMETRICS_CONTENT_TYPE),
            "openmetrics asked for: {headers}"
        );
        assert!(body.contains("kaprobe_probes_sent_total 6\n"), "{body}");
        assert!(body.ends_with("# EOF\n"), "{body}");

        let (status, _, _) = get(addr, "GET / HTTP/1.0\r\n\r\n");
        assert!(status.contains(" 404"), "{status}");
        let (status, _, _) = get(addr, "GET /metricsx HTTP/1.0\r\n\r\n");
        assert!(status.contains(" 404"), "{status}");
        let (status, headers, _) = get(addr, "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
        assert!(status.contains(" 405"), "{status}");
        assert!(headers.contains("GET, HEAD"), "{headers}");
        let (status, _, body) = get(addr, "HEAD /metrics HTTP/1.0\r\n\r\n");
        assert!(
            status.contains(" 200") && body.is_empty(),
            "{status} {body:?}"
        );

        server.stop();
        // Stopped: the port is closed (tiny_http's accept thread closes the listener).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "still listening after stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn binding_an_address_in_use_is_a_usage_error_and_starts_no_thread() {
        let first = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let e = bind(first.local_addr()).unwrap_err();
        assert_eq!(e.status(), ExitStatus::Usage, "{e}");
        assert!(e.to_string().contains("already in use"), "{e}");
        // A lab address (RFC 5737), on no interface outside the lab namespaces.
        let e = bind("203.0.113.254:9479".parse().unwrap()).unwrap_err();
        assert_eq!(e.status(), ExitStatus::Usage, "{e}");
    }
}
