// Close mode: a rejection decided on the handshake and delivered after the upgrade, as a

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use http::{Extensions, Response};

use crate::reject::{respond, OnRejection, Rejection};

/// A rejection decided on the handshake but delivered after the upgrade, as a close frame.
///
/// Browsers cannot read the status of a refused WebSocket handshake, only a close code. In
/// the opt-in "close" mode of the authentication and limit layers, a rejected WebSocket
/// handshake is let through with this marker in its extensions; the hand-off completes the
/// upgrade, sends the close frame and never calls the application's socket callback.
///
/// If no hand-off delivers it (the application upgraded by other means, or answered
/// without upgrading), the layer must answer the HTTP form instead: see [`finish_deferred`].
///
/// Close mode: a rejection decided on the handshake and delivered after the upgrade, as a
/// close frame, for browsers (which cannot read a refused handshake's status).
///
/// A handshake layer in close mode marks the request with [`PendingRejection::defer`]
/// instead of answering; the hand-off sees the marker, completes the upgrade, sends the close
/// frame through the [closing handshake](crate::guard::Closing) and never calls the application's
/// socket callback. The layer then checks the response with [`finish_deferred`], which
/// answers the HTTP form when no hand-off took the rejection over (fail closed).
#[derive(Clone, Debug)]
pub struct PendingRejection {
    rejection: Rejection,
    delivered: Arc<AtomicBool>,
}

impl PendingRejection {
    /// Marks `extensions` to be closed with `rejection` after the upgrade, unless an outer
    /// layer deferred a rejection already (the first one decided wins). Returns the marker
    /// that is in force.
    ///
    /// Returns `None`, and marks nothing, for a reason that must never be answered by
    /// accepting the upgrade first (one without a close code: [`Reason::OriginNotAllowed`](crate::Reason::OriginNotAllowed)):
    /// the caller answers over HTTP instead.
    pub fn defer(extensions: &mut Extensions, rejection: Rejection) -> Option<Self> {
        rejection.close_code()?;
        Some(
            extensions
                .get_or_insert_with(|| Self {
                    rejection,
                    delivered: Arc::default(),
                })
                .clone(),
        )
    }

    /// The rejection to deliver.
    pub const fn rejection(&self) -> &Rejection {
        &self.rejection
    }

    /// Records that a hand-off will deliver the rejection as a close frame.
    pub fn mark_delivered(&self) {
        self.delivered.store(true, Ordering::Release);
    }

    /// Whether a hand-off took the rejection over.
    pub fn is_delivered(&self) -> bool {
        self.delivered.load(Ordering::Acquire)
    }
}

/// Completes a deferred rejection: keeps `res` if a hand-off took `pending` over (with the
/// [`Rejection`] in its extensions, as every refusal's response has it), otherwise
/// logs the misconfiguration and answers the HTTP (or gRPC) form through `policy`.
///
/// This is what makes the close mode fail closed: an application that does not use a
/// wsguard hand-off gets the plain rejection, never an unguarded socket.
pub fn finish_deferred<B, P>(
    res: Response<B>,
    pending: &PendingRejection,
    policy: &P,
) -> Response<B>
where
    P: OnRejection<B>,
{
    if pending.is_delivered() {
        // The upgrade goes out (to be closed with the code), marked with the rejection it
        // carries, as a refusal's response is: outer layers (a failure penalty, logs) see
        // why.
        let mut res = res;
        res.extensions_mut().insert(*pending.rejection());
        return res;
    }
    if res.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        tracing::error!(
            reason = pending.rejection().reason().as_str(),
            "a rejected handshake was upgraded without a wsguard hand-off; refusing it over HTTP"
        );
    }
    respond(policy, *pending.rejection())
}
