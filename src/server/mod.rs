//! `ryu serve`: the node thread, the RESP client port, the peer transport and the
//! HTTP endpoints, wired together.

pub mod client;
pub mod commands;
pub mod core;
pub mod http;
pub mod metrics;
pub mod peer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ryu_io::{DynDisk, StdDisk, SystemClock};
use ryu_node::{BackupTarget, NodeOptions, Request, Response};
use tokio::net::TcpListener;

use self::core::{CoreHandle, CoreOptions};
use self::metrics::Metrics;
use self::peer::Transport;
use crate::config::ServeConfig;
use crate::frame::HandshakeConfig;

/// What every connection task shares.
#[derive(Debug)]
pub struct Shared {
    pub config: ServeConfig,
    pub core: CoreHandle,
    pub transport: Arc<Transport>,
    pub metrics: Arc<Metrics>,
    pub cursors: Mutex<Cursors>,
    /// The last backup requested through this node, for `BACKUP STATUS`.
    pub last_backup: Mutex<Option<serde_json::Value>>,
}

impl Shared {
    /// Ask the local node; a request it says belongs to the leader is forwarded
    /// there (at most a few hops while leadership moves).
    pub async fn call(&self, request: Request) -> Response {
        let mut response = self.core.call(request.clone()).await;
        for _ in 0..3 {
            match response {
                Response::NotLeader { leader: Some(l) } if l != self.config.id => {
                    response = self.transport.forward(l, request.clone()).await;
                }
                _ => break,
            }
        }
        response
    }
}

/// `SCAN` cursors: number -> the key to resume from. Bounded; the oldest go first.
#[derive(Debug, Default)]
pub struct Cursors {
    next: u64,
    resume: BTreeMap<u64, Vec<u8>>,
}

const MAX_CURSORS: usize = 4096;

impl Cursors {
    pub fn insert(&mut self, resume: Vec<u8>) -> u64 {
        self.next += 1;
        self.resume.insert(self.next, resume);
        while self.resume.len() > MAX_CURSORS {
            self.resume.pop_first();
        }
        self.next
    }

    pub fn get(&self, cursor: &u64) -> Option<&Vec<u8>> {
        self.resume.get(cursor)
    }
}

/// A host directory as (disk rooted at its parent, its name): the layout the node
/// and the backup crate expect.
pub fn disk_for(dir: &Path) -> (DynDisk, PathBuf) {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = dir
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    (Arc::new(StdDisk::new(parent)), name)
}

#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // the shell owns real files
pub fn lock_data_dir(dir: &Path) -> Result<std::fs::File, String> {
    ensure_dir(dir)?;
    let path = dir.join("LOCK");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    f.try_lock()
        .map_err(|_| format!("{} is in use by another ryu process", dir.display()))?;
    Ok(f)
}

/// Create `dir` and any missing parents, and sync every directory on the path into
/// its parent before this returns (as `ryu_io::create_dir_all_synced` does for the
/// core's disks): a data or backup directory made here must not vanish in a power cut
/// with the commits and backups later synced inside it.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // the shell owns real files
fn ensure_dir(dir: &Path) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot create {}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(fail)?;
    // Each directory's parent: `/` has none, a relative path's first one is `.`.
    for parent in dir.ancestors().filter_map(Path::parent) {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        std::fs::File::open(parent)
            .and_then(|f| f.sync_all())
            .map_err(fail)?;
    }
    Ok(())
}

/// Node options for a config.
pub fn node_options(config: &ServeConfig) -> Result<NodeOptions, String> {
    let members = config.initial_members()?;
    let mut opts = NodeOptions::new(config.id, members.keys().copied().collect());
    opts.cluster_id = config.bootstrap_cluster_id();
    opts.backup_max_bytes_per_sec =
        (config.backup_rate_mib > 0).then_some(config.backup_rate_mib << 20);
    opts.backup_write_behind_bytes = config.backup_write_behind_kib.map(|k| k << 10);
    let (disk, dir) = disk_for(&config.backup_dir);
    opts.backup = Some(BackupTarget {
        disk,
        dir,
        clock: Arc::new(SystemClock::new()),
    });
    Ok(opts)
}

