//! The certificate registry: customer CAs (registered with proof of possession, up to
//! [`MAX_CAS`]), their CRLs, and device certificates with a status each. The TLS verifier
//! reads it synchronously during handshakes; a status change also closes the live
//! connections that use the certificate (through their revocation tokens) at once.
//!
//! Locks: one `std::sync::Mutex` around the whole state, held for map operations only (never
//! across an await). Handshakes are rare compared to messages, so contention is not a
//! concern; the broker's message path never touches this.
//!
//! Persistence: with [`CertificateRegistry::with_records`], every change made through the
//! API and every certificate registered just in time is written to the management records
//! (`CaCertificate` — the CA with its settings and imported CRL; `DeviceCertificate` — one
//! per serial) while the lock is held, so memory and disk change in the same order (a
//! write blocks for one small commit: only on API changes and first JITP handshakes);
//! [`CertificateRegistry::restore`] loads them at start. CAs from the configuration file
//! are not stored (the file stays their source) unless the API changes them. The pending
//! registration code is not stored: after a restart a new one is issued (choice: a code is
//! free to ask for again, and one that outlives the process would only widen its use).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use tokio_util::sync::CancellationToken;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::records::{self, RecordKind, Records};

/// Most CA certificates.
pub const MAX_CAS: usize = 32;

/// A CA's status: only active CAs' certificates can connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaStatus {
    Active,
    Inactive,
}

/// A device certificate's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CertStatus {
    Active,
    Inactive,
    Revoked,
    PendingActivation,
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("not a PEM or DER certificate")]
    BadCertificate,
    #[error("not a CA certificate (basicConstraints CA:true required)")]
    NotCa,
    #[error("the verification certificate's common name is not the current registration code")]
    WrongCode,
    #[error("the verification certificate is not signed by this CA")]
    NotSignedByCa,
    #[error("at most {MAX_CAS} CA certificates")]
    TooManyCas,
    #[error("CA {0} already registered")]
    CaExists(String),
    #[error("no CA {0}")]
    NoCa(String),
    #[error("an active CA cannot be deleted; deactivate it first")]
    CaActive,
    #[error("the certificate is not issued by a registered CA")]
    UnknownIssuer,
    #[error("certificate with serial {0} already registered")]
    CertExists(String),
    #[error("no certificate with serial {0}")]
    NoCert(String),
    #[error("not a CRL, or not signed by this CA")]
    BadCrl,
    #[error("cannot generate a registration code")]
    Random,
    /// The management records could not be written (the change was not made).
    #[error("{0}")]
    Store(String),
}

/// A registered CA as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CaInfo {
    /// SHA-256 fingerprint of the CA certificate, hex.
    pub id: String,
    pub subject: String,
    pub status: CaStatus,
    /// Just-in-time registration of unknown device certificates it issued.
    pub auto_register: bool,
    /// JITP certificates start ACTIVE instead of PENDING_ACTIVATION.
    pub auto_activate: bool,
    /// Serials revoked by its imported CRL.
    pub crl_revoked: usize,
}

/// Options when registering a CA.
#[derive(Clone, Copy, Debug, Default, serde::Deserialize)]
pub struct CaOptions {
    /// Start active (default true).
    pub activate: Option<bool>,
    pub auto_register: Option<bool>,
    pub auto_activate: Option<bool>,
}

/// A registered device certificate as the API shows it (and as it is stored).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceCertInfo {
    /// Lower-case hex, no separators, no leading zero bytes.
    pub serial: String,
    /// The client id the certificate may connect as.
    pub client_id: String,
    /// The issuing CA's id.
    pub ca_id: String,
    pub status: CertStatus,
    pub subject: String,
}

/// Filters for listing device certificates.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct CertFilter {
    pub client_id: Option<String>,
    pub ca_id: Option<String>,
    pub serial: Option<String>,
    pub status: Option<CertStatus>,
}

