//! The master key in AWS KMS.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use cardbind_ports::error::KeyError;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::datakey::DataKey;
use crate::master::MasterKey;

/// The encryption-context entry that binds each KMS-wrapped key to its
/// owner: a branch key version (`@branch:0000000n`), or the owner of a data
/// key stored before branch keys. Every `GenerateDataKey`, `Decrypt` and
/// `ReEncrypt` carries it.
pub const OWNER_CONTEXT_KEY: &str = "cardbind:owner";

/// Static credentials (tests against a KMS emulator, or where no credential
/// chain exists). `Debug` hides the secret.
#[derive(Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// How to reach the KMS key.
#[derive(Clone, Debug)]
pub struct KmsConfig {
    /// Key id, key ARN, alias name (`alias/…`) or alias ARN.
    pub key_id: String,
    pub region: String,
    /// Endpoint override (a KMS emulator, a VPC endpoint).
    pub endpoint: Option<String>,
    /// `None`: the default AWS credential chain (environment, profile, web
    /// identity, instance/container role).
    pub credentials: Option<StaticCredentials>,
    /// Bound on every KMS call, retries included. Default 5 s.
    pub timeout: Duration,
    /// Attempts per call (1 = no retry). Default 2.
    pub max_attempts: u32,
}

impl KmsConfig {
    pub fn new(key_id: impl Into<String>, region: impl Into<String>) -> KmsConfig {
        KmsConfig {
            key_id: key_id.into(),
            region: region.into(),
            endpoint: None,
            credentials: None,
            timeout: Duration::from_secs(5),
            max_attempts: 2,
        }
    }
}

/// KMS operations, as the metrics' `op` label names them.
const OPS: [&str; 4] = ["generate_data_key", "decrypt", "re_encrypt", "describe_key"];

/// How a KMS call ended, as the metrics' `outcome` label names it: `ok`;
/// `refused` (a [`KeyError::Refused`]: the key is disabled, missing or
/// denied to us, or a ciphertext does not open); `unavailable` (a
/// [`KeyError::Unavailable`]: no connection, a timeout, throttling, a KMS
/// 5xx).
const OUTCOMES: [&str; 3] = ["ok", "refused", "unavailable"];

/// Prometheus metrics of the KMS calls made: the counter
/// `cardbind_kms_calls_total{op, outcome}` (`op`: `generate_data_key`,
/// `decrypt`, `re_encrypt`, `describe_key`; `outcome`: `ok`, `refused`,
/// `unavailable`, each counted when the call ends, or as `unavailable`
/// when its caller gives up on it first; every series exported at 0 from
/// the start) and the histogram
/// `cardbind_kms_call_duration_seconds{op}` (the SDK's retries
/// included). Cheap to clone; clones share the collectors, so one value
/// can be given to several [`KmsMasterKey`]s.
#[derive(Clone)]
pub struct KmsMetrics {
    calls: IntCounterVec,
    duration: HistogramVec,
}

impl fmt::Debug for KmsMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmsMetrics")
            .field("total", &self.total())
            .finish()
    }
}

impl KmsMetrics {
    /// The collectors, not yet registered anywhere.
    pub fn new() -> Result<KmsMetrics, prometheus::Error> {
        let calls = IntCounterVec::new(
            Opts::new(
                "cardbind_kms_calls_total",
                "Calls made to AWS KMS, by operation and outcome (ok, refused, unavailable)",
            ),
            &["op", "outcome"],
        )?;
        for op in OPS {
            for outcome in OUTCOMES {
                calls.with_label_values(&[op, outcome]);
            }
        }
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "cardbind_kms_call_duration_seconds",
                "Latency of the calls made to AWS KMS, by operation (the SDK's retries included)",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["op"],
        )?;
        for op in OPS {
            duration.with_label_values(&[op]);
        }
        Ok(KmsMetrics { calls, duration })
    }

    /// The collectors, registered into `registry`.
    pub fn registered(registry: &Registry) -> Result<KmsMetrics, prometheus::Error> {
        let m = KmsMetrics::new()?;
        m.register_into(registry)?;
        Ok(m)
    }

    /// A fresh registry holding only these collectors.
    pub fn metrics_registry(&self) -> Result<Registry, prometheus::Error> {
        let r = Registry::new();
        self.register_into(&r)?;
        Ok(r)
    }

    fn register_into(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.calls.clone()))?;
        registry.register(Box::new(self.duration.clone()))
    }

    /// The underlying counter vector.
    pub fn counter(&self) -> &IntCounterVec {
        &self.calls
    }

    /// Calls made so far for `op` that ended with `outcome`.
    pub fn ended(&self, op: &str, outcome: &str) -> u64 {
        self.calls
            .get_metric_with_label_values(&[op, outcome])
            .map(|c| c.get())
            .unwrap_or(0)
    }

    /// Calls made so far for `op`, whatever their outcome.
    pub fn calls(&self, op: &str) -> u64 {
        OUTCOMES.iter().map(|o| self.ended(op, o)).sum()
    }

    /// Calls made so far, all operations.
    pub fn total(&self) -> u64 {
        OPS.iter().map(|op| self.calls(op)).sum()
    }

    fn observe(&self, op: &str, outcome: &str, elapsed: Duration) {
        if let Ok(c) = self.calls.get_metric_with_label_values(&[op, outcome]) {
            c.inc();
        }
        if let Ok(h) = self.duration.get_metric_with_label_values(&[op]) {
            h.observe(elapsed.as_secs_f64());
        }
    }
}

