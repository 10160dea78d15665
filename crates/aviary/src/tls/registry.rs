//! The certificate registry: customer CAs (registered with proof of possession, up to
//! [`MAX_CAS`]), their CRLs, and device certificates with a status each. The TLS verifier
//! reads it synchronously during handshakes; a status change also closes the live
//! connections that use the certificate (through their revocation tokens) at once.
//!
//! Identity: serials are only unique per CA, so a device certificate is keyed by its
//! issuing CA and its serial together; its id is `ca_id:serial` ([`cert_id`]). A bare
//! serial names a certificate only while no other CA has one with the same serial.
//!
//! Locks: one `std::sync::Mutex` around the in-memory state, held for map operations only
//! (never across a store write or an await). CA certificates are parsed once, at
//! registration: a handshake compares raw subjects under the lock and checks the issuer's
//! signature outside it. A second mutex (`write_order`) orders the writes to the management
//! records, so the last write of a record is always its current state; it is held across
//! a store write, so API handlers call the changing methods from `spawn_blocking`.
//!
//! Persistence: with [`CertificateRegistry::with_records`], every change made through the
//! API and every certificate registered just in time is written to the management records
//! (`CaCertificate` — the CA with its settings and imported CRL; `DeviceCertificate` — one
//! per certificate id). A change is stored first and applied after, so a failed write
//! changes nothing; a withdrawal (a certificate or CA made non-active, a CRL import) is
//! applied first and stored after, so it takes effect even when the write fails (the error
//! says so). A certificate registered just in time is admitted at once and stored on a
//! blocking thread afterwards (never inside the handshake); if that write fails JITP simply
//! happens again after a restart. [`CertificateRegistry::restore`] loads the records at start
//! (device certificates stored by serial alone, the earlier shape, are loaded and re-keyed).
//! CAs from the configuration file are not stored (the file stays their source) unless the
//! API changes them. The pending registration code is not stored: after a restart a new one
//! is issued (choice: a code is free to ask for again, and one that outlives the process
//! would only widen its use).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
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
    #[error("certificate {0} already registered")]
    CertExists(String),
    #[error("no certificate {0}")]
    NoCert(String),
    #[error("serial {0} is registered under several CAs; name the certificate as ca_id:serial")]
    AmbiguousSerial(String),
    #[error("not a CRL, or not signed by this CA")]
    BadCrl,
    #[error("CA {0} has no imported CRL")]
    NoCrl(String),
    #[error("cannot generate a registration code")]
    Random,
    /// The management records could not be written (the change was not made, unless it
    /// withdraws access: those apply anyway and say so).
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
    /// `ca_id:serial` ([`cert_id`]); records stored before it existed lack it (it is
    /// derived again at load).
    #[serde(default)]
    pub id: String,
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

/// The status of a serial under one CA (the OCSP question): its registered status, or
/// REVOKED when only the CA's CRL lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SerialStatus {
    pub ca_id: String,
    /// The certificate id when registered, else `None` (known from a CRL only).
    pub id: Option<String>,
    pub status: CertStatus,
}

/// A CA's imported CRL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrlInfo {
    /// The CRL, PEM.
    pub pem: String,
    /// The serials it revokes, sorted.
    pub revoked: Vec<String>,
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

/// The id of a device certificate: its issuing CA's id and its serial.
pub fn cert_id(ca_id: &str, serial: &str) -> String {
    format!("{ca_id}:{serial}")
}

/// A device certificate's key in the registry: (CA id, serial).
type CertKey = (String, String);

