//! The peer transport's wire format: length-prefixed, checksummed frames, and the
//! authenticated handshake (version 1) that opens every peer connection.
//!
//! Pure code: no I/O, no clock, no randomness. The tokio shell reads bytes into a
//! [`FrameDecoder`], draws nonces from the OS (`getrandom`) and passes them in, and
//! writes what the state machines return. Every parser here returns a typed error on
//! bad bytes and never panics on any input (fuzzed by `fuzz/fuzz_targets/frame_decode.rs`
//! and by the proptests below).
//!
//! # Frame
//!
//! | offset | size  | field |
//! |--------|-------|-------|
//! | 0      | 4     | payload length `len` (u32 LE), at most the decoder's `max_payload` |
//! | 4      | 4     | crc32 (`crc32fast`, IEEE) of the payload (u32 LE) |
//! | 8      | `len` | payload |
//!
//! The length is checked against the limit as soon as the 8 header bytes are in: the
//! decoder never waits for, nor reserves room for, the payload of an oversized frame.
//! After any error the decoder is dead (the stream cannot be trusted to be in sync),
//! and the connection should be closed.
//!
//! # Handshake (version 1)
//!
//! The *dialer* (the node that opened the TCP connection) and the *listener* share a
//! cluster secret and know the cluster id. Three messages, each one frame payload; all
//! integers little-endian; the secret itself is never sent.
//!
//! ```text
//! dialer                                    listener
//!   Hello     (cluster, dialer id, addressed listener id, dialer nonce)  ->
//!          <-  Challenge (cluster, listener id, listener nonce, listener MAC)
//!   Proof     (dialer MAC)                                                ->
//! ```
//!
//! **Hello** ([`HELLO_BYTES`] = 62 bytes), dialer to listener:
//!
//! | offset | size | field |
//! |--------|------|-------|
//! | 0      | 4    | magic `RYUP` |
//! | 4      | 2    | version (u16), [`HANDSHAKE_VERSION`] |
//! | 6      | 8    | cluster id (u64) |
//! | 14     | 8    | dialer node id (u64) |
//! | 22     | 8    | node id of the listener the dialer means to reach (u64) |
//! | 30     | 32   | dialer nonce |
//!
//! **Challenge** ([`CHALLENGE_BYTES`] = 86 bytes), listener to dialer:
//!
//! | offset | size | field |
//! |--------|------|-------|
//! | 0      | 4    | magic `RYUP` |
//! | 4      | 2    | version (u16) |
//! | 6      | 8    | cluster id (u64) |
//! | 14     | 8    | listener node id (u64) |
//! | 22     | 32   | listener nonce |
//! | 54     | 32   | HMAC-SHA256(secret, `"ryu-peer-v1 listener"` ‖ Hello ‖ Challenge `[0, 54)`) |
//!
//! **Proof** ([`PROOF_BYTES`] = 32 bytes), dialer to listener:
//!
//! | offset | size | field |
//! |--------|------|-------|
//! | 0      | 32   | HMAC-SHA256(secret, `"ryu-peer-v1 dialer"` ‖ Hello ‖ Challenge) |
//!
//! Each MAC covers every byte both sides have sent so far, so changing any field of
//! any message in flight makes a MAC check fail. Each side's MAC covers the nonce the
//! *other* side chose, so a recorded Challenge or Proof is useless against a fresh
//! nonce (replay). The two labels differ, so a MAC one role computes is never accepted
//! in the other role (reflection). MACs are compared in constant time.
//!
//! The dialer considers the peer authenticated once the Challenge verifies and may send
//! frames right after the Proof; a listener that rejects the Proof closes the
//! connection. The handshake authenticates the peer at connection start only: it gives
//! no confidentiality, and the frames after it are not MACed.
//!
//! # Example
//!
//! ```
//! use ryu_server::frame::{encode_frame, Dialer, FrameDecoder, HandshakeConfig, Listener};
//!
//! let secret = b"correct horse battery staple".to_vec();
//! let one = HandshakeConfig { cluster_id: 7, node_id: 1, secret: secret.clone() };
//! let two = HandshakeConfig { cluster_id: 7, node_id: 2, secret };
//!
//! // Node 1 dials node 2. Nonces come from the OS random source in the shell.
//! let (dialer, hello) = Dialer::new(&one, 2, [0xd1; 32]);
//! let (listener, challenge) = Listener::new(&two, [0x15; 32]).on_hello(&hello)?;
//! let (proof, listener_peer) = dialer.on_challenge(&challenge)?;
//! let dialer_peer = listener.on_proof(&proof)?;
//! assert_eq!((listener_peer.node_id, dialer_peer.node_id), (2, 1));
//!
//! // Every message travels as one frame. A read loop pushes what it read, then
//! // drains every complete frame.
//! let mut wire = Vec::new();
//! encode_frame(&hello, &mut wire);
//! encode_frame(b"after the handshake", &mut wire);
//! let mut decoder = FrameDecoder::new(ryu_server::frame::HANDSHAKE_MAX_FRAME_BYTES);
//! decoder.push(&wire[..5]);
//! assert_eq!(decoder.next_frame()?, None);
//! decoder.push(&wire[5..]);
//! assert_eq!(decoder.next_frame()?, Some(hello.clone()));
//! decoder.set_max_payload(ryu_server::frame::DEFAULT_MAX_FRAME_BYTES);
//! assert_eq!(decoder.next_frame()?.as_deref(), Some(&b"after the handshake"[..]));
//! assert_eq!(decoder.next_frame()?, None);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

// ---------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------

/// Default limit on a frame's payload: 8 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 8 << 20;

const FRAME_LEN: usize = 0;
const FRAME_CRC: usize = FRAME_LEN + 4;
/// Bytes of a frame header (length and checksum).
pub const FRAME_HEADER_BYTES: usize = FRAME_CRC + 4;
const _: () = assert!(FRAME_HEADER_BYTES == 8);

