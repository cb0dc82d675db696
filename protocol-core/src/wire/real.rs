//! Serialisers that refuse non-finite numbers.
//!
//! JSON has no NaN or infinity; serde_json would silently write `null`, which
//! the peer then rejects. A sample with such a value is a bug in a collector,
//! so [`crate::encode`] reports it instead of sending a message that cannot be
//! read.

use std::collections::BTreeMap;

use serde::Serializer;
use serde::ser::{Error, SerializeMap, SerializeSeq};

fn checked<E: Error>(value: f64) -> Result<f64, E> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(E::custom(format_args!("non-finite number {value}")))
    }
}

pub(crate) fn f64<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(checked(*value)?)
}

pub(crate) fn option<S: Serializer>(value: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.serialize_some(&checked::<S::Error>(*v)?),
        None => s.serialize_none(),
    }
}

pub(crate) fn slice<S: Serializer>(values: &[f64], s: S) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(values.len()))?;
    for v in values {
        seq.serialize_element(&checked::<S::Error>(*v)?)?;
    }
    seq.end()
}

pub(crate) fn triple<S: Serializer>(values: &[f64; 3], s: S) -> Result<S::Ok, S::Error> {
    slice(values, s)
}

pub(crate) fn map<S: Serializer>(values: &BTreeMap<String, f64>, s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(values.len()))?;
    for (k, v) in values {
        map.serialize_entry(k, &checked::<S::Error>(*v)?)?;
    }
    map.end()
}

/// A helper so `skip_serializing_if` can name "false".
pub(crate) fn is_false(value: &bool) -> bool {
    !*value
}

/// A helper so `skip_serializing_if` can name "zero".
pub(crate) fn is_zero(value: &u64) -> bool {
    *value == 0
}

#[cfg(feature = "testing")]
pub(crate) mod arb {
    //! Strategies for finite numbers and small collections of them.
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    pub(crate) fn f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            Just(0.0),
            0.0..100.0f64,
            proptest::num::f64::NORMAL | proptest::num::f64::ZERO | proptest::num::f64::SUBNORMAL,
        ]
    }

    pub(crate) fn option() -> impl Strategy<Value = Option<f64>> {
        proptest::option::of(f64())
    }

    pub(crate) fn vec() -> impl Strategy<Value = Vec<f64>> {
        proptest::collection::vec(f64(), 0..8)
    }

    pub(crate) fn load() -> impl Strategy<Value = [f64; 3]> {
        [f64(), f64(), f64()]
    }

    pub(crate) fn map() -> impl Strategy<Value = BTreeMap<String, f64>> {
        proptest::collection::btree_map("[a-z_]{1,12}", f64(), 0..4)
    }
}
