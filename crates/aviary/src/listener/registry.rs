//! The listeners of a running server, by name: created, switched on and off, given an IP
//! allow-list and deleted at runtime (management API), and stored so that API-made changes
//! come back after a restart. The config's `[listener]` is the listener named `default`.
//!
//! Switching a listener off stops its accept loop (the port is released) and disconnects
//! its clients (5.0: DISCONNECT 0x98 Administrative action); narrowing its allow-list
//! disconnects the clients outside it the same way.
//!
//! TLS and secure WebSocket listeners carry their server certificate and key (PEM file
//! paths) and X.509 mode; each has its own acceptor, made when the listener is created or
//! loaded (unreadable files or PEM are refused then, naming the field), and its certificate
//! can be replaced at runtime without dropping connections.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::cidr::Cidr;
use super::tls_settings::tls_error;
pub(crate) use super::tls_settings::TlsSettings;
use super::{AcceptShared, ListenerKind, Protocol};
use crate::broker_task::BrokerHandle;
use crate::connection::ConnectionContext;
use crate::records::{self, RecordError, RecordKind, Records};
use crate::tls::{CertificateRegistry, TlsAcceptorHandle};

/// The name of the listener from the config's `[listener]` section.
pub(crate) const DEFAULT_LISTENER: &str = "default";

/// The name of the listener from the config's `[tls_listener]` section.
pub(crate) const TLS_LISTENER: &str = "tls";

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
    /// The server certificate and X.509 mode of a `tls` or `wss` listener (absent in
    /// records written before TLS listeners existed: `serde(default)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tls: Option<TlsSettings>,
}

/// A change to a listener; `None` leaves that part as it is.
#[derive(Clone, Debug, Default)]
pub(crate) struct ListenerChange {
    /// Switch on or off.
    pub(crate) enabled: Option<bool>,
    /// Replace the allow-list.
    pub(crate) allow: Option<Vec<Cidr>>,
    /// Replace the server certificate (TLS kinds; new handshakes use it).
    pub(crate) cert: Option<PathBuf>,
    /// Replace the server key (TLS kinds).
    pub(crate) key: Option<PathBuf>,
}

impl ListenerSpec {
    /// The config's `[listener]`: plain TCP, named `default`.
    pub(crate) fn default_tcp(bind: SocketAddr) -> Self {
        Self {
            name: DEFAULT_LISTENER.to_owned(),
            kind: ListenerKind::Tcp,
            bind,
            enabled: true,
            allow: Vec::new(),
            tls: None,
        }
    }
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
    /// Listeners from the config file can be switched off but not deleted.
    #[error("listener {0:?} comes from the config file and cannot be deleted; disable it instead")]
    Configured(String),
    /// The TLS settings are missing, misplaced or unusable; `field` names the request
    /// field (`cert`, `key`, `x509_mode`).
    #[error("{field}: {message}")]
    Tls {
        field: &'static str,
        message: String,
    },
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
    /// The handshakes of a TLS kind.
    acceptor: Option<Arc<TlsAcceptorHandle>>,
    /// Defined by the config file: not deletable, and its settings come from there.
    configured: bool,
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
    /// The CAs and device certificates TLS listeners check client certificates against.
    certificates: Arc<CertificateRegistry>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    pub(crate) fn new(
        ctx: ConnectionContext,
        shared: AcceptShared,
        broker: BrokerHandle,
        records: Arc<dyn Records>,
        certificates: Arc<CertificateRegistry>,
    ) -> Self {
        Self {
            entries: Mutex::new(BTreeMap::new()),
            ctx,
            shared,
            broker,
            records,
            certificates,
        }
    }

