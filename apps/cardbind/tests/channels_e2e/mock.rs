//! The mock channel, through the same service as the real channels.

use cardbind_channels::mock::{mock_notification, MOCK_SIGNATURE_HEADER};

use super::*;

#[tokio::test]
async fn mock_channel_through_the_same_service() {
    let s = start().await;
    let user = "mock-user-1";
    // No channel named: the configured default (mock, instant).
    let r = s.bind(user, VISA, None).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let v = r.json();
    assert_eq!(
        (v["status"].as_str(), v["channel"].as_str()),
        (Some("active"), Some("mock"))
    );
    // A redirect card, signed by a mock notification.
    let (id, _) = s.bind_redirect(user, MOCK_REDIRECT_CARD, "mock").await;
    let n = mock_notification(MOCK_SECRET, "mock-ev-1", &id, "signed", "mock-agreement-1");
    let headers: Vec<(String, String)> = n.headers.clone().into_iter().collect();
    let r = s.notify("mock", &headers, n.body.clone()).await;
    assert!((200..300).contains(&r.status), "{} {}", r.status, r.text);
    assert_eq!(s.card(user, &id).await["status"], "active");
    // Wrong secret: refused.
    let bad = mock_notification("not-the-secret", "mock-ev-2", &id, "terminated", "");
    let headers: Vec<(String, String)> = bad.headers.clone().into_iter().collect();
    assert!(headers.iter().any(|(k, _)| k == MOCK_SIGNATURE_HEADER));
    let r = s.notify("mock", &headers, bad.body).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "invalid_signature")
    );
    assert_eq!(s.card(user, &id).await["status"], "active");
    // The right secret over a message that cannot be read: 400, not a
    // forgery (the operator looks at the sender, not at the keys).
    let unreadable = mock_notification(MOCK_SECRET, "", &id, "terminated", "");
    let headers: Vec<(String, String)> = unreadable.headers.clone().into_iter().collect();
    let r = s.notify("mock", &headers, unreadable.body).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "invalid_request"),
        "{}",
        r.text
    );
    assert_eq!(s.card(user, &id).await["status"], "active");
    let r = s.unbind(user, &id).await;
    assert_eq!(r.json()["status"], "inactive");
    // Channels the gateways never heard of are not involved.
    assert_eq!(s.alipay.request_count(), 0);
    assert_eq!(s.wechat.request_count(), 0);
}
