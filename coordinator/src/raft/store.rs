//! Durable Raft storage in one redb database: the log, the vote, the committed index and
//! the latest state-machine snapshot. Every write is one redb transaction committed with
//! fsync before openraft is told it is durable. The state machine itself lives in memory and
//! is rebuilt on start from the snapshot plus the committed log.

// openraft's traits fix the error type (`StorageError`, a large enum); the helpers here
// return it too rather than boxing and unboxing at every trait boundary.
#![allow(clippy::result_large_err)]

use std::{
    fmt::Debug,
    io::Cursor,
    ops::{Bound, RangeBounds},
    path::Path,
    sync::{Arc, RwLock},
};

use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageIOError, StoredMembership, Vote,
    storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot},
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{Entry, LogId, NodeId, StorageError, TypeConfig};
use crate::{
    codec::{self, Encoding},
    stages::{self, Stages},
    state::{Response, State},
};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";
/// The latest snapshot: its meta (JSON) and its data (raw bytes, stored as they are).
const SNAPSHOT_META: &str = "snapshot_meta";
const SNAPSHOT_DATA: &str = "snapshot_data";

type Membership = StoredMembership<NodeId, openraft::BasicNode>;

fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}

/// Log entries and Raft metadata are stored in the members' binary encoding (`codec`);
/// JSON written by earlier versions still reads.
fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    codec::encode(v).expect("raft storage types serialize")
}

fn decode<T: DeserializeOwned>(
    subject: ErrorSubject<NodeId>,
    bytes: &[u8],
) -> Result<T, StorageError> {
    codec::decode(bytes).map_err(|e| io_err(subject, ErrorVerb::Read, e))
}

