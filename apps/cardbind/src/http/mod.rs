//! # The HTTP edge
//!
//! An OpenAPI 3 API (poem-openapi) over the use cases of
//! [`CardService`](cardbind_ports::service::CardService). The spec is
//! generated from this code ([`api_spec_json`]), committed as
//! `docs/openapi.json` and checked by a test.
//!
//! ## Layout
//! * [`api`]: the operations, one method each, grouped by tag (cards,
//!   admin, audit, channels, meta). Handlers only translate: request DTO →
//!   domain request, use case, view → response DTO.
//! * [`dto`]: request bodies and response types; [`body`]: the JSON body
//!   reader (nesting limit, field-level parse errors without values).
//! * [`error`]: the single `ErrorCode` → status mapping and the envelope.
//! * [`auth`]: bearer JWTs and request signatures; [`idempotency`]: stored
//!   and replayed bind responses.
//! * [`edge`]: the outermost middleware (request id, body limit, error
//!   rendering, security headers, metrics, logs); [`metrics`].
//! * [`server`]: the connection layer under it (connection limit, header
//!   read and keep-alive timeouts, header size).
//!
//! ## Invariants
//! * No response ever holds a full card number, an ID number or a phone
//!   number; no log line holds a body, a query string or a credential.
//! * Every status an operation can answer is declared in its response
//!   types, so it is in the spec.
//! * Metric labels are route templates and codes, never concrete paths.

pub mod api;
pub mod auth;
pub mod body;
pub mod dto;
pub mod edge;
pub mod error;
pub mod idempotency;
pub mod metrics;
pub mod params;
pub mod server;
pub mod spec;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use poem::listener::TcpAcceptor;
use poem::middleware::CatchPanic;
use poem::web::Html;
use poem::{Endpoint, EndpointExt, Request, RequestBody, Route};
use poem_openapi::OpenApiService;
use serde_json::Value;

pub use auth::{sign_request, Authenticator, SIGNATURE_HEADER};
pub use spec::api_spec_json;

use crate::state::AppState;

/// What the HTTP layer shares between requests (request data).
pub struct Shared {
    pub state: AppState,
    /// The token verifier, or why the auth settings are unusable (then
    /// every authenticated operation answers 500 and the cause is logged).
    pub auth: Result<Authenticator, String>,
    pub metrics: metrics::HttpMetrics,
}

/// Per-request context for handlers: the shared state, the request id and
/// where the request comes from.
pub struct Cx {
    pub shared: Arc<Shared>,
    pub request_id: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    error_code: edge::ErrorCodeSlot,
}

impl<'a> poem::FromRequest<'a> for Cx {
    async fn from_request(req: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        let shared = req
            .data::<Arc<Shared>>()
            .cloned()
            .ok_or_else(|| error::ApiError::internal("shared state missing from the request"))?;
        let meta = req.data::<edge::RequestMeta>();
        Ok(Cx {
            shared,
            request_id: meta.map(|m| m.request_id.clone()).unwrap_or_default(),
            client_ip: meta.and_then(|m| m.client_ip.clone()),
            user_agent: req
                .header("User-Agent")
                .map(|s| s.chars().take(512).collect()),
            error_code: meta.map(|m| m.error_code.clone()).unwrap_or_default(),
        })
    }
}

impl Cx {
    pub fn context(
        &self,
        actor: &cardbind_domain::Actor,
    ) -> cardbind_ports::service::RequestContext {
        cardbind_ports::service::RequestContext {
            actor: actor.clone(),
            request_id: self.request_id.clone(),
            client_ip: self.client_ip.clone(),
        }
    }

    /// A card as shown: masked, with what the BIN table in use says about
    /// its stored BIN.
    pub fn card(&self, v: &cardbind_ports::service::CardView) -> dto::Card {
        let entry = self.shared.state.bins.directory.lookup(&v.binding.card.bin);
        dto::Card::from(v).with_facts(dto::IssuerFacts::of(entry.as_ref()))
    }

    /// A page of cards as shown (see [`Cx::card`]).
    pub fn card_list(&self, p: &cardbind_ports::service::CardPage) -> dto::CardList {
        dto::CardList {
            cards: p.cards.iter().map(|v| self.card(v)).collect(),
            next_after: p.next.as_ref().map(|b| b.as_str().to_owned()),
        }
    }

