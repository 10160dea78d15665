//! The `aviary` subcommands that manage a running broker through its management API:
//! clients, listeners, retained messages, publish, shared groups, stats, limits, usage,
//! API keys, health, and the security resources (`security.rs`: users, policies, device
//! identities, CAs with CRLs, device certificates, the authentication chain). Every
//! command prints a readable table or text, or the API's JSON with
//! `--json`; errors say what to do. `--url` and `--api-key` also come from `AVIARY_URL`
//! and `AVIARY_API_KEY`.

mod http;
mod security;
mod table;

pub use security::{
    AuthCommand, CaCommand, CertCommand, DeviceCommand, PolicyCommand, UserCommand,
};

use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Map, Value};

use self::http::{segment, ApiClient, CliError};
use self::table::render;

/// Exit code of a failed API call.
const EXIT_FAILED: u8 = 1;

/// Where the API is and how to print.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Base URL of the management API.
    #[arg(
        long,
        global = true,
        env = "AVIARY_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// API key (the bootstrap key is printed at the broker's first start).
    #[arg(long, global = true, env = "AVIARY_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

/// A management command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connected clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// MQTT listeners.
    #[command(subcommand)]
    Listener(ListenerCommand),
    /// Retained messages.
    #[command(subcommand)]
    Retained(RetainedCommand),
    /// Publish a message as the broker.
    Publish {
        topic: String,
        /// Payload text (empty if absent).
        payload: Option<String>,
        #[arg(long, default_value_t = 0)]
        qos: u8,
        #[arg(long)]
        retain: bool,
    },
    /// Shared subscription groups, their members and backlog.
    Shared,
    /// The broker's counters.
    Stats,
    /// The plan limits.
    #[command(subcommand)]
    Limits(LimitsCommand),
    /// Metered usage (weighted units).
    Usage {
        /// One client's usage per minute.
        #[arg(long, conflicts_with_all = ["listener", "user"])]
        client: Option<String>,
        /// One listener's usage per minute.
        #[arg(long, conflicts_with = "user")]
        listener: Option<String>,
        /// One user's usage per minute.
        #[arg(long)]
        user: Option<String>,
    },
    /// Management API keys.
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
    /// Built-in users (username/password).
    #[command(subcommand)]
    User(UserCommand),
    /// Authorization policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Device identities (HMAC access tokens).
    #[command(subcommand)]
    Device(DeviceCommand),
    /// CA certificates (proof of possession, CRLs).
    #[command(subcommand)]
    Ca(CaCommand),
    /// Device certificates and their status.
    #[command(subcommand)]
    Cert(CertCommand),
    /// The authentication chain (order, anonymous access, JWT, HTTP service).
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Liveness and readiness (fails when the broker is not ready).
    Health,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// List connected clients.
    List {
        /// Client id pattern (`*`, `?`).
        #[arg(long)]
        client_id: Option<String>,
        #[arg(long)]
        username: Option<String>,
        #[arg(long)]
        listener: Option<String>,
        /// 3.1, 3.1.1 or 5.0.
        #[arg(long)]
        protocol: Option<String>,
        #[arg(long)]
        offset: Option<usize>,
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show a client and its subscriptions.
    Show { client_id: String },
    /// Disconnect a client (5.0: DISCONNECT 0x98).
    Kick { client_id: String },
    /// Add a subscription to a client's session.
    Subscribe {
        client_id: String,
        filter: String,
        #[arg(long, default_value_t = 0)]
        qos: u8,
    },
    /// Remove a subscription from a client's session.
    Unsubscribe { client_id: String, filter: String },
}

