//! Time as the core sees it.
//!
//! Two clocks enter from the driver: a monotonic [`Timestamp`] that orders
//! every event and drives timers (defined with the engines), and [`WallTime`],
//! the UTC wall clock that stamps messages and JWT claims. The core never
//! reads either clock itself.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A UTC instant, written on the wire as RFC 3339 with a `Z` suffix and only
/// as many fractional digits as it needs (`2025-10-15T10:00:00Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WallTime(DateTime<Utc>);

impl WallTime {
    /// The Unix epoch.
    pub const UNIX_EPOCH: Self = Self(DateTime::UNIX_EPOCH);

    /// The instant this many milliseconds after the Unix epoch, if representable.
    pub fn from_unix_millis(millis: i64) -> Option<Self> {
        Utc.timestamp_millis_opt(millis).single().map(Self)
    }

    /// The instant this many microseconds after the Unix epoch, if representable.
    pub fn from_unix_micros(micros: i64) -> Option<Self> {
        DateTime::from_timestamp_micros(micros).map(Self)
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(&self) -> i64 {
        self.0.timestamp_millis()
    }

    /// Whole seconds since the Unix epoch (the unit of JWT claims).
    pub fn unix_seconds(&self) -> i64 {
        self.0.timestamp()
    }

    /// This instant moved by a signed number of milliseconds, saturating at the
    /// representable range.
    pub fn add_millis(&self, millis: i64) -> Self {
        self.0
            .checked_add_signed(chrono::TimeDelta::milliseconds(millis))
            .map(Self)
            .unwrap_or(*self)
    }

    /// The chrono value, for drivers and storage.
    pub fn as_datetime(&self) -> DateTime<Utc> {
        self.0
    }

    /// How long from this instant until `later` (zero if `later` is past).
    pub fn until(&self, later: Self) -> std::time::Duration {
        let left = later.unix_millis().saturating_sub(self.unix_millis());
        std::time::Duration::from_millis(u64::try_from(left).unwrap_or(0))
    }
}

impl From<DateTime<Utc>> for WallTime {
    fn from(value: DateTime<Utc>) -> Self {
        Self(value)
    }
}

impl fmt::Display for WallTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

/// Why a string is not a wire timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 timestamp: {0}")]
pub struct ParseWallTimeError(String);

impl FromStr for WallTime {
    type Err = ParseWallTimeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| Self(t.with_timezone(&Utc)))
            .map_err(|e| ParseWallTimeError(e.to_string()))
    }
}

impl Serialize for WallTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WallTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = WallTime;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp such as 2025-10-15T10:00:00Z")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<WallTime, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for WallTime {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "WallTime".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339 UTC timestamp, e.g. 2025-10-15T10:00:00Z"
        })
    }
}

#[cfg(feature = "testing")]
impl proptest::arbitrary::Arbitrary for WallTime {
    type Parameters = ();
    type Strategy = proptest::strategy::BoxedStrategy<Self>;

    fn arbitrary_with((): ()) -> Self::Strategy {
        use proptest::strategy::Strategy;
        // Years 1970..=9999 with microsecond precision: everything RFC 3339 can carry.
        (0i64..253_402_300_799_000_000)
            .prop_map(|micros| Self::from_unix_micros(micros).unwrap_or(Self::UNIX_EPOCH))
            .boxed()
    }
}

/// The core's monotonic clock: microseconds since an epoch the driver picks
/// (its start, usually). Every engine call takes one; timers are expressed
/// in it. It never goes backwards within one engine.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The driver's epoch.
    pub const ZERO: Self = Self(0);

    /// This many microseconds after the epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Self(micros)
    }

    /// This many milliseconds after the epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Self(millis.saturating_mul(1_000))
    }

    /// This many seconds after the epoch.
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(1_000_000))
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// The time elapsed since `earlier`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Self) -> std::time::Duration {
        std::time::Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl std::ops::Add<std::time::Duration> for Timestamp {
    type Output = Self;

    fn add(self, rhs: std::time::Duration) -> Self {
        let micros = u64::try_from(rhs.as_micros()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(micros))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// Maps the monotonic clock to the wall clock from the driver's most recent
/// reading, so the engine can stamp messages without reading a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WallAnchor {
    at: Timestamp,
    wall: WallTime,
}

impl WallAnchor {
    /// The wall clock read `wall` at monotonic time `at`.
    pub fn new(at: Timestamp, wall: WallTime) -> Self {
        Self { at, wall }
    }

    /// The wall time at `now`, extrapolated from the anchor, to the
    /// millisecond (finer would only lengthen every message).
    pub fn wall_at(&self, now: Timestamp) -> WallTime {
        let delta_micros = i64::try_from(now.as_micros()).unwrap_or(i64::MAX)
            - i64::try_from(self.at.as_micros()).unwrap_or(i64::MAX);
        let micros = self
            .wall
            .as_datetime()
            .timestamp_micros()
            .saturating_add(delta_micros);
        WallTime::from_unix_millis(micros.div_euclid(1000)).unwrap_or(self.wall)
    }
}