/// Opens (or creates) the database under `dir`.
pub fn open(dir: &Path) -> Result<Arc<Database>, crate::Error> {
    std::fs::create_dir_all(dir).map_err(|source| crate::Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join("rdmaq.redb");
    let db = Database::create(&path).map_err(|e| crate::Error::Storage {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    let txn = db.begin_write().map_err(|e| crate::Error::Storage {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    {
        txn.open_table(LOG).map_err(|e| crate::Error::Storage {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        txn.open_table(META).map_err(|e| crate::Error::Storage {
            path: path.clone(),
            detail: e.to_string(),
        })?;
    }
    txn.commit().map_err(|e| crate::Error::Storage {
        path,
        detail: e.to_string(),
    })?;
    Ok(Arc::new(db))
}

fn get_meta<T: DeserializeOwned>(
    db: &Database,
    key: &str,
    subject: ErrorSubject<NodeId>,
) -> Result<Option<T>, StorageError> {
    let txn = db
        .begin_read()
        .map_err(|e| io_err(subject.clone(), ErrorVerb::Read, e))?;
    let table = txn
        .open_table(META)
        .map_err(|e| io_err(subject.clone(), ErrorVerb::Read, e))?;
    match table
        .get(key)
        .map_err(|e| io_err(subject.clone(), ErrorVerb::Read, e))?
    {
        Some(v) => Ok(Some(decode(subject, v.value())?)),
        None => Ok(None),
    }
}

fn put_meta<T: Serialize>(
    db: &Database,
    key: &str,
    value: &T,
    subject: ErrorSubject<NodeId>,
) -> Result<(), StorageError> {
    put_meta_as(db, key, value, subject, Durability::Immediate)
}

fn put_meta_as<T: Serialize>(
    db: &Database,
    key: &str,
    value: &T,
    subject: ErrorSubject<NodeId>,
    durability: Durability,
) -> Result<(), StorageError> {
    let mut txn = db
        .begin_write()
        .map_err(|e| io_err(subject.clone(), ErrorVerb::Write, e))?;
    txn.set_durability(durability)
        .map_err(|e| io_err(subject.clone(), ErrorVerb::Write, e))?;
    {
        let mut table = txn
            .open_table(META)
            .map_err(|e| io_err(subject.clone(), ErrorVerb::Write, e))?;
        table
            .insert(key, encode(value).as_slice())
            .map_err(|e| io_err(subject.clone(), ErrorVerb::Write, e))?;
    }
    txn.commit()
        .map_err(|e| io_err(subject, ErrorVerb::Write, e))
}

// ---------------------------------------------------------------------- log

#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    stages: Stages,
}

impl LogStore {
    pub fn new(db: Arc<Database>, stages: Stages) -> Self {
        LogStore { db, stages }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(x) => Bound::Included(*x),
            Bound::Excluded(x) => Bound::Excluded(*x),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(x) => Bound::Included(*x),
            Bound::Excluded(x) => Bound::Excluded(*x),
            Bound::Unbounded => Bound::Unbounded,
        };
        let subject = ErrorSubject::Logs;
        let txn = self
            .db
            .begin_read()
            .map_err(|e| io_err(subject.clone(), ErrorVerb::Read, e))?;
        let table = txn
            .open_table(LOG)
            .map_err(|e| io_err(subject.clone(), ErrorVerb::Read, e))?;
        let mut out = Vec::new();
        for item in table
            .range::<u64>((start, end))
            .map_err(|e| io_err(subject.clone(), ErrorVerb::Read, e))?
        {
            let (_, v) = item.map_err(|e| io_err(subject.clone(), ErrorVerb::Read, e))?;
            out.push(decode(subject.clone(), v.value())?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> =
            get_meta(&self.db, LAST_PURGED, ErrorSubject::Store)?;
        let subject = ErrorSubject::Logs;
        let txn = self
            .db
            .begin_read()
            .map_err(|e| io_err(subject.clone(), ErrorVerb::Read, e))?;
        let table = txn
            .open_table(LOG)
            .map_err(|e| io_err(subject.clone(), ErrorVerb::Read, e))?;
        let last = match table
            .last()
            .map_err(|e| io_err(subject.clone(), ErrorVerb::Read, e))?
        {
            Some((_, v)) => Some(decode::<Entry>(subject, v.value())?.log_id),
            None => None,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    /// Written without an fsync of its own: it reaches the disk with the next append (each
    /// is a durable commit). After a crash it may read back older than it was — openraft
    /// then applies less of the log at start, and the rest once it is committed again —
    /// which is safe because reads do not trust it: they wait for the leader's whole log
    /// (`Cluster::apply_own_log`). Its fsync was a third of a grant's disk time.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let start = std::time::Instant::now();
        let saved = put_meta_as(
            &self.db,
            COMMITTED,
            &committed,
            ErrorSubject::Store,
            Durability::None,
        );
        stages::since(&self.stages.save_committed, start);
        saved
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(get_meta::<Option<LogId>>(&self.db, COMMITTED, ErrorSubject::Store)?.flatten())
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        put_meta(&self.db, VOTE, vote, ErrorSubject::Vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        get_meta(&self.db, VOTE, ErrorSubject::Vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let start = std::time::Instant::now();
        let subject = ErrorSubject::Logs;
        let txn = self
            .db
            .begin_write()
            .map_err(|e| io_err(subject.clone(), ErrorVerb::Write, e))?;
        {
            let mut table = txn
                .open_table(LOG)
                .map_err(|e| io_err(subject.clone(), ErrorVerb::Write, e))?;
            for entry in entries {
                table
                    .insert(entry.log_id.index, encode(&entry).as_slice())
                    .map_err(|e| io_err(subject.clone(), ErrorVerb::Write, e))?;
            }
        }
        // One fsync for the whole batch; only then is the append reported durable.
        let result = txn
            .commit()
            .map_err(|e| std::io::Error::other(e.to_string()));
        stages::since(&self.stages.append, start);
        let failed = result.as_ref().err().map(|e| {
            io_err(
                subject,
                ErrorVerb::Write,
                std::io::Error::other(e.to_string()),
            )
        });
        callback.log_io_completed(result);
        failed.map_or(Ok(()), Err)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.delete_range(log_id.index..)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        put_meta(&self.db, LAST_PURGED, &log_id, ErrorSubject::Store)?;
        self.delete_range(..=log_id.index)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }
}

impl LogStore {
    fn delete_range(&self, range: impl RangeBounds<u64>) -> Result<(), StorageError> {
        let subject = ErrorSubject::Logs;
        let txn = self
            .db
            .begin_write()
            .map_err(|e| io_err(subject.clone(), ErrorVerb::Delete, e))?;
        {
            let mut table = txn
                .open_table(LOG)
                .map_err(|e| io_err(subject.clone(), ErrorVerb::Delete, e))?;
            let (start, end) = (range.start_bound().cloned(), range.end_bound().cloned());
            table
                .retain_in::<u64, _>((start, end), |_, _| false)
                .map_err(|e| io_err(subject.clone(), ErrorVerb::Delete, e))?;
        }
        txn.commit()
            .map_err(|e| io_err(subject, ErrorVerb::Delete, e))
    }
}

// ---------------------------------------------------------------------- state machine

/// What the services read: the applied state and where it stands in the log.
#[derive(Debug, Default)]
pub struct Applied {
    pub state: State,
    pub last_applied: Option<LogId>,
    pub membership: Membership,
    /// Tells watchers (agents' `WatchQuotas` streams) the quota sequence after each apply.
    pub quota_changes: tokio::sync::watch::Sender<u64>,
}

pub type SharedState = Arc<RwLock<Applied>>;

type Meta = SnapshotMeta<NodeId, openraft::BasicNode>;

/// Stores a snapshot's meta and data in one transaction.
fn put_snapshot(db: &Database, meta: &Meta, data: &[u8]) -> Result<(), StorageError> {
    let subject = ErrorSubject::Snapshot(Some(meta.signature()));
    let err = |e: &dyn std::fmt::Display| {
        io_err(
            subject.clone(),
            ErrorVerb::Write,
            std::io::Error::other(e.to_string()),
        )
    };
    let txn = db.begin_write().map_err(|e| err(&e))?;
    {
        let mut table = txn.open_table(META).map_err(|e| err(&e))?;
        table
            .insert(SNAPSHOT_META, encode(meta).as_slice())
            .map_err(|e| err(&e))?;
        table.insert(SNAPSHOT_DATA, data).map_err(|e| err(&e))?;
    }
    txn.commit().map_err(|e| err(&e))
}

fn get_snapshot(db: &Database) -> Result<Option<(Meta, Vec<u8>)>, StorageError> {
    let subject = ErrorSubject::Snapshot(None);
    let Some(meta) = get_meta::<Meta>(db, SNAPSHOT_META, subject.clone())? else {
        return Ok(None);
    };
    let err = |e: &dyn std::fmt::Display| {
        io_err(
            subject.clone(),
            ErrorVerb::Read,
            std::io::Error::other(e.to_string()),
        )
    };
    let txn = db.begin_read().map_err(|e| err(&e))?;
    let table = txn.open_table(META).map_err(|e| err(&e))?;
    let data = table
        .get(SNAPSHOT_DATA)
        .map_err(|e| err(&e))?
        .map(|v| v.value().to_vec())
        .unwrap_or_default();
    Ok(Some((meta, data)))
}

#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    state: State,
}

#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<Database>,
    applied: SharedState,
    stages: Stages,
}

impl StateMachineStore {
    /// Loads the latest snapshot, if any; openraft replays the committed log after it.
    pub fn new(db: Arc<Database>, stages: Stages) -> Result<Self, StorageError> {
        let store = StateMachineStore {
            db,
            applied: SharedState::default(),
            stages,
        };
        if let Some((meta, data)) = get_snapshot(&store.db)? {
            store.install(&meta, &data)?;
        }
        Ok(store)
    }

    pub fn shared(&self) -> SharedState {
        self.applied.clone()
    }

    fn install(
        &self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        data: &[u8],
    ) -> Result<(), StorageError> {
        let body: SnapshotBody = decode(ErrorSubject::Snapshot(Some(meta.signature())), data)?;
        let mut applied = self.applied.write().expect("state lock");
        applied.state = body.state;
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        applied.announce_quotas();
        Ok(())
    }
}

impl Applied {
    /// Wakes the quota watchers if a quota changed since they last heard.
    fn announce_quotas(&self) {
        let seq = self.state.quota_seq;
        self.quota_changes.send_if_modified(|seen| {
            let changed = *seen != seq;
            *seen = seq;
            changed
        });
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let started = std::time::Instant::now();
        // Only the copy happens under the lock, so applying entries pauses for the copy,
        // not for the encoding and the write.
        let (state, meta) = {
            let applied = self.applied.read().expect("state lock");
            let snapshot_id = match applied.last_applied {
                Some(id) => format!("{}-{}", id.leader_id, id.index),
                None => "empty".to_string(),
            };
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
                snapshot_id,
            };
            (applied.state.clone(), meta)
        };
        let copied = started.elapsed();
        let db = self.db.clone();
        let stored_meta = meta.clone();
        let data = tokio::task::spawn_blocking(move || {
            // JSON: a snapshot is read by members of every version (it is sent as bytes to
            // a follower that fell behind) and built off the write path.
            let data = Encoding::Json
                .encode(&SnapshotBody { state })
                .expect("the state serializes");
            put_snapshot(&db, &stored_meta, &data).map(|()| data)
        })
        .await
        .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))??;
        tracing::info!(
            index = meta.last_log_id.map(|l| l.index),
            bytes = data.len(),
            ms = started.elapsed().as_millis() as u64,
            locked_ms = copied.as_millis() as u64,
            "snapshot built"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        let applied = self.applied.read().expect("state lock");
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let start = std::time::Instant::now();
        let mut applied = self.applied.write().expect("state lock");
        let mut out = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => out.push(Response::default()),
                EntryPayload::Normal(req) => out.push(applied.state.apply(
                    &req,
                    entry.log_id.index,
                    entry.log_id.leader_id.term,
                )),
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m);
                    out.push(Response::default());
                }
            }
        }
        applied.announce_quotas();
        drop(applied);
        stages::since(&self.stages.apply, start);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        self.install(meta, &data)?;
        put_snapshot(&self.db, meta, &data)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(get_snapshot(&self.db)?.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
