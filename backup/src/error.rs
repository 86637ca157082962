//! The backup crate's one error type.

use ryu_engine::Ts;
use ryu_io::IoError;
use std::fmt;
use std::path::PathBuf;

/// Result of a backup operation.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything the backup API can return. Expected conditions (a held lock, a non-empty
/// target, a timestamp the backup does not cover) are their own variants; bad bytes are
/// `Corrupted` with the file and offset; a failed verification carries its report.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The source engine failed (a read error of the source is reported here; the
    /// backup is abandoned and nothing in the source is changed).
    Engine(ryu_engine::Error),
    /// A device operation failed.
    Io {
        context: &'static str,
        path: PathBuf,
        source: IoError,
    },
    /// Another job holds the destination's lock file. If no job is running (the holder
    /// crashed), [`crate::break_lock`] removes it.
    Locked { lock_file: PathBuf, holder: String },
    /// Bytes fail their checksum or framing.
    Corrupted {
        file: PathBuf,
        offset: u64,
        detail: String,
    },
    /// No backup with this id in the destination.
    NotFound { id: String },
    /// The backup was never finalized (a crash or an abandoned job left it).
    Incomplete { id: String },
    /// A backup id must be 1 to 64 characters of `[A-Za-z0-9_-]`, not starting with `.`.
    InvalidId { id: String },
    /// Restore only writes into an empty or absent directory.
    TargetNotEmpty { target: PathBuf },
    /// A path in a manifest is absolute or climbs out of its directory.
    UnsafePath { path: String },
    /// The requested timestamp lies outside what the backup can restore.
    NotCovered { ts: Ts, from_ts: Ts, to_ts: Ts },
    /// An incremental chain is broken (missing or foreign parent, or a loop).
    BrokenChain { id: String, detail: String },
    /// Written by another version of the tool or engine (newer, or an older format
    /// this build no longer reads).
    UnsupportedVersion {
        what: String,
        found: u64,
        /// The versions this build reads, for the message: `"2"`, `"2 and 3"`.
        supported: String,
    },
    /// Verification found problems (the restore refuses such a backup).
    VerifyFailed { id: String, problems: Vec<String> },
    /// The job was used after it failed or finished.
    JobFinished,
    /// Invalid options or arguments.
    Invalid { detail: String },
}

impl Error {
    pub(crate) fn io(context: &'static str, path: impl Into<PathBuf>, source: IoError) -> Error {
        Error::Io {
            context,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupted(
        file: impl Into<PathBuf>,
        offset: u64,
        detail: impl Into<String>,
    ) -> Error {
        Error::Corrupted {
            file: file.into(),
            offset,
            detail: detail.into(),
        }
    }
}

impl From<ryu_engine::Error> for Error {
    fn from(e: ryu_engine::Error) -> Self {
        Error::Engine(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Engine(e) => write!(f, "source database: {e}"),
            Error::Io {
                context,
                path,
                source,
            } => write!(f, "{context} {}: {source}", path.display()),
            Error::Locked { lock_file, holder } => write!(
                f,
                "destination is locked by {holder} ({}); if no backup job is running (it crashed), break the lock",
                lock_file.display()
            ),
            Error::Corrupted {
                file,
                offset,
                detail,
            } => write!(
                f,
                "corrupted {} at offset {offset}: {detail}",
                file.display()
            ),
            Error::NotFound { id } => write!(f, "no backup {id:?} in the destination"),
            Error::Incomplete { id } => write!(f, "backup {id:?} is incomplete"),
            Error::InvalidId { id } => write!(f, "invalid backup id {id:?}"),
            Error::TargetNotEmpty { target } => write!(
                f,
                "restore target {} is not empty; restore only into an empty or absent directory",
                target.display()
            ),
            Error::UnsafePath { path } => {
                write!(f, "path {path:?} would escape the directory it belongs to")
            }
            Error::NotCovered { ts, from_ts, to_ts } => write!(
                f,
                "timestamp {ts} is not covered: this backup restores timestamps {from_ts}..={to_ts}"
            ),
            Error::BrokenChain { id, detail } => {
                write!(f, "incremental chain of {id:?} is broken: {detail}")
            }
            Error::UnsupportedVersion {
                what,
                found,
                supported,
            } => write!(
                f,
                "{what} has format version {found}; this build reads {supported} only"
            ),
            Error::VerifyFailed { id, problems } => {
                write!(
                    f,
                    "backup {id:?} failed verification: {}",
                    problems.join("; ")
                )
            }
            Error::JobFinished => write!(f, "the backup job already finished or failed"),
            Error::Invalid { detail } => write!(f, "invalid argument: {detail}"),
        }
    }
}

impl std::error::Error for Error {}
