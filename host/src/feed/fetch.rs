//! Downloads from a feed: GETs with a deadline, a byte cap, and ETag revalidation.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::header::{ETAG, IF_NONE_MATCH, RETRY_AFTER};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::Error;

/// What a GET brought back.
pub enum Fetched {
    /// The server said the document has not changed since the ETag we sent.
    NotModified,
    /// The body (at most the cap) and its ETag, if the server gave one.
    Body {
        /// The bytes.
        bytes: Bytes,
        /// The validator for the next request.
        etag: Option<String>,
    },
}

/// Why a GET failed, with what the server asked for, if anything.
#[derive(Debug)]
pub struct FetchError {
    /// What went wrong.
    pub error: Error,
    /// How long the server asked us to wait (`Retry-After` on 429 or 503).
    pub retry_after: Option<Duration>,
}

impl From<hashgate_trust::Error> for FetchError {
    fn from(error: hashgate_trust::Error) -> Self {
        Error::from(error).into()
    }
}

impl From<Error> for FetchError {
    fn from(error: Error) -> Self {
        FetchError {
            error,
            retry_after: None,
        }
    }
}

/// An HTTP(S) client for one feed.
pub struct Fetcher {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
    base: String,
    timeout: Duration,
}

impl Fetcher {
    /// A client for the feed whose manifest is at `manifest_url`; files are resolved
    /// against its directory. https feeds are verified against the platform's roots plus
    /// `extra_ca`.
    pub fn new(
        manifest_url: &str,
        extra_ca: Option<&std::path::Path>,
        timeout: Duration,
    ) -> Result<Fetcher, Error> {
        let uri: Uri = crate::tls::peer_url("feed URL", manifest_url)?;
        let base = match manifest_url.rfind('/') {
            Some(i) if i > uri.scheme_str().map_or(0, str::len) + 2 => &manifest_url[..=i],
            _ => manifest_url,
        };
        let connector = crate::tls::connector(&uri, extra_ca, timeout)?;
        Ok(Fetcher {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base: base.to_string(),
            timeout,
        })
    }

    /// The manifest's URL is `base` + its file name; other files are relative to `base`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// GETs `url`, reading at most `cap` bytes of the body (the rest is never read: the
    /// connection is dropped), all within the deadline. Any status but 200 (and 304 when
    /// `etag` was sent) is an error.
    pub async fn get(
        &self,
        url: &str,
        etag: Option<&str>,
        cap: u64,
    ) -> Result<Fetched, FetchError> {
        match tokio::time::timeout(self.timeout, self.get_inner(url, etag, cap)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Feed(format!(
                "{url}: no complete answer within {:?}",
                self.timeout
            ))
            .into()),
        }
    }

    async fn get_inner(
        &self,
        url: &str,
        etag: Option<&str>,
        cap: u64,
    ) -> Result<Fetched, FetchError> {
        let mut req = Request::get(url);
        if let Some(etag) = etag {
            req = req.header(IF_NONE_MATCH, etag);
        }
        let req = req
            .body(Empty::new())
            .map_err(|e| Error::Feed(format!("{url}: {e}")))?;
        let response = self
            .client
            .request(req)
            .await
            .map_err(|e| Error::Feed(format!("{url}: {e:#}")))?;
        let status = response.status();
        if status == StatusCode::NOT_MODIFIED && etag.is_some() {
            return Ok(Fetched::NotModified);
        }
        if status != StatusCode::OK {
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(FetchError {
                error: Error::Feed(format!("{url}: the server answered {status}")),
                retry_after,
            });
        }
        let etag = response
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = response.into_body();
        let mut bytes = BytesMut::new();
        while (bytes.len() as u64) < cap {
            match body.frame().await {
                None => break,
                Some(Err(e)) => {
                    return Err(Error::Feed(format!("{url}: body broke off: {e}")).into())
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let room = (cap - bytes.len() as u64) as usize;
                        if data.len() > room {
                            tracing::warn!(
                                url,
                                cap,
                                "the server sent more than listed; cut at the listed length"
                            );
                        }
                        bytes.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
            }
        }
        Ok(Fetched::Body {
            bytes: bytes.freeze(),
            etag,
        })
    }
}
