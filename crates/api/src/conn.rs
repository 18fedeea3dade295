//! What the listener knows about a client connection before its first
//! request. Every request served on the connection carries it in its
//! extensions (`http::Request::extensions`, which tonic passes on), so the
//! services can ask who is calling without a parameter of their own.

use std::sync::Arc;

/// One client connection's facts, shared by all its requests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnInfo {
    /// The common name of the client's verified TLS certificate: etcd's
    /// user when client-certificate authentication is on. `None` on a
    /// plain-text connection or one without a certificate.
    pub cert_common_name: Option<Arc<str>>,
}

impl ConnInfo {
    /// The facts of a connection the listener learned nothing about.
    pub fn plain() -> Arc<ConnInfo> {
        Arc::new(ConnInfo::default())
    }
}

/// The connection facts a request carries (every request the listener
/// serves has them; a request made elsewhere, as in tests, gets none).
pub fn of<B>(request: &http::Request<B>) -> Option<&Arc<ConnInfo>> {
    request.extensions().get::<Arc<ConnInfo>>()
}
