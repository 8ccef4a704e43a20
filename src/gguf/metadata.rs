//! The key → value table of a GGUF file, in file order, with typed getters
//! whose errors name the key.

use super::value::{Array, Value, ValueType};
use std::collections::HashMap;
use thiserror::Error;

/// A metadata lookup that did not give the expected kind of value.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum MetadataError {
    #[error("metadata key {key:?} is missing")]
    Missing { key: String },
    #[error("metadata key {key:?} holds {found}, expected {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces `key`. Returns the previous value, if any.
    pub fn insert(&mut self, key: impl Into<String>, value: Value) -> Option<Value> {
        let key = key.into();
        match self.index.get(&key) {
            Some(&i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
                None
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// Entries in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn require(&self, key: &str) -> Result<&Value, MetadataError> {
        self.get(key)
            .ok_or_else(|| MetadataError::Missing { key: key.into() })
    }

    fn wrong(key: &str, expected: &'static str, found: &Value) -> MetadataError {
        MetadataError::WrongType {
            key: key.into(),
            expected,
            found: format!("{} {found}", found.value_type()),
        }
    }

    /// A string value; `Ok(None)` when absent, an error when present with another type.
    pub fn str(&self, key: &str) -> Result<Option<&str>, MetadataError> {
        self.get(key)
            .map(|v| v.as_str().ok_or_else(|| Self::wrong(key, "a string", v)))
            .transpose()
    }

    /// A non-negative integer of any integer type.
    pub fn u64(&self, key: &str) -> Result<Option<u64>, MetadataError> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| Self::wrong(key, "a non-negative integer", v))
            })
            .transpose()
    }

    /// An integer that must fit in u32 (token ids, counts).
    pub fn u32(&self, key: &str) -> Result<Option<u32>, MetadataError> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| Self::wrong(key, "an integer in 0..2^32", v))
            })
            .transpose()
    }

    /// A float from any numeric type.
    pub fn f64(&self, key: &str) -> Result<Option<f64>, MetadataError> {
        self.get(key)
            .map(|v| v.as_f64().ok_or_else(|| Self::wrong(key, "a number", v)))
            .transpose()
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, MetadataError> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| Self::wrong(key, "a bool", v)))
            .transpose()
    }

    pub fn array(&self, key: &str) -> Result<Option<&Array>, MetadataError> {
        self.get(key)
            .map(|v| v.as_array().ok_or_else(|| Self::wrong(key, "an array", v)))
            .transpose()
    }

    /// A string that must be present.
    pub fn required_str(&self, key: &str) -> Result<&str, MetadataError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| Self::wrong(key, "a string", v))
    }

    /// The type of `key`'s value, if present.
    pub fn value_type(&self, key: &str) -> Option<ValueType> {
        self.get(key).map(Value::value_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_getters_name_the_key() {
        let mut m = Metadata::new();
        m.insert("a.count", Value::I32(7));
        m.insert("a.name", Value::String("x".into()));
        m.insert("a.neg", Value::I32(-1));
        assert_eq!(m.u32("a.count"), Ok(Some(7)));
        assert_eq!(m.u32("a.absent"), Ok(None));
        let err = m.u32("a.name").unwrap_err().to_string();
        assert!(err.contains("a.name") && err.contains("string"), "{err}");
        assert!(m.u64("a.neg").is_err());
        assert_eq!(m.f64("a.count"), Ok(Some(7.0)));
        assert_eq!(
            m.required_str("a.absent").unwrap_err(),
            MetadataError::Missing {
                key: "a.absent".into()
            }
        );
    }

    #[test]
    fn insert_keeps_file_order_and_replaces() {
        let mut m = Metadata::new();
        m.insert("b", Value::U8(1));
        m.insert("a", Value::U8(2));
        assert_eq!(m.insert("b", Value::U8(3)), Some(Value::U8(1)));
        let keys: Vec<_> = m.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["b", "a"]);
        assert_eq!(m.get("b"), Some(&Value::U8(3)));
    }
}
