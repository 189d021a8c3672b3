//! The binding of a guard's per-connection state to its connection.

use std::sync::OnceLock;

use crate::ConnectionInfo;

/// The connection a guard's per-connection state belongs to, bound by the first message.
///
/// A guard of the message plane keeps per-connection state (a budget, a count of invalid
/// messages, the connection's key) in the service its layer builds for one socket. Built
/// once and cloned for every socket instead (a habit tower invites), such state would be
/// shared: one connection's budget spent by all, one user's messages charged to another.
/// `ConnectionBinding` makes that misuse fail safe: the state binds to the connection of
/// its first message, and [`check`](Self::check) says when a message comes from another
/// one, which the guard then refuses with [`foreign_connection`](super::foreign_connection) (close 1011 and an `error`
/// event) instead of mis-charging it.
///
/// ```
/// use wsguard_core::guard::ConnectionBinding;
/// # use wsguard_core::{Connection, ConnectionInfo};
/// # let mut ext = http::Extensions::new();
/// # let a = ConnectionInfo::new(&Connection::new(http::Uri::from_static("/ws"), &mut ext));
/// # let b = ConnectionInfo::new(&Connection::new(http::Uri::from_static("/ws"), &mut ext));
/// let binding = ConnectionBinding::new();
/// assert!(binding.check(&a));
/// assert!(binding.check(&a));
/// assert!(!binding.check(&b), "another connection's message");
/// ```
#[derive(Debug, Default)]
pub struct ConnectionBinding {
    bound: OnceLock<ConnectionInfo>,
}

impl ConnectionBinding {
    /// A binding to no connection yet.
    pub const fn new() -> Self {
        Self {
            bound: OnceLock::new(),
        }
    }

    /// Whether `info` is the bound connection, binding it if none is yet. One pointer
    /// comparison per message once bound.
    #[inline]
    pub fn check(&self, info: &ConnectionInfo) -> bool {
        self.bound.get_or_init(|| info.clone()).ptr_eq(info)
    }
}
