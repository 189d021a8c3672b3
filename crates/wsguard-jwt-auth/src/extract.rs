//! axum extractors for [`Claims`] and [`VerifiedToken`].

use std::{convert::Infallible, fmt};

use axum::{
    extract::{FromRequestParts, OptionalFromRequestParts},
    response::{IntoResponse, Response},
};
use http::request::Parts;
use wsguard_core::{Reason, Rejection};

use crate::{Claims, VerifiedToken};

/// The rejection of the [`Claims`] and [`VerifiedToken`] extractors: the request did not go
/// through a [`JwtAuthLayer`](crate::JwtAuthLayer) (with this claims type).
///
/// Answers 500 and logs an error: this is a configuration mistake, not a client's. Use
/// `Option<Claims<C>>` on routes where authentication is optional.
#[derive(Debug, Clone, Copy)]
pub struct MissingClaims {
    what: &'static str,
}

impl fmt::Display for MissingClaims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} missing: is the JwtAuthLayer in front of this route?",
            self.what
        )
    }
}

impl std::error::Error for MissingClaims {}

impl IntoResponse for MissingClaims {
    fn into_response(self) -> Response {
        tracing::error!(
            target: "wsguard_jwt_auth",
            missing = self.what,
            "extractor used without the JwtAuthLayer that provides it"
        );
        Rejection::new(Reason::Internal).to_http_response()
    }
}

impl<S, C> FromRequestParts<S> for Claims<C>
where
    S: Send + Sync,
    C: Clone + Send + Sync + 'static,
{
    type Rejection = MissingClaims;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or(MissingClaims { what: "claims" })
    }
}

impl<S, C> OptionalFromRequestParts<S> for Claims<C>
where
    S: Send + Sync,
    C: Clone + Send + Sync + 'static,
{
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Self>().cloned())
    }
}

impl<S> FromRequestParts<S> for VerifiedToken
where
    S: Send + Sync,
{
    type Rejection = MissingClaims;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or(MissingClaims {
                what: "verified token",
            })
    }
}

impl<S> OptionalFromRequestParts<S> for VerifiedToken
where
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Self>().cloned())
    }
}
