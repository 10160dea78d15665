//! Starting and stopping a broker: loads the management records, binds the listeners and
//! the management API, spawns the broker task, and runs the graceful shutdown sequence.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::api::keys::ApiKeys;
use crate::api::AppState;
use crate::broker_task::{BrokerHandle, BrokerTask, Event, Ops};
use crate::connection::ConnectionContext;
use crate::limits::{PlanLimits, PlanLimitsState};
use crate::listener::registry::{
    ListenerSpec, Registry, TlsSettings, DEFAULT_LISTENER, TLS_LISTENER,
};
use crate::listener::{AcceptShared, ListenerKind};
use crate::parking::Parker;
use crate::records::{RecordKind, Records};
use crate::security::Security;
use crate::Config;

/// Events that may wait for the broker task before connections feel backpressure (their
/// reads pause until there is room).
const EVENT_QUEUE: usize = 4096;

/// How long shutdown waits for connections to write their last packets and close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// After the grace period, how long the forcibly closed connections get to finish.
const FORCE_CLOSE_WAIT: Duration = Duration::from_secs(1);

/// A broker running in the background of the current tokio runtime.
pub struct RunningServer {
    /// Where the default MQTT listener was bound at start (the real port when the config
    /// said 0).
    mqtt_addr: SocketAddr,
    /// Where the management API is bound, if enabled.
    api_addr: Option<SocketAddr>,
    /// The MQTT listeners.
    listeners: Arc<Registry>,
    /// Stops the management API.
    stop_api: CancellationToken,
    /// The management API task.
    api_task: Option<JoinHandle<()>>,
    /// The broker task's inbox, for [`Event::Shutdown`].
    events: mpsc::Sender<Event>,
    /// The broker task; it fails only when the store does.
    broker_task: JoinHandle<anyhow::Result<()>>,
    /// Every connection task.
    connections: TaskTracker,
    /// Drops connections that do not finish within the grace period.
    force_close: CancellationToken,
    /// Idle plain TCP connections; stopped once every connection is done.
    parker: Option<Arc<Parker>>,
    /// The store writer's reports (commits, syncs, operations).
    store_progress: tokio::sync::watch::Receiver<crate::store::Progress>,
    /// Users, device identities, policies, certificates: changed at runtime.
    security: Arc<Security>,
    /// Where the `[tls_listener]` was bound at start, if configured.
    tls_addr: Option<SocketAddr>,
    /// Background tasks (JWKS refreshes); none outlives [`RunningServer::shutdown`].
    background: TaskTracker,
    /// Stops the background tasks.
    stop_background: CancellationToken,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("mqtt_addr", &self.mqtt_addr)
            .field("api_addr", &self.api_addr)
            .finish_non_exhaustive()
    }
}

/// Binds the listeners and the API and spawns the broker; returns as soon as clients can
/// connect.
pub async fn start(mut config: Config) -> anyhow::Result<RunningServer> {
    // The operations side drains the core's events (usage, `$events` topics).
    config.mqtt.emit_events = true;
    // The store first: a damaged or newer store stops the start before any client
    // connects, with a message that says what to do.
    let opened =
        crate::store::open_broker(&config.data_dir, config.mqtt.clone(), &config.store).await?;
    let records: Arc<dyn Records> = Arc::new(opened.management.clone());
    start_with_records(config, records, opened).await
}

