//! Policy decisions, one `check` per case: identity, request, expected effect.

use std::net::SocketAddr;
use std::sync::Arc;

use aviary_codec::{QoS, TopicFilter, TopicName};

use super::*;

fn principal(username: Option<&str>) -> Principal {
    Principal {
        username: username.map(Into::into),
        authenticator: "test".into(),
        ..Principal::default()
    }
}

fn identity<'a>(client_id: &'a str, peer: &str, principal: &'a Principal) -> Identity<'a> {
    Identity {
        client_id,
        peer: peer.parse::<SocketAddr>().unwrap(),
        principal,
    }
}

fn policy(
    id: &str,
    priority: i32,
    effect: Effect,
    actions: &[Action],
    resources: &[&str],
) -> Policy {
    Policy {
        id: id.into(),
        priority,
        effect,
        actions: actions.to_vec(),
        resources: resources
            .iter()
            .map(|r| ResourcePattern::new(r).unwrap())
            .collect(),
        conditions: Conditions::default(),
    }
}

/// Publish `topic` at QoS 1 without retain as client `c1`, user `u1`, from 10.1.2.3.
fn check_publish(set: &PolicySet, client: &str, topic: &str, expected: Effect) {
    let p = principal(Some("u1"));
    let who = identity(client, "10.1.2.3:5000", &p);
    let topic = TopicName::new(topic).unwrap();
    let request = Request::Publish {
        topic: &topic,
        qos: QoS::AtLeastOnce,
        retain: false,
    };
    assert_eq!(set.evaluate(&who, &request), expected, "{client} → {topic}");
}

fn check_subscribe(set: &PolicySet, client: &str, filter: &str, expected: Effect) {
    let p = principal(Some("u1"));
    let who = identity(client, "10.1.2.3:5000", &p);
    let filter = TopicFilter::new(filter).unwrap();
    let request = Request::Subscribe {
        filter: &filter,
        qos: QoS::AtMostOnce,
    };
    assert_eq!(
        set.evaluate(&who, &request),
        expected,
        "{client} ⊒ {filter}"
    );
}

#[test]
fn empty_set_allows_and_any_policy_makes_the_default_deny() {
    check_publish(&PolicySet::default(), "c1", "a", Effect::Allow);
    let set = PolicySet::new(
        vec![policy("p", 1, Effect::Allow, &[Action::Publish], &["x"])],
        None,
    );
    check_publish(&set, "c1", "x", Effect::Allow);
    check_publish(&set, "c1", "a", Effect::Deny);
    let permissive = PolicySet::new(
        vec![policy("p", 1, Effect::Deny, &[Action::Publish], &["x"])],
        Some(Effect::Allow),
    );
    check_publish(&permissive, "c1", "x", Effect::Deny);
    check_publish(&permissive, "c1", "a", Effect::Allow);
}

#[test]
fn first_match_by_priority_decides() {
    let set = PolicySet::new(
        vec![
            policy("allow-all", 10, Effect::Allow, &[Action::Publish], &["#"]),
            policy(
                "deny-secret",
                1,
                Effect::Deny,
                &[Action::Publish],
                &["secret/#"],
            ),
        ],
        None,
    );
    check_publish(&set, "c1", "secret/x", Effect::Deny);
    check_publish(&set, "c1", "public/x", Effect::Allow);
    // An allow on `#` does not grant `$` topics (they need an allow naming them; a deny
    // on `#` does hold there: see the system topics test).
    check_publish(&set, "c1", "$app/x", Effect::Deny);
}

#[test]
fn placeholders_bind_the_resource_to_the_connection() {
    let set = PolicySet::new(
        vec![
            policy(
                "own",
                1,
                Effect::Allow,
                &[Action::Publish, Action::Subscribe],
                &["devices/${clientid}/#"],
            ),
            policy(
                "user",
                2,
                Effect::Allow,
                &[Action::Subscribe],
                &["users/${username}/+"],
            ),
            policy(
                "prefixed",
                3,
                Effect::Allow,
                &[Action::Publish],
                &["t/dev-${clientid}"],
            ),
        ],
        None,
    );
    check_publish(&set, "c1", "devices/c1/telemetry", Effect::Allow);
    check_publish(&set, "c1", "devices/c2/telemetry", Effect::Deny);
    check_publish(&set, "c1", "devices/c1", Effect::Allow);
    check_publish(&set, "c1", "t/dev-c1", Effect::Allow);
    check_publish(&set, "c1", "t/dev-c2", Effect::Deny);
    check_subscribe(&set, "c1", "devices/c1/#", Effect::Allow);
    check_subscribe(&set, "c1", "devices/+/#", Effect::Deny);
    check_subscribe(&set, "c1", "devices/#", Effect::Deny);
    check_subscribe(&set, "c1", "users/u1/x", Effect::Allow);
    check_subscribe(&set, "c1", "users/u1/+", Effect::Allow);
    check_subscribe(&set, "c1", "users/u1/#", Effect::Deny);
    check_subscribe(&set, "c1", "users/u2/x", Effect::Deny);
}