/// Run a node until SIGTERM or Ctrl-C. Errors are for the operator.
pub fn serve(config: ServeConfig) -> Result<(), String> {
    config.validate()?;
    let _lock = lock_data_dir(&config.data_dir)?;
    ensure_dir(&config.backup_dir)?;
    let (disk, dir) = disk_for(&config.data_dir);
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).map_err(|e| format!("OS random source: {e}"))?;
    let metrics = Arc::new(Metrics::default());
    let transport = Transport::new(config.id, metrics.clone());
    let core_opts = CoreOptions {
        disk,
        dir,
        node: node_options(&config)?,
        tick: Duration::from_millis(config.tick_ms),
        backup_step_bytes: 1 << 20,
        seed: u64::from_le_bytes(seed),
    };
    let (core, thread, cluster_id) = core::start(core_opts, transport.clone(), metrics.clone())
        .map_err(|e| format!("cannot open the node in {}: {e}", config.data_dir.display()))?;
    transport.attach(
        core.clone(),
        HandshakeConfig {
            cluster_id,
            node_id: config.id,
            secret: config.secret.as_bytes().to_vec(),
        },
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let shared = Arc::new(Shared {
        config: config.clone(),
        core: core.clone(),
        transport: transport.clone(),
        metrics: metrics.clone(),
        cursors: Mutex::new(Cursors::default()),
        last_backup: Mutex::new(None),
    });
    rt.block_on(async move {
        let bind = |addr, what: &'static str| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen for {what} on {addr}: {e}"))
        };
        let clients = bind(config.client_addr, "clients").await?;
        let http = bind(config.http_addr, "HTTP").await?;
        if !config.secret.is_empty() {
            let peers = bind(config.peer_addr, "peers").await?;
            tokio::spawn(peer::listen(transport.clone(), peers));
            for (id, addr) in config.dial_targets() {
                tokio::spawn(peer::dial(transport.clone(), id, addr));
            }
        }
        tokio::spawn(client::listen(shared, clients));
        tokio::spawn(http::listen(metrics, http));
        tracing::info!(
            id = config.id,
            cluster = format!("{cluster_id:016x}"),
            clients = %config.client_addr,
            peers = %config.peer_addr,
            http = %config.http_addr,
            data = %config.data_dir.display(),
            "ryu is serving"
        );
        wait_for_signal().await;
        tracing::info!("shutting down");
        core.shutdown().await;
        Ok::<(), String>(())
    })?;
    let _ = thread.join();
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // checks real directories
mod tests {
    /// The backup settings reach every backup job the node starts: the rate in MiB/s
    /// (unset: 24), the write-behind window in KiB (unset: the job's default).
    #[test]
    fn backup_settings_reach_the_node_in_bytes() {
        let mut c = crate::config::ServeConfig {
            backup_rate_mib: 50,
            backup_write_behind_kib: Some(32),
            ..Default::default()
        };
        let o = super::node_options(&c).unwrap();
        assert_eq!(o.backup_max_bytes_per_sec, Some(50 << 20));
        assert_eq!(o.backup_write_behind_bytes, Some(32 << 10));
        (c.backup_rate_mib, c.backup_write_behind_kib) = (0, None);
        let o = super::node_options(&c).unwrap();
        assert_eq!(o.backup_max_bytes_per_sec, None);
        assert_eq!(o.backup_write_behind_bytes, None);
        // Unless told otherwise a node caps its backups (and snapshots) at 24 MiB/s.
        let o = super::node_options(&crate::config::ServeConfig::default()).unwrap();
        assert_eq!(o.backup_max_bytes_per_sec, Some(24 << 20));
    }

    /// Missing parents are made (and synced, which a test cannot see); a path through
    /// a file is a clear error.
    #[test]
    fn ensure_dir_makes_missing_parents_and_names_a_path_it_cannot_make() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/c");
        super::ensure_dir(&dir).unwrap();
        assert!(dir.is_dir());
        super::ensure_dir(&dir).unwrap();
        std::fs::write(tmp.path().join("file"), b"x").unwrap();
        let e = super::ensure_dir(&tmp.path().join("file/d")).unwrap_err();
        assert!(
            e.starts_with("cannot create ") && e.contains("file/d"),
            "{e}"
        );
    }
}