    /// Starts the listeners of the config file (`default`, and `tls` from
    /// `[tls_listener]`), with a stored change of their `enabled`/`allow` (and, for `tls`,
    /// server certificate and key) applied, then every stored listener. A stored
    /// certificate that no longer loads falls back to the file's, with an error logged.
    pub(crate) async fn start_all(
        &self,
        configured: Vec<ListenerSpec>,
    ) -> Result<(), ListenerError> {
        let stored: Vec<(String, ListenerSpec)> =
            records::list(&*self.records, RecordKind::Listener)?;
        let mut configured = configured;
        let mut others = Vec::new();
        // The file's certificate and key of a configured listener whose stored ones differ.
        let mut file_tls: HashMap<String, TlsSettings> = HashMap::new();
        for (_, spec) in stored {
            match configured.iter_mut().find(|c| c.name == spec.name) {
                Some(from_config) => {
                    from_config.enabled = spec.enabled;
                    from_config.allow = spec.allow;
                    if let (Some(file), Some(stored)) = (&mut from_config.tls, spec.tls) {
                        if (&file.cert, &file.key) != (&stored.cert, &stored.key) {
                            file_tls.insert(from_config.name.clone(), file.clone());
                            file.cert = stored.cert;
                            file.key = stored.key;
                        }
                    }
                }
                None => others.push(spec),
            }
        }
        let mut entries = self.entries.lock().await;
        // The config's listeners must bind; a stored one that cannot (its port taken
        // since, its certificate file gone) is kept unbound and logged, and readiness
        // reports it, rather than the whole broker failing to start.
        for spec in configured {
            let from_tls_section = spec.name == TLS_LISTENER;
            let started = match file_tls.remove(&spec.name) {
                None => self.start_entry(spec).await,
                Some(file) => match self.start_entry(spec.clone()).await {
                    Err(e @ ListenerError::Tls { .. }) => {
                        tracing::error!(name = %spec.name, error = %e,
                            "stored server certificate not usable; using the configuration file's");
                        let mut spec = spec;
                        spec.tls = Some(file);
                        self.start_entry(spec).await
                    }
                    other => other,
                },
            };
            let mut entry = started.map_err(|e| match e {
                // Named as the config file's keys.
                ListenerError::Tls { field, message } if from_tls_section => ListenerError::Tls {
                    field: match field {
                        "cert" => "tls_listener.cert",
                        "key" => "tls_listener.key",
                        _ => "tls_listener",
                    },
                    message,
                },
                other => other,
            })?;
            entry.configured = true;
            entries.insert(entry.spec.name.clone(), entry);
        }
        for spec in others {
            let entry = match self.start_entry(spec.clone()).await {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::error!(name = %spec.name, error = %e, "stored listener not started");
                    Entry {
                        allow: Arc::new(RwLock::new(spec.allow.clone())),
                        spec,
                        running: None,
                        acceptor: None,
                        configured: false,
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

    /// The address of listener `name` while it is enabled.
    pub(crate) async fn address(&self, name: &str) -> Option<SocketAddr> {
        let entries = self.entries.lock().await;
        entries
            .get(name)
            .and_then(|e| e.running.as_ref().map(|r| r.address))
    }

    /// Whether every enabled listener is bound (readiness).
    pub(crate) async fn all_bound(&self) -> bool {
        let entries = self.entries.lock().await;
        entries
            .values()
            .all(|e| !e.spec.enabled || e.running.is_some())
    }

    /// Stores (`Some`) or deletes (`None`) listener `name`'s record on a blocking thread.
    async fn persist(&self, name: &str, spec: Option<&ListenerSpec>) -> Result<(), ListenerError> {
        let records = Arc::clone(&self.records);
        let (name, spec) = (name.to_owned(), spec.cloned());
        tokio::task::spawn_blocking(move || match spec {
            Some(spec) => records::put(&*records, RecordKind::Listener, &name, &spec),
            None => records.delete(RecordKind::Listener, &name).map(drop),
        })
        .await
        .map_err(|e| RecordError::Backend(format!("record task failed: {e}")))?
        .map_err(ListenerError::from)
    }

    /// Creates (and, if enabled, binds) a listener and stores it. Binding comes first (it
    /// checks the address and certificate); if the record cannot be written the listener
    /// is stopped again, so nothing changed.
    pub(crate) async fn create(&self, spec: ListenerSpec) -> Result<ListenerState, ListenerError> {
        let mut entries = self.entries.lock().await;
        if entries.contains_key(&spec.name) {
            return Err(ListenerError::Exists(spec.name));
        }
        let mut entry = self.start_entry(spec).await?;
        if let Err(e) = self.persist(&entry.spec.name, Some(&entry.spec)).await {
            self.stop(&mut entry).await;
            return Err(e);
        }
        let view = state(&entry);
        entries.insert(entry.spec.name.clone(), entry);
        Ok(view)
    }

    /// Changes a listener's `enabled` flag, allow-list and/or server certificate, at once,
    /// and stores it. A new certificate is for new handshakes: open connections stay.
    /// The changed record is stored first (a failed write changes nothing); if applying
    /// then fails, the record is written again as the listener now is. Switching off is a
    /// withdrawal: it applies first and is stored after.
    pub(crate) async fn update(
        &self,
        name: &str,
        change: ListenerChange,
    ) -> Result<ListenerState, ListenerError> {
        let mut entries = self.entries.lock().await;
        let entry = entries
            .get_mut(name)
            .ok_or_else(|| ListenerError::NotFound(name.to_owned()))?;
        let withdrawal = change.enabled == Some(false);
        if !withdrawal {
            let mut next = entry.spec.clone();
            if let Some(enabled) = change.enabled {
                next.enabled = enabled;
            }
            if let Some(allow) = &change.allow {
                next.allow = allow.clone();
            }
            if change.cert.is_some() || change.key.is_some() {
                let Some(tls) = &mut next.tls else {
                    let field = if change.cert.is_some() { "cert" } else { "key" };
                    return Err(tls_error(
                        field,
                        "only TLS and WSS listeners have a certificate",
                    ));
                };
                if let Some(cert) = &change.cert {
                    tls.cert = cert.clone();
                }
                if let Some(key) = &change.key {
                    tls.key = key.clone();
                }
            }
            self.persist(name, Some(&next)).await?;
        }
        let applied = self.apply(name, entry, change).await;
        if applied.is_err() && !withdrawal {
            // Stored ahead of a change that did not (fully) apply: store what is live.
            if let Err(e) = self.persist(name, Some(&entry.spec)).await {
                warn!(name, error = %e, "listener record not restored after a failed change");
            }
        }
        applied?;
        if withdrawal {
            self.persist(name, Some(&entry.spec)).await?;
        }
        Ok(state(entry))
    }

    /// Applies a change to a listener's live state (and its in-memory spec).
    async fn apply(
        &self,
        name: &str,
        entry: &mut Entry,
        change: ListenerChange,
    ) -> Result<(), ListenerError> {
        let ListenerChange {
            enabled,
            allow,
            cert,
            key,
        } = change;
        if cert.is_some() || key.is_some() {
            let Some(tls) = &mut entry.spec.tls else {
                let field = if cert.is_some() { "cert" } else { "key" };
                return Err(tls_error(
                    field,
                    "only TLS and WSS listeners have a certificate",
                ));
            };
            let next = TlsSettings {
                cert: cert.unwrap_or_else(|| tls.cert.clone()),
                key: key.unwrap_or_else(|| tls.key.clone()),
                x509_mode: tls.x509_mode,
            };
            match &entry.acceptor {
                Some(acceptor) => next.install(acceptor)?,
                // Its files could not be loaded at start: the new ones make its acceptor.
                None => entry.acceptor = Some(next.acceptor(&self.certificates)?),
            }
            info!(name, cert = %next.cert.display(), "server certificate replaced");
            *tls = next;
        }
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
                if entry.acceptor.is_none() {
                    // A stored TLS listener whose files could not be read at start: again.
                    entry.acceptor = self.acceptor(&entry.spec)?;
                }
                let protocol = protocol(entry.spec.kind, entry.acceptor.as_ref())?;
                entry.running = Some(self.bind(&entry.spec, protocol, &entry.allow).await?);
                entry.spec.enabled = true;
            }
            Some(false) if entry.running.is_some() => {
                entry.spec.enabled = false;
                self.stop(entry).await;
            }
            Some(enabled) => entry.spec.enabled = enabled,
            None => {}
        }
        Ok(())
    }

    /// Deletes a listener: its record first, then stops it, disconnects its clients and
    /// forgets it.
    pub(crate) async fn delete(&self, name: &str) -> Result<(), ListenerError> {
        let mut entries = self.entries.lock().await;
        match entries.get(name) {
            None => return Err(ListenerError::NotFound(name.to_owned())),
            Some(entry) if entry.configured => {
                return Err(ListenerError::Configured(name.to_owned()))
            }
            Some(_) => {}
        }
        self.persist(name, None).await?;
        let Some(mut entry) = entries.remove(name) else {
            return Err(ListenerError::NotFound(name.to_owned()));
        };
        self.stop(&mut entry).await;
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

    /// Builds an entry (with its TLS acceptor for a TLS kind) and binds it if enabled.
    async fn start_entry(&self, spec: ListenerSpec) -> Result<Entry, ListenerError> {
        let acceptor = self.acceptor(&spec)?;
        let allow = Arc::new(RwLock::new(spec.allow.clone()));
        let running = if spec.enabled {
            let protocol = protocol(spec.kind, acceptor.as_ref())?;
            Some(self.bind(&spec, protocol, &allow).await?)
        } else {
            None
        };
        Ok(Entry {
            spec,
            allow,
            running,
            acceptor,
            configured: false,
        })
    }

    /// The TLS acceptor `spec` needs (`None` for TCP and WebSocket), from its PEM files.
    fn acceptor(
        &self,
        spec: &ListenerSpec,
    ) -> Result<Option<Arc<TlsAcceptorHandle>>, ListenerError> {
        match (spec.kind.is_tls(), &spec.tls) {
            (false, None) => Ok(None),
            (false, Some(_)) => Err(tls_error(
                "cert",
                "only listeners of kind tls or wss take a certificate",
            )),
            (true, None) => Err(tls_error(
                "cert",
                "required for kind tls and wss: a PEM certificate chain file",
            )),
            (true, Some(tls)) => Ok(Some(tls.acceptor(&self.certificates)?)),
        }
    }

    /// Binds `spec`'s address and spawns its accept loop.
    async fn bind(
        &self,
        spec: &ListenerSpec,
        protocol: Protocol,
        allow: &Arc<RwLock<Vec<Cidr>>>,
    ) -> Result<Running, ListenerError> {
        let bind_error = |source| ListenerError::Bind {
            addr: spec.bind,
            source,
        };
        let listener = bind_listener(spec.bind).map_err(bind_error)?;
        let address = listener.local_addr().map_err(bind_error)?;
        info!(name = %spec.name, kind = ?spec.kind, %address, "MQTT listener on");
        let stop = CancellationToken::new();
        let mut ctx = self.ctx.clone();
        ctx.listener = Arc::from(spec.name.as_str());
        ctx.listener_off = stop.clone();
        let task = tokio::spawn(super::run(
            listener,
            protocol,
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
                    .filter(|(_, entry)| entry.is_open() && **entry.listener() == *name)
                    .map(|(conn, _)| conn)
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

/// What the accept loop of a `kind` listener runs.
fn protocol(
    kind: ListenerKind,
    acceptor: Option<&Arc<TlsAcceptorHandle>>,
) -> Result<Protocol, ListenerError> {
    let acceptor = || {
        acceptor
            .cloned()
            .ok_or_else(|| tls_error("cert", "the listener's TLS settings could not be loaded"))
    };
    Ok(match kind {
        ListenerKind::Tcp => Protocol::Tcp,
        ListenerKind::Ws => Protocol::Ws,
        ListenerKind::Tls => Protocol::Tls(acceptor()?),
        ListenerKind::Wss => Protocol::Wss(acceptor()?),
    })
}

/// The view of an entry.
fn state(entry: &Entry) -> ListenerState {
    ListenerState {
        spec: entry.spec.clone(),
        address: entry.running.as_ref().map(|r| r.address),
    }
}

/// How many connections the kernel may hold completed but not yet accepted (capped by
/// `net.core.somaxconn`). tokio's default of 1,024 overflows when a fleet reconnects at
/// once (every client after a restart): the kernel then drops SYNs, and each dropped
/// client waits a second or more for its retransmission.
const ACCEPT_BACKLOG: u32 = 4096;

/// A listening socket on `addr` (address reuse on, as tokio's `TcpListener::bind` does,
/// so that a restarted broker can bind while old connections linger in TIME_WAIT).
fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(ACCEPT_BACKLOG)?;
    if let Err(e) = defer_accept(&listener) {
        // An optimisation only: the listener works without it.
        warn!(%addr, "accepting without waiting for a client's first bytes: {e}");
    }
    Ok(listener)
}

/// Seconds the kernel holds a handshaken connection that has sent nothing before handing
/// it to `accept` anyway (rounded by Linux to SYN-ACK retransmissions: 1 s is one).
#[cfg(target_os = "linux")]
const DEFER_ACCEPT_SECS: libc::c_int = 1;

/// Asks the kernel to report a connection as acceptable only once its first bytes
/// (CONNECT, a TLS ClientHello, an HTTP upgrade) have arrived: one wake-up and one empty
/// read less per connection, and a client that connects and stays silent costs no task
/// until the defer time has passed.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn defer_accept(listener: &TcpListener) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let fd = listener.as_raw_fd();
    let secs: libc::c_int = DEFER_ACCEPT_SECS;
    // SAFETY: `fd` is the open socket `listener` owns, borrowed for this call; the option
    // value points at a live `c_int` on this stack frame and the length passed is exactly
    // its size, so the kernel reads only initialised memory of ours and writes nothing.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            std::ptr::from_ref(&secs).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Other systems accept as the handshake completes.
#[cfg(not(target_os = "linux"))]
fn defer_accept(_listener: &TcpListener) -> std::io::Result<()> {
    Ok(())
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
    use crate::tls::TlsMode;

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
            parker: None,
            direct_writes: true,
            direct_reads: false,
        };
        let shared = AcceptShared {
            tracker: TaskTracker::new(),
            sockets: Arc::new(Semaphore::new(16)),
            next_id: Arc::new(AtomicU64::new(0)),
        };
        Registry::new(
            ctx,
            shared,
            BrokerHandle { events },
            records,
            Arc::new(CertificateRegistry::default()),
        )
    }

    fn spec(name: &str, kind: ListenerKind, bind: &str) -> ListenerSpec {
        ListenerSpec {
            name: name.to_owned(),
            kind,
            bind: bind.parse().unwrap(),
            enabled: true,
            allow: Vec::new(),
            tls: None,
        }
    }

    #[tokio::test]
    async fn listeners_and_their_changes_come_back_from_the_records() {
        let records: Arc<dyn Records> = Arc::new(MemoryRecords::default());
        let first = registry(Arc::clone(&records));
        let any = "127.0.0.1:0".parse().unwrap();
        first
            .start_all(vec![ListenerSpec::default_tcp(any)])
            .await
            .unwrap();
        first
            .create(spec("web", ListenerKind::Ws, "127.0.0.1:0"))
            .await
            .unwrap();
        let allow = vec!["10.0.0.0/8".parse().unwrap()];
        first
            .update(
                DEFAULT_LISTENER,
                ListenerChange {
                    enabled: Some(false),
                    allow: Some(allow.clone()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        first.stop_accepting().await;

        let again = registry(records);
        again
            .start_all(vec![ListenerSpec::default_tcp(any)])
            .await
            .unwrap();
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
        reg.start_all(vec![ListenerSpec::default_tcp(
            "127.0.0.1:0".parse().unwrap(),
        )])
        .await
        .unwrap();
        let fixed = reg.get("fixed").await.unwrap();
        assert_eq!(fixed.address, None);
        assert!(!reg.all_bound().await, "readiness reports it");
        assert!(matches!(
            reg.update(
                "fixed",
                ListenerChange {
                    enabled: Some(true),
                    ..Default::default()
                }
            )
            .await,
            Err(ListenerError::Bind { .. })
        ));
        drop(taken);
        reg.stop_accepting().await;
    }

    #[tokio::test]
    async fn a_stored_tls_listener_without_its_files_starts_unbound_and_binds_once_they_are_back() {
        let records: Arc<dyn Records> = Arc::new(MemoryRecords::default());
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
        let mut stored = spec("secure", ListenerKind::Tls, "127.0.0.1:0");
        stored.tls = Some(TlsSettings {
            cert: cert.clone(),
            key: key.clone(),
            x509_mode: TlsMode::OneWay,
        });
        records::put(&*records, RecordKind::Listener, "secure", &stored).unwrap();
        let reg = registry(records);
        reg.start_all(vec![ListenerSpec::default_tcp(
            "127.0.0.1:0".parse().unwrap(),
        )])
        .await
        .unwrap();
        assert_eq!(reg.get("secure").await.unwrap().address, None);
        let enable = || ListenerChange {
            enabled: Some(true),
            ..Default::default()
        };
        assert!(matches!(
            reg.update("secure", enable()).await,
            Err(ListenerError::Tls { field: "cert", .. })
        ));

        let pair = rcgen::KeyPair::generate().unwrap();
        let made = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&pair)
            .unwrap();
        std::fs::write(&cert, made.pem()).unwrap();
        std::fs::write(&key, pair.serialize_pem()).unwrap();
        let on = reg.update("secure", enable()).await.unwrap();
        assert!(on.address.is_some());
        assert!(reg.all_bound().await);
        reg.stop_accepting().await;
    }

    /// Memory records whose writes fail while `fail` is set.
    #[derive(Default)]
    struct Flaky {
        inner: MemoryRecords,
        fail: std::sync::atomic::AtomicBool,
    }

    impl Records for Flaky {
        fn put_bytes(&self, kind: RecordKind, id: &str, value: Vec<u8>) -> Result<(), RecordError> {
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(RecordError::Backend("disk full".into()));
            }
            self.inner.put_bytes(kind, id, value)
        }
        fn list_bytes(&self, kind: RecordKind) -> Result<Vec<(String, Vec<u8>)>, RecordError> {
            self.inner.list_bytes(kind)
        }
        fn delete(&self, kind: RecordKind, id: &str) -> Result<bool, RecordError> {
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(RecordError::Backend("disk full".into()));
            }
            self.inner.delete(kind, id)
        }
    }

    #[tokio::test]
    async fn listener_changes_that_cannot_be_stored_are_not_made() {
        let flaky = Arc::new(Flaky::default());
        let reg = registry(flaky.clone());
        let any = "127.0.0.1:0".parse().unwrap();
        reg.start_all(vec![ListenerSpec::default_tcp(any)])
            .await
            .unwrap();
        reg.create(spec("web", ListenerKind::Ws, "127.0.0.1:0"))
            .await
            .unwrap();
        flaky.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        // Create: refused, and the socket it bound is closed again.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        drop(taken);
        let fixed = spec("extra", ListenerKind::Tcp, &format!("127.0.0.1:{port}"));
        assert!(matches!(
            reg.create(fixed).await,
            Err(ListenerError::Store(_))
        ));
        assert!(reg.get("extra").await.is_err());
        std::net::TcpListener::bind(("127.0.0.1", port))
            .expect("the refused listener still holds its port");
        // Update: the allow-list stays as it was.
        let allow = vec!["10.0.0.0/8".parse().unwrap()];
        let change = ListenerChange {
            allow: Some(allow),
            ..Default::default()
        };
        assert!(reg.update("web", change).await.is_err());
        assert!(reg.get("web").await.unwrap().spec.allow.is_empty());
        // Delete: still there, still bound.
        assert!(reg.delete("web").await.is_err());
        assert!(reg.address("web").await.is_some());
        // Switching off is a withdrawal: it applies although the write fails.
        let off = ListenerChange {
            enabled: Some(false),
            ..Default::default()
        };
        assert!(reg.update("web", off).await.is_err());
        assert!(reg.address("web").await.is_none());
        reg.stop_accepting().await;
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_connection_reaches_accept_with_its_first_bytes_not_with_its_handshake() {
        use std::time::{Duration, Instant};
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let first_bytes = [0x10, 0x00];

        // Handshaken but silent: not acceptable before the defer time (one SYN-ACK
        // retransmission, a second) has passed.
        let opened = Instant::now();
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let early = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
        let mut accepted = match early {
            Ok(accepted) => {
                // Only possible when this test itself stalled past the defer time.
                assert!(
                    opened.elapsed() >= Duration::from_millis(900),
                    "a silent connection was accepted {:?} after its handshake",
                    opened.elapsed()
                );
                client.write_all(&first_bytes).await.unwrap();
                accepted.unwrap().0
            }
            // Its first bytes make it acceptable at once.
            Err(_) => {
                client.write_all(&first_bytes).await.unwrap();
                tokio::time::timeout(Duration::from_secs(5), listener.accept())
                    .await
                    .expect("accepted once it sent")
                    .unwrap()
                    .0
            }
        };
        let mut read = [0u8; 2];
        accepted.read_exact(&mut read).await.unwrap();
        assert_eq!(read, first_bytes);
    }
}
