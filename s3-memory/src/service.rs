//! The S3 protocol side: s3s parses each request (routing, SigV4, XML) and
//! calls the [`S3`] method of its operation here, which applies it to the
//! buckets and answers with s3s's DTOs. Operations not implemented here get
//! s3s's default answer, 501 NotImplemented.
//!
//! Every implemented operation first goes through the faults
//! ([`Faults::enter`]): counted, delayed, maybe answered 503 SlowDown, in
//! that order. ListObjectVersions is not here: a custom route answers it
//! (see `versions.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};

use crate::bucket::{Bucket, Clock, Mode, Protection, Version, Versioning};
use crate::faults::{Faults, Op};
use crate::{ACCESS_KEY, SECRET_KEY};

/// The largest PutObject body accepted: everything is kept in memory.
const MAX_BODY: usize = 64 << 20;

/// Most entries a listing page or a DeleteObjects request may have.
const MAX_KEYS: usize = 1000;

/// Read access to `lock`; a poisoned lock means a request panicked while
/// changing it, and nothing it holds can be trusted.
pub fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().expect("an in-memory S3 lock is poisoned")
}

/// Write access to `lock` (see [`read`]).
pub fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().expect("an in-memory S3 lock is poisoned")
}

/// Everything the server holds: its buckets and server-wide settings.
#[derive(Debug, Default)]
pub struct Store {
    /// Bucket name -> bucket. Requests hold this lock only to find their
    /// bucket, then work under the bucket's own lock.
    buckets: RwLock<BTreeMap<String, Arc<Bucket>>>,
    /// Version ids and their order, for every bucket.
    pub clock: Clock,
    /// GetBucketVersioning answers 501 NotImplemented.
    pub versioning_not_implemented: AtomicBool,
}

impl Store {
    /// Creates bucket `name` if it does not exist yet.
    pub fn create_bucket(&self, name: &str) {
        write(&self.buckets).entry(name.to_owned()).or_default();
    }

    /// Bucket `name`, if it exists.
    pub fn bucket(&self, name: &str) -> Option<Arc<Bucket>> {
        read(&self.buckets).get(name).cloned()
    }

    /// Bucket `name`, or S3's answer for a missing one.
    pub fn existing(&self, name: &str) -> S3Result<Arc<Bucket>> {
        self.bucket(name)
            .ok_or_else(|| s3_error!(NoSuchBucket, "The specified bucket does not exist"))
    }
}

/// The s3s service: the store and the faults.
pub struct Service {
    /// The buckets.
    pub store: Arc<Store>,
    /// Faults and counters.
    pub faults: Arc<Faults>,
}

/// `max-keys` as S3 takes it: 1,000 when absent, at most 1,000.
pub fn max_keys(max_keys: Option<i32>) -> S3Result<usize> {
    match max_keys {
        None => Ok(MAX_KEYS),
        Some(n) if n < 0 => Err(s3_error!(
            InvalidArgument,
            "Argument maxKeys must be an integer between 0 and 2147483647"
        )),
        Some(n) => Ok(usize::try_from(n).unwrap_or(MAX_KEYS).clamp(1, MAX_KEYS)),
    }
}

/// The listing options this server does not implement: refused rather
/// than ignored, so a client relying on them finds out.
pub fn unsupported_listing(delimiter: Option<&str>, encoding: Option<&str>) -> S3Result<()> {
    if delimiter.is_some_and(|d| !d.is_empty()) {
        return Err(s3_error!(
            NotImplemented,
            "The in-memory S3 server does not implement delimiter"
        ));
    }
    if encoding.is_some() {
        return Err(s3_error!(
            NotImplemented,
            "The in-memory S3 server does not implement encoding-type"
        ));
    }
    Ok(())
}

/// AWS's answer to a request that needs an MFA token and has none.
fn mfa_required() -> S3Error {
    s3_error!(
        AccessDenied,
        "Mfa Authentication must be used for this request"
    )
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

fn etag(version: &Version) -> Option<ETag> {
    (!version.marker).then(|| ETag::Strong(version.etag.clone()))
}

fn size(version: &Version) -> i64 {
    i64::try_from(version.body.len()).unwrap_or(i64::MAX)
}

/// An error carrying `x-amz-delete-marker: true`, as S3 answers a GET or
/// HEAD that lands on a delete marker.
fn on_delete_marker(mut error: S3Error) -> S3Error {
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_static("x-amz-delete-marker"),
        HeaderValue::from_static("true"),
    );
    error.set_headers(headers);
    error
}

