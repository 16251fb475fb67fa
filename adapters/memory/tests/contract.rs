//! The storage contract suite (`cardbind_ports::testkit`) on the in-memory
//! adapter: every check is a test of the same name here. A fresh
//! `MemoryStore` per test gives the isolation the suite asks for.

use cardbind_memory::MemoryStore;
use cardbind_ports::testkit::Stores;

cardbind_ports::contract_suite!(|| async { Stores::all_in_one(MemoryStore::new()) });
