//! Bytes that are not RESP on the client port, and not the peer protocol on the peer
//! port, are refused (the connection closed, counted in `/metrics`) and the node keeps
//! serving.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rand::RngCore;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use ryu_server::frame::{
    CHALLENGE_BYTES, Dialer, FrameDecoder, HANDSHAKE_MAX_FRAME_BYTES, HandshakeConfig, encode_frame,
};

use crate::harness::{Cluster, connect, http_get, info_field, metric};

fn open(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("set_read_timeout");
    s
}

/// Read until the peer closes the connection (within `timeout`, else panic);
/// returns what it sent. A reset counts as closed.
fn read_until_closed(s: &mut TcpStream, what: &str, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return got, // reset
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the node kept the connection open for {timeout:?} (got {:?})",
            String::from_utf8_lossy(&got)
        );
    }
}

/// Read whatever arrives within `for_` (the connection may stay open).
fn read_for(s: &mut TcpStream, for_: Duration) -> Vec<u8> {
    let deadline = Instant::now() + for_;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    got
}

/// The node answers `PING`, a `SET`/`GET` round trip, and `/health` with 200.
fn assert_serving(cluster: &Cluster, after: &str) {
    let spec = &cluster.procs[0].spec;
    let mut c = connect(spec.client, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("after {after}: cannot connect: {e}"));
    let pong: String = redis::cmd("PING")
        .query(&mut c)
        .unwrap_or_else(|e| panic!("after {after}: PING: {e}"));
    assert_eq!(pong, "PONG", "after {after}");
    let value = format!("alive after {after}");
    redis::cmd("SET")
        .arg("canary")
        .arg(&value)
        .query::<()>(&mut c)
        .unwrap_or_else(|e| panic!("after {after}: SET: {e}"));
    let got: String = redis::cmd("GET")
        .arg("canary")
        .query(&mut c)
        .unwrap_or_else(|e| panic!("after {after}: GET: {e}"));
    assert_eq!(got, value, "after {after}");
    let (code, body) = http_get(spec.http, "/health");
    assert_eq!(code, 200, "after {after}: /health says {body}");
}

/// Send `bytes`, then expect `-ERR Protocol error` and the connection closed.
fn expect_protocol_error(addr: SocketAddr, bytes: &[u8], what: &str) {
    let mut s = open(addr);
    s.write_all(bytes).expect("write");
    let reply = read_until_closed(&mut s, what, Duration::from_secs(5));
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.starts_with("-ERR Protocol error"),
        "{what}: expected a protocol error, got {reply:?}"
    );
}

fn client_port_garbage(cluster: &Cluster, rng: &mut ChaCha8Rng) {
    let addr = cluster.procs[0].spec.client;

    // Random bytes: whatever the node makes of them (inline commands it refuses, or a
    // protocol error), it must answer with errors only and survive.
    for round in 0..4 {
        let mut bytes = vec![0u8; 8192];
        rng.fill_bytes(&mut bytes);
        if round % 2 == 1 {
            bytes[0] = b'*'; // sometimes a multibulk header
        }
        let mut s = open(addr);
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(Shutdown::Write);
        let replies = read_for(&mut s, Duration::from_millis(500));
        for line in replies.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            assert!(
                line.starts_with(b"-") && line.ends_with(b"\r"),
                "random bytes got a reply that is not an error: {:?}",
                String::from_utf8_lossy(&replies)
            );
        }
        assert_serving(cluster, "random bytes on the client port");
    }

    // A truncated command, then close.
    let mut s = open(addr);
    s.write_all(b"*3\r\n$3\r\nSET\r\n$7\r\ntrun")
        .expect("write");
    drop(s);
    assert_serving(cluster, "a truncated array");

    // A bulk header declaring 2 GB: refused from the header alone.
    expect_protocol_error(addr, b"*1\r\n$2000000000\r\n", "a 2 GB bulk header");
    assert_serving(cluster, "a 2 GB bulk header");

    // An unbalanced quote in an inline command.
    expect_protocol_error(addr, b"SET \"abc def\r\n", "an unbalanced inline quote");
    assert_serving(cluster, "an unbalanced inline quote");
}

