//! Persistent QoS 1 throughput with the store's `immediate` and `relaxed` durability.
//!
//! `cargo run --release --example store_bench [seconds] [publishers]`
//!
//! For each mode: a broker in this process with its store in a temporary directory, one
//! persistent QoS 1 subscriber on `bench/#` (online, acknowledging), and `publishers`
//! persistent QoS 1 publishers (rumqttc, 100 in flight each) publishing 64-byte messages
//! as fast as the acknowledgements allow. Reports acknowledged publishes/s, deliveries/s
//! and the store's commits/s and fsyncs/s. Not a test: the figures depend on the disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aviary::store::Durability;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

fn options(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(false);
    o.set_keep_alive(Duration::from_secs(60));
    o.set_inflight(100);
    o
}

async fn run(durability: Durability, seconds: u64, publishers: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = aviary::Config {
        data_dir: dir.path().to_owned(),
        ..aviary::Config::default()
    };
    config.listener.bind = "127.0.0.1:0".parse().expect("addr");
    config.log.level = "warn".into();
    config.api.enabled = false;
    config.mqtt.max_queued_messages = 1_000_000;
    config.store.durability = durability;
    let server = aviary::start(config).await.expect("start");
    let port = server.mqtt_addr().port();

    let delivered = Arc::new(AtomicU64::new(0));
    let (sub, mut sub_loop) = AsyncClient::new(options("bench-sub", port), 1000);
    sub.subscribe("bench/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let counter = delivered.clone();
    tokio::spawn(async move {
        while let Ok(event) = sub_loop.poll().await {
            if let Event::Incoming(Packet::Publish(_)) = event {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let acked = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start_progress = server.store_progress();
    let started = Instant::now();
    for i in 0..publishers {
        let (client, mut event_loop) =
            AsyncClient::new(options(&format!("bench-pub-{i}"), port), 1000);
        let counter = acked.clone();
        tokio::spawn(async move {
            while let Ok(event) = event_loop.poll().await {
                if let Event::Incoming(Packet::PubAck(_)) = event {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        tokio::spawn(async move {
            let payload = vec![b'x'; 64];
            while Instant::now() < deadline {
                if client
                    .publish(
                        format!("bench/{i}"),
                        QoS::AtLeastOnce,
                        false,
                        payload.clone(),
                    )
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
    tokio::time::sleep_until(deadline.into()).await;
    let elapsed = started.elapsed().as_secs_f64();
    let progress = server.store_progress();
    let acked = acked.load(Ordering::Relaxed) as f64;
    let delivered = delivered.load(Ordering::Relaxed) as f64;
    let commits = (progress.commits - start_progress.commits) as f64;
    let syncs = (progress.syncs - start_progress.syncs) as f64;
    let ops = (progress.ops - start_progress.ops) as f64;
    println!(
        "{durability:?}: {publishers} publishers, {elapsed:.1} s: {:.0} publishes acked/s, \
         {:.0} deliveries/s, {:.0} commits/s, {:.0} fsyncs/s, {:.1} store ops/commit",
        acked / elapsed,
        delivered / elapsed,
        commits / elapsed,
        syncs / elapsed,
        ops / commits.max(1.0),
    );
    server.shutdown().await.expect("shutdown");
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let publishers = args.next().and_then(|s| s.parse().ok()).unwrap_or(8);
    for durability in [Durability::Immediate, Durability::Relaxed] {
        run(durability, seconds, publishers).await;
    }
}