struct Ca {
    der: CertificateDer<'static>,
    /// The CA's subject, raw DER, matched against a device certificate's issuer.
    subject_raw: Vec<u8>,
    info: CaInfo,
    /// Imported CRL (DER) and its revoked serials.
    crl: Option<(CertificateRevocationListDer<'static>, HashSet<String>)>,
}

impl Ca {
    /// Parses the CA once: its subject (raw and as text). `None` if `der` does not parse.
    fn new(der: CertificateDer<'static>, info: CaInfo) -> Option<Self> {
        let subject_raw = X509Certificate::from_der(&der)
            .ok()?
            .1
            .subject()
            .as_raw()
            .to_vec();
        Some(Self {
            der,
            subject_raw,
            info,
            crl: None,
        })
    }
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
    certs: BTreeMap<CertKey, DeviceCert>,
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
    state: Arc<Mutex<State>>,
    /// Held across every write to the records (see the module doc).
    write_order: Arc<Mutex<()>>,
    /// Bumped on every change of CAs or CRLs, so the acceptor knows to rebuild.
    generation: std::sync::atomic::AtomicU64,
    /// Where changes are stored (`None`: memory only, as in unit tests).
    records: Option<Arc<dyn Records>>,
    /// The JITP writes still running on blocking threads (see [`Self::writes_done`]).
    pending_writes: TaskTracker,
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

fn withdrawal_store_error(e: RegistryError) -> RegistryError {
    RegistryError::Store(format!("{e} (the withdrawal applies until a restart)"))
}

/// Stores a device certificate (no-op without records).
fn put_cert(
    records: Option<&Arc<dyn Records>>,
    info: &DeviceCertInfo,
) -> Result<(), RegistryError> {
    let Some(store) = records else {
        return Ok(());
    };
    records::put(&**store, RecordKind::DeviceCertificate, &info.id, info).map_err(store_error)
}

fn lock_state(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every change is a single map operation: a poisoned state is still consistent.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn lock_order(order: &Mutex<()>) -> MutexGuard<'_, ()> {
    order.lock().unwrap_or_else(|e| e.into_inner())
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
    /// Device certificates stored under their serial alone (before ids were `ca:serial`)
    /// are re-stored under their id.
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
        let mut loaded = Vec::with_capacity(cas.len());
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
            let mut ca = Ca::new(CertificateDer::from(der), info)
                .ok_or_else(|| bad(id, "the certificate"))?;
            ca.crl = crl;
            loaded.push((id.clone(), ca));
        }
        let mut rekeyed = Vec::new();
        let mut state = self.lock();
        for (id, ca) in loaded {
            state.cas.insert(id, ca);
        }
        for (key, info) in &certs {
            let mut info = info.clone();
            info.id = cert_id(&info.ca_id, &info.serial);
            if *key != info.id {
                rekeyed.push((key.clone(), info.clone()));
            }
            state.certs.insert(
                (info.ca_id.clone(), info.serial.clone()),
                DeviceCert { info },
            );
        }
        drop(state);
        for (old, info) in rekeyed {
            let moved = put_cert(Some(store), &info)
                .and_then(|()| self.unstore(RecordKind::DeviceCertificate, &old));
            if let Err(e) = moved {
                tracing::warn!(old = %old, id = %info.id, error = %e,
                    "device certificate record not re-keyed (it loads again next start)");
            }
        }
        self.bump();
        Ok((cas.len(), certs.len()))
    }

    /// Stores CA `id` as it is in `state` (no-op without records).
    fn store_ca(&self, ca: &Ca) -> Result<(), RegistryError> {
        let Some(store) = &self.records else {
            return Ok(());
        };
        records::put(
            &**store,
            RecordKind::CaCertificate,
            &ca.info.id,
            &StoredCa::of(ca),
        )
        .map_err(store_error)
    }

    /// Stores CA `id` as it currently is in memory (no-op if gone or without records).
    fn store_current_ca(&self, id: &str) -> Result<(), RegistryError> {
        if self.records.is_none() {
            return Ok(());
        }
        let stored = {
            let state = self.lock();
            state.cas.get(id).map(StoredCa::of)
        };
        let (Some(store), Some(stored)) = (&self.records, stored) else {
            return Ok(());
        };
        records::put(&**store, RecordKind::CaCertificate, id, &stored).map_err(store_error)
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
    /// have the current registration code as its common name. Stored before it is used.
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
        self.insert_ca(der.clone(), &ca, options, true)
    }

