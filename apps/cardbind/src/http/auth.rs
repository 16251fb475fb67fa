//! Who is calling: bearer JWTs (HS256 or RS256) and, for the `service`
//! clients that must sign, an HMAC signature over the request.
//!
//! ## Bearer token
//! `Authorization: Bearer <jwt>`; the signature algorithm is fixed by the
//! configuration (a token announcing another one, or `none`, is refused),
//! and `exp`, `iss`, `aud` and `sub` are required (`nbf` checked when
//! present); a token lives at most `auth.max_token_lifetime_seconds`
//! (`exp` from now, and from `iat` when present). Claims: `sub` (user id
//! for `user`, client id otherwise) and `role` (`user`, `service`,
//! `admin`, `auditor`).
//!
//! ## Request signature
//! Clients listed in `AuthSettings::request_signing` also send
//! `X-Cardbind-Signature: t=<unix seconds>,n=<nonce>,s=<hex>` where `s` is
//! HMAC-SHA256(secret, METHOD "\n" PATH?QUERY "\n" t "\n" n "\n"
//! hex(SHA-256(body))). A signature off by more than the window, or a nonce
//! seen before, is refused (`invalid_signature`). [`sign_request`] builds
//! the header value.

use std::sync::Arc;

use crate::mac::hmac_sha256_hex;
use cardbind_domain::{Actor, ErrorCode, Role, Timestamp};
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use poem::Request;
use poem_openapi::auth::Bearer;
use poem_openapi::SecurityScheme;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::edge::{RawBody, RequestMeta, SIGNATURE_HEADER};
use super::error::ApiError;
use super::Shared;
use crate::state::{AuthSettings, JwtKey};

/// Verifies bearer tokens with the configured key.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
    /// `auth.max_token_lifetime_seconds`; `None`: no bound.
    max_lifetime: Option<u64>,
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
    role: String,
    /// Read here only to refuse an `iss` that is not one string (RFC 7519
    /// §4.1.1): `jsonwebtoken` takes an array and accepts it when any of
    /// its members is the configured issuer.
    #[allow(dead_code)]
    iss: String,
    /// `exp` and `nbf` are read here to refuse a token whose times are
    /// not whole numbers of seconds that fit in a `u64` (`jsonwebtoken`
    /// rounds a fraction, `1.9e9`, and takes any other value of `nbf`, a
    /// string or `null`, for no `nbf` at all), and `exp` to bound the
    /// token's lifetime.
    #[serde(default, deserialize_with = "numeric_date")]
    exp: Option<u64>,
    #[serde(default, deserialize_with = "numeric_date")]
    #[allow(dead_code)]
    nbf: Option<u64>,
    /// Read to bound the token's lifetime (`exp - iat`) when it says when
    /// it was issued; a NumericDate like `exp`.
    #[serde(default, deserialize_with = "numeric_date")]
    iat: Option<u64>,
}

/// A NumericDate present in the claims: a whole number of seconds (`null`
/// is no date, and refused like any other non-number).
fn numeric_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    <u64 as serde::Deserialize>::deserialize(d).map(Some)
}

/// Whether the token's header names critical extensions (`crit`, RFC 7515
/// §4.1.11). This service understands none, so such a token is refused;
/// `jsonwebtoken` does not read `crit`. A header that does not decode is
/// left to `jsonwebtoken` to refuse.
fn names_critical_extensions(token: &str) -> bool {
    use base64::Engine;
    let head = token.split_once('.').map_or(token, |(head, _)| head);
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head)
        .ok()
        .and_then(|bytes| {
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes).ok()
        })
        .is_some_and(|header| header.contains_key("crit"))
}

