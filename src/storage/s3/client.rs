//! The S3 requests the scheduler sends itself (listings, DeleteObjects,
//! GetBucketVersioning), signed by object_store's SigV4 signer and sent by
//! its HTTP client: credentials (static keys, environment, instance role),
//! TLS, proxies and timeouts are object_store's, as for any request it
//! sends. What object_store cannot send (versions) or reads too slowly
//! (listings, see `list.rs`) goes through here; retries are the caller's,
//! within the batch's budget.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsAuthorizer};
use object_store::client::{
    HttpClient, HttpConnector, HttpErrorKind, HttpRequestBody, ReqwestConnector,
};
use object_store::{BackoffConfig, ClientOptions, RetryConfig};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::{describe, xml};
use crate::config::StorageConfig;
use crate::storage::OpenError;

/// Longest wait for one answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a query value may keep unencoded: RFC 3986's unreserved
/// characters, as SigV4 canonicalises them.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Sends signed requests to one bucket.
#[derive(Debug)]
pub(super) struct Client {
    http: HttpClient,
    /// Holds the credential provider, so credentials are found and
    /// refreshed as for object_store's own requests.
    store: Arc<AmazonS3>,
    /// The bucket's URL as object_store addresses it (path-style on custom
    /// endpoints; see [`bucket_url`]).
    bucket_url: String,
    region: String,
}

/// A request that failed as a whole.
#[derive(Debug, Clone)]
pub(super) struct RequestError {
    pub reason: String,
    /// Worth trying again: throttling (503 SlowDown, 429), another 5xx, or
    /// no answer (refused, reset, timed out). A 4xx (wrong credentials, no
    /// such bucket) is not.
    pub transient: bool,
    /// The server answered `501 NotImplemented` (an operation it does not
    /// have, such as GetBucketVersioning on Cloudflare R2).
    pub not_implemented: bool,
}

impl RequestError {
    fn transient(reason: String) -> RequestError {
        RequestError {
            reason,
            transient: true,
            not_implemented: false,
        }
    }
}