/// [`start`] with the management records kept in `records` and the broker and store
/// writer of `opened`.
async fn start_with_records(
    config: Config,
    records: Arc<dyn Records>,
    opened: crate::store::Opened,
) -> anyhow::Result<RunningServer> {
    let stored_limits: Vec<(String, PlanLimits)> =
        crate::records::list(&*records, RecordKind::PlanLimits)
            .context("cannot load the plan limits")?;
    let limits = stored_limits.into_iter().next().map_or_else(
        || PlanLimits::from_config(&config.mqtt, &config.limits),
        |(_, l)| l,
    );
    let limits = Arc::new(PlanLimitsState::new(limits));

    let (events, inbox) = mpsc::channel(EVENT_QUEUE);
    let sockets = Arc::new(Semaphore::new(crate::listener::socket_limit(
        config.mqtt.max_connections,
    )));
    crate::auth::install_crypto_provider();
    let security = Arc::new(Security::load(&config.security, &records)?);
    // Background tasks of the security side (JWKS refreshes), stopped at shutdown.
    let background = TaskTracker::new();
    let stop_background = CancellationToken::new();
    // A start that fails further down stops them too.
    let background_guard = stop_background.clone().drop_guard();
    // Always running: JWT settings with a JWKS may arrive through the API.
    let jwks_client = crate::auth::http_client_builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the JWKS HTTP client")?;
    background.spawn(Arc::clone(&security.auth).jwks_loop(jwks_client, stop_background.clone()));
    let crate::store::Opened {
        mut broker, writer, ..
    } = opened;
    let store_progress = writer.watch();
    broker.set_limits(limits.get().runtime());
    broker.set_authorizer(security.policies.clone());
    let metrics = crate::metrics::Metrics::new().with_store(store_progress.clone());
    let ops = Ops::new(metrics.clone(), Arc::clone(&limits.rates));
    let connections = TaskTracker::new();
    let force_close = CancellationToken::new();
    let parker = if config.listener.park_after.is_zero() {
        None
    } else {
        let parker = Parker::start(
            config.listener.park_after,
            connections.clone(),
            metrics.parked(),
        )
        .context("cannot start the parked-connection thread")?;
        Some(parker)
    };
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    // One worker thread: the broker task writes to plain TCP connections itself, and reads
    // those that talk (see `ConnectionContext::direct_writes`, `crate::direct_reads`).
    let direct_writes = workers == 1;
    debug!(workers, direct_writes, "runtime");
    let mut broker_task = BrokerTask::with_ops(broker, inbox, ops).with_store(writer);
    if direct_writes {
        broker_task = broker_task.with_direct_reads(crate::direct_reads::DirectReads::new(
            connections.clone(),
            parker.clone(),
            metrics.direct(),
        ));
    }
    let broker_task = tokio::spawn(broker_task.run());
    let handle = BrokerHandle {
        events: events.clone(),
    };

    let ctx = ConnectionContext {
        events: events.clone(),
        max_packet_size: Arc::clone(&limits.max_packet_size),
        listener: Arc::from(crate::listener::registry::DEFAULT_LISTENER),
        rates: Arc::clone(&limits.rates),
        listener_off: CancellationToken::new(),
        force_close: force_close.clone(),
        auth: Some(Arc::clone(&security.auth)),
        certificate: None,
        wire: metrics.wire(),
        parker: parker.clone(),
        direct_writes,
        direct_reads: direct_writes,
    };
    let next_id = Arc::new(AtomicU64::new(0));
    let shared = AcceptShared {
        tracker: connections.clone(),
        sockets,
        next_id,
    };
    let listeners = Arc::new(Registry::new(
        ctx,
        shared,
        handle.clone(),
        Arc::clone(&records),
        Arc::clone(&security.certificates),
    ));
    let mut configured = vec![ListenerSpec::default_tcp(config.listener.bind)];
    if let Some(tls) = &config.security.tls_listener {
        // `[tls_listener]` is the listener named "tls" (kind tls), like `[listener]` is
        // `default`.
        configured.push(ListenerSpec {
            name: TLS_LISTENER.to_owned(),
            kind: ListenerKind::Tls,
            bind: tls.bind,
            enabled: true,
            allow: Vec::new(),
            tls: Some(TlsSettings {
                cert: tls.cert.clone(),
                key: tls.key.clone(),
                x509_mode: tls.mode,
            }),
        });
    }
    listeners
        .start_all(configured)
        .await
        .context("cannot start the MQTT listeners")?;
    let mqtt_addr = listeners
        .address(DEFAULT_LISTENER)
        .await
        .unwrap_or(config.listener.bind);
    let tls_addr = listeners.address(TLS_LISTENER).await;

    let stop_api = CancellationToken::new();
    let (api_addr, api_task) = if config.api.enabled {
        let (keys, generated) = ApiKeys::load(Arc::clone(&records), config.api.api_key.as_deref())
            .context("cannot load the API keys")?;
        if let Some(key) = generated {
            // Printed once: only its hash is kept.
            println!("aviary: generated the bootstrap API key (shown only now): {key}");
        }
        let listener = crate::api::bind(config.api.bind)
            .await
            .with_context(|| format!("cannot bind the management API to {}", config.api.bind))?;
        let addr = listener
            .local_addr()
            .context("cannot read the API listener's address")?;
        info!("management API on http://{addr}/api/v1/");
        let state = AppState {
            broker: handle,
            listeners: Arc::clone(&listeners),
            keys: Arc::new(keys),
            limits,
            records,
            metrics,
            security: Arc::clone(&security),
        };
        let task = tokio::spawn(crate::api::serve(listener, state, stop_api.clone()));
        (Some(addr), Some(task))
    } else {
        (None, None)
    };

    background_guard.disarm();
    Ok(RunningServer {
        mqtt_addr,
        api_addr,
        listeners,
        stop_api,
        api_task,
        events,
        broker_task,
        connections,
        force_close,
        parker,
        store_progress,
        security,
        tls_addr,
        background,
        stop_background,
    })
}

