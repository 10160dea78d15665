//! End-to-end: tiny scenarios against a Mosquitto started by the test on a free port.
//! Skipped, with the reason printed, where /usr/sbin/mosquitto is not installed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aviary_bench::brokers::{BrokerKind, BrokerSettings, RunningBroker};
use aviary_bench::report::RunReport;
use aviary_bench::scenario::{self, RunOptions, Scenario};
use aviary_codec::{ProtocolVersion, QoS};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

fn start_mosquitto() -> Option<RunningBroker> {
    start_mosquitto_with(false)
}

/// Mosquitto, with a TLS listener as well when `tls`.
fn start_mosquitto_with(tls: bool) -> Option<RunningBroker> {
    if !Path::new(MOSQUITTO).exists() {
        eprintln!("skipped: {MOSQUITTO} is not installed");
        return None;
    }
    let settings = BrokerSettings {
        max_inflight: 16,
        max_queued: 1000,
        persistence: false,
        aviary_durability: Default::default(),
        pin_cpu: None,
        tls,
    };
    Some(RunningBroker::start(&BrokerKind::Mosquitto(PathBuf::from(MOSQUITTO)), &settings).unwrap())
}

fn options(broker: SocketAddr, pid: u32, scenario: Scenario, qos: QoS) -> RunOptions {
    RunOptions {
        broker,
        broker_label: "mosquitto".into(),
        scenario,
        qos,
        version: ProtocolVersion::V3_1_1,
        payload: 16,
        duration: Duration::from_secs(5),
        messages: None,
        rate: None,
        publishers: None,
        subscribers: None,
        connections: 4,
        max_inflight: 16,
        e2e_window: 100,
        source_ips: 1,
        broker_pid: Some(pid),
        drain_timeout: Duration::from_secs(5),
        connect_concurrency: 8,
        processes: 1,
        run_id: format!("test{}", std::process::id()),
        tls_ca: None,
    }
}

#[tokio::test]
async fn one_to_one_qos1_200_messages_all_delivered_once() {
    let Some(broker) = start_mosquitto() else {
        return;
    };
    let mut o = options(
        broker.addr,
        broker.pid,
        Scenario::OneToOne,
        QoS::AtLeastOnce,
    );
    o.messages = Some(200);
    let report = scenario::run(&o).await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.sent, 200);
    assert_eq!(report.delivery.expected, 200);
    assert_eq!(report.delivery.unique, 200);
    assert_eq!(report.delivery.missing, 0);
    assert_eq!(report.latency.samples, report.delivered);
    // The histogram behind the latency figures reaches `compare` through the JSON report.
    let histogram = report
        .latency_histogram
        .as_ref()
        .expect("latency histogram");
    assert_eq!(histogram.len(), report.delivered);
    assert_eq!(histogram.summary(), report.latency);
    let json = serde_json::to_string_pretty(&report).unwrap();
    let parsed: RunReport = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed.latency_histogram.as_ref(), Some(histogram));
    let usage = report.broker_usage.expect("broker usage from /proc");
    assert_eq!(usage.pid, broker.pid);
    assert!(usage.peak_rss_kib > 0);
    assert!(report.ok);
}

#[tokio::test]
async fn fan_out_qos2_every_subscriber_gets_every_message_exactly_once() {
    let Some(broker) = start_mosquitto() else {
        return;
    };
    let mut o = options(broker.addr, broker.pid, Scenario::FanOut, QoS::ExactlyOnce);
    o.messages = Some(50);
    o.subscribers = Some(3);
    o.run_id = format!("fanout{}", std::process::id());
    let report = scenario::run(&o).await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.subscribers, 3);
    assert_eq!(report.delivery.expected, 150);
    assert_eq!(report.delivered, 150);
    assert_eq!(report.delivery.duplicates, 0);
    assert!(report.ok);
}

#[tokio::test]
async fn connection_rate_completes_round_trips() {
    let Some(broker) = start_mosquitto() else {
        return;
    };
    let mut o = options(broker.addr, broker.pid, Scenario::ConnRate, QoS::AtMostOnce);
    o.duration = Duration::from_millis(300);
    o.run_id = format!("conn{}", std::process::id());
    let report = scenario::run(&o).await.unwrap();
    let figures = report.connections.expect("connection figures");
    assert!(figures.opened > 0);
    assert_eq!(figures.failed, 0);
    let histogram = figures.connect_histogram.expect("connect histogram");
    assert_eq!(histogram.len(), figures.opened);
    assert_eq!(histogram.summary(), figures.connect_latency);
    assert!(report.ok, "{:?}", report.errors);
}

#[tokio::test]
async fn connection_rate_over_tls_completes_round_trips() {
    let Some(broker) = start_mosquitto_with(true) else {
        return;
    };
    let tls = broker.tls.as_ref().expect("a TLS listener");
    let mut o = options(tls.addr, broker.pid, Scenario::ConnRate, QoS::AtMostOnce);
    o.tls_ca = Some(tls.ca.clone());
    o.duration = Duration::from_millis(300);
    o.run_id = format!("tls{}", std::process::id());
    let report = scenario::run(&o).await.unwrap();
    let figures = report.connections.expect("connection figures");
    assert!(figures.opened > 0);
    assert_eq!(figures.failed, 0);
    assert!(report.ok, "{:?}", report.errors);
}
