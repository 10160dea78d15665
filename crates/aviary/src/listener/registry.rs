//! The listeners of a running server, by name: created, switched on and off, given an IP
//! allow-list and deleted at runtime (management API), and stored so that API-made changes
//! come back after a restart. The config's `[listener]` is the listener named `default`.
//!
//! Switching a listener off stops its accept loop (the port is released) and disconnects
//! its clients (5.0: DISCONNECT 0x98 Administrative action); narrowing its allow-list
//! disconnects the clients outside it the same way. A new listener kind (TLS,
//! secure WebSocket) is one more [`ListenerKind`] and one more arm in the accept loop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::cidr::Cidr;
use super::{AcceptShared, ListenerKind};
use crate::broker_task::BrokerHandle;
use crate::connection::ConnectionContext;
use crate::records::{self, RecordError, RecordKind, Records};

/// The name of the listener from the config's `[listener]` section.
pub(crate) const DEFAULT_LISTENER: &str = "default";

/// A listener as described by the API and kept in the store.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ListenerSpec {
    /// Unique name (`default` is the config's listener).
    pub(crate) name: String,
    /// Transport.
    pub(crate) kind: ListenerKind,
    /// Address and port to bind (port 0: any free port).
    pub(crate) bind: SocketAddr,
    /// Accepting connections, or switched off.
    pub(crate) enabled: bool,
    /// Peers allowed to connect; empty: everyone.
    pub(crate) allow: Vec<Cidr>,
}

/// A listener and its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ListenerState {
    /// Its description.
    pub(crate) spec: ListenerSpec,
    /// Where it is bound while enabled (the real port when `bind` said 0).
    pub(crate) address: Option<SocketAddr>,
}

/// Why a listener operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ListenerError {
    /// No listener has this name.
    #[error("no listener named {0:?}")]
    NotFound(String),
    /// The name is taken.
    #[error("a listener named {0:?} exists already")]
    Exists(String),
    /// The default listener can be switched off but not deleted.
    #[error("the default listener cannot be deleted; disable it instead")]
    DefaultUndeletable,
    /// Binding failed (address in use, not local, no permission).
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The record store failed.
    #[error(transparent)]
    Store(#[from] RecordError),
}

/// One listener in the registry.
#[derive(Debug)]
struct Entry {
    spec: ListenerSpec,
    /// The allow-list its accept loop reads (changed in place at runtime).
    allow: Arc<RwLock<Vec<Cidr>>>,
    /// While enabled: the bound address, the stop signal and the accept loop.
    running: Option<Running>,
}

/// A running accept loop.
#[derive(Debug)]
struct Running {
    address: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Every listener of one server.
pub(crate) struct Registry {
    /// By name. An async mutex: operations bind sockets and await accept loops while
    /// holding it, which also serialises them.
    entries: Mutex<BTreeMap<String, Entry>>,
    /// What connections get; `listener` is replaced per listener.
    ctx: ConnectionContext,
    /// What the accept loops share.
    shared: AcceptShared,
    /// For disconnecting a switched-off listener's clients.
    broker: BrokerHandle,
    /// Where API-made listeners and changes are kept.
    records: Arc<dyn Records>,
}

impl Registry {
    pub(crate) fn new(
        ctx: ConnectionContext,
        shared: AcceptShared,
        broker: BrokerHandle,
        records: Arc<dyn Records>,
    ) -> Self {
        Self {
            entries: Mutex::new(BTreeMap::new()),
            ctx,
            shared,
            broker,
            records,
        }
    }

    /// Starts the default listener (from the config, with a stored change of its
    /// `enabled`/`allow` applied) and every stored listener.
    pub(crate) async fn start_all(&self, default_bind: SocketAddr) -> Result<(), ListenerError> {
        let stored: Vec<(String, ListenerSpec)> =
            records::list(&*self.records, RecordKind::Listener)?;
        let mut default = ListenerSpec {
            name: DEFAULT_LISTENER.to_owned(),
            kind: ListenerKind::Tcp,
            bind: default_bind,
            enabled: true,
            allow: Vec::new(),
        };
        let mut others = Vec::new();
        for (_, spec) in stored {
            if spec.name == DEFAULT_LISTENER {
                default.enabled = spec.enabled;
                default.allow = spec.allow;
            } else {
                others.push(spec);
            }
        }
        let mut entries = self.entries.lock().await;
        // The config's listener must bind; a stored one that cannot (its port taken since)
        // is kept unbound and logged, and readiness reports it, rather than the whole
        // broker failing to start.
        let entry = self.start_entry(default).await?;
        entries.insert(entry.spec.name.clone(), entry);
        for spec in others {
            let entry = match self.start_entry(spec.clone()).await {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::error!(name = %spec.name, error = %e, "stored listener not started");
                    Entry {
                        allow: Arc::new(RwLock::new(spec.allow.clone())),
                        spec,
                        running: None,
                    }
                }
            };
            entries.insert(entry.spec.name.clone(), entry);
        }
        Ok(())
    }

