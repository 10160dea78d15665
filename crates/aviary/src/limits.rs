//! The plan's limits (`/api/v1/limits`): what a customer's plan allows, changed at runtime
//! and applied at once. Connections, subscriptions per session and message size go to the
//! core (refusals carry the reason codes: CONNACK 0x97 quota exceeded / 3.x 0x03, SUBACK
//! 0x97 / 0x80) and to the connection drivers (the packet size checked while decoding);
//! the rates go to [`crate::rates`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

use aviary_core::{BrokerConfig, RuntimeLimits};

use crate::config::LimitsConfig;
use crate::rates::Rates;

/// The limits of a plan.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanLimits {
    /// Connected clients at most; more get CONNACK 0x97 (5.0) / 0x03 (3.x).
    pub(crate) max_connections: u32,
    /// Weighted units per second, as metered (messages received and delivered, connects,
    /// disconnects, wills; see the usage metering); over it, publishers' reads pause.
    /// 4294967295 (the default): no limit.
    pub(crate) max_messages_per_second: u32,
    /// Subscriptions per session; more are refused in SUBACK (0x97 / 0x80).
    pub(crate) max_subscriptions_per_session: u32,
    /// SUBSCRIBE packets per second, broker-wide.
    pub(crate) subscribe_rate: u32,
    /// UNSUBSCRIBE packets per second, broker-wide.
    pub(crate) unsubscribe_rate: u32,
    /// CONNECTs per second, broker-wide; more get CONNACK 0x9F (5.0).
    pub(crate) connect_rate: u32,
    /// CONNECTs carrying a will per second.
    pub(crate) will_connect_rate: u32,
    /// Retained messages at most.
    pub(crate) max_retained: u32,
    /// Largest MQTT packet accepted, bytes.
    pub(crate) max_message_size: u32,
}

impl PlanLimits {
    /// The defaults for a broker configured with `mqtt`: its connection, subscription and
    /// size limits; rates of max(100, connections / 100) per second; wills 100/s.
    #[cfg(test)]
    pub(crate) fn defaults(mqtt: &BrokerConfig) -> Self {
        Self::from_config(mqtt, &LimitsConfig::default())
    }

    /// The defaults, with what the config's `[limits]` section sets.
    pub(crate) fn from_config(mqtt: &BrokerConfig, config: &LimitsConfig) -> Self {
        let connections = u32::try_from(mqtt.max_connections).unwrap_or(u32::MAX);
        let rate = (connections / 100).max(100);
        Self {
            max_connections: connections,
            max_messages_per_second: config.max_messages_per_second.unwrap_or(u32::MAX),
            max_subscriptions_per_session: u32::try_from(mqtt.max_subscriptions_per_session)
                .unwrap_or(u32::MAX),
            subscribe_rate: config.subscribe_rate.unwrap_or(rate),
            unsubscribe_rate: config.unsubscribe_rate.unwrap_or(rate),
            connect_rate: config.connect_rate.unwrap_or(rate),
            will_connect_rate: config.will_connect_rate.unwrap_or(100),
            max_retained: config.max_retained.unwrap_or(1_000_000),
            max_message_size: mqtt.max_packet_size,
        }
    }

    /// The first field out of range, with why.
    pub(crate) fn check(&self) -> Result<(), (&'static str, &'static str)> {
        let positive = [
            ("max_connections", self.max_connections),
            ("max_messages_per_second", self.max_messages_per_second),
            ("subscribe_rate", self.subscribe_rate),
            ("unsubscribe_rate", self.unsubscribe_rate),
            ("connect_rate", self.connect_rate),
            ("will_connect_rate", self.will_connect_rate),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err((field, "must be at least 1"));
            }
        }
        if !(16..=268_435_455).contains(&self.max_message_size) {
            return Err((
                "max_message_size",
                "must be 16..=268435455 (the MQTT maximum)",
            ));
        }
        Ok(())
    }

    /// The part the core applies.
    pub(crate) fn runtime(&self) -> RuntimeLimits {
        RuntimeLimits {
            max_connections: self.max_connections as usize,
            max_subscriptions_per_session: self.max_subscriptions_per_session as usize,
            max_packet_size: self.max_message_size,
            max_retained: self.max_retained as usize,
        }
    }
}

/// The limits in force, shared by the API and the connection drivers.
#[derive(Debug)]
pub(crate) struct PlanLimitsState {
    /// The whole plan (a std lock held for a copy).
    current: RwLock<PlanLimits>,
    /// The packet size limit every connection driver reads while decoding.
    pub(crate) max_packet_size: Arc<AtomicU32>,
    /// The rate limits (connection readers and the broker task use them).
    pub(crate) rates: Arc<Rates>,
}

impl PlanLimitsState {
    pub(crate) fn new(limits: PlanLimits) -> Self {
        Self {
            current: RwLock::new(limits),
            max_packet_size: Arc::new(AtomicU32::new(limits.max_message_size)),
            rates: Arc::new(Rates::new(&limits)),
        }
    }

    /// The limits in force.
    pub(crate) fn get(&self) -> PlanLimits {
        *self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the limits (the caller also hands [`PlanLimits::runtime`] to the core).
    pub(crate) fn set(&self, limits: PlanLimits) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = limits;
        self.max_packet_size
            .store(limits.max_message_size, Ordering::Relaxed);
        self.rates.set(&limits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rates_follow_the_connection_limit() {
        let mut mqtt = BrokerConfig {
            max_connections: 1_000_000,
            ..BrokerConfig::default()
        };
        let limits = PlanLimits::defaults(&mqtt);
        assert_eq!(limits.connect_rate, 10_000);
        mqtt.max_connections = 500;
        assert_eq!(PlanLimits::defaults(&mqtt).connect_rate, 100);
        assert_eq!(
            PlanLimits::defaults(&mqtt).max_subscriptions_per_session,
            30
        );
        assert!(limits.check().is_ok());
    }

    #[test]
    fn the_config_sets_the_initial_plan() {
        let config = LimitsConfig {
            connect_rate: Some(7),
            max_retained: Some(0),
            ..LimitsConfig::default()
        };
        let limits = PlanLimits::from_config(&BrokerConfig::default(), &config);
        assert_eq!((limits.connect_rate, limits.subscribe_rate), (7, 1000));
        assert_eq!(limits.max_retained, 0);
        assert_eq!(limits.max_messages_per_second, u32::MAX);
    }
}