/// The version a GET or HEAD of `key` (and maybe `version_id`) reads, and
/// whether the bucket's answers carry version ids.
fn read_version(bucket: &Bucket, key: &str, version_id: Option<&str>) -> S3Result<(Version, bool)> {
    let state = read(&bucket.state);
    let versioned = state.versioning != Versioning::Unversioned;
    match version_id {
        Some(id) => match state.version(key, id) {
            None => Err(s3_error!(
                NoSuchVersion,
                "The specified version does not exist."
            )),
            Some((version, _)) if version.marker => Err(on_delete_marker(s3_error!(
                MethodNotAllowed,
                "The specified method is not allowed against this resource."
            ))),
            Some((version, _)) => Ok((version.clone(), versioned)),
        },
        None => match state.latest(key) {
            None => Err(s3_error!(NoSuchKey, "The specified key does not exist.")),
            Some(version) if version.marker => Err(on_delete_marker(s3_error!(
                NoSuchKey,
                "The specified key does not exist."
            ))),
            Some(version) => Ok((version.clone(), versioned)),
        },
    }
}

/// Object Lock headers of a read answer: (mode, retain until, legal hold).
fn lock_headers(
    protection: &Protection,
) -> (
    Option<ObjectLockMode>,
    Option<Timestamp>,
    Option<ObjectLockLegalHoldStatus>,
) {
    let (mode, until) = match protection.retention {
        Some((Mode::Governance, until)) => (
            Some(ObjectLockMode::from_static(ObjectLockMode::GOVERNANCE)),
            Some(Timestamp::from(until)),
        ),
        Some((Mode::Compliance, until)) => (
            Some(ObjectLockMode::from_static(ObjectLockMode::COMPLIANCE)),
            Some(Timestamp::from(until)),
        ),
        None => (None, None),
    };
    let hold = protection
        .legal_hold
        .then(|| ObjectLockLegalHoldStatus::from_static(ObjectLockLegalHoldStatus::ON));
    (mode, until, hold)
}

/// The Object Lock settings a PutObject asks for in its headers.
fn requested_protection(input: &PutObjectInput) -> S3Result<Protection> {
    let retention = match (
        &input.object_lock_mode,
        &input.object_lock_retain_until_date,
    ) {
        (None, None) => None,
        (Some(mode), Some(until)) => {
            let mode = match mode.as_str() {
                ObjectLockMode::GOVERNANCE => Mode::Governance,
                ObjectLockMode::COMPLIANCE => Mode::Compliance,
                _ => return Err(s3_error!(InvalidArgument, "Unknown wormMode directive.")),
            };
            let until: SystemTime = time::OffsetDateTime::from(until.clone()).into();
            Some((mode, until))
        }
        _ => {
            return Err(s3_error!(
            InvalidArgument,
            "x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must both be supplied"
        ))
        }
    };
    let legal_hold = match &input.object_lock_legal_hold_status {
        None => false,
        Some(status) => match status.as_str() {
            ObjectLockLegalHoldStatus::ON => true,
            ObjectLockLegalHoldStatus::OFF => false,
            _ => {
                return Err(s3_error!(
                    InvalidArgument,
                    "Legal Hold must be either of 'ON' or 'OFF'"
                ))
            }
        },
    };
    Ok(Protection {
        retention,
        legal_hold,
    })
}

