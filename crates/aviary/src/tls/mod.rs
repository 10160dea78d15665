//! TLS for MQTT listeners (rustls with ring; TLS 1.2 and 1.3 only).

/// How a TLS listener treats client certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Server certificate only; clients authenticate in CONNECT.
    OneWay,
    /// A client certificate chaining to a registered, active CA is required; it
    /// authenticates the connection, with any client id.
    Mutual,
    /// One certificate per device: the certificate must also be registered (or is
    /// registered just in time) and active, and binds the client id.
    PerDevice,
}
