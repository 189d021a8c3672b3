//! The layer and its builder methods.

use std::{fmt, marker::PhantomData, sync::Arc};

use tower_layer::Layer;
use wsguard_core::{ErrorFrame, JsonErrorFrame};

use crate::{
    authorize::{AllowAll, Authorize},
    config::{
        Accept, Config, ConfigError, ConnState, OnDeny, DEFAULT_MAX_DEPTH, DEFAULT_MAX_INVALID,
        DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_STRING_LEN,
    },
    scan::Limits,
    service::ValidateMessage,
};

/// Validates every inbound message of the message plane, and hands the parsed value of `T`
/// to the application as the message's parsed form
/// ([`Inbound::parsed`](wsguard_core::Inbound::parsed)).
///
/// `T` is the type messages are parsed into (`serde_json::Value` until
/// [`typed`](Self::typed) says otherwise), `A` the [`Authorize`] hook, `F` the
/// [`ErrorFrame`] policy. See the [crate docs](crate) for an example.
pub struct ValidateMessageLayer<T = serde_json::Value, A = AllowAll, F = JsonErrorFrame> {
    config: Arc<Config<A, F>>,
    _type: PhantomData<fn() -> T>,
}

impl<T, A, F> Clone for ValidateMessageLayer<T, A, F> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            _type: PhantomData,
        }
    }
}

impl<T, A, F> fmt::Debug for ValidateMessageLayer<T, A, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &*self.config;
        let mut d = f.debug_struct("ValidateMessageLayer");
        d.field("type", &std::any::type_name::<T>())
            .field("max_message_size", &c.max_size)
            .field("accept", &c.accept)
            .field("max_depth", &c.limits.max_depth)
            .field("max_string_len", &c.limits.max_string_len)
            .field("max_invalid", &c.max_invalid)
            .field("on_deny", &c.on_deny)
            .field("dry_run", &c.dry_run);
        #[cfg(feature = "json-schema")]
        d.field("json_schema", &c.schema.is_some());
        d.finish_non_exhaustive()
    }
}

impl Default for ValidateMessageLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl ValidateMessageLayer {
    /// A layer with the default limits, parsing messages into `serde_json::Value`.
    #[must_use]
    pub fn new() -> Self {
        Self {
            config: Arc::new(Config {
                max_size: DEFAULT_MAX_MESSAGE_SIZE,
                accept: Accept::Text,
                limits: Limits {
                    max_depth: DEFAULT_MAX_DEPTH,
                    max_string_len: DEFAULT_MAX_STRING_LEN,
                },
                max_invalid: DEFAULT_MAX_INVALID,
                on_deny: OnDeny::Reply,
                authorize: AllowAll,
                frame: JsonErrorFrame,
                dry_run: false,
                #[cfg(feature = "json-schema")]
                schema: None,
            }),
            _type: PhantomData,
        }
    }
}