    /// Registers a CA without proof of possession (configuration file: the operator put
    /// it there; not stored).
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
        self.insert_ca(der.clone(), &ca, options, false)
    }

    fn insert_ca(
        &self,
        der: CertificateDer<'static>,
        ca: &X509Certificate<'_>,
        options: CaOptions,
        store: bool,
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
        let new = Ca {
            der,
            subject_raw: ca.subject().as_raw().to_vec(),
            info: info.clone(),
            crl: None,
        };
        let _order = self.write_order();
        let check = |state: &State| {
            if state.cas.contains_key(&id) {
                return Err(RegistryError::CaExists(id.clone()));
            }
            if state.cas.len() >= MAX_CAS {
                return Err(RegistryError::TooManyCas);
            }
            Ok(())
        };
        check(&self.lock())?;
        if store {
            self.store_ca(&new)?;
        }
        let mut state = self.lock();
        state.cas.insert(id, new);
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

    /// Activates or deactivates a CA. Deactivating applies at once (and closes every live
    /// connection whose certificate it issued) even if it cannot be stored; activating is
    /// stored first.
    pub fn set_ca_status(&self, id: &str, status: CaStatus) -> Result<CaInfo, RegistryError> {
        let _order = self.write_order();
        let apply = || {
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
            drop(state);
            self.bump();
            Ok(info)
        };
        if status == CaStatus::Inactive {
            let info = apply()?;
            self.store_current_ca(id).map_err(withdrawal_store_error)?;
            return Ok(info);
        }
        let stored = {
            let state = self.lock();
            let ca = state
                .cas
                .get(id)
                .ok_or_else(|| RegistryError::NoCa(id.to_owned()))?;
            let mut stored = StoredCa::of(ca);
            stored.status = status;
            stored
        };
        if let Some(store) = &self.records {
            records::put(&**store, RecordKind::CaCertificate, id, &stored).map_err(store_error)?;
        }
        apply()
    }

    pub fn delete_ca(&self, id: &str) -> Result<(), RegistryError> {
        let _order = self.write_order();
        match self.lock().cas.get(id) {
            None => return Err(RegistryError::NoCa(id.to_owned())),
            Some(ca) if ca.info.status == CaStatus::Active => return Err(RegistryError::CaActive),
            Some(_) => {}
        }
        self.unstore(RecordKind::CaCertificate, id)?;
        self.lock().cas.remove(id);
        self.bump();
        Ok(())
    }

    /// Imports a CRL for a CA (PEM or DER, signed by that CA): its serials become REVOKED
    /// (registered or not) and live connections using them are closed. A revocation
    /// applies even when it cannot be stored (the safe direction); the error says so.
    pub fn import_crl(&self, ca_id: &str, crl: &[u8]) -> Result<usize, RegistryError> {
        let _order = self.write_order();
        let ca_der = self
            .lock()
            .cas
            .get(ca_id)
            .map(|ca| ca.der.clone())
            .ok_or_else(|| RegistryError::NoCa(ca_id.to_owned()))?;
        let (der, revoked) = parse_crl(&ca_der, crl)?;
        let count = revoked.len();
        let mut state = self.lock();
        let ca = state
            .cas
            .get_mut(ca_id)
            .ok_or_else(|| RegistryError::NoCa(ca_id.to_owned()))?;
        ca.info.crl_revoked = count;
        ca.crl = Some((der, revoked.clone()));
        let mut changed = Vec::new();
        for serial in &revoked {
            if let Some(cert) = state.certs.get_mut(&(ca_id.to_owned(), serial.clone())) {
                cert.info.status = CertStatus::Revoked;
                changed.push(cert.info.clone());
            }
        }
        state.close_where(|c| c.ca_id == ca_id && revoked.contains(&c.serial));
        drop(state);
        self.bump();
        self.store_current_ca(ca_id)
            .and_then(|()| {
                changed
                    .iter()
                    .try_for_each(|info| put_cert(self.records.as_ref(), info))
            })
            .map_err(withdrawal_store_error)?;
        Ok(count)
    }

    /// A CA's imported CRL, if any.
    pub fn crl(&self, ca_id: &str) -> Result<CrlInfo, RegistryError> {
        let state = self.lock();
        let ca = state
            .cas
            .get(ca_id)
            .ok_or_else(|| RegistryError::NoCa(ca_id.to_owned()))?;
        let (der, set) = ca
            .crl
            .as_ref()
            .ok_or_else(|| RegistryError::NoCrl(ca_id.to_owned()))?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN X509 CRL-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END X509 CRL-----\n");
        let mut revoked: Vec<String> = set.iter().cloned().collect();
        revoked.sort();
        Ok(CrlInfo { pem, revoked })
    }

    /// Removes a CA's imported CRL (stored first): the serials it listed are no longer
    /// refused for it. Registered certificates it had made REVOKED stay REVOKED (their
    /// status is their own; set it back through the API).
    pub fn delete_crl(&self, ca_id: &str) -> Result<(), RegistryError> {
        let _order = self.write_order();
        let stored = {
            let state = self.lock();
            let ca = state
                .cas
                .get(ca_id)
                .ok_or_else(|| RegistryError::NoCa(ca_id.to_owned()))?;
            if ca.crl.is_none() {
                return Err(RegistryError::NoCrl(ca_id.to_owned()));
            }
            let mut stored = StoredCa::of(ca);
            stored.crl = None;
            stored
        };
        if let Some(store) = &self.records {
            records::put(&**store, RecordKind::CaCertificate, ca_id, &stored)
                .map_err(store_error)?;
        }
        if let Some(ca) = self.lock().cas.get_mut(ca_id) {
            ca.crl = None;
            ca.info.crl_revoked = 0;
        }
        self.bump();
        Ok(())
    }

    /// Registers a device certificate issued by a registered CA, bound to `client_id` (or
    /// its CN). Stored before it is used.
    pub fn register_cert(
        &self,
        cert_pem: &[u8],
        client_id: Option<String>,
        status: CertStatus,
    ) -> Result<DeviceCertInfo, RegistryError> {
        let der = parse_cert(cert_pem)?;
        let (_, cert) =
            X509Certificate::from_der(&der).map_err(|_| RegistryError::BadCertificate)?;
        let ca_id = self.issuer_of(&cert).ok_or(RegistryError::UnknownIssuer)?;
        let serial = serial_hex(cert.raw_serial());
        let info = DeviceCertInfo {
            id: cert_id(&ca_id, &serial),
            serial,
            client_id: client_id.or_else(|| common_name(&cert)).unwrap_or_default(),
            ca_id,
            status,
            subject: cert.subject().to_string(),
        };
        let key = (info.ca_id.clone(), info.serial.clone());
        let _order = self.write_order();
        if self.lock().certs.contains_key(&key) {
            return Err(RegistryError::CertExists(info.id));
        }
        put_cert(self.records.as_ref(), &info)?;
        self.lock()
            .certs
            .insert(key, DeviceCert { info: info.clone() });
        Ok(info)
    }

    /// Changes a device certificate's status. Anything but ACTIVE applies at once and closes
    /// its live connections, even if it cannot be stored; ACTIVE is stored first.
    /// `id` is `ca_id:serial` or a serial registered under one CA only.
    pub fn set_cert_status(
        &self,
        id: &str,
        status: CertStatus,
    ) -> Result<DeviceCertInfo, RegistryError> {
        self.change_cert(id, status != CertStatus::Active, |info| {
            info.status = status;
        })
    }

    /// Changes the client id a certificate is bound to (new connections only); stored first.
    pub fn set_cert_client_id(
        &self,
        id: &str,
        client_id: String,
    ) -> Result<DeviceCertInfo, RegistryError> {
        self.change_cert(id, false, |info| info.client_id = client_id)
    }

    /// Changes a certificate record: a `withdrawal` applies first (closing its live
    /// connections) and is stored after; anything else is stored first.
    fn change_cert(
        &self,
        id: &str,
        withdrawal: bool,
        change: impl FnOnce(&mut DeviceCertInfo),
    ) -> Result<DeviceCertInfo, RegistryError> {
        let _order = self.write_order();
        let (key, mut info) = {
            let state = self.lock();
            let key = state.resolve(id)?;
            let info = state.certs.get(&key).map(|c| c.info.clone());
            (
                key,
                info.ok_or_else(|| RegistryError::NoCert(id.to_owned()))?,
            )
        };
        change(&mut info);
        if !withdrawal {
            put_cert(self.records.as_ref(), &info)?;
        }
        let mut state = self.lock();
        if let Some(cert) = state.certs.get_mut(&key) {
            cert.info = info.clone();
        }
        if info.status != CertStatus::Active {
            state.close_where(|c| c.ca_id == key.0 && c.serial == key.1);
        }
        drop(state);
        if withdrawal {
            put_cert(self.records.as_ref(), &info).map_err(withdrawal_store_error)?;
        }
        Ok(info)
    }

    /// Deletes a device certificate record (stored first) and closes its connections.
    pub fn delete_cert(&self, id: &str) -> Result<(), RegistryError> {
        let _order = self.write_order();
        let key = self.lock().resolve(id)?;
        self.unstore(RecordKind::DeviceCertificate, &cert_id(&key.0, &key.1))?;
        let mut state = self.lock();
        state.certs.remove(&key);
        state.close_where(|c| c.ca_id == key.0 && c.serial == key.1);
        Ok(())
    }

    /// A device certificate by id (`ca_id:serial`, or a serial registered under one CA only).
    pub fn cert(&self, id: &str) -> Result<DeviceCertInfo, RegistryError> {
        let state = self.lock();
        let key = state.resolve(id)?;
        state
            .certs
            .get(&key)
            .map(|c| c.info.clone())
            .ok_or_else(|| RegistryError::NoCert(id.to_owned()))
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

    /// The OCSP question for a serial, under CA `ca_id` or under every CA: for each CA that
    /// knows it, its registered status, else REVOKED if the CA's CRL lists it. Empty when
    /// unknown.
    pub fn status_of(&self, serial: &str, ca_id: Option<&str>) -> Vec<SerialStatus> {
        let state = self.lock();
        state
            .cas
            .keys()
            .filter(|id| ca_id.is_none_or(|want| want == id.as_str()))
            .filter_map(|id| {
                let key = (id.clone(), serial.to_owned());
                if let Some(cert) = state.certs.get(&key) {
                    return Some(SerialStatus {
                        ca_id: id.clone(),
                        id: Some(cert.info.id.clone()),
                        status: cert.info.status,
                    });
                }
                let crl = state.cas.get(id)?.crl.as_ref()?;
                crl.1.contains(serial).then(|| SerialStatus {
                    ca_id: id.clone(),
                    id: None,
                    status: CertStatus::Revoked,
                })
            })
            .collect()
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
    /// issuer CA must be active; in per-device mode it must be registered under that CA
    /// and ACTIVE, or is registered just in time when its CA allows it. Never blocks on
    /// the records: a JITP record is written on a blocking thread after the decision.
    pub(crate) fn admit(&self, end_entity: &[u8], per_device: bool) -> Admission {
        let Ok((_, cert)) = X509Certificate::from_der(end_entity) else {
            return Admission::Refused("unparsable certificate");
        };
        let serial = serial_hex(cert.raw_serial());
        let Some(ca_id) = self.issuer_of(&cert) else {
            return Admission::Refused("issuer is not a registered CA");
        };
        let mut state = self.lock();
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
        let key = (ca_id.clone(), serial.clone());
        if !per_device {
            return match state.certs.get(&key).map(|c| c.info.status) {
                None | Some(CertStatus::Active) => Admission::Allowed {
                    serial,
                    ca_id,
                    client_id: None,
                    common_name: cn,
                },
                Some(_) => Admission::Refused("certificate not active"),
            };
        }
        let mut registered_now = false;
        if !state.certs.contains_key(&key) {
            if !auto_register {
                return Admission::Refused("certificate not registered");
            }
            let status = if auto_activate {
                CertStatus::Active
            } else {
                CertStatus::PendingActivation
            };
            let info = DeviceCertInfo {
                id: cert_id(&ca_id, &serial),
                serial: serial.clone(),
                client_id: cn.clone().unwrap_or_default(),
                ca_id: ca_id.clone(),
                status,
                subject: cert.subject().to_string(),
            };
            state.certs.insert(key.clone(), DeviceCert { info });
            registered_now = true;
        }
        let admission = match state.certs.get(&key).map(|c| &c.info) {
            Some(info) if info.status == CertStatus::Active => Admission::Allowed {
                serial,
                ca_id,
                client_id: Some(info.client_id.clone()),
                common_name: cn,
            },
            _ => Admission::Refused("certificate not active"),
        };
        drop(state);
        if registered_now {
            self.store_jitp(key);
        }
        admission
    }

    /// Stores a certificate registered just in time, off the handshake: on a blocking
    /// thread when a runtime is at hand (else here). It writes the record as it is when
    /// the write happens, in `write_order`, so a change made meanwhile is never undone.
    fn store_jitp(&self, key: CertKey) {
        let Some(store) = self.records.clone() else {
            return;
        };
        let state = Arc::clone(&self.state);
        let order = Arc::clone(&self.write_order);
        let write = move || {
            let _order = lock_order(&order);
            let current = lock_state(&state).certs.get(&key).map(|c| c.info.clone());
            // Deleted meanwhile: nothing to store.
            let Some(info) = current else {
                return;
            };
            if let Err(e) = put_cert(Some(&store), &info) {
                tracing::warn!(id = %info.id, error = %e,
                    "JITP certificate not stored (registered again after a restart)");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(self.pending_writes.spawn_blocking_on(write, &handle)),
            Err(_) => write(),
        }
    }

    /// Completes once every JITP write started so far has finished: the server waits for
    /// it at shutdown, so the record is stored and the store is no longer held.
    pub(crate) async fn writes_done(&self) {
        self.pending_writes.close();
        self.pending_writes.wait().await;
        self.pending_writes.reopen();
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

    /// The id of the registered CA that issued `cert`: subjects are compared under the
    /// lock (raw bytes, parsed at registration); the signature of the candidates (almost
    /// always one) is checked outside it.
    fn issuer_of(&self, cert: &X509Certificate<'_>) -> Option<String> {
        let issuer = cert.issuer().as_raw();
        let candidates: Vec<(String, CertificateDer<'static>)> = self
            .lock()
            .cas
            .iter()
            .filter(|(_, ca)| ca.subject_raw == issuer)
            .map(|(id, ca)| (id.clone(), ca.der.clone()))
            .collect();
        candidates.into_iter().find_map(|(id, der)| {
            let (_, ca_cert) = X509Certificate::from_der(&der).ok()?;
            cert.verify_signature(Some(ca_cert.public_key()))
                .is_ok()
                .then_some(id)
        })
    }

    fn bump(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock_state(&self.state)
    }

    fn write_order(&self) -> MutexGuard<'_, ()> {
        lock_order(&self.write_order)
    }
}

impl State {
    /// The key of the certificate `id` names: `ca_id:serial`, or a bare serial registered
    /// under exactly one CA. Case-insensitive.
    fn resolve(&self, id: &str) -> Result<CertKey, RegistryError> {
        let id = id.to_lowercase();
        if let Some((ca, serial)) = id.split_once(':') {
            let key = (ca.to_owned(), serial.to_owned());
            return if self.certs.contains_key(&key) {
                Ok(key)
            } else {
                Err(RegistryError::NoCert(id))
            };
        }
        let mut found = self.certs.keys().filter(|(_, serial)| *serial == id);
        match (found.next(), found.next()) {
            (Some(key), None) => Ok(key.clone()),
            (None, _) => Err(RegistryError::NoCert(id)),
            (Some(_), Some(_)) => Err(RegistryError::AmbiguousSerial(id)),
        }
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

    /// The status of a serial that at most one CA knows.
    fn only_status(registry: &CertificateRegistry, serial: &str) -> Option<CertStatus> {
        let found = registry.status_of(serial, None);
        assert!(found.len() <= 1, "{serial} known by several CAs");
        found.first().map(|m| m.status)
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
        assert_eq!(only_status(&again, "01"), Some(CertStatus::Inactive));
        assert_eq!(only_status(&again, "02"), Some(CertStatus::Revoked));
        assert_eq!(only_status(&again, "03"), None);
        assert_eq!(only_status(&again, "04"), Some(CertStatus::Active));
        // The restored CRL still refuses its serial, and the trust has both CRL and roots.
        let (_, b_der) = fleet.issue("b", 2);
        assert_eq!(
            again.admit(&b_der, false),
            Admission::Refused("certificate revoked by CRL")
        );
        let (roots, crls) = again.trust();
        assert_eq!((roots.len(), crls.len()), (1, 1));
    }

    /// Records whose device certificate writes wait for a signal (a slow disk), or fail.
    #[derive(Default)]
    struct SlowRecords {
        inner: MemoryRecords,
        gate: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
        fail: std::sync::atomic::AtomicBool,
    }

    impl Records for SlowRecords {
        fn put_bytes(
            &self,
            kind: RecordKind,
            id: &str,
            value: Vec<u8>,
        ) -> Result<(), records::RecordError> {
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(records::RecordError::Backend("disk full".into()));
            }
            if kind == RecordKind::DeviceCertificate {
                if let Some(gate) = self.gate.lock().unwrap().as_ref() {
                    gate.recv_timeout(std::time::Duration::from_secs(10))
                        .unwrap();
                }
            }
            self.inner.put_bytes(kind, id, value)
        }

        fn list_bytes(
            &self,
            kind: RecordKind,
        ) -> Result<Vec<(String, Vec<u8>)>, records::RecordError> {
            self.inner.list_bytes(kind)
        }

        fn delete(&self, kind: RecordKind, id: &str) -> Result<bool, records::RecordError> {
            self.inner.delete(kind, id)
        }
    }

    #[test]
    fn jitp_admits_without_waiting_for_the_store_and_still_stores_the_record() {
        let (open, gate) = std::sync::mpsc::channel();
        let slow = Arc::new(SlowRecords {
            gate: Mutex::new(Some(gate)),
            ..SlowRecords::default()
        });
        let registry = Arc::new(CertificateRegistry::with_records(slow.clone()));
        let fleet = TestCa::new("Fleet");
        let jitp = CaOptions {
            auto_register: Some(true),
            auto_activate: Some(true),
            ..CaOptions::default()
        };
        let fleet_id = register(&registry, &fleet, jitp);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let (done, admitted) = std::sync::mpsc::channel();
        let (handle, worker) = (runtime.handle().clone(), Arc::clone(&registry));
        let (_, der) = fleet.issue("jit", 7);
        std::thread::spawn(move || {
            let _runtime = handle.enter();
            done.send(worker.admit(&der, true)).unwrap();
        });
        // Admitted while the disk is still stuck (the write happens off the handshake).
        let admission = admitted
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("admit waited for the store");
        assert!(matches!(admission, Admission::Allowed { .. }));
        // The lock is free meanwhile: other handshakes and reads go on.
        assert_eq!(registry.cert("07").unwrap().status, CertStatus::Active);
        let id = cert_id(&fleet_id, "07");
        let stored = || {
            slow.inner
                .list_bytes(RecordKind::DeviceCertificate)
                .unwrap()
                .iter()
                .any(|(k, _)| *k == id)
        };
        assert!(!stored());
        open.send(()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !stored() {
            assert!(
                std::time::Instant::now() < deadline,
                "JITP record never stored"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn records_stored_under_a_bare_serial_load_and_are_re_keyed() {
        let store = Arc::new(MemoryRecords::default());
        let first = CertificateRegistry::with_records(store.clone());
        let fleet = TestCa::new("Fleet");
        let fleet_id = register(&first, &fleet, CaOptions::default());
        // The earlier shape: keyed by serial, no id field.
        let old = serde_json::json!({
            "serial": "05", "client_id": "dev-5", "ca_id": fleet_id,
            "status": "ACTIVE", "subject": "CN=dev-5",
        });
        store
            .put_bytes(
                RecordKind::DeviceCertificate,
                "05",
                old.to_string().into_bytes(),
            )
            .unwrap();
        let again = CertificateRegistry::with_records(store.clone());
        assert_eq!(again.restore(), Ok((1, 1)));
        let id = cert_id(&fleet_id, "05");
        assert_eq!(again.cert(&id).unwrap().client_id, "dev-5");
        let keys: Vec<String> = store
            .list_bytes(RecordKind::DeviceCertificate)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![id]);
    }

    #[test]
    fn failed_writes_change_nothing_but_withdrawals_apply_anyway() {
        let records = Arc::new(SlowRecords::default());
        let registry = CertificateRegistry::with_records(records.clone());
        let fleet = TestCa::new("Fleet");
        let fleet_id = register(&registry, &fleet, CaOptions::default());
        let (a, _) = fleet.issue("a", 1);
        registry
            .register_cert(a.as_bytes(), None, CertStatus::Inactive)
            .unwrap();
        records
            .fail
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let (b, _) = fleet.issue("b", 2);
        assert!(matches!(
            registry.register_cert(b.as_bytes(), None, CertStatus::Active),
            Err(RegistryError::Store(_))
        ));
        assert!(registry.cert("02").is_err());
        // Activation and re-binding are stored first: nothing changes.
        assert!(registry.set_cert_status("01", CertStatus::Active).is_err());
        assert!(registry.set_cert_client_id("01", "x".into()).is_err());
        let info = registry.cert("01").unwrap();
        assert_eq!(
            (info.status, info.client_id.as_str()),
            (CertStatus::Inactive, "a")
        );
        let other = TestCa::new("Other");
        let code = registry.registration_code().unwrap();
        let (proof, _) = other.issue(&code, 9);
        assert!(registry
            .register_ca(other.pem.as_bytes(), proof.as_bytes(), CaOptions::default())
            .is_err());
        assert_eq!(registry.list_cas().len(), 1);
        // Withdrawals apply at once even though the write fails.
        records
            .fail
            .store(false, std::sync::atomic::Ordering::SeqCst);
        registry.set_cert_status("01", CertStatus::Active).unwrap();
        records
            .fail
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let (_, watch) = registry.watch("01", &fleet_id);
        assert!(registry.set_cert_status("01", CertStatus::Revoked).is_err());
        assert_eq!(registry.cert("01").unwrap().status, CertStatus::Revoked);
        assert!(watch.is_cancelled());
        assert!(registry
            .set_ca_status(&fleet_id, CaStatus::Inactive)
            .is_err());
        assert_eq!(registry.ca(&fleet_id).unwrap().status, CaStatus::Inactive);
    }

    #[test]
    fn at_most_32_cas_are_registered() {
        let registry = CertificateRegistry::default();
        for i in 0..MAX_CAS {
            let ca = TestCa::new(&format!("CA {i}"));
            registry
                .register_ca_trusted(ca.pem.as_bytes(), CaOptions::default())
                .unwrap();
        }
        let one_more = TestCa::new("one more");
        assert_eq!(
            registry.register_ca_trusted(one_more.pem.as_bytes(), CaOptions::default()),
            Err(RegistryError::TooManyCas)
        );
        let code = registry.registration_code().unwrap();
        let (proof, _) = one_more.issue(&code, 5);
        assert_eq!(
            registry.register_ca(
                one_more.pem.as_bytes(),
                proof.as_bytes(),
                CaOptions::default()
            ),
            Err(RegistryError::TooManyCas)
        );
        assert_eq!(registry.list_cas().len(), MAX_CAS);
    }
}
