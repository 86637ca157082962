//! Membership changes: computing the next configuration from the current one, and
//! the byte encoding of a `ConfChange` carried in a log entry.
//!
//! Two ways to change membership are supported (thesis chapter 4):
//! - one voter at a time ("simple"), whose old and new majorities always overlap;
//! - joint consensus: enter a configuration `C_old,new` in which decisions need a
//!   majority of both, then leave it for `C_new` (automatically if `auto_leave`).

use crate::error::{Error, StorageError};
use crate::tracker::TrackerConfig;
use crate::types::{ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition, NodeId};

/// Computes the configuration that results from applying `cc` to `current`.
pub fn next_config(current: &TrackerConfig, cc: &ConfChange) -> Result<TrackerConfig, Error> {
    let next = if cc.is_leave_joint() {
        leave_joint(current)?
    } else if cc.enters_joint() {
        let auto_leave = cc.transition != ConfChangeTransition::JointExplicit;
        enter_joint(current, auto_leave, &cc.changes)?
    } else {
        simple(current, &cc.changes)?
    };
    if next.voters.incoming.is_empty() {
        return Err(Error::ConfChange("removed all voters".into()));
    }
    next.check();
    Ok(next)
}

fn simple(current: &TrackerConfig, changes: &[ConfChangeSingle]) -> Result<TrackerConfig, Error> {
    if current.voters.is_joint() {
        return Err(Error::ConfChange("simple change while joint".into()));
    }
    let mut next = current.clone();
    apply_all(&mut next, changes);
    let before = &current.voters.incoming;
    let after = &next.voters.incoming;
    // One server at a time keeps every old majority overlapping every new one.
    if before.symmetric_difference(after).count() > 1 {
        return Err(Error::ConfChange(
            "more than one voter changed without joint".into(),
        ));
    }
    Ok(next)
}

fn enter_joint(
    current: &TrackerConfig,
    auto_leave: bool,
    changes: &[ConfChangeSingle],
) -> Result<TrackerConfig, Error> {
    if current.voters.is_joint() {
        return Err(Error::ConfChange("already joint".into()));
    }
    if current.voters.incoming.is_empty() {
        return Err(Error::ConfChange(
            "cannot make an empty configuration joint".into(),
        ));
    }
    let mut next = current.clone();
    next.voters.outgoing = current.voters.incoming.clone();
    apply_all(&mut next, changes);
    next.auto_leave = auto_leave;
    Ok(next)
}

fn leave_joint(current: &TrackerConfig) -> Result<TrackerConfig, Error> {
    if !current.voters.is_joint() {
        return Err(Error::ConfChange("not joint".into()));
    }
    let mut next = current.clone();
    next.learners.extend(next.learners_next.iter().copied());
    next.learners_next.clear();
    next.voters.outgoing.clear();
    next.auto_leave = false;
    Ok(next)
}

fn apply_all(cfg: &mut TrackerConfig, changes: &[ConfChangeSingle]) {
    for c in changes {
        apply_one(cfg, c.kind, c.node);
    }
}

fn apply_one(cfg: &mut TrackerConfig, kind: ConfChangeKind, id: NodeId) {
    match kind {
        ConfChangeKind::AddVoter => {
            cfg.learners.remove(&id);
            cfg.learners_next.remove(&id);
            cfg.voters.incoming.insert(id);
        }
        ConfChangeKind::AddLearner => {
            cfg.voters.incoming.remove(&id);
            // A voter of the outgoing half stays a voter until the joint
            // configuration is left; it becomes a learner then.
            if cfg.voters.outgoing.contains(&id) {
                cfg.learners_next.insert(id);
            } else {
                cfg.learners.insert(id);
            }
        }
        ConfChangeKind::Remove => {
            cfg.voters.incoming.remove(&id);
            cfg.learners.remove(&id);
            cfg.learners_next.remove(&id);
        }
    }
}

// Encoding: [transition u8][count u32 LE] then per change [kind u8][node u64 LE].
const HEADER_BYTES: usize = 1 + 4;
const CHANGE_BYTES: usize = 1 + 8;

