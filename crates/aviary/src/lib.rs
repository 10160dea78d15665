//! The Aviary server: the tokio I/O shell around `aviary-core`, configuration and CLI.

pub mod config;

pub use config::Config;