/// A frame the decoder refuses. Either one ends the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The header announces a payload above the decoder's limit.
    Oversized { len: usize, max: usize },
    /// The payload does not match the crc32 in the header.
    Checksum { expected: u32, actual: u32 },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Oversized { len, max } => write!(
                f,
                "peer frame announces {len} payload bytes, above the limit of {max}"
            ),
            FrameError::Checksum { expected, actual } => write!(
                f,
                "peer frame checksum mismatch: header says {expected:#010x}, \
                 payload hashes to {actual:#010x}"
            ),
        }
    }
}

impl std::error::Error for FrameError {}

/// Append one frame carrying `payload` to `out`.
///
/// # Panics
///
/// If `payload` is longer than `u32::MAX` bytes: senders keep to the peer's frame limit,
/// which is far below that.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("frame payload exceeds u32::MAX bytes");
    let start = out.len();
    out.reserve(FRAME_HEADER_BYTES + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    debug_assert_eq!(out.len() - start, FRAME_HEADER_BYTES + payload.len());
}

/// Incremental frame decoder for a read loop: [`push`](Self::push) whatever the socket
/// returned, then call [`next_frame`](Self::next_frame) until it returns `Ok(None)`.
///
/// Bytes are split into frames the same way however they were chunked. After an error
/// the decoder keeps returning that error and drops further input.
pub struct FrameDecoder {
    max_payload: usize,
    /// Bytes received and not yet returned start at `buf[start]`.
    buf: Vec<u8>,
    start: usize,
    failed: Option<FrameError>,
}

impl FrameDecoder {
    /// A decoder that refuses payloads above `max_payload` bytes.
    pub fn new(max_payload: usize) -> FrameDecoder {
        FrameDecoder {
            max_payload,
            buf: Vec::new(),
            start: 0,
            failed: None,
        }
    }

    /// Change the limit for frames not yet returned, e.g. raise it from
    /// [`HANDSHAKE_MAX_FRAME_BYTES`] once the peer is authenticated, without losing
    /// bytes already buffered.
    pub fn set_max_payload(&mut self, max_payload: usize) {
        self.max_payload = max_payload;
    }

    /// The current payload limit.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Bytes received and not yet returned as frames.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Buffer bytes read from the stream. Ignored once the decoder has failed.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.start > 0 {
            // Amortised compaction: at most once per push, and only over bytes not yet
            // returned (at most one partial frame when the caller drains after pushing).
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete payload, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let pending = &self.buf[self.start..];
        let Some(header) = pending.get(..FRAME_HEADER_BYTES) else {
            return Ok(None);
        };
        let len = usize::try_from(u32_at(header, FRAME_LEN)).unwrap_or(usize::MAX);
        let expected = u32_at(header, FRAME_CRC);
        if len > self.max_payload {
            let max = self.max_payload;
            return Err(self.fail(FrameError::Oversized { len, max }));
        }
        let Some(payload) = pending.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES.saturating_add(len))
        else {
            return Ok(None);
        };
        let actual = crc32fast::hash(payload);
        if actual != expected {
            return Err(self.fail(FrameError::Checksum { expected, actual }));
        }
        let payload = payload.to_vec();
        self.start += FRAME_HEADER_BYTES + len;
        debug_assert!(self.start <= self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(payload))
    }

    fn fail(&mut self, error: FrameError) -> FrameError {
        self.failed = Some(error.clone());
        self.buf = Vec::new();
        self.start = 0;
        error
    }
}

impl fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the buffer: it may hold megabytes.
        f.debug_struct("FrameDecoder")
            .field("max_payload", &self.max_payload)
            .field("buffered_bytes", &self.buffered_bytes())
            .field("failed", &self.failed)
            .finish()
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

// ---------------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------------

/// First bytes of Hello and Challenge.
pub const HANDSHAKE_MAGIC: [u8; 4] = *b"RYUP";
/// The handshake version this build speaks.
pub const HANDSHAKE_VERSION: u16 = 1;
/// Bytes of each side's nonce.
pub const NONCE_BYTES: usize = 32;
/// Bytes of an HMAC-SHA256 tag.
pub const MAC_BYTES: usize = 32;

const LISTENER_LABEL: &[u8] = b"ryu-peer-v1 listener";
const DIALER_LABEL: &[u8] = b"ryu-peer-v1 dialer";

// Magic and version open Hello and Challenge alike, so a version mismatch is reported
// as such even when a later version changes the lengths.
const MSG_MAGIC: usize = 0;
const MSG_VERSION: usize = MSG_MAGIC + 4;
const MSG_CLUSTER: usize = MSG_VERSION + 2;

const HELLO_DIALER: usize = MSG_CLUSTER + 8;
const HELLO_LISTENER: usize = HELLO_DIALER + 8;
const HELLO_NONCE: usize = HELLO_LISTENER + 8;
/// Bytes of a Hello.
pub const HELLO_BYTES: usize = HELLO_NONCE + NONCE_BYTES;
const _: () = assert!(HELLO_BYTES == 62);

const CHALLENGE_LISTENER: usize = MSG_CLUSTER + 8;
const CHALLENGE_NONCE: usize = CHALLENGE_LISTENER + 8;
const CHALLENGE_MAC: usize = CHALLENGE_NONCE + NONCE_BYTES;
/// Bytes of a Challenge.
pub const CHALLENGE_BYTES: usize = CHALLENGE_MAC + MAC_BYTES;
const _: () = assert!(CHALLENGE_BYTES == 86);

/// Bytes of a Proof.
pub const PROOF_BYTES: usize = MAC_BYTES;

