//! A panic in a handler becomes a 500 envelope.

use async_trait::async_trait;
use cardbind_domain::BindingId;
use cardbind_ports::store::{ReviewEntry, ReviewQueue};
use cardbind_ports::StoreError;

use super::*;

/// A review queue that panics when listed.
struct PanickingQueue;

#[async_trait]
impl ReviewQueue for PanickingQueue {
    async fn add(&self, _e: &ReviewEntry) -> Result<(), StoreError> {
        Ok(())
    }
    async fn get(&self, _b: &BindingId) -> Result<Option<ReviewEntry>, StoreError> {
        Ok(None)
    }
    async fn remove(&self, _b: &BindingId, _upto: u64) -> Result<(), StoreError> {
        Ok(())
    }
    async fn list(
        &self,
        _after: Option<BindingId>,
        _limit: u32,
    ) -> Result<Vec<ReviewEntry>, StoreError> {
        panic!("review queue exploded while holding 4111111111111111")
    }
}

#[tokio::test]
async fn panics_become_a_500_envelope() {
    let (mut state, _store, _clock) = state_with(Options::default());
    let mut ports = state.usecases.ports().clone();
    ports.review = Arc::new(PanickingQueue);
    state.usecases = cardbind_usecases::UseCases::new(ports, Default::default());
    let client = poem::test::TestClient::new(cardbind::http::app(state));
    let resp = client
        .get("/v1/admin/reviews")
        .header("Authorization", bearer("ops", "admin"))
        .send()
        .await;
    resp.assert_status(StatusCode::INTERNAL_SERVER_ERROR);
    assert_security_headers(&resp);
    let v = assert_error(resp, 500, "internal_error").await;
    assert_eq!(v["error"]["message"], "internal error");
    assert!(!v.to_string().contains("exploded"));
    // the server keeps serving
    client.get("/healthz").send().await.assert_status_is_ok();
}
