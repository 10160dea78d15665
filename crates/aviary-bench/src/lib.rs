//! `aviary-bench`: a load generator for MQTT brokers on loopback, and side-by-side runs of
//! Aviary and Mosquitto.
//!
//! Code map:
//! * [`client`]: a minimal MQTT client on `aviary_codec` over tokio TCP (pipelined
//!   publishing with our own in-flight window, acknowledging subscriber);
//! * [`payload`]: the 16-byte stamp (publisher, sequence, send time) in every message;
//! * [`stats`]: latency histogram and per-publisher sequence tracking (loss, duplicates);
//! * [`scenario`]: the scenarios of issue 6 and the run procedure;
//! * [`procstat`]: broker CPU and memory from /proc;
//! * [`report`]: the run's figures as a table and as JSON;
//! * [`brokers`] and [`compare`]: start Aviary and Mosquitto with equivalent configs and
//!   run a scenario against both, alternating.
//!
//! Deliberately absent: any traffic to a non-loopback address; unbounded waits (every
//! phase has a deadline).

pub mod brokers;
pub mod cli;
pub mod client;
pub mod compare;
pub mod payload;
pub mod procstat;
pub mod report;
pub mod scenario;
pub mod stats;
