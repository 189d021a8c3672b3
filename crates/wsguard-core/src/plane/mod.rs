// The message plane: every inbound data frame of an upgraded socket goes through a tower

mod armed;
mod connection;
mod error_frame;
mod hygiene;
mod message;
mod socket;
#[cfg(test)]
mod tests;

pub use connection::ConnectionBinding;
pub use error_frame::{error_code, ErrorFrame, JsonErrorFrame};
pub use hygiene::{Hygiene, HygieneSocket, Shutdown, DEFAULT_MAX_LIFETIME};
pub use message::{foreign_connection, Admit, Admitted, Inbound, Verdict};
pub use socket::{GuardedSocket, MAX_REPLIES_PER_SECOND};
