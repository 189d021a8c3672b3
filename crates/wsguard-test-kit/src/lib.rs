//! What the wsguard crates' tests share, written once. Not published.
//!
//! Every crate of the workspace tests its layers the same ways: alone, driven as a tower
//! service with built requests; over real sockets, with a real server on `127.0.0.1:0` and a
//! real tokio-tungstenite client; with its `tracing` events and its metrics captured; and,
//! for the stores, with a counting allocator. This crate holds those pieces, so that each
//! crate's `tests/` holds only what it tests:
//!
//! - [`logs`]: a `tracing` subscriber that captures formatted events in memory;
//! - [`metrics`]: a `metrics` recorder, and reads of its counters by name and labels;
//! - [`service`]: request builders and counting inner services;
//! - [`server`]: real axum and hyper 1 servers on `127.0.0.1:0`;
//! - [`client`]: a real tokio-tungstenite client and a raw HTTP/1.1 client;
//! - [`alloc`]: the counting allocator;
//! - [`poll`]: waiting, bounded, for what another task changes;
//! - [`handoff`]: the hand-off contract, run against both hand-offs.
//!
//! Every wait is bounded by [`WAIT`], every loop in count and time: a broken server fails a
//! test, it never hangs it.
//!
//! # Example
//!
//! ```
//! use wsguard_test_kit::{client, handoff::{self, HandOff, Upgrade}};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! for hand_off in HandOff::BOTH {
//!     let addr = handoff::serve(hand_off, Upgrade::default(), |_| {}, handoff::Echo).await;
//!     let mut ws = client::connect(addr, "/ws").await;
//!     client::round_trip(&mut ws, "hello").await;
//!     client::close(ws).await;
//! }
//! # }
//! ```
//!
//! Add it as a path-only dev-dependency (`cargo package` strips those from a published
//! crate's manifest):
//!
//! ```toml
//! [dev-dependencies]
//! wsguard-test-kit = { path = "../wsguard-test-kit" }
//! ```

use std::time::Duration;

pub mod alloc;
pub mod client;
pub mod handoff;
pub mod logs;
pub mod metrics;
pub mod poll;
pub mod server;
pub mod service;

/// How long any single step of a test may wait (a handshake, an answer, a close) before the
/// test fails: far longer than anything takes on loopback.
pub const WAIT: Duration = Duration::from_secs(10);

/// At most this many messages are read while waiting for one (a close frame, the end of a
/// stream), so that a peer that keeps talking fails the test instead of holding it.
pub const MAX_MESSAGES: usize = 100_000;
