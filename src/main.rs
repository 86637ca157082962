//! `ryu`: run a node, or operate one. See README.md ("Running ryu") and `ryu --help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use ryu_server::cli::{self, CliResult, Failure};
use ryu_server::config::ServeConfig;

#[derive(Parser, Debug)]
#[command(
    name = "ryu",
    version,
    about = "Ryu: a replicated, transactional key-value store that speaks RESP"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node. Without flags: a single-node cluster on 127.0.0.1 (clients on
    /// 7379, peers 7380, HTTP 7381) with data in ./ryu-data.
    Serve(ServeArgs),
    /// Show a running node's role, term, indexes and membership.
    Status(Conn),
    /// Cluster membership.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
        #[command(flatten)]
        conn: Conn,
    },
    /// Backups: online against a node, or offline on directories.
    Backup {
        #[command(subcommand)]
        action: BackupAction,
    },
}

#[derive(Args, Debug, Clone)]
struct Conn {
    /// A node's client address.
    #[arg(long, global = true, default_value = "127.0.0.1:7379")]
    addr: String,
    /// The node's client password (AUTH).
    #[arg(long, global = true, env = "RYU_PASSWORD")]
    password: Option<String>,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// A TOML file with any of the settings below (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    id: Option<u64>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long)]
    backup_dir: Option<PathBuf>,
    #[arg(long)]
    client_addr: Option<std::net::SocketAddr>,
    #[arg(long)]
    peer_addr: Option<std::net::SocketAddr>,
    #[arg(long)]
    http_addr: Option<std::net::SocketAddr>,
    /// Bootstrap voters: id=host:port,... (the same on every node).
    #[arg(long)]
    initial_cluster: Option<String>,
    /// More peers to dial (nodes added later): id=host:port,...
    #[arg(long)]
    peers: Option<String>,
    /// The shared cluster secret (or RYU_SECRET).
    #[arg(long, env = "RYU_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Require clients to AUTH with this password (or RYU_PASSWORD).
    #[arg(long, env = "RYU_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    #[arg(long)]
    tick_ms: Option<u64>,
    /// Cap each backup job's read rate in MiB/s (default 24; 0: unlimited).
    #[arg(long)]
    backup_rate_mib: Option<u64>,
    /// Each backup job's write-behind window in KiB (default 8192; 0: none).
    #[arg(long)]
    backup_write_behind_kib: Option<u64>,
}

#[derive(Subcommand, Debug)]
enum ClusterAction {
    /// The members, their roles and addresses.
    Status,
    /// Add a voter (start it first with the cluster's --initial-cluster).
    Add { id: u64 },
    /// Add a non-voting member (a read replica).
    AddLearner { id: u64 },
    /// Remove a member.
    Remove { id: u64 },
}

#[derive(Subcommand, Debug)]
enum BackupAction {
    /// Take a backup: online (--addr, the default) or offline (--data-dir of a stopped node).
    Create {
        /// Backup id (1-64 of [A-Za-z0-9_-]); generated offline when omitted.
        #[arg(long)]
        id: Option<String>,
        /// leader, follower (the node at --addr) or cluster (every node at one Raft index).
        #[arg(long, default_value = "cluster")]
        strategy: String,
        /// A cluster backup completes with a quorum of equal parts.
        #[arg(long)]
        quorum: bool,
        /// Offline: the stopped node's data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Offline: the node's id (names its directory in the store).
        #[arg(long, default_value_t = 1)]
        node: u64,
        /// Offline: the backup store.
        #[arg(long, default_value = "ryu-backups")]
        dir: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
    /// A running node's backup jobs (bytes copied) and its last backup.
    Status {
        #[command(flatten)]
        conn: Conn,
    },
    /// List the backups in a store.
    List {
        #[arg(long, default_value = "ryu-backups")]
        dir: PathBuf,
    },
    /// Check a backup's manifest, files, checksums and WAL (--deep: restore and open it too).
    Verify {
        id: String,
        #[arg(long, default_value = "ryu-backups")]
        dir: PathBuf,
        #[arg(long)]
        deep: bool,
    },
    /// Make a new node directory from a backup (the seed of a new cluster).
    Restore {
        id: String,
        /// The directory to create (must not exist or be empty).
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value = "ryu-backups")]
        dir: PathBuf,
        /// Which node's part to restore from (default: the first complete one).
        #[arg(long)]
        from_node: Option<u64>,
        /// The new cluster's id, hex (default: derived from the backup id, so every
        /// node restored from one backup agrees).
        #[arg(long, value_parser = parse_hex)]
        cluster_id: Option<u64>,
    },
    /// Delete all but the newest N backups (and incomplete leftovers).
    Prune {
        #[arg(long)]
        keep_last: usize,
        #[arg(long, default_value = "ryu-backups")]
        dir: PathBuf,
    },
}

