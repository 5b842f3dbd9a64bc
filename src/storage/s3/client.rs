//! The S3 requests the scheduler sends itself (listings, DeleteObjects,
//! GetBucketVersioning), signed by object_store's SigV4 signer and sent by
//! its HTTP client: credentials (static keys, environment, instance role),
//! TLS, proxies and timeouts are object_store's, as for any request it
//! sends. What object_store cannot send (versions) or reads too slowly
//! (listings, see `list.rs`) goes through here; retries are the caller's,
//! within the batch's budget.

use std::sync::Arc;

use http::Method;
use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::{HttpClient, HttpErrorKind, HttpRequestBody};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::{describe, xml};

/// What a query value may keep unencoded: RFC 3986's unreserved
/// characters, as SigV4 canonicalises them.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Sends signed requests to one bucket.
#[derive(Debug)]
pub struct Client {
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
pub struct RequestError {
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
pub struct Request {
    pub operation: &'static str,
    pub method: Method,
    /// The query string after `?`, its values encoded with [`push_query`].
    pub query: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// A GET of the bucket with `query`.
    pub fn get(operation: &'static str, query: String) -> Request {
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
    pub fn new(
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
    pub async fn send(&self, request: Request) -> Result<Vec<u8>, RequestError> {
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

/// The URL object_store sends a bucket's requests to, from the same
/// settings (its builder keeps it private).
pub fn bucket_url(
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
pub fn push_query(query: &mut String, name: &str, value: &str) {
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
