//! The BIN table store contract on the in-memory adapter.

use std::sync::Arc;

use cardbind_memory::MemoryBinTableStore;

#[tokio::test]
async fn the_memory_bin_table_store_keeps_the_contract() {
    cardbind_ports::bins::testkit::run_all(Arc::new(MemoryBinTableStore::new())).await;
}
