//! Usage metering over time: the weighted units the core counts (DESIGN.md, "Usage
//! metering"), kept per second and per minute for the last 24 hours, in total and per
//! listener, user and client. Fed by the broker task once per tick with exact deltas of
//! the core's counters, so nothing is sampled: every unit lands in exactly one minute.
//!
//! Memory is bounded: minutes are sparse (only minutes with units, 8 bytes each, the
//! current one inline in its [`Series`]), series
//! with no units for 24 hours go, and at most [`MAX_CLIENTS`] client ids are tracked. When
//! connect churn brings more, the least recently active tenth of the clients is folded into
//! [`Usage::evicted`]: their totals stay counted there (so the clients' totals plus the
//! evicted total always equal what the clients used), their per-client history is dropped,
//! and a client that comes back starts a new series. The total, listener and user series
//! are never evicted and stay exact.
//!
//! A series active within the last [`PROTECTED_SECS`] is never evicted: with more clients
//! active at once than the bound (a fleet larger than it, every device publishing), a
//! newcomer is then counted in [`Usage::evicted`]'s total without a series of its own,
//! rather than every series being dropped and made again each second (which made per-client
//! history meaningless and stalled the broker task for a scan of the map each time).

use std::sync::Arc;

use serde::Serialize;

use crate::sharded::Sharded;

/// Minutes of history kept (24 hours).
pub(crate) const MINUTES_KEPT: u64 = 24 * 60;

/// Client ids tracked at most (see the module doc).
pub(crate) const MAX_CLIENTS: usize = 10_000;

/// Seconds since its last units within which a client series is never evicted.
pub(crate) const PROTECTED_SECS: u64 = 60;

/// Units of one minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct MinuteUnits {
    /// Start of the minute, seconds since the Unix epoch.
    pub(crate) minute: u64,
    /// Units counted in it.
    pub(crate) units: u64,
}

/// One minute with units, compact: the minute's number since the Unix epoch and its units
/// (saturating at `u32::MAX`, some 71 million units per second for a whole minute; the
/// series' total is exact regardless).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Minute {
    number: u32,
    units: u32,
}

/// The usage of one thing (the whole broker, a listener, a user, a client). 48 bytes, and
/// nothing allocated until it has units in a second minute: there is one per client id
/// (up to [`MAX_CLIENTS`]), and most of an idle fleet's clients only ever count their
/// CONNECT. Seconds are Unix seconds in a `u32` (until 2106) and per-second and per-minute
/// units saturate at `u32::MAX`; the total is exact.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Series {
    /// Units since the broker started.
    pub(crate) total: u64,
    /// The second (Unix) of the last recorded units and the units counted in it.
    current_second: (u32, u32),
    /// Units of the last complete second.
    last_second: (u32, u32),
    /// Units of the minute of `current_second` (0: none within the last 24 hours).
    current_minute: u32,
    /// Earlier minutes with units, oldest first, within the last 24 hours.
    earlier: Box<[Minute]>,
}

/// The minute number of Unix second `second` (saturating far in the future).
fn minute_number(second: u64) -> u32 {
    u32::try_from(second / 60).unwrap_or(u32::MAX)
}

/// Unix second `now` in 32 bits (saturating in 2106).
fn second_of(now: u64) -> u32 {
    u32::try_from(now).unwrap_or(u32::MAX)
}

/// `units` in 32 bits, saturating.
fn small(units: u64) -> u32 {
    u32::try_from(units).unwrap_or(u32::MAX)
}

impl Series {
    /// Adds `units` counted in second `now` (Unix seconds; never decreasing).
    fn add(&mut self, now: u64, units: u64) {
        if units == 0 {
            return;
        }
        self.total += units;
        let second = second_of(now);
        if self.current_second.0 != second {
            let previous = minute_number(self.current_second.0.into());
            if previous != minute_number(now) {
                if self.current_minute > 0 {
                    // A new minute: the previous one joins the earlier ones (one
                    // allocation per minute with units).
                    let mut earlier = Vec::with_capacity(self.earlier.len() + 1);
                    earlier.extend_from_slice(&self.earlier);
                    earlier.push(Minute {
                        number: previous,
                        units: self.current_minute,
                    });
                    self.earlier = earlier.into_boxed_slice();
                }
                self.current_minute = 0;
            }
            self.last_second = self.current_second;
            self.current_second = (second, 0);
        }
        self.current_second.1 = self.current_second.1.saturating_add(small(units));
        self.current_minute = self.current_minute.saturating_add(small(units));
        self.prune(now);
    }