/// A master key in AWS KMS.
///
/// * `GenerateDataKey` (`AES_256`) with encryption context
///   `{"cardbind:owner": owner}`;
/// * `Decrypt` always with `KeyId` pinned to this key and the same context
///   (a blob wrapped under another key is refused, never silently opened
///   with whatever key it names);
/// * `ReEncrypt` with `SourceKeyId` pinned, for rotation.
///
/// Errors: no connection, timeouts, throttling and KMS-side 5xx are
/// [`KeyError::Unavailable`]; invalid ciphertext, wrong key, access denied,
/// disabled or missing key are [`KeyError::Refused`].
pub struct KmsMasterKey {
    client: aws_sdk_kms::Client,
    key_id: String,
    timeout: Duration,
    metrics: KmsMetrics,
}

impl fmt::Debug for KmsMasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmsMasterKey")
            .field("key_id", &self.key_id)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Builds an SDK client for `config` (no network I/O; the region is given,
/// and credentials are resolved on the first call).
pub async fn kms_client(config: &KmsConfig) -> aws_sdk_kms::Client {
    let timeouts = TimeoutConfig::builder()
        .operation_timeout(config.timeout)
        .operation_attempt_timeout(config.timeout)
        .connect_timeout(config.timeout.min(Duration::from_secs(2)))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(config.region.clone()))
        .timeout_config(timeouts)
        .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts.max(1)));
    if let Some(endpoint) = &config.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(c) = &config.credentials {
        loader = loader.credentials_provider(Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.clone(),
            c.session_token.clone(),
            None,
            "cardbind-static",
        ));
    }
    aws_sdk_kms::Client::new(&loader.load().await)
}

impl KmsMasterKey {
    /// The key as configured, without contacting KMS. `config.key_id` is
    /// used verbatim as the id stored beside wrapped keys, so give the key
    /// ARN (or use [`connect`](Self::connect), which resolves it).
    pub async fn new(config: &KmsConfig, metrics: KmsMetrics) -> KmsMasterKey {
        KmsMasterKey {
            client: kms_client(config).await,
            key_id: config.key_id.clone(),
            timeout: config.timeout,
            metrics,
        }
    }

    /// Like [`new`](Self::new), then `DescribeKey` resolves an alias or bare
    /// key id to the key ARN, which becomes [`key_id`](MasterKey::key_id)
    /// (so rotation compares like with like). Fails with `Unavailable` when
    /// KMS cannot be reached, `Refused` when the key is unknown.
    pub async fn connect(
        config: &KmsConfig,
        metrics: KmsMetrics,
    ) -> Result<KmsMasterKey, KeyError> {
        let mut key = KmsMasterKey::new(config, metrics).await;
        let out = key
            .call(
                "describe_key",
                key.client.describe_key().key_id(&key.key_id).send(),
            )
            .await?;
        let arn = out
            .key_metadata()
            .and_then(|m| m.arn())
            .ok_or_else(|| KeyError::Refused("KMS DescribeKey returned no key ARN".into()))?;
        key.key_id = arn.to_owned();
        Ok(key)
    }

    /// A key over an existing client.
    pub fn from_client(
        client: aws_sdk_kms::Client,
        key_id: impl Into<String>,
        timeout: Duration,
        metrics: KmsMetrics,
    ) -> KmsMasterKey {
        KmsMasterKey {
            client,
            key_id: key_id.into(),
            timeout,
            metrics,
        }
    }

    /// The SDK client (for administration and tests).
    pub fn client(&self) -> &aws_sdk_kms::Client {
        &self.client
    }

    pub fn metrics(&self) -> &KmsMetrics {
        &self.metrics
    }

    async fn call<T, E>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, SdkError<E>>>,
    ) -> Result<T, KeyError>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        // A call its caller gives up on (a readiness probe's deadline,
        // shorter than ours) is counted when it is dropped, as unavailable.
        let pending = Pending {
            metrics: &self.metrics,
            op,
            started: Instant::now(),
            ended: false,
        };
        let result = match tokio::time::timeout(self.timeout, fut).await {
            Err(_) => Err(KeyError::Unavailable(format!(
                "KMS {op}: no answer within {:?}",
                self.timeout
            ))),
            Ok(Err(e)) => Err(map_sdk_error(op, &e)),
            Ok(Ok(v)) => Ok(v),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(KeyError::Refused(_)) => "refused",
            Err(_) => "unavailable",
        };
        pending.end(outcome);
        result
    }
}

