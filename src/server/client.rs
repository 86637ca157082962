//! The RESP client port: one task per connection, commands executed in order
//! (pipelining works: replies are written in request order and flushed when the
//! input buffer has been drained).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Shared;
use super::commands::Session;
use crate::resp::{self, Limits, Value};

/// Accept clients forever.
pub async fn listen(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                shared.metrics.incr(&shared.metrics.client_connections);
                let s = shared.clone();
                tokio::spawn(async move { serve(s, stream, addr).await });
            }
            Err(e) => {
                tracing::warn!(error = %e, "client accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// The most unparsed input a connection may hold (Redis's
/// `client-query-buffer-limit`): one command can never be larger, and the parser
/// rescans at most this much per read.
const MAX_QUERY_BUFFER: usize = 4 << 20;
/// Replies to a pipeline are written out once this many bytes are pending.
const MAX_PENDING_OUTPUT: usize = 1 << 20;

/// Per-element limits: no value the node accepts is near 512 KiB (a write is at most
/// `ryu_node::MAX_COMMAND_BYTES` encoded), and 64 Ki arguments is more than any
/// command that fits in the query buffer needs.
fn limits() -> Limits {
    Limits {
        max_bulk_bytes: 512 << 10,
        max_array_len: 64 << 10,
        max_inline_bytes: 64 << 10,
    }
}

async fn serve(shared: Arc<Shared>, mut stream: TcpStream, addr: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let limits = limits();
    let mut session = Session::new(shared.config.password.is_none());
    let mut input: Vec<u8> = Vec::with_capacity(16 << 10);
    let mut output: Vec<u8> = Vec::with_capacity(16 << 10);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        // Execute every complete command buffered, then flush once.
        let mut consumed = 0;
        loop {
            match resp::parse_command(&input[consumed..], &limits) {
                Ok(Some((args, used))) => {
                    consumed += used;
                    if args.is_empty() {
                        continue; // an empty inline line
                    }
                    shared.metrics.incr(&shared.metrics.client_commands);
                    let reply = session.execute(&shared, args).await;
                    reply.encode(&mut output);
                    if output.len() > MAX_PENDING_OUTPUT {
                        // A long pipeline: write what is ready instead of holding it.
                        if stream.write_all(&output).await.is_err() {
                            return;
                        }
                        output.clear();
                    }
                    if session.quit {
                        let _ = stream.write_all(&output).await;
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    shared.metrics.incr(&shared.metrics.client_protocol_errors);
                    tracing::debug!(%addr, error = %e, "client protocol error; closing");
                    e.to_reply().encode(&mut output);
                    let _ = stream.write_all(&output).await;
                    return;
                }
            }
        }
        input.drain(..consumed);
        if !output.is_empty() {
            if stream.write_all(&output).await.is_err() {
                return;
            }
            output.clear();
        }
        if input.len() > MAX_QUERY_BUFFER {
            shared.metrics.incr(&shared.metrics.client_protocol_errors);
            tracing::debug!(%addr, "client query buffer over the limit; closing");
            let reply = Value::Error(format!(
                "ERR Protocol error: a command larger than {MAX_QUERY_BUFFER} bytes"
            ));
            output.clear();
            reply.encode(&mut output);
            let _ = stream.write_all(&output).await;
            return;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => input.extend_from_slice(&buf[..n]),
        }
    }
}
