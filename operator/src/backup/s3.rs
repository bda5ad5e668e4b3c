//! A small client of S3-compatible object storage: requests presigned with
//! SigV4 by `rusty-s3`, sent with hyper. Uploads stream: up to one part is
//! held in memory, and anything bigger than a part goes up as a multipart
//! upload, aborted when it fails so no parts are left behind.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rusty_s3::actions::{CreateMultipartUpload, ListObjectsV2, S3Action};
use rusty_s3::{Bucket, Credentials, UrlStyle};
use url::Url;

/// Part size of multipart uploads: S3 wants at least 5 MiB for every part
/// but the last; 8 MiB keeps memory small and parts few.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;
/// Smallest part S3 accepts (but for the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// How long a presigned request stays valid.
const SIGNATURE_LIFETIME: Duration = Duration::from_secs(3600);
/// Longest wait for one request, a part upload included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Why an S3 call failed.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The endpoint or bucket can not make a URL.
    #[error("S3 endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The configured endpoint.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection, or the connection broke.
    #[error("S3 {operation}: {source}")]
    Transport {
        /// The S3 operation.
        operation: &'static str,
        /// The HTTP client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The server did not answer in time.
    #[error("S3 {operation}: no answer within {REQUEST_TIMEOUT:?}")]
    Timeout {
        /// The S3 operation.
        operation: &'static str,
    },
    /// The object does not exist.
    #[error("S3 object {key:?} not found in bucket {bucket:?}")]
    NotFound {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
    },
    /// The server answered with an error status.
    #[error("S3 {operation} answered HTTP {status}: {body}")]
    Status {
        /// The S3 operation.
        operation: &'static str,
        /// HTTP status code.
        status: u16,
        /// The error document, shortened.
        body: String,
    },
    /// The server's answer is not what S3 sends.
    #[error("S3 {operation}: unexpected answer: {reason}")]
    Response {
        /// The S3 operation.
        operation: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// Where and as whom to talk to S3.
#[derive(Clone)]
pub struct S3Config {
    /// Base URL, e.g. `http://127.0.0.1:9000`.
    pub endpoint: String,
    /// Bucket name.
    pub bucket: String,
    /// Region requests are signed for.
    pub region: String,
    /// Path-style (`endpoint/bucket/key`) rather than virtual-host addressing.
    pub path_style: bool,
    /// Access key ID.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .finish_non_exhaustive()
    }
}

/// An object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Full key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// `LastModified` as the server wrote it (RFC 3339).
    pub last_modified: Option<String>,
}