    /// Every listener, by name.
    pub(crate) async fn list(&self) -> Vec<ListenerState> {
        let entries = self.entries.lock().await;
        entries.values().map(state).collect()
    }

    /// One listener.
    pub(crate) async fn get(&self, name: &str) -> Result<ListenerState, ListenerError> {
        let entries = self.entries.lock().await;
        entries
            .get(name)
            .map(state)
            .ok_or_else(|| ListenerError::NotFound(name.to_owned()))
    }

    /// The address of the default listener while it is enabled.
    pub(crate) async fn default_address(&self) -> Option<SocketAddr> {
        let entries = self.entries.lock().await;
        entries
            .get(DEFAULT_LISTENER)
            .and_then(|e| e.running.as_ref().map(|r| r.address))
    }

    /// Whether every enabled listener is bound (readiness).
    pub(crate) async fn all_bound(&self) -> bool {
        let entries = self.entries.lock().await;
        entries
            .values()
            .all(|e| !e.spec.enabled || e.running.is_some())
    }

    /// Creates (and, if enabled, binds) a listener and stores it.
    pub(crate) async fn create(&self, spec: ListenerSpec) -> Result<ListenerState, ListenerError> {
        let mut entries = self.entries.lock().await;
        if entries.contains_key(&spec.name) {
            return Err(ListenerError::Exists(spec.name));
        }
        let entry = self.start_entry(spec).await?;
        records::put(
            &*self.records,
            RecordKind::Listener,
            &entry.spec.name,
            &entry.spec,
        )?;
        let view = state(&entry);
        entries.insert(entry.spec.name.clone(), entry);
        Ok(view)
    }

    /// Changes a listener's `enabled` flag and/or allow-list, at once, and stores it.
    pub(crate) async fn update(
        &self,
        name: &str,
        enabled: Option<bool>,
        allow: Option<Vec<Cidr>>,
    ) -> Result<ListenerState, ListenerError> {
        let mut entries = self.entries.lock().await;
        let entry = entries
            .get_mut(name)
            .ok_or_else(|| ListenerError::NotFound(name.to_owned()))?;
        if let Some(allow) = allow {
            *entry
                .allow
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = allow.clone();
            entry.spec.allow = allow.clone();
            // Clients already connected from outside the new list are disconnected too.
            self.disconnect(name, move |peer| {
                !allow.is_empty() && !allow.iter().any(|rule| rule.contains(peer.ip()))
            })
            .await;
        }
        match enabled {
            Some(true) if entry.running.is_none() => {
                entry.running = Some(self.bind(&entry.spec, &entry.allow).await?);
                entry.spec.enabled = true;
            }
            Some(false) if entry.running.is_some() => {
                entry.spec.enabled = false;
                self.stop(entry).await;
            }
            Some(enabled) => entry.spec.enabled = enabled,
            None => {}
        }
        records::put(&*self.records, RecordKind::Listener, name, &entry.spec)?;
        Ok(state(entry))
    }

    /// Deletes a listener: stops it, disconnects its clients and forgets it.
    pub(crate) async fn delete(&self, name: &str) -> Result<(), ListenerError> {
        if name == DEFAULT_LISTENER {
            return Err(ListenerError::DefaultUndeletable);
        }
        let mut entries = self.entries.lock().await;
        let mut entry = entries
            .remove(name)
            .ok_or_else(|| ListenerError::NotFound(name.to_owned()))?;
        self.stop(&mut entry).await;
        self.records.delete(RecordKind::Listener, name)?;
        Ok(())
    }

    /// Stops every accept loop (server shutdown; connections are ended by the broker).
    pub(crate) async fn stop_accepting(&self) {
        let mut entries = self.entries.lock().await;
        for entry in entries.values_mut() {
            if let Some(running) = entry.running.take() {
                running.stop.cancel();
                let _ = running.task.await;
            }
        }
    }

    /// Builds an entry and binds it if enabled.
    async fn start_entry(&self, spec: ListenerSpec) -> Result<Entry, ListenerError> {
        let allow = Arc::new(RwLock::new(spec.allow.clone()));
        let running = if spec.enabled {
            Some(self.bind(&spec, &allow).await?)
        } else {
            None
        };
        Ok(Entry {
            spec,
            allow,
            running,
        })
    }

    /// Binds `spec`'s address and spawns its accept loop.
    async fn bind(
        &self,
        spec: &ListenerSpec,
        allow: &Arc<RwLock<Vec<Cidr>>>,
    ) -> Result<Running, ListenerError> {
        let bind_error = |source| ListenerError::Bind {
            addr: spec.bind,
            source,
        };
        let listener = TcpListener::bind(spec.bind).await.map_err(bind_error)?;
        let address = listener.local_addr().map_err(bind_error)?;
        info!(name = %spec.name, kind = ?spec.kind, %address, "MQTT listener on");
        let stop = CancellationToken::new();
        let mut ctx = self.ctx.clone();
        ctx.listener = Arc::from(spec.name.as_str());
        ctx.listener_off = stop.clone();
        let task = tokio::spawn(super::run(
            listener,
            spec.kind,
            ctx,
            self.shared.clone(),
            Arc::clone(allow),
            stop.clone(),
        ));
        Ok(Running {
            address,
            stop,
            task,
        })
    }