    /// Forgets minutes older than 24 hours before `now`.
    fn prune(&mut self, now: u64) {
        let oldest_kept = (now / 60).saturating_sub(MINUTES_KEPT - 1);
        let stale = self
            .earlier
            .iter()
            .take_while(|m| u64::from(m.number) < oldest_kept)
            .count();
        if stale > 0 {
            self.earlier = self.earlier[stale..].into();
        }
        if u64::from(minute_number(self.current_second.0.into())) < oldest_kept {
            self.current_minute = 0;
        }
    }

    /// Units per second "now": those of second `now - 1` (the last complete second).
    pub(crate) fn per_second(&self, now: u64) -> u64 {
        let prev = now.saturating_sub(1);
        let units = if u64::from(self.current_second.0) == prev {
            self.current_second.1
        } else if u64::from(self.last_second.0) == prev {
            self.last_second.1
        } else {
            0
        };
        units.into()
    }

    /// The minutes with units in the last 24 hours, oldest first.
    pub(crate) fn minutes(&self) -> impl Iterator<Item = MinuteUnits> + '_ {
        let current = (self.current_minute > 0).then(|| Minute {
            number: minute_number(self.current_second.0.into()),
            units: self.current_minute,
        });
        self.earlier
            .iter()
            .copied()
            .chain(current)
            .map(|m| MinuteUnits {
                minute: u64::from(m.number) * 60,
                units: u64::from(m.units),
            })
    }

    /// The Unix second of the last units (0: none yet).
    fn last_active(&self) -> u64 {
        self.current_second.0.into()
    }

    /// Whether nothing was counted in the last 24 hours before `now`.
    fn is_stale(&self, now: u64) -> bool {
        self.last_active() + MINUTES_KEPT * 60 <= now
    }
}

/// What was folded out of the per-client series (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct Evicted {
    /// Client series evicted since the broker started.
    pub(crate) clients: u64,
    /// Their units, and those of clients not tracked because every tracked one was active
    /// within the last minute (part of the listener, user and broker totals as ever).
    pub(crate) total: u64,
}

/// All usage series of one broker.
#[derive(Debug)]
pub(crate) struct Usage {
    /// The whole broker (includes will messages, which belong to no live connection).
    pub(crate) total: Series,
    /// By listener name.
    pub(crate) listeners: Sharded<Series>,
    /// By username (clients without one are not in this map).
    pub(crate) users: Sharded<Series>,
    /// By client id, at most `max_clients` of them (keys shared with the core's client
    /// ids when they come from a connection's counters). Sharded, as the users: a fleet
    /// that starts publishing adds thousands at once.
    pub(crate) clients: Sharded<Series>,
    /// Client series folded away to keep the bound.
    pub(crate) evicted: Evicted,
    /// The bound on `clients` ([`MAX_CLIENTS`]; smaller in tests).
    max_clients: usize,
    /// Before this Unix second no client series can be evicted (a scan found them all
    /// protected): newcomers go untracked without another scan.
    no_room_until: u64,
}

impl Default for Usage {
    fn default() -> Self {
        Self::with_max_clients(MAX_CLIENTS)
    }
}

/// Whose units a delta is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Owner<'a> {
    pub(crate) listener: &'a str,
    pub(crate) user: Option<&'a str>,
    /// Shared with the core (the key of a new client series).
    pub(crate) client: &'a Arc<str>,
}

impl Usage {
    /// Usage tracking at most `max_clients` client ids (at least 10).
    pub(crate) fn with_max_clients(max_clients: usize) -> Self {
        Self {
            total: Series::default(),
            listeners: Sharded::default(),
            users: Sharded::default(),
            clients: Sharded::default(),
            evicted: Evicted::default(),
            max_clients: max_clients.max(10),
            no_room_until: 0,
        }
    }

    /// Adds units to the broker total only (wills, whose connection is gone).
    pub(crate) fn add_total(&mut self, now: u64, units: u64) {
        self.total.add(now, units);
    }

