//! Usage metering over time: the weighted units the core counts (DESIGN.md, "Usage
//! metering"), kept per second and per minute for the last 24 hours, in total and per
//! listener, user and client. Fed by the broker task once per tick with exact deltas of
//! the core's counters, so nothing is sampled: every unit lands in exactly one minute.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

/// Minutes of history kept (24 hours).
pub(crate) const MINUTES_KEPT: u64 = 24 * 60;

/// Units of one minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct MinuteUnits {
    /// Start of the minute, seconds since the Unix epoch.
    pub(crate) minute: u64,
    /// Units counted in it.
    pub(crate) units: u64,
}

/// The usage of one thing (the whole broker, a listener, a user, a client).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Series {
    /// Units since the broker started.
    pub(crate) total: u64,
    /// The second (Unix) of the last recorded units and the units counted in it.
    current_second: (u64, u64),
    /// Units of the last complete second.
    last_second: (u64, u64),
    /// Minutes with units, oldest first, at most [`MINUTES_KEPT`] of them.
    minutes: VecDeque<MinuteUnits>,
}

impl Series {
    /// Adds `units` counted in second `now` (Unix seconds; never decreasing).
    fn add(&mut self, now: u64, units: u64) {
        if units == 0 {
            return;
        }
        self.total += units;
        if self.current_second.0 != now {
            self.last_second = self.current_second;
            self.current_second = (now, 0);
        }
        self.current_second.1 += units;
        let minute = now - now % 60;
        match self.minutes.back_mut() {
            Some(last) if last.minute == minute => last.units += units,
            _ => {
                if self.minutes.capacity() == 0 {
                    // Most clients have units in a minute or two only (an idle connection:
                    // its CONNECT); room for one rather than the default four keeps that
                    // small. Later growth doubles as usual.
                    self.minutes.reserve_exact(1);
                }
                self.minutes.push_back(MinuteUnits { minute, units });
            }
        }
        self.prune(now);
    }

    /// Forgets minutes older than 24 hours before `now`.
    fn prune(&mut self, now: u64) {
        while self
            .minutes
            .front()
            .is_some_and(|m| m.minute + MINUTES_KEPT * 60 <= now)
        {
            self.minutes.pop_front();
        }
    }

    /// Units per second "now": those of second `now - 1` (the last complete second).
    pub(crate) fn per_second(&self, now: u64) -> u64 {
        let prev = now.saturating_sub(1);
        if self.current_second.0 == prev {
            self.current_second.1
        } else if self.last_second.0 == prev {
            self.last_second.1
        } else {
            0
        }
    }

    /// The minutes with units in the last 24 hours, oldest first.
    pub(crate) fn minutes(&self) -> impl Iterator<Item = MinuteUnits> + '_ {
        self.minutes.iter().copied()
    }

    /// Whether nothing was counted in the last 24 hours before `now`.
    fn is_stale(&self, now: u64) -> bool {
        self.minutes
            .back()
            .is_none_or(|m| m.minute + MINUTES_KEPT * 60 <= now)
    }
}

/// All usage series of one broker.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    /// The whole broker (includes will messages, which belong to no live connection).
    pub(crate) total: Series,
    /// By listener name.
    pub(crate) listeners: HashMap<String, Series>,
    /// By username (clients without one are not in this map).
    pub(crate) users: HashMap<String, Series>,
    /// By client id.
    pub(crate) clients: HashMap<String, Series>,
}

/// Whose units a delta is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Owner<'a> {
    pub(crate) listener: &'a str,
    pub(crate) user: Option<&'a str>,
    pub(crate) client: &'a str,
}

impl Usage {
    /// Adds units to the broker total only (wills, whose connection is gone).
    pub(crate) fn add_total(&mut self, now: u64, units: u64) {
        self.total.add(now, units);
    }

    /// Adds units of one connection (not to the total: that comes from the core's counter
    /// through [`Usage::add_total`]).
    pub(crate) fn add(&mut self, now: u64, owner: Owner<'_>, units: u64) {
        self.add_listener(now, owner.listener, units);
        self.add_user_and_client(now, owner.user, owner.client, units);
    }

    /// Adds units to a listener only. The once-a-second attribution sums its connections'
    /// units per listener first and adds each sum once: with 10,000 active clients that
    /// is one lookup per listener instead of 10,000 (the tick stalls the broker task).
    pub(crate) fn add_listener(&mut self, now: u64, listener: &str, units: u64) {
        if units > 0 {
            entry(&mut self.listeners, listener).add(now, units);
        }
    }

    /// Adds units of one connection to its user (if any) and client, not to its listener
    /// (see [`Usage::add_listener`]).
    pub(crate) fn add_user_and_client(
        &mut self,
        now: u64,
        user: Option<&str>,
        client: &str,
        units: u64,
    ) {
        if units == 0 {
            return;
        }
        if let Some(user) = user {
            entry(&mut self.users, user).add(now, units);
        }
        entry(&mut self.clients, client).add(now, units);
    }

    /// Drops the series with no units in the last 24 hours (called now and then, so
    /// client churn cannot grow the maps without bound).
    pub(crate) fn prune(&mut self, now: u64) {
        for map in [&mut self.listeners, &mut self.users, &mut self.clients] {
            map.retain(|_, s| {
                s.prune(now);
                !s.is_stale(now)
            });
        }
        self.total.prune(now);
    }
}

/// The series of `key`, created on first use.
fn entry<'m>(map: &'m mut HashMap<String, Series>, key: &str) -> &'m mut Series {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), Series::default());
    }
    // Just inserted if it was missing.
    map.get_mut(key).unwrap_or_else(|| unreachable!())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_land_in_their_minute_and_second() {
        let mut s = Series::default();
        s.add(120, 3);
        s.add(121, 2);
        s.add(121, 1);
        s.add(185, 4);
        assert_eq!(s.total, 10);
        let minutes: Vec<_> = s.minutes().map(|m| (m.minute, m.units)).collect();
        assert_eq!(minutes, vec![(120, 6), (180, 4)]);
        assert_eq!(s.per_second(122), 3);
        assert_eq!(s.per_second(186), 4);
        assert_eq!(s.per_second(190), 0);
    }

    #[test]
    fn history_keeps_24_hours() {
        let mut s = Series::default();
        s.add(0, 1);
        s.add(MINUTES_KEPT * 60, 1);
        assert_eq!(s.minutes().count(), 1, "minute 0 is older than 24 h");
        assert_eq!(s.total, 2);
    }

    #[test]
    fn owners_get_their_units_and_stale_series_go() {
        let mut usage = Usage::default();
        let owner = Owner {
            listener: "default",
            user: Some("u"),
            client: "c",
        };
        usage.add(60, owner, 5);
        usage.add(
            61,
            Owner {
                user: None,
                client: "d",
                ..owner
            },
            2,
        );
        assert_eq!(usage.listeners["default"].total, 7);
        assert_eq!(usage.users["u"].total, 5);
        assert_eq!(usage.clients["d"].total, 2);
        usage.prune(60 + MINUTES_KEPT * 60 + 61);
        assert!(usage.clients.is_empty());
    }
}
