//! What the tests share: the seeds' command type and its authorization.

#![allow(dead_code, unreachable_pub)]

use std::{collections::HashMap, future::Future, sync::Arc};

use serde::Deserialize;
use wsguard_core::ConnectionInfo;
use wsguard_schema_validate::Access;

/// The commands a client of the seeds' system may send.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    Ping,
    Subscribe { session_id: String },
    Unsubscribe { session_id: String },
}

impl Command {
    pub fn session_id(&self) -> Option<&str> {
        match self {
            Self::Ping => None,
            Self::Subscribe { session_id } | Self::Unsubscribe { session_id } => Some(session_id),
        }
    }
}

/// Who owns which session, as a database would answer (asynchronously).
#[derive(Clone, Default)]
pub struct Sessions(Arc<HashMap<String, String>>);

impl Sessions {
    pub fn new(owners: &[(&str, &str)]) -> Self {
        Self(Arc::new(
            owners
                .iter()
                .map(|(s, o)| (s.to_string(), o.to_string()))
                .collect(),
        ))
    }

    /// The seeds' rule: a user may only subscribe to (or leave) sessions they own.
    pub fn authorize(
        &self,
    ) -> impl Fn(&ConnectionInfo, &Command) -> std::pin::Pin<Box<dyn Future<Output = Access> + Send>>
           + Send
           + Sync
           + 'static {
        let sessions = self.clone();
        move |conn: &ConnectionInfo, command: &Command| {
            let user = conn.principal().map(|p| p.as_str().to_owned());
            let session = command.session_id().map(str::to_owned);
            let sessions = sessions.clone();
            Box::pin(async move {
                tokio::task::yield_now().await; // as a database lookup would
                match session {
                    None => Access::Allow,
                    Some(session) => {
                        Access::from(user.is_some() && sessions.0.get(&session) == user.as_ref())
                    }
                }
            })
        }
    }
}

pub const INVALID: &str = r#"{"type":"error","code":"invalid_message"}"#;
pub const FORBIDDEN: &str = r#"{"type":"error","code":"forbidden"}"#;

/// Hostile messages, each carrying `EVIL` so that an echo of the input would show.
pub fn hostile_messages() -> Vec<(&'static str, String)> {
    vec![
        (
            "invalid JSON",
            r#"{"type":"subscribe","session_id":"EVIL"#.into(),
        ),
        ("not JSON at all", "EVIL <script>".into()),
        ("unknown type", r#"{"type":"EVIL_drop_tables"}"#.into()),
        ("missing field", r#"{"type":"subscribe"}"#.into()),
        (
            "unknown field (deny_unknown_fields)",
            r#"{"type":"subscribe","session_id":"s1","EVIL":true}"#.into(),
        ),
        (
            "10,000-deep nesting",
            format!(
                r#"{{"type":"ping","EVIL":{}{}}}"#,
                "[".repeat(10_000),
                "]".repeat(10_000)
            ),
        ),
        (
            "1 MiB string under a 64 KiB limit",
            format!(
                r#"{{"type":"subscribe","session_id":"EVIL{}"}}"#,
                "A".repeat(1 << 20)
            ),
        ),
    ]
}
