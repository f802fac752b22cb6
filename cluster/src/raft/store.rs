//! The node's on-disk store: one redb file holding the Raft log, the vote, the last snapshot
//! and a format marker.
//!
//! redb commits with `Durability::Immediate` (fsync) by default, which is what the log and the
//! vote need. The marker is checked before anything else: a data dir written by another
//! cluster, by another node id, or by a newer format stops the node with a clear error. Nothing
//! here ever deletes or rewrites a data dir it does not recognise.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{NodeId, decode, encode};

pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

pub(crate) const KEY_FORMAT: &str = "format";
pub(crate) const KEY_VOTE: &str = "vote";
pub(crate) const KEY_LAST_PURGED: &str = "last_purged";
pub(crate) const KEY_COMMITTED: &str = "committed";
pub(crate) const KEY_SNAPSHOT: &str = "snapshot";

/// The on-disk format this build writes and reads. 2: keys carry `mcp_servers`, log entries
/// are proposals with an id, the state remembers recent proposals, `SettleLeasesOf` exists.
/// 3: the state records the owners of video jobs (`RecordVideo`, `ForgetVideo`) and key limits
/// carry `rpm_burst` and `tpm_burst`, so a format-2 snapshot no longer decodes. 4: keys carry
/// their records capture (`records`). There is no migration before 1.0: an older data dir is
/// refused.
const FORMAT_VERSION: u32 = 4;

#[derive(Debug, Serialize, Deserialize)]
struct FormatMarker {
    format_version: u32,
    cluster_name: String,
    node_id: NodeId,
}

/// Why a data dir cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data dir {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create {path} readable only by this user: {source}")]
    CreateFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot open {path}: {source}. The file may be corrupt or held by another aigw process; it was left untouched"
    )]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error(
        "{path} belongs to cluster `{found}`, but this node is configured for cluster `{expected}`. Point data_dir elsewhere or fix [cluster] name; the data dir was left untouched"
    )]
    OtherCluster {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error(
        "{path} belongs to node {found}, but this node is configured as node {expected}; the data dir was left untouched"
    )]
    OtherNode {
        path: PathBuf,
        found: NodeId,
        expected: NodeId,
    },
    #[error(
        "{path} was written in on-disk format {found}, newer than this aigw's {supported}: run a newer aigw; the data dir was left untouched"
    )]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "{path} was written in on-disk format {found}, older than this aigw's {supported}, and there is no migration before 1.0: move the data dir away to start this node afresh; it was left untouched"
    )]
    OlderFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path} is corrupt ({what}); it was left untouched")]
    Corrupt { path: PathBuf, what: String },
}