fn peer_port_garbage(cluster: &Cluster, rng: &mut ChaCha8Rng) {
    let spec = &cluster.procs[0].spec;
    let addr = spec.peer;

    // Random bytes: enough that any frame length up to the handshake limit is
    // complete, so the node decides without waiting for more.
    let mut bytes = vec![0u8; 4096];
    rng.fill_bytes(&mut bytes);
    let mut s = open(addr);
    let _ = s.write_all(&bytes);
    let got = read_until_closed(
        &mut s,
        "random bytes on the peer port",
        Duration::from_secs(7),
    );
    assert!(got.is_empty(), "the node answered random bytes: {got:?}");
    assert_serving(cluster, "random bytes on the peer port");

    // A frame header declaring a 2 GiB payload.
    let mut s = open(addr);
    let mut header = Vec::new();
    header.extend_from_slice(&0x7fff_ffffu32.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    let _ = s.write_all(&header);
    read_until_closed(&mut s, "a huge frame header", Duration::from_secs(7));
    assert_serving(cluster, "a huge peer frame header");

    // A genuine Hello from a dialer with the wrong secret: the node answers with its
    // Challenge, which does not verify under our secret; a wrong Proof gets the
    // connection closed.
    let mut c = connect(spec.client, Duration::from_secs(5)).expect("connect");
    let cluster_id =
        u64::from_str_radix(&info_field(&mut c, "ryu_cluster_id"), 16).expect("a hex cluster id");
    let wrong = HandshakeConfig {
        cluster_id,
        node_id: spec.id + 1,
        secret: b"not the cluster secret".to_vec(),
    };
    let mut nonce = [0u8; 32];
    rng.fill_bytes(&mut nonce);
    let (dialer, hello) = Dialer::new(&wrong, spec.id, nonce);
    let mut s = open(addr);
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set_read_timeout");
    let mut frame = Vec::new();
    encode_frame(&hello, &mut frame);
    s.write_all(&frame).expect("send the Hello");
    let mut decoder = FrameDecoder::new(HANDSHAKE_MAX_FRAME_BYTES);
    let challenge = loop {
        if let Some(f) = decoder.next_frame().expect("a well-formed Challenge frame") {
            break f;
        }
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).expect("the node answers a valid Hello");
        assert!(n > 0, "the node closed the connection on a valid Hello");
        decoder.push(&buf[..n]);
    };
    assert_eq!(challenge.len(), CHALLENGE_BYTES);
    assert!(
        dialer.on_challenge(&challenge).is_err(),
        "a Challenge MACed with the real secret verified under a wrong one"
    );
    let mut proof = [0u8; 32];
    rng.fill_bytes(&mut proof);
    let mut frame = Vec::new();
    encode_frame(&proof, &mut frame);
    s.write_all(&frame).expect("send the Proof");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("set_read_timeout");
    let got = read_until_closed(&mut s, "a wrong Proof", Duration::from_secs(7));
    assert!(
        got.is_empty(),
        "the node sent more after a wrong Proof: {got:?}"
    );
    assert_serving(cluster, "a wrong handshake Proof");
}

#[test]
fn garbage_on_client_and_peer_ports_is_refused_and_the_node_survives() {
    let seed = 0x5eed_0003;
    eprintln!("SEED={seed:#x}");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut cluster = Cluster::new("garbage", 1);
    cluster.specs[0].secret = Some(crate::harness::SECRET.to_string());
    cluster.start();
    cluster.wait_leader(Duration::from_secs(15));
    assert_serving(&cluster, "start-up");

    client_port_garbage(&cluster, &mut rng);
    peer_port_garbage(&cluster, &mut rng);

    let (code, body) = http_get(cluster.procs[0].spec.http, "/metrics");
    assert_eq!(code, 200);
    let rejected = metric(&body, "ryu_peer_connections_rejected_total");
    let protocol_errors = metric(&body, "ryu_client_protocol_errors_total");
    eprintln!("peer connections rejected: {rejected}; client protocol errors: {protocol_errors}");
    assert!(
        rejected >= 3,
        "{rejected} peer connections counted as rejected"
    );
    assert!(
        protocol_errors >= 2,
        "{protocol_errors} client protocol errors counted"
    );
    assert!(cluster.procs[0].is_running(), "the node exited");
}