    /// Stops an entry's accept loop and disconnects the clients it accepted.
    async fn stop(&self, entry: &mut Entry) {
        if let Some(running) = entry.running.take() {
            running.stop.cancel();
            let _ = running.task.await;
            info!(name = %entry.spec.name, "MQTT listener off");
        }
        self.disconnect(&entry.spec.name, |_| true).await;
    }

    /// Disconnects the connections listener `name` accepted whose peer `which` picks
    /// (5.0: DISCONNECT 0x98).
    async fn disconnect(&self, name: &str, which: impl Fn(SocketAddr) -> bool + Send + 'static) {
        let name = name.to_owned();
        // The broker task is gone only during shutdown, when everybody is disconnected.
        let _ = self
            .broker
            .call(move |ctx| {
                let conns: Vec<_> = ctx
                    .ops
                    .conns
                    .iter()
                    .filter(|(_, meta)| *meta.listener == *name)
                    .map(|(conn, _)| *conn)
                    .collect();
                for conn in conns {
                    if ctx.broker.connection_peer(conn).is_some_and(&which) {
                        ctx.broker.disconnect_connection(conn, ctx.now);
                    }
                }
            })
            .await;
    }
}

/// The view of an entry.
fn state(entry: &Entry) -> ListenerState {
    ListenerState {
        spec: entry.spec.clone(),
        address: entry.running.as_ref().map(|r| r.address),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, AtomicU64};

    use aviary_core::{Broker, BrokerConfig};
    use tokio::sync::{mpsc, Semaphore};
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::broker_task::BrokerTask;
    use crate::limits::PlanLimits;
    use crate::records::MemoryRecords;

    /// A registry over `records` with a broker task behind it.
    fn registry(records: Arc<dyn Records>) -> Registry {
        let (events, inbox) = mpsc::channel(64);
        tokio::spawn(BrokerTask::new(Broker::new(BrokerConfig::default()), inbox).run());
        let limits = PlanLimits::defaults(&BrokerConfig::default());
        let ctx = ConnectionContext {
            events: events.clone(),
            max_packet_size: Arc::new(AtomicU32::new(1024)),
            listener: DEFAULT_LISTENER.into(),
            rates: Arc::new(crate::rates::Rates::new(&limits)),
            listener_off: CancellationToken::new(),
            force_close: CancellationToken::new(),
            auth: None,
            certificate: None,
            wire: Arc::default(),
        };
        let shared = AcceptShared {
            tracker: TaskTracker::new(),
            sockets: Arc::new(Semaphore::new(16)),
            next_id: Arc::new(AtomicU64::new(0)),
        };
        Registry::new(ctx, shared, BrokerHandle { events }, records)
    }

    fn spec(name: &str, kind: ListenerKind, bind: &str) -> ListenerSpec {
        ListenerSpec {
            name: name.to_owned(),
            kind,
            bind: bind.parse().unwrap(),
            enabled: true,
            allow: Vec::new(),
        }
    }

    #[tokio::test]
    async fn listeners_and_their_changes_come_back_from_the_records() {
        let records: Arc<dyn Records> = Arc::new(MemoryRecords::default());
        let first = registry(Arc::clone(&records));
        let any = "127.0.0.1:0".parse().unwrap();
        first.start_all(any).await.unwrap();
        first
            .create(spec("web", ListenerKind::Ws, "127.0.0.1:0"))
            .await
            .unwrap();
        let allow = vec!["10.0.0.0/8".parse().unwrap()];
        first
            .update(DEFAULT_LISTENER, Some(false), Some(allow.clone()))
            .await
            .unwrap();
        first.stop_accepting().await;

        let again = registry(records);
        again.start_all(any).await.unwrap();
        let list = again.list().await;
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].spec.name, DEFAULT_LISTENER);
        assert!(!list[0].spec.enabled);
        assert_eq!(list[0].spec.allow, allow);
        assert_eq!(list[0].address, None);
        assert_eq!(list[1].spec.kind, ListenerKind::Ws);
        assert!(list[1].address.is_some());
        assert!(again.all_bound().await);
        again.stop_accepting().await;
    }

    #[tokio::test]
    async fn a_stored_listener_that_cannot_bind_does_not_stop_the_start() {
        let records: Arc<dyn Records> = Arc::new(MemoryRecords::default());
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let stored = spec("fixed", ListenerKind::Tcp, &format!("127.0.0.1:{port}"));
        records::put(&*records, RecordKind::Listener, "fixed", &stored).unwrap();
        let reg = registry(records);
        reg.start_all("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let fixed = reg.get("fixed").await.unwrap();
        assert_eq!(fixed.address, None);
        assert!(!reg.all_bound().await, "readiness reports it");
        assert!(matches!(
            reg.update("fixed", Some(true), None).await,
            Err(ListenerError::Bind { .. })
        ));
        drop(taken);
        reg.stop_accepting().await;
    }
}