    /// Adds units of one connection (not to the total: that comes from the core's counter
    /// through [`Usage::add_total`]).
    pub(crate) fn add(&mut self, now: u64, owner: Owner<'_>, units: u64) {
        self.add_listener(now, owner.listener, units);
        self.add_user_and_client(now, owner.user, owner.client, units, || {
            Arc::clone(owner.client)
        });
    }

    /// Adds units to a listener only. The once-a-second attribution sums its connections'
    /// units per listener first and adds each sum once: with 10,000 active clients that
    /// is one lookup per listener instead of 10,000 (the tick stalls the broker task).
    pub(crate) fn add_listener(&mut self, now: u64, listener: &str, units: u64) {
        if units > 0 {
            self.listeners.get_or_default(listener).add(now, units);
        }
    }

    /// Adds units of one connection to its user (if any) and client, not to its listener
    /// (see [`Usage::add_listener`]); `key` makes the client's key if it is new.
    pub(crate) fn add_user_and_client(
        &mut self,
        now: u64,
        user: Option<&str>,
        client: &str,
        units: u64,
        key: impl FnOnce() -> Arc<str>,
    ) {
        if units == 0 {
            return;
        }
        if let Some(user) = user {
            self.users.get_or_default(user).add(now, units);
        }
        // One lookup for a known client (this runs for every active client every second).
        if let Some(series) = self.clients.get_mut(client) {
            series.add(now, units);
            return;
        }
        if self.clients.len() >= self.max_clients && !self.make_room(now) {
            // Full of recently active clients: counted, not tracked.
            self.evicted.total += units;
            return;
        }
        let mut series = Series::default();
        series.add(now, units);
        self.clients.insert(key(), series);
    }

    /// Folds the least recently active tenth of the client series into `evicted`, of
    /// those not active within [`PROTECTED_SECS`] (one pass over the map per tenth of the
    /// bound of new clients: amortised constant time); whether any went. When none can go,
    /// no scan is made again before the oldest of them could.
    fn make_room(&mut self, now: u64) -> bool {
        if now < self.no_room_until {
            return false;
        }
        // Ages of the evictable series (their last units a whole protected period ago);
        // no key is copied or looked up again: this runs with the broker's deliveries
        // waiting.
        let mut ages: Vec<u64> = self
            .clients
            .values()
            .map(Series::last_active)
            .filter(|&age| age.saturating_add(PROTECTED_SECS) <= now)
            .collect();
        if ages.is_empty() {
            let oldest = self.clients.values().map(Series::last_active).min();
            self.no_room_until = oldest.unwrap_or(now) + PROTECTED_SECS;
            return false;
        }
        // The age of the count-th least recently active; those older go, and of those
        // that age, as many as make up the count.
        let count = (self.max_clients / 10).clamp(1, ages.len());
        let (older, &mut cutoff, _) = ages.select_nth_unstable(count - 1);
        let mut at_cutoff = count - older.iter().filter(|&&a| a < cutoff).count();
        let evicted = &mut self.evicted;
        self.clients.retain(|_, series| {
            let age = series.last_active();
            let goes = age < cutoff || (age == cutoff && at_cutoff > 0);
            if goes {
                if age == cutoff {
                    at_cutoff -= 1;
                }
                evicted.clients += 1;
                evicted.total += series.total;
            }
            !goes
        });
        true
    }

