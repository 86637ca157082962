//! The peer frame decoder and the handshake parsers against arbitrary bytes.
//!
//! Properties: nothing panics; splitting the input in two (at a point taken from the
//! first byte) yields the same frames and the same error as feeding it whole; no input
//! passes a handshake MAC check (forging HMAC-SHA256 is not something a fuzzer finds).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ryu_server::frame::{
    Dialer, FrameDecoder, FrameError, HANDSHAKE_MAX_FRAME_BYTES, HandshakeConfig, Listener,
    NONCE_BYTES,
};

/// Feed `pieces` one after another, draining after each.
fn decode_pieces(max_payload: usize, pieces: &[&[u8]]) -> (Vec<Vec<u8>>, Option<FrameError>) {
    let mut decoder = FrameDecoder::new(max_payload);
    let mut frames = Vec::new();
    for piece in pieces {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => return (frames, Some(error)),
            }
        }
    }
    (frames, None)
}

fn config(node_id: u64) -> HandshakeConfig {
    HandshakeConfig {
        cluster_id: 7,
        node_id,
        secret: b"fuzz cluster secret".to_vec(),
    }
}

fuzz_target!(|data: &[u8]| {
    let split = match data.first() {
        Some(&byte) => usize::from(byte) * data.len() / 255,
        None => 0,
    };
    // A small limit reaches the oversize path; the handshake limit is the real one
    // used before a peer is authenticated.
    for max_payload in [64, HANDSHAKE_MAX_FRAME_BYTES] {
        let whole = decode_pieces(max_payload, &[data]);
        let halves = decode_pieces(max_payload, &[&data[..split], &data[split..]]);
        assert_eq!(whole, halves, "split at {split}");
        for frame in &whole.0 {
            assert!(frame.len() <= max_payload);
        }
    }

    // The raw input, and every frame in it, as handshake messages.
    let (frames, _) = decode_pieces(HANDSHAKE_MAX_FRAME_BYTES, &[data]);
    for message in std::iter::once(data).chain(frames.iter().map(Vec::as_slice)) {
        let _ = Listener::new(&config(2), [0x15; NONCE_BYTES]).on_hello(message);

        let (dialer, hello) = Dialer::new(&config(1), 2, [0xd1; NONCE_BYTES]);
        assert!(dialer.on_challenge(message).is_err());

        let (listener, _) = Listener::new(&config(2), [0x15; NONCE_BYTES])
            .on_hello(&hello)
            .expect("a genuine hello is accepted");
        assert!(listener.on_proof(message).is_err());
    }
});
