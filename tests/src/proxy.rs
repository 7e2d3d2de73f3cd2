//! A TCP proxy a test can stop and start again on the same port: a server becomes
//! unreachable for one host, and comes back, while the real server keeps serving the
//! other tests.

use std::net::SocketAddr;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Forwards `127.0.0.1:<port>` to a target while running.
pub struct Proxy {
    address: SocketAddr,
    target: SocketAddr,
    accepting: Option<JoinHandle<()>>,
}

impl Proxy {
    /// A running proxy to `target` on a free loopback port.
    pub async fn start(target: &str) -> Proxy {
        let target = target.parse().expect("a socket address");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        Proxy {
            address,
            target,
            accepting: Some(tokio::spawn(forward(listener, target))),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Stop listening and cut every connection: the target is unreachable through it.
    pub fn stop(&mut self) {
        if let Some(task) = self.accepting.take() {
            task.abort();
        }
    }

    /// Listen again on the same port.
    pub async fn resume(&mut self) {
        let listener = TcpListener::bind(self.address).await.unwrap();
        self.accepting = Some(tokio::spawn(forward(listener, self.target)));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Accept on `listener` and copy each connection both ways to `target`; dropping the
/// future (an abort) ends the connections with it.
async fn forward(listener: TcpListener, target: SocketAddr) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        connections.spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(target).await {
                let _ = copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
        while connections.try_join_next().is_some() {}
    }
}