    /// Drops the series with no units in the last 24 hours (called now and then, so
    /// churn cannot grow the maps without bound).
    pub(crate) fn prune(&mut self, now: u64) {
        for map in [&mut self.listeners, &mut self.users, &mut self.clients] {
            map.retain(|_, s| {
                s.prune(now);
                !s.is_stale(now)
            });
            map.shrink_sparse();
        }
        self.total.prune(now);
    }
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
    fn a_series_is_48_bytes_and_allocates_from_its_second_minute() {
        assert_eq!(std::mem::size_of::<Series>(), 48);
        let mut s = Series::default();
        s.add(600, 1);
        s.add(601, 1);
        assert!(s.earlier.is_empty(), "one minute is held inline");
        s.add(660, 2);
        assert_eq!(s.earlier.len(), 1);
        let minutes: Vec<_> = s.minutes().map(|m| (m.minute, m.units)).collect();
        assert_eq!(minutes, vec![(600, 2), (660, 2)]);
        // 24 hours later without units, pruning leaves no minute.
        s.prune(660 + MINUTES_KEPT * 60);
        assert_eq!(s.minutes().count(), 0);
        assert_eq!(s.total, 4);
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
            client: &"c".into(),
        };
        usage.add(60, owner, 5);
        usage.add(
            61,
            Owner {
                user: None,
                client: &"d".into(),
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

    /// More clients than the bound, all active within the last minute (a fleet larger
    /// than the bound, every device publishing): no series is dropped for a newcomer, which
    /// is counted untracked; once series fall idle, the least recently active tenth goes.
    #[test]
    fn recently_active_clients_keep_their_series_and_newcomers_go_untracked() {
        let mut usage = Usage::with_max_clients(100);
        fn owner(client: &Arc<str>) -> Owner<'_> {
            Owner {
                listener: "l",
                user: None,
                client,
            }
        }
        usage.add(10, owner(&"old".into()), 5);
        for i in 0..99 {
            usage.add(20, owner(&format!("c{i}").into()), 1);
        }
        assert_eq!(usage.clients.len(), 100);
        // Every series is protected: the newcomers are counted, not tracked, and the
        // series stay (again and again: no scan until the oldest could go).
        for second in [20, 21, 40, 69] {
            usage.add(second, owner(&format!("new{second}").into()), 2);
            assert_eq!(usage.clients.len(), 100);
        }
        assert_eq!(
            usage.evicted,
            Evicted {
                clients: 0,
                total: 8
            }
        );
        assert_eq!(usage.no_room_until, 10 + PROTECTED_SECS);
        // A second later "old" is a minute idle: it goes, alone (the others are
        // protected), and the newcomer gets its place.
        usage.add(70, owner(&"late".into()), 3);
        assert!(!usage.clients.contains_key("old"));
        assert_eq!(usage.clients["late"].total, 3);
        assert_eq!(
            usage.evicted,
            Evicted {
                clients: 1,
                total: 8 + 5
            }
        );
        // A minute later all are idle: a tenth goes, the least recently active first.
        usage.add(80, owner(&"c0".into()), 1);
        usage.add(140, owner(&"later".into()), 1);
        assert_eq!(usage.clients.len(), 91, "ten evicted, one added");
        assert_eq!(usage.evicted.clients, 1 + 10);
        assert!(
            usage.clients.contains_key("c0"),
            "the most recently active stays"
        );
        assert!(usage.clients.contains_key("late"));
        let kept: u64 = usage.clients.values().map(|s| s.total).sum();
        assert_eq!(kept + usage.evicted.total, 5 + 99 + 8 + 3 + 1 + 1);
    }

    #[test]
    fn client_churn_stays_bounded_and_totals_stay_exact() {
        const BOUND: usize = 1_000;
        let steady_id: Arc<str> = "steady".into();
        let mut usage = Usage::with_max_clients(BOUND);
        let mut now = 1_000_000;
        let mut sum = 0;
        // A long-lived client active all along, and 50 000 one-off client ids, a few per
        // second, in two users' names.
        for i in 0..50_000u64 {
            if i % 7 == 0 {
                now += 1;
            }
            let id: Arc<str> = format!("churn-{i}").into();
            let user = if i % 2 == 0 { "even" } else { "odd" };
            let owner = Owner {
                listener: "default",
                user: Some(user),
                client: &id,
            };
            usage.add(now, owner, 1 + i % 3);
            let steady = Owner {
                client: &steady_id,
                ..owner
            };
            usage.add(now, steady, 1);
            sum += 1 + i % 3 + 1;
            assert!(
                usage.clients.len() <= BOUND,
                "{} clients",
                usage.clients.len()
            );
        }
        assert_eq!(usage.listeners["default"].total, sum);
        assert_eq!(
            usage.users["even"].total + usage.users["odd"].total,
            sum,
            "users stay exact"
        );
        let kept: u64 = usage.clients.values().map(|s| s.total).sum();
        assert_eq!(kept + usage.evicted.total, sum, "evicted units are folded");
        assert!(usage.evicted.clients >= 49_000);
        // The steady client, active every second, is never the least recently active.
        assert_eq!(usage.clients["steady"].total, 50_000);
        assert!(usage.clients["steady"].minutes().count() <= 2 + 50_000 / 7 / 60);
    }
}
