//! The Aviary server: the tokio I/O shell around `aviary-core`, its configuration and the
//! `aviary` binary's entry points.
//!
//! [`start`] binds the MQTT listeners and the management API and returns a [`RunningServer`] at once; [`run`] runs
//! one until a shutdown future completes. Inside, one task owns the sans-IO broker
//! (`broker_task`), one accepts connections (`listener`), and one task per connection
//! reads, decodes, encodes and writes (`connection`), with a bounded `outbox` from the
//! broker to each connection.

mod api;
pub mod auth;
mod batch;
mod broker_task;
pub mod cli;
pub mod config;
mod connection;
pub mod descriptors;
mod direct_reads;
mod limits;
mod listener;
pub mod memory;
mod metrics;
mod outbox;
mod outgoing;
mod parking;
mod rates;
mod records;
pub mod security;
mod server;
mod sharded;
pub mod store;
pub mod tls;
mod transport;
mod usage;
mod wake_gate;

pub use config::Config;
pub use server::{run, start, RunningServer};
