//! The one place errors become HTTP responses. Consul answers errors with a
//! plain-text body and a status code; so do we, with text a user can act on.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use weft_acl::login::LoginError;
use weft_server::ca::CaError;
use weft_server::login::LoginFailure;
use weft_server::ServerError;

/// An API error, already classified by what the client should do about it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong; retrying it unchanged will fail again.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts what is stored (creating what already exists).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("Permission denied: {0}")]
    Forbidden(String),
    /// The request's ACL token is not one the cluster knows (Consul's
    /// wording; clients match on it).
    #[error("ACL not found")]
    AclNotFound,
    /// ACLs are off: Consul answers every `/v1/acl/*` so.
    #[error("ACL support disabled")]
    AclDisabled,
    /// Over a rate limit: retry later.
    #[error("{0}")]
    TooManyRequests(String),
    /// Not ready to serve this yet (e.g. the mesh CA is being set up).
    #[error("{0}")]
    Unavailable(String),
    /// This agent could not finish what was asked (e.g. a graceful leave).
    #[error("{0}")]
    Internal(String),
    /// A login or logout refused (Consul's texts).
    #[error(transparent)]
    Login(#[from] LoginError),
    /// The cluster could not serve it (no leader, leader unreachable, ...).
    #[error(transparent)]
    Cluster(#[from] ServerError),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Forbidden(_) | ApiError::AclNotFound => StatusCode::FORBIDDEN,
            ApiError::AclDisabled => StatusCode::UNAUTHORIZED,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Cluster(ServerError::PeerNotFound(_) | ServerError::Invalid(_)) => StatusCode::BAD_REQUEST,
            ApiError::Cluster(ServerError::Unauthenticated(_) | ServerError::PermissionDenied(_)) => {
                StatusCode::FORBIDDEN
            }
            ApiError::Cluster(_) => StatusCode::INTERNAL_SERVER_ERROR,
            // Consul answers a JWT its validator refused with a 500; a
            // refusal of what the caller presented is a 403 here.
            ApiError::Login(LoginError::KeysUnavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Login(_) => StatusCode::FORBIDDEN,
        }
    }
}

impl From<LoginFailure> for ApiError {
    fn from(failure: LoginFailure) -> Self {
        match failure {
            LoginFailure::Refused(error) => ApiError::Login(error),
            LoginFailure::Cluster(error) => ApiError::Cluster(error),
        }
    }
}

impl From<CaError> for ApiError {
    fn from(error: CaError) -> Self {
        match error {
            CaError::NotRegistered(reason) => ApiError::Forbidden(reason),
            CaError::RateLimited => ApiError::TooManyRequests(error.to_string()),
            CaError::BadCsr(_) => ApiError::BadRequest(error.to_string()),
            CaError::NotInitialized => ApiError::Unavailable(error.to_string()),
            CaError::Signing(reason) => ApiError::Cluster(ServerError::Fatal(reason)),
            CaError::Cluster(error) => ApiError::Cluster(error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, %status, "request refused");
        }
        (status, [("content-type", "text/plain; charset=utf-8")], self.to_string()).into_response()
    }
}
