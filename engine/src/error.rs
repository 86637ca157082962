//! The engine's one error type.

use ryu_io::IoError;
use std::fmt;
use std::path::PathBuf;

/// A timestamp: commits are numbered 1, 2, 3, ...; 0 is the empty initial state.
pub type Ts = u64;

/// Result of an engine operation.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything the engine API can return. Callers branch on the variant:
/// `Conflict` means retry the transaction; `NoSpace` means free space and retry;
/// `Poisoned` means reopen; `Corrupted` names the file and byte offset of bad bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Another transaction committed a write to `key` after this one started
    /// (first committer wins).
    Conflict { key: Vec<u8> },
    /// A sync (or a write whose outcome is unknown) failed earlier: the engine refuses
    /// writes until it is reopened, because fsync errors are not retryable.
    Poisoned,
    /// The device is full. Nothing of the failed operation was committed; earlier
    /// commits are unharmed, and writes work again once space is freed.
    NoSpace,
    /// Bytes on disk fail their checksum or framing.
    Corrupted {
        file: PathBuf,
        offset: u64,
        detail: String,
    },
    /// A device operation failed.
    Io {
        context: &'static str,
        source: IoError,
    },
    /// The directory holds something that is not a Ryu database.
    NotADatabase { dir: PathBuf, detail: String },
    /// The file was written by a newer (or unknown) format version.
    UnsupportedVersion {
        file: PathBuf,
        found: u32,
        supported: u32,
    },
    /// A key, value or transaction exceeds a documented limit.
    TooLarge {
        what: &'static str,
        size: u64,
        max: u64,
    },
    /// `apply_at` was given a timestamp not above the last committed one.
    TimestampNotIncreasing { ts: Ts, last: Ts },
}

impl Error {
    /// Wrap an I/O error, keeping `NoSpace` distinct.
    pub(crate) fn io(context: &'static str, source: IoError) -> Error {
        match source {
            IoError::NoSpace => Error::NoSpace,
            source => Error::Io { context, source },
        }
    }

    /// Shorthand for a corruption report.
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

    /// True for `Corrupted`.
    pub fn is_corrupted(&self) -> bool {
        matches!(self, Error::Corrupted { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Conflict { key } => write!(f, "write conflict on key {key:?}"),
            Error::Poisoned => write!(
                f,
                "engine poisoned by an earlier failed sync; reopen the database"
            ),
            Error::NoSpace => write!(f, "no space left on device; nothing was committed"),
            Error::Corrupted {
                file,
                offset,
                detail,
            } => write!(
                f,
                "corrupted {} at offset {offset}: {detail}",
                file.display()
            ),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::NotADatabase { dir, detail } => {
                write!(f, "{} is not a Ryu database: {detail}", dir.display())
            }
            Error::UnsupportedVersion {
                file,
                found,
                supported,
            } => write!(
                f,
                "{} has format version {found}; this build reads up to {supported}",
                file.display()
            ),
            Error::TooLarge { what, size, max } => {
                write!(f, "{what} of {size} bytes exceeds the limit of {max}")
            }
            Error::TimestampNotIncreasing { ts, last } => write!(
                f,
                "apply_at timestamp {ts} is not above the last committed {last}"
            ),
        }
    }
}

impl std::error::Error for Error {}
