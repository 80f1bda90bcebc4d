use super::*;
use crate::exit::ExitStatus;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant as StdInstant;

/// One request on a new connection; returns (status line, headers, body bytes).
fn get_bytes(addr: SocketAddr, request: &str) -> (String, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let body = raw.get(split + 4..).unwrap_or(&[]).to_vec();
    let (status, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
    (status.to_string(), headers.to_ascii_lowercase(), body)
}

fn get(addr: SocketAddr, request: &str) -> (String, String, String) {
    let (s, h, b) = get_bytes(addr, request);
    (s, h, String::from_utf8_lossy(&b).to_string())
}

fn local(limits: Limits) -> (Arc<Metrics>, MetricsServer) {
    let metrics = Arc::new(Metrics::default());
    let a = ListenAddr {
        addr: "127.0.0.1:0".parse().unwrap(),
        dual_stack: false,
    };
    let server = bind(&[a], None)
        .unwrap()
        .with_limits(limits)
        .serve(metrics.clone())
        .unwrap();
    (metrics, server)
}

/// Whether the server has closed `s` (EOF or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn listen_addresses() {
    let p = |s| parse_listen_addr(s).unwrap();
    assert_eq!(p("127.0.0.1:9479").addr, "127.0.0.1:9479".parse().unwrap());
    assert!(!p("127.0.0.1:9479").dual_stack);
    assert_eq!(p(":9479").addr, "[::]:9479".parse().unwrap());
    assert!(p(":9479").dual_stack && p("[::]:9479").dual_stack);
    assert!(!p("0.0.0.0:9479").dual_stack && !p("[::1]:9479").dual_stack);
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
    assert!(accepts_gzip(Some("gzip")));
    assert!(accepts_gzip(Some("br, gzip;q=0.5")));
    assert!(!accepts_gzip(Some("gzip;q=0")));
    assert!(!accepts_gzip(Some("identity")));
    assert!(!accepts_gzip(None));
}

#[test]
fn serves_metrics_landing_page_gzip_and_404_elsewhere() {
    let (metrics, server) = local(LIMITS);
    metrics.probe_sent(5);
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);

    let (status, headers, body) = get(addr, "GET /metrics HTTP/1.0\r\n\r\n");
    assert!(status.contains(" 200"), "{status}");
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4"),
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
        headers.contains(&OPENMETRICS_CONTENT_TYPE.to_ascii_lowercase()),
        "openmetrics asked for: {headers}"
    );
    assert!(body.contains("kaprobe_probes_sent_total 6\n"), "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");

    // gzip when asked: the same text, compressed.
    let (status, headers, gz) = get_bytes(
        addr,
        "GET /metrics HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n",
    );
    assert!(status.contains(" 200"), "{status}");
    assert!(headers.contains("content-encoding: gzip"), "{headers}");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.contains("kaprobe_probes_sent_total 6\n"), "{text}");

    let (status, headers, body) = get(addr, "GET / HTTP/1.0\r\n\r\n");
    assert!(status.contains(" 200"), "{status}");
    assert!(headers.contains("text/html"), "{headers}");
    assert!(body.contains("href=\"metrics\""), "{body}");

    let (status, _, _) = get(addr, "GET /metricsx HTTP/1.0\r\n\r\n");
    assert!(status.contains(" 404"), "{status}");
    let (status, headers, _) = get(addr, "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
    assert!(status.contains(" 405"), "{status}");
    assert!(headers.contains("get, head"), "{headers}");
    let (status, _, body) = get(addr, "HEAD /metrics HTTP/1.0\r\n\r\n");
    assert!(
        status.contains(" 200") && body.is_empty(),
        "{status} {body:?}"
    );

    server.stop();
    // Stopped: the port is closed.
    let deadline = StdInstant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).is_ok() {
        assert!(StdInstant::now() < deadline, "still listening after stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn oversized_headers_get_431_and_a_closed_connection() {
    let (_, server) = local(LIMITS);
    let addr = server.local_addr();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    // 64 MiB of headers in 64 KiB lines: the server stops reading long before the end.
    let line = format!("X-Filler: {}\r\n", "a".repeat(64 * 1024));
    let mut sent = 0usize;
    let mut refused = false;
    while sent < 64 << 20 {
        match s.write_all(line.as_bytes()) {
            Ok(()) => sent += line.len(),
            Err(_) => {
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "all 64 MiB of headers were taken");
    assert!(
        sent < 16 << 20,
        "{sent} bytes taken before the server closed"
    );
    // The endpoint still answers.
    let (status, _, _) = get(addr, "GET /metrics HTTP/1.0\r\n\r\n");
    assert!(status.contains(" 200"), "{status}");

    // Headers just over the limit get a 431 answer.
    let big = format!(
        "GET /metrics HTTP/1.1\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(LIMITS.max_header_bytes)
    );
    let (status, _, _) = get(addr, &big);
    assert!(status.contains(" 431"), "{status}");
}

#[test]
fn quiet_and_trickling_connections_are_closed_and_the_quietest_make_room() {
    let limits = Limits {
        max_connections: 4,
        header_timeout: Duration::from_millis(600),
        idle_timeout: Duration::from_millis(400),
        max_header_bytes: LIMITS.max_header_bytes,
    };
    let (_, server) = local(limits);
    let addr = server.local_addr();

    // An idle connection is closed after idle_timeout.
    let mut idle = TcpStream::connect(addr).unwrap();
    let t = StdInstant::now();
    assert!(closed_within(&mut idle, Duration::from_secs(3)));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );

    // A request head trickled a byte at a time, never quiet for idle_timeout, is closed at
    // header_timeout.
    let mut slow = TcpStream::connect(addr).unwrap();
    let t = StdInstant::now();
    let mut closed_after = None;
    for b in b"GET /metrics HTTP/1.1\r\nX-Slow: ".iter().cycle() {
        if slow.write_all(&[*b]).is_err() {
            closed_after = Some(t.elapsed());
            break;
        }
        if t.elapsed() > Duration::from_secs(4) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let closed_after = closed_after.expect("a trickling request head was kept open 4 s");
    assert!(
        closed_after >= Duration::from_millis(500),
        "{closed_after:?}"
    );

    // Over the cap, the quietest connection goes; a scrape is always answered.
    let mut held: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(50));
    let (status, _, _) = get(addr, "GET /metrics HTTP/1.0\r\n\r\n");
    assert!(status.contains(" 200"), "{status}");
    assert!(
        closed_within(&mut held[0], Duration::from_millis(300)),
        "the quietest connection was kept over the cap"
    );
    assert!(!closed_within(&mut held[3], Duration::from_millis(50)));
    // 200 connections at once: the server keeps at most 4, and still answers.
    let many: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    let (status, _, _) = get(addr, "GET /metrics HTTP/1.0\r\n\r\n");
    assert!(status.contains(" 200"), "{status}");
    let open = many
        .into_iter()
        .filter_map(|mut s| (!closed_within(&mut s, Duration::from_millis(5))).then_some(()))
        .count();
    assert!(open <= 4, "{open} connections kept open over a cap of 4");
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let (_, server) = local(LIMITS);
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..3 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let n = s.read(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    }
}

#[test]
fn dual_stack_wildcard_takes_both_families() {
    let a = parse_listen_addr("[::]:0").unwrap();
    let listener = bind(&[a], None).unwrap();
    let port = listener.local_addr().port();
    let server = listener.serve(Arc::new(Metrics::default())).unwrap();
    let v4 = SocketAddr::from(([127, 0, 0, 1], port));
    let (status, _, _) = get(v4, "GET /metrics HTTP/1.0\r\n\r\n");
    assert!(status.contains(" 200"), "{status}");
    if TcpStream::connect(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))).is_ok() {
        let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
        let (status, _, _) = get(v6, "GET /metrics HTTP/1.0\r\n\r\n");
        assert!(status.contains(" 200"), "{status}");
    }
    drop(server);
}

