//! The chat itself: the wire protocol, dialogs with their members, and fan-out to the
//! subscribers of a dialog. Nothing here knows about HTTP or the guards in front of it.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::cli::Members;

/// A message from a client: `{"type": ..., "payload": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    tag = "type",
    content = "payload",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum ClientMsg {
    /// `{"type":"ping"}`.
    Ping,
    /// `{"type":"subscribe","payload":{"dialog_id":"d1"}}`.
    Subscribe(DialogRef),
    /// `{"type":"unsubscribe","payload":{"dialog_id":"d1"}}`.
    Unsubscribe(DialogRef),
    /// `{"type":"send","payload":{"dialog_id":"d1","text":"hi"}}`.
    Send(Post),
}

/// The payload naming a dialog.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialogRef {
    /// The dialog.
    pub dialog_id: String,
}

/// The payload of a message sent to a dialog.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Post {
    /// The dialog.
    pub dialog_id: String,
    /// The text.
    pub text: String,
}

/// A message to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// The answer to a ping.
    Pong,
    /// The subscription is in place.
    Subscribed {
        /// The dialog.
        dialog_id: String,
    },
    /// The subscription is gone.
    Unsubscribed {
        /// The dialog.
        dialog_id: String,
    },
    /// A message in a dialog.
    Message {
        /// The dialog.
        dialog_id: String,
        /// The sender.
        from: String,
        /// The text.
        text: String,
    },
    /// A refusal.
    Error {
        /// What went wrong: `forbidden`, `not_found`, `invalid_message`, `rate_limited`.
        code: ErrorCode,
    },
}

/// The error codes of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The user may not do this.
    Forbidden,
    /// No such dialog.
    NotFound,
    /// The message is not part of the protocol.
    InvalidMessage,
    /// Over the message rate.
    RateLimited,
}

impl ServerMsg {
    /// The JSON text of the message.
    pub fn to_json(&self) -> String {
        // Serialising these plain enums cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{\"type\":\"error\"}"))
    }
}

/// How many messages may wait for a slow subscriber before further ones are dropped for it.
pub const OUTBOX: usize = 64;

/// A connection's outbox.
pub type Outbox = mpsc::Sender<Arc<str>>;

/// Dialogs, their members, and who is subscribed where.
#[derive(Debug)]
pub struct Hub {
    dialogs: BTreeMap<String, Members>,
    subscribers: Mutex<HashMap<String, HashMap<u64, Outbox>>>,
    next_conn: AtomicU64,
}

impl Hub {
    /// A hub over the given dialogs.
    pub fn new(dialogs: BTreeMap<String, Members>) -> Arc<Self> {
        Arc::new(Self {
            dialogs,
            subscribers: Mutex::default(),
            next_conn: AtomicU64::new(1),
        })
    }

    /// Whether `user` may subscribe to `dialog`: the per-message authorization rule.
    pub fn may_join(&self, user: &str, dialog: &str) -> Result<(), ErrorCode> {
        match self.dialogs.get(dialog) {
            None => Err(ErrorCode::NotFound),
            Some(members) if members.admits(user) => Ok(()),
            Some(_) => Err(ErrorCode::Forbidden),
        }
    }

    /// A new connection of `user`, which leaves every dialog when dropped.
    pub fn connect(self: &Arc<Self>, user: String, outbox: Outbox) -> Session {
        Session {
            id: self.next_conn.fetch_add(1, Ordering::Relaxed),
            user,
            outbox,
            joined: HashSet::new(),
            hub: self.clone(),
        }
    }

    fn publish(&self, dialog: &str, msg: &ServerMsg) {
        let text: Arc<str> = msg.to_json().into();
        let subscribers = self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for outbox in subscribers
            .get(dialog)
            .into_iter()
            .flat_map(HashMap::values)
        {
            // A full outbox means a slow reader: it misses this message rather than making
            // everyone else wait or memory grow.
            if outbox.try_send(text.clone()).is_err() {
                tracing::debug!("subscriber outbox full; message dropped for it");
            }
        }
    }
}

/// One connection's view of the hub.
#[derive(Debug)]
pub struct Session {
    id: u64,
    user: String,
    outbox: Outbox,
    joined: HashSet<String>,
    hub: Arc<Hub>,
}

impl Session {
    /// Handles one valid message; returns the direct answer, if any.
    pub fn handle(&mut self, msg: ClientMsg) -> Option<ServerMsg> {
        let error = |code| Some(ServerMsg::Error { code });
        match msg {
            ClientMsg::Ping => Some(ServerMsg::Pong),
            ClientMsg::Subscribe(DialogRef { dialog_id }) => {
                if let Err(code) = self.hub.may_join(&self.user, &dialog_id) {
                    return error(code);
                }
                self.hub
                    .subscribers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(dialog_id.clone())
                    .or_default()
                    .insert(self.id, self.outbox.clone());
                self.joined.insert(dialog_id.clone());
                Some(ServerMsg::Subscribed { dialog_id })
            }
            ClientMsg::Unsubscribe(DialogRef { dialog_id }) => {
                self.leave(&dialog_id);
                Some(ServerMsg::Unsubscribed { dialog_id })
            }
            ClientMsg::Send(Post { dialog_id, text }) => {
                if !self.joined.contains(&dialog_id) {
                    return error(ErrorCode::Forbidden);
                }
                let from = self.user.clone();
                self.hub.publish(
                    &dialog_id,
                    &ServerMsg::Message {
                        dialog_id: dialog_id.clone(),
                        from,
                        text,
                    },
                );
                None
            }
        }
    }

    fn leave(&mut self, dialog: &str) {
        if self.joined.remove(dialog) {
            let mut subscribers = self
                .hub
                .subscribers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(subs) = subscribers.get_mut(dialog) {
                subs.remove(&self.id);
                if subs.is_empty() {
                    subscribers.remove(dialog);
                }
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for dialog in std::mem::take(&mut self.joined) {
            self.joined.insert(dialog.clone());
            self.leave(&dialog);
        }
    }
}