    /// Turns a refusal into the operation's error enum (and notes its code
    /// for the edge's error metric).
    pub fn fail<E: From<error::Failure>>(&self, e: impl Into<error::ApiError>) -> E {
        let error = e.into();
        self.error_code.set(error.code);
        E::from(error::Failure {
            error,
            request_id: self.request_id.clone(),
        })
    }
}

type Apis = (
    api::CardsApi,
    api::AdminApi,
    api::AuditApi,
    api::ChannelsApi,
    api::MetaApi,
);

fn service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (api::CardsApi, api::AdminApi, api::AuditApi, api::ChannelsApi, api::MetaApi),
        "cardbind",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Binds users' bank cards through payment channels (Alipay, WeChat Pay, a mock). \
         Card data is sealed at rest and never returned: cards are shown masked (brand, BIN, last four). \
         Errors are `{\"error\":{\"code\",\"message\",\"field\",\"request_id\"}}` with stable codes (see `ErrorBody`). \
         Every response carries `X-Request-Id`.",
    )
    .extra_response_header::<String, _>(
        poem_openapi::ExtraHeader::new("X-Request-Id")
            .description("The request id (the caller's if it sent a sane one, else a new UUID)."),
    )
}

/// operationId → path template, from the spec.
fn operation_templates(spec: &str) -> HashMap<&'static str, String> {
    let mut out = HashMap::new();
    let Ok(doc) = serde_json::from_str::<Value>(spec) else {
        return out;
    };
    let known: Vec<&'static str> = api::OPERATION_IDS.to_vec();
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        for (template, ops) in paths {
            for op in ops.as_object().into_iter().flat_map(|o| o.values()) {
                if let Some(id) = op.get("operationId").and_then(Value::as_str) {
                    if let Some(k) = known.iter().find(|k| **k == id) {
                        out.insert(*k, template.clone());
                    }
                }
            }
        }
    }
    out
}

/// Every route the service serves with its methods, from the spec (plus
/// the spec and the docs page themselves).
fn allow_table(spec: &str) -> edge::AllowTable {
    let mut routes: Vec<(String, Vec<&str>)> = vec![
        ("/openapi.json".into(), vec!["get"]),
        ("/docs".into(), vec!["get"]),
    ];
    if let Ok(Value::Object(doc)) = serde_json::from_str::<Value>(spec) {
        if let Some(Value::Object(paths)) = doc.get("paths") {
            for (template, ops) in paths {
                let methods = ops
                    .as_object()
                    .into_iter()
                    .flat_map(|o| o.keys())
                    .filter_map(|m| HTTP_METHODS.iter().find(|h| **h == m.as_str()).copied())
                    .collect();
                routes.push((template.clone(), methods));
            }
        }
    }
    edge::AllowTable::new(routes)
}

const HTTP_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Every route with its middleware, ready to serve.
pub fn app(state: AppState) -> impl Endpoint<Output = poem::Response> {
    let auth = Authenticator::new(&state.auth);
    if let Err(e) = &auth {
        tracing::error!(error = %e, "authentication settings are unusable; authenticated requests will fail");
    }
    let shared = Arc::new(Shared {
        state,
        auth,
        metrics: metrics::HttpMetrics::new(),
    });
    let spec = api_spec_json();
    let svc = service();
    let docs_html = svc.swagger_ui_html().replace(&svc.spec(), &spec);
    let templates = Arc::new(operation_templates(&spec));
    let allow = Arc::new(allow_table(&spec));
    let spec = Arc::new(spec);

    Route::new()
        .at(
            "/openapi.json",
            poem::endpoint::make_sync(move |_| {
                poem::Response::builder()
                    .content_type("application/json")
                    .body(spec.as_str().to_owned())
            }),
        )
        .at(
            "/docs",
            poem::endpoint::make_sync(move |_| Html(docs_html.clone())),
        )
        .nest("/", svc)
        .with(CatchPanic::new().with_handler(|_| edge::panicked_response()))
        .data(shared.clone())
        .with(edge::Edge {
            shared,
            templates,
            allow,
        })
}

/// Serves [`app`] on a bound listener until `shutdown` resolves, then stops
/// accepting and lets in-flight requests finish (30 s at most), with the
/// default connection limits.
pub async fn serve(
    listener: std::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let acceptor = TcpAcceptor::from_std(listener)?;
    let registry = state.metrics.clone();
    server::run(
        acceptor,
        app(state),
        server::ConnectionLimits::default(),
        &registry,
        shutdown,
        Duration::from_secs(30),
    )
    .await
}