/// The largest handshake message: a decoder limited to this while the peer is
/// unauthenticated never buffers more than one small frame for it.
pub const HANDSHAKE_MAX_FRAME_BYTES: usize = CHALLENGE_BYTES;
const _: () = assert!(HELLO_BYTES <= HANDSHAKE_MAX_FRAME_BYTES);
const _: () = assert!(PROOF_BYTES <= HANDSHAKE_MAX_FRAME_BYTES);

type HmacSha256 = Hmac<Sha256>;

/// What a node needs to take part in a handshake.
#[derive(Clone)]
pub struct HandshakeConfig {
    pub cluster_id: u64,
    /// This node's id.
    pub node_id: u64,
    /// The shared cluster secret. Never sent, never printed.
    pub secret: Vec<u8>,
}

impl fmt::Debug for HandshakeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeConfig")
            .field("cluster_id", &self.cluster_id)
            .field("node_id", &self.node_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl HandshakeConfig {
    /// The secret as an HMAC key, so the state machines never hold the raw bytes.
    ///
    /// # Panics
    ///
    /// If the secret is empty: anyone could authenticate. Configuration loading
    /// rejects an empty secret before a connection is ever made.
    fn key(&self) -> HmacSha256 {
        assert!(!self.secret.is_empty(), "empty cluster secret");
        HmacSha256::new_from_slice(&self.secret).expect("HMAC takes keys of any length")
    }
}

/// What a completed handshake proved about the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// The peer's node id, authenticated by the shared secret.
    pub node_id: u64,
}

/// Why a handshake failed. Every variant ends the connection. Fields other than `BadMac`
/// come from unauthenticated bytes: fit for a log line, not for decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The message does not start with `RYUP`: not a Ryu peer.
    BadMagic,
    /// The peer speaks another handshake version.
    UnsupportedVersion { got: u16 },
    /// The peer belongs to another cluster.
    ClusterMismatch { ours: u64, theirs: u64 },
    /// The dialer addressed another node than this listener.
    WrongNode { ours: u64, addressed: u64 },
    /// The dialer claims this listener's own node id.
    PeerIsSelf { node_id: u64 },
    /// The node that answered is not the one this dialer dialed.
    UnexpectedPeer { expected: u64, got: u64 },
    /// A MAC does not verify: the peer has another secret, or bytes were changed or
    /// replayed.
    BadMac,
    /// The message has the wrong length for its kind.
    Malformed(&'static str),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::BadMagic => {
                write!(f, "peer handshake does not start with RYUP: not a Ryu peer")
            }
            HandshakeError::UnsupportedVersion { got } => write!(
                f,
                "peer speaks handshake version {got}; this build speaks {HANDSHAKE_VERSION}"
            ),
            HandshakeError::ClusterMismatch { ours, theirs } => {
                write!(
                    f,
                    "peer is in cluster {theirs}, this node in cluster {ours}"
                )
            }
            HandshakeError::WrongNode { ours, addressed } => write!(
                f,
                "dialer addressed node {addressed}, but this is node {ours}"
            ),
            HandshakeError::PeerIsSelf { node_id } => {
                write!(f, "dialer claims node id {node_id}, which is this node's")
            }
            HandshakeError::UnexpectedPeer { expected, got } => {
                write!(f, "dialed node {expected}, but node {got} answered")
            }
            HandshakeError::BadMac => write!(
                f,
                "peer handshake MAC does not verify: different cluster secret, \
                 or the bytes were altered or replayed"
            ),
            HandshakeError::Malformed(reason) => write!(f, "malformed peer handshake: {reason}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// Check magic, version and exact length, in that order.
fn check_preamble(
    payload: &[u8],
    len: usize,
    wrong_len: &'static str,
) -> Result<(), HandshakeError> {
    match payload.get(MSG_MAGIC..MSG_MAGIC + 4) {
        Some(magic) if magic == HANDSHAKE_MAGIC => {}
        Some(_) => return Err(HandshakeError::BadMagic),
        None => return Err(HandshakeError::Malformed(wrong_len)),
    }
    let Some(version) = payload.get(MSG_VERSION..MSG_VERSION + 2) else {
        return Err(HandshakeError::Malformed(wrong_len));
    };
    let got = u16::from_le_bytes([version[0], version[1]]);
    if got != HANDSHAKE_VERSION {
        return Err(HandshakeError::UnsupportedVersion { got });
    }
    if payload.len() != len {
        return Err(HandshakeError::Malformed(wrong_len));
    }
    Ok(())
}

fn write_preamble(out: &mut [u8], cluster_id: u64) {
    out[MSG_MAGIC..MSG_MAGIC + 4].copy_from_slice(&HANDSHAKE_MAGIC);
    out[MSG_VERSION..MSG_VERSION + 2].copy_from_slice(&HANDSHAKE_VERSION.to_le_bytes());
    out[MSG_CLUSTER..MSG_CLUSTER + 8].copy_from_slice(&cluster_id.to_le_bytes());
}

/// `key` over `label ‖ parts...`, ready to finalize or verify.
fn mac_over(key: &HmacSha256, label: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut mac = key.clone();
    mac.update(label);
    for part in parts {
        mac.update(part);
    }
    mac
}

/// The dialing side, after sending Hello and before receiving Challenge.
pub struct Dialer {
    cluster_id: u64,
    listener_node_id: u64,
    key: HmacSha256,
    hello: [u8; HELLO_BYTES],
}

impl Dialer {
    /// Start a handshake with node `listener_node_id`; returns the Hello to send.
    /// `nonce` must be fresh random bytes.
    ///
    /// # Panics
    ///
    /// If `listener_node_id` is this node's own id (callers never dial themselves),
    /// or if the secret is empty.
    pub fn new(
        cfg: &HandshakeConfig,
        listener_node_id: u64,
        nonce: [u8; NONCE_BYTES],
    ) -> (Dialer, Vec<u8>) {
        assert_ne!(
            cfg.node_id, listener_node_id,
            "a node dials only other nodes"
        );
        let mut hello = [0; HELLO_BYTES];
        write_preamble(&mut hello, cfg.cluster_id);
        hello[HELLO_DIALER..HELLO_DIALER + 8].copy_from_slice(&cfg.node_id.to_le_bytes());
        hello[HELLO_LISTENER..HELLO_LISTENER + 8].copy_from_slice(&listener_node_id.to_le_bytes());
        hello[HELLO_NONCE..HELLO_NONCE + NONCE_BYTES].copy_from_slice(&nonce);
        let dialer = Dialer {
            cluster_id: cfg.cluster_id,
            listener_node_id,
            key: cfg.key(),
            hello,
        };
        (dialer, hello.to_vec())
    }

    /// Verify the listener's Challenge; on success returns the Proof to send and the
    /// authenticated listener.
    pub fn on_challenge(self, payload: &[u8]) -> Result<(Vec<u8>, PeerInfo), HandshakeError> {
        check_preamble(payload, CHALLENGE_BYTES, "challenge must be 86 bytes")?;
        let theirs = u64_at(payload, MSG_CLUSTER);
        if theirs != self.cluster_id {
            let ours = self.cluster_id;
            return Err(HandshakeError::ClusterMismatch { ours, theirs });
        }
        let got = u64_at(payload, CHALLENGE_LISTENER);
        if got != self.listener_node_id {
            let expected = self.listener_node_id;
            return Err(HandshakeError::UnexpectedPeer { expected, got });
        }
        let (signed, tag) = payload.split_at(CHALLENGE_MAC);
        mac_over(&self.key, LISTENER_LABEL, &[&self.hello, signed])
            .verify_slice(tag)
            .map_err(|_| HandshakeError::BadMac)?;
        let proof = mac_over(&self.key, DIALER_LABEL, &[&self.hello, payload])
            .finalize()
            .into_bytes()
            .to_vec();
        debug_assert_eq!(proof.len(), PROOF_BYTES);
        Ok((proof, PeerInfo { node_id: got }))
    }
}

impl fmt::Debug for Dialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dialer")
            .field("cluster_id", &self.cluster_id)
            .field("listener_node_id", &self.listener_node_id)
            .finish_non_exhaustive()
    }
}

