//! The security subcommands over the management API: `aviary user`, `policy`, `device`,
//! `ca` (with CRL import), `cert` and `auth` (the authentication chain). Same conventions as the rest of the CLI: a table or
//! text by default, the API's JSON with `--json`; certificates and CRLs are read from PEM
//! files named on the command line.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use super::http::{segment, ApiClient, CliError};
use super::table::{self, render};
use super::{fields, pretty};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// List the built-in users.
    List,
    /// Show one user.
    Show { username: String },
    /// Create a user (the password is hashed by the broker, never stored in clear).
    Add {
        username: String,
        #[arg(long)]
        password: String,
        /// Create it switched off.
        #[arg(long)]
        disabled: bool,
    },
    /// Change a user's password.
    Passwd {
        username: String,
        #[arg(long)]
        password: String,
    },
    /// Let a user connect again.
    Enable { username: String },
    /// Refuse a user's next CONNECTs.
    Disable { username: String },
    /// Delete a user.
    Delete { username: String },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// List the authorization policies in evaluation order.
    List,
    /// Show one policy.
    Show { id: String },
    /// Create a policy (or replace it with `--replace`).
    Create {
        id: String,
        /// allow or deny.
        #[arg(long)]
        effect: String,
        /// connect, publish or subscribe (repeat for several).
        #[arg(long = "action", required = true)]
        actions: Vec<String>,
        /// Topic filter with `${clientid}`/`${username}` (repeat; none: all topics).
        #[arg(long = "resource")]
        resources: Vec<String>,
        /// Lower numbers are evaluated first.
        #[arg(long, default_value_t = 0)]
        priority: i32,
        /// Client id wildcard condition (repeat).
        #[arg(long = "client-id")]
        client_ids: Vec<String>,
        /// Username wildcard condition (repeat).
        #[arg(long = "username")]
        usernames: Vec<String>,
        /// Source address block condition (repeat).
        #[arg(long = "cidr")]
        source_cidrs: Vec<String>,
        /// Replace the existing policy of this id.
        #[arg(long)]
        replace: bool,
    },
    /// Delete a policy.
    Delete { id: String },
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// List the device identities (with their keys).
    List,
    /// Show one device identity.
    Show { device_id: String },
    /// Create a device identity; keys are generated unless given.
    Add {
        device_id: String,
        #[arg(long)]
        primary_key: Option<String>,
        #[arg(long)]
        secondary_key: Option<String>,
        #[arg(long)]
        disabled: bool,
    },
    /// Let a device connect again.
    Enable { device_id: String },
    /// Refuse a device's next CONNECTs.
    Disable { device_id: String },
    /// Delete a device identity.
    Delete { device_id: String },
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// List the registered CA certificates.
    List,
    /// Show one CA.
    Show { id: String },
    /// The registration code: the CN of the verification certificate to sign with the CA.
    Code,
    /// Register a CA with proof of possession.
    Register {
        /// The CA certificate (PEM file).
        #[arg(long)]
        cert: std::path::PathBuf,
        /// A certificate signed by the CA whose CN is the registration code (PEM file).
        #[arg(long)]
        verification: std::path::PathBuf,
        /// Register it inactive.
        #[arg(long)]
        inactive: bool,
        /// Register its unknown device certificates on first connect (JITP).
        #[arg(long)]
        auto_register: bool,
        /// JITP certificates start ACTIVE.
        #[arg(long)]
        auto_activate: bool,
    },
    /// Let the CA's devices connect.
    Activate { id: String },
    /// Refuse the CA's devices (closes their connections at once).
    Deactivate { id: String },
    /// Delete an inactive CA.
    Delete { id: String },
    /// Import a CRL signed by the CA (PEM file): its serials become REVOKED.
    Crl {
        id: String,
        file: std::path::PathBuf,
    },
    /// Show the CA's imported CRL (PEM and revoked serials).
    ShowCrl { id: String },
    /// Remove the CA's imported CRL (its serials are no longer refused).
    DeleteCrl { id: String },
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// List device certificates, optionally filtered.
    List {
        #[arg(long)]
        client_id: Option<String>,
        #[arg(long)]
        ca_id: Option<String>,
        #[arg(long)]
        serial: Option<String>,
        /// ACTIVE, INACTIVE, REVOKED or PENDING_ACTIVATION.
        #[arg(long)]
        status: Option<String>,
    },
    /// Show one device certificate (id `ca_id:serial`, or a serial only one CA has).
    Show { serial: String },
    /// Register a device certificate (PEM file) issued by a registered CA.
    Register {
        file: std::path::PathBuf,
        /// The client id it may connect as (default: its CN).
        #[arg(long)]
        client_id: Option<String>,
        /// Initial status (default ACTIVE).
        #[arg(long)]
        status: Option<String>,
    },
    /// Change a certificate's status (anything but ACTIVE closes its connections). The
    /// certificate: `ca_id:serial`, or a serial only one CA has.
    SetStatus { serial: String, status: String },
    /// The status of any serial under each CA that knows it: registered, REVOKED by a CRL,
    /// or UNKNOWN.
    Status {
        serial: String,
        /// Only this CA's answer.
        #[arg(long)]
        ca_id: Option<String>,
    },
    /// Delete a device certificate (`ca_id:serial`, or a serial only one CA has).
    Delete { serial: String },
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// The authentication chain: order, anonymous access, JWT / HTTP configured.
    Show,
    /// Change the chain's settings; what is not given stays as it is.
    Set {
        /// "auto", "allow" or "deny".
        #[arg(long)]
        anonymous: Option<String>,
        /// Authenticators in order, comma-separated: devices,users,jwt,http.
        #[arg(long, value_delimiter = ',')]
        order: Option<Vec<String>>,
        /// JSON file with the JWT settings (the keys of `[auth.jwt]`).
        #[arg(long)]
        jwt: Option<std::path::PathBuf>,
        /// JSON file with the HTTP service settings (the keys of `[auth.http]`).
        #[arg(long)]
        http: Option<std::path::PathBuf>,
        /// Switch JWT off.
        #[arg(long, conflicts_with = "jwt")]
        no_jwt: bool,
        /// Switch the HTTP authentication service off.
        #[arg(long, conflicts_with = "http")]
        no_http: bool,
    },
}

