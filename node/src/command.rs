//! What a Raft entry of a Ryu cluster carries: the replicated commands and their
//! explicit, versioned byte format.
//!
//! Every `Normal` entry's payload is one [`Command`]. The format is ours (not serde)
//! because it is durable: it lives in every node's Raft log and must decode the same
//! way in every future version.
//!
//! ```text
//! byte 0      format version, currently 1
//! byte 1      command tag: 1 = Txn, 2 = BackupBarrier, 3 = Incr
//!
//! Txn (tag 1)
//!   u64 LE    origin: the node that proposed it (answers its client on apply)
//!   u64 LE    request id, unique per origin incarnation
//!   u32 LE    number of checks, then each check:
//!               bytes  key
//!               opt    expected value (absent = the key must not exist)
//!   u32 LE    number of writes, then each write:
//!               bytes  key
//!               opt    value (absent = delete)
//!
//! BackupBarrier (tag 2)
//!   u64 LE    origin node
//!   bytes     backup id (UTF-8)
//!   u8        0 = every member must report, 1 = a quorum of voters suffices
//!
//! Incr (tag 3)
//!   u64 LE    origin node
//!   u64 LE    request id
//!   bytes     key
//!   i64 LE    delta, added to the key's integer value when the entry is applied
//!
//! bytes = u32 LE length, then the bytes
//! opt   = u8 0 (absent) | u8 1 then bytes
//! ```
//!
//! Decoding never panics: anything malformed is a [`DecodeError`] naming the offset.

use std::fmt;

/// The only format version this build writes and reads.
pub const COMMAND_FORMAT_VERSION: u8 = 1;

const TAG_TXN: u8 = 1;
const TAG_BARRIER: u8 = 2;
const TAG_INCR: u8 = 3;

/// A key and its value, or `None` for "absent" / "delete".
pub type KeyValue = (Vec<u8>, Option<Vec<u8>>);

/// A replicated command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Apply `writes` atomically if every check holds against the state just before
    /// this entry. Plain writes have no checks; compare-and-set has one; an optimistic
    /// transaction checks every value it read.
    Txn {
        origin: u64,
        request: u64,
        checks: Vec<KeyValue>,
        writes: Vec<KeyValue>,
    },
    /// Add `delta` to the integer at `key` (absent = 0) against the state just
    /// before this entry: an increment that never conflicts, however many clients
    /// increment one key. A value that is not an integer ([`parse_integer`]) or a sum
    /// that overflows writes nothing.
    Incr {
        origin: u64,
        request: u64,
        key: Vec<u8>,
        delta: i64,
    },
    /// Every node backs up its state at exactly this entry's index.
    BackupBarrier {
        origin: u64,
        backup_id: String,
        quorum_only: bool,
    },
}

/// A payload that does not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub offset: usize,
    pub what: &'static str,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "command does not decode at byte {}: {}",
            self.offset, self.what
        )
    }
}

impl std::error::Error for DecodeError {}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_opt(out: &mut Vec<u8>, b: &Option<Vec<u8>>) {
    match b {
        None => out.push(0),
        Some(b) => {
            out.push(1);
            put_bytes(out, b);
        }
    }
}

fn put_pairs(out: &mut Vec<u8>, pairs: &[KeyValue]) {
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        put_bytes(out, k);
        put_opt(out, v);
    }
}

