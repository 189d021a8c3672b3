//! The connection scope over real sockets: a guard placed in the scope by a layer is dropped
//! exactly when the upgraded socket ends, through both hand-offs, however the socket ends.
//!
//! The contract is written once, in `wsguard_test_kit::handoff::contract`, and run here
//! against each hand-off: `wsguard_core::axum::GuardedUpgrade` and
//! `wsguard_core::tungstenite::GuardedUpgrade` (every failure names the hand-off).
#![cfg(all(feature = "axum", feature = "tokio-tungstenite"))]

use wsguard_core::{Reason, Rejection};
use wsguard_test_kit::handoff::{contract, HandOff};

#[tokio::test]
async fn scope_ends_with_the_socket() {
    for hand_off in HandOff::BOTH {
        contract::scope_ends_with_the_socket(hand_off).await;
    }
}

#[tokio::test]
async fn deferred_rejection_closes_without_calling_the_handler() {
    // Each deferred rejection, and the close it must get, on each hand-off.
    let deferred = [
        (Reason::TokenExpired, 4440, "token expired"),
        (Reason::TooManyConnections, 4429, "too many connections"),
    ];
    for hand_off in HandOff::BOTH {
        for (reason, code, text) in deferred {
            contract::deferred_rejection_closes_without_calling_the_handler(
                hand_off,
                Rejection::new(reason),
                code,
                text,
            )
            .await;
        }
    }
}

#[tokio::test]
async fn non_handshakes_are_refused_with_their_status() {
    for hand_off in HandOff::BOTH {
        contract::non_handshakes_are_refused_with_their_status(hand_off).await;
    }
}
