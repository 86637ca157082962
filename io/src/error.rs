//! The one error type of the I/O boundary.

use std::fmt;
use std::path::PathBuf;

/// Result of an operation at the I/O boundary.
pub type IoResult<T> = Result<T, IoError>;

/// What can go wrong at the I/O boundary. Callers branch on the variant: `NotFound`
/// and `AlreadyExists` are expected conditions, `NoSpace` is recoverable once space is
/// freed, `Io` is a failed device operation (after a failed `sync_data` the caller must
/// treat the file's unsynced contents as unknown: fsync errors are not retryable on
/// Linux), and `Corrupted` is raised by layers that checksum what they read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IoError {
    /// The path does not exist.
    NotFound { path: PathBuf },
    /// `create` found something already at the path.
    AlreadyExists { path: PathBuf },
    /// The device (or the simulated quota) is full. Nothing of the failed write landed.
    NoSpace,
    /// A read asked for bytes beyond the end of the file.
    UnexpectedEof {
        offset: u64,
        len: u64,
        file_len: u64,
    },
    /// Bytes were read but fail their checksum or framing.
    Corrupted { what: String, offset: u64 },
    /// Any other failed operation (device error, permission, injected fault).
    Io { op: &'static str, detail: String },
}

impl IoError {
    /// Shorthand for a device error.
    pub fn io(op: &'static str, detail: impl Into<String>) -> Self {
        IoError::Io {
            op,
            detail: detail.into(),
        }
    }

    /// True when the path did not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, IoError::NotFound { .. })
    }

    /// Map a `std::io::Error` into the boundary's vocabulary.
    pub fn from_std(op: &'static str, path: &std::path::Path, err: std::io::Error) -> Self {
        use std::io::ErrorKind;
        match err.kind() {
            ErrorKind::NotFound => IoError::NotFound {
                path: path.to_path_buf(),
            },
            ErrorKind::AlreadyExists => IoError::AlreadyExists {
                path: path.to_path_buf(),
            },
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded => IoError::NoSpace,
            _ => IoError::Io {
                op,
                detail: format!("{}: {err}", path.display()),
            },
        }
    }
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoError::NotFound { path } => write!(f, "not found: {}", path.display()),
            IoError::AlreadyExists { path } => write!(f, "already exists: {}", path.display()),
            IoError::NoSpace => write!(f, "no space left on device"),
            IoError::UnexpectedEof {
                offset,
                len,
                file_len,
            } => write!(
                f,
                "read of {len} bytes at offset {offset} runs past end of file ({file_len} bytes)"
            ),
            IoError::Corrupted { what, offset } => write!(f, "corrupted {what} at offset {offset}"),
            IoError::Io { op, detail } => write!(f, "{op} failed: {detail}"),
        }
    }
}

impl std::error::Error for IoError {}
