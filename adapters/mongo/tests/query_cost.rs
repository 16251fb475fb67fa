//! What one query costs on the server behind `CARDBIND_TEST_MONGODB_URI`
//! as a collection grows: the evidence for the adapter's rule "point reads
//! by string `_id` only" (see the crate docs, "Cost"). Ignored by default;
//! run with
//!
//! ```sh
//! bash scripts/test-services.sh cargo test -p cardbind-mongo --test query_cost -- --ignored --nocapture
//! ```
//!
//! It prints, for each collection size, the median time of each query
//! shape: a miss by string `_id`, by numeric `_id`, by another field, by
//! `_id` plus another field (misses are the common case: a new user, a new
//! card, the link above a chain's head), a chain-head read
//! (`k = …` sorted by `n` desc, limit 1) and an insert. On FerretDB 1.24
//! (SQLite) only the string `_id` read and the insert stay flat.

// Test code: a failed expectation is a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};

const SAMPLES: usize = 15;

async fn median<F, Fut>(mut f: F) -> Duration
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut t = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let start = Instant::now();
        f(i).await;
        t.push(start.elapsed());
    }
    t.sort();
    t[SAMPLES / 2]
}

#[tokio::test]
#[ignore = "measurement; run by hand against FerretDB"]
async fn query_cost_by_collection_size() {
    let Some(uri) = common::uri() else { return };
    let db = common::raw_db(&uri, &common::fresh_db_name()).await;
    let c = db.collection::<Document>("cost");
    c.create_index(
        mongodb::IndexModel::builder()
            .keys(doc! { "k": 1, "n": -1 })
            .build(),
    )
    .await
    .expect("index");
    let mut have = 0i64;
    println!(
        "{:>6} | {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  (median ms)",
        "docs", "_id str", "_id int", "k=v", "k sort", "_id+v", "insert"
    );
    for size in [100i64, 1_000, 5_000, 20_000] {
        let batch: Vec<Document> = (have..size)
            .map(|i| doc! { "_id": format!("u{}#{}", i / 4, i % 4), "seq": i, "k": format!("u{}", i / 4), "n": i % 4, "v": 1 })
            .collect();
        for chunk in batch.chunks(1000) {
            c.insert_many(chunk.to_vec()).await.expect("fill");
        }
        have = size;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let id_str = median(|i| {
            let c = c.clone();
            async move {
                c.find_one(doc! { "_id": format!("u{}#9", i) })
                    .await
                    .expect("find");
            }
        })
        .await;
        // A numeric `_id` equality (as the audit log had): not pushed down.
        let ci = db.collection::<Document>("cost_int");
        if ci.estimated_document_count().await.expect("count") < size as u64 {
            let have_int = ci.estimated_document_count().await.expect("count") as i64;
            let b: Vec<Document> = (have_int..size).map(|i| doc! { "_id": i }).collect();
            for chunk in b.chunks(1000) {
                ci.insert_many(chunk.to_vec()).await.expect("fill");
            }
        }
        let id_int = median(|i| {
            let ci = ci.clone();
            async move {
                ci.find_one(doc! { "_id": size + i as i64 })
                    .await
                    .expect("find");
            }
        })
        .await;
        let eq = median(|i| {
            let c = c.clone();
            async move {
                c.find_one(doc! { "k": format!("nobody{i}") })
                    .await
                    .expect("find");
            }
        })
        .await;
        let sorted = median(|i| {
            let c = c.clone();
            async move {
                c.find_one(doc! { "k": format!("u{}", i * 7 % (size as usize / 4)) })
                    .sort(doc! { "n": -1 })
                    .await
                    .expect("find");
            }
        })
        .await;
        let two = median(|i| {
            let c = c.clone();
            async move {
                c.find_one(doc! { "_id": format!("u{}#9", i), "v": 1 })
                    .await
                    .expect("find");
            }
        })
        .await;
        let ins = median(|i| {
            let c = c.clone();
            async move {
                c.insert_one(doc! { "_id": format!("new{size}-{i}"), "k": "new", "n": 0 })
                    .await
                    .expect("insert");
            }
        })
        .await;
        println!(
            "{size:>6} | {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            ms(id_str),
            ms(id_int),
            ms(eq),
            ms(sorted),
            ms(two),
            ms(ins)
        );
    }
}