/// The listening side, before receiving Hello.
pub struct Listener {
    cluster_id: u64,
    node_id: u64,
    key: HmacSha256,
    nonce: [u8; NONCE_BYTES],
}

impl Listener {
    /// Wait for a dialer's Hello. `nonce` must be fresh random bytes.
    ///
    /// # Panics
    ///
    /// If the secret is empty.
    pub fn new(cfg: &HandshakeConfig, nonce: [u8; NONCE_BYTES]) -> Listener {
        Listener {
            cluster_id: cfg.cluster_id,
            node_id: cfg.node_id,
            key: cfg.key(),
            nonce,
        }
    }

    /// Check the dialer's Hello; on success returns the Challenge to send.
    pub fn on_hello(
        self,
        payload: &[u8],
    ) -> Result<(ListenerAwaitingProof, Vec<u8>), HandshakeError> {
        check_preamble(payload, HELLO_BYTES, "hello must be 62 bytes")?;
        let theirs = u64_at(payload, MSG_CLUSTER);
        if theirs != self.cluster_id {
            let ours = self.cluster_id;
            return Err(HandshakeError::ClusterMismatch { ours, theirs });
        }
        let addressed = u64_at(payload, HELLO_LISTENER);
        if addressed != self.node_id {
            let ours = self.node_id;
            return Err(HandshakeError::WrongNode { ours, addressed });
        }
        let dialer_node_id = u64_at(payload, HELLO_DIALER);
        if dialer_node_id == self.node_id {
            return Err(HandshakeError::PeerIsSelf {
                node_id: dialer_node_id,
            });
        }

        let mut transcript = [0; HELLO_BYTES + CHALLENGE_BYTES];
        let (hello, challenge) = transcript.split_at_mut(HELLO_BYTES);
        hello.copy_from_slice(payload);
        write_preamble(challenge, self.cluster_id);
        challenge[CHALLENGE_LISTENER..CHALLENGE_LISTENER + 8]
            .copy_from_slice(&self.node_id.to_le_bytes());
        challenge[CHALLENGE_NONCE..CHALLENGE_NONCE + NONCE_BYTES].copy_from_slice(&self.nonce);
        let tag = mac_over(
            &self.key,
            LISTENER_LABEL,
            &[hello, &challenge[..CHALLENGE_MAC]],
        )
        .finalize()
        .into_bytes();
        challenge[CHALLENGE_MAC..].copy_from_slice(&tag);
        let challenge = challenge.to_vec();
        let awaiting = ListenerAwaitingProof {
            dialer_node_id,
            key: self.key,
            transcript,
        };
        Ok((awaiting, challenge))
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("cluster_id", &self.cluster_id)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// The listening side, after sending Challenge and before receiving Proof.
pub struct ListenerAwaitingProof {
    /// Claimed in Hello; trusted only once the Proof verifies.
    dialer_node_id: u64,
    key: HmacSha256,
    /// Hello ‖ Challenge, exactly as received and sent.
    transcript: [u8; HELLO_BYTES + CHALLENGE_BYTES],
}

impl ListenerAwaitingProof {
    /// Verify the dialer's Proof; on success returns the authenticated dialer.
    pub fn on_proof(self, payload: &[u8]) -> Result<PeerInfo, HandshakeError> {
        if payload.len() != PROOF_BYTES {
            return Err(HandshakeError::Malformed("proof must be 32 bytes"));
        }
        mac_over(&self.key, DIALER_LABEL, &[&self.transcript])
            .verify_slice(payload)
            .map_err(|_| HandshakeError::BadMac)?;
        Ok(PeerInfo {
            node_id: self.dialer_node_id,
        })
    }
}

impl fmt::Debug for ListenerAwaitingProof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerAwaitingProof")
            .field("dialer_node_id", &self.dialer_node_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // ----- frames -------------------------------------------------------------

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut wire = Vec::new();
        for payload in payloads {
            encode_frame(payload, &mut wire);
        }
        wire
    }

    /// Feed `pieces` one after another, draining after each; returns the payloads and
    /// the error that stopped decoding, if any.
    fn decode_pieces(max: usize, pieces: &[&[u8]]) -> (Vec<Vec<u8>>, Option<FrameError>) {
        let mut decoder = FrameDecoder::new(max);
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

    #[test]
    fn frame_layout_is_length_crc_payload() {
        let wire = framed(&[b"abc"]);
        assert_eq!(&wire[0..4], &3u32.to_le_bytes());
        assert_eq!(&wire[4..8], &crc32fast::hash(b"abc").to_le_bytes());
        assert_eq!(&wire[8..], b"abc");
    }

    #[test]
    fn frame_round_trip() {
        let big = vec![0xa5; 100_000];
        let payloads: [&[u8]; 4] = [b"", b"x", b"hello, peer", &big];
        let wire = framed(&payloads);
        let (frames, error) = decode_pieces(DEFAULT_MAX_FRAME_BYTES, &[&wire]);
        assert_eq!(error, None);
        assert_eq!(frames, payloads.map(|p| p.to_vec()));
    }

    #[test]
    fn frame_split_at_every_byte_position() {
        let payloads: [&[u8]; 3] = [b"first", b"", b"third frame"];
        let wire = framed(&payloads);
        for split in 0..=wire.len() {
            let (head, tail) = wire.split_at(split);
            let (frames, error) = decode_pieces(64, &[head, tail]);
            assert_eq!(error, None, "split at {split}");
            assert_eq!(frames, payloads.map(|p| p.to_vec()), "split at {split}");
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        let (frames, error) = decode_pieces(64, &bytes);
        assert_eq!(error, None);
        assert_eq!(frames, payloads.map(|p| p.to_vec()));
    }

    #[test]
    fn partial_frame_waits_for_more_bytes() {
        let wire = framed(&[b"payload"]);
        let mut decoder = FrameDecoder::new(64);
        decoder.push(&wire[..wire.len() - 1]);
        assert_eq!(decoder.next_frame(), Ok(None));
        assert_eq!(decoder.buffered_bytes(), wire.len() - 1);
        decoder.push(&wire[wire.len() - 1..]);
        assert_eq!(decoder.next_frame(), Ok(Some(b"payload".to_vec())));
        assert_eq!(decoder.buffered_bytes(), 0);
    }

    #[test]
    fn oversized_header_rejected_before_payload_arrives() {
        let max = 16;
        let wire = framed(&[&[7; 17]]);
        let mut decoder = FrameDecoder::new(max);
        decoder.push(&wire[..FRAME_HEADER_BYTES]);
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::Oversized { len: 17, max })
        );
        // Dead: the payload, when it comes, is not buffered; the error sticks.
        decoder.push(&wire[FRAME_HEADER_BYTES..]);
        assert_eq!(decoder.buffered_bytes(), 0);
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::Oversized { len: 17, max })
        );

