//! Passthrough bursts through a kernel pipe (`[relay] splice`), through a
//! `switchyard run` process (the spliced-bytes counter is the process's)
//! and real sockets: 4 MiB each way arrive byte for byte, half-closes are
//! passed on, the bytes are counted once, and `splice = false` moves the
//! same bytes through the buffer instead.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB4: usize = 4 << 20;

/// `len` bytes that differ from one position to the next (a shifted or
/// dropped chunk would not compare equal).
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A server that reads to the end of the stream, then sends `reply` and
/// closes; what it read comes back from the task. `slow`: it waits half a
/// second before reading, with a small receive buffer, so that the
/// router's sends to it block and the client's bytes (and its end of
/// stream) queue up in the router's socket.
async fn sink_then_reply(
    reply: Vec<u8>,
    slow: bool,
) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    if slow {
        socket.set_recv_buffer_size(4096).expect("small buffer");
    }
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = socket.listen(8).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        if slow {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.expect("read to the end");
        s.write_all(&reply).await.expect("reply");
        got
    });
    (addr, task)
}

/// A `switchyard run` process with `relay` as its `[relay]` table, routing
/// `bulk.test` by passthrough to a server that reads to the end and then
/// sends `reply`.
struct Setup {
    addr: SocketAddr,
    stats: SocketAddr,
    received: tokio::task::JoinHandle<Vec<u8>>,
    _process: Process,
    _dir: ConfigDir,
}

async fn setup(relay: &str, reply: Vec<u8>, slow: bool) -> Setup {
    let (server, received) = sink_then_reply(reply, slow).await;
    let dir = ConfigDir::new();
    let (addr, stats) = (closed_port(), closed_port());
    dir.write(
        "maps/os_sni_passthrough.map",
        &format!("{} 1\n", route_regex("bulk.test")),
    );
    dir.write(
        "maps/os_tcp_be.map",
        &format!("{} be_tcp:b:bulk\n", route_regex("bulk.test")),
    );
    dir.write(
        "switchyard.toml",
        &format!(
            "[[listener]]\nname = \"public_ssl\"\nbind = \"{addr}\"\n\n\
             [maps]\nsni_passthrough = \"maps/os_sni_passthrough.map\"\ntcp_be = \"maps/os_tcp_be.map\"\n\n\
             [relay]\n{relay}\n\
             [stats]\nbind = \"{stats}\"\n\n\
             [[backend]]\nname = \"be_tcp:b:bulk\"\n\
             servers = [{{ name = \"s\", address = \"{server}\" }}]\n"
        ),
    );
    let config = dir.path().join("switchyard.toml");
    let process = Process::start(&["run", "--config", config.to_str().expect("utf-8")]);
    Setup {
        addr,
        stats,
        received,
        _process: process,
        _dir: dir,
    }
}

/// Runs a router with `relay` as its `[relay]` table, sends a hello and
/// 4 MiB, half-closes, reads the server's 4 MiB to the end, and returns
/// the spliced-bytes counter.
async fn four_mib_each_way(relay: &str) -> f64 {
    let reply = pattern(MIB4, 2);
    // Bound whole: the process and its files live to the end of the test.
    let Setup {
        addr,
        stats,
        received,
        _process,
        _dir,
    } = setup(relay, reply.clone(), false).await;

    let mut sent = client_hello("bulk.test");
    sent.extend_from_slice(&pattern(MIB4, 1));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut read, mut write) = tcp.into_split();
    let to_send = sent.clone();
    let writer = tokio::spawn(async move {
        write.write_all(&to_send).await.expect("send");
        write.shutdown().await.expect("half-close");
    });
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), read.read_to_end(&mut back))
        .await
        .expect("the reply ends in time")
        .expect("read");
    writer.await.expect("writer");
    let got = received.await.expect("server");
    assert!(
        got == sent,
        "the server got {} of {} bytes, or others",
        got.len(),
        sent.len()
    );
    assert!(
        back == reply,
        "the client got {} of {} bytes, or others",
        back.len(),
        reply.len()
    );

    // Counted once each way, whichever way they went (the line is written
    // as the connection ends, just after the client saw the end).
    let series = "haproxy_frontend_bytes_in_total{frontend=\"public_ssl\"}";
    let mut counted = 0.0;
    for _ in 0..50 {
        counted = metric(stats, series).await;
        if counted > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counted, sent.len() as f64, "client bytes counted once");
    let out = "haproxy_frontend_bytes_out_total{frontend=\"public_ssl\"}";
    assert_eq!(metric(stats, out).await, reply.len() as f64);
    metric(stats, "switchyard_relay_spliced_bytes_total").await
}

#[tokio::test]
async fn bursts_go_through_a_pipe_byte_for_byte() {
    let spliced = four_mib_each_way("").await;
    if cfg!(target_os = "linux") {
        // Most of the 8 MiB: each burst's first 32 KiB go through the
        // buffer, the rest through the pipe.
        assert!(spliced >= (MIB4 as f64), "{spliced} bytes spliced of 8 MiB");
    }
}

#[tokio::test]
async fn splice_off_moves_the_same_bytes_through_the_buffer() {
    let spliced = four_mib_each_way("splice = false").await;
    assert_eq!(spliced, 0.0, "nothing went through a pipe");
}

/// TCP urgent data in the middle of a burst, with the client's end of
/// stream already queued behind it: splicing stops at the urgent mark, and
/// the bytes after it still arrive (the urgent byte itself is out of band,
/// as a socket read leaves it).
#[tokio::test]
async fn urgent_data_in_a_burst_loses_nothing_after_it() {
    let Setup {
        addr,
        received,
        _process,
        _dir,
        ..
    } = setup("", b"done".to_vec(), true).await;
    // More than the router's send buffer can take while the server waits.
    let before = pattern(2 * MIB4, 3);
    let after = pattern(64 * 1024, 4);
    let mut expected = client_hello("bulk.test");
    expected.extend_from_slice(&before);
    let tcp = std::net::TcpStream::connect(addr).expect("connect");
    let hello_and_before = expected.clone();
    let after_sent = after.clone();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut tcp = tcp;
        tcp.write_all(&hello_and_before).expect("send");
        let sock = socket2::SockRef::from(&tcp);
        sock.send_out_of_band(b"!").expect("urgent byte");
        tcp.write_all(&after_sent).expect("send the rest");
        tcp.shutdown(std::net::Shutdown::Write).expect("half-close");
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut tcp, &mut back).expect("reply");
        back
    });
    expected.extend_from_slice(&after);
    let got = tokio::time::timeout(Duration::from_secs(30), received)
        .await
        .expect("the server reads to the end in time")
        .expect("server");
    let back = tokio::task::spawn_blocking(move || writer.join().expect("writer"))
        .await
        .expect("join");
    assert_eq!(back, b"done");
    assert!(
        got == expected,
        "the server got {} of {} bytes, or others",
        got.len(),
        expected.len()
    );
}
