//! The layer and its configuration.

use std::{fmt, sync::Arc};

use tower_layer::Layer;
use wsguard_core::HttpRejection;

use crate::{
    config::Config, predicate::SharedPredicate, service::OriginGuard, AllowList, OriginPredicate,
};

/// Applies [`OriginGuard`], which rejects requests whose `Origin` is not allowed with 403.
///
/// Cheap to clone: the configuration lives behind one `Arc`.
/// See the [crate docs](crate) for an example.
pub struct OriginGuardLayer<P = HttpRejection> {
    config: Arc<Config<P>>,
}

impl OriginGuardLayer {
    /// A layer that lets through the origins `allow` allows, checks WebSocket handshakes
    /// only, allows requests without `Origin`, and answers rejections with
    /// [`HttpRejection`] (403).
    #[must_use]
    pub fn new(allow: AllowList) -> Self {
        Self {
            config: Arc::new(Config {
                allow,
                allow_missing: true,
                every_request: false,
                dry_run: false,
                policy: HttpRejection,
                predicate: None,
            }),
        }
    }
}

impl<P> OriginGuardLayer<P>
where
    P: Clone,
{
    /// Whether a request without an `Origin` header passes (default `true`).
    ///
    /// Browsers always send `Origin` on WebSocket handshakes, so a missing header means a
    /// non-browser client (a mobile app, a server, a CLI), which cross-site WebSocket
    /// hijacking cannot involve. Set `false` to serve browsers only, or when a proxy in front
    /// is known to keep the header (see the
    /// [deployment caveats](crate#deployment-caveats)).
    #[must_use]
    pub fn allow_missing_origin(self, allow: bool) -> Self {
        self.map(|config| Config {
            allow_missing: allow,
            ..config
        })
    }

    /// Whether every request is checked (default `false`: only WebSocket handshakes, as
    /// [`wsguard_core::is_websocket_upgrade`] recognises them, including HTTP/2 extended
    /// `CONNECT`).
    ///
    /// Set `true` to guard other long-lived streams (server-sent events, streaming
    /// responses) that browsers open with credentials. Browsers omit `Origin` on
    /// same-origin `GET` and `HEAD` requests (Fetch Standard, "append a request `Origin`
    /// header"), so keep [missing origins allowed](Self::allow_missing_origin) when every
    /// request is checked, or same-origin page loads are refused too.
    #[must_use]
    pub fn check_every_request(self, every: bool) -> Self {
        self.map(|config| Config {
            every_request: every,
            ..config
        })
    }

    /// Dry-run mode (default `false`): a request the layer would refuse is let through, and
    /// its refusal is logged (the same `INFO` event, with `mode = "dry_run"`) and counted in
    /// `wsguard_rejections_total{layer="origin", reason="origin_not_allowed",
    /// mode="dry_run"}` instead of `mode="enforce"`. Roll an allow-list out with it: watch
    /// what it would refuse, then turn enforcement on. See [Dry run](crate#dry-run).
    #[must_use]
    pub fn dry_run(self, enabled: bool) -> Self {
        self.map(|config| Config {
            dry_run: enabled,
            ..config
        })
    }

    /// Replaces the allow-list.
    #[must_use]
    pub fn with_allow_list(self, allow: AllowList) -> Self {
        self.map(|config| Config { allow, ..config })
    }

    /// Answers rejections with `policy` instead (for example
    /// [`GrpcRejection`](wsguard_core::GrpcRejection), or a closure `Fn(&Rejection) ->
    /// Response<B>`). The [`Rejection`](wsguard_core::Rejection) is put into the response's
    /// extensions whatever the policy returns.
    #[must_use]
    pub fn on_rejection<Q>(self, policy: Q) -> OriginGuardLayer<Q> {
        self.map(|config| Config {
            allow: config.allow,
            allow_missing: config.allow_missing,
            every_request: config.every_request,
            dry_run: config.dry_run,
            policy,
            predicate: config.predicate,
        })
    }

    /// Consults `predicate` for origins the allow-list refuses (see [`OriginPredicate`]).
    /// Replaces an earlier one. Its future is boxed: it runs at most once per handshake.
    #[must_use]
    pub fn with_predicate(self, predicate: impl OriginPredicate) -> Self {
        let predicate: SharedPredicate = Arc::new(predicate);
        self.map(|config| Config {
            predicate: Some(predicate),
            ..config
        })
    }

    fn map<Q>(self, f: impl FnOnce(Config<P>) -> Config<Q>) -> OriginGuardLayer<Q> {
        OriginGuardLayer {
            config: Arc::new(f(Arc::unwrap_or_clone(self.config))),
        }
    }
}

impl<P> OriginGuardLayer<P> {
    /// The allow-list.
    pub fn allow_list(&self) -> &AllowList {
        &self.config.allow
    }
}

impl<P> Clone for OriginGuardLayer<P> {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
        }
    }
}

impl<P> fmt::Debug for OriginGuardLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginGuardLayer")
            .field("config", &self.config)
            .finish()
    }
}

impl<S, P> Layer<S> for OriginGuardLayer<P> {
    type Service = OriginGuard<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        OriginGuard::from_config(inner, Arc::clone(&self.config))
    }
}
