//! The `chat` example's command line. Every flag can also be set through an environment
//! variable `WSGUARD_<FLAG>` (for example `WSGUARD_JWT_SECRET`); a bad value is a clear error
//! and exit code 2, before anything listens.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};

/// A chat server with every wsguard protection on.
#[derive(Debug, Clone, Parser)]
#[command(name = "chat", version, about)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "WSGUARD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// HS256 secret for tokens (at least 32 bytes). Demo mode (a random secret, demo tokens
    /// printed) runs only when no key option at all is given: none of --jwt-secret,
    /// --jwt-public-key, --jwks-url, --oidc-issuer.
    #[arg(
        long,
        env = "WSGUARD_JWT_SECRET",
        hide_env_values = true,
        conflicts_with = "jwt_public_key"
    )]
    pub jwt_secret: Option<String>,

    /// PEM public key (RSA, EC P-256/P-384 or Ed25519); the algorithm follows from the key
    /// unless --jwt-alg is given. At most one of --jwt-secret and --jwt-public-key; either
    /// can be combined with --jwks-url.
    #[arg(long, env = "WSGUARD_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// Algorithm for --jwt-public-key (RS256, RS384, RS512, PS256, PS384, PS512, ES256,
    /// ES384, EdDSA).
    #[arg(
        long,
        env = "WSGUARD_JWT_ALG",
        requires = "jwt_public_key",
        conflicts_with = "jwt_secret"
    )]
    pub jwt_alg: Option<String>,

    /// JWKS URL (http or https) to fetch verification keys from (RFC 7517 section 5).
    #[arg(long, env = "WSGUARD_JWKS_URL")]
    pub jwks_url: Option<String>,

    /// Seconds between two fetches of the JWKS (--jwks-url, --oidc-issuer).
    #[arg(long, env = "WSGUARD_JWKS_REFRESH", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub jwks_refresh: u64,

    /// Shortest time, in seconds, between two JWKS fetches started by tokens (an unknown
    /// `kid`, or keys not loaded yet); also how soon a failed fetch is retried.
    #[arg(long, env = "WSGUARD_JWKS_COOLDOWN", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub jwks_cooldown: u64,

    /// OpenID Connect issuer URL: its keys are found through discovery
    /// (ISSUER/.well-known/openid-configuration, then its `jwks_uri`), refreshed like
    /// --jwks-url, and tokens they verify must have `iss` equal to ISSUER. Combines with
    /// --jwt-secret or --jwt-public-key; not with --jwks-url or --jwt-issuer.
    #[arg(
        long,
        env = "WSGUARD_OIDC_ISSUER",
        conflicts_with_all = ["jwks_url", "jwt_issuer"]
    )]
    pub oidc_issuer: Option<String>,

    /// Required `iss` claim.
    #[arg(long, env = "WSGUARD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim.
    #[arg(long, env = "WSGUARD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Allowed Origin (repeatable; wildcards like https://*.example.com). Default: the
    /// server's own http://127.0.0.1:PORT and http://localhost:PORT.
    #[arg(
        long = "allow-origin",
        env = "WSGUARD_ALLOW_ORIGIN",
        value_delimiter = ','
    )]
    pub allow_origins: Vec<String>,

    /// Refuse handshakes that carry no Origin header (by default non-browser clients, which
    /// send none, are allowed).
    #[arg(long, env = "WSGUARD_DENY_MISSING_ORIGIN")]
    pub deny_missing_origin: bool,

    /// Trusted reverse proxy network (repeatable CIDR). Default: none, so forwarding headers
    /// are ignored.
    #[arg(long = "trusted-proxy", env = "WSGUARD_TRUSTED_PROXY", value_delimiter = ',', value_parser = parse_cidr)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Concurrent connections per user.
    #[arg(long, env = "WSGUARD_MAX_CONNS_PER_USER", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_conns_per_user: u32,

    /// Concurrent connections per client IP.
    #[arg(long, env = "WSGUARD_MAX_CONNS_PER_IP", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_conns_per_ip: u32,

    /// Concurrent connections in all.
    #[arg(long, env = "WSGUARD_MAX_CONNS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_conns: u32,

    /// Handshakes per second per client IP (sustained; IPv6 per /64). A browser user never
    /// meets the default; a reconnect loop or a token-guessing script does.
    #[arg(long, env = "WSGUARD_HANDSHAKE_RATE", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub handshake_rate: u32,

    /// Handshakes a client IP may make at once above the rate.
    #[arg(long, env = "WSGUARD_HANDSHAKE_BURST", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub handshake_burst: u32,

    /// Failed handshakes (401, 403, 400; in close mode the 4401/4403 closes) per client IP
    /// within --auth-failure-window that start a penalty: the address is refused with 429
    /// (4429 in close mode) before any token is checked, for 30 s, doubling while failures
    /// go on (at most 15 minutes).
    #[arg(long, env = "WSGUARD_AUTH_FAILURE_LIMIT", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub auth_failure_limit: u32,

    /// The window of --auth-failure-limit, in seconds.
    #[arg(long, env = "WSGUARD_AUTH_FAILURE_WINDOW", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub auth_failure_window: u64,

    /// Messages per second per user (sustained).
    #[arg(long, env = "WSGUARD_MSG_RATE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub msg_rate: u32,

    /// Messages a user may send at once above the rate.
    #[arg(long, env = "WSGUARD_MSG_BURST", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub msg_burst: u32,

    /// Largest accepted message, in bytes.
    #[arg(long, env = "WSGUARD_MAX_MESSAGE_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(16..))]
    pub max_message_bytes: u32,

    /// Close sockets that send no data for this many seconds (0: never).
    #[arg(long, env = "WSGUARD_IDLE_TIMEOUT", default_value_t = 300)]
    pub idle_timeout: u64,

    /// Close sockets after this many seconds, whatever they do.
    #[arg(long, env = "WSGUARD_MAX_LIFETIME", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_lifetime: u64,

    /// Close connections that have not sent a whole request head this many seconds after
    /// connecting or after their last response (slowloris).
    #[arg(long, env = "WSGUARD_HEADER_READ_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_read_timeout: u64,

    /// Close connections that send nothing this many seconds after connecting.
    #[arg(long, env = "WSGUARD_FIRST_BYTE_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub first_byte_timeout: u64,

    /// Connections whose first request head is still arriving, in all; more are closed at
    /// once. Keep it well below the file-descriptor limit.
    #[arg(long, env = "WSGUARD_MAX_PENDING_HEADS", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pending_heads: u32,

    /// Connections whose first request head is still arriving, per TCP peer address (IPv6:
    /// per /64). Behind a reverse proxy every connection comes from the proxy: set it to
    /// --max-pending-heads.
    #[arg(long, env = "WSGUARD_MAX_PENDING_HEADS_PER_IP", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pending_heads_per_ip: u32,

    /// A dialog and its members: ID=MEMBER[,MEMBER...] (repeatable; `*` means everyone).
    #[arg(long = "dialog", env = "WSGUARD_DIALOG", value_delimiter = ';', value_parser = parse_dialog, default_value = "lobby=*")]
    pub dialogs: Vec<(String, Members)>,

    /// How refused handshakes are answered: `http` statuses, or `close` codes after
    /// accepting the upgrade (browsers can read only those).
    #[arg(long, env = "WSGUARD_REJECT_MODE", value_enum, default_value_t = RejectMode::Http)]
    pub reject_mode: RejectMode,

    /// Dry run for the limits: log and count (metrics with mode="dry_run") what the Origin
    /// check, the handshake rate, the failure penalty, the connection limits, the message
    /// budgets and the message validation would refuse, and refuse nothing, to roll limits
    /// out safely. A handshake over its rate spends nothing from it; a penalised address's
    /// failures still count; a connection over a limit holds no slot; an invalid or
    /// unauthorized message reaches the chat unparsed and is ignored.
    #[arg(long, env = "WSGUARD_DRY_RUN")]
    pub dry_run: bool,

    /// Fleet mode: keep the connection limits (global, per IP, per user), the message
    /// budgets per user and token revocations in the Redis at this URL
    /// (redis://[:PASSWORD@]HOST[:PORT][/DB]), shared by every chat instance given the same
    /// URL. Without it everything stays in this process's memory. The handshake rate and the
    /// failure penalty per IP stay per instance. A Redis that cannot be reached at start is
    /// retried in the background; meanwhile --redis-failure applies.
    #[arg(long, env = "WSGUARD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// What fleet mode does while Redis cannot answer within 50 ms (down, frozen, or not
    /// reached yet), for every store: `open` answers from this instance's memory (limits
    /// per instance, revocations made here only); `closed` refuses (handshakes get 503 with
    /// Retry-After; sockets sending messages are closed
    /// with 1013). Default: each store's own. Connection limits and budgets are `open` (a
    /// Redis outage must not take every socket down, and each instance stays bounded by its
    /// own limits); revocation is `closed` (a revoked token must not work again because
    /// Redis is down), so new handshakes are refused until Redis answers while open
    /// sockets keep working.
    #[arg(
        long,
        env = "WSGUARD_REDIS_FAILURE",
        value_enum,
        requires = "redis_url"
    )]
    pub redis_failure: Option<RedisFailure>,
}