/// Runs a broker until `shutdown` completes, then shuts it down gracefully.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut server = start(config).await?;
    tokio::select! {
        () = shutdown => {}
        result = &mut server.broker_task => {
            // Only a store failure or a panic ends the broker task before shutdown.
            match result {
                Ok(Err(e)) => return Err(e),
                other => anyhow::bail!("the broker task stopped unexpectedly: {other:?}"),
            }
        }
    }
    info!("shutting down");
    server.shutdown().await
}

impl RunningServer {
    /// What the store writer has done so far (commits, syncs, operations).
    pub fn store_progress(&self) -> crate::store::Progress {
        *self.store_progress.borrow()
    }

    /// The address the default MQTT listener was bound to at start.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    /// The address of the management API (`None` when `api.enabled` is false).
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
    }

    /// The address of the `[tls_listener]`, if one is configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Users, device identities, policies and certificates, changeable at runtime.
    pub fn security(&self) -> &Arc<Security> {
        &self.security
    }

    /// Graceful shutdown: stop accepting, DISCONNECT 0x8B to 5.0 clients, close every
    /// connection after its queued packets are written, and wait (a few seconds at most).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop_api.cancel();
        self.listeners.stop_accepting().await;
        // Fails only when the broker task is already gone; its result says why.
        let _ = self.events.send(Event::Shutdown).await;
        drop(self.events);
        let broker = self.broker_task.await;

        self.connections.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.connections.wait())
            .await
            .is_err()
        {
            warn!(
                open = self.connections.len(),
                "connections still open after the grace period; dropping them"
            );
            self.force_close.cancel();
            let _ = tokio::time::timeout(FORCE_CLOSE_WAIT, self.connections.wait()).await;
        }
        if let Some(parker) = &self.parker {
            parker.stop();
        }
        if let Some(api) = self.api_task {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, api).await;
        }
        self.stop_background.cancel();
        self.background.close();
        self.background.wait().await;
        // Certificates registered just in time by the last handshakes are written off the
        // handshake; they are stored (and let go of the store) before the server is gone.
        self.security.certificates.writes_done().await;
        broker.context("the broker task failed")??;
        info!("shutdown complete");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Smoke tests of the whole shell with the real core, over loopback TCP with literal
    //! wire bytes. The end-to-end suite in `tests/` covers the protocol itself.

    use aviary_codec::{Packet, ProtocolVersion, ReasonCode};
    use bytes::BytesMut;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    /// A broker on a free loopback port with its store in a temporary directory (kept
    /// alive by the returned guard).
    async fn start_broker() -> (RunningServer, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let server = start(test_config(&dir)).await.unwrap();
        (server, dir)
    }

    fn test_config(dir: &tempfile::TempDir) -> Config {
        let mut config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        config.listener.bind = "127.0.0.1:0".parse().unwrap();
        config.api.bind = "127.0.0.1:0".parse().unwrap();
        config
    }

    /// Reads exactly `n` bytes (bounded by a generous timeout, which only a hang hits).
    async fn read_exact(client: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut bytes = vec![0; n];
        tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut bytes))
            .await
            .expect("timed out")
            .unwrap();
        bytes
    }

    /// CONNECT, 3.1.1, clean session, keep alive 60, client id of one letter.
    fn connect_v3(id: u8) -> [u8; 15] {
        [
            0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x01, id,
        ]
    }

    #[tokio::test]
    async fn publish_reaches_a_subscriber_through_the_shell() {
        let (server, _dir) = start_broker().await;
        let mut sub = TcpStream::connect(server.mqtt_addr()).await.unwrap();
        sub.write_all(&connect_v3(b's')).await.unwrap();
        assert_eq!(read_exact(&mut sub, 4).await, [0x20, 0x02, 0x00, 0x00]);
        // SUBSCRIBE id 1 to "t" at QoS 0 → SUBACK granting QoS 0.
        sub.write_all(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b't', 0x00])
            .await
            .unwrap();
        assert_eq!(
            read_exact(&mut sub, 5).await,
            [0x90, 0x03, 0x00, 0x01, 0x00]
        );

        let mut publisher = TcpStream::connect(server.mqtt_addr()).await.unwrap();
        let publish = [0x30, 0x05, 0x00, 0x01, b't', b'h', b'i'];
        publisher
            .write_all(&[&connect_v3(b'p')[..], &publish].concat())
            .await
            .unwrap();
        assert_eq!(
            read_exact(&mut publisher, 4).await,
            [0x20, 0x02, 0x00, 0x00]
        );
        assert_eq!(read_exact(&mut sub, 7).await, publish);
        server.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_sends_server_shutting_down_to_v5_and_closes_3_1_1() {
        let (server, _dir) = start_broker().await;
        let mut v3 = TcpStream::connect(server.mqtt_addr()).await.unwrap();
        v3.write_all(&connect_v3(b'a')).await.unwrap();
        assert_eq!(read_exact(&mut v3, 4).await, [0x20, 0x02, 0x00, 0x00]);

        let mut v5 = TcpStream::connect(server.mqtt_addr()).await.unwrap();
        // CONNECT, 5.0, clean start, keep alive 60, no properties, client id "b".
        v5.write_all(&[
            0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3c, 0x00, 0x00,
            0x01, b'b',
        ])
        .await
        .unwrap();
        // CONNACK: its properties depend on the configuration, so decode rather than compare.
        let mut buf = BytesMut::new();
        let connack = loop {
            if let Some(packet) =
                aviary_codec::decode(&mut buf, ProtocolVersion::V5, 1 << 20).unwrap()
            {
                break packet;
            }
            let n = tokio::time::timeout(Duration::from_secs(10), v5.read_buf(&mut buf))
                .await
                .expect("timed out")
                .unwrap();
            assert_ne!(n, 0, "closed before CONNACK");
        };
        assert!(
            matches!(&connack, Packet::ConnAck(c) if c.reason_code == ReasonCode::SUCCESS),
            "{connack:?}"
        );

        server.shutdown().await.unwrap();

        let mut rest = Vec::new();
        v5.read_to_end(&mut rest).await.unwrap();
        buf.extend_from_slice(&rest);
        let disconnect = aviary_codec::decode(&mut buf, ProtocolVersion::V5, 1 << 20).unwrap();
        assert!(
            matches!(&disconnect, Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::SERVER_SHUTTING_DOWN),
            "{disconnect:?}"
        );
        let mut rest = Vec::new();
        v3.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "3.1.1 has no server DISCONNECT: {rest:?}");
    }

    /// The broker's timers run on tokio's clock: with time paused, a silent client is
    /// disconnected after 1.5 times its keep alive [MQTT-3.1.2-24] without real waiting.
    #[tokio::test(start_paused = true)]
    async fn mqtt_3_1_2_24_keep_alive_expiry_closes_the_connection_on_tokio_time() {
        // Parking off: the check that parks the silent connection comes due with its keep
        // alive (3 s after it opened), and a parked connection resumes through the
        // parker's own thread, which paused tokio time does not wait for: the runtime,
        // idle meanwhile, jumped to the 60 s timeout below (about once in five runs of the
        // crate's tests under load).
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&dir);
        config.listener.park_after = Duration::ZERO;
        let server = start(config).await.unwrap();
        let mut client = TcpStream::connect(server.mqtt_addr()).await.unwrap();
        // Before the CONNECT is sent: the broker counts the 1.5 × keep alive from when it
        // read it, which a clock started after the CONNACK would place up to the
        // CONNECT's handling time later (a failure seen once on a loaded machine).
        let start = tokio::time::Instant::now();
        // CONNECT, 3.1.1, clean session, keep alive 2 s, client id "k".
        client
            .write_all(&[
                0x10, 0x0d, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x02, 0x00, 0x01,
                b'k',
            ])
            .await
            .unwrap();
        assert_eq!(read_exact(&mut client, 4).await, [0x20, 0x02, 0x00, 0x00]);
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), client.read_to_end(&mut rest))
            .await
            .expect("not closed within 60 s of tokio time")
            .unwrap();
        assert!(rest.is_empty(), "{rest:?}");
        assert!(
            start.elapsed() >= Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        server.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn bind_failure_names_the_address() {
        let (first, _dir) = start_broker().await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&dir);
        config.listener.bind = first.mqtt_addr();
        config.api.bind = "127.0.0.1:0".parse().unwrap();
        let err = start(config).await.unwrap_err();
        assert!(
            format!("{err:#}").contains(&first.mqtt_addr().to_string()),
            "{err:#}"
        );
        first.shutdown().await.unwrap();
    }
}