fn parse_hex(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| e.to_string())
}

fn serve(a: ServeArgs) -> CliResult {
    let mut c = match &a.config {
        #[allow(clippy::disallowed_methods)] // the shell reads its config file
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
            toml::from_str::<ServeConfig>(&text)
                .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))?
        }
        None => ServeConfig::default(),
    };
    macro_rules! set {
        ($($f:ident),*) => { $(if let Some(v) = a.$f { c.$f = v; })* };
    }
    set!(
        id,
        data_dir,
        backup_dir,
        client_addr,
        peer_addr,
        http_addr,
        initial_cluster,
        peers,
        secret,
        tick_ms,
        backup_rate_mib
    );
    if a.password.is_some() {
        c.password = a.password;
    }
    if a.backup_write_behind_kib.is_some() {
        c.backup_write_behind_kib = a.backup_write_behind_kib;
    }
    c.validate().map_err(Failure::usage)?;
    ryu_server::server::serve(c).map_err(Failure::failed)
}

fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Serve(a) => serve(a),
        Command::Status(c) => cli::status(&c.addr, c.password.as_deref()),
        Command::Cluster { action, conn } => {
            let (id_s, args): (String, Vec<&str>);
            match action {
                ClusterAction::Status => {
                    id_s = String::new();
                    args = vec!["CLUSTER", "NODES"];
                }
                ClusterAction::Add { id } => {
                    id_s = id.to_string();
                    args = vec!["CLUSTER", "ADD", &id_s];
                }
                ClusterAction::AddLearner { id } => {
                    id_s = id.to_string();
                    args = vec!["CLUSTER", "ADDLEARNER", &id_s];
                }
                ClusterAction::Remove { id } => {
                    id_s = id.to_string();
                    args = vec!["CLUSTER", "REMOVE", &id_s];
                }
            }
            let _ = &id_s;
            cli::cluster(&conn.addr, conn.password.as_deref(), &args)
        }
        Command::Backup { action } => match action {
            BackupAction::Create {
                id,
                strategy,
                quorum,
                data_dir,
                node,
                dir,
                conn,
            } => match data_dir {
                Some(d) => cli::backup_offline(&d, &dir, node, id.as_deref()),
                None => {
                    let strategy = strategy.to_ascii_uppercase();
                    if !matches!(strategy.as_str(), "LEADER" | "FOLLOWER" | "CLUSTER") {
                        return Err(Failure::usage("--strategy is leader, follower or cluster"));
                    }
                    let id = id.ok_or_else(|| Failure::usage("an online backup needs --id"))?;
                    cli::backup_online(&conn.addr, conn.password.as_deref(), &id, &strategy, quorum)
                }
            },
            BackupAction::Status { conn } => {
                cli::cluster(&conn.addr, conn.password.as_deref(), &["BACKUP", "STATUS"])
            }
            BackupAction::List { dir } => cli::backup_list(&dir),
            BackupAction::Verify { id, dir, deep } => cli::backup_verify(&dir, &id, deep),
            BackupAction::Restore {
                id,
                data_dir,
                dir,
                from_node,
                cluster_id,
            } => cli::backup_restore(&dir, &id, from_node, &data_dir, cluster_id),
            BackupAction::Prune { keep_last, dir } => cli::backup_prune(&dir, keep_last),
        },
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(f) = run(Cli::parse()) {
        eprintln!("ryu: {}", f.message);
        std::process::exit(f.code);
    }
}