#[test]
fn basic_auth_and_configured_headers() {
    let dir = std::env::temp_dir().join(format!("kaprobe-webcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("web.yml");
    let hash = bcrypt::hash("pw", 4).unwrap();
    std::fs::write(
        &path,
        format!(
            "basic_auth_users:\n  prom: '{hash}'\nhttp_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
        ),
    )
    .unwrap();
    let a = parse_listen_addr("127.0.0.1:0").unwrap();
    let server = bind(&[a], Some(&path))
        .unwrap()
        .serve(Arc::new(Metrics::default()))
        .unwrap();
    let addr = server.local_addr();
    let (status, headers, _) = get(addr, "GET /metrics HTTP/1.0\r\n\r\n");
    assert!(status.contains(" 401"), "{status}");
    assert!(headers.contains("www-authenticate: basic"), "{headers}");
    assert!(
        headers.contains("x-content-type-options: nosniff"),
        "{headers}"
    );
    // prom:pw and prom:nope
    let (status, _, body) = get(
        addr,
        "GET /metrics HTTP/1.0\r\nAuthorization: Basic cHJvbTpwdw==\r\n\r\n",
    );
    assert!(status.contains(" 200"), "{status}");
    assert!(body.contains("kaprobe_probes_sent_total"), "{body}");
    let (status, _, _) = get(
        addr,
        "GET /metrics HTTP/1.0\r\nAuthorization: Basic cHJvbTpub3Bl\r\n\r\n",
    );
    assert!(status.contains(" 401"), "{status}");
    std::fs::remove_dir_all(&dir).unwrap();

    // A bad config is one line and exit 2.
    let e = bind(&[a], Some(Path::new("/nonexistent/web.yml"))).unwrap_err();
    assert_eq!(e.status(), ExitStatus::Usage, "{e}");
    assert!(e.to_string().contains("/nonexistent/web.yml"), "{e}");
}

#[test]
fn binding_an_address_in_use_is_a_usage_error_and_starts_no_thread() {
    let first = bind(&[parse_listen_addr("127.0.0.1:0").unwrap()], None).unwrap();
    let again = ListenAddr {
        addr: first.local_addr(),
        dual_stack: false,
    };
    let e = bind(&[again], None).unwrap_err();
    assert_eq!(e.status(), ExitStatus::Usage, "{e}");
    assert!(e.to_string().contains("already in use"), "{e}");
    let e = bind(&[], None).unwrap_err();
    assert_eq!(e.status(), ExitStatus::Usage, "{e}");
    // A lab address (RFC 5737), on no interface outside the lab namespaces.
    let e = bind(&[parse_listen_addr("203.0.113.254:9479").unwrap()], None).unwrap_err();
    assert_eq!(e.status(), ExitStatus::Usage, "{e}");
}