/// A client of one bucket.
#[derive(Clone)]
pub struct S3Client {
    bucket: Bucket,
    credentials: Credentials,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl S3Client {
    /// A client of `config.bucket`. Trusts the system's CA certificates for
    /// `https` endpoints, when it has any.
    pub fn new(config: &S3Config) -> Result<Self, S3Error> {
        let endpoint_error = |reason: String| S3Error::Endpoint {
            endpoint: config.endpoint.clone(),
            reason,
        };
        let url: Url = config
            .endpoint
            .parse()
            .map_err(|e: url::ParseError| endpoint_error(e.to_string()))?;
        let style = if config.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(url, style, config.bucket.clone(), config.region.clone())
            .map_err(|e| endpoint_error(e.to_string()))?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        // An image without CA certificates can still reach an http endpoint.
        let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
            Ok(builder) => builder,
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            ),
        };
        let connector = builder.https_or_http().enable_http1().build();
        Ok(Self {
            bucket,
            credentials: Credentials::new(config.access_key.clone(), config.secret_key.clone()),
            http: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// `s3://bucket/key`, how locations are reported.
    pub fn location(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket.name())
    }

    /// Creates the bucket (for tests and first use); an existing one is fine.
    pub async fn create_bucket(&self) -> Result<(), S3Error> {
        let action = self.bucket.create_bucket(&self.credentials);
        let body = Bytes::from(action.body());
        match self
            .call(
                "CreateBucket",
                Method::PUT,
                action.sign(SIGNATURE_LIFETIME),
                body,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(S3Error::Status { status: 409, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Starts an upload of `key`; bytes go in with [`Upload::write`].
    /// Parts are at least [`MIN_PART_SIZE`].
    pub fn upload(&self, key: &str, part_size: usize) -> Upload {
        Upload {
            client: self.clone(),
            key: key.to_string(),
            part_size: part_size.max(MIN_PART_SIZE),
            buffer: BytesMut::new(),
            multipart: None,
            size: 0,
        }
    }

    /// Every object whose key starts with `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, S3Error> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
            action.with_prefix(prefix);
            if let Some(token) = &token {
                action.with_continuation_token(token.clone());
            }
            let (_, body) = self
                .call(
                    "ListObjectsV2",
                    Method::GET,
                    action.sign(SIGNATURE_LIFETIME),
                    Bytes::new(),
                )
                .await?;
            let text = String::from_utf8_lossy(&body);
            let page = ListObjectsV2::parse_response(&text).map_err(|e| S3Error::Response {
                operation: "ListObjectsV2",
                reason: e.to_string(),
            })?;
            objects.extend(page.contents.into_iter().map(|c| ObjectInfo {
                key: c.key,
                size: c.size.unwrap_or(0),
                last_modified: c.last_modified,
            }));
            match page.next_continuation_token {
                Some(next) => token = Some(next),
                None => return Ok(objects),
            }
        }
    }

    /// Deletes `key`; a missing object is not an error (S3 answers 204 either way).
    pub async fn delete(&self, key: &str) -> Result<(), S3Error> {
        let action = self.bucket.delete_object(Some(&self.credentials), key);
        self.call(
            "DeleteObject",
            Method::DELETE,
            action.sign(SIGNATURE_LIFETIME),
            Bytes::new(),
        )
        .await
        .map(drop)
    }

    /// The body of `key`, to be read frame by frame.
    pub async fn download(&self, key: &str) -> Result<Incoming, S3Error> {
        let action = self.bucket.get_object(Some(&self.credentials), key);
        let response = self
            .send(
                "GetObject",
                Method::GET,
                action.sign(SIGNATURE_LIFETIME),
                Bytes::new(),
            )
            .await?;
        if response.status() == 404 {
            return Err(S3Error::NotFound {
                bucket: self.bucket.name().to_string(),
                key: key.to_string(),
            });
        }
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let body = read_body("GetObject", response.into_body()).await?;
            return Err(status_error("GetObject", status, &body));
        }
        Ok(response.into_body())
    }

    async fn send(
        &self,
        operation: &'static str,
        method: Method,
        url: Url,
        body: Bytes,
    ) -> Result<Response<Incoming>, S3Error> {
        let request = Request::builder()
            .method(method)
            .uri(url.as_str())
            .body(Full::new(body))
            .map_err(|e| S3Error::Transport {
                operation,
                source: Box::new(e),
            })?;
        tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(request))
            .await
            .map_err(|_| S3Error::Timeout { operation })?
            .map_err(|e| S3Error::Transport {
                operation,
                source: Box::new(e),
            })
    }

    /// Sends a request and reads the whole (small) answer; an error status is an error.
    async fn call(
        &self,
        operation: &'static str,
        method: Method,
        url: Url,
        body: Bytes,
    ) -> Result<(hyper::HeaderMap, Bytes), S3Error> {
        let response = self.send(operation, method, url, body).await?;
        let status = response.status();
        let (parts, body) = response.into_parts();
        let body = read_body(operation, body).await?;
        if !status.is_success() {
            return Err(status_error(operation, status.as_u16(), &body));
        }
        Ok((parts.headers, body))
    }
}

async fn read_body(operation: &'static str, body: Incoming) -> Result<Bytes, S3Error> {
    tokio::time::timeout(REQUEST_TIMEOUT, body.collect())
        .await
        .map_err(|_| S3Error::Timeout { operation })?
        .map(|collected| collected.to_bytes())
        .map_err(|e| S3Error::Transport {
            operation,
            source: Box::new(e),
        })
}

fn status_error(operation: &'static str, status: u16, body: &[u8]) -> S3Error {
    let mut body = String::from_utf8_lossy(body).into_owned();
    body.truncate(512);
    S3Error::Status {
        operation,
        status,
        body,
    }
}

/// An upload under way: single PUT when everything fits in one part,
/// multipart otherwise.
pub struct Upload {
    client: S3Client,
    key: String,
    part_size: usize,
    buffer: BytesMut,
    multipart: Option<Multipart>,
    size: u64,
}

struct Multipart {
    upload_id: String,
    etags: Vec<String>,
}

impl Upload {
    /// Adds bytes; sends a part whenever one is full.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), S3Error> {
        self.buffer.extend_from_slice(chunk);
        self.size += chunk.len() as u64;
        while self.buffer.len() >= self.part_size {
            let part = self.buffer.split_to(self.part_size).freeze();
            self.send_part(part).await?;
        }
        Ok(())
    }

