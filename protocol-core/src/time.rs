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
