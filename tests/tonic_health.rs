//! Smoke test of the `tonic_health` example, started in-process: gRPC-form refusals, and a
//! streaming RPC that holds its connection slot until the stream ends.
#![cfg(feature = "full")]
#![allow(dead_code, unreachable_pub)]

#[path = "../examples/tonic_health.rs"]
mod tonic_health_example;

use std::time::Duration;

use tokio::time::timeout;
use tonic::{metadata::MetadataValue, transport::Channel, Code, Request};
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

const WAIT: Duration = Duration::from_secs(10);

fn authorized(token: &str) -> Request<HealthCheckRequest> {
    let mut req = Request::new(HealthCheckRequest {
        service: String::new(),
    });
    let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    req.metadata_mut().insert("authorization", value);
    req
}

#[tokio::test]
async fn a_watch_stream_holds_its_slot_until_it_ends() {
    let running = tonic_health_example::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let channel = Channel::from_shared(format!("http://{}", running.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);

    let refused = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    let checked = client.check(authorized(&running.token)).await.unwrap();
    assert_eq!(checked.into_inner().status, 1, "SERVING");
    let until_free = |n: u64| {
        let limits = running.limits.clone();
        async move {
            timeout(WAIT, async {
                while limits.active("principal") != Some(n) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .expect("slot count");
        }
    };
    until_free(0).await;

    let mut watch = client
        .watch(authorized(&running.token))
        .await
        .unwrap()
        .into_inner();
    let first = timeout(WAIT, watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.status, 1);
    assert_eq!(
        running.limits.active("principal"),
        Some(1),
        "held while streaming"
    );

    let second = client.watch(authorized(&running.token)).await.unwrap_err();
    assert_eq!(second.code(), Code::ResourceExhausted);

    drop(watch);
    until_free(0).await;
    let again = client.watch(authorized(&running.token)).await;
    assert!(again.is_ok(), "the slot came back when the stream ended");
}