/// Opens (or creates) the store in `data_dir` and checks that it is this node's.
pub(crate) fn open(
    data_dir: &Path,
    cluster_name: &str,
    node_id: NodeId,
) -> Result<Arc<Database>, StoreError> {
    crate::data_dir::create_private_dir(data_dir).map_err(|source| StoreError::CreateDir {
        path: data_dir.to_owned(),
        source,
    })?;
    let path = data_dir.join("raft.redb");
    crate::data_dir::create_private_file(&path).map_err(|source| StoreError::CreateFile {
        path: path.clone(),
        source,
    })?;
    let corrupt = |what: String| StoreError::Corrupt {
        path: path.clone(),
        what,
    };
    let db = Database::create(&path).map_err(|source| StoreError::Open {
        path: path.clone(),
        source,
    })?;
    let existing = {
        let read = db.begin_read().map_err(|e| corrupt(e.to_string()))?;
        match read.open_table(META) {
            Ok(table) => table
                .get(KEY_FORMAT)
                .map_err(|e| corrupt(e.to_string()))?
                .map(|v| v.value().to_vec()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(corrupt(e.to_string())),
        }
    };
    match existing {
        Some(bytes) => {
            // The version comes first so a newer format is reported as such even if the rest
            // of its marker does not decode.
            let found_version =
                decode::<u32>(&bytes).map_err(|e| corrupt(format!("format marker: {e}")))?;
            if found_version > FORMAT_VERSION {
                return Err(StoreError::NewerFormat {
                    path,
                    found: found_version,
                    supported: FORMAT_VERSION,
                });
            }
            if found_version < FORMAT_VERSION {
                return Err(StoreError::OlderFormat {
                    path,
                    found: found_version,
                    supported: FORMAT_VERSION,
                });
            }
            let marker: FormatMarker =
                decode(&bytes).map_err(|e| corrupt(format!("format marker: {e}")))?;
            if marker.cluster_name != cluster_name {
                return Err(StoreError::OtherCluster {
                    path,
                    found: marker.cluster_name,
                    expected: cluster_name.to_owned(),
                });
            }
            if marker.node_id != node_id {
                return Err(StoreError::OtherNode {
                    path,
                    found: marker.node_id,
                    expected: node_id,
                });
            }
        }
        None => {
            let marker = FormatMarker {
                format_version: FORMAT_VERSION,
                cluster_name: cluster_name.to_owned(),
                node_id,
            };
            let bytes = encode(&marker).map_err(|e| corrupt(e.to_string()))?;
            let write = db.begin_write().map_err(|e| corrupt(e.to_string()))?;
            {
                let mut meta = write.open_table(META).map_err(|e| corrupt(e.to_string()))?;
                meta.insert(KEY_FORMAT, bytes.as_slice())
                    .map_err(|e| corrupt(e.to_string()))?;
                write.open_table(LOG).map_err(|e| corrupt(e.to_string()))?;
            }
            write.commit().map_err(|e| corrupt(e.to_string()))?;
        }
    }
    Ok(Arc::new(db))
}

/// Reads one META value.
pub(crate) fn read_meta(db: &Database, key: &str) -> Result<Option<Vec<u8>>, std::io::Error> {
    let read = db.begin_read().map_err(std::io::Error::other)?;
    let table = read.open_table(META).map_err(std::io::Error::other)?;
    Ok(table
        .get(key)
        .map_err(std::io::Error::other)?
        .map(|v| v.value().to_vec()))
}

/// Writes one META value; `durable` fsyncs before returning.
pub(crate) fn write_meta(
    db: &Database,
    key: &str,
    value: &[u8],
    durable: bool,
) -> Result<(), std::io::Error> {
    let mut write = db.begin_write().map_err(std::io::Error::other)?;
    if !durable {
        write
            .set_durability(redb::Durability::None)
            .map_err(std::io::Error::other)?;
    }
    {
        let mut table = write.open_table(META).map_err(std::io::Error::other)?;
        table.insert(key, value).map_err(std::io::Error::other)?;
    }
    write.commit().map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_refuses_another_cluster_and_another_node() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path(), "prod", 1).unwrap());
        assert!(open(dir.path(), "prod", 1).is_ok());
        assert!(matches!(
            open(dir.path(), "staging", 1),
            Err(StoreError::OtherCluster { .. })
        ));
        assert!(matches!(
            open(dir.path(), "prod", 2),
            Err(StoreError::OtherNode { .. })
        ));
    }

    #[test]
    fn a_newer_or_older_format_is_refused_and_left_alone() {
        for (version, newer) in [(FORMAT_VERSION + 1, true), (FORMAT_VERSION - 1, false)] {
            let dir = tempfile::tempdir().unwrap();
            let db = open(dir.path(), "prod", 1).unwrap();
            let marker = encode(&(version, "prod".to_owned(), 1u64)).unwrap();
            write_meta(&db, KEY_FORMAT, &marker, true).unwrap();
            drop(db);
            let err = open(dir.path(), "prod", 1).unwrap_err();
            if newer {
                assert!(matches!(err, StoreError::NewerFormat { .. }), "{err}");
            } else {
                assert!(matches!(err, StoreError::OlderFormat { .. }), "{err}");
            }
            assert!(dir.path().join("raft.redb").exists());
        }
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_a_wipe() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        std::fs::write(&path, b"this is not a redb file, it is garbage".repeat(200)).unwrap();
        let before = std::fs::read(&path).unwrap();
        assert!(open(dir.path(), "prod", 1).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }
}
