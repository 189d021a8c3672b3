//! The connection scope over real sockets: a guard placed in the scope by a layer is dropped
//! exactly when the upgraded socket ends, through both hand-offs, however the socket ends.
//!
//! The contract is written once, in `wsguard_test_kit::handoff::contract`, and run here
//! against each hand-off: `wsguard_core::axum::GuardedUpgrade` and
//! `wsguard_core::tungstenite::GuardedUpgrade`.
#![cfg(all(feature = "axum", feature = "tokio-tungstenite"))]

use wsguard_core::{Reason, Rejection};
use wsguard_test_kit::handoff::{contract, HandOff};

/// The deferred rejections each hand-off is checked with, and the close each must get.
const DEFERRED: [(Reason, u16, &str); 2] = [
    (Reason::TokenExpired, 4440, "token expired"),
    (Reason::TooManyConnections, 4429, "too many connections"),
];

mod axum_handoff {
    use super::*;

    #[tokio::test]
    async fn scope_ends_with_the_socket() {
        contract::scope_ends_with_the_socket(HandOff::Axum).await;
    }

    #[tokio::test]
    async fn deferred_rejection_closes_without_calling_the_handler() {
        for (reason, code, text) in DEFERRED {
            contract::deferred_rejection_closes_without_calling_the_handler(
                HandOff::Axum,
                Rejection::new(reason),
                code,
                text,
            )
            .await;
        }
    }

    #[tokio::test]
    async fn non_handshakes_are_refused_with_their_status() {
        contract::non_handshakes_are_refused_with_their_status(HandOff::Axum).await;
    }
}

mod hyper_handoff {
    use super::*;

    #[tokio::test]
    async fn scope_ends_with_the_socket() {
        contract::scope_ends_with_the_socket(HandOff::Hyper).await;
    }

    #[tokio::test]
    async fn deferred_rejection_closes_without_calling_the_handler() {
        for (reason, code, text) in DEFERRED {
            contract::deferred_rejection_closes_without_calling_the_handler(
                HandOff::Hyper,
                Rejection::new(reason),
                code,
                text,
            )
            .await;
        }
    }

    #[tokio::test]
    async fn non_handshakes_are_refused_with_their_status() {
        contract::non_handshakes_are_refused_with_their_status(HandOff::Hyper).await;
    }
}