impl Authenticator {
    /// Fails when the configured key cannot be used (e.g. a bad PEM).
    pub fn new(settings: &AuthSettings) -> Result<Authenticator, String> {
        let (key, alg) = match &settings.key {
            JwtKey::Hs256(secret) => {
                if secret.is_empty() {
                    return Err("auth: the HS256 secret is empty".into());
                }
                (DecodingKey::from_secret(secret), Algorithm::HS256)
            }
            JwtKey::Rs256Pem(pem) => (
                DecodingKey::from_rsa_pem(pem.as_bytes())
                    .map_err(|e| format!("auth: RS256 public key: {e}"))?,
                Algorithm::RS256,
            ),
        };
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.leeway = settings.leeway_seconds;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[settings.issuer.as_str()]);
        validation.set_audience(&[settings.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Ok(Authenticator {
            key,
            validation,
            max_lifetime: (settings.max_token_lifetime_seconds > 0)
                .then_some(settings.max_token_lifetime_seconds),
        })
    }

    /// The caller a token names, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<Actor, ApiError> {
        if names_critical_extensions(token) {
            return Err(ApiError::unauthenticated(
                "the bearer token names critical header extensions this service does not understand",
            ));
        }
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
                let message = match e.kind() {
                    ErrorKind::ExpiredSignature => "the bearer token has expired",
                    ErrorKind::ImmatureSignature => "the bearer token is not valid yet",
                    ErrorKind::InvalidIssuer => "the bearer token has the wrong issuer",
                    ErrorKind::InvalidAudience => "the bearer token has the wrong audience",
                    ErrorKind::InvalidAlgorithm => {
                        "the bearer token uses an algorithm this service does not accept"
                    }
                    ErrorKind::MissingRequiredClaim(_) => "the bearer token lacks a required claim",
                    ErrorKind::Json(_) => {
                        "the bearer token's header or claims are malformed or of the wrong type"
                    }
                    _ => "the bearer token is invalid",
                };
                ApiError::unauthenticated(message)
            })?;
        let claims = data.claims;
        let now = jsonwebtoken::get_current_timestamp();
        // Issued later than now (beyond the leeway): an issuer whose clock
        // or code is wrong, or a token minted to outlive the `iat` bound.
        if claims
            .iat
            .is_some_and(|iat| iat > now.saturating_add(self.validation.leeway))
        {
            return Err(ApiError::unauthenticated(
                "the bearer token is issued in the future (iat)",
            ));
        }
        if self.lives_too_long(&claims, now) {
            return Err(ApiError::unauthenticated(
                "the bearer token lives longer than this service accepts",
            ));
        }
        if !usable_subject(&claims.sub) {
            return Err(ApiError::unauthenticated(
                "the bearer token has an unusable subject",
            ));
        }
        let role = Role::parse(&claims.role).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Forbidden,
                "the bearer token's role is not one this service knows",
            )
        })?;
        Ok(Actor::new(claims.sub, role))
    }

    /// Whether a token outlives `auth.max_token_lifetime_seconds`: its
    /// `exp` lies further ahead of `now` than that, or, when it has an
    /// `iat`, further after its issue (each with the clock leeway: some
    /// issuers date `iat` a few minutes back). A token stolen from a log or
    /// a client then stops working within the bound whatever its issuer
    /// wrote; the `iat` rule keeps a token that was issued for too long
    /// refused for all its life, not only for its first part (a token
    /// without `iat` is bounded from now only: one issued for years works
    /// again in its last day).
    fn lives_too_long(&self, claims: &Claims, now: u64) -> bool {
        let (Some(max), Some(exp)) = (self.max_lifetime, claims.exp) else {
            return false;
        };
        exp.saturating_sub(now) > max.saturating_add(self.validation.leeway)
            || claims.iat.is_some_and(|iat| {
                exp.saturating_sub(iat) > max.saturating_add(self.validation.leeway)
            })
    }
}

/// The caller, once authenticated in this request (set by the idempotency
/// layer so that the security scheme does not verify twice).
#[derive(Clone, Debug)]
pub struct Authenticated(pub Actor);

/// `Authorization: Bearer <JWT>` (HS256 or RS256 as configured), with
/// claims `sub`, `role` (`user`, `service`, `admin`, `auditor`), `iss`,
/// `aud`, `exp` (and `nbf`, `iat`); a token lives at most the service's
/// `auth.max_token_lifetime_seconds` (a day by default). Service clients
/// registered for request signing must also send `X-Cardbind-Signature`
/// (see `requestSignature`).
#[derive(SecurityScheme)]
#[oai(
    rename = "bearerAuth",
    ty = "bearer",
    bearer_format = "JWT",
    checker = "check_bearer"
)]
pub struct BearerAuth(pub Actor);