const CA_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("SUBJECT", "subject"),
    ("STATUS", "status"),
    ("JITP", "auto_register"),
    ("AUTO-ACTIVATE", "auto_activate"),
    ("CRL REVOKED", "crl_revoked"),
];

const CERT_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("SERIAL", "serial"),
    ("CLIENT ID", "client_id"),
    ("STATUS", "status"),
    ("CA", "ca_id"),
    ("SUBJECT", "subject"),
];

/// Prints a value as JSON, or a table of `columns` (one row for an object).
fn output(as_json: bool, value: &Value, columns: &[(&str, &str)]) -> String {
    if as_json {
        return pretty(value);
    }
    match value.as_array() {
        Some(rows) => render(columns, rows),
        None => render(columns, std::slice::from_ref(value)),
    }
}

/// What a deletion prints.
fn deleted(as_json: bool, value: &Value, what: String) -> String {
    if as_json {
        pretty(value)
    } else {
        format!("deleted {what}")
    }
}

/// A JSON file's value; the error names the file.
fn read_json(path: &std::path::Path) -> Result<Value, CliError> {
    let text = read_pem(path)?;
    serde_json::from_str(&text)
        .map_err(|e| CliError::Usage(format!("{} is not JSON: {e}", path.display())))
}

/// A PEM file's text; the error names the file.
fn read_pem(path: &std::path::Path) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))
}

pub(super) async fn user(
    api: &ApiClient,
    as_json: bool,
    command: UserCommand,
) -> Result<String, CliError> {
    const COLUMNS: &[(&str, &str)] = &[("USERNAME", "username"), ("ENABLED", "enabled")];
    let path = |name: &str| format!("/api/v1/users/{}", segment(name));
    let value = match command {
        UserCommand::List => api.call(Method::GET, "/api/v1/users", None).await?,
        UserCommand::Show { username } => api.call(Method::GET, &path(&username), None).await?,
        UserCommand::Add {
            username,
            password,
            disabled,
        } => {
            let body = json!({"username": username, "password": password, "enabled": !disabled});
            api.call(Method::POST, "/api/v1/users", Some(&body)).await?
        }
        UserCommand::Passwd { username, password } => {
            let body = json!({ "password": password });
            api.call(Method::PATCH, &path(&username), Some(&body))
                .await?
        }
        UserCommand::Enable { username } => {
            let body = json!({"enabled": true});
            api.call(Method::PATCH, &path(&username), Some(&body))
                .await?
        }
        UserCommand::Disable { username } => {
            let body = json!({"enabled": false});
            api.call(Method::PATCH, &path(&username), Some(&body))
                .await?
        }
        UserCommand::Delete { username } => {
            let v = api.call(Method::DELETE, &path(&username), None).await?;
            return Ok(deleted(as_json, &v, format!("user {username}")));
        }
    };
    Ok(output(as_json, &value, COLUMNS))
}

