//! A store that answers later, as a networked one would: the layer waits for its answer
//! (and never for the in-memory store, which answers at once).

use std::{
    convert::Infallible,
    future::Future,
    net::{IpAddr, Ipv4Addr},
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use http::{Request, Response, StatusCode};
use tower::{service_fn, Layer, ServiceExt};
use wsguard_conn_limit::{
    ConnLimitLayer, ConnectionStore, InMemoryConnectionStore, InMemoryLease, Refusal, Slot,
};
use wsguard_core::ClientIp;

/// The in-memory store behind a delay; counts its calls.
#[derive(Clone, Default)]
struct SlowStore {
    inner: InMemoryConnectionStore,
    calls: Arc<AtomicUsize>,
}

impl ConnectionStore for SlowStore {
    type Lease = InMemoryLease;
    type Future = Pin<Box<dyn Future<Output = Result<InMemoryLease, Refusal>> + Send>>;

    fn acquire(&self, slots: &[Slot]) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let (store, slots) = (self.inner.clone(), slots.to_vec());
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            store.try_acquire(&slots)
        })
    }
}

fn request() -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut()
        .insert(ClientIp(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))));
    req
}

#[tokio::test(start_paused = true)]
async fn the_layer_waits_for_a_store_that_answers_later() {
    let store = SlowStore::default();
    let layer = ConnLimitLayer::builder()
        .per_ip(1)
        .store(store.clone())
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(String::from("ok")))
    }));
    let start = tokio::time::Instant::now();
    // The first response holds the slot for as long as it lives.
    let first = svc.clone().oneshot(request()).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(5),
        "it waited for the store"
    );
    let refused = svc.clone().oneshot(request()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(layer.active("ip"), Some(1));
    drop(first);
    assert_eq!(layer.active("ip"), Some(0));
    let again = svc.oneshot(request()).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(store.calls.load(Ordering::SeqCst), 3);
}