#[async_trait::async_trait]
impl S3 for Service {
    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let _in_flight = self.faults.enter(Op::GetBucketVersioning).await?;
        if self
            .store
            .versioning_not_implemented
            .load(Ordering::Relaxed)
        {
            return Err(s3_error!(
                NotImplemented,
                "GetBucketVersioning not implemented"
            ));
        }
        let bucket = self.store.existing(&req.input.bucket)?;
        let state = read(&bucket.state);
        let status = match state.versioning {
            Versioning::Unversioned => None,
            Versioning::Enabled => Some(BucketVersioningStatus::ENABLED),
            Versioning::Suspended => Some(BucketVersioningStatus::SUSPENDED),
        };
        let mfa_delete = state.mfa_delete.map(|on| {
            MFADeleteStatus::from_static(if on {
                MFADeleteStatus::ENABLED
            } else {
                MFADeleteStatus::DISABLED
            })
        });
        Ok(S3Response::new(GetBucketVersioningOutput {
            mfa_delete,
            status: status.map(BucketVersioningStatus::from_static),
        }))
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        let _in_flight = self.faults.enter(Op::PutBucketVersioning).await?;
        let bucket = self.store.existing(&req.input.bucket)?;
        let config = req.input.versioning_configuration;
        let versioning = match config.status.as_ref().map(BucketVersioningStatus::as_str) {
            None => None,
            Some(BucketVersioningStatus::ENABLED) => Some(Versioning::Enabled),
            Some(BucketVersioningStatus::SUSPENDED) => Some(Versioning::Suspended),
            Some(_) => return Err(s3_error!(MalformedXML)),
        };
        let mfa_delete = match config.mfa_delete.as_ref().map(MFADelete::as_str) {
            None => None,
            Some(MFADelete::ENABLED) => Some(true),
            Some(MFADelete::DISABLED) => Some(false),
            Some(_) => return Err(s3_error!(MalformedXML)),
        };
        let mut state = write(&bucket.state);
        if (mfa_delete.is_some() || state.mfa_delete == Some(true)) && req.input.mfa.is_none() {
            return Err(mfa_required());
        }
        if let Some(versioning) = versioning {
            state.versioning = versioning;
        }
        if let Some(on) = mfa_delete {
            state.mfa_delete = Some(on);
        }
        Ok(S3Response::new(PutBucketVersioningOutput::default()))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        let _in_flight = self.faults.enter(Op::HeadBucket).await?;
        self.store.existing(&req.input.bucket)?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let _in_flight = self.faults.enter(Op::ListObjectsV2).await?;
        let input = req.input;
        unsupported_listing(
            input.delimiter.as_deref(),
            input.encoding_type.as_ref().map(EncodingType::as_str),
        )?;
        let bucket = self.store.existing(&input.bucket)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let max = max_keys(input.max_keys)?;
        // S3 ignores start-after when a continuation token is given.
        let token = non_empty(input.continuation_token.clone());
        let after = token
            .clone()
            .or_else(|| non_empty(input.start_after.clone()));
        let page = read(&bucket.state).current_page(&prefix, after.as_deref(), max);
        let next = page
            .truncated
            .then(|| page.entries.last().map(|e| e.key.clone()))
            .flatten();
        let contents: Vec<Object> = page
            .entries
            .into_iter()
            .map(|e| Object {
                e_tag: etag(&e.version),
                last_modified: Some(Timestamp::from(e.version.modified)),
                size: Some(size(&e.version)),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                key: Some(e.key),
                ..Object::default()
            })
            .collect();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(prefix),
            max_keys: Some(i32::try_from(max).unwrap_or(i32::MAX)),
            key_count: Some(i32::try_from(contents.len()).unwrap_or(i32::MAX)),
            continuation_token: input.continuation_token,
            start_after: input.start_after,
            is_truncated: Some(next.is_some()),
            next_continuation_token: next,
            contents: (!contents.is_empty()).then_some(contents),
            ..ListObjectsV2Output::default()
        }))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let _in_flight = self.faults.enter(Op::DeleteObjects).await?;
        let input = req.input;
        let objects = input.delete.objects;
        let injected = self.faults.delete_request(
            objects
                .iter()
                .map(|o| (o.key.as_str(), o.version_id.as_deref())),
        );
        // S3 requires an integrity header on DeleteObjects (it does not
        // check it here: s3s has consumed the body).
        let integrity = req.headers.contains_key("content-md5")
            || req
                .headers
                .keys()
                .any(|name| name.as_str().starts_with("x-amz-checksum-"));
        if !integrity {
            return Err(s3_error!(
                InvalidRequest,
                "Missing required header for this request: Content-MD5"
            ));
        }
        if objects.is_empty() || objects.len() > MAX_KEYS {
            return Err(s3_error!(
                MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema"
            ));
        }
        let bucket = self.store.existing(&input.bucket)?;
        let bypass = input.bypass_governance_retention.unwrap_or(false);
        let quiet = input.delete.quiet.unwrap_or(false);
        let now = SystemTime::now();
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        {
            let mut state = write(&bucket.state);
            let versioned_entry = objects.iter().any(|o| o.version_id.is_some());
            if state.mfa_delete == Some(true) && versioned_entry && input.mfa.is_none() {
                return Err(mfa_required());
            }
            for (object, injected) in objects.into_iter().zip(injected) {
                let outcome = match injected {
                    Some(code) => Err((code, "injected")),
                    None => state
                        .delete(
                            &self.store.clock,
                            &object.key,
                            object.version_id.as_deref(),
                            bypass,
                            now,
                        )
                        .map_err(|refused| (refused.code.to_owned(), refused.message)),
                };
                match outcome {
                    Ok(done) => deleted.push(DeletedObject {
                        key: Some(object.key),
                        version_id: done.version_id,
                        delete_marker: done.delete_marker.then_some(true),
                        delete_marker_version_id: done.marker_version_id,
                    }),
                    Err((code, message)) => errors.push(Error {
                        code: Some(code),
                        key: Some(object.key),
                        message: Some(message.to_owned()),
                        version_id: object.version_id,
                    }),
                }
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: (!quiet && !deleted.is_empty()).then_some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..DeleteObjectsOutput::default()
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let _in_flight = self.faults.enter(Op::PutObject).await?;
        let mut input = req.input;
        let bucket = self.store.existing(&input.bucket)?;
        let protection = requested_protection(&input)?;
        let body = match input.body.take() {
            None => hyper::body::Bytes::new(),
            Some(blob) => s3s::Body::from(blob)
                .store_all_limited(MAX_BODY)
                .await
                .map_err(|e| {
                    S3Error::with_message(
                        S3ErrorCode::IncompleteBody,
                        format!("cannot read the body (at most {MAX_BODY} bytes): {e}"),
                    )
                })?,
        };
        let mut state = write(&bucket.state);
        let id = state.put(&self.store.clock, &input.key, body, protection);
        let etag = state.latest(&input.key).and_then(etag);
        let versioned = state.versioning != Versioning::Unversioned;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: etag,
            version_id: versioned.then_some(id),
            ..PutObjectOutput::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let _in_flight = self.faults.enter(Op::HeadObject).await?;
        let input = req.input;
        let bucket = self.store.existing(&input.bucket)?;
        let (version, versioned) = read_version(&bucket, &input.key, input.version_id.as_deref())?;
        let (mode, until, hold) = lock_headers(&version.protection);
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(size(&version)),
            e_tag: etag(&version),
            last_modified: Some(Timestamp::from(version.modified)),
            object_lock_mode: mode,
            object_lock_retain_until_date: until,
            object_lock_legal_hold_status: hold,
            version_id: versioned.then_some(version.id),
            ..HeadObjectOutput::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let _in_flight = self.faults.enter(Op::GetObject).await?;
        let input = req.input;
        let bucket = self.store.existing(&input.bucket)?;
        let (version, versioned) = read_version(&bucket, &input.key, input.version_id.as_deref())?;
        let (mode, until, hold) = lock_headers(&version.protection);
        Ok(S3Response::new(GetObjectOutput {
            content_length: Some(size(&version)),
            e_tag: etag(&version),
            last_modified: Some(Timestamp::from(version.modified)),
            object_lock_mode: mode,
            object_lock_retain_until_date: until,
            object_lock_legal_hold_status: hold,
            body: Some(StreamingBlob::from(s3s::Body::from(version.body.clone()))),
            version_id: versioned.then_some(version.id),
            ..GetObjectOutput::default()
        }))
    }
}

/// The server's one pair of keys. Another access key is answered
/// `InvalidAccessKeyId`, as AWS does (s3s's `SimpleAuth` says
/// `NotSignedUp`); a wrong secret gets `SignatureDoesNotMatch` from s3s.
pub struct StaticAuth;

#[async_trait::async_trait]
impl S3Auth for StaticAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if access_key == ACCESS_KEY {
            Ok(SecretKey::from(SECRET_KEY))
        } else {
            Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            ))
        }
    }
}
