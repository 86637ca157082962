//! What travels inside an authenticated peer frame (see [`crate::frame`]).
//!
//! # Format (version 1)
//!
//! ```text
//! byte 0      WIRE_VERSION (1)
//! bytes 1..   postcard encoding of `PeerMessage`
//! ```
//!
//! postcard is a stable, documented, non-self-describing format: enums are a varint
//! variant index followed by the fields in declaration order, integers are LEB128
//! varints (zigzag for signed), byte strings and vectors a varint length and their
//! elements. The Rust definitions of [`PeerMessage`], `ryu_node::Envelope` and
//! `ryu_raft::Message` are therefore the schema: reordering a variant or a field is a
//! wire change and must bump `WIRE_VERSION`. A receiver refuses any other version
//! (and the connection is closed with the reason logged), so mixed-version clusters
//! fail loudly instead of misreading each other.
//!
//! Nothing here reaches disk: the on-disk formats (log, engine, backups) are
//! explicit byte layouts of their own.

use ryu_node::{Envelope, Request, Response};
use serde::{Deserialize, Serialize};

/// The version byte every peer payload starts with.
pub const WIRE_VERSION: u8 = 1;

/// One message between two `ryu` processes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// Node to node: Raft traffic and cluster-backup reports, handed to the node
    /// state machine as is.
    Node(Envelope),
    /// A client write received by a follower, forwarded to the process it believes
    /// leads. `id` is chosen by the sender and comes back in the reply.
    Forward { id: u64, request: Request },
    /// The leader's answer to a forwarded request.
    ForwardReply { id: u64, response: Response },
}

/// Why a peer payload was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    Empty,
    Version(u8),
    Decode(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Empty => write!(f, "empty peer payload"),
            WireError::Version(v) => {
                write!(f, "peer wire version {v}, this node speaks {WIRE_VERSION}")
            }
            WireError::Decode(e) => write!(f, "undecodable peer payload: {e}"),
        }
    }
}

impl std::error::Error for WireError {}

/// `WIRE_VERSION` then the postcard body.
pub fn encode(msg: &PeerMessage) -> Vec<u8> {
    let mut out = vec![WIRE_VERSION];
    // Serializing into a Vec cannot fail for these types (no maps with non-string
    // keys, no unsupported serde features).
    let body = postcard::to_stdvec(msg).expect("peer messages always serialize");
    out.extend_from_slice(&body);
    out
}

/// The inverse of [`encode`]. Trailing bytes after a complete message are refused:
/// a frame carries exactly one message.
pub fn decode(payload: &[u8]) -> Result<PeerMessage, WireError> {
    let (&version, body) = payload.split_first().ok_or(WireError::Empty)?;
    if version != WIRE_VERSION {
        return Err(WireError::Version(version));
    }
    let (msg, rest) =
        postcard::take_from_bytes(body).map_err(|e| WireError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Decode(format!(
            "{} trailing bytes after the message",
            rest.len()
        )));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ryu_node::{Consistency, Payload};
    use ryu_raft::{Entry, EntryKind, Message, MessageBody, NodeId};

    fn append() -> PeerMessage {
        PeerMessage::Node(Envelope {
            cluster: 0xfeed,
            from: 1,
            to: 2,
            payload: Payload::Raft(Message {
                from: NodeId(1),
                to: NodeId(2),
                term: 7,
                body: MessageBody::Append {
                    prev_index: 41,
                    prev_term: 6,
                    entries: vec![Entry {
                        term: 7,
                        index: 42,
                        kind: EntryKind::Normal,
                        data: b"payload".to_vec(),
                    }],
                    commit: 40,
                },
            }),
        })
    }

    #[test]
    fn messages_round_trip() {
        let msgs = [
            append(),
            PeerMessage::Forward {
                id: 9,
                request: Request::Get {
                    key: b"k".to_vec(),
                    consistency: Consistency::Linearizable,
                },
            },
            PeerMessage::ForwardReply {
                id: 9,
                response: Response::Committed { index: 12 },
            },
        ];
        for m in msgs {
            assert_eq!(decode(&encode(&m)).unwrap(), m);
        }
    }

    #[test]
    fn wrong_version_and_trailing_bytes_are_refused() {
        let mut bytes = encode(&append());
        bytes[0] = 2;
        assert_eq!(decode(&bytes), Err(WireError::Version(2)));
        let mut bytes = encode(&append());
        bytes.push(0);
        assert!(matches!(decode(&bytes), Err(WireError::Decode(_))));
        assert_eq!(decode(&[]), Err(WireError::Empty));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = encode(&append());
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "prefix of {n} bytes decoded");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
            let mut versioned = vec![WIRE_VERSION];
            versioned.extend_from_slice(&bytes);
            let _ = decode(&versioned);
        }
    }
}