/// What fleet mode does while Redis cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RedisFailure {
    /// Answer from this instance's memory.
    Open,
    /// Refuse: 503 before the upgrade, 1013 after it.
    Closed,
}

/// How refused handshakes are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RejectMode {
    /// HTTP statuses (401, 403, 429, 503).
    Http,
    /// Accept the upgrade, then close with the matching close code.
    Close,
}

/// Who may join a dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Members {
    /// Everyone who is authenticated.
    Everyone,
    /// These users only.
    Only(std::collections::BTreeSet<String>),
}

impl Members {
    /// Whether `user` may join.
    pub fn admits(&self, user: &str) -> bool {
        match self {
            Self::Everyone => true,
            Self::Only(users) => users.contains(user),
        }
    }
}

fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{s}` is not a CIDR network (e.g. 10.0.0.0/8) or an IP address"))
}

fn parse_dialog(s: &str) -> Result<(String, Members), String> {
    let (id, members) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not ID=MEMBER[,MEMBER...]"))?;
    let id = id.trim();
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "dialog id `{id}` must be 1-64 characters of [A-Za-z0-9-_.]"
        ));
    }
    let members: Vec<&str> = members
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    if members.is_empty() {
        return Err(format!(
            "dialog `{id}` has no members (use `*` for everyone)"
        ));
    }
    let members = if members.contains(&"*") {
        Members::Everyone
    } else {
        Members::Only(members.into_iter().map(str::to_owned).collect())
    };
    Ok((id.to_owned(), members))
}

impl Args {
    /// Whether any key option is given; without one the chat runs in demo mode.
    pub fn has_key_option(&self) -> bool {
        self.jwt_secret.is_some()
            || self.jwt_public_key.is_some()
            || self.jwks_url.is_some()
            || self.oidc_issuer.is_some()
    }

    /// The dialogs, by id. A repeated id is an error.
    pub fn dialog_map(&self) -> Result<BTreeMap<String, Members>, String> {
        let mut map = BTreeMap::new();
        for (id, members) in &self.dialogs {
            if map.insert(id.clone(), members.clone()).is_some() {
                return Err(format!("dialog `{id}` is given twice"));
            }
        }
        Ok(map)
    }

    /// The idle timeout, if any.
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout > 0).then(|| Duration::from_secs(self.idle_timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialogs_parse() {
        assert_eq!(parse_dialog("lobby=*").unwrap().1, Members::Everyone);
        let (id, members) = parse_dialog("d1=alice, bob").unwrap();
        assert_eq!(id, "d1");
        assert!(members.admits("alice") && members.admits("bob") && !members.admits("eve"));
        assert!(parse_dialog("d1").is_err());
        assert!(parse_dialog("=alice").is_err());
        assert!(parse_dialog("d1=").is_err());
        assert!(parse_dialog("d 1=alice").is_err());
    }
}
