//! The requests the gateway makes to an S3 origin on its own account, SigV4-signed with
//! the `[s3]` credentials: reading a copy's source (`s3:GetObject`), aborting a refused
//! upload (`s3:AbortMultipartUpload`) and deleting a copy that turned out listed
//! (`s3:DeleteObject`). Nothing else is needed, so nothing else should be granted.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response};

use super::super::body::{full, GatewayBody};
use super::super::{Backend, Gateway};
use super::ops::CopySource;

/// The credentials the gateway signs its own S3 requests with.
#[derive(Clone, Debug)]
pub struct S3Credentials {
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
    /// Region the origin signs for (`us-east-1` for most S3-compatible stores).
    pub region: String,
}

/// Where on the origin a request goes: the `Host` it names (the origin routes
/// virtual-hosted buckets on it) and the path and query.
#[derive(Clone, Debug)]
pub struct Target {
    /// The `Host` header.
    pub host: String,
    /// Path and query, encoded.
    pub path_and_query: String,
}

impl Target {
    /// The object a copy reads, path-style on the origin's own authority (a
    /// virtual-hosted-only origin cannot be read this way; most stores take both).
    pub fn source(gw: &Gateway, source: &CopySource) -> Target {
        Target {
            host: origin(gw)
                .authority()
                .map_or("", |a| a.as_str())
                .to_string(),
            path_and_query: source.path_and_query(),
        }
    }

    /// The object or upload a client's request names, as it named it: its `Host` and
    /// path, with `query` instead of its query.
    pub fn of_request(gw: &Gateway, parts: &hyper::http::request::Parts, query: &str) -> Target {
        let host = super::super::request_host(&parts.uri, &parts.headers)
            .map(str::to_string)
            .unwrap_or_else(|| {
                origin(gw)
                    .authority()
                    .map_or("", |a| a.as_str())
                    .to_string()
            });
        let mut path_and_query = parts.uri.path().to_string();
        if !query.is_empty() {
            path_and_query.push('?');
            path_and_query.push_str(query);
        }
        Target {
            host,
            path_and_query,
        }
    }
}

fn origin(gw: &Gateway) -> &hyper::Uri {
    match &gw.config.backend {
        Backend::Origin(origin) => origin,
        Backend::Store(_) => unreachable!("S3 mode needs an origin"),
    }
}

/// Occurs when a request of the gateway's own does not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// Occurs when the request cannot be built or signed.
    #[error("building the request: {0}")]
    Build(String),
    /// Occurs when the origin cannot be reached or breaks off.
    #[error("the origin failed: {0}")]
    Request(#[from] hyper_util::client::legacy::Error),
    /// Occurs when the origin does not answer within `origin_timeout_secs`.
    #[error("the origin did not answer in time")]
    Timeout,
}

/// Sends `method` to `target` with `headers`, signed with `credentials`; the origin's
/// answer (any status).
pub async fn send(
    gw: &Gateway,
    credentials: &S3Credentials,
    method: Method,
    target: &Target,
    headers: &[(HeaderName, HeaderValue)],
) -> Result<Response<Incoming>, OriginError> {
    let origin = origin(gw);
    let uri = format!(
        "{}://{}{}",
        origin.scheme_str().unwrap_or("http"),
        origin.authority().map_or("", |a| a.as_str()),
        target.path_and_query
    );
    let mut request = Request::builder()
        .method(method)
        .uri(&uri)
        .header(hyper::header::HOST, &target.host)
        .body(full(Bytes::new()))
        .map_err(|e| OriginError::Build(e.to_string()))?;
    for (name, value) in headers {
        request.headers_mut().insert(name.clone(), value.clone());
    }
    sign(&mut request, credentials, &target.host).map_err(|e| OriginError::Build(e.to_string()))?;
    match tokio::time::timeout(gw.config.origin_timeout, gw.client.request(request)).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(OriginError::Timeout),
    }
}

/// Sends `AbortMultipartUpload` for a refused upload, so its parts are deleted now. A
/// failure is logged: the upload is invisible either way.
pub async fn abort(
    gw: &Gateway,
    parts: &hyper::http::request::Parts,
    upload: &str,
    request_id: &str,
) {
    let Some(credentials) = &gw.config.s3 else {
        return;
    };
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("uploadId", upload)
        .finish();
    let target = Target::of_request(gw, parts, &query);
    match send(gw, credentials, Method::DELETE, &target, &[]).await {
        Ok(r) if r.status().is_success() => {
            tracing::info!(request_id, upload, "aborted the refused multipart upload")
        }
        Ok(r) => {
            tracing::warn!(request_id, upload, status = %r.status(), "aborting the refused multipart upload failed; it stays incomplete and invisible")
        }
        Err(e) => {
            tracing::warn!(request_id, upload, error = %e, "aborting the refused multipart upload failed; it stays incomplete and invisible")
        }
    }
}

fn sign(
    request: &mut Request<GatewayBody>,
    credentials: &S3Credentials,
    host: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use aws_sigv4::http_request::{
        sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
        SigningSettings, UriPathNormalizationMode,
    };
    let identity = aws_credential_types::Credentials::new(
        &credentials.access_key,
        &credentials.secret_key,
        None,
        None,
        "hashgate-config",
    )
    .into();
    // S3's own rules: the path is signed as sent, encoded once, not normalised.
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(&credentials.region)
        .name("s3")
        .time(std::time::SystemTime::now())
        .settings(settings)
        .build()?
        .into();
    // Signed as the origin will see it: with the Host header the request carries.
    let uri = format!(
        "http://{host}{}",
        request.uri().path_and_query().map_or("/", |p| p.as_str())
    );
    let headers: Vec<(&str, &str)> = request
        .headers()
        .iter()
        .filter(|(n, _)| *n != hyper::header::HOST)
        .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
        .collect();
    let signable = SignableRequest::new(
        request.method().as_str(),
        &uri,
        headers.into_iter(),
        SignableBody::Bytes(&[]),
    )?;
    let (instructions, _) = sign(signable, &params)?.into_parts();
    instructions.apply_to_request_http1x(request);
    Ok(())
}
