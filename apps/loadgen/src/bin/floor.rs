//! The framework floor: a bare poem-openapi endpoint of the bind
//! operation's shape — the same path, the same JSON body (parsed into a
//! struct of the same fields), the same headers read, an answer of the same
//! size — doing no work. The load generator measures it in the same run as
//! the real service, so that the service's cost is read against what the
//! framework and the machine cost alone.
//!
//! `floor --listen 127.0.0.1:0` prints `floor listening on http://ADDR`.

/// The service's allocator, so that the floor is measured on equal terms.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{Route, Server};
use poem_openapi::param::{Header, Path};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, OpenApiService};

#[derive(Object)]
struct Consent {
    text_version: String,
    text_sha256: String,
}

#[derive(Object)]
struct BindBody {
    card_number: String,
    expiry_month: u32,
    expiry_year: u32,
    cvv: Option<String>,
    holder_name: String,
    id_number: String,
    phone: String,
    channel: Option<String>,
    consent: Consent,
}

#[derive(Object)]
struct Card {
    id: String,
    user_id: String,
    status: String,
    brand: String,
    bin: String,
    last4: String,
    expiry_month: u32,
    expiry_year: u32,
    channel: String,
    is_default: bool,
    created_at: String,
    updated_at: String,
}

#[derive(ApiResponse)]
enum BindResponse {
    #[oai(status = 201)]
    Created(Json<Card>),
}

struct Floor;

#[OpenApi]
impl Floor {
    #[oai(
        path = "/v1/users/:user_id/cards",
        method = "post",
        operation_id = "bindCard"
    )]
    async fn bind(
        &self,
        user_id: Path<String>,
        #[oai(name = "Authorization")] _auth: Header<String>,
        #[oai(name = "Idempotency-Key")] key: Header<String>,
        body: Json<BindBody>,
    ) -> BindResponse {
        let b = body.0;
        let digits = b.card_number.len();
        BindResponse::Created(Json(Card {
            id: format!("{:0>36}", key.0.len()),
            user_id: user_id.0,
            status: "active".to_owned(),
            brand: "visa".to_owned(),
            bin: b.card_number.chars().take(6).collect(),
            last4: b
                .card_number
                .chars()
                .skip(digits.saturating_sub(4))
                .collect(),
            expiry_month: b.expiry_month,
            expiry_year: b.expiry_year,
            channel: b.channel.unwrap_or_else(|| "mock".to_owned()),
            is_default: b.consent.text_version.len() + b.consent.text_sha256.len() > 0,
            created_at: "2026-12-01T00:00:00Z".to_owned(),
            updated_at: "2026-12-01T00:00:00Z".to_owned(),
        }))
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut listen = "127.0.0.1:0".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--listen" {
            listen = args.next().unwrap_or(listen);
        }
    }
    let api = OpenApiService::new(Floor, "floor", "1");
    let acceptor = TcpListener::bind(listen).into_acceptor().await?;
    for addr in acceptor.local_addr() {
        println!("floor listening on {}", addr.0);
    }
    Server::new_with_acceptor(acceptor)
        .run(Route::new().nest("/", api))
        .await
}