async fn check_bearer(req: &Request, _bearer: Bearer) -> poem::Result<Actor> {
    authenticate(req).await.map_err(Into::into)
}

fn shared(req: &Request) -> Result<&Arc<Shared>, ApiError> {
    req.data::<Arc<Shared>>()
        .ok_or_else(|| ApiError::internal("shared state missing from the request"))
}

/// Authenticates the request: bearer token, then the signature when the
/// client must sign.
pub async fn authenticate(req: &Request) -> Result<Actor, ApiError> {
    if let Some(Authenticated(actor)) = req.data::<Authenticated>() {
        return Ok(actor.clone());
    }
    let shared = shared(req)?;
    let mut sent = req.headers().get_all("Authorization").iter();
    let header = sent
        .next()
        .ok_or_else(|| ApiError::unauthenticated("a bearer token is required"))?;
    // Two credentials: which one would count is not for the service to
    // guess (the first one was taken before).
    if sent.next().is_some() {
        return Err(ApiError::unauthenticated(
            "send one Authorization header, not several",
        ));
    }
    let header = header
        .to_str()
        .map_err(|_| ApiError::unauthenticated("the Authorization header is not visible ASCII"))?;
    let token = match header.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => return Err(ApiError::unauthenticated("a bearer token is required")),
    };
    let auth = shared
        .auth
        .as_ref()
        .map_err(|e| ApiError::internal(format!("authentication is not configured: {e}")))?;
    let actor = auth.verify(token)?;
    // A client listed for signing signs whatever role its token carries
    // (user subjects are end users, a namespace of their own).
    if actor.role != Role::User {
        let signing = &shared.state.auth.request_signing;
        if let Some(secret) = signing.get(&actor.subject.to_ascii_lowercase()) {
            // Before the signature is checked (and its nonce spent): which
            // copy would count is not for the service to guess. The other
            // repeated headers are refused below, as for every caller.
            if let Some(refusal) = super::edge::repeated_header(req, SIGNATURE_HEADER) {
                return Err(refusal);
            }
            verify_signature(shared, req, &actor.subject, &secret.0).await?;
        }
    }
    refuse_unaddressable_path(req, shared, &actor).await?;
    if let Some(refusal) = super::edge::repeated(req) {
        return Err(refusal);
    }
    Ok(actor)
}

/// The users a request names, percent-decoded as the operation reads
/// them: the path's `{user_id}` on the operations under
/// `/v1/users/{user_id}`, every `user_id` of the query of
/// `/v1/consents` (the one operation that takes the user there).
fn addressed_users(req: &Request) -> Vec<String> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let Some(route) = req.data::<RequestMeta>().and_then(|m| m.route.as_deref()) else {
        return Vec::new();
    };
    if route.starts_with(USER_PATHS) {
        return req
            .uri()
            .path()
            .split('/')
            .nth(3)
            .map(decode)
            .into_iter()
            .collect();
    }
    if route == CONSENTS {
        // Names and values decoded as the operation's query parser does.
        let query = req.uri().query().unwrap_or_default();
        return form_urlencoded::parse(query.as_bytes())
            .filter(|(name, _)| name == "user_id")
            .map(|(_, value)| value.into_owned())
            .collect();
    }
    Vec::new()
}

const USER_PATHS: &str = "/v1/users/{user_id}";
const CONSENTS: &str = "/v1/consents";

/// A user token naming another user (the path's user, or the consents'
/// `user_id`) is refused (`403 forbidden`, audited) as soon as the caller
/// is known, before the operation reads its parameters, headers and body:
/// what they hold, well-formed or not, does not change the answer, and a
/// malformed request tells the caller nothing about the rules of paths it
/// may not use.
async fn refuse_unaddressable_path(
    req: &Request,
    shared: &Shared,
    actor: &Actor,
) -> Result<(), ApiError> {
    let Some(user) = addressed_users(req)
        .into_iter()
        .find(|u| actor.may_address(u).is_err())
    else {
        return Ok(());
    };
    let meta = req.data::<RequestMeta>();
    let ctx = cardbind_usecases::RequestContext::new(
        actor.clone(),
        meta.map(|m| m.request_id.clone()).unwrap_or_default(),
        meta.and_then(|m| m.client_ip.clone()),
    );
    match shared
        .state
        .usecases
        .refuse_unaddressable(&ctx, &user)
        .await
    {
        Ok(()) => Ok(()),
        Err(denied) => Err(ApiError::new(denied.code, denied.message)),
    }
}