    /// Sends what is left and completes the upload; returns the size written.
    /// On failure a multipart upload is aborted.
    pub async fn finish(mut self) -> Result<u64, S3Error> {
        let result = self.complete().await;
        if result.is_err() {
            self.abort().await;
        }
        result.map(|()| self.size)
    }

    /// Gives up: aborts a multipart upload so its parts are freed.
    pub async fn abort(&mut self) {
        let Some(multipart) = self.multipart.take() else {
            return;
        };
        let client = &self.client;
        let action = client.bucket.abort_multipart_upload(
            Some(&client.credentials),
            &self.key,
            &multipart.upload_id,
        );
        let url = action.sign(SIGNATURE_LIFETIME);
        if let Err(error) = client
            .call("AbortMultipartUpload", Method::DELETE, url, Bytes::new())
            .await
        {
            tracing::warn!(%error, key = %self.key, "aborting the multipart upload failed");
        }
    }

    async fn complete(&mut self) -> Result<(), S3Error> {
        let rest = std::mem::take(&mut self.buffer).freeze();
        let client = self.client.clone();
        if self.multipart.is_none() {
            let action = client
                .bucket
                .put_object(Some(&client.credentials), &self.key);
            client
                .call(
                    "PutObject",
                    Method::PUT,
                    action.sign(SIGNATURE_LIFETIME),
                    rest,
                )
                .await?;
            return Ok(());
        }
        if !rest.is_empty() {
            self.send_part(rest).await?;
        }
        let multipart = self.multipart.as_ref().expect("checked above");
        let action = client.bucket.complete_multipart_upload(
            Some(&client.credentials),
            &self.key,
            &multipart.upload_id,
            multipart.etags.iter().map(String::as_str),
        );
        let url = action.sign(SIGNATURE_LIFETIME);
        let body = Bytes::from(action.body());
        client
            .call("CompleteMultipartUpload", Method::POST, url, body)
            .await?;
        Ok(())
    }

    async fn send_part(&mut self, part: Bytes) -> Result<(), S3Error> {
        let client = self.client.clone();
        if self.multipart.is_none() {
            let action =
                CreateMultipartUpload::new(&client.bucket, Some(&client.credentials), &self.key);
            let (_, body) = client
                .call(
                    "CreateMultipartUpload",
                    Method::POST,
                    action.sign(SIGNATURE_LIFETIME),
                    Bytes::new(),
                )
                .await?;
            let parsed = CreateMultipartUpload::parse_response(&String::from_utf8_lossy(&body))
                .map_err(|e| S3Error::Response {
                    operation: "CreateMultipartUpload",
                    reason: e.to_string(),
                })?;
            self.multipart = Some(Multipart {
                upload_id: parsed.upload_id().to_string(),
                etags: Vec::new(),
            });
        }
        let multipart = self.multipart.as_mut().expect("created above");
        let number = u16::try_from(multipart.etags.len() + 1).map_err(|_| S3Error::Response {
            operation: "UploadPart",
            reason: "more than 65535 parts; use a larger part size".into(),
        })?;
        let action = client.bucket.upload_part(
            Some(&client.credentials),
            &self.key,
            number,
            &multipart.upload_id,
        );
        let (headers, _) = client
            .call(
                "UploadPart",
                Method::PUT,
                action.sign(SIGNATURE_LIFETIME),
                part,
            )
            .await?;
        let etag = headers
            .get(hyper::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .ok_or(S3Error::Response {
                operation: "UploadPart",
                reason: "no ETag header".into(),
            })?;
        multipart.etags.push(etag.to_string());
        Ok(())
    }
}
