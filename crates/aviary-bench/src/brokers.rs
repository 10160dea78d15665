//! Starting the brokers a comparison runs against: Aviary and Mosquitto, each on a free
//! loopback port with a temporary data directory and an equivalent configuration, optionally
//! pinned to a CPU with `taskset`. A [`RunningBroker`] kills its process when dropped.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// How long a broker may take to accept connections after it was started.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Which broker, and where its executable is.
#[derive(Clone, Debug)]
pub enum BrokerKind {
    Aviary(PathBuf),
    Mosquitto(PathBuf),
}

impl BrokerKind {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Aviary(_) => "aviary",
            Self::Mosquitto(_) => "mosquitto",
        }
    }
}

/// The limits both brokers are given, so that they are compared like for like.
#[derive(Clone, Debug)]
pub struct BrokerSettings {
    /// Outgoing QoS 1/2 window per client (Aviary `max_inflight`, Mosquitto
    /// `max_inflight_messages`).
    pub max_inflight: u16,
    /// Messages queued per client behind the window (both `max_queued_messages`).
    pub max_queued: usize,
    /// Persist sessions to disk (scenarios with persistent sessions). Aviary always keeps
    /// its store in the data directory; Mosquitto needs `persistence true`.
    pub persistence: bool,
    /// Aviary's `store.durability` (Mosquitto has no equivalent: with `persistence true`
    /// it writes its database every `autosave_interval`, 30 minutes by default, and at
    /// exit).
    pub aviary_durability: AviaryDurability,
    /// Pin the broker to this CPU with `taskset -c`.
    pub pin_cpu: Option<usize>,
    /// Also a TLS listener (one-way TLS, a test certificate for `localhost` made for the
    /// run), for the TLS variant of the connection rate.
    pub tls: bool,
}

/// Aviary's `store.durability` for a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AviaryDurability {
    /// Acknowledgements wait for the fsync of their commit (Aviary's default).
    #[default]
    Immediate,
    /// Acknowledgements wait for their commit; the disk is synced when the store is idle
    /// and at least once a second.
    Relaxed,
}

impl AviaryDurability {
    /// The value in Aviary's config.
    pub fn config_value(self) -> &'static str {
        match self {
            Self::Immediate => "immediate",
            Self::Relaxed => "relaxed",
        }
    }
}

/// A broker's TLS listener.
#[derive(Debug)]
pub struct TlsEndpoint {
    pub addr: SocketAddr,
    /// The CA that signed the server certificate (PEM file).
    pub ca: PathBuf,
    /// Server certificate and key (PEM files).
    cert: PathBuf,
    key: PathBuf,
}

impl TlsEndpoint {
    /// A CA and a server certificate for `localhost` / 127.0.0.1 signed by it, written to
    /// `dir`, and a free port.
    fn make(dir: &Path) -> anyhow::Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "aviary-bench CA");
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &Issuer::from_params(&ca_params, &ca_key))?;
        let endpoint = Self {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?)),
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        std::fs::write(&endpoint.ca, ca_cert.pem())?;
        std::fs::write(&endpoint.cert, cert.pem())?;
        std::fs::write(&endpoint.key, key.serialize_pem())?;
        Ok(endpoint)
    }
}

/// A broker process started by the harness.
#[derive(Debug)]
pub struct RunningBroker {
    pub label: &'static str,
    pub addr: SocketAddr,
    pub pid: u32,
    /// The TLS listener, when the settings asked for one.
    pub tls: Option<TlsEndpoint>,
    child: Child,
    /// Config file and data live here; removed on drop.
    _dir: tempfile::TempDir,
}

