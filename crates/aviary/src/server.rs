//! Starting and stopping a broker: binds the listener, spawns the broker task and the
//! accept loop, and runs the graceful shutdown sequence.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use aviary_core::Broker;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::broker_task::{BrokerTask, Event};
use crate::connection::ConnectionContext;
use crate::Config;

/// Events that may wait for the broker task before connections feel backpressure (their
/// reads pause until there is room).
const EVENT_QUEUE: usize = 4096;

/// How long shutdown waits for connections to write their last packets and close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// After the grace period, how long the forcibly closed connections get to finish.
const FORCE_CLOSE_WAIT: Duration = Duration::from_secs(1);

/// A broker running in the background of the current tokio runtime.
#[derive(Debug)]
pub struct RunningServer {
    /// Where the MQTT listener is bound (the real port when the config said 0).
    mqtt_addr: SocketAddr,
    /// Stops the accept loop.
    stop_accepting: CancellationToken,
    /// The accept loop, awaited before the broker is shut down so no `Open` follows.
    listener_task: JoinHandle<()>,
    /// The broker task's inbox, for [`Event::Shutdown`].
    events: mpsc::Sender<Event>,
    /// The broker task.
    broker_task: JoinHandle<()>,
    /// Every connection task.
    connections: TaskTracker,
    /// Drops connections that do not finish within the grace period.
    force_close: CancellationToken,
}

/// Binds the listener and spawns the broker; returns as soon as clients can connect.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    let listener = TcpListener::bind(config.listener.bind)
        .await
        .with_context(|| format!("cannot bind the MQTT listener to {}", config.listener.bind))?;
    let mqtt_addr = listener
        .local_addr()
        .context("cannot read the MQTT listener's address")?;
    info!("MQTT listener on {mqtt_addr}");

    let (events, inbox) = mpsc::channel(EVENT_QUEUE);
    let max_packet_size = config.mqtt.max_packet_size;
    let broker = Broker::new(config.mqtt);
    let broker_task = tokio::spawn(BrokerTask::new(broker, inbox).run());

    let connections = TaskTracker::new();
    let stop_accepting = CancellationToken::new();
    let force_close = CancellationToken::new();
    let ctx = ConnectionContext {
        events: events.clone(),
        max_packet_size,
        force_close: force_close.clone(),
    };
    let listener_task = tokio::spawn(crate::listener::run(
        listener,
        ctx,
        connections.clone(),
        stop_accepting.clone(),
    ));
    Ok(RunningServer {
        mqtt_addr,
        stop_accepting,
        listener_task,
        events,
        broker_task,
        connections,
        force_close,
    })
}

/// Runs a broker until `shutdown` completes, then shuts it down gracefully.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut server = start(config).await?;
    tokio::select! {
        () = shutdown => {}
        result = &mut server.broker_task => {
            // Only a panic ends the broker task before shutdown.
            anyhow::bail!("the broker task stopped unexpectedly: {result:?}");
        }
    }
    info!("shutting down");
    server.shutdown().await
}

impl RunningServer {
    /// The address the MQTT listener is bound to.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    /// Graceful shutdown: stop accepting, DISCONNECT 0x8B to 5.0 clients, close every
    /// connection after its queued packets are written, and wait (a few seconds at most).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop_accepting.cancel();
        let listener = self.listener_task.await;
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
        listener.context("the listener task failed")?;
        broker.context("the broker task failed")?;
        info!("shutdown complete");
        Ok(())
    }
}