pub(super) async fn policy(
    api: &ApiClient,
    as_json: bool,
    command: PolicyCommand,
) -> Result<String, CliError> {
    const COLUMNS: &[(&str, &str)] = &[
        ("PRIORITY", "priority"),
        ("ID", "id"),
        ("EFFECT", "effect"),
        ("ACTIONS", "actions"),
        ("RESOURCES", "resources"),
        ("CLIENT IDS", "client_ids"),
        ("USERNAMES", "usernames"),
        ("CIDRS", "source_cidrs"),
    ];
    let path = |id: &str| format!("/api/v1/authorization-policies/{}", segment(id));
    let value = match command {
        PolicyCommand::List => {
            api.call(Method::GET, "/api/v1/authorization-policies", None)
                .await?
        }
        PolicyCommand::Show { id } => api.call(Method::GET, &path(&id), None).await?,
        PolicyCommand::Create {
            id,
            effect,
            actions,
            resources,
            priority,
            client_ids,
            usernames,
            source_cidrs,
            replace,
        } => {
            let body = json!({"id": id, "effect": effect, "actions": actions,
                "resources": resources, "priority": priority, "client_ids": client_ids,
                "usernames": usernames, "source_cidrs": source_cidrs});
            if replace {
                api.call(Method::PUT, &path(&id), Some(&body)).await?
            } else {
                api.call(Method::POST, "/api/v1/authorization-policies", Some(&body))
                    .await?
            }
        }
        PolicyCommand::Delete { id } => {
            let v = api.call(Method::DELETE, &path(&id), None).await?;
            return Ok(deleted(as_json, &v, format!("policy {id}")));
        }
    };
    Ok(output(as_json, &value, COLUMNS))
}

pub(super) async fn device(
    api: &ApiClient,
    as_json: bool,
    command: DeviceCommand,
) -> Result<String, CliError> {
    const COLUMNS: &[(&str, &str)] = &[
        ("DEVICE ID", "device_id"),
        ("ENABLED", "enabled"),
        ("PRIMARY KEY", "primary_key"),
        ("SECONDARY KEY", "secondary_key"),
    ];
    let path = |id: &str| format!("/api/v1/device-identities/{}", segment(id));
    let value = match command {
        DeviceCommand::List => {
            api.call(Method::GET, "/api/v1/device-identities", None)
                .await?
        }
        DeviceCommand::Show { device_id } => api.call(Method::GET, &path(&device_id), None).await?,
        DeviceCommand::Add {
            device_id,
            primary_key,
            secondary_key,
            disabled,
        } => {
            let mut body = json!({"device_id": device_id, "enabled": !disabled});
            if let Some(key) = primary_key {
                body["primary_key"] = json!(key);
            }
            if let Some(key) = secondary_key {
                body["secondary_key"] = json!(key);
            }
            api.call(Method::POST, "/api/v1/device-identities", Some(&body))
                .await?
        }
        DeviceCommand::Enable { device_id } => {
            let body = json!({"enabled": true});
            api.call(Method::PATCH, &path(&device_id), Some(&body))
                .await?
        }
        DeviceCommand::Disable { device_id } => {
            let body = json!({"enabled": false});
            api.call(Method::PATCH, &path(&device_id), Some(&body))
                .await?
        }
        DeviceCommand::Delete { device_id } => {
            let v = api.call(Method::DELETE, &path(&device_id), None).await?;
            return Ok(deleted(as_json, &v, format!("device {device_id}")));
        }
    };
    Ok(output(as_json, &value, COLUMNS))
}

