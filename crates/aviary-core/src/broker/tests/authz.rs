//! Authorization enforced by the broker: CONNECT (0x87 / 3.x 5), authentication refusals
//! (0x86/0x87/0x88 / 3.x 4/5/3), SUBSCRIBE per filter (0x87 / 3.x 0x80), PUBLISH (5.0
//! PUBACK/PUBREC 0x87; 3.x and QoS 0 dropped and counted), policies swapped under open
//! connections, device properties on published messages.

use std::sync::Arc;

use crate::authz::{
    Action, AuthRefusal, Authentication, Conditions, Effect, Policy, PolicySet, Principal,
    ResourcePattern,
};

use super::*;

fn policy(id: &str, effect: Effect, actions: &[Action], resources: &[&str]) -> Policy {
    Policy {
        id: id.into(),
        priority: 1,
        effect,
        actions: actions.to_vec(),
        resources: resources
            .iter()
            .map(|r| ResourcePattern::new(r).unwrap())
            .collect(),
        conditions: Conditions::default(),
    }
}

/// Clients may connect; publish and subscribe only under `devices/${clientid}/#`.
fn own_topics_only() -> Arc<PolicySet> {
    Arc::new(PolicySet::new(
        vec![
            policy("connect", Effect::Allow, &[Action::Connect], &[]),
            policy(
                "own",
                Effect::Allow,
                &[Action::Publish, Action::Subscribe],
                &["devices/${clientid}/#"],
            ),
        ],
        None,
    ))
}

fn authenticated(
    h: &mut Harness,
    conn: u64,
    connect: Connect,
    auth: Authentication,
) -> Vec<Transmit> {
    h.open(conn);
    h.broker
        .handle_connect_authenticated(ConnId(conn), connect, auth, h.now);
    h.drain()
}

fn accepted(principal: Principal) -> Authentication {
    Authentication::Accepted(Arc::new(principal))
}

#[test]
fn authentication_refusals_map_to_their_connack_codes() {
    let cases = [
        (
            AuthRefusal::BadCredentials,
            V5,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        ),
        (AuthRefusal::NotAuthorized, V5, ReasonCode::NOT_AUTHORIZED),
        (
            AuthRefusal::ServerUnavailable,
            V5,
            ReasonCode::SERVER_UNAVAILABLE,
        ),
        (
            AuthRefusal::BadCredentials,
            V3_1_1,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        ),
        (
            AuthRefusal::NotAuthorized,
            V3_1_1,
            ReasonCode::NOT_AUTHORIZED,
        ),
        (
            AuthRefusal::ServerUnavailable,
            V3_1_1,
            ReasonCode::SERVER_UNAVAILABLE,
        ),
    ];
    for (i, (refusal, version, code)) in cases.into_iter().enumerate() {
        let mut h = Harness::new();
        let conn = i as u64 + 1;
        let out = authenticated(
            &mut h,
            conn,
            connect(version, "c", true),
            Authentication::Refused(refusal),
        );
        assert_eq!(
            out,
            vec![packet(conn, connack(false, code)), close(conn)],
            "{refusal:?}"
        );
        assert_eq!(h.broker.stats().connections, 0);
    }
}

#[test]
fn mqtt_3_x_refusals_are_return_codes_4_5_3_on_the_wire() {
    for (refusal, wire) in [
        (AuthRefusal::BadCredentials, "20 02 00 04"),
        (AuthRefusal::NotAuthorized, "20 02 00 05"),
        (AuthRefusal::ServerUnavailable, "20 02 00 03"),
    ] {
        let mut h = Harness::new();
        h.open(1);
        let auth = Authentication::Refused(refusal);
        h.broker
            .handle_connect_authenticated(ConnId(1), connect(V3_1_1, "c", true), auth, h.now);
        assert_eq!(h.wire_out(), out(&[(1, wire), (1, "close")]));
    }
}