impl ConfChange {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + CHANGE_BYTES * self.changes.len());
        out.push(match self.transition {
            ConfChangeTransition::Auto => 0,
            ConfChangeTransition::JointImplicit => 1,
            ConfChangeTransition::JointExplicit => 2,
        });
        out.extend_from_slice(&(self.changes.len() as u32).to_le_bytes());
        for c in &self.changes {
            out.push(match c.kind {
                ConfChangeKind::AddVoter => 0,
                ConfChangeKind::AddLearner => 1,
                ConfChangeKind::Remove => 2,
            });
            out.extend_from_slice(&c.node.0.to_le_bytes());
        }
        assert_eq!(out.len(), HEADER_BYTES + CHANGE_BYTES * self.changes.len());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<ConfChange, StorageError> {
        let corrupted = |what: &str| StorageError::Corrupted {
            place: format!("conf change {what}"),
        };
        if bytes.len() < HEADER_BYTES {
            return Err(corrupted("header"));
        }
        let transition = match bytes[0] {
            0 => ConfChangeTransition::Auto,
            1 => ConfChangeTransition::JointImplicit,
            2 => ConfChangeTransition::JointExplicit,
            _ => return Err(corrupted("transition")),
        };
        let count = u32::from_le_bytes(bytes[1..5].try_into().expect("4 bytes")) as usize;
        if bytes.len() != HEADER_BYTES + count * CHANGE_BYTES {
            return Err(corrupted("length"));
        }
        let mut changes = Vec::with_capacity(count);
        for chunk in bytes[HEADER_BYTES..].chunks_exact(CHANGE_BYTES) {
            let kind = match chunk[0] {
                0 => ConfChangeKind::AddVoter,
                1 => ConfChangeKind::AddLearner,
                2 => ConfChangeKind::Remove,
                _ => return Err(corrupted("kind")),
            };
            let node = NodeId(u64::from_le_bytes(chunk[1..9].try_into().expect("8 bytes")));
            changes.push(ConfChangeSingle { kind, node });
        }
        Ok(ConfChange {
            transition,
            changes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ConfState;

    fn cfg(voters: &[u64]) -> TrackerConfig {
        TrackerConfig::from_conf_state(&ConfState::with_voters(voters.iter().copied()))
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let cc = ConfChange {
            transition: ConfChangeTransition::JointExplicit,
            changes: vec![
                ConfChangeSingle {
                    kind: ConfChangeKind::AddVoter,
                    node: NodeId(4),
                },
                ConfChangeSingle {
                    kind: ConfChangeKind::Remove,
                    node: NodeId(1),
                },
            ],
        };
        assert_eq!(ConfChange::decode(&cc.encode()).unwrap(), cc);
        assert!(ConfChange::decode(&[9, 0, 0, 0, 0]).is_err());
        assert!(ConfChange::decode(&cc.encode()[..7]).is_err());
    }

    #[test]
    fn simple_change_allows_one_voter_only() {
        let cur = cfg(&[1, 2, 3]);
        let one = ConfChange::single(ConfChangeKind::AddVoter, 4);
        assert_eq!(next_config(&cur, &one).unwrap().voters.incoming.len(), 4);
        let two = ConfChange {
            transition: ConfChangeTransition::Auto,
            changes: vec![
                ConfChangeSingle {
                    kind: ConfChangeKind::AddVoter,
                    node: NodeId(4),
                },
                ConfChangeSingle {
                    kind: ConfChangeKind::AddVoter,
                    node: NodeId(5),
                },
            ],
        };
        // Auto with two changes goes through joint consensus instead.
        let joint = next_config(&cur, &two).unwrap();
        assert!(joint.voters.is_joint() && joint.auto_leave);
        let left = next_config(&joint, &ConfChange::leave_joint()).unwrap();
        assert_eq!(left.voters.incoming.len(), 5);
        assert!(!left.voters.is_joint());
    }

    #[test]
    fn demoting_an_outgoing_voter_waits_for_leave() {
        let cur = cfg(&[1, 2, 3]);
        let cc = ConfChange {
            transition: ConfChangeTransition::JointExplicit,
            changes: vec![ConfChangeSingle {
                kind: ConfChangeKind::AddLearner,
                node: NodeId(3),
            }],
        };
        let joint = next_config(&cur, &cc).unwrap();
        assert!(joint.learners_next.contains(&NodeId(3)));
        assert!(joint.voters.outgoing.contains(&NodeId(3)));
        let left = next_config(&joint, &ConfChange::leave_joint()).unwrap();
        assert!(left.learners.contains(&NodeId(3)));
        assert!(!left.voters.contains(NodeId(3)));
    }

    #[test]
    fn cannot_remove_every_voter() {
        let cur = cfg(&[1]);
        assert!(next_config(&cur, &ConfChange::single(ConfChangeKind::Remove, 1)).is_err());
        assert!(next_config(&cur, &ConfChange::leave_joint()).is_err());
    }
}
