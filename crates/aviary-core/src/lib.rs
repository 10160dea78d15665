//! Aviary's broker logic without I/O: connection protocol state machines, sessions, the
//! subscription index with shared groups, retained messages, QoS flows, limits.
//!
//! The I/O shell feeds a [`Broker`] with `handle_*` calls and drains its output:
//!
//! 1. for each new transport connection, [`Broker::handle_open`];
//! 2. for each decoded packet, [`Broker::handle_packet`]; for bytes that would not decode,
//!    [`Broker::handle_decode_error`]; when the transport is gone, [`Broker::handle_closed`];
//! 3. when [`Broker::poll_timeout`]'s instant has passed, [`Broker::handle_timeout`];
//! 4. after any of these, [`Broker::poll_transmit`] until it returns `None`, writing each
//!    packet to its connection (in order) and closing connections when told; with
//!    [`BrokerConfig::emit_events`], also [`Broker::poll_event`] until `None`.
//!
//! After a `Transmit::Close` the broker has forgotten the connection: the shell need not
//! (but may) call `handle_closed` for it. The management side uses [`Broker::stats`],
//! [`Broker::clients`], [`Broker::publish`] and [`Broker::disconnect_client`].
//!
//! Time is always an argument (`now`); nothing here reads a clock, spawns or blocks.

pub mod authz;
mod broker;
pub mod retained;
pub mod topic_index;

pub use broker::{
    Broker, BrokerConfig, BrokerStats, ClientCounters, ClientInfo, ConnId, DropStats, EndReason,
    Event, IdMap, ManageError, QueueOverflow, RetainedInfo, RuntimeLimits, SharedGroupInfo,
    SubscriptionInfo, Transmit,
};
pub use broker::{
    DeliveryState, Message, PersistedDelivery, PersistedSession, PersistedSubscription, Restore,
    RestoredDelivery, RestoredSession, StoreOp,
};
