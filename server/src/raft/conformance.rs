//! openraft's own storage conformance suite (`openraft::testing::Suite`)
//! run against Weft's log store and state machine, on sled in a temporary
//! directory: vote, log reads, appends, truncation, purges, membership,
//! snapshots and their transfer, as openraft expects them to behave.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

use super::{open_storage, LogStore, StateMachine, TypeConfig};
use crate::store::StateStore;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (log, snapshots) =
            open_storage(&dir.path().join("raft"), Default::default()).expect("sled opens in a fresh directory");
        let machine = StateMachine::open(StateStore::new(), snapshots, Default::default())?;
        Ok((dir, log, machine))
    }
}

#[test]
fn weft_storage_passes_openraft_s_suite() {
    Suite::test_all(Builder).expect("openraft's storage suite");
}
