//! `ryu serve`'s configuration: flags, or a TOML file, or both (flags win).
//!
//! ```toml
//! id = 2
//! data_dir = "n2"
//! backup_dir = "backups"          # shared by every node for cluster backups
//! client_addr = "127.0.0.1:7389"  # RESP
//! peer_addr = "127.0.0.1:7390"    # Raft and forwarding between nodes
//! http_addr = "127.0.0.1:7391"    # /health and /metrics
//! initial_cluster = "1=127.0.0.1:7380,2=127.0.0.1:7390,3=127.0.0.1:7400"
//! peers = "4=127.0.0.1:7410"      # nodes added later, to dial
//! secret = "a long random string" # the same on every node
//! password = "for AUTH"           # optional
//! backup_rate_mib = 64            # cap each backup's read rate (default 24; 0: unlimited)
//! backup_write_behind_kib = 32    # write-behind window (default 8192; 0: none)
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The default cap of a backup job's read rate, MiB/s (see
/// [`ServeConfig::backup_rate_mib`]).
pub const DEFAULT_BACKUP_RATE_MIB: u64 = 24;

/// Everything `ryu serve` needs. Defaults give the embedded single-node setup.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// This node's Raft id (non-zero).
    pub id: u64,
    pub data_dir: PathBuf,
    /// Where backups go. Cluster backups need every node to reach the same store
    /// (one machine, or a shared filesystem).
    pub backup_dir: PathBuf,
    pub client_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The bootstrap voters and their peer addresses, `id=host:port,...`, the same
    /// on every node (as etcd's `--initial-cluster`). Empty: this node alone.
    pub initial_cluster: String,
    /// More peers to dial (nodes added after bootstrap), `id=host:port,...`. A node
    /// that is not listed anywhere is still reachable once it dials in.
    pub peers: String,
    /// The shared cluster secret that authenticates peers (never sent).
    pub secret: String,
    /// Clients must `AUTH` with this password, when set.
    pub password: Option<String>,
    /// The Raft tick, milliseconds (elections after 10 to 20 ticks).
    pub tick_ms: u64,
    /// Cap each backup job's read rate, MiB/s (0: unlimited), so backups leave
    /// disk bandwidth to commits. The default, 24 MiB/s (about 25 MB/s), is the
    /// highest rate at which `backup/README.md` measures a backup's cost to the p99 of
    /// the commits on the same disk within 10% with confidence (+3.0%, 95% +1.0% to
    /// +6.0%; at 50 MB/s +11%, at 100 MB/s +31%); unlimited backups back to back cut
    /// commits/s by half there and multiplied p99 twenty-fold (one smoke run). Raft
    /// snapshots sent to lagging followers are backups too and obey the same cap (as
    /// CockroachDB's 32 MiB/s snapshot rate limit), so a follower that needs a 10 GB
    /// snapshot takes about 12 minutes to receive it (the job's read-back of what it
    /// wrote counts against the cap too): raise the cap where the disk has room to
    /// spare.
    pub backup_rate_mib: u64,
    /// Each backup job hands its writes to the disk in windows of this many KiB
    /// (unset: 8 MiB; 0: no write-behind). With a rate limit, small windows (32 KiB)
    /// raise the commits' p99 during a backup a little more than 8 MiB windows do and
    /// their p99.9 far less (measured in `backup/README.md`, "Benchmark").
    pub backup_write_behind_kib: Option<u64>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            id: 1,
            data_dir: PathBuf::from("ryu-data"),
            backup_dir: PathBuf::from("ryu-backups"),
            client_addr: SocketAddr::from(([127, 0, 0, 1], 7379)),
            peer_addr: SocketAddr::from(([127, 0, 0, 1], 7380)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 7381)),
            initial_cluster: String::new(),
            peers: String::new(),
            secret: String::new(),
            password: None,
            tick_ms: 100,
            backup_rate_mib: DEFAULT_BACKUP_RATE_MIB,
            backup_write_behind_kib: None,
        }
    }
}

/// Parse `id=host:port,id=host:port`.
pub fn parse_members(s: &str) -> Result<BTreeMap<u64, SocketAddr>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not id=host:port"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("{id:?} is not a node id"))?;
        if id == 0 {
            return Err("node id 0 is reserved".into());
        }
        let addr: SocketAddr = addr
            .trim()
            .parse()
            .map_err(|e| format!("{addr:?} is not host:port: {e}"))?;
        if out.insert(id, addr).is_some() {
            return Err(format!("node {id} is listed twice"));
        }
    }
    Ok(out)
}