/// The integer a value holds, by Redis's rules for INCR: optional `-`, decimal digits
/// without leading zeros, no `-0`, within `i64`. Anything else is `None`.
pub fn parse_integer(b: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(b).ok()?;
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty()
        || !digits.bytes().all(|c| c.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
        || s == "-0"
    {
        return None;
    }
    s.parse().ok()
}

/// What an [`Command::Incr`] of `delta` makes of `current`: the new integer, or why
/// nothing is written. Every replica computes the same.
pub fn increment(current: Option<&[u8]>, delta: i64) -> Result<i64, &'static str> {
    let n = match current {
        None => 0,
        Some(v) => parse_integer(v).ok_or("value is not an integer or out of range")?,
    };
    n.checked_add(delta)
        .ok_or("increment or decrement would overflow")
}

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![COMMAND_FORMAT_VERSION];
        match self {
            Command::Txn {
                origin,
                request,
                checks,
                writes,
            } => {
                out.push(TAG_TXN);
                out.extend_from_slice(&origin.to_le_bytes());
                out.extend_from_slice(&request.to_le_bytes());
                put_pairs(&mut out, checks);
                put_pairs(&mut out, writes);
            }
            Command::Incr {
                origin,
                request,
                key,
                delta,
            } => {
                out.push(TAG_INCR);
                out.extend_from_slice(&origin.to_le_bytes());
                out.extend_from_slice(&request.to_le_bytes());
                put_bytes(&mut out, key);
                out.extend_from_slice(&delta.to_le_bytes());
            }
            Command::BackupBarrier {
                origin,
                backup_id,
                quorum_only,
            } => {
                out.push(TAG_BARRIER);
                out.extend_from_slice(&origin.to_le_bytes());
                put_bytes(&mut out, backup_id.as_bytes());
                out.push(u8::from(*quorum_only));
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.u8()?;
        if version != COMMAND_FORMAT_VERSION {
            return Err(r.error("unsupported command format version"));
        }
        let cmd = match r.u8()? {
            TAG_TXN => Command::Txn {
                origin: r.u64()?,
                request: r.u64()?,
                checks: r.pairs()?,
                writes: r.pairs()?,
            },
            TAG_INCR => Command::Incr {
                origin: r.u64()?,
                request: r.u64()?,
                key: r.bytes()?,
                delta: r.u64()? as i64,
            },
            TAG_BARRIER => {
                let origin = r.u64()?;
                let id = r.bytes()?;
                let backup_id =
                    String::from_utf8(id).map_err(|_| r.error("backup id is not UTF-8"))?;
                let quorum_only = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(r.error("bad quorum flag")),
                };
                Command::BackupBarrier {
                    origin,
                    backup_id,
                    quorum_only,
                }
            }
            _ => return Err(r.error("unknown command tag")),
        };
        if r.at != bytes.len() {
            return Err(r.error("trailing bytes"));
        }
        Ok(cmd)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn error(&self, what: &'static str) -> DecodeError {
        DecodeError {
            offset: self.at,
            what,
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.bytes.len() - self.at < n {
            return Err(self.error("truncated"));
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }

    fn opt(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.bytes()?)),
            _ => Err(self.error("bad option flag")),
        }
    }

    fn pairs(&mut self) -> Result<Vec<KeyValue>, DecodeError> {
        let n = self.u32()? as usize;
        // Each pair takes at least 5 bytes: a count beyond that is garbage, and must
        // not become a huge allocation.
        if n > (self.bytes.len() - self.at) / 5 {
            return Err(self.error("pair count exceeds payload"));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push((self.bytes()?, self.opt()?));
        }
        Ok(out)
    }
}

/// The node's own record in the engine, rewritten by every applied entry (under
/// [`APPLIED_KEY`]), so the engine's durable state always says which Raft entry it
/// reflects, atomically with that entry's writes.
///
/// ```text
/// byte 0    format version, currently 1
/// u64 LE    applied index
/// u64 LE    term of that entry
/// set x4    voters, learners, voters_outgoing, learners_next
///           (each: u32 LE count, then u64 LE node ids ascending)
/// u8        auto_leave (0 or 1)
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AppliedState {
    pub index: u64,
    pub term: u64,
    pub conf: ryu_raft::ConfState,
}

/// Keys at or above this byte belong to the node, never to clients.
pub const SYSTEM_PREFIX: u8 = 0xff;
/// Where [`AppliedState`] lives.
pub const APPLIED_KEY: &[u8] = b"\xffryu/applied";
/// Prefix of the barrier records (one per cluster backup, keyed by its id).
pub const BARRIER_PREFIX: &[u8] = b"\xffryu/barrier/";