/// A KMS call under way: counted as `unavailable` if it is dropped before
/// it ends.
struct Pending<'a> {
    metrics: &'a KmsMetrics,
    op: &'static str,
    started: Instant,
    ended: bool,
}

impl Pending<'_> {
    /// Counts the call as ended with `outcome`.
    fn end(mut self, outcome: &str) {
        self.ended = true;
        self.metrics
            .observe(self.op, outcome, self.started.elapsed());
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.metrics
                .observe(self.op, "unavailable", self.started.elapsed());
        }
    }
}

/// Error codes that mean "this will not work however often you retry".
const REFUSED_CODES: &[&str] = &[
    "InvalidCiphertextException",
    "IncorrectKeyException",
    "AccessDeniedException",
    "NotFoundException",
    "DisabledException",
    "KMSInvalidStateException",
    "InvalidKeyUsageException",
    "InvalidGrantTokenException",
    "UnrecognizedClientException",
    "IncompleteSignature",
    "InvalidSignatureException",
    "ValidationException",
];

fn map_sdk_error<E>(op: &str, err: &SdkError<E>) -> KeyError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        SdkError::TimeoutError(_) => KeyError::Unavailable(format!("KMS {op}: timed out")),
        SdkError::DispatchFailure(f) => {
            let what = if f.is_timeout() {
                "timed out"
            } else if f.is_io() {
                "cannot connect"
            } else {
                "request not sent"
            };
            KeyError::Unavailable(format!("KMS {op}: {what}"))
        }
        SdkError::ResponseError(_) => {
            KeyError::Unavailable(format!("KMS {op}: unreadable response"))
        }
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("unknown");
            let status = se.raw().status();
            let msg = se.err().message().unwrap_or("");
            if REFUSED_CODES.contains(&code)
                || (status.is_client_error() && status.as_u16() != 429 && !code.contains("Throttl"))
            {
                KeyError::Refused(format!("KMS {op}: {code}: {msg}"))
            } else {
                KeyError::Unavailable(format!("KMS {op}: {code}: {msg}"))
            }
        }
        SdkError::ConstructionFailure(_) => KeyError::Unavailable(format!(
            "KMS {op}: request could not be built (configuration or credentials)"
        )),
        _ => KeyError::Unavailable(format!("KMS {op}: failed")),
    }
}

fn take_key(blob: Option<Blob>) -> Result<DataKey, KeyError> {
    let bytes = blob
        .ok_or_else(|| KeyError::Refused("KMS returned no plaintext key".into()))?
        .into_inner();
    DataKey::from_vec(bytes)
}

#[async_trait]
impl MasterKey for KmsMasterKey {
    fn key_id(&self) -> &str {
        &self.key_id
    }

    async fn generate_data_key(&self, owner: &str) -> Result<(DataKey, Vec<u8>), KeyError> {
        let req = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context(OWNER_CONTEXT_KEY, owner)
            .send();
        let mut out = self.call("generate_data_key", req).await?;
        let wrapped = out
            .ciphertext_blob
            .take()
            .ok_or_else(|| KeyError::Refused("KMS returned no wrapped key".into()))?
            .into_inner();
        let key = take_key(out.plaintext.take())?;
        Ok((key, wrapped))
    }

    async fn decrypt_data_key(&self, owner: &str, wrapped: &[u8]) -> Result<DataKey, KeyError> {
        let req = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(wrapped))
            .encryption_context(OWNER_CONTEXT_KEY, owner)
            .send();
        let mut out = self.call("decrypt", req).await?;
        take_key(out.plaintext.take())
    }

    async fn re_encrypt(
        &self,
        owner: &str,
        wrapped: &[u8],
        to: &Self,
    ) -> Result<Vec<u8>, KeyError> {
        // ReEncrypt runs on the source key's client; it needs kms:ReEncrypt*
        // on both keys (same account and region, or a cross-account grant).
        let req = self
            .client
            .re_encrypt()
            .ciphertext_blob(Blob::new(wrapped))
            .source_key_id(&self.key_id)
            .source_encryption_context(OWNER_CONTEXT_KEY, owner)
            .destination_key_id(&to.key_id)
            .destination_encryption_context(OWNER_CONTEXT_KEY, owner)
            .send();
        let mut out = self.call("re_encrypt", req).await?;
        out.ciphertext_blob
            .take()
            .map(Blob::into_inner)
            .ok_or_else(|| KeyError::Refused("KMS returned no re-encrypted key".into()))
    }
}