#[derive(Debug, Subcommand)]
pub enum ListenerCommand {
    /// List listeners.
    List,
    /// Show one listener.
    Show { name: String },
    /// Create a listener.
    Create {
        name: String,
        /// tcp, ws, tls or wss.
        #[arg(long, default_value = "tcp")]
        kind: String,
        /// ip:port to bind.
        #[arg(long)]
        bind: String,
        /// Create it switched off.
        #[arg(long)]
        disabled: bool,
        /// Allowed network (CIDR), repeatable; none: everyone.
        #[arg(long = "allow")]
        allow: Vec<String>,
        /// tls, wss: server certificate chain, a PEM file on the broker's host.
        #[arg(long)]
        cert: Option<String>,
        /// tls, wss: server private key, a PEM file on the broker's host.
        #[arg(long)]
        key: Option<String>,
        /// tls, wss: one-way (default), mutual or per-device.
        #[arg(long)]
        x509_mode: Option<String>,
    },
    /// Replace a tls or wss listener's server certificate (open connections stay).
    Certificate {
        name: String,
        /// Server certificate chain, a PEM file on the broker's host.
        #[arg(long)]
        cert: Option<String>,
        /// Server private key, a PEM file on the broker's host.
        #[arg(long)]
        key: Option<String>,
    },
    /// Switch a listener on.
    Enable { name: String },
    /// Switch a listener off (its clients are disconnected).
    Disable { name: String },
    /// Replace a listener's allow-list (no networks: everyone).
    Allow { name: String, networks: Vec<String> },
    /// Delete a listener.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum RetainedCommand {
    /// List retained messages.
    List {
        /// Topic filter (default `#`).
        #[arg(long)]
        filter: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show the retained message of a topic.
    Get { topic: String },
    /// Delete the retained message of a topic.
    Delete { topic: String },
}

#[derive(Debug, Subcommand)]
pub enum LimitsCommand {
    /// Show the plan limits.
    Get,
    /// Change some limits (the others keep their values): `aviary limits set
    /// max_connections=1000 connect_rate=50`.
    Set {
        /// `field=value` pairs.
        #[arg(required = true)]
        changes: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// List API keys.
    List,
    /// Create an API key (shown once).
    Create { name: String },
    /// Revoke an API key.
    Revoke { id: String },
}

/// Runs `command` against the API; prints the result or the error.
pub fn run(api: &ApiArgs, command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("aviary: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let client = ApiClient::new(&api.url, api.api_key.clone());
    match runtime.block_on(execute(&client, api.json, command)) {
        Ok(output) => {
            if !output.is_empty() {
                println!("{output}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("aviary: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// A query string from the options that are set.
fn query(pairs: &[(&str, Option<String>)]) -> String {
    let set: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", segment(v))))
        .collect();
    if set.is_empty() {
        String::new()
    } else {
        format!("?{}", set.join("&"))
    }
}

/// Prints `value` as pretty JSON.
fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// One object as `key: value` lines.
fn fields(value: &Value) -> String {
    value.as_object().map_or_else(
        || pretty(value),
        |o| {
            o.iter()
                .filter(|(_, v)| {
                    !v.is_array()
                        || v.as_array()
                            .is_some_and(|a| a.iter().all(|x| !x.is_object()))
                })
                .map(|(k, v)| format!("{k}: {}", table::cell(v)))
                .collect::<Vec<_>>()
                .join("\n")
        },
    )
}

const CLIENT_COLUMNS: &[(&str, &str)] = &[
    ("CLIENT ID", "client_id"),
    ("USERNAME", "username"),
    ("LISTENER", "listener"),
    ("PROTOCOL", "protocol"),
    ("ADDRESS", "address"),
    ("SUBS", "subscriptions"),
    ("INFLIGHT", "inflight"),
    ("QUEUED", "queued"),
    ("UNITS", "units"),
];

const LISTENER_COLUMNS: &[(&str, &str)] = &[
    ("NAME", "name"),
    ("KIND", "kind"),
    ("BIND", "bind"),
    ("ENABLED", "enabled"),
    ("ADDRESS", "address"),
    ("CLIENTS", "clients"),
    ("ALLOW", "allow"),
    ("X509", "x509_mode"),
];

async fn execute(api: &ApiClient, as_json: bool, command: Command) -> Result<String, CliError> {
    // What to print: the JSON, or the readable form built from it.
    let show = |value: Value, readable: &dyn Fn(&Value) -> String| {
        if as_json {
            pretty(&value)
        } else {
            readable(&value)
        }
    };
    let done = |value: Value, text: String| if as_json { pretty(&value) } else { text };
    match command {
        Command::Client(c) => match c {
            ClientCommand::List {
                client_id,
                username,
                listener,
                protocol,
                offset,
                limit,
            } => {
                let q = query(&[
                    ("client_id", client_id),
                    ("username", username),
                    ("listener", listener),
                    ("protocol", protocol),
                    ("offset", offset.map(|o| o.to_string())),
                    ("limit", limit.map(|l| l.to_string())),
                ]);
                let page = api
                    .call(Method::GET, &format!("/api/v1/clients{q}"), None)
                    .await?;
                Ok(show(page, &|p| {
                    let rows = p["clients"].as_array().cloned().unwrap_or_default();
                    format!(
                        "{}\n({} of {} clients)",
                        render(CLIENT_COLUMNS, &rows),
                        rows.len(),
                        p["total"]
                    )
                }))
            }
            ClientCommand::Show { client_id } => {
                let path = format!("/api/v1/clients/{}", segment(&client_id));
                let detail = api.call(Method::GET, &path, None).await?;
                Ok(show(detail, &|d| {
                    let subs = d["subscription_list"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    format!(
                        "{}\n\n{}",
                        fields(d),
                        render(&[("FILTER", "filter"), ("QOS", "qos")], &subs)
                    )
                }))
            }
            ClientCommand::Kick { client_id } => {
                let path = format!("/api/v1/clients/{}", segment(&client_id));
                let v = api.call(Method::DELETE, &path, None).await?;
                Ok(done(v, format!("disconnected {client_id}")))
            }
            ClientCommand::Subscribe {
                client_id,
                filter,
                qos,
            } => {
                let path = format!("/api/v1/clients/{}/subscriptions", segment(&client_id));
                let body = json!({"filter": filter, "qos": qos});
                let v = api.call(Method::POST, &path, Some(&body)).await?;
                Ok(done(v, format!("subscribed {client_id} to {filter}")))
            }
            ClientCommand::Unsubscribe { client_id, filter } => {
                let path = format!(
                    "/api/v1/clients/{}/subscriptions?filter={}",
                    segment(&client_id),
                    segment(&filter)
                );
                let v = api.call(Method::DELETE, &path, None).await?;
                Ok(done(v, format!("unsubscribed {client_id} from {filter}")))
            }
        },
        Command::Listener(l) => listener(api, as_json, l).await,
        Command::Retained(r) => match r {
            RetainedCommand::List { filter, limit } => {
                let q = query(&[("filter", filter), ("limit", limit.map(|l| l.to_string()))]);
                let list = api
                    .call(Method::GET, &format!("/api/v1/retained{q}"), None)
                    .await?;
                Ok(show(list, &|l| {
                    let rows = l.as_array().cloned().unwrap_or_default();
                    render(
                        &[("TOPIC", "topic"), ("QOS", "qos"), ("PAYLOAD", "payload")],
                        &rows,
                    )
                }))
            }
            RetainedCommand::Get { topic } => {
                let path = format!("/api/v1/retained/{}", segment(&topic));
                let m = api.call(Method::GET, &path, None).await?;
                Ok(show(m, &fields))
            }
            RetainedCommand::Delete { topic } => {
                let path = format!("/api/v1/retained/{}", segment(&topic));
                let v = api.call(Method::DELETE, &path, None).await?;
                Ok(done(v, format!("deleted the retained message on {topic}")))
            }
        },
        Command::Publish {
            topic,
            payload,
            qos,
            retain,
        } => {
            let body = json!({"topic": topic, "payload": payload.unwrap_or_default(), "qos": qos, "retain": retain});
            let v = api
                .call(Method::POST, "/api/v1/publish", Some(&body))
                .await?;
            let matched = v["matched"].as_bool().unwrap_or(false);
            let text = if matched {
                format!("published to {topic}")
            } else {
                format!("published to {topic} (no subscriber matched)")
            };
            Ok(done(v, text))
        }
        Command::Shared => {
            let groups = api
                .call(Method::GET, "/api/v1/shared-subscriptions", None)
                .await?;
            Ok(show(groups, &|g| {
                let rows = g.as_array().cloned().unwrap_or_default();
                render(
                    &[
                        ("GROUP", "group"),
                        ("FILTER", "filter"),
                        ("MEMBERS", "members"),
                        ("BACKLOG", "backlog"),
                    ],
                    &rows,
                )
            }))
        }
        Command::Stats => {
            let stats = api.call(Method::GET, "/api/v1/stats", None).await?;
            Ok(show(stats, &fields))
        }
        Command::Limits(LimitsCommand::Get) => {
            let limits = api.call(Method::GET, "/api/v1/limits", None).await?;
            Ok(show(limits, &fields))
        }
        Command::Limits(LimitsCommand::Set { changes }) => {
            let mut limits = api.call(Method::GET, "/api/v1/limits", None).await?;
            let object = limits
                .as_object_mut()
                .ok_or_else(|| CliError::Usage("the API sent no limits object".into()))?;
            apply_changes(object, &changes)?;
            let updated = api
                .call(Method::PUT, "/api/v1/limits", Some(&limits))
                .await?;
            Ok(show(updated, &fields))
        }
        Command::Usage {
            client,
            listener,
            user,
        } => {
            let scoped = client
                .map(|c| ("client", c))
                .or(listener.map(|l| ("listener", l)))
                .or(user.map(|u| ("user", u)));
            if let Some((scope, name)) = scoped {
                let path = format!("/api/v1/usage/{scope}/{}", segment(&name));
                let series = api.call(Method::GET, &path, None).await?;
                return Ok(show(series, &|s| {
                    let minutes = s["per_minute"].as_array().cloned().unwrap_or_default();
                    format!(
                        "total: {}\nper second: {}\n\n{}",
                        s["total"],
                        s["per_second"],
                        render(&[("MINUTE", "minute"), ("UNITS", "units")], &minutes)
                    )
                }));
            }
            let usage = api.call(Method::GET, "/api/v1/usage", None).await?;
            Ok(show(usage, &usage_summary))
        }
        Command::User(c) => security::user(api, as_json, c).await,
        Command::Policy(c) => security::policy(api, as_json, c).await,
        Command::Device(c) => security::device(api, as_json, c).await,
        Command::Ca(c) => security::ca(api, as_json, c).await,
        Command::Cert(c) => security::cert(api, as_json, c).await,
        Command::Auth(c) => security::auth(api, as_json, c).await,
        Command::Health => {
            let live = api.call(Method::GET, "/api/v1/health", None).await?;
            let ready = api.call(Method::GET, "/api/v1/ready", None).await?;
            let both = json!({"health": live["status"], "ready": ready["status"]});
            Ok(show(both, &fields))
        }
        Command::ApiKey(k) => match k {
            ApiKeyCommand::List => {
                let keys = api.call(Method::GET, "/api/v1/api-keys", None).await?;
                Ok(show(keys, &|k| {
                    let rows = k.as_array().cloned().unwrap_or_default();
                    render(
                        &[
                            ("ID", "id"),
                            ("NAME", "name"),
                            ("PREFIX", "prefix"),
                            ("CREATED", "created"),
                        ],
                        &rows,
                    )
                }))
            }
            ApiKeyCommand::Create { name } => {
                let body = json!({ "name": name });
                let created = api
                    .call(Method::POST, "/api/v1/api-keys", Some(&body))
                    .await?;
                Ok(show(created, &|c| {
                    format!(
                        "id: {}\nkey: {}\n(keep the key: it is not shown again)",
                        table::cell(&c["id"]),
                        table::cell(&c["key"])
                    )
                }))
            }
            ApiKeyCommand::Revoke { id } => {
                let path = format!("/api/v1/api-keys/{}", segment(&id));
                let v = api.call(Method::DELETE, &path, None).await?;
                Ok(done(v, format!("revoked {id}")))
            }
        },
    }
}

async fn listener(
    api: &ApiClient,
    as_json: bool,
    command: ListenerCommand,
) -> Result<String, CliError> {
    let one = |v: Value| {
        if as_json {
            pretty(&v)
        } else {
            render(LISTENER_COLUMNS, &[v])
        }
    };
    let patch = |name: &str, body: Value| {
        let path = format!("/api/v1/listeners/{}", segment(name));
        async move { api.call(Method::PATCH, &path, Some(&body)).await }
    };
    match command {
        ListenerCommand::List => {
            let list = api.call(Method::GET, "/api/v1/listeners", None).await?;
            if as_json {
                return Ok(pretty(&list));
            }
            Ok(render(
                LISTENER_COLUMNS,
                list.as_array().map_or(&[][..], Vec::as_slice),
            ))
        }
        ListenerCommand::Show { name } => {
            let path = format!("/api/v1/listeners/{}", segment(&name));
            Ok(one(api.call(Method::GET, &path, None).await?))
        }
        ListenerCommand::Create {
            name,
            kind,
            bind,
            disabled,
            allow,
            cert,
            key,
            x509_mode,
        } => {
            let mut body = json!({"name": name, "kind": kind, "bind": bind, "enabled": !disabled, "allow": allow});
            for (field, value) in [("cert", cert), ("key", key), ("x509_mode", x509_mode)] {
                if let Some(value) = value {
                    body[field] = Value::String(value);
                }
            }
            Ok(one(api
                .call(Method::POST, "/api/v1/listeners", Some(&body))
                .await?))
        }
        ListenerCommand::Certificate { name, cert, key } => {
            let mut body = json!({});
            for (field, value) in [("cert", cert), ("key", key)] {
                if let Some(value) = value {
                    body[field] = Value::String(value);
                }
            }
            Ok(one(patch(&name, body).await?))
        }
        ListenerCommand::Enable { name } => Ok(one(patch(&name, json!({"enabled": true})).await?)),
        ListenerCommand::Disable { name } => {
            Ok(one(patch(&name, json!({"enabled": false})).await?))
        }
        ListenerCommand::Allow { name, networks } => {
            Ok(one(patch(&name, json!({ "allow": networks })).await?))
        }
        ListenerCommand::Delete { name } => {
            let path = format!("/api/v1/listeners/{}", segment(&name));
            let v = api.call(Method::DELETE, &path, None).await?;
            Ok(if as_json {
                pretty(&v)
            } else {
                format!("deleted listener {name}")
            })
        }
    }
}

/// Applies `field=value` changes to the limits object; unknown fields and non-numbers are
/// refused here, naming them.
fn apply_changes(limits: &mut Map<String, Value>, changes: &[String]) -> Result<(), CliError> {
    for change in changes {
        let Some((field, value)) = change.split_once('=') else {
            return Err(CliError::Usage(format!(
                "expected field=value, got {change:?}"
            )));
        };
        let field = field.trim();
        if !limits.contains_key(field) {
            let known: Vec<&str> = limits.keys().map(String::as_str).collect();
            return Err(CliError::Usage(format!(
                "unknown limit {field:?}; known: {}",
                known.join(", ")
            )));
        }
        let number: u64 = value.trim().parse().map_err(|_| {
            CliError::Usage(format!("{field}: expected a whole number, got {value:?}"))
        })?;
        limits.insert(field.to_owned(), json!(number));
    }
    Ok(())
}

/// The usage report as text: totals and rates per scope.
fn usage_summary(u: &Value) -> String {
    let mut out = format!(
        "total: {} units, {} units/s now",
        u["total"]["total"], u["total"]["per_second"]
    );
    for (title, key) in [
        ("LISTENER", "listeners"),
        ("USER", "users"),
        ("CLIENT", "clients"),
    ] {
        let rows: Vec<Value> = u[key]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(name, s)| json!({"name": name, "total": s["total"], "per_second": s["per_second"]}))
                    .collect()
            })
            .unwrap_or_default();
        if !rows.is_empty() {
            out.push_str("\n\n");
            out.push_str(&render(
                &[
                    (title, "name"),
                    ("UNITS", "total"),
                    ("UNITS/S", "per_second"),
                ],
                &rows,
            ));
        }
    }
    out
}
