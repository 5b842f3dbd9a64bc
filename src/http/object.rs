//! JSON bodies that must be objects.
//!
//! A struct derived with serde also accepts a JSON array of its fields in
//! order (`["failed"]` for `{"state": "failed"}`, `[]` for `{}` when every
//! field has a default), which the OpenAPI document does not allow and no
//! caller means. [`Object`] reads its body only as a map, so an array is a
//! 400 like any other body of the wrong type.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

/// A `T` read only from a JSON object.
#[derive(Debug)]
pub(crate) struct Object<T>(pub T);

impl<T> Object<T> {
    pub(crate) fn into_inner(self) -> T {
        self.0
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Only<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Only<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_map(Only(PhantomData)).map(Object)
    }
}

/// `deserialize_with` for a list of objects.
pub(crate) fn objects<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let list = Vec::<Object<T>>::deserialize(deserializer)?;
    Ok(list.into_iter().map(Object::into_inner).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[serde(default)]
        state: Option<String>,
        #[serde(default, deserialize_with = "objects")]
        items: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Item {
        id: String,
    }

    fn parse(text: &str) -> Result<Body, String> {
        serde_json::from_str::<Object<Body>>(text)
            .map(Object::into_inner)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn objects_are_read_as_before() {
        let body = parse(r#"{"state": "failed", "items": [{"id": "v1"}]}"#).unwrap();
        assert_eq!(body.state.as_deref(), Some("failed"));
        assert_eq!(body.items, vec![Item { id: "v1".into() }]);
        assert_eq!(parse("{}").unwrap().items, vec![]);
    }

    #[test]
    fn arrays_are_refused_at_every_level() {
        for text in ["[]", r#"["failed"]"#, r#"{"items": [["v1"]]}"#, "null", "3"] {
            let error = parse(text).unwrap_err();
            assert!(error.contains("expected a JSON object"), "{text}: {error}");
        }
        let error = parse(r#"{"stat": "failed"}"#).unwrap_err();
        assert!(error.contains("unknown field"), "{error}");
    }
}