#[test]
fn connect_denied_by_policy_is_0x87_and_other_clients_are_unaffected() {
    let mut h = Harness::new();
    let mut deny = policy("deny-bad", Effect::Deny, &[Action::Connect], &[]);
    deny.conditions.client_ids = vec![crate::authz::Wildcard::new("bad-*")];
    let allow = Policy {
        priority: 2,
        ..policy("allow", Effect::Allow, &[Action::Connect], &[])
    };
    h.broker
        .set_authorizer(Arc::new(PolicySet::new(vec![deny, allow], None)));
    h.client(1, "good");
    let out = h.connect(2, connect(V5, "bad-1", true));
    assert_eq!(
        out,
        vec![
            packet(2, connack(false, ReasonCode::NOT_AUTHORIZED)),
            close(2)
        ]
    );
    let out = h.connect(3, connect(V3_1_1, "bad-2", true));
    assert_eq!(
        out,
        vec![
            packet(3, connack(false, ReasonCode::NOT_AUTHORIZED)),
            close(3)
        ]
    );
    assert_eq!(h.broker.stats().connections, 1);
    h.send(1, Packet::PingReq);
    assert_eq!(h.drain(), vec![packet(1, Packet::PingResp)]);
}

#[test]
fn subscribe_is_authorized_per_filter_0x87_in_v5_0x80_in_3_x() {
    let mut h = Harness::new();
    h.broker.set_authorizer(own_topics_only());
    h.client_v5(1, "d1");
    h.client(2, "d2");
    h.send(
        1,
        subscribe(
            1,
            &[
                ("devices/d1/#", QoS::AtLeastOnce),
                ("devices/d2/#", QoS::AtMostOnce),
            ],
        ),
    );
    assert_eq!(h.drain(), vec![packet(1, suback(1, &[0x01, 0x87]))]);
    h.send(
        2,
        subscribe(
            2,
            &[("#", QoS::AtMostOnce), ("devices/d2/x", QoS::AtMostOnce)],
        ),
    );
    assert_eq!(h.drain(), vec![packet(2, suback(2, &[0x80, 0x00]))]);
    assert_eq!(h.broker.stats().subscriptions, 2);
}

#[test]
fn denied_publish_is_0x87_in_v5_and_dropped_and_counted_in_3_x() {
    let mut h = Harness::new();
    h.broker.set_authorizer(own_topics_only());
    h.client_v5(1, "d1");
    h.client(2, "d2");
    h.client(3, "watch");
    h.broker.set_authorizer(Arc::new(PolicySet::new(
        vec![
            policy(
                "connect",
                Effect::Allow,
                &[Action::Connect, Action::Subscribe],
                &[],
            ),
            policy(
                "own",
                Effect::Allow,
                &[Action::Publish],
                &["devices/${clientid}/#"],
            ),
        ],
        None,
    )));
    h.subscribe(3, "#", QoS::AtLeastOnce);

    h.send(1, publish("devices/d2/x", QoS::AtLeastOnce, 1, "no"));
    assert_eq!(
        h.drain(),
        vec![packet(
            1,
            Packet::PubAck(ack(1, ReasonCode::NOT_AUTHORIZED))
        )]
    );
    h.send(1, publish("devices/d2/x", QoS::ExactlyOnce, 2, "no"));
    assert_eq!(
        h.drain(),
        vec![packet(
            1,
            Packet::PubRec(ack(2, ReasonCode::NOT_AUTHORIZED))
        )]
    );
    h.send(1, publish("devices/d2/x", QoS::AtMostOnce, 0, "no"));
    assert_eq!(h.drain(), vec![]);
    // 3.x: acknowledged as usual (no negative acks), not delivered.
    h.send(2, publish("devices/d1/x", QoS::AtLeastOnce, 3, "no"));
    assert_eq!(h.drain(), vec![packet(2, puback(3))]);
    h.send(2, publish("devices/d1/x", QoS::ExactlyOnce, 4, "no"));
    assert_eq!(h.drain(), vec![packet(2, pubrec(4))]);
    h.send(2, pubrel(4));
    assert_eq!(h.drain(), vec![packet(2, pubcomp(4))]);
    assert_eq!(h.broker.stats().dropped.not_authorized, 5);

    // Allowed ones reach the watcher.
    h.send(2, publish("devices/d2/x", QoS::AtMostOnce, 0, "yes"));
    assert_eq!(
        h.drain(),
        vec![packet(
            3,
            delivered("devices/d2/x", QoS::AtMostOnce, 0, "yes")
        )]
    );
}