        // A length of u32::MAX is refused too, from 8 bytes alone.
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
        decoder.push(&[0xff; FRAME_HEADER_BYTES]);
        assert!(matches!(
            decoder.next_frame(),
            Err(FrameError::Oversized { len, .. }) if len == u32::MAX as usize
        ));

        // Exactly at the limit is fine.
        let (frames, error) = decode_pieces(max, &[&framed(&[&[7; 16]])]);
        assert_eq!((frames.len(), error), (1, None));
    }

    #[test]
    fn frames_before_an_oversized_one_are_delivered() {
        let mut wire = framed(&[b"ok"]);
        wire.extend_from_slice(&framed(&[&[0; 9]])[..FRAME_HEADER_BYTES]);
        let (frames, error) = decode_pieces(8, &[&wire]);
        assert_eq!(frames, vec![b"ok".to_vec()]);
        assert_eq!(error, Some(FrameError::Oversized { len: 9, max: 8 }));
    }

    #[test]
    fn raising_the_limit_keeps_buffered_bytes() {
        let big = [3; 200];
        let wire = framed(&[b"hello", &big]);
        let mut decoder = FrameDecoder::new(HANDSHAKE_MAX_FRAME_BYTES);
        decoder.push(&wire);
        assert_eq!(decoder.next_frame(), Ok(Some(b"hello".to_vec())));
        decoder.set_max_payload(DEFAULT_MAX_FRAME_BYTES);
        assert_eq!(decoder.next_frame(), Ok(Some(big.to_vec())));
    }

    #[test]
    fn corrupted_payload_byte_is_a_checksum_error() {
        let payload = b"replicate this entry";
        let wire = framed(&[payload]);
        for at in FRAME_HEADER_BYTES..wire.len() {
            let mut bad = wire.clone();
            bad[at] ^= 0x01;
            let (frames, error) = decode_pieces(64, &[&bad]);
            assert!(frames.is_empty());
            let mut bad_payload = payload.to_vec();
            bad_payload[at - FRAME_HEADER_BYTES] ^= 0x01;
            assert_eq!(
                error,
                Some(FrameError::Checksum {
                    expected: crc32fast::hash(payload),
                    actual: crc32fast::hash(&bad_payload),
                }),
                "flipped byte {at}"
            );
        }
        // A damaged checksum field is caught the same way.
        let mut bad = wire.clone();
        bad[FRAME_CRC] ^= 0x80;
        let (_, error) = decode_pieces(64, &[&bad]);
        assert!(matches!(error, Some(FrameError::Checksum { .. })));
    }

    #[test]
    fn errors_display_their_numbers() {
        let oversized = FrameError::Oversized { len: 9, max: 8 }.to_string();
        assert!(
            oversized.contains('9') && oversized.contains('8'),
            "{oversized}"
        );
        let mismatch = HandshakeError::ClusterMismatch {
            ours: 11,
            theirs: 12,
        }
        .to_string();
        assert!(
            mismatch.contains("11") && mismatch.contains("12"),
            "{mismatch}"
        );
    }

    // ----- handshake ----------------------------------------------------------

    const CLUSTER: u64 = 0xc1_u64 << 32;
    const SECRET: &[u8] = b"the cluster secret, shared by all";

    fn cfg(node_id: u64, secret: &[u8]) -> HandshakeConfig {
        HandshakeConfig {
            cluster_id: CLUSTER,
            node_id,
            secret: secret.to_vec(),
        }
    }

    struct Transcript {
        hello: Vec<u8>,
        challenge: Vec<u8>,
        proof: Vec<u8>,
    }

    /// Node 1 dials node 2; all bytes recorded.
    fn handshake(dialer_secret: &[u8], listener_secret: &[u8]) -> Transcript {
        let (dialer, hello) = Dialer::new(&cfg(1, dialer_secret), 2, [0xd1; NONCE_BYTES]);
        let (listener, challenge) = Listener::new(&cfg(2, listener_secret), [0x15; NONCE_BYTES])
            .on_hello(&hello)
            .unwrap();
        let (proof, peer) = dialer.on_challenge(&challenge).unwrap();
        assert_eq!(peer.node_id, 2);
        assert_eq!(listener.on_proof(&proof).unwrap().node_id, 1);
        Transcript {
            hello,
            challenge,
            proof,
        }
    }

    /// A MAC computed independently of the module, straight from the documented layout.
    fn reference_mac(secret: &[u8], label: &str, parts: &[&[u8]]) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(secret).unwrap();
        mac.update(label.as_bytes());
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().to_vec()
    }

    #[test]
    fn handshake_succeeds_and_both_sides_learn_the_other_id() {
        let t = handshake(SECRET, SECRET);
        assert_eq!(t.hello.len(), HELLO_BYTES);
        assert_eq!(t.challenge.len(), CHALLENGE_BYTES);
        assert_eq!(t.proof.len(), PROOF_BYTES);
    }

    #[test]
    fn messages_follow_the_documented_layout() {
        let t = handshake(SECRET, SECRET);
        let mut hello = b"RYUP".to_vec();
        hello.extend_from_slice(&1u16.to_le_bytes());
        hello.extend_from_slice(&CLUSTER.to_le_bytes());
        hello.extend_from_slice(&1u64.to_le_bytes());
        hello.extend_from_slice(&2u64.to_le_bytes());
        hello.extend_from_slice(&[0xd1; 32]);
        assert_eq!(t.hello, hello);

        let mut challenge = b"RYUP".to_vec();
        challenge.extend_from_slice(&1u16.to_le_bytes());
        challenge.extend_from_slice(&CLUSTER.to_le_bytes());
        challenge.extend_from_slice(&2u64.to_le_bytes());
        challenge.extend_from_slice(&[0x15; 32]);
        let listener_mac = reference_mac(SECRET, "ryu-peer-v1 listener", &[&hello, &challenge]);
        challenge.extend_from_slice(&listener_mac);
        assert_eq!(t.challenge, challenge);

        let proof = reference_mac(SECRET, "ryu-peer-v1 dialer", &[&hello, &challenge]);
        assert_eq!(t.proof, proof);
    }

    #[test]
    fn secret_never_appears_in_messages_or_debug_output() {
        let t = handshake(SECRET, SECRET);
        for message in [&t.hello, &t.challenge, &t.proof] {
            assert!(!message.windows(SECRET.len()).any(|w| w == SECRET));
        }
        let printed = format!("{:?}", cfg(1, SECRET));
        assert!(!printed.contains("secret, shared"), "{printed}");
        let (dialer, hello) = Dialer::new(&cfg(1, SECRET), 2, [0; NONCE_BYTES]);
        let listener = Listener::new(&cfg(2, SECRET), [0; NONCE_BYTES]);
        let printed = format!("{dialer:?} {listener:?}");
        assert!(!printed.contains("secret, shared"), "{printed}");
        let (awaiting, _) = listener.on_hello(&hello).unwrap();
        let printed = format!("{awaiting:?}");
        assert!(!printed.contains("secret, shared"), "{printed}");
    }

    #[test]
    fn dialer_detects_a_listener_with_another_secret() {
        let (dialer, hello) = Dialer::new(&cfg(1, SECRET), 2, [0xd1; NONCE_BYTES]);
        let (_, challenge) = Listener::new(&cfg(2, b"another secret"), [0x15; NONCE_BYTES])
            .on_hello(&hello)
            .unwrap();
        assert_eq!(dialer.on_challenge(&challenge), Err(HandshakeError::BadMac));
    }

    #[test]
    fn listener_detects_a_dialer_proof_made_with_another_secret() {
        let (_, hello) = Dialer::new(&cfg(1, SECRET), 2, [0xd1; NONCE_BYTES]);
        let (listener, challenge) = Listener::new(&cfg(2, SECRET), [0x15; NONCE_BYTES])
            .on_hello(&hello)
            .unwrap();
        // A dialer with the wrong secret that skips checking the Challenge: its Proof
        // is well formed but keyed wrongly.
        let proof = reference_mac(
            b"another secret",
            "ryu-peer-v1 dialer",
            &[&hello, &challenge],
        );
        assert_eq!(listener.on_proof(&proof), Err(HandshakeError::BadMac));
    }

    #[test]
    fn listener_rejects_its_own_mac_reflected_as_proof() {
        let t = handshake(SECRET, SECRET);
        let (listener, challenge) = Listener::new(&cfg(2, SECRET), [0x15; NONCE_BYTES])
            .on_hello(&t.hello)
            .unwrap();
        assert_eq!(
            listener.on_proof(&challenge[CHALLENGE_MAC..]),
            Err(HandshakeError::BadMac)
        );
    }

    #[test]
    fn cluster_mismatch_is_reported_on_both_sides() {
        let (_, hello) = Dialer::new(&cfg(1, SECRET), 2, [0xd1; NONCE_BYTES]);
        let other = HandshakeConfig {
            cluster_id: CLUSTER + 1,
            ..cfg(2, SECRET)
        };
        assert_eq!(
            Listener::new(&other, [0x15; NONCE_BYTES])
                .on_hello(&hello)
                .unwrap_err(),
            HandshakeError::ClusterMismatch {
                ours: CLUSTER + 1,
                theirs: CLUSTER
            }
        );

        let t = handshake(SECRET, SECRET);
        let mut challenge = t.challenge;
        challenge[MSG_CLUSTER..MSG_CLUSTER + 8].copy_from_slice(&(CLUSTER + 1).to_le_bytes());
        let (dialer, _) = Dialer::new(&cfg(1, SECRET), 2, [0xd1; NONCE_BYTES]);
        assert_eq!(
            dialer.on_challenge(&challenge),
            Err(HandshakeError::ClusterMismatch {
                ours: CLUSTER,
                theirs: CLUSTER + 1
            })
        );
    }

    #[test]
    fn listener_rejects_a_hello_addressed_to_another_node() {
        let (_, hello) = Dialer::new(&cfg(1, SECRET), 3, [0xd1; NONCE_BYTES]);
        assert_eq!(
            Listener::new(&cfg(2, SECRET), [0x15; NONCE_BYTES])
                .on_hello(&hello)
                .unwrap_err(),
            HandshakeError::WrongNode {
                ours: 2,
                addressed: 3
            }
        );
    }

    #[test]
    fn listener_rejects_a_dialer_claiming_its_own_id() {
        // Only an attacker or a misconfigured peer sends this; build it by hand.
        let (_, mut hello) = Dialer::new(&cfg(1, SECRET), 2, [0xd1; NONCE_BYTES]);
        hello[HELLO_DIALER..HELLO_DIALER + 8].copy_from_slice(&2u64.to_le_bytes());
        assert_eq!(
            Listener::new(&cfg(2, SECRET), [0x15; NONCE_BYTES])
                .on_hello(&hello)
                .unwrap_err(),
            HandshakeError::PeerIsSelf { node_id: 2 }
        );
    }

    #[test]
    fn dialer_rejects_an_answer_from_another_node() {
        let t = handshake(SECRET, SECRET);
        let mut challenge = t.challenge;
        challenge[CHALLENGE_LISTENER..CHALLENGE_LISTENER + 8].copy_from_slice(&3u64.to_le_bytes());
        let (dialer, _) = Dialer::new(&cfg(1, SECRET), 2, [0xd1; NONCE_BYTES]);
        assert_eq!(
            dialer.on_challenge(&challenge),
            Err(HandshakeError::UnexpectedPeer {
                expected: 2,
                got: 3
            })
        );
    }

    #[test]
    fn recorded_proof_is_rejected_by_a_listener_with_a_fresh_nonce() {
        let recorded = handshake(SECRET, SECRET);
        // The attacker replays the recorded Hello and Proof to a new listener.
        let (listener, challenge) = Listener::new(&cfg(2, SECRET), [0x16; NONCE_BYTES])
            .on_hello(&recorded.hello)
            .unwrap();
        assert_ne!(challenge, recorded.challenge);
        assert_eq!(
            listener.on_proof(&recorded.proof),
            Err(HandshakeError::BadMac)
        );
    }

    #[test]
    fn recorded_challenge_is_rejected_by_a_dialer_with_a_fresh_nonce() {
        let recorded = handshake(SECRET, SECRET);
        let (dialer, _) = Dialer::new(&cfg(1, SECRET), 2, [0xd2; NONCE_BYTES]);
        assert_eq!(
            dialer.on_challenge(&recorded.challenge),
            Err(HandshakeError::BadMac)
        );
    }

    #[test]
    fn hello_tampered_in_flight_is_detected_by_the_dialer() {
        // Every field a man in the middle could change while the listener still accepts
        // the Hello: the dialer's id and every nonce byte.
        let tamperable = (HELLO_DIALER..HELLO_DIALER + 8).chain(HELLO_NONCE..HELLO_BYTES);
        for at in tamperable {
            let (dialer, hello) = Dialer::new(&cfg(1, SECRET), 2, [0xd1; NONCE_BYTES]);
            let mut tampered = hello.clone();
            tampered[at] ^= 0x04;
            let (_, challenge) = Listener::new(&cfg(2, SECRET), [0x15; NONCE_BYTES])
                .on_hello(&tampered)
                .unwrap();
            assert_eq!(
                dialer.on_challenge(&challenge),
                Err(HandshakeError::BadMac),
                "hello byte {at}"
            );
        }
    }

    #[test]
    fn challenge_or_proof_tampered_in_flight_is_detected() {
        let t = handshake(SECRET, SECRET);
        for at in CHALLENGE_NONCE..CHALLENGE_BYTES {
            let (dialer, _) = Dialer::new(&cfg(1, SECRET), 2, [0xd1; NONCE_BYTES]);
            let mut tampered = t.challenge.clone();
            tampered[at] ^= 0x40;
            assert_eq!(
                dialer.on_challenge(&tampered),
                Err(HandshakeError::BadMac),
                "challenge byte {at}"
            );
        }
        for at in 0..PROOF_BYTES {
            let (listener, _) = Listener::new(&cfg(2, SECRET), [0x15; NONCE_BYTES])
                .on_hello(&t.hello)
                .unwrap();
            let mut tampered = t.proof.clone();
            tampered[at] ^= 0x40;
            assert_eq!(
                listener.on_proof(&tampered),
                Err(HandshakeError::BadMac),
                "proof byte {at}"
            );
        }
    }

    #[test]
    fn bad_magic_version_and_length_are_typed_errors() {
        let t = handshake(SECRET, SECRET);
        let listener = || Listener::new(&cfg(2, SECRET), [0x15; NONCE_BYTES]);
        let dialer = || Dialer::new(&cfg(1, SECRET), 2, [0xd1; NONCE_BYTES]).0;

        let mut bad = t.hello.clone();
        bad[0] = b'X';
        assert_eq!(
            listener().on_hello(&bad).unwrap_err(),
            HandshakeError::BadMagic
        );
        let mut bad = t.challenge.clone();
        bad[3] = b'Q';
        assert_eq!(dialer().on_challenge(&bad), Err(HandshakeError::BadMagic));

        // A future version is reported as a version mismatch, whatever its length.
        let mut future = t.hello[..MSG_CLUSTER].to_vec();
        future[MSG_VERSION..MSG_VERSION + 2].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(
            listener().on_hello(&future).unwrap_err(),
            HandshakeError::UnsupportedVersion { got: 2 }
        );

        for len in 0..HELLO_BYTES {
            assert!(
                matches!(
                    listener().on_hello(&t.hello[..len]),
                    Err(HandshakeError::Malformed(_))
                ),
                "hello cut to {len}"
            );
        }
        let mut long = t.hello.clone();
        long.push(0);
        assert!(matches!(
            listener().on_hello(&long),
            Err(HandshakeError::Malformed(_))
        ));
        for len in 0..CHALLENGE_BYTES {
            assert!(
                matches!(
                    dialer().on_challenge(&t.challenge[..len]),
                    Err(HandshakeError::Malformed(_))
                ),
                "challenge cut to {len}"
            );
        }
        for len in [0, PROOF_BYTES - 1, PROOF_BYTES + 1] {
            let (awaiting, _) = listener().on_hello(&t.hello).unwrap();
            let mut proof = t.proof.clone();
            proof.resize(len, 0);
            assert!(matches!(
                awaiting.on_proof(&proof),
                Err(HandshakeError::Malformed(_))
            ));
        }
    }

    #[test]
    #[should_panic(expected = "a node dials only other nodes")]
    fn dialing_yourself_is_a_caller_bug() {
        let _ = Dialer::new(&cfg(1, SECRET), 1, [0; NONCE_BYTES]);
    }

    #[test]
    #[should_panic(expected = "empty cluster secret")]
    fn an_empty_secret_is_a_caller_bug() {
        let _ = Listener::new(&cfg(2, b""), [0; NONCE_BYTES]);
    }

    // ----- properties ---------------------------------------------------------

    proptest! {
        /// Arbitrary bytes never panic the decoder, and how they are chunked never
        /// changes the frames or the error that comes out.
        #[test]
        fn decoder_never_panics_and_ignores_chunking(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            split in any::<prop::sample::Index>(),
            max in 0usize..300,
        ) {
            let split = split.index(bytes.len() + 1);
            let whole = decode_pieces(max, &[&bytes]);
            let halves = decode_pieces(max, &[&bytes[..split], &bytes[split..]]);
            prop_assert_eq!(&whole, &halves);
            let singles: Vec<&[u8]> = bytes.chunks(1).collect();
            prop_assert_eq!(&whole, &decode_pieces(max, &singles));
        }

        /// Valid frames survive any chunking.
        #[test]
        fn frames_round_trip_under_any_chunking(
            payloads in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..100), 0..8),
            chunk_bytes in 1usize..40,
        ) {
            let slices: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            let wire = framed(&slices);
            let pieces: Vec<&[u8]> = wire.chunks(chunk_bytes).collect();
            let (frames, error) = decode_pieces(100, &pieces);
            prop_assert_eq!(error, None);
            prop_assert_eq!(frames, payloads);
        }

        /// Arbitrary bytes never panic the handshake parsers, and never pass a MAC check.
        #[test]
        fn handshake_parsers_never_panic_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..128),
        ) {
            let _ = Listener::new(&cfg(2, SECRET), [0x15; NONCE_BYTES]).on_hello(&bytes);
            let (dialer, hello) = Dialer::new(&cfg(1, SECRET), 2, [0xd1; NONCE_BYTES]);
            prop_assert!(dialer.on_challenge(&bytes).is_err());
            let (listener, _) = Listener::new(&cfg(2, SECRET), [0x15; NONCE_BYTES])
                .on_hello(&hello)
                .unwrap();
            prop_assert!(listener.on_proof(&bytes).is_err());
        }

        /// Arbitrary bytes behind a valid preamble reach the deeper checks without panic.
        #[test]
        fn handshake_parsers_never_panic_behind_a_valid_preamble(
            tail in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let mut bytes = b"RYUP".to_vec();
            bytes.extend_from_slice(&HANDSHAKE_VERSION.to_le_bytes());
            bytes.extend_from_slice(&tail);
            let _ = Listener::new(&cfg(2, SECRET), [0x15; NONCE_BYTES]).on_hello(&bytes);
            let (dialer, _) = Dialer::new(&cfg(1, SECRET), 2, [0xd1; NONCE_BYTES]);
            prop_assert!(dialer.on_challenge(&bytes).is_err());
        }
    }
}
