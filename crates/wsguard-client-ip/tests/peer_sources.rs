//! Every documented source of the peer address is read, in the documented order.

use std::net::SocketAddr;

use http::Extensions;
use wsguard_client_ip::peer_addr;
use wsguard_core::PeerAddr;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn wsguard_peer_addr() {
    let mut ext = Extensions::new();
    assert_eq!(peer_addr(&ext), None);
    ext.insert(PeerAddr(addr("192.0.2.1:1000")));
    assert_eq!(peer_addr(&ext), Some(addr("192.0.2.1:1000")));
}

#[cfg(feature = "axum")]
#[test]
fn axum_connect_info_and_precedence() {
    let mut ext = Extensions::new();
    ext.insert(axum::extract::ConnectInfo(addr("192.0.2.2:2000")));
    assert_eq!(peer_addr(&ext), Some(addr("192.0.2.2:2000")));
    // wsguard's own extension wins: it is what a hyper user set explicitly.
    ext.insert(PeerAddr(addr("192.0.2.1:1000")));
    assert_eq!(peer_addr(&ext), Some(addr("192.0.2.1:1000")));
}

#[cfg(feature = "tonic")]
#[test]
fn tonic_tcp_connect_info() {
    let mut ext = Extensions::new();
    ext.insert(tonic::transport::server::TcpConnectInfo {
        local_addr: Some(addr("127.0.0.1:50051")),
        remote_addr: Some(addr("192.0.2.3:3000")),
    });
    assert_eq!(peer_addr(&ext), Some(addr("192.0.2.3:3000")));

    let mut ext = Extensions::new();
    ext.insert(tonic::transport::server::TcpConnectInfo {
        local_addr: None,
        remote_addr: None,
    });
    assert_eq!(
        peer_addr(&ext),
        None,
        "no remote address is no peer, never a default"
    );
}
