//! The operator API under the attacks that used to take central down: idle
//! and slow connections are cut, a body is never read before its token is
//! checked, the API's connections have their own budget, so that with the
//! process's open-file limit lowered a crowd of idle API sockets neither
//! blocks agents nor silences `/healthz` for good; tokens are rate-limited;
//! `/metrics` can need a token.

mod common;

use common::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Reads until the peer closes; the bytes it sent.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        stream.read_to_end(&mut got),
    )
    .await
    .expect("the server closes the connection");
    got
}

fn status_of(answer: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(answer);
    text.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn idle_api_sockets_neither_starve_agents_nor_silence_healthz() {
    // A low open-file limit, as a small host or a tight unit would have:
    // 300 idle sockets (this process holds both ends) would exhaust it if
    // the API accepted them all.
    let limit = 700;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, limit, limit)
        .expect("lower the open-file limit");
    let central = central("api_fd_budget", |c| {
        c.api_max_connections = 32;
        c.max_connections = 64;
        c.api_idle_timeout_ms = 1_000;
        c.api_header_timeout_ms = 1_000;
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(
            TcpStream::connect(central.running.api_addr)
                .await
                .expect("the kernel takes the connection"),
        );
    }
    // An agent still gets in: its endpoint has its own budget.
    let key = node_key();
    register(&central, &key).await;
    let mut ws = connect(&central, &good_token(&key))
        .await
        .expect("an agent connects while the API is crowded");
    assert!(matches!(
        next_message(&mut ws).await,
        nap_core::wire::CentralMessage::Welcome(_)
    ));
    // /healthz answers once the idle sockets ahead of it are cut...
    let (status, _) = http("GET", &central.api("/healthz"), None, None).await;
    assert_eq!(status, 200);
    // ...and every one of them was closed by central, having sent nothing.
    for mut stream in idle {
        assert_eq!(read_to_close(&mut stream).await, b"");
    }
}

#[tokio::test]
async fn a_body_is_not_read_before_its_token_is_checked_and_a_slow_one_is_cut() {
    let central = central("api_slow_body", |c| c.api_body_timeout_ms = 500).await;
    let path = "/api/v1/commands/broadcast";
    // No token: refused from the headers alone, the promised body never sent.
    let mut stream = TcpStream::connect(central.running.api_addr)
        .await
        .expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100000\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    assert_eq!(status_of(&read_to_close(&mut stream).await), Some(401));
    // A good token, then a body that never comes: 408 once the deadline passes.
    let mut stream = TcpStream::connect(central.running.api_addr)
        .await
        .expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\nconnection: close\r\n\r\n{{",
        central.admin
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    assert_eq!(status_of(&read_to_close(&mut stream).await), Some(408));
}

#[tokio::test]
async fn slow_headers_are_cut() {
    let central = central("api_slow_headers", |c| c.api_header_timeout_ms = 500).await;
    let mut stream = TcpStream::connect(central.running.api_addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    // The rest of the headers never come: central closes the connection
    // (hyper may or may not answer 408 first).
    let answer = read_to_close(&mut stream).await;
    assert!(
        answer.is_empty() || status_of(&answer) == Some(408),
        "{answer:?}"
    );
}

#[tokio::test]
async fn each_api_token_has_its_own_rate() {
    let central = central("api_rate", |c| {
        c.api_rate_per_s = 1;
        c.api_rate_burst = 3;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (status, _) = http(
            "GET",
            &central.api("/api/v1/nodes"),
            Some(&central.viewer),
            None,
        )
        .await;
        statuses.push(status);
    }
    assert_eq!(&statuses[..3], [200; 3]);
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    // Another token is not slowed by this one's use.
    let (status, _) = http(
        "GET",
        &central.api("/api/v1/nodes"),
        Some(&central.admin),
        None,
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn metrics_can_need_a_token() {
    let central = central("api_metrics_token", |c| {
        c.metrics_token = Some("scrape-me".into())
    })
    .await;
    let (status, _) = http("GET", &central.api("/metrics"), None, None).await;
    assert_eq!(status, 401);
    let (status, _) = http("GET", &central.api("/metrics"), Some("wrong"), None).await;
    assert_eq!(status, 401);
    let (status, _) = http("GET", &central.api("/metrics"), Some("scrape-me"), None).await;
    assert_eq!(status, 200);
}