/// What the verifier learns about a presented device certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// May connect, bound to this client id.
    Allowed {
        serial: String,
        ca_id: String,
        /// The bound client id (per-device mode), else `None`.
        client_id: Option<String>,
        common_name: Option<String>,
    },
    /// Refused (the reason, for the log).
    Refused(&'static str),
}

struct Ca {
    der: CertificateDer<'static>,
    info: CaInfo,
    /// Imported CRL (DER) and its revoked serials.
    crl: Option<(CertificateRevocationListDer<'static>, HashSet<String>)>,
}

struct DeviceCert {
    info: DeviceCertInfo,
}

/// A CA as stored in the management records (`RecordKind::CaCertificate`, id = its
/// fingerprint): everything but what is derived from the certificate again at load.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredCa {
    /// The CA certificate, DER in standard base64.
    der: String,
    status: CaStatus,
    auto_register: bool,
    auto_activate: bool,
    /// The imported CRL, DER in standard base64.
    crl: Option<String>,
}

impl StoredCa {
    fn of(ca: &Ca) -> Self {
        let b64 = base64::engine::general_purpose::STANDARD;
        Self {
            der: b64.encode(ca.der.as_ref()),
            status: ca.info.status,
            auto_register: ca.info.auto_register,
            auto_activate: ca.info.auto_activate,
            crl: ca.crl.as_ref().map(|(der, _)| b64.encode(der.as_ref())),
        }
    }
}

#[derive(Default)]
struct State {
    cas: BTreeMap<String, Ca>,
    certs: BTreeMap<String, DeviceCert>,
    /// The current registration code (generated on first request).
    code: Option<String>,
    /// Live connections that use a client certificate, by a registry-chosen id.
    live: HashMap<u64, LiveConn>,
    /// Counter behind `live` ids.
    next_live: u64,
}

/// A live connection using a client certificate.
struct LiveConn {
    serial: String,
    ca_id: String,
    /// Cancelled to close the connection.
    token: CancellationToken,
}

/// The registry. Changes call `on_change` (the TLS acceptor rebuilds its configuration
/// when the set of active CAs or CRLs changes).
#[derive(Default)]
pub struct CertificateRegistry {
    state: Mutex<State>,
    /// Bumped on every change of CAs or CRLs, so the acceptor knows to rebuild.
    generation: std::sync::atomic::AtomicU64,
    /// Where changes are stored (`None`: memory only, as in unit tests).
    records: Option<Arc<dyn Records>>,
}

impl std::fmt::Debug for CertificateRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("CertificateRegistry")
            .field("cas", &state.cas.len())
            .field("certs", &state.certs.len())
            .finish()
    }
}

/// Parses one certificate from PEM (first block) or DER.
pub fn parse_cert(bytes: &[u8]) -> Result<CertificateDer<'static>, RegistryError> {
    if let Ok(der) = CertificateDer::from_pem_slice(bytes) {
        return Ok(der);
    }
    X509Certificate::from_der(bytes).map_err(|_| RegistryError::BadCertificate)?;
    Ok(CertificateDer::from(bytes.to_vec()))
}

/// Lower-case hex of a serial without leading zero bytes.
pub fn serial_hex(raw: &[u8]) -> String {
    let trimmed: &[u8] = match raw.iter().position(|b| *b != 0) {
        Some(i) => &raw[i..],
        None => &raw[raw.len().saturating_sub(1)..],
    };
    trimmed.iter().map(|b| format!("{b:02x}")).collect()
}

fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn common_name(cert: &X509Certificate<'_>) -> Option<String> {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

/// Parses a CRL (PEM or DER) and checks that `ca_der` signed it: its revoked serials.
fn parse_crl(
    ca_der: &[u8],
    crl: &[u8],
) -> Result<(CertificateRevocationListDer<'static>, HashSet<String>), RegistryError> {
    let der = match CertificateRevocationListDer::from_pem_slice(crl) {
        Ok(der) => der,
        Err(_) => CertificateRevocationListDer::from(crl.to_vec()),
    };
    let revoked = {
        let (_, parsed) =
            CertificateRevocationList::from_der(&der).map_err(|_| RegistryError::BadCrl)?;
        let (_, ca_cert) = X509Certificate::from_der(ca_der).map_err(|_| RegistryError::BadCrl)?;
        parsed
            .verify_signature(ca_cert.public_key())
            .map_err(|_| RegistryError::BadCrl)?;
        parsed
            .iter_revoked_certificates()
            .map(|r| serial_hex(r.raw_serial()))
            .collect()
    };
    Ok((der, revoked))
}

fn store_error(e: records::RecordError) -> RegistryError {
    RegistryError::Store(format!("the change could not be stored: {e}"))
}

impl CertificateRegistry {
    /// A registry whose changes are stored in `records`; [`Self::restore`] loads them.
    pub(crate) fn with_records(records: Arc<dyn Records>) -> Self {
        Self {
            records: Some(records),
            ..Self::default()
        }
    }

    /// Loads the stored CAs (with their CRLs) and device certificates; how many of each.
    pub(crate) fn restore(&self) -> Result<(usize, usize), RegistryError> {
        let Some(store) = &self.records else {
            return Ok((0, 0));
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let bad = |id: &str, what: &str| {
            RegistryError::Store(format!("stored CA {id}: {what} does not decode"))
        };
        let cas: Vec<(String, StoredCa)> =
            records::list(&**store, RecordKind::CaCertificate).map_err(store_error)?;
        let certs: Vec<(String, DeviceCertInfo)> =
            records::list(&**store, RecordKind::DeviceCertificate).map_err(store_error)?;
        let mut state = self.lock();
        for (id, stored) in &cas {
            let der = b64
                .decode(&stored.der)
                .map_err(|_| bad(id, "the certificate"))?;
            let subject = X509Certificate::from_der(&der)
                .map_err(|_| bad(id, "the certificate"))?
                .1
                .subject()
                .to_string();
            let crl = match &stored.crl {
                None => None,
                Some(crl) => {
                    let crl = b64.decode(crl).map_err(|_| bad(id, "the CRL"))?;
                    Some(parse_crl(&der, &crl).map_err(|_| bad(id, "the CRL"))?)
                }
            };
            let info = CaInfo {
                id: id.clone(),
                subject,
                status: stored.status,
                auto_register: stored.auto_register,
                auto_activate: stored.auto_activate,
                crl_revoked: crl.as_ref().map_or(0, |(_, set)| set.len()),
            };
            let der = CertificateDer::from(der);
            state.cas.insert(id.clone(), Ca { der, info, crl });
        }
        for (serial, info) in &certs {
            state
                .certs
                .insert(serial.clone(), DeviceCert { info: info.clone() });
        }
        drop(state);
        self.bump();
        Ok((cas.len(), certs.len()))
    }

    /// Stores CA `id` as it is in `state` (no-op without records).
    fn store_ca(&self, state: &State, id: &str) -> Result<(), RegistryError> {
        let (Some(store), Some(ca)) = (&self.records, state.cas.get(id)) else {
            return Ok(());
        };
        records::put(&**store, RecordKind::CaCertificate, id, &StoredCa::of(ca))
            .map_err(store_error)
    }

    /// Stores a device certificate (no-op without records).
    fn store_cert(&self, info: &DeviceCertInfo) -> Result<(), RegistryError> {
        let Some(store) = &self.records else {
            return Ok(());
        };
        records::put(&**store, RecordKind::DeviceCertificate, &info.serial, info)
            .map_err(store_error)
    }

    /// Deletes a stored record (no-op without records).
    fn unstore(&self, kind: RecordKind, id: &str) -> Result<(), RegistryError> {
        let Some(store) = &self.records else {
            return Ok(());
        };
        store.delete(kind, id).map(drop).map_err(store_error)
    }

    /// The registration code a CA's verification certificate must carry as its CN.
    pub fn registration_code(&self) -> Result<String, RegistryError> {
        let mut state = self.lock();
        if let Some(code) = &state.code {
            return Ok(code.clone());
        }
        let mut bytes = [0u8; 16];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| RegistryError::Random)?;
        let code: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        state.code = Some(code.clone());
        Ok(code)
    }

    /// Registers a CA with proof of possession: `verification` must be signed by the CA and
    /// have the current registration code as its common name.
    pub fn register_ca(
        &self,
        ca_pem: &[u8],
        verification_pem: &[u8],
        options: CaOptions,
    ) -> Result<CaInfo, RegistryError> {
        let code = self.registration_code()?;
        let der = parse_cert(ca_pem)?;
        let (_, ca) = X509Certificate::from_der(&der).map_err(|_| RegistryError::BadCertificate)?;
        if !ca.is_ca() {
            return Err(RegistryError::NotCa);
        }
        let vder = parse_cert(verification_pem)?;
        let (_, verification) =
            X509Certificate::from_der(&vder).map_err(|_| RegistryError::BadCertificate)?;
        if common_name(&verification).as_deref() != Some(code.as_str()) {
            return Err(RegistryError::WrongCode);
        }
        verification
            .verify_signature(Some(ca.public_key()))
            .map_err(|_| RegistryError::NotSignedByCa)?;
        let info = self.insert_ca(der.clone(), &ca, options)?;
        let mut state = self.lock();
        if let Err(e) = self.store_ca(&state, &info.id) {
            state.cas.remove(&info.id);
            return Err(e);
        }
        Ok(info)
    }

    /// Registers a CA without proof of possession (configuration file: the operator put
    /// it there).
    pub fn register_ca_trusted(
        &self,
        ca_pem: &[u8],
        options: CaOptions,
    ) -> Result<CaInfo, RegistryError> {
        let der = parse_cert(ca_pem)?;
        let (_, ca) = X509Certificate::from_der(&der).map_err(|_| RegistryError::BadCertificate)?;
        if !ca.is_ca() {
            return Err(RegistryError::NotCa);
        }
        self.insert_ca(der.clone(), &ca, options)
    }

    fn insert_ca(
        &self,
        der: CertificateDer<'static>,
        ca: &X509Certificate<'_>,
        options: CaOptions,
    ) -> Result<CaInfo, RegistryError> {
        let id = fingerprint(&der);
        let info = CaInfo {
            id: id.clone(),
            subject: ca.subject().to_string(),
            status: if options.activate.unwrap_or(true) {
                CaStatus::Active
            } else {
                CaStatus::Inactive
            },
            auto_register: options.auto_register.unwrap_or(false),
            auto_activate: options.auto_activate.unwrap_or(false),
            crl_revoked: 0,
        };
        let mut state = self.lock();
        if state.cas.contains_key(&id) {
            return Err(RegistryError::CaExists(id));
        }
        if state.cas.len() >= MAX_CAS {
            return Err(RegistryError::TooManyCas);
        }
        state.cas.insert(
            id,
            Ca {
                der,
                info: info.clone(),
                crl: None,
            },
        );
        // A new registration code for the next CA (a code proves possession once).
        state.code = None;
        drop(state);
        self.bump();
        Ok(info)
    }

    pub fn list_cas(&self) -> Vec<CaInfo> {
        self.lock().cas.values().map(|c| c.info.clone()).collect()
    }

    pub fn ca(&self, id: &str) -> Option<CaInfo> {
        self.lock().cas.get(id).map(|c| c.info.clone())
    }

    /// Activates or deactivates a CA. Deactivating closes every live connection whose
    /// certificate it issued.
    pub fn set_ca_status(&self, id: &str, status: CaStatus) -> Result<CaInfo, RegistryError> {
        let mut state = self.lock();
        let ca = state
            .cas
            .get_mut(id)
            .ok_or_else(|| RegistryError::NoCa(id.to_owned()))?;
        ca.info.status = status;
        let info = ca.info.clone();
        if status == CaStatus::Inactive {
            state.close_where(|c| c.ca_id == id);
        }
        let stored = self.store_ca(&state, id);
        drop(state);
        self.bump();
        stored.map(|()| info)
    }

    pub fn delete_ca(&self, id: &str) -> Result<(), RegistryError> {
        let mut state = self.lock();
        match state.cas.get(id) {
            None => return Err(RegistryError::NoCa(id.to_owned())),
            Some(ca) if ca.info.status == CaStatus::Active => return Err(RegistryError::CaActive),
            Some(_) => {}
        }
        self.unstore(RecordKind::CaCertificate, id)?;
        state.cas.remove(id);
        drop(state);
        self.bump();
        Ok(())
    }

    /// Imports a CRL for a CA (PEM or DER, signed by that CA): its serials become REVOKED
    /// (registered or not) and live connections using them are closed. A revocation
    /// applies even when it cannot be stored (the safe direction); the error says so.
    pub fn import_crl(&self, ca_id: &str, crl: &[u8]) -> Result<usize, RegistryError> {
        let mut state = self.lock();
        let ca = state
            .cas
            .get_mut(ca_id)
            .ok_or_else(|| RegistryError::NoCa(ca_id.to_owned()))?;
        let (der, revoked) = parse_crl(&ca.der, crl)?;
        let count = revoked.len();
        ca.info.crl_revoked = count;
        ca.crl = Some((der, revoked.clone()));
        let mut changed = Vec::new();
        for serial in &revoked {
            if let Some(cert) = state.certs.get_mut(serial) {
                if cert.info.ca_id == ca_id {
                    cert.info.status = CertStatus::Revoked;
                    changed.push(cert.info.clone());
                }
            }
        }
        state.close_where(|c| c.ca_id == ca_id && revoked.contains(&c.serial));
        let stored = self
            .store_ca(&state, ca_id)
            .and_then(|()| changed.iter().try_for_each(|info| self.store_cert(info)));
        drop(state);
        self.bump();
        stored.map(|()| count)
    }

    /// Registers a device certificate issued by a registered CA, bound to `client_id` (or
    /// its CN).
    pub fn register_cert(
        &self,
        cert_pem: &[u8],
        client_id: Option<String>,
        status: CertStatus,
    ) -> Result<DeviceCertInfo, RegistryError> {
        let der = parse_cert(cert_pem)?;
        let (_, cert) =
            X509Certificate::from_der(&der).map_err(|_| RegistryError::BadCertificate)?;
        let mut state = self.lock();
        let ca_id = state.issuer_of(&cert).ok_or(RegistryError::UnknownIssuer)?;
        let info = DeviceCertInfo {
            serial: serial_hex(cert.raw_serial()),
            client_id: client_id.or_else(|| common_name(&cert)).unwrap_or_default(),
            ca_id,
            status,
            subject: cert.subject().to_string(),
        };
        if state.certs.contains_key(&info.serial) {
            return Err(RegistryError::CertExists(info.serial));
        }
        self.store_cert(&info)?;
        state
            .certs
            .insert(info.serial.clone(), DeviceCert { info: info.clone() });
        Ok(info)
    }

    /// Changes a device certificate's status; anything but ACTIVE closes its live
    /// connections at once.
    pub fn set_cert_status(
        &self,
        serial: &str,
        status: CertStatus,
    ) -> Result<DeviceCertInfo, RegistryError> {
        let mut state = self.lock();
        let cert = state
            .certs
            .get_mut(serial)
            .ok_or_else(|| RegistryError::NoCert(serial.to_owned()))?;
        cert.info.status = status;
        let info = cert.info.clone();
        if status != CertStatus::Active {
            state.close_where(|c| c.serial == serial);
        }
        // Like a CRL, a withdrawal applies even when it cannot be stored.
        self.store_cert(&info).map(|()| info)
    }

    /// Changes the client id a certificate is bound to (new connections only).
    pub fn set_cert_client_id(
        &self,
        serial: &str,
        client_id: String,
    ) -> Result<DeviceCertInfo, RegistryError> {
        let mut state = self.lock();
        let cert = state
            .certs
            .get_mut(serial)
            .ok_or_else(|| RegistryError::NoCert(serial.to_owned()))?;
        cert.info.client_id = client_id;
        let info = cert.info.clone();
        self.store_cert(&info).map(|()| info)
    }

    pub fn delete_cert(&self, serial: &str) -> Result<(), RegistryError> {
        let mut state = self.lock();
        if !state.certs.contains_key(serial) {
            return Err(RegistryError::NoCert(serial.to_owned()));
        }
        self.unstore(RecordKind::DeviceCertificate, serial)?;
        state.certs.remove(serial);
        state.close_where(|c| c.serial == serial);
        Ok(())
    }

    pub fn cert(&self, serial: &str) -> Option<DeviceCertInfo> {
        self.lock().certs.get(serial).map(|c| c.info.clone())
    }

    pub fn list_certs(&self, filter: &CertFilter) -> Vec<DeviceCertInfo> {
        self.lock()
            .certs
            .values()
            .map(|c| &c.info)
            .filter(|i| filter.client_id.as_ref().is_none_or(|v| *v == i.client_id))
            .filter(|i| filter.ca_id.as_ref().is_none_or(|v| *v == i.ca_id))
            .filter(|i| filter.serial.as_ref().is_none_or(|v| *v == i.serial))
            .filter(|i| filter.status.is_none_or(|v| v == i.status))
            .cloned()
            .collect()
    }

    /// The OCSP question for any serial: its registered status, else REVOKED if a CRL lists
    /// it, else `None` (unknown).
    pub fn status_of(&self, serial: &str) -> Option<CertStatus> {
        let state = self.lock();
        if let Some(cert) = state.certs.get(serial) {
            return Some(cert.info.status);
        }
        state
            .cas
            .values()
            .any(|ca| ca.crl.as_ref().is_some_and(|(_, set)| set.contains(serial)))
            .then_some(CertStatus::Revoked)
    }

    /// Active CAs' certificates and CRLs, for building the chain verifier.
    pub(crate) fn trust(
        &self,
    ) -> (
        Vec<CertificateDer<'static>>,
        Vec<CertificateRevocationListDer<'static>>,
    ) {
        let state = self.lock();
        let active = state
            .cas
            .values()
            .filter(|c| c.info.status == CaStatus::Active);
        let roots = active.clone().map(|c| c.der.clone()).collect();
        let crls = active
            .filter_map(|c| c.crl.as_ref().map(|(d, _)| d.clone()))
            .collect();
        (roots, crls)
    }

    /// Changes to CAs/CRLs so far (the acceptor rebuilds its verifier when this moves).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Decides a device certificate whose chain the verifier has already checked: its
    /// issuer CA must be active; in per-device mode it must be registered and ACTIVE, or is
    /// registered just in time when its CA allows it.
    pub(crate) fn admit(&self, end_entity: &[u8], per_device: bool) -> Admission {
        let Ok((_, cert)) = X509Certificate::from_der(end_entity) else {
            return Admission::Refused("unparsable certificate");
        };
        let serial = serial_hex(cert.raw_serial());
        let mut state = self.lock();
        let Some(ca_id) = state.issuer_of(&cert) else {
            return Admission::Refused("issuer is not a registered CA");
        };
        let Some(ca) = state.cas.get(&ca_id) else {
            return Admission::Refused("issuer is not a registered CA");
        };
        if ca.info.status != CaStatus::Active {
            return Admission::Refused("issuing CA is inactive");
        }
        if ca
            .crl
            .as_ref()
            .is_some_and(|(_, set)| set.contains(&serial))
        {
            return Admission::Refused("certificate revoked by CRL");
        }
        let (auto_register, auto_activate) = (ca.info.auto_register, ca.info.auto_activate);
        let cn = common_name(&cert);
        if !per_device {
            return match state.certs.get(&serial).map(|c| c.info.status) {
                None | Some(CertStatus::Active) => Admission::Allowed {
                    serial,
                    ca_id,
                    client_id: None,
                    common_name: cn,
                },
                Some(_) => Admission::Refused("certificate not active"),
            };
        }
        if !state.certs.contains_key(&serial) {
            if !auto_register {
                return Admission::Refused("certificate not registered");
            }
            let status = if auto_activate {
                CertStatus::Active
            } else {
                CertStatus::PendingActivation
            };
            let info = DeviceCertInfo {
                serial: serial.clone(),
                client_id: cn.clone().unwrap_or_default(),
                ca_id: ca_id.clone(),
                status,
                subject: cert.subject().to_string(),
            };
            // Registered just in time: stored like one registered through the API. A
            // store failure only means JITP happens again after a restart.
            if let Err(e) = self.store_cert(&info) {
                tracing::warn!(serial = %serial, error = %e, "JITP certificate not stored");
            }
            state.certs.insert(serial.clone(), DeviceCert { info });
        }
        match state.certs.get(&serial).map(|c| &c.info) {
            Some(info) if info.status == CertStatus::Active => Admission::Allowed {
                serial,
                ca_id,
                client_id: Some(info.client_id.clone()),
                common_name: cn,
            },
            _ => Admission::Refused("certificate not active"),
        }
    }

    /// Registers a live connection using certificate `serial` of CA `ca_id`; the token is
    /// cancelled when the certificate stops being usable. Returns the id for
    /// [`Self::unwatch`].
    pub(crate) fn watch(&self, serial: &str, ca_id: &str) -> (u64, CancellationToken) {
        let token = CancellationToken::new();
        let mut state = self.lock();
        state.next_live += 1;
        let id = state.next_live;
        state.live.insert(
            id,
            LiveConn {
                serial: serial.to_owned(),
                ca_id: ca_id.to_owned(),
                token: token.clone(),
            },
        );
        (id, token)
    }

    /// Forgets a connection when it ends.
    pub(crate) fn unwatch(&self, id: u64) {
        self.lock().live.remove(&id);
    }

    fn bump(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every change is a single map operation: a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// The id of the registered CA that issued `cert` (subject match and signature).
    fn issuer_of(&self, cert: &X509Certificate<'_>) -> Option<String> {
        self.cas.iter().find_map(|(id, ca)| {
            let (_, ca_cert) = X509Certificate::from_der(&ca.der).ok()?;
            (ca_cert.subject() == cert.issuer()
                && cert.verify_signature(Some(ca_cert.public_key())).is_ok())
            .then(|| id.clone())
        })
    }

    /// Closes (and forgets) every live connection matching `pred`.
    fn close_where(&mut self, pred: impl Fn(&LiveConn) -> bool) {
        self.live.retain(|_, c| {
            if pred(c) {
                c.token.cancel();
                false
            } else {
                true
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
        KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
    };

    use super::*;
    use crate::records::MemoryRecords;

    struct TestCa {
        params: CertificateParams,
        key: KeyPair,
        pem: String,
    }

    impl TestCa {
        fn new(name: &str) -> Self {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let key = KeyPair::generate().unwrap();
            let pem = params.self_signed(&key).unwrap().pem();
            Self { params, key, pem }
        }

        /// A leaf certificate: (PEM, DER).
        fn issue(&self, cn: &str, serial: u64) -> (String, Vec<u8>) {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.serial_number = Some(SerialNumber::from(serial));
            let issuer = Issuer::from_params(&self.params, &self.key);
            let cert = params
                .signed_by(&KeyPair::generate().unwrap(), &issuer)
                .unwrap();
            (cert.pem(), cert.der().to_vec())
        }

        fn crl(&self, serial: u64) -> String {
            let now = time::OffsetDateTime::now_utc();
            CertificateRevocationListParams {
                this_update: now - time::Duration::minutes(1),
                next_update: now + time::Duration::days(1),
                crl_number: SerialNumber::from(1u64),
                issuing_distribution_point: None,
                revoked_certs: vec![RevokedCertParams {
                    serial_number: SerialNumber::from(serial),
                    revocation_time: now - time::Duration::minutes(1),
                    reason_code: None,
                    invalidity_date: None,
                }],
                key_identifier_method: KeyIdMethod::Sha256,
            }
            .signed_by(&Issuer::from_params(&self.params, &self.key))
            .unwrap()
            .pem()
            .unwrap()
        }
    }

    fn register(registry: &CertificateRegistry, ca: &TestCa, options: CaOptions) -> String {
        let code = registry.registration_code().unwrap();
        let (proof, _) = ca.issue(&code, 999);
        registry
            .register_ca(ca.pem.as_bytes(), proof.as_bytes(), options)
            .unwrap()
            .id
    }

    #[test]
    fn every_change_is_stored_and_a_new_registry_restores_it() {
        let store: Arc<dyn Records> = Arc::new(MemoryRecords::default());
        let first = CertificateRegistry::with_records(Arc::clone(&store));
        let fleet = TestCa::new("Fleet");
        let jitp = CaOptions {
            auto_register: Some(true),
            auto_activate: Some(true),
            ..CaOptions::default()
        };
        let fleet_id = register(&first, &fleet, jitp);
        // From the configuration file: not stored.
        let configured = TestCa::new("Configured");
        first
            .register_ca_trusted(configured.pem.as_bytes(), CaOptions::default())
            .unwrap();
        let retired = TestCa::new("Retired");
        let retired_id = register(&first, &retired, CaOptions::default());
        first
            .set_ca_status(&retired_id, CaStatus::Inactive)
            .unwrap();
        let (a, _) = fleet.issue("a", 1);
        let (b, _) = fleet.issue("b", 2);
        let (gone, _) = fleet.issue("gone", 3);
        first
            .register_cert(a.as_bytes(), Some("mapped".into()), CertStatus::Active)
            .unwrap();
        first
            .register_cert(b.as_bytes(), None, CertStatus::Active)
            .unwrap();
        first
            .register_cert(gone.as_bytes(), None, CertStatus::Active)
            .unwrap();
        first.delete_cert("03").unwrap();
        first.set_cert_status("01", CertStatus::Inactive).unwrap();
        assert_eq!(first.import_crl(&fleet_id, fleet.crl(2).as_bytes()), Ok(1));
        let (_, jit_der) = fleet.issue("jit", 4);
        assert!(matches!(
            first.admit(&jit_der, true),
            Admission::Allowed { .. }
        ));

        let again = CertificateRegistry::with_records(store);
        assert_eq!(again.restore(), Ok((2, 3)));
        let mut cas = again.list_cas();
        cas.sort_by_key(|c| c.id.clone());
        let mut expected = first.list_cas();
        expected.retain(|c| c.id == fleet_id || c.id == retired_id);
        expected.sort_by_key(|c| c.id.clone());
        assert_eq!(cas, expected);
        assert_eq!(
            again.list_certs(&CertFilter::default()),
            first.list_certs(&CertFilter::default())
        );
        assert_eq!(again.cert("01").unwrap().client_id, "mapped");
        assert_eq!(again.status_of("01"), Some(CertStatus::Inactive));
        assert_eq!(again.status_of("02"), Some(CertStatus::Revoked));
        assert_eq!(again.status_of("03"), None);
        assert_eq!(again.status_of("04"), Some(CertStatus::Active));
        // The restored CRL still refuses its serial, and the trust has both CRL and roots.
        let (_, b_der) = fleet.issue("b", 2);
        assert_eq!(
            again.admit(&b_der, false),
            Admission::Refused("certificate revoked by CRL")
        );
        let (roots, crls) = again.trust();
        assert_eq!((roots.len(), crls.len()), (1, 1));
    }
}