/// hex(HMAC-SHA256(secret, canonical request)).
fn signature_hex(
    secret: &[u8],
    method: &str,
    path_and_query: &str,
    t: i64,
    nonce: &str,
    body: &[u8],
) -> String {
    let body_hash = hex::encode(Sha256::digest(body));
    let canonical = format!(
        "{}\n{}\n{}\n{}\n{}",
        method.to_ascii_uppercase(),
        path_and_query,
        t,
        nonce,
        body_hash
    );
    hmac_sha256_hex(secret, canonical.as_bytes())
}

/// What the store keeps of a spent nonce: its HMAC-SHA256 under the
/// client's signing secret (hex), never the nonce as sent. A client may
/// put anything of its alphabet in it, a card number included (digits
/// alone are a valid nonce), and a plain hash of a card number can be
/// undone by trying the numbers of its BIN. A replay is signed under the
/// same secret, so it gives the same digest.
fn nonce_digest(secret: &[u8], nonce: &str) -> String {
    hmac_sha256_hex(
        secret,
        format!("cardbind request nonce\n{nonce}").as_bytes(),
    )
}

/// The `X-Cardbind-Signature` header value for a request:
/// `t=<t>,n=<nonce>,s=<hex HMAC-SHA256>` over
/// `METHOD\nPATH?QUERY\nt\nnonce\nhex(sha256(body))`.
pub fn sign_request(
    secret: &[u8],
    method: &str,
    path_and_query: &str,
    t: i64,
    nonce: &str,
    body: &[u8],
) -> String {
    format!(
        "t={t},n={nonce},s={}",
        signature_hex(secret, method, path_and_query, t, nonce, body)
    )
}

struct SignatureHeader<'a> {
    t: i64,
    nonce: &'a str,
    sig: &'a str,
}

/// Reads `t=<unix>,n=<nonce>,s=<64 hex>` exactly: each field once, in any
/// order, no spaces, `t` in its canonical decimal form (no sign, no
/// leading zero), `s` in hex of either case (the same bytes). Any other
/// spelling is refused, so that the text a proxy or a log sees is the one
/// that was verified.
fn parse_signature_header(v: &str) -> Option<SignatureHeader<'_>> {
    let (mut t, mut n, mut s) = (None, None, None);
    for part in v.split(',') {
        let (k, val) = part.split_once('=')?;
        let slot = match k {
            "t" => {
                let canonical = val.bytes().all(|b| b.is_ascii_digit())
                    && !val.is_empty()
                    && (val == "0" || !val.starts_with('0'));
                if !canonical || t.is_some() {
                    return None;
                }
                t = Some(val.parse::<i64>().ok()?);
                continue;
            }
            "n" => &mut n,
            "s" => &mut s,
            _ => return None,
        };
        if slot.replace(val).is_some() {
            return None;
        }
    }
    let nonce = n?;
    let nonce_ok = (8..=128).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
    let sig = s?;
    let sig_ok = sig.len() == 64 && sig.bytes().all(|b| b.is_ascii_hexdigit());
    (nonce_ok && sig_ok).then_some(SignatureHeader { t: t?, nonce, sig })
}