#[test]
fn placeholder_values_with_wildcards_never_widen() {
    let set = PolicySet::new(
        vec![policy(
            "own",
            1,
            Effect::Allow,
            &[Action::Subscribe],
            &["d/${clientid}"],
        )],
        None,
    );
    check_subscribe(&set, "+", "d/+", Effect::Deny);
    check_subscribe(&set, "#", "d/#", Effect::Deny);
    let p = principal(None);
    let who = identity("c", "10.0.0.1:1", &p);
    let user_set = PolicySet::new(
        vec![policy(
            "u",
            1,
            Effect::Allow,
            &[Action::Subscribe],
            &["u/${username}"],
        )],
        None,
    );
    let filter = TopicFilter::new("u/").unwrap();
    let request = Request::Subscribe {
        filter: &filter,
        qos: QoS::AtMostOnce,
    };
    assert_eq!(user_set.evaluate(&who, &request), Effect::Deny);
}

#[test]
fn subscribe_resources_must_cover_the_whole_filter() {
    let set = PolicySet::new(
        vec![policy(
            "a",
            1,
            Effect::Allow,
            &[Action::Subscribe],
            &["a/+/c", "b/#"],
        )],
        None,
    );
    check_subscribe(&set, "c1", "a/x/c", Effect::Allow);
    check_subscribe(&set, "c1", "a/+/c", Effect::Allow);
    check_subscribe(&set, "c1", "a/#", Effect::Deny);
    check_subscribe(&set, "c1", "a/x/c/d", Effect::Deny);
    check_subscribe(&set, "c1", "b", Effect::Allow);
    check_subscribe(&set, "c1", "b/+/#", Effect::Allow);
    check_subscribe(&set, "c1", "$share/g/b/x", Effect::Allow);
    check_subscribe(&set, "c1", "$share/g/a/#", Effect::Deny);
}

#[test]
fn conditions_on_client_id_username_address_qos_and_retain() {
    let mut p = policy(
        "cond",
        1,
        Effect::Allow,
        &[Action::Publish, Action::Connect],
        &[],
    );
    p.conditions = Conditions {
        client_ids: vec![Wildcard::new("car-*"), Wildcard::new("meter-??")],
        usernames: vec![Wildcard::new("fleet*")],
        source_cidrs: vec![Cidr::new("10.0.0.0/8").unwrap(), Cidr::new("::1").unwrap()],
        qos: vec![QoS::AtMostOnce, QoS::AtLeastOnce],
        retain: Some(false),
    };
    let set = PolicySet::new(vec![p], None);
    let fleet = principal(Some("fleet-a"));
    let other = principal(Some("other"));
    let topic = TopicName::new("t").unwrap();
    let publish = |qos, retain| Request::Publish {
        topic: &topic,
        qos,
        retain,
    };
    let check = |who: Identity<'_>, request: Request<'_>, expected| {
        assert_eq!(
            set.evaluate(&who, &request),
            expected,
            "{who:?} {request:?}"
        );
    };
    check(
        identity("car-7", "10.9.9.9:1", &fleet),
        Request::Connect,
        Effect::Allow,
    );
    check(
        identity("meter-12", "10.9.9.9:1", &fleet),
        Request::Connect,
        Effect::Allow,
    );
    check(
        identity("meter-123", "10.9.9.9:1", &fleet),
        Request::Connect,
        Effect::Deny,
    );
    check(
        identity("bike-1", "10.9.9.9:1", &fleet),
        Request::Connect,
        Effect::Deny,
    );
    check(
        identity("car-7", "10.9.9.9:1", &other),
        Request::Connect,
        Effect::Deny,
    );
    check(
        identity("car-7", "192.168.1.1:1", &fleet),
        Request::Connect,
        Effect::Deny,
    );
    check(
        identity("car-7", "[::1]:1", &fleet),
        Request::Connect,
        Effect::Allow,
    );
    check(
        identity("car-7", "[::ffff:10.1.1.1]:1", &fleet),
        Request::Connect,
        Effect::Allow,
    );
    check(
        identity("car-7", "10.9.9.9:1", &fleet),
        publish(QoS::AtLeastOnce, false),
        Effect::Allow,
    );
    check(
        identity("car-7", "10.9.9.9:1", &fleet),
        publish(QoS::ExactlyOnce, false),
        Effect::Deny,
    );
    check(
        identity("car-7", "10.9.9.9:1", &fleet),
        publish(QoS::AtMostOnce, true),
        Effect::Deny,
    );
}

