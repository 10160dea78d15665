//! What the TLS tests share: CAs, certificates and CRLs made with rcgen, rustls client
//! configs, and a byte-level MQTT client over TLS.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aviary::tls::CaOptions;
use aviary_codec::{Packet, ProtocolVersion};
use bytes::BytesMut;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub const WAIT: Duration = Duration::from_secs(5);

/// A CA: its parameters and key, to issue certificates and CRLs.
pub struct Ca {
    pub params: CertificateParams,
    pub key: KeyPair,
    pub pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self { params, key, pem }
    }

    /// A leaf certificate with this CN (and SANs), serial `serial`: (cert PEM, key PEM).
    pub fn issue(&self, cn: &str, sans: &[&str], serial: u64) -> (String, String) {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    pub fn crl(&self, serials: &[u64]) -> String {
        let now = time::OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(1),
            next_update: now + time::Duration::days(1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: now - time::Duration::minutes(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params
            .signed_by(&Issuer::from_params(&self.params, &self.key))
            .unwrap()
            .pem()
            .unwrap()
    }
}

/// The server's own CA and certificate for "localhost".
pub struct ServerPki {
    pub ca: Ca,
    pub cert: String,
    pub key: String,
}

pub fn server_pki() -> ServerPki {
    let ca = Ca::new("Aviary test server CA");
    let (cert, key) = ca.issue("localhost", &["localhost", "127.0.0.1"], 1000);
    ServerPki { ca, cert, key }
}

pub fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A TLS client config trusting `server_ca`, with an optional client certificate.
pub fn client_config(
    server_ca: &str,
    client: Option<(&str, &str)>,
    tls12_only: bool,
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(server_ca.as_bytes()).unwrap())
        .unwrap();
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    Arc::new(config)
}

/// A byte-level MQTT client over TLS.
pub struct TlsClient {
    pub stream: TlsStream<TcpStream>,
    pub buf: BytesMut,
    pub version: ProtocolVersion,
}

/// What came back.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // a test helper
pub enum Got {
    Packet(Packet),
    /// EOF or a TLS alert / reset.
    Closed,
}

impl TlsClient {
    pub async fn open(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        version: ProtocolVersion,
    ) -> std::io::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        let stream = tokio::time::timeout(
            WAIT,
            tokio_rustls::TlsConnector::from(config)
                .connect(ServerName::try_from("localhost").unwrap(), tcp),
        )
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))??;
        Ok(Self {
            stream,
            buf: BytesMut::new(),
            version,
        })
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    pub async fn next(&mut self) -> Got {
        for _ in 0..1000 {
            if let Ok(Some(packet)) = aviary_codec::decode(&mut self.buf, self.version, 1 << 20) {
                return Got::Packet(packet);
            }
            match tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => panic!("nothing from the broker within {WAIT:?}"),
                Ok(Ok(0)) | Ok(Err(_)) => return Got::Closed,
                Ok(Ok(_)) => {}
            }
        }
        panic!("too many reads");
    }

    /// CONNECT (clean start, keep alive 60, no credentials) and the CONNACK code.
    pub async fn connect(&mut self, client_id: &str) -> Option<u8> {
        let id = client_id.as_bytes();
        let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T'];
        body.push(if self.version.is_v5() { 5 } else { 4 });
        body.extend_from_slice(&[0x02, 0x00, 0x3c]);
        if self.version.is_v5() {
            body.push(0);
        }
        body.extend_from_slice(&(id.len() as u16).to_be_bytes());
        body.extend_from_slice(id);
        let mut packet = vec![0x10, body.len() as u8];
        packet.extend_from_slice(&body);
        if self.send(&packet).await.is_err() {
            return None;
        }
        match self.next().await {
            Got::Packet(Packet::ConnAck(ack)) => Some(ack.reason_code.0),
            Got::Packet(other) => panic!("expected CONNACK, got {other:?}"),
            Got::Closed => None,
        }
    }

    pub async fn ping(&mut self) {
        self.send(&[0xc0, 0x00]).await.unwrap();
        assert!(matches!(self.next().await, Got::Packet(Packet::PingResp)));
    }
}

/// Connects and returns the CONNACK code, or `None` if the handshake (or the first read
/// after it, for TLS 1.3 client certificates) failed.
pub async fn try_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    version: ProtocolVersion,
    client_id: &str,
) -> (Option<TlsClient>, Option<u8>) {
    match TlsClient::open(addr, config, version).await {
        Err(_) => (None, None),
        Ok(mut c) => {
            let code = c.connect(client_id).await;
            (Some(c), code)
        }
    }
}

/// Registers `ca` with proof of possession.
pub fn register_ca(server: &aviary::RunningServer, ca: &Ca, options: CaOptions) -> String {
    let registry = &server.security().certificates;
    let code = registry.registration_code().unwrap();
    let (verification, _) = ca.issue(&code, &[], 77);
    registry
        .register_ca(ca.pem.as_bytes(), verification.as_bytes(), options)
        .unwrap()
        .id
}
