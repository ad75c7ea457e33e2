//! Local ports for the servers tests and benchmarks start.

/// A local port nobody listens on (yet): the system picks it, and the
/// caller binds it again. Panics only when the system has no port left,
/// which no test or benchmark could go on from.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("no free local port: {e}"))
}