pub(super) async fn ca(
    api: &ApiClient,
    as_json: bool,
    command: CaCommand,
) -> Result<String, CliError> {
    let path = |id: &str| format!("/api/v1/ca-certificates/{}", segment(id));
    let status = |id: String, status: &'static str| async move {
        let body = json!({ "status": status });
        api.call(Method::PATCH, &path(&id), Some(&body)).await
    };
    let value = match command {
        CaCommand::List => {
            api.call(Method::GET, "/api/v1/ca-certificates", None)
                .await?
        }
        CaCommand::Show { id } => api.call(Method::GET, &path(&id), None).await?,
        CaCommand::Code => {
            let code = api
                .call(
                    Method::GET,
                    "/api/v1/ca-certificates/registration-code",
                    None,
                )
                .await?;
            return Ok(if as_json {
                pretty(&code)
            } else {
                table::cell(&code["registration_code"])
            });
        }
        CaCommand::Register {
            cert,
            verification,
            inactive,
            auto_register,
            auto_activate,
        } => {
            let body = json!({"certificate_pem": read_pem(&cert)?,
                "verification_certificate_pem": read_pem(&verification)?,
                "activate": !inactive, "auto_register": auto_register,
                "auto_activate": auto_activate});
            api.call(Method::POST, "/api/v1/ca-certificates", Some(&body))
                .await?
        }
        CaCommand::Activate { id } => status(id, "ACTIVE").await?,
        CaCommand::Deactivate { id } => status(id, "INACTIVE").await?,
        CaCommand::Delete { id } => {
            let v = api.call(Method::DELETE, &path(&id), None).await?;
            return Ok(deleted(as_json, &v, format!("CA {id}")));
        }
        CaCommand::Crl { id, file } => {
            let body = json!({ "crl_pem": read_pem(&file)? });
            let v = api
                .call(Method::POST, &format!("{}/crl", path(&id)), Some(&body))
                .await?;
            return Ok(if as_json {
                pretty(&v)
            } else {
                format!(
                    "CRL imported: {} serials revoked",
                    table::cell(&v["revoked"])
                )
            });
        }
        CaCommand::ShowCrl { id } => {
            let v = api
                .call(Method::GET, &format!("{}/crl", path(&id)), None)
                .await?;
            return Ok(if as_json {
                pretty(&v)
            } else {
                let serials: Vec<String> = v["revoked"]
                    .as_array()
                    .map(|a| a.iter().map(table::cell).collect())
                    .unwrap_or_default();
                format!(
                    "revoked: {}\n{}",
                    serials.join(", "),
                    v["crl_pem"].as_str().unwrap_or_default()
                )
            });
        }
        CaCommand::DeleteCrl { id } => {
            let v = api
                .call(Method::DELETE, &format!("{}/crl", path(&id)), None)
                .await?;
            return Ok(deleted(as_json, &v, format!("CRL of CA {id}")));
        }
    };
    Ok(output(as_json, &value, CA_COLUMNS))
}

pub(super) async fn cert(
    api: &ApiClient,
    as_json: bool,
    command: CertCommand,
) -> Result<String, CliError> {
    let path = |serial: &str| format!("/api/v1/device-certificates/{}", segment(serial));
    let value = match command {
        CertCommand::List {
            client_id,
            ca_id,
            serial,
            status,
        } => {
            let q = super::query(&[
                ("client_id", client_id),
                ("ca_id", ca_id),
                ("serial", serial),
                ("status", status),
            ]);
            api.call(
                Method::GET,
                &format!("/api/v1/device-certificates{q}"),
                None,
            )
            .await?
        }
        CertCommand::Show { serial } => api.call(Method::GET, &path(&serial), None).await?,
        CertCommand::Register {
            file,
            client_id,
            status,
        } => {
            let mut body = json!({ "certificate_pem": read_pem(&file)? });
            if let Some(id) = client_id {
                body["client_id"] = json!(id);
            }
            if let Some(status) = status {
                body["status"] = json!(status);
            }
            api.call(Method::POST, "/api/v1/device-certificates", Some(&body))
                .await?
        }
        CertCommand::SetStatus { serial, status } => {
            let body = json!({ "status": status });
            api.call(Method::PATCH, &path(&serial), Some(&body)).await?
        }
        CertCommand::Status { serial, ca_id } => {
            let q = super::query(&[("ca_id", ca_id)]);
            let v = api
                .call(Method::GET, &format!("{}/status{q}", path(&serial)), None)
                .await?;
            return Ok(if as_json { pretty(&v) } else { fields(&v) });
        }
        CertCommand::Delete { serial } => {
            let v = api.call(Method::DELETE, &path(&serial), None).await?;
            return Ok(deleted(as_json, &v, format!("certificate {serial}")));
        }
    };
    Ok(output(as_json, &value, CERT_COLUMNS))
}

pub(super) async fn auth(
    api: &ApiClient,
    as_json: bool,
    command: AuthCommand,
) -> Result<String, CliError> {
    let value = match command {
        AuthCommand::Show => {
            api.call(Method::GET, "/api/v1/authenticators", None)
                .await?
        }
        AuthCommand::Set {
            anonymous,
            order,
            jwt,
            http,
            no_jwt,
            no_http,
        } => {
            let mut body = json!({});
            if no_jwt {
                body["jwt"] = Value::Null;
            }
            if no_http {
                body["http"] = Value::Null;
            }
            if let Some(anonymous) = anonymous {
                body["anonymous"] = json!(anonymous);
            }
            if let Some(order) = order {
                body["order"] = json!(order);
            }
            if let Some(path) = jwt {
                body["jwt"] = read_json(&path)?;
            }
            if let Some(path) = http {
                body["http"] = read_json(&path)?;
            }
            api.call(Method::PATCH, "/api/v1/authenticators", Some(&body))
                .await?
        }
    };
    Ok(if as_json {
        pretty(&value)
    } else {
        fields(&value)
    })
}
