//! The broker's side of authorization: CONNECT with an authentication outcome from the
//! shell, the per-operation check against the current [`Authorizer`], and closing a
//! connection whose credentials were withdrawn (a revoked certificate).

use std::sync::Arc;
use std::time::Instant;

use aviary_codec::{Connect, Packet, ReasonCode};

use super::connection::{Connected, Connection};
use super::{server_disconnect, Broker, ConnId, EndReason};
use crate::authz::{self, AuthRefusal, Authentication, Authorizer, Effect, Identity, Principal};

/// The outcome for a CONNECT the shell did not authenticate (`handle_packet`): accepted,
/// with the CONNECT's username.
pub(super) fn unauthenticated(connect: &Connect) -> Authentication {
    Authentication::Accepted(Arc::new(Principal {
        username: connect.username.as_deref().map(Into::into),
        authenticator: "none".into(),
        ..Principal::default()
    }))
}

/// Whether connection `c` may do `request` now (grants first, then `authorizer`); for a
/// caller that already holds the connection.
pub(super) fn authorize(
    authorizer: &dyn Authorizer,
    c: &Connected,
    request: &authz::Request<'_>,
) -> Effect {
    let identity = Identity {
        client_id: &c.client_id,
        peer: c.peer,
        principal: &c.principal,
    };
    authz::decide(authorizer, &identity, request)
}

impl AuthRefusal {
    /// The CONNACK code (5.0; the codec's 3.x mapping turns 0x86/0x87/0x88 into 4/5/3).
    pub(super) fn reason_code(self) -> ReasonCode {
        match self {
            Self::BadCredentials => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            Self::NotAuthorized => ReasonCode::NOT_AUTHORIZED,
            Self::ServerUnavailable => ReasonCode::SERVER_UNAVAILABLE,
        }
    }

    /// The 5.0 reason string; says no more than the code (nothing about which check failed).
    pub(super) fn text(self) -> &'static str {
        match self {
            Self::BadCredentials => "bad user name or password",
            Self::NotAuthorized => "not authorized",
            Self::ServerUnavailable => "authentication service unavailable",
        }
    }
}

impl Broker {
    /// CONNECT on `conn` together with the shell's authentication outcome for it. Use this
    /// instead of `handle_packet` for CONNECT packets when authentication is in use; a
    /// refusal becomes the matching CONNACK (0x86/0x87/0x88, 3.x 4/5/3). Any other packet
    /// goes through `handle_packet` as usual.
    pub fn handle_connect_authenticated(
        &mut self,
        conn: ConnId,
        connect: Connect,
        authentication: Authentication,
        now: Instant,
    ) {
        match self.connections.get(&conn) {
            None => {}
            Some(Connection::Connecting(_)) => {
                self.handle_connect(conn, connect, authentication, now)
            }
            // A second CONNECT: the protocol error `handle_packet` reports [MQTT-3.1.0-2].
            Some(Connection::Connected(_)) => {
                self.handle_packet(conn, Packet::Connect(Box::new(connect)), now)
            }
        }
    }

    /// Replaces the authorizer. Takes effect for the next operation of every connection,
    /// open ones included.
    pub fn set_authorizer(&mut self, authorizer: Arc<dyn Authorizer>) {
        self.authorizer = authorizer;
    }

    /// Whether connected `conn` may do `request` now (grants first, then the authorizer).
    pub(super) fn authorize(&self, conn: ConnId, request: &authz::Request<'_>) -> Effect {
        let Some(c) = self.connections.get(&conn).and_then(Connection::connected) else {
            return Effect::Deny;
        };
        authorize(self.authorizer.as_ref(), c, request)
    }

    /// Closes `conn` because its credentials were withdrawn (a certificate revoked or
    /// deactivated, a device disabled): 5.0 gets DISCONNECT 0x87 Not authorized; the will
    /// follows the rules for a connection the server ends. False if it is not connected.
    pub fn revoke_connection(&mut self, conn: ConnId, now: Instant) -> bool {
        let Some(c) = self.connections.get(&conn).and_then(Connection::connected) else {
            return false;
        };
        if c.protocol.is_v5() {
            self.send_explained(
                conn,
                server_disconnect(ReasonCode::NOT_AUTHORIZED, "credentials withdrawn"),
            );
        }
        self.fx.close(conn);
        self.end_connection(conn, EndReason::Administrative, now);
        true
    }

    /// The principal of a connected connection (management API).
    pub fn connection_principal(&self, conn: ConnId) -> Option<&Arc<Principal>> {
        self.connections
            .get(&conn)
            .and_then(Connection::connected)
            .map(|c| &c.principal)
    }
}
