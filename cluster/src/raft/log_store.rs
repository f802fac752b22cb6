//! The Raft log on redb. Every append is one transaction, fsynced before openraft is told it is
//! flushed; the vote is fsynced before `save_vote` returns.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable};

use super::store::{KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE, LOG, read_meta, write_meta};
use super::{Entry, NodeId, TypeConfig, decode, encode};

#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    /// Runs blocking redb work off the async threads.
    async fn blocking<T, F>(&self, work: F) -> Result<T, std::io::Error>
    where
        F: FnOnce(&Database) -> Result<T, std::io::Error> + Send + 'static,
        T: Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(std::io::Error::other)?
    }

    async fn read_meta_value<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        key: &'static str,
    ) -> Result<Option<T>, std::io::Error> {
        let bytes = self.blocking(move |db| read_meta(db, key)).await?;
        bytes
            .map(|b| decode(&b).map_err(std::io::Error::other))
            .transpose()
    }
}

fn read_err(e: impl Into<std::io::Error>) -> StorageError<NodeId> {
    StorageIOError::read_logs(&e.into()).into()
}

fn write_err(e: impl Into<std::io::Error>) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e.into()).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        self.blocking(move |db| {
            let read = db.begin_read().map_err(std::io::Error::other)?;
            let table = read.open_table(LOG).map_err(std::io::Error::other)?;
            let mut entries = Vec::new();
            for item in table
                .range::<u64>((start, end))
                .map_err(std::io::Error::other)?
            {
                let (_, value) = item.map_err(std::io::Error::other)?;
                entries.push(decode::<Entry>(value.value()).map_err(std::io::Error::other)?);
            }
            Ok(entries)
        })
        .await
        .map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged = self
            .read_meta_value::<Option<LogId<NodeId>>>(KEY_LAST_PURGED)
            .await
            .map_err(read_err)?
            .flatten();
        let last = self
            .blocking(|db| {
                let read = db.begin_read().map_err(std::io::Error::other)?;
                let table = read.open_table(LOG).map_err(std::io::Error::other)?;
                match table.last().map_err(std::io::Error::other)? {
                    Some((_, value)) => decode::<Entry>(value.value())
                        .map(|e| Some(e.log_id))
                        .map_err(std::io::Error::other),
                    None => Ok(None),
                }
            })
            .await
            .map_err(read_err)?;
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let bytes =
            encode(vote).map_err(|e| StorageIOError::write_vote(&std::io::Error::other(e)))?;
        self.blocking(move |db| write_meta(db, KEY_VOTE, &bytes, true))
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.read_meta_value(KEY_VOTE)
            .await
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    // The committed index lets a restarted node re-apply committed entries before it hears
    // from a leader. It need not be durable (openraft re-learns it), so it costs no fsync.
    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = encode(&committed).map_err(write_err_encode)?;
        self.blocking(move |db| write_meta(db, KEY_COMMITTED, &bytes, false))
            .await
            .map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self
            .read_meta_value::<Option<LogId<NodeId>>>(KEY_COMMITTED)
            .await
            .map_err(read_err)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded = entries
            .into_iter()
            .map(|e| encode(&e).map(|bytes| (e.log_id.index, bytes)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(write_err_encode)?;
        let result = self
            .blocking(move |db| {
                let write = db.begin_write().map_err(std::io::Error::other)?;
                {
                    let mut table = write.open_table(LOG).map_err(std::io::Error::other)?;
                    for (index, bytes) in &encoded {
                        table
                            .insert(*index, bytes.as_slice())
                            .map_err(std::io::Error::other)?;
                    }
                }
                // Immediate durability: this returns after the fsync.
                write.commit().map_err(std::io::Error::other)
            })
            .await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let kind = e.kind();
                callback.log_io_completed(Err(std::io::Error::new(kind, e.to_string())));
                Err(write_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.blocking(move |db| {
            let write = db.begin_write().map_err(std::io::Error::other)?;
            {
                let mut table = write.open_table(LOG).map_err(std::io::Error::other)?;
                table
                    .retain_in(log_id.index.., |_, _| false)
                    .map_err(std::io::Error::other)?;
            }
            write.commit().map_err(std::io::Error::other)
        })
        .await
        .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let marker = encode(&Some(log_id)).map_err(write_err_encode)?;
        self.blocking(move |db| {
            // The marker first: a crash between the two leaves extra entries, never a gap.
            write_meta(db, KEY_LAST_PURGED, &marker, true)?;
            let write = db.begin_write().map_err(std::io::Error::other)?;
            {
                let mut table = write.open_table(LOG).map_err(std::io::Error::other)?;
                table
                    .retain_in(..=log_id.index, |_, _| false)
                    .map_err(std::io::Error::other)?;
            }
            write.commit().map_err(std::io::Error::other)
        })
        .await
        .map_err(write_err)
    }
}

fn write_err_encode(e: bincode::error::EncodeError) -> StorageError<NodeId> {
    write_err(std::io::Error::other(e))
}
