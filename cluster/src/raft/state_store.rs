//! The state machine as openraft drives it: applies committed entries to `StateMachineData`,
//! builds and installs snapshots, and publishes every applied state to the request path.
//!
//! The data lives in memory. What survives a restart is the last snapshot (in redb) plus the
//! log after it, which openraft re-applies; so applying costs no disk write of its own.

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use redb::Database;
use serde::{Deserialize, Serialize};

use super::store::{KEY_SNAPSHOT, read_meta, write_meta};
use super::{Entry, Node, NodeId, TypeConfig, decode, encode};
use crate::command::Outcome;
use crate::snapshot::Publisher;
use crate::state_machine::StateMachineData;

/// A snapshot as stored in redb: its metadata and the encoded `StateMachineData`.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Node>,
    data: Vec<u8>,
}

pub(crate) struct StateStore {
    db: Arc<Database>,
    data: StateMachineData,
    publisher: Publisher,
    snapshots_built: u64,
}

impl StateStore {
    /// Loads the last snapshot, if any, and publishes it.
    pub fn open(db: Arc<Database>, publisher: Publisher) -> Result<Self, String> {
        let data = match read_meta(&db, KEY_SNAPSHOT).map_err(|e| e.to_string())? {
            Some(bytes) => {
                let stored: StoredSnapshot =
                    decode(&bytes).map_err(|e| format!("stored snapshot: {e}"))?;
                decode::<StateMachineData>(&stored.data)
                    .map_err(|e| format!("stored snapshot data: {e}"))?
            }
            None => StateMachineData::default(),
        };
        publisher.publish(&data);
        Ok(Self {
            db,
            data,
            publisher,
            snapshots_built: 0,
        })
    }

    async fn persist(&self, stored: StoredSnapshot) -> Result<(), StorageError<NodeId>> {
        let db = self.db.clone();
        let bytes = encode(&stored).map_err(|e| snapshot_err(std::io::Error::other(e)))?;
        tokio::task::spawn_blocking(move || write_meta(&db, KEY_SNAPSHOT, &bytes, true))
            .await
            .map_err(|e| snapshot_err(std::io::Error::other(e)))?
            .map_err(snapshot_err)
    }
}

fn snapshot_err(e: std::io::Error) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(None, &e).into()
}

/// Builds a snapshot from a copy of the state (cheap: the maps share structure).
pub(crate) struct SnapshotBuilder {
    db: Arc<Database>,
    data: StateMachineData,
    sequence: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let data = std::mem::take(&mut self.data);
        let last_log_id = data.last_applied;
        let last_membership = data.last_membership.clone();
        let sequence = self.sequence;
        let db = self.db.clone();
        let (meta, bytes) = tokio::task::spawn_blocking(move || {
            let bytes = encode(&data).map_err(std::io::Error::other)?;
            let meta = SnapshotMeta {
                last_log_id,
                last_membership,
                snapshot_id: format!("{}-{}", last_log_id.map_or(0, |id| id.index), sequence),
            };
            let stored = StoredSnapshot {
                meta: meta.clone(),
                data: bytes.clone(),
            };
            let stored = encode(&stored).map_err(std::io::Error::other)?;
            write_meta(&db, KEY_SNAPSHOT, &stored, true)?;
            Ok::<_, std::io::Error>((meta, bytes))
        })
        .await
        .map_err(|e| snapshot_err(std::io::Error::other(e)))?
        .map_err(snapshot_err)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>), StorageError<NodeId>> {
        Ok((self.data.last_applied, self.data.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut outcomes = Vec::new();
        for entry in entries {
            self.data.last_applied = Some(entry.log_id);
            let outcome = match entry.payload {
                EntryPayload::Blank => Outcome::Nothing,
                EntryPayload::Normal(proposal) => {
                    self.data.apply_proposal(entry.log_id.index, proposal)
                }
                EntryPayload::Membership(membership) => {
                    self.data.last_membership =
                        StoredMembership::new(Some(entry.log_id), membership);
                    Outcome::Nothing
                }
            };
            outcomes.push(outcome);
        }
        self.publisher.publish(&self.data);
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshots_built += 1;
        SnapshotBuilder {
            db: self.db.clone(),
            data: self.data.clone(),
            sequence: self.snapshots_built,
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = snapshot.into_inner();
        let data: StateMachineData = decode(&bytes).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(
                Some(meta.signature()),
                &std::io::Error::other(e),
            ))
        })?;
        self.persist(StoredSnapshot {
            meta: meta.clone(),
            data: bytes,
        })
        .await?;
        self.data = data;
        self.publisher.publish(&self.data);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let db = self.db.clone();
        let bytes = tokio::task::spawn_blocking(move || read_meta(&db, KEY_SNAPSHOT))
            .await
            .map_err(|e| snapshot_err(std::io::Error::other(e)))?
            .map_err(snapshot_err)?;
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        let stored: StoredSnapshot =
            decode(&bytes).map_err(|e| snapshot_err(std::io::Error::other(e)))?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}