async fn verify_signature(
    shared: &Shared,
    req: &Request,
    client: &str,
    secret: &[u8],
) -> Result<(), ApiError> {
    let header = req.header(SIGNATURE_HEADER).ok_or_else(|| {
        ApiError::invalid_signature("this client must sign its requests (X-Cardbind-Signature)")
    })?;
    let parsed = parse_signature_header(header).ok_or_else(|| {
        ApiError::invalid_signature("X-Cardbind-Signature must be t=<unix>,n=<nonce>,s=<64 hex>")
    })?;
    let now: Timestamp = shared.state.clock.now();
    let window = shared.state.auth.signature_window_seconds.max(1);
    if now.unix_seconds().abs_diff(parsed.t) > window.unsigned_abs() {
        return Err(ApiError::invalid_signature(
            "the request signature is stale; check the clock",
        ));
    }
    // As the client sent them: routing answers a HEAD with the GET
    // operation, and the request's method then reads GET.
    let (method, path_and_query) = match req.data::<RequestMeta>() {
        Some(m) => (m.method.as_str(), m.path_and_query.as_str()),
        None => (
            req.method().as_str(),
            req.uri().path_and_query().map_or("/", |p| p.as_str()),
        ),
    };
    let body = req.data::<RawBody>().map_or(&[][..], |b| &b.0[..]);
    let expected = signature_hex(secret, method, path_and_query, parsed.t, parsed.nonce, body);
    let given = parsed.sig.to_ascii_lowercase();
    if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        return Err(ApiError::invalid_signature(
            "the request signature does not verify",
        ));
    }
    let fresh = shared
        .state
        .seen
        .mark(
            &format!("nonce:{client}"),
            &nonce_digest(secret, parsed.nonce),
            now,
            // Past the last second in which the signature is still fresh.
            now.plus_seconds(2 * window + 2),
        )
        .await
        .map_err(|e| {
            ApiError::new(
                ErrorCode::StorageUnavailable,
                "storage is unavailable; retry later",
            )
            .with_cause(e.to_string())
        })?;
    if !fresh {
        return Err(ApiError::invalid_signature(
            "this request nonce was used before",
        ));
    }
    Ok(())
}

/// Whether a bearer token's `sub` is one the service acts for: 1 to 128
/// visible ASCII characters (no spaces, no control characters).
pub fn usable_subject(sub: &str) -> bool {
    (1..=128).contains(&sub.len()) && sub.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_header_round_trip() {
        let v = sign_request(b"k", "post", "/v1/x?a=1", 100, "nonce-123", b"{}");
        let p = parse_signature_header(&v).unwrap();
        assert_eq!((p.t, p.nonce), (100, "nonce-123"));
        assert_eq!(
            p.sig,
            signature_hex(b"k", "POST", "/v1/x?a=1", 100, "nonce-123", b"{}")
        );
        assert_ne!(
            p.sig,
            signature_hex(b"k", "POST", "/v1/x?a=2", 100, "nonce-123", b"{}")
        );
        assert!(parse_signature_header("t=1,n=short,s=00").is_none());
    }

    /// Only the documented spelling is read: each field once, no spaces,
    /// `t` without a sign or a leading zero (before, the last copy of a
    /// field counted and `t=+1700000000` was taken).
    #[test]
    fn a_signature_header_in_another_spelling_is_refused() {
        let sig = "ab".repeat(32);
        let ok = format!("t=1700000000,n=nonce-123,s={sig}");
        assert!(parse_signature_header(&ok).is_some());
        let reordered = format!("s={sig},n=nonce-123,t=1700000000");
        assert!(parse_signature_header(&reordered).is_some());
        for bad in [
            format!("t=+1700000000,n=nonce-123,s={sig}"),
            format!("t=01700000000,n=nonce-123,s={sig}"),
            format!("t=-5,n=nonce-123,s={sig}"),
            format!("t=,n=nonce-123,s={sig}"),
            format!("t=1,t=1700000000,n=nonce-123,s={sig}"),
            format!("t=1700000000,n=zzzzzzzzzz,n=nonce-123,s={sig}"),
            format!("t=1700000000,n=nonce-123,s={sig},s={sig}"),
            format!("t=1700000000, n=nonce-123, s={sig}"),
            format!(" t=1700000000,n=nonce-123,s={sig}"),
            format!("t=1700000000,n=nonce-123,s={sig},"),
            "t=1700000000,n=nonce-123".to_owned(),
        ] {
            assert!(parse_signature_header(&bad).is_none(), "{bad}");
        }
    }
}