impl<T, A, F> ValidateMessageLayer<T, A, F>
where
    A: Clone,
    F: Clone,
{
    fn map<T2, A2, F2>(
        self,
        f: impl FnOnce(Config<A, F>) -> Config<A2, F2>,
    ) -> ValidateMessageLayer<T2, A2, F2> {
        ValidateMessageLayer {
            config: Arc::new(f(Arc::unwrap_or_clone(self.config))),
            _type: PhantomData,
        }
    }

    /// Parses messages into `T2`, your `serde` type (for example an internally tagged enum
    /// of the commands a client may send). Set it before [`authorize`](Self::authorize),
    /// whose hook receives a `&T2`.
    #[must_use]
    pub fn typed<T2>(self) -> ValidateMessageLayer<T2, A, F> {
        self.map(|c| c)
    }

    /// Closes the socket with 1009 for a message larger than `bytes` (default 64 KiB).
    ///
    /// Give the hand-off the same limit, so that tungstenite refuses larger frames from
    /// their header before buffering them; see the [crate docs](crate#message-size).
    #[must_use]
    pub fn max_message_size(self, bytes: usize) -> Self {
        self.map(|c| Config {
            max_size: bytes,
            ..c
        })
    }

    /// Which data frames are accepted (default [`Accept::Text`]); others close with 1003.
    #[must_use]
    pub fn accept(self, accept: Accept) -> Self {
        self.map(|c| Config { accept, ..c })
    }

    /// The deepest nesting of arrays and objects a message may have (default 32),
    /// checked before parsing.
    #[must_use]
    pub fn max_depth(self, depth: usize) -> Self {
        self.map(|c| Config {
            limits: Limits {
                max_depth: depth,
                ..c.limits
            },
            ..c
        })
    }

    /// The longest string (keys included) a message may have, in raw bytes between the
    /// quotes, escapes counted as written (default 16 KiB), checked before parsing.
    #[must_use]
    pub fn max_string_len(self, bytes: usize) -> Self {
        self.map(|c| Config {
            limits: Limits {
                max_string_len: bytes,
                ..c.limits
            },
            ..c
        })
    }

    /// Closes the socket with 1007 at the `n`-th invalid message in a row (default 5); a
    /// valid message starts the count again.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroMaxInvalid`] for `n == 0`.
    pub fn max_invalid(self, n: u32) -> Result<Self, ConfigError> {
        if n == 0 {
            return Err(ConfigError::ZeroMaxInvalid);
        }
        Ok(self.map(|c| Config {
            max_invalid: n,
            ..c
        }))
    }

    /// Asks `hook` whether each valid message may be sent by its connection.
    #[must_use]
    pub fn authorize<A2>(self, hook: A2) -> ValidateMessageLayer<T, Arc<A2>, F>
    where
        A2: Authorize<T>,
    {
        let hook = Arc::new(hook);
        self.map(|c| Config {
            max_size: c.max_size,
            accept: c.accept,
            limits: c.limits,
            max_invalid: c.max_invalid,
            on_deny: c.on_deny,
            authorize: hook,
            frame: c.frame,
            dry_run: c.dry_run,
            #[cfg(feature = "json-schema")]
            schema: c.schema,
        })
    }

    /// Dry-run mode (default `false`): a message the layer would refuse (wrong frame type,
    /// too large, invalid, or denied by the [`Authorize`] hook) goes on to the application
    /// as the raw message, unparsed, and is logged (`INFO`, target
    /// `wsguard_schema_validate`, with the reason, its category and `mode = "dry_run"`,
    /// never the message or the peer) and counted in `wsguard_rejections_total{layer="schema",
    /// mode="dry_run"}`. No error frame is sent and no socket is closed for invalid
    /// messages in a row.
    ///
    /// The application then gets **no parsed value** for such a message:
    /// [`take_parsed`](wsguard_core::Admitted::take_parsed) returns `None`, as for a control
    /// frame, and the application must read (or skip) the raw message itself. See
    /// [Dry run](crate#dry-run).
    #[must_use]
    pub fn dry_run(self, enabled: bool) -> Self {
        self.map(|c| Config {
            dry_run: enabled,
            ..c
        })
    }

    /// What a denial does (default [`OnDeny::Reply`]).
    #[must_use]
    pub fn on_deny(self, on_deny: OnDeny) -> Self {
        self.map(|c| Config { on_deny, ..c })
    }

    /// Sets the error frame answering invalid and forbidden messages (default
    /// [`JsonErrorFrame`]); any `Fn(&Rejection) -> Option<String>` works, `None` drops
    /// without an answer. Never put the message in it.
    #[must_use]
    pub fn error_frame<F2>(self, frame: F2) -> ValidateMessageLayer<T, A, F2>
    where
        F2: ErrorFrame,
    {
        self.map(|c| Config {
            max_size: c.max_size,
            accept: c.accept,
            limits: c.limits,
            max_invalid: c.max_invalid,
            on_deny: c.on_deny,
            authorize: c.authorize,
            frame,
            dry_run: c.dry_run,
            #[cfg(feature = "json-schema")]
            schema: c.schema,
        })
    }

    /// Also validates every message against a JSON Schema, compiled here, once. Messages
    /// are then parsed into a `serde_json::Value`, checked, and converted into `T`.
    ///
    /// Remote references are not fetched (no HTTP or file retrieval is compiled in), and
    /// `pattern`s use the linear-time `regex` engine, so an attacker's strings cannot make
    /// a pattern backtrack; patterns that need lookaround are refused here.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Schema`] when the schema does not compile.
    #[cfg(feature = "json-schema")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json-schema")))]
    pub fn json_schema(self, schema: &serde_json::Value) -> Result<Self, ConfigError> {
        let validator = jsonschema::options()
            .with_pattern_options(jsonschema::PatternOptions::regex())
            .build(schema)
            .map_err(|err| ConfigError::Schema(err.to_string()))?;
        let validator = Arc::new(validator);
        Ok(self.map(|c| Config {
            schema: Some(validator),
            ..c
        }))
    }

    /// The message size limit, to give the hand-off as well:
    /// `upgrade.max_message_size(limit).max_frame_size(limit)`.
    pub fn message_size_limit(&self) -> usize {
        self.config.max_size
    }
}

impl<S, T, A, F> Layer<S> for ValidateMessageLayer<T, A, F> {
    type Service = ValidateMessage<S, T, A, F>;

    /// Builds the service of one connection (with its own count of invalid messages).
    fn layer(&self, inner: S) -> Self::Service {
        ValidateMessage::new(inner, self.config.clone(), Arc::new(ConnState::default()))
    }
}
