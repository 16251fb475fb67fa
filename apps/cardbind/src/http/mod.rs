//! # The HTTP edge
//!
//! An OpenAPI 3 API (poem-openapi) over the use cases
//! (`cardbind-usecases`). The spec is
//! generated from this code ([`api_spec_json`]), committed as
//! `docs/openapi.json` and checked by a test.
//!
//! ## Layout
//! * [`ops`]: the operations, one method each, grouped by tag (cards,
//!   admin, audit, channels, family, meta). Handlers only translate: request DTO →
//!   domain request, use case, view → response DTO.
//! * [`dto`]: request bodies and response types; [`body`]: the JSON body
//!   reader (nesting limit, field-level parse errors without values).
//! * [`error`]: the single `ErrorCode` → status mapping and the envelope.
//! * [`auth`]: bearer JWTs and request signatures; [`idempotency`]: stored
//!   and replayed answers of the writes under an `Idempotency-Key` (binds
//!   and shares).
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

pub mod auth;
pub mod body;
pub mod dto;
pub mod edge;
pub mod error;
pub mod formats;
pub mod idempotency;
pub mod metrics;
pub mod ops;
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

pub use auth::{sign_request, Authenticator};
pub use edge::SIGNATURE_HEADER;
pub use spec::api_spec_json;

use cardbind_usecases::{RequestContext, UseCases};

use crate::state::AppState;

/// What the HTTP layer shares between requests (request data).
pub struct Shared {
    pub state: AppState,
    /// The token verifier, or why the auth settings are unusable (then
    /// every authenticated operation answers 500 and the cause is logged).
    pub auth: Result<Authenticator, String>,
    pub metrics: metrics::HttpMetrics,
    /// `/readyz`'s check, shared by concurrent probes.
    pub readiness: ops::meta::ReadinessProbe,
}

/// Per-request context for handlers: the shared state, the request id and
/// where the request comes from.
pub struct Cx {
    pub shared: Arc<Shared>,
    pub request_id: String,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    /// Set by the idempotency layer on the operations it wraps.
    pub bind_key: Option<String>,
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
            // Whole: the consent masks it before it cuts it to its length.
            user_agent: req.header("User-Agent").map(str::to_owned),
            bind_key: req.data::<idempotency::BindKey>().map(|k| k.0.clone()),
            error_code: meta.map(|m| m.error_code.clone()).unwrap_or_default(),
        })
    }
}

impl Cx {
    /// Who is asking, for the use cases.
    pub fn context(&self, actor: &cardbind_domain::Actor) -> RequestContext {
        RequestContext::new(
            actor.clone(),
            self.request_id.clone(),
            self.client_ip.clone(),
        )
    }

    pub fn usecases(&self) -> &UseCases {
        &self.shared.state.usecases
    }

    pub fn now(&self) -> cardbind_domain::Timestamp {
        self.shared.state.clock.now()
    }

    /// A parameter or body value that did not parse, answered as the
    /// operation's 400 (every operation with parameters declares it).
    pub fn param<T, R>(&self, parsed: Result<T, cardbind_domain::Invalid>) -> Result<T, R>
    where
        R: error::Declares<cardbind_domain::error::class::BadRequest>,
    {
        parsed.map_err(|invalid| {
            let e = error::ApiError::from(invalid);
            self.error_code.set(e.code);
            R::declared(error::envelope_of(&e, &self.request_id), None)
        })
    }

    /// The readiness probe's 503: which dependency did not answer (the
    /// causes are logged, never sent).
    pub fn not_ready<R>(&self, not_ready: &cardbind_usecases::readiness::NotReady) -> R
    where
        R: error::Declares<cardbind_domain::error::class::Unavailable>,
    {
        let code = if not_ready.store.is_some() {
            cardbind_domain::ErrorCode::StorageUnavailable
        } else {
            cardbind_domain::ErrorCode::KeyServiceUnavailable
        };
        tracing::warn!(
            request_id = %self.request_id,
            store = not_ready.store.as_deref().unwrap_or("ok"),
            keys = not_ready.keys.as_deref().unwrap_or("ok"),
            "not ready"
        );
        self.error_code.set(code);
        let e = error::ApiError::new(code, "a dependency is unavailable; retry later");
        R::declared(error::envelope_of(&e, &self.request_id), None)
    }

    /// The code the answer was refused with, if it was.
    pub fn refused_with(&self) -> Option<cardbind_domain::ErrorCode> {
        self.error_code.get()
    }

    /// The one skeleton every operation answers through: the work's value,
    /// or its refusal as the operation's declared error response (the code
    /// noted for the edge's error metric). Which statuses a refusal can take
    /// is checked when this compiles (see [`error::Respond`]).
    ///
    /// The work runs boxed: a use case's future is kilobytes (a bind's is
    /// about 4 KiB) and, held inline, it would make every future around it
    /// as large, each copied again by every middleware layer that boxes its
    /// inner call.
    pub async fn answer<T, E, R>(&self, work: impl Future<Output = Result<T, E>>) -> Result<T, R>
    where
        E: error::Respond<R>,
    {
        Box::pin(work).await.map_err(|e| {
            let (response, code) = e.respond(&self.request_id);
            self.error_code.set(code);
            response
        })
    }
}

type Apis = (
    ops::cards::CardsApi,
    ops::family::FamilyApi,
    ops::admin::AdminApi,
    ops::records::AuditApi,
    ops::channels::ChannelsApi,
    ops::meta::MetaApi,
);

fn service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            ops::cards::CardsApi,
            ops::family::FamilyApi,
            ops::admin::AdminApi,
            ops::records::AuditApi,
            ops::channels::ChannelsApi,
            ops::meta::MetaApi,
        ),
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
    let known: Vec<&'static str> = ops::OPERATION_IDS.to_vec();
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
        ("/docs/".into(), vec!["get"]),
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
        readiness: ops::meta::ReadinessProbe::default(),
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
            poem::get(poem::endpoint::make_sync(move |_| {
                poem::Response::builder()
                    .content_type("application/json")
                    .body(spec.as_str().to_owned())
            })),
        )
        .at(
            "/docs",
            poem::get(poem::endpoint::make_sync(move |_| Html(docs_html.clone()))),
        )
        // The address people also type.
        .at(
            "/docs/",
            poem::get(poem::endpoint::make_sync(|_| {
                poem::web::Redirect::permanent("/docs")
            })),
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
    serve_limited(
        listener,
        state,
        server::ConnectionLimits::default(),
        shutdown,
    )
    .await
}

/// [`serve`] with the connection limits `limits`.
pub async fn serve_limited(
    listener: std::net::TcpListener,
    state: AppState,
    limits: server::ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let acceptor = TcpAcceptor::from_std(listener)?;
    let registry = state.metrics.clone();
    server::run(
        acceptor,
        app(state),
        limits,
        &registry,
        shutdown,
        Duration::from_secs(30),
    )
    .await
}
