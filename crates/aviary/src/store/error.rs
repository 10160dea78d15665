//! [`StoreError`]: everything that can go wrong with the store, each variant worded for the
//! operator: what is wrong, with which file, and what to do about it. The store never
//! resolves a problem by discarding data on its own.

use std::path::PathBuf;

/// Why the store could not be opened, loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file or its directory cannot be opened or created (permissions, missing parent,
    /// not a directory, disk full).
    #[error(
        "cannot open the store {}: {source}; check that data_dir exists (or can be created) \
         and is readable and writable by this user",
        path.display()
    )]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Another process holds the file.
    #[error(
        "the store {} is in use by another process: stop the other Aviary or point data_dir \
         elsewhere",
        path.display()
    )]
    Locked { path: PathBuf },
    /// Written by a newer Aviary with a schema this build cannot read.
    #[error(
        "{} was written by a newer Aviary (schema {found}, this build reads {supported}): \
         upgrade Aviary or point data_dir elsewhere",
        path.display()
    )]
    Newer {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// A redb file whose tables are not Aviary's (no schema record).
    #[error(
        "{} is not an Aviary store (it has no schema record): point data_dir elsewhere",
        path.display()
    )]
    Foreign { path: PathBuf },
    /// Checksum failures, an unreadable file header, a record that does not decode.
    #[error(
        "the store {} is damaged ({detail}): restore it from a backup, or move the file \
         aside to start with an empty store; Aviary does not discard the data by itself",
        path.display()
    )]
    Damaged { path: PathBuf, detail: String },
    /// A write to an open store failed (disk full, I/O error): acknowledgements that
    /// waited for it are never sent.
    #[error("writing the store {} failed: {detail}", path.display())]
    Write { path: PathBuf, detail: String },
}

impl StoreError {
    /// Classifies a redb error met while opening or reading the file at `path`.
    pub(crate) fn from_redb(path: &std::path::Path, error: redb::Error) -> Self {
        let path = path.to_owned();
        match error {
            redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
                Self::Locked { path }
            }
            // redb reports a file that is not a database (bad magic number) as InvalidData.
            redb::Error::Io(source) if source.kind() == std::io::ErrorKind::InvalidData => {
                Self::Damaged {
                    path,
                    detail: source.to_string(),
                }
            }
            redb::Error::Io(source) => Self::Unreadable { path, source },
            redb::Error::UpgradeRequired(version) => Self::Damaged {
                path,
                detail: format!("redb file format {version} needs an upgrade"),
            },
            other => Self::Damaged {
                path,
                detail: other.to_string(),
            },
        }
    }
}
