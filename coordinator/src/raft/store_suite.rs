//! openraft's own storage test suite (`openraft::testing::Suite`), run against the redb
//! store: log reads and appends, truncation and purging, votes, committed index, membership
//! from log and snapshot, applying entries, and building, installing and reading back a
//! snapshot. Each case gets a fresh database in its own directory.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
};

use openraft::testing::{StoreBuilder, Suite};

use super::{
    StorageError, TypeConfig,
    store::{self, LogStore, StateMachineStore},
};
use crate::stages::Stages;

/// Removes a case's directory when the case is done.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Redb;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, Dir> for Redb {
    async fn build(&self) -> Result<(Dir, LogStore, StateMachineStore), StorageError> {
        static CASE: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rdmaq-store-suite-{}-{}",
            std::process::id(),
            CASE.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let db = store::open(&dir).expect("a fresh database in the temp dir");
        let sm = StateMachineStore::new(db.clone(), Stages::default())?;
        Ok((Dir(dir), LogStore::new(db, Stages::default()), sm))
    }
}

#[test]
fn openraft_storage_suite_passes_on_redb() {
    Suite::test_all(Redb).expect("openraft's storage suite");
}