/// A request to the bucket: `operation` names it in errors
/// (`ListObjectsV2`).
pub(super) struct Request {
    pub operation: &'static str,
    pub method: Method,
    /// The query string after `?`, its values encoded with [`push_query`].
    pub query: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// A GET of the bucket with `query`.
    pub(super) fn get(operation: &'static str, query: String) -> Request {
        Request {
            operation,
            method: Method::GET,
            query,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

impl Client {
    pub(super) fn new(
        http: HttpClient,
        store: Arc<AmazonS3>,
        bucket_url: String,
        region: String,
    ) -> Client {
        Client {
            http,
            store,
            bucket_url,
            region,
        }
    }

    /// Signs and sends `request`; the answer's body when it succeeded, else
    /// the reason in the server's words (`ListObjectsV2: 403 Forbidden:
    /// SignatureDoesNotMatch: ...`).
    pub(super) async fn send(&self, request: Request) -> Result<Vec<u8>, RequestError> {
        let Request {
            operation,
            method,
            query,
            headers,
            body,
        } = request;
        let url = format!("{}?{query}", self.bucket_url);
        let credential = self
            .store
            .credentials()
            .get_credential()
            .await
            .map_err(|e| RequestError::transient(describe(&e)))?;
        let mut builder = http::Request::builder().method(method).uri(url.as_str());
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        let mut request = builder
            .body(HttpRequestBody::from(body))
            .map_err(|e| RequestError {
                reason: format!("invalid {operation} request to {url}: {e}"),
                transient: false,
                not_implemented: false,
            })?;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .map_err(|e| RequestError::transient(describe(&e)))?;
        let failed = |e: &dyn std::error::Error| {
            RequestError::transient(format!("{operation}: {}", describe(e)))
        };
        let response = self.http.execute(request).await.map_err(|e| {
            let mut error = failed(&e);
            if e.kind() == HttpErrorKind::Timeout {
                error.reason.push_str(" (no answer in time)");
            }
            error
        })?;
        let status = response.status();
        let body = response.into_body().bytes().await.map_err(|e| failed(&e))?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        Err(RequestError {
            reason: format!(
                "{operation}: {status}{}",
                xml::s3_error(&body).map_or_else(String::new, |e| format!(": {e}"))
            ),
            transient: status.is_server_error() || status.as_u16() == 429,
            not_implemented: status.as_u16() == 501,
        })
    }
}

/// The bucket's client, from the same settings as object_store's (the
/// standard `AWS_*` variables first, the configuration winning), its name,
/// and where it is (`AWS` or the endpoint). No request is made.
pub(super) fn connect(
    config: &StorageConfig,
    retry_budget: Duration,
) -> Result<(Client, String, String), OpenError> {
    let failed = |key, reason: String| OpenError {
        key,
        reason,
        refused: false,
    };
    let bucket = config.bucket.clone().unwrap_or_default();
    let builder = settings(config, &bucket);
    let has_keys = builder
        .get_config_value(&AmazonS3ConfigKey::AccessKeyId)
        .is_some()
        && builder
            .get_config_value(&AmazonS3ConfigKey::SecretAccessKey)
            .is_some();
    let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
    if !has_keys && endpoint.is_some() {
        // Without keys object_store would ask the EC2 metadata service,
        // which a MinIO or R2 deployment does not have.
        return Err(failed(
            "access_key_id",
            "storage.access_key_id and storage.secret_access_key (or AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY) are needed for a custom storage.endpoint"
                .into(),
        ));
    }
    let options = ClientOptions::new()
        .with_allow_http(
            endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("http://")),
        )
        .with_timeout(REQUEST_TIMEOUT.min(retry_budget.max(Duration::from_secs(1))))
        .with_connect_timeout(CONNECT_TIMEOUT);
    let region = builder
        .get_config_value(&AmazonS3ConfigKey::Region)
        .unwrap_or_default();
    let virtual_hosted = builder
        .get_config_value(&AmazonS3ConfigKey::VirtualHostedStyleRequest)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    // object_store sends no request of ours: it provides credentials (and
    // refreshes them); its retry settings only serve those.
    let store = builder
        .with_retry(RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: 10,
            retry_timeout: retry_budget,
        })
        .with_client_options(options.clone())
        .build()
        .map_err(|e| failed("bucket", format!("storage.kind s3: {e}")))?;
    let http = ReqwestConnector::default()
        .connect(&options)
        .map_err(|e| failed("endpoint", format!("storage.kind s3: {e}")))?;
    let client = Client::new(
        http,
        Arc::new(store),
        bucket_url(endpoint.as_deref(), virtual_hosted, &bucket, &region),
        region,
    );
    Ok((client, bucket, endpoint.unwrap_or_else(|| "AWS".into())))
}

/// object_store's settings for the bucket: the standard `AWS_*` variables
/// first, the configuration winning.
fn settings(config: &StorageConfig, bucket: &str) -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(endpoint) = &config.endpoint {
        // A custom endpoint (MinIO, RGW, R2...): path-style requests,
        // http:// allowed when the endpoint says so.
        builder = builder
            .with_endpoint(endpoint)
            .with_virtual_hosted_style_request(false)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    if let Some(region) = &config.region {
        builder = builder.with_region(region);
    } else if builder
        .get_config_value(&AmazonS3ConfigKey::Region)
        .is_none()
    {
        builder = builder.with_region("us-east-1");
    }
    if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
        builder = builder
            .with_access_key_id(id)
            .with_secret_access_key(secret.expose());
    }
    if let Some(token) = &config.session_token {
        builder = builder.with_token(token.expose());
    }
    builder
}

/// The URL object_store sends a bucket's requests to, from the same
/// settings (its builder keeps it private).
pub(super) fn bucket_url(
    endpoint: Option<&str>,
    virtual_hosted: bool,
    bucket: &str,
    region: &str,
) -> String {
    match (endpoint, virtual_hosted) {
        (Some(endpoint), true) => endpoint.trim_end_matches('/').to_owned(),
        (Some(endpoint), false) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
        (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
        (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
    }
}

/// Appends `&name=value` to a query, the value encoded as SigV4 wants it.
pub(super) fn push_query(query: &mut String, name: &str, value: &str) {
    if !query.is_empty() {
        query.push('&');
    }
    query.push_str(name);
    query.push('=');
    query.extend(utf8_percent_encode(value, QUERY_VALUE));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded_as_sigv4_canonicalises_them() {
        let mut query = "list-type=2".to_owned();
        push_query(&mut query, "prefix", "hls/a b+c~d_e.f-é/");
        assert_eq!(query, "list-type=2&prefix=hls%2Fa%20b%2Bc~d_e.f-%C3%A9%2F");
        let mut first = String::new();
        push_query(&mut first, "versions", "");
        assert_eq!(first, "versions=");
    }

    #[test]
    fn the_bucket_url_is_the_one_object_store_uses() {
        assert_eq!(
            bucket_url(Some("http://127.0.0.1:9000/"), false, "v", "us-east-1"),
            "http://127.0.0.1:9000/v"
        );
        assert_eq!(
            bucket_url(Some("https://v.r2.example"), true, "v", "auto"),
            "https://v.r2.example"
        );
        assert_eq!(
            bucket_url(None, true, "v", "eu-west-1"),
            "https://v.s3.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            bucket_url(None, false, "v", "eu-west-1"),
            "https://s3.eu-west-1.amazonaws.com/v"
        );
    }
}
