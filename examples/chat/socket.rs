//! One chat connection: answers the validated, authorized messages of its user and forwards
//! what other members post to the dialogs it joined.

use std::{fmt, sync::Arc};

use axum::extract::ws::{Message, WebSocket};
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tower::Service;
use wsguard::{conn_limit::HygieneSocket, GuardedSocket, Inbound, Verdict};

use crate::hub::{ClientMsg, Hub, OUTBOX};

/// Serves one guarded socket until it ends. The guards (rate, validation, authorization,
/// hygiene) already ran: only admitted messages of the protocol arrive here, parsed once.
pub async fn serve<Svc>(mut socket: GuardedSocket<HygieneSocket<WebSocket>, Svc>, hub: Arc<Hub>)
where
    Svc: Service<Inbound<Message>, Response = Verdict<Message>>,
    Svc::Error: fmt::Display,
{
    let Some(user) = socket
        .connection()
        .principal()
        .map(|p| p.as_str().to_owned())
    else {
        // The handshake layers always set the principal; without one there is no chat.
        return;
    };
    let (outbox, mut inbox) = mpsc::channel::<Arc<str>>(OUTBOX);
    let mut session = hub.connect(user, outbox);
    loop {
        tokio::select! {
            next = socket.next_admitted() => {
                let Some(Ok(mut admitted)) = next else { break };
                // Control frames carry no command, nor (with --dry-run) a message the
                // validation would refuse: it comes unparsed, and is ignored.
                let Some(command) = admitted.take_parsed::<ClientMsg>() else { continue };
                if let Some(answer) = session.handle(command) {
                    if socket.send(Message::text(answer.to_json())).await.is_err() {
                        break;
                    }
                }
            }
            Some(text) = inbox.recv() => {
                if socket.send(Message::text(&*text)).await.is_err() {
                    break;
                }
            }
        }
    }
    // Leaving every dialog; the connection's slots are released when `socket` drops.
    drop(session);
}