impl AppliedState {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![COMMAND_FORMAT_VERSION];
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&self.term.to_le_bytes());
        let c = &self.conf;
        for set in [&c.voters, &c.learners, &c.voters_outgoing, &c.learners_next] {
            out.extend_from_slice(&(set.len() as u32).to_le_bytes());
            for id in set {
                out.extend_from_slice(&id.0.to_le_bytes());
            }
        }
        out.push(u8::from(c.auto_leave));
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<AppliedState, DecodeError> {
        let mut r = Reader { bytes, at: 0 };
        if r.u8()? != COMMAND_FORMAT_VERSION {
            return Err(r.error("unsupported applied-state version"));
        }
        let index = r.u64()?;
        let term = r.u64()?;
        let mut sets: Vec<std::collections::BTreeSet<ryu_raft::NodeId>> = Vec::new();
        for _ in 0..4 {
            let n = r.u32()? as usize;
            if n > (bytes.len() - r.at) / 8 {
                return Err(r.error("id count exceeds payload"));
            }
            let mut set = std::collections::BTreeSet::new();
            for _ in 0..n {
                set.insert(ryu_raft::NodeId(r.u64()?));
            }
            sets.push(set);
        }
        let auto_leave = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(r.error("bad auto_leave flag")),
        };
        if r.at != bytes.len() {
            return Err(r.error("trailing bytes"));
        }
        let mut sets = sets.into_iter();
        let mut next = || sets.next().expect("four sets");
        Ok(AppliedState {
            index,
            term,
            conf: ryu_raft::ConfState {
                voters: next(),
                learners: next(),
                voters_outgoing: next(),
                learners_next: next(),
                auto_leave,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_truncation_is_an_error() {
        let cmds = [
            Command::Txn {
                origin: 3,
                request: 77,
                checks: vec![(b"a".to_vec(), None), (b"b".to_vec(), Some(b"1".to_vec()))],
                writes: vec![(b"a".to_vec(), Some(b"2".to_vec())), (b"c".to_vec(), None)],
            },
            Command::BackupBarrier {
                origin: 1,
                backup_id: "20261125-abc".into(),
                quorum_only: true,
            },
            Command::Incr {
                origin: 2,
                request: 5,
                key: b"counter".to_vec(),
                delta: -42,
            },
        ];
        for cmd in cmds {
            let bytes = cmd.encode();
            assert_eq!(Command::decode(&bytes).unwrap(), cmd);
            for n in 0..bytes.len() {
                assert!(Command::decode(&bytes[..n]).is_err(), "prefix {n} decoded");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(Command::decode(&longer).is_err());
        }
    }

    #[test]
    fn increments_follow_redis_rules() {
        assert_eq!(increment(None, 5), Ok(5));
        assert_eq!(increment(Some(b"-12"), 2), Ok(-10));
        assert_eq!(
            increment(Some(b"9223372036854775807"), -1),
            Ok(i64::MAX - 1)
        );
        assert!(increment(Some(b"9223372036854775807"), 1).is_err());
        for bad in [&b""[..], b"abc", b"01", b"-0", b" 1", b"1 ", b"+1", b"1.5"] {
            assert!(increment(Some(bad), 1).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn applied_state_round_trip() {
        let mut conf = ryu_raft::ConfState::with_voters([1, 2, 3]);
        conf.learners.insert(ryu_raft::NodeId(4));
        let st = AppliedState {
            index: 9,
            term: 2,
            conf,
        };
        let bytes = st.encode();
        assert_eq!(AppliedState::decode(&bytes).unwrap(), st);
        for n in 0..bytes.len() {
            assert!(AppliedState::decode(&bytes[..n]).is_err());
        }
    }

    #[test]
    fn absurd_counts_do_not_allocate() {
        let mut bytes = vec![COMMAND_FORMAT_VERSION, TAG_TXN];
        bytes.extend_from_slice(&[0; 16]);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        let err = Command::decode(&bytes).unwrap_err();
        assert_eq!(err.what, "pair count exceeds payload");
    }
}