impl ServeConfig {
    /// Check the configuration as a whole; the error says what to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.id == 0 {
            return Err("id must be non-zero".into());
        }
        if self.tick_ms == 0 {
            return Err("tick_ms must be positive".into());
        }
        if self.backup_rate_mib.checked_mul(1 << 20).is_none() {
            return Err(format!(
                "backup_rate_mib {} is too large (at most {} MiB/s; 0 for no limit)",
                self.backup_rate_mib,
                u64::MAX >> 20
            ));
        }
        if let Some(kib) = self.backup_write_behind_kib
            && kib.checked_mul(1 << 10).is_none()
        {
            return Err(format!(
                "backup_write_behind_kib {kib} is too large (at most {} KiB; 0 for none)",
                u64::MAX >> 10
            ));
        }
        let initial = self.initial_members()?;
        let extra = parse_members(&self.peers).map_err(|e| format!("peers: {e}"))?;
        if let Some(addr) = initial.get(&self.id).or(extra.get(&self.id))
            && *addr != self.peer_addr
        {
            return Err(format!(
                "node {} is listed at {addr} but peer_addr is {}",
                self.id, self.peer_addr
            ));
        }
        if (initial.len() > 1 || !extra.is_empty()) && self.secret.is_empty() {
            return Err("a cluster needs a shared secret (--secret or secret = \"...\")".into());
        }
        for (a, b) in [
            (self.client_addr, self.peer_addr),
            (self.client_addr, self.http_addr),
            (self.peer_addr, self.http_addr),
        ] {
            if a == b {
                return Err(format!("{a} is used for two listeners"));
            }
        }
        Ok(())
    }

    /// The bootstrap voters; this node alone when `initial_cluster` is empty.
    pub fn initial_members(&self) -> Result<BTreeMap<u64, SocketAddr>, String> {
        let m =
            parse_members(&self.initial_cluster).map_err(|e| format!("initial_cluster: {e}"))?;
        if m.is_empty() {
            return Ok(BTreeMap::from([(self.id, self.peer_addr)]));
        }
        Ok(m)
    }

    /// Every peer this node knows an address for (itself excluded).
    pub fn dial_targets(&self) -> BTreeMap<u64, SocketAddr> {
        let mut m = self.initial_members().unwrap_or_default();
        m.extend(parse_members(&self.peers).unwrap_or_default());
        m.remove(&self.id);
        m
    }

    pub fn peer_address(&self, id: u64) -> Option<SocketAddr> {
        if id == self.id {
            return Some(self.peer_addr);
        }
        self.dial_targets().get(&id).copied()
    }

    /// The id a new cluster gets: a hash of the bootstrap membership, so every
    /// bootstrap member derives the same one without coordination (as etcd derives
    /// it from `--initial-cluster` and its token). A directory keeps the id it was
    /// created with; a restored cluster gets a fresh one.
    pub fn bootstrap_cluster_id(&self) -> u64 {
        let members = self.initial_members().unwrap_or_default();
        let canonical: String = members
            .iter()
            .map(|(id, addr)| format!("{id}={addr},"))
            .collect();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in canonical.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_and_errors_are_clear() {
        let m = parse_members("1=127.0.0.1:1, 2=127.0.0.1:2").unwrap();
        assert_eq!(m.len(), 2);
        assert!(parse_members("1=x").unwrap_err().contains("host:port"));
        assert!(
            parse_members("0=127.0.0.1:1")
                .unwrap_err()
                .contains("reserved")
        );
        assert!(
            parse_members("1=127.0.0.1:1,1=127.0.0.1:2")
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            parse_members("127.0.0.1:1")
                .unwrap_err()
                .contains("id=host:port")
        );
    }

    #[test]
    fn defaults_are_a_valid_single_node() {
        let c = ServeConfig::default();
        c.validate().unwrap();
        assert_eq!(c.initial_members().unwrap().len(), 1);
        assert!(c.dial_targets().is_empty());
    }

    /// A rate whose bytes per second overflow is refused (it wrapped, to 0 for 2^44,
    /// which a backup job refuses, or to a smaller rate); the largest that fits is not.
    #[test]
    fn a_backup_rate_that_overflows_is_refused() {
        let mut c = ServeConfig {
            backup_rate_mib: 1 << 44,
            ..ServeConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("too large"));
        c.backup_rate_mib = u64::MAX >> 20;
        c.validate().unwrap();
    }

    #[test]
    fn a_write_behind_window_is_read_and_one_that_overflows_is_refused() {
        let c: ServeConfig = toml::from_str("backup_write_behind_kib = 32").unwrap();
        assert_eq!(c.backup_write_behind_kib, Some(32));
        c.validate().unwrap();
        let c: ServeConfig = toml::from_str("").unwrap();
        assert_eq!(c.backup_write_behind_kib, None);
        let mut c = ServeConfig {
            backup_write_behind_kib: Some(1 << 54),
            ..ServeConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("too large"));
        c.backup_write_behind_kib = Some(u64::MAX >> 10);
        c.validate().unwrap();
    }

    #[test]
    fn clusters_need_a_secret_and_a_consistent_address() {
        let mut c = ServeConfig {
            initial_cluster: "1=127.0.0.1:7380,2=127.0.0.1:7390".into(),
            ..ServeConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("secret"));
        c.secret = "s".into();
        c.validate().unwrap();
        c.peer_addr = "127.0.0.1:9999".parse().unwrap();
        assert!(c.validate().unwrap_err().contains("listed at"));
    }

    #[test]
    fn toml_files_parse_and_unknown_fields_are_refused() {
        let c: ServeConfig =
            toml::from_str("id = 3\ninitial_cluster = \"3=127.0.0.1:7380\"\n").unwrap();
        assert_eq!(c.id, 3);
        assert!(toml::from_str::<ServeConfig>("idd = 3\n").is_err());
    }
}
