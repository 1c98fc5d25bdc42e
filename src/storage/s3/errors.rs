//! SDK errors reduced to `StorageError`: one line with the service's code
//! and message, never a debug dump; what is retryable and what means access
//! denied.

use super::*;

/// What a failed SDK call tells us, reduced to what matters.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) status: Option<u16>,
    pub(super) code: Option<String>,
    /// One line: `Code: message (HTTP 503)` or the error chain.
    pub(super) message: String,
    pub(super) retryable: bool,
    /// `x-amz-bucket-region` of the response, when the store said it.
    pub(super) bucket_region: Option<String>,
}

pub(super) const RETRYABLE_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "ConditionalRequestConflict",
];

pub(super) const ACCESS_CODES: &[&str] = &[
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "AllAccessDisabled",
];

/// `Display` of an error and its sources, joined with `: `, skipping parts
/// already said. Never `Debug`.
pub(super) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts
        .join(": ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) fn failure<E>(err: SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let bucket_region = err
        .raw_response()
        .and_then(|r| r.headers().get("x-amz-bucket-region"))
        .map(str::to_string);
    match &err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let code = ctx.err().code().map(str::to_string);
            let msg = ctx.err().message().unwrap_or("").trim();
            let message = match (&code, msg.is_empty()) {
                (Some(c), false) => format!("{c}: {msg} (HTTP {status})"),
                (Some(c), true) => format!("{c} (HTTP {status})"),
                (None, _) => {
                    // No error code: an answer the SDK could not read (e.g. a
                    // 200 whose body does not parse). Say why.
                    let chain = error_chain(ctx.err());
                    let detail = chain
                        .strip_prefix("unhandled error")
                        .map_or(chain.as_str(), |d| d.trim_start_matches(": "));
                    if detail.is_empty() {
                        format!("HTTP {status}")
                    } else {
                        format!("HTTP {status}: {detail}")
                    }
                }
            };
            let retryable = status >= 500
                || status == 429
                || code
                    .as_deref()
                    .is_some_and(|c| RETRYABLE_CODES.contains(&c));
            Failure {
                status: Some(status),
                code,
                message,
                retryable,
                bucket_region,
            }
        }
        SdkError::TimeoutError(_) => Failure {
            status: None,
            code: None,
            message: format!("timed out: {}", error_chain(&err)),
            retryable: true,
            bucket_region,
        },
        SdkError::DispatchFailure(d) => Failure {
            status: None,
            code: None,
            retryable: !d.is_user(),
            message: error_chain(&err),
            bucket_region,
        },
        SdkError::ResponseError(_) => Failure {
            status: err.raw_response().map(|r| r.status().as_u16()),
            code: None,
            message: error_chain(&err),
            retryable: true,
            bucket_region,
        },
        _ => Failure {
            status: None,
            code: None,
            message: error_chain(&err),
            retryable: false,
            bucket_region,
        },
    }
}

pub(super) fn service(
    op: &'static str,
    key: &str,
    message: impl Into<String>,
    retryable: bool,
) -> StorageError {
    StorageError::Service {
        op,
        key: key.to_string(),
        message: message.into(),
        retryable,
    }
}

/// A CompleteMultipartUpload answer the SDK could not read but that is a
/// success: HTTP 200 with an `<ETag>` and no `<Error>`. moto 5.2 names the
/// root element `CompleteMultipartUploadResponse` instead of
/// `CompleteMultipartUploadResult`. The object's size is checked afterwards.
pub(super) fn confirmed_despite_parse_error(
    err: &SdkError<
        aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadError,
        HttpResponse,
    >,
) -> bool {
    let SdkError::ServiceError(ctx) = err else {
        return false;
    };
    if ctx.raw().status().as_u16() != 200 || ctx.err().code().is_some() {
        return false;
    }
    let Some(body) = ctx.raw().body().bytes() else {
        return false;
    };
    let body = String::from_utf8_lossy(body);
    body.contains("<ETag>") && !body.contains("<Error>")
}
