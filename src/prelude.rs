//! The names most applications need: `use wsguard::prelude::*;`.

pub use wsguard_core::{
    Access, ClientIp, ClientIpKey, Connection, GlobalKey, Principal, PrincipalKey, Reason,
    Rejection,
};

#[cfg(feature = "axum")]
pub use wsguard_core::axum::GuardedUpgrade;

#[cfg(feature = "plane")]
pub use wsguard_core::{GuardedSocket, Hygiene, Shutdown, Verdict};

#[cfg(feature = "client-ip")]
pub use wsguard_client_ip::{ClientIpLayer, TrustedProxies};

#[cfg(feature = "origin")]
pub use wsguard_origin::{AllowList, OriginGuardLayer};

#[cfg(feature = "jwt-auth")]
pub use wsguard_jwt_auth::{Algorithm, Claims, JwtAuthLayer, TokenSource, VerifyingKey};

#[cfg(feature = "conn-limit")]
pub use wsguard_conn_limit::{ConnLimitLayer, Limit};

#[cfg(feature = "msg-rate")]
pub use wsguard_msg_rate::{rate, Budget, MessageRateLimitLayer};

#[cfg(feature = "schema-validate")]
pub use wsguard_schema_validate::ValidateMessageLayer;

#[cfg(feature = "plane")]
pub use crate::{Guard, SocketGuard};