#[test]
fn grants_from_the_authenticator_decide_publish_and_subscribe_alone() {
    let set = PolicySet::new(
        vec![policy(
            "all",
            1,
            Effect::Allow,
            &[Action::Connect, Action::Publish, Action::Subscribe],
            &["#"],
        )],
        None,
    );
    let p = Principal {
        grants: Some(Grants {
            publish: vec![ResourcePattern::new("up/${clientid}").unwrap()],
            subscribe: vec![ResourcePattern::new("down/${clientid}/#").unwrap()],
        }),
        ..principal(None)
    };
    let who = identity("d1", "10.0.0.1:1", &p);
    let up = TopicName::new("up/d1").unwrap();
    let other = TopicName::new("up/d2").unwrap();
    let down = TopicFilter::new("down/d1/+").unwrap();
    let publish = |topic| Request::Publish {
        topic,
        qos: QoS::AtMostOnce,
        retain: false,
    };
    assert_eq!(decide(&set, &who, &Request::Connect), Effect::Allow);
    assert_eq!(decide(&set, &who, &publish(&up)), Effect::Allow);
    assert_eq!(decide(&set, &who, &publish(&other)), Effect::Deny);
    let subscribe = Request::Subscribe {
        filter: &down,
        qos: QoS::AtMostOnce,
    };
    assert_eq!(decide(&set, &who, &subscribe), Effect::Allow);
    let _ = Arc::new(p.clone());
}

#[test]
fn system_topics_need_a_policy_or_grant_that_names_them() {
    use Effect::{Allow, Deny};
    // No policy at all: the open start allows everything, system topics included.
    check_subscribe(&PolicySet::default(), "c1", "$SYS/#", Allow);
    let set = PolicySet::new(
        vec![
            policy("deny-secret", 1, Deny, &[Action::Subscribe], &["#"]),
            policy("sys", 2, Allow, &[Action::Subscribe], &["$SYS/#"]),
            policy(
                "all",
                3,
                Allow,
                &[Action::Subscribe, Action::Publish],
                &["#"],
            ),
            policy("any", 4, Allow, &[Action::Subscribe], &[]),
        ],
        Some(Allow),
    );
    let only_c9 = |mut p: Policy| {
        p.conditions.client_ids = vec![Wildcard::new("c9")];
        p
    };
    let set = PolicySet::new(
        set.policies()
            .iter()
            .cloned()
            .map(|p| if p.id == "deny-secret" { only_c9(p) } else { p })
            .collect(),
        Some(Allow),
    );
    // A deny on `#` covers system topics too.
    check_subscribe(&set, "c9", "$SYS/#", Deny);
    // An allow names them, or does not cover them (`#`, no resources at all); with no
    // match they are denied even though the configured default is allow.
    check_subscribe(&set, "c1", "$SYS/#", Allow);
    check_subscribe(&set, "c1", "$SYS/broker/sessions", Allow);
    check_subscribe(&set, "c1", "$events/#", Deny);
    check_subscribe(&set, "c1", "+/client_connected", Allow);
    check_publish(&set, "c1", "$events/client_connected", Deny);
    check_publish(&set, "c1", "a/b", Allow);
    // Grants are allows: the same narrowing.
    let p = Principal {
        grants: Some(Grants {
            publish: vec![],
            subscribe: vec![
                ResourcePattern::new("#").unwrap(),
                ResourcePattern::new("$events/+").unwrap(),
            ],
        }),
        ..principal(None)
    };
    let who = identity("d1", "10.0.0.1:1", &p);
    for (filter, expected) in [
        ("$SYS/#", Deny),
        ("$events/client_connected", Allow),
        ("$events/#", Deny),
        ("x/#", Allow),
    ] {
        let filter = TopicFilter::new(filter).unwrap();
        let request = Request::Subscribe {
            filter: &filter,
            qos: QoS::AtMostOnce,
        };
        assert_eq!(
            decide(&PolicySet::default(), &who, &request),
            expected,
            "{filter}"
        );
    }
}

#[test]
fn invalid_patterns_are_refused() {
    assert!(matches!(
        ResourcePattern::new("a/#/b"),
        Err(PatternError::Resource(_))
    ));
    assert!(matches!(
        ResourcePattern::new("a/b+"),
        Err(PatternError::Resource(_))
    ));
    assert!(matches!(
        ResourcePattern::new("a/${nope}"),
        Err(PatternError::Placeholder(_))
    ));
    assert!(matches!(
        Cidr::new("10.0.0.0/33"),
        Err(PatternError::Cidr(_))
    ));
    assert!(matches!(Cidr::new("nonsense"), Err(PatternError::Cidr(_))));
}

#[test]
fn wildcards() {
    let check = |pattern: &str, text: &str, expected: bool| {
        assert_eq!(
            Wildcard::new(pattern).matches(text),
            expected,
            "{pattern} ~ {text}"
        );
    };
    check("*", "", true);
    check("a*", "abc", true);
    check("*c", "abc", true);
    check("a*c*e", "abxcxe", true);
    check("a?c", "abc", true);
    check("a?c", "ac", false);
    check("abc", "abd", false);
    check("*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false);
}
