//! Opening TCP connections to the mail servers.
//!
//! Owns name resolution and the choice among a host's addresses. Each
//! address gets its own share of the time, so one that swallows packets (an
//! IPv6 route that goes nowhere, a firewall that drops rather than refuses)
//! cannot use up the whole timeout before the next address is tried.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

/// The least time one address gets, however many a host has.
const LEAST_PER_ADDRESS: Duration = Duration::from_secs(3);

/// Connects to `host:port`, trying its addresses in the resolver's order.
/// The caller bounds the whole; each address gets `timeout` divided among
/// them (at least three seconds), and the last one whatever is left.
///
/// # Errors
/// Resolution fails or finds nothing, or no address takes the connection:
/// the error names each address tried and what it did.
pub async fn connect(host: &str, port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    connect_any(host, &addresses, timeout).await
}

/// Connects to the first of `addresses` (those of `host`) that takes it.
async fn connect_any(
    host: &str,
    addresses: &[SocketAddr],
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let Some(last) = addresses.len().checked_sub(1) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{host} resolves to no address"),
        ));
    };
    let share = share_of(timeout, addresses.len());
    let mut failures = Vec::new();
    for (index, address) in addresses.iter().enumerate() {
        let attempt = TcpStream::connect(address);
        let outcome = if index == last {
            attempt.await
        } else {
            match tokio::time::timeout(share, attempt).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    failures.push(format!("{address}: no answer within {} s", share.as_secs()));
                    continue;
                }
            }
        };
        match outcome {
            Ok(stream) => return Ok(stream),
            Err(err) if addresses.len() == 1 => return Err(err),
            Err(err) => failures.push(format!("{address}: {err}")),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        failures.join("; "),
    ))
}

/// The time each of `count` addresses gets before the next is tried.
fn share_of(timeout: Duration, count: usize) -> Duration {
    let count = u32::try_from(count.max(1)).unwrap_or(u32::MAX);
    (timeout / count).max(LEAST_PER_ADDRESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_a_share_of_at_least_three_seconds() {
        assert_eq!(
            share_of(Duration::from_secs(30), 2),
            Duration::from_secs(15)
        );
        assert_eq!(
            share_of(Duration::from_secs(30), 1),
            Duration::from_secs(30)
        );
        assert_eq!(share_of(Duration::from_secs(10), 8), LEAST_PER_ADDRESS);
        assert_eq!(
            share_of(Duration::from_secs(10), 0),
            Duration::from_secs(10)
        );
    }

    #[tokio::test]
    async fn a_refused_address_gives_way_to_the_next() {
        let open = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let listening = open.local_addr().expect("addr");
        let closed = {
            let other = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            other.local_addr().expect("addr")
        };
        let timeout = Duration::from_secs(5);
        let stream = connect_any("test", &[closed, listening], timeout)
            .await
            .expect("the second address listens");
        assert_eq!(stream.peer_addr().expect("peer"), listening);

        drop(open);
        let err = connect_any("test", &[closed, listening], timeout)
            .await
            .expect_err("nobody listens now");
        let told = err.to_string();
        assert!(told.contains(&closed.to_string()), "{told}");
        assert!(told.contains(&listening.to_string()), "{told}");
        let none = connect_any("nowhere.test", &[], timeout)
            .await
            .expect_err("no address");
        assert!(none.to_string().contains("nowhere.test"), "{none}");
    }

    /// A listener whose accept queue is full drops further SYNs, as a
    /// firewall that drops rather than refuses does: the connection to it
    /// neither succeeds nor fails. The next address still gets its turn.
    #[tokio::test]
    async fn a_silent_address_does_not_use_up_the_time_of_the_next() {
        let silent_socket = tokio::net::TcpSocket::new_v4().expect("socket");
        silent_socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let silent_listener = silent_socket.listen(0).expect("listen");
        let silent = silent_listener.local_addr().expect("addr");
        // Fill the accept queue; nobody accepts.
        let mut queued = Vec::new();
        for _ in 0..4 {
            if let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(silent)).await
            {
                queued.push(stream);
            }
        }
        let open = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let listening = open.local_addr().expect("addr");
        let started = std::time::Instant::now();
        let stream = connect_any("test", &[silent, listening], Duration::from_secs(2))
            .await
            .expect("the second address listens");
        assert_eq!(stream.peer_addr().expect("peer"), listening);
        // It waited its share on the silent one, then moved on.
        let waited = started.elapsed();
        assert!(LEAST_PER_ADDRESS <= waited, "{waited:?}");
        assert!(waited < Duration::from_secs(10), "{waited:?}");
    }
}