impl RunningBroker {
    /// Starts the broker and waits until its port accepts TCP connections.
    pub fn start(kind: &BrokerKind, settings: &BrokerSettings) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("temporary directory")?;
        // Mosquitto started as root drops to the `mosquitto` user, which must be able to
        // write its persistence file here.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )?;
        let port = free_port()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let tls = settings
            .tls
            .then(|| TlsEndpoint::make(dir.path()))
            .transpose()?;
        let (program, args) = match kind {
            BrokerKind::Aviary(binary) => {
                let config = dir.path().join("aviary.toml");
                let mut text = aviary_config(dir.path(), addr, settings);
                if let Some(tls) = &tls {
                    text.push_str(&format!(
                        "\n[tls_listener]\nbind = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
                        tls.addr,
                        tls.cert.display(),
                        tls.key.display()
                    ));
                }
                std::fs::write(&config, text)?;
                (
                    binary.clone(),
                    vec!["--config".into(), config.display().to_string()],
                )
            }
            BrokerKind::Mosquitto(binary) => {
                let config = dir.path().join("mosquitto.conf");
                let mut text = mosquitto_config(dir.path(), port, settings);
                if let Some(tls) = &tls {
                    text.push_str(&format!(
                        "listener {} 127.0.0.1\ncertfile {}\nkeyfile {}\n",
                        tls.addr.port(),
                        tls.cert.display(),
                        tls.key.display()
                    ));
                }
                std::fs::write(&config, text)?;
                (
                    binary.clone(),
                    vec!["-c".into(), config.display().to_string()],
                )
            }
        };
        let mut command = match settings.pin_cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu.to_string()).arg(&program).args(&args);
                c
            }
            None => {
                let mut c = Command::new(&program);
                c.args(&args);
                c
            }
        };
        let log = std::fs::File::create(dir.path().join("broker.log"))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        // taskset execs the broker, so the child's pid is the broker's.
        let pid = child.id();
        let mut broker = Self {
            label: kind.label(),
            addr,
            pid,
            tls,
            child,
            _dir: dir,
        };
        broker.wait_ready()?;
        Ok(broker)
    }

    /// An error with the end of the broker's log if its process has exited (a broker that
    /// died mid-comparison must not be reported as slow).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log =
                std::fs::read_to_string(self._dir.path().join("broker.log")).unwrap_or_default();
            let head: Vec<&str> = log.lines().take(20).collect();
            anyhow::bail!(
                "{} exited ({status}); its log begins:\n{}",
                self.label,
                head.join("\n")
            );
        }
        Ok(())
    }

    /// Polls the port until it accepts a connection (bounded by [`STARTUP_TIMEOUT`]).
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(self._dir.path().join("broker.log"))
                    .unwrap_or_default();
                anyhow::bail!("{} exited at startup ({status}): {log}", self.label);
            }
            let probe = |addr| TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok();
            if probe(&self.addr) && self.tls.as_ref().is_none_or(|tls| probe(&tls.addr)) {
                // A broker that binds before it fails would pass the probe: look once more.
                std::thread::sleep(Duration::from_millis(200));
                return self.check_alive();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!(
            "{} did not listen on {} within {STARTUP_TIMEOUT:?}",
            self.label,
            self.addr
        )
    }
}

impl Drop for RunningBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (bind to port 0, read it back, release it).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Aviary's TOML config for a benchmark: the same limits as Mosquitto's, no management API
/// (several brokers may run at once), and plan rates lifted, since Mosquitto has none.
/// The in-flight window applies to 5.0 clients too: Mosquitto keeps `max_inflight_messages`
/// for a 5.0 client that sends no Receive Maximum (ours sends none), where Aviary would
/// otherwise take the 65,535 such a client allows, capped at `mqtt.max_inflight_v5`.
pub fn aviary_config(dir: &Path, addr: SocketAddr, s: &BrokerSettings) -> String {
    format!(
        "data_dir = \"{}\"\n\n[log]\nlevel = \"warn\"\n\n[listener]\nbind = \"{addr}\"\n\n[mqtt]\nmax_inflight = {}\nmax_inflight_v5 = {}\nmax_queued_messages = {}\n\n[store]\ndurability = \"{}\"\n\n[api]\nenabled = false\n\n[limits]\nconnect_rate = 1000000\nwill_connect_rate = 1000000\nsubscribe_rate = 1000000\nunsubscribe_rate = 1000000\n",
        dir.join("data").display(),
        s.max_inflight,
        s.max_inflight,
        s.max_queued,
        s.aviary_durability.config_value(),
    )
}

/// Mosquitto's config with the same limits. `set_tcp_nodelay` matches Aviary, which does
/// not wait to coalesce small writes (Nagle would add up to 40 ms to latency at low rates).
pub fn mosquitto_config(dir: &Path, port: u16, s: &BrokerSettings) -> String {
    let mut text = format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages {}\nmax_queued_messages {}\nset_tcp_nodelay true\nmax_connections -1\nlog_dest stderr\nlog_type error\nlog_type warning\n",
        s.max_inflight, s.max_queued,
    );
    if s.persistence {
        text.push_str(&format!(
            "persistence true\npersistence_location {}/\n",
            dir.display()
        ));
    } else {
        text.push_str("persistence false\n");
    }
    text
}
