//! The storage contract suite (`cardbind_ports::testkit`) on the in-memory
//! adapter. A fresh `MemoryStore` per test gives the isolation it asks for.

use cardbind_memory::MemoryStore;
use cardbind_ports::testkit::Stores;

cardbind_ports::contract_suite!(|| async { Stores::all_in_one(MemoryStore::new()) });