#[test]
fn denied_publish_reason_string_says_not_authorized() {
    let mut h = Harness::new();
    h.broker.set_authorizer(own_topics_only());
    h.client_v5(1, "d1");
    h.send(1, publish("other", QoS::AtLeastOnce, 1, "x"));
    let out = h.drain_raw();
    let Some(Transmit::Packet {
        packet: Packet::PubAck(ack),
        ..
    }) = out.first()
    else {
        panic!("{out:?}");
    };
    assert_eq!(
        ack.properties.reason_string.as_deref(),
        Some("not authorized")
    );
}

#[test]
fn policy_changes_apply_to_open_connections() {
    let mut h = Harness::new();
    h.client(1, "d1");
    h.client(2, "watch");
    h.subscribe(2, "#", QoS::AtMostOnce);
    h.send(1, publish("a", QoS::AtMostOnce, 0, "1"));
    assert_eq!(h.drain().len(), 1, "allowed before any policy");
    h.broker.set_authorizer(Arc::new(PolicySet::new(
        vec![policy("deny-a", Effect::Deny, &[Action::Publish], &["a"])],
        Some(Effect::Allow),
    )));
    h.send(1, publish("a", QoS::AtMostOnce, 0, "2"));
    assert_eq!(h.drain(), vec![]);
    h.send(1, publish("b", QoS::AtMostOnce, 0, "3"));
    assert_eq!(
        h.drain(),
        vec![packet(2, delivered("b", QoS::AtMostOnce, 0, "3"))]
    );
}

#[test]
fn will_on_a_denied_topic_is_dropped_at_connect() {
    let mut h = Harness::new();
    h.broker.set_authorizer(own_topics_only());
    h.client(2, "devices");
    let mut c = connect(V3_1_1, "d1", true);
    c.will = Some(will("elsewhere", "bye", QoS::AtMostOnce, false));
    h.connected(1, c);
    assert_eq!(h.broker.stats().dropped.not_authorized, 1);
    h.close(1);
    assert_eq!(h.drain(), vec![]);
}

#[test]
fn grants_and_username_come_from_the_authentication() {
    let mut h = Harness::new();
    h.broker.set_authorizer(Arc::new(PolicySet::new(
        vec![policy(
            "users",
            Effect::Allow,
            &[Action::Connect, Action::Subscribe, Action::Publish],
            &["u/${username}/#"],
        )],
        None,
    )));
    let principal = Principal {
        username: Some("alice".into()),
        authenticator: "test".into(),
        ..Principal::default()
    };
    let out = authenticated(&mut h, 1, connect(V5, "c", true), accepted(principal));
    assert!(
        matches!(&out[0], Transmit::Packet { packet: Packet::ConnAck(a), .. } if a.reason_code == ReasonCode::SUCCESS)
    );
    h.send(
        1,
        subscribe(
            1,
            &[("u/alice/#", QoS::AtMostOnce), ("u/bob/#", QoS::AtMostOnce)],
        ),
    );
    assert_eq!(h.drain(), vec![packet(1, suback(1, &[0x00, 0x87]))]);
}

#[test]
fn device_properties_are_added_to_every_published_message() {
    let mut h = Harness::new();
    h.client_v5(2, "watch");
    h.subscribe(2, "#", QoS::AtMostOnce);
    let principal = Principal {
        authenticator: "device".into(),
        properties: vec![("site".into(), "north".into())],
        ..Principal::default()
    };
    authenticated(&mut h, 1, connect(V5, "dev", true), accepted(principal));
    h.send(1, publish("t", QoS::AtMostOnce, 0, "x"));
    let expected = with_props(delivered("t", QoS::AtMostOnce, 0, "x"), |p| {
        p.user_properties = vec![("site".into(), "north".into())];
    });
    assert_eq!(h.drain(), vec![packet(2, expected)]);
}

#[test]
fn revoked_connection_gets_disconnect_0x87_and_its_will() {
    let mut h = Harness::new();
    h.client_v5(2, "watch");
    h.subscribe(2, "w", QoS::AtMostOnce);
    let mut c = connect(V5, "dev", true);
    c.will = Some(will("w", "gone", QoS::AtMostOnce, false));
    h.connected(1, c);
    assert!(h.broker.revoke_connection(ConnId(1), h.now));
    assert_eq!(
        h.drain(),
        vec![
            packet(1, disconnect(ReasonCode::NOT_AUTHORIZED)),
            close(1),
            packet(2, delivered("w", QoS::AtMostOnce, 0, "gone")),
        ]
    );
    assert!(!h.broker.revoke_connection(ConnId(1), h.now));
}
