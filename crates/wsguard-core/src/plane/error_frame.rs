//! The error frames that answer refused messages.

use crate::{Reason, Rejection};

/// The text of the error frame that answers a refused message.
///
/// Implemented by [`JsonErrorFrame`] (the default of the plane's guards) and by any
/// `Fn(&Rejection) -> Option<String> + Clone`; `None` drops the message without an answer.
/// The frame must not echo the message: it is sent to whoever sent it, possibly a script
/// probing for reflected input.
pub trait ErrorFrame: Clone + Send + Sync + 'static {
    /// The frame answering a message refused for `rejection`, or `None` for no answer.
    fn error_frame(&self, rejection: &Rejection) -> Option<String>;
}

impl<F> ErrorFrame for F
where
    F: Fn(&Rejection) -> Option<String> + Clone + Send + Sync + 'static,
{
    fn error_frame(&self, rejection: &Rejection) -> Option<String> {
        self(rejection)
    }
}

/// The default error frame: `{"type":"error","code":"<code>"}` with [`error_code`]'s code.
///
/// It says nothing about limits, counts or the message itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonErrorFrame;

impl ErrorFrame for JsonErrorFrame {
    fn error_frame(&self, rejection: &Rejection) -> Option<String> {
        Some(format!(
            r#"{{"type":"error","code":"{}"}}"#,
            error_code(rejection.reason())
        ))
    }
}

/// The code an error frame uses for `reason`: `rate_limited`, `invalid_message`,
/// `forbidden`, `message_too_large`, `unsupported_data`, or else [`Reason::as_str`].
///
/// Always `snake_case` ASCII, safe to put in JSON without escaping.
pub const fn error_code(reason: Reason) -> &'static str {
    match reason {
        Reason::RateExceeded => "rate_limited",
        other => other.as_str(),
    }
}
