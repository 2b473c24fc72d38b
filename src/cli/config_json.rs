//! Pod and container config files in crictl's format: the protobuf JSON form of the CRI
//! messages, read into the `k8s_cri` types.
//!
//! The `k8s_cri` types derive serde with snake_case field names and no defaults, so a plain
//! `serde_json::from_str` would demand every field. crictl's files (like protobuf JSON in
//! general) use camelCase or the original snake_case names, leave out whatever is default,
//! may write 64-bit integers as strings and enums as names. [`Lenient`] is a deserializer over
//! a `serde_json::Value` that bridges the two: struct fields are matched by either spelling
//! (map keys such as labels stay untouched), absent fields get their protobuf default, and
//! enum names are looked up by the field they appear in.

use std::path::{Path, PathBuf};

use k8s_cri::v1::{
    ContainerState, MountPropagation, NamespaceMode, PodSandboxState, Protocol,
    SupplementalGroupsPolicy, security_profile::ProfileType,
};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde_json::Value;

/// A config file that could not be read as the CRI message it should hold.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {source}")]
    Syntax {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: {source}")]
    Invalid { path: PathBuf, source: FieldError },
}

/// Read `path` as a CRI message `T` (e.g. `PodSandboxConfig`).
pub fn read_file<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let value: Value = serde_json::from_str(&text).map_err(|source| ConfigError::Syntax {
        path: path.to_path_buf(),
        source,
    })?;
    from_value(value).map_err(|source| ConfigError::Invalid {
        path: path.to_path_buf(),
        source,
    })
}

/// Deserialize a CRI message from protobuf-style JSON (see the module docs).
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, FieldError> {
    T::deserialize(Lenient::new(Some(value), ""))
}

/// `fooBarBaz` → `foo_bar_baz`; snake_case names come back unchanged.
pub fn camel_to_snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            if !out.is_empty() {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// What went wrong, and at which field path (`linux.security_context.namespace_options`).
#[derive(Debug)]
pub struct FieldError {
    path: String,
    message: String,
}

impl FieldError {
    /// The same error seen from one level up: `field` is prepended to the path.
    fn within(mut self, field: &str) -> FieldError {
        self.path = match (field.is_empty(), self.path.is_empty()) {
            (true, _) => self.path,
            (false, true) => field.to_string(),
            (false, false) => format!("{field}.{}", self.path),
        };
        self
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "field `{}`: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for FieldError {}

impl de::Error for FieldError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        FieldError {
            path: String::new(),
            message: msg.to_string(),
        }
    }
}

/// The enum value named `name` for a field called `field`, for the CRI's enum-typed fields.
fn enum_value(field: &str, name: &str) -> Option<i32> {
    let upper = name.to_ascii_uppercase();
    let try_both = |f: fn(&str) -> Option<i32>| f(name).or_else(|| f(&upper));
    match field {
        "network" | "pid" | "ipc" | "mode" => {
            try_both(|n| NamespaceMode::from_str_name(n).map(|v| v as i32))
        }
        "protocol" => try_both(|n| Protocol::from_str_name(n).map(|v| v as i32)),
        "propagation" => try_both(|n| MountPropagation::from_str_name(n).map(|v| v as i32)),
        "profile_type" => ProfileType::from_str_name(name).map(|v| v as i32),
        "supplemental_groups_policy" => {
            try_both(|n| SupplementalGroupsPolicy::from_str_name(n).map(|v| v as i32))
        }
        "state" => try_both(|n| {
            ContainerState::from_str_name(n)
                .map(|v| v as i32)
                .or_else(|| PodSandboxState::from_str_name(n).map(|v| v as i32))
        }),
        _ => None,
    }
}

/// A JSON value being read as a CRI type; `None` is an absent field (the protobuf default).
struct Lenient {
    value: Option<Value>,
    /// The field this value sits in (snake_case), to resolve enum names.
    field: &'static str,
}

impl Lenient {
    fn new(value: Option<Value>, field: &'static str) -> Lenient {
        // JSON null means "not set", exactly like an absent field.
        let value = value.filter(|v| !v.is_null());
        Lenient { value, field }
    }

    fn unexpected(&self, what: &str) -> FieldError {
        de::Error::custom(format!(
            "expected {what}, found {}",
            self.value
                .as_ref()
                .map_or("nothing".to_string(), |v| v.to_string())
        ))
    }

    /// An integer from a number, a numeric string (protobuf JSON's 64-bit form) or an enum name.
    fn integer(&self) -> Result<Option<IntValue>, FieldError> {
        match &self.value {
            None => Ok(None),
            Some(Value::Number(n)) => {
                if let Some(i) = n.as_i64() {
                    Ok(Some(IntValue::Signed(i)))
                } else if let Some(u) = n.as_u64() {
                    Ok(Some(IntValue::Unsigned(u)))
                } else {
                    Err(self.unexpected("an integer"))
                }
            }
            Some(Value::String(s)) => {
                if let Ok(i) = s.parse::<i64>() {
                    Ok(Some(IntValue::Signed(i)))
                } else if let Ok(u) = s.parse::<u64>() {
                    Ok(Some(IntValue::Unsigned(u)))
                } else if let Some(v) = enum_value(self.field, s) {
                    Ok(Some(IntValue::Signed(v.into())))
                } else {
                    Err(self.unexpected("an integer or a known enum name"))
                }
            }
            Some(_) => Err(self.unexpected("an integer")),
        }
    }
}

enum IntValue {
    Signed(i64),
    Unsigned(u64),
}

macro_rules! integer_method {
    ($method:ident) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
            match self.integer()? {
                None => visitor.visit_i64(0),
                Some(IntValue::Signed(i)) => visitor.visit_i64(i),
                Some(IntValue::Unsigned(u)) => visitor.visit_u64(u),
            }
        }
    };
}

impl<'de> de::Deserializer<'de> for Lenient {
    type Error = FieldError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        match self.value {
            None => visitor.visit_unit(),
            Some(v) => v.deserialize_any(visitor).map_err(de::Error::custom),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        match &self.value {
            None => visitor.visit_bool(false),
            Some(Value::Bool(b)) => visitor.visit_bool(*b),
            Some(Value::String(s)) if s == "true" || s == "false" => {
                visitor.visit_bool(s == "true")
            }
            Some(_) => Err(self.unexpected("a boolean")),
        }
    }

    integer_method!(deserialize_i8);
    integer_method!(deserialize_i16);
    integer_method!(deserialize_i32);
    integer_method!(deserialize_i64);
    integer_method!(deserialize_u8);
    integer_method!(deserialize_u16);
    integer_method!(deserialize_u32);
    integer_method!(deserialize_u64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        match &self.value {
            None => visitor.visit_f64(0.0),
            Some(Value::Number(n)) => visitor.visit_f64(n.as_f64().unwrap_or_default()),
            Some(Value::String(s)) => match s.parse::<f64>() {
                Ok(f) => visitor.visit_f64(f),
                Err(_) => Err(self.unexpected("a number")),
            },
            Some(_) => Err(self.unexpected("a number")),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        match self.value {
            None => visitor.visit_string(String::new()),
            Some(Value::String(s)) => visitor.visit_string(s),
            Some(_) => Err(self.unexpected("a string")),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        match self.value {
            None => visitor.visit_none(),
            Some(_) => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, FieldError> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, FieldError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        let field = self.field;
        match self.value {
            None => visitor.visit_seq(Elements {
                items: Vec::new().into_iter(),
                field,
                index: 0,
            }),
            Some(Value::Array(items)) => visitor.visit_seq(Elements {
                items: items.into_iter(),
                field,
                index: 0,
            }),
            Some(_) => Err(self.unexpected("a list")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, FieldError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, FieldError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        match self.value {
            None => visitor.visit_map(Entries::new(Vec::new())),
            // Map keys are data (label names, annotation keys): kept as written.
            Some(Value::Object(map)) => visitor.visit_map(Entries::new(
                map.into_iter()
                    .map(|(k, v)| (Key::Data(k), Some(v)))
                    .collect(),
            )),
            Some(_) => Err(self.unexpected("an object")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, FieldError> {
        let given = match self.value {
            None => serde_json::Map::new(),
            Some(Value::Object(map)) => map,
            Some(_) => return Err(self.unexpected(&format!("an object ({name})"))),
        };
        let mut entries: Vec<(Key, Option<Value>)> = Vec::with_capacity(fields.len());
        let mut found: Vec<Option<(String, Value)>> = vec![None; fields.len()];
        for (key, value) in given {
            let snake = camel_to_snake(&key);
            let Some(i) = fields.iter().position(|f| *f == snake || *f == key) else {
                return Err(de::Error::custom(format!(
                    "unknown field `{key}` in {name}"
                )));
            };
            if let Some((earlier, _)) = &found[i] {
                return Err(de::Error::custom(format!(
                    "`{key}` and `{earlier}` both set {name}.{}",
                    fields[i]
                )));
            }
            found[i] = Some((key, value));
        }
        for (field, value) in fields.iter().zip(found) {
            entries.push((Key::Field(field), value.map(|(_, v)| v)));
        }
        visitor.visit_map(Entries::new(entries))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, FieldError> {
        match self.value {
            // A oneof variant chosen by a one-key object or a unit variant by its name.
            Some(v) => v
                .into_deserializer()
                .deserialize_any(visitor)
                .map_err(de::Error::custom),
            None => Err(de::Error::custom("a value is required")),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, FieldError> {
        visitor.visit_unit()
    }
}

struct Elements {
    items: std::vec::IntoIter<Value>,
    field: &'static str,
    index: usize,
}

impl<'de> de::SeqAccess<'de> for Elements {
    type Error = FieldError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, FieldError> {
        let Some(item) = self.items.next() else {
            return Ok(None);
        };
        let index = self.index;
        self.index += 1;
        seed.deserialize(Lenient::new(Some(item), self.field))
            .map(Some)
            .map_err(|e| e.within(&format!("[{index}]")))
    }
}

enum Key {
    /// A struct field, by its snake_case name.
    Field(&'static str),
    /// A map key, as written.
    Data(String),
}

struct Entries {
    entries: std::vec::IntoIter<(Key, Option<Value>)>,
    pending: Option<(String, &'static str, Option<Value>)>,
}

impl Entries {
    fn new(entries: Vec<(Key, Option<Value>)>) -> Entries {
        Entries {
            entries: entries.into_iter(),
            pending: None,
        }
    }
}

impl<'de> de::MapAccess<'de> for Entries {
    type Error = FieldError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, FieldError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        let (name, field) = match key {
            Key::Field(f) => (f.to_string(), f),
            // Map values inherit no enum context.
            Key::Data(k) => (k, ""),
        };
        let out = seed.deserialize(name.clone().into_deserializer())?;
        self.pending = Some((name, field, value));
        Ok(Some(out))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, FieldError> {
        let (name, field, value) = self
            .pending
            .take()
            .ok_or_else(|| <FieldError as de::Error>::custom("value requested before its key"))?;
        seed.deserialize(Lenient::new(value, field))
            .map_err(|e| e.within(&name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};
    use serde_json::json;

    /// The shape of crictl's docs/examples pod-config.json (snake_case, as crictl ships it).
    fn crictl_pod_config() -> Value {
        json!({
            "metadata": {
                "name": "nginx-sandbox",
                "namespace": "default",
                "attempt": 1,
                "uid": "hdishd83djaidwnduwk28bcsb"
            },
            "log_directory": "/tmp",
            "linux": {}
        })
    }

    #[test]
    fn camel_case_names_become_snake_case() {
        assert_eq!(camel_to_snake("logDirectory"), "log_directory");
        assert_eq!(
            camel_to_snake("memoryLimitInBytes"),
            "memory_limit_in_bytes"
        );
        assert_eq!(camel_to_snake("log_directory"), "log_directory");
        assert_eq!(camel_to_snake("uid"), "uid");
    }

    #[test]
    fn reads_crictls_snake_case_pod_config() {
        let c: PodSandboxConfig = from_value(crictl_pod_config()).unwrap();
        let m = c.metadata.unwrap();
        assert_eq!(
            (m.name.as_str(), m.namespace.as_str(), m.attempt),
            ("nginx-sandbox", "default", 1)
        );
        assert_eq!(c.log_directory, "/tmp");
        assert!(c.linux.is_some());
        assert!(c.labels.is_empty() && c.dns_config.is_none());
    }

    #[test]
    fn reads_camel_case_with_enum_names_and_string_integers() {
        let v = json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "logDirectory": "/var/log/pods/x",
            "labels": {"appName": "web", "io.kubernetes.pod.name": "p"},
            "portMappings": [{"protocol": "UDP", "containerPort": 53, "hostPort": 5353}],
            "linux": {
                "cgroupParent": "/k8s",
                "securityContext": {
                    "namespaceOptions": {"network": "NODE", "pid": 1, "ipc": "pod"},
                    "runAsUser": {"value": "1000"},
                    "seccomp": {"profileType": "RuntimeDefault"}
                }
            }
        });
        let c: PodSandboxConfig = from_value(v).unwrap();
        assert_eq!(c.log_directory, "/var/log/pods/x");
        // Label keys are data, never converted.
        assert_eq!(c.labels["appName"], "web");
        assert_eq!(c.port_mappings[0].protocol, Protocol::Udp as i32);
        assert_eq!(c.port_mappings[0].host_port, 5353);
        let linux = c.linux.unwrap();
        assert_eq!(linux.cgroup_parent, "/k8s");
        let sc = linux.security_context.unwrap();
        let ns = sc.namespace_options.unwrap();
        assert_eq!(ns.network, NamespaceMode::Node as i32);
        assert_eq!(ns.pid, NamespaceMode::Container as i32);
        assert_eq!(ns.ipc, NamespaceMode::Pod as i32);
        assert_eq!(sc.run_as_user.unwrap().value, 1000);
        assert_eq!(
            sc.seccomp.unwrap().profile_type,
            ProfileType::RuntimeDefault as i32
        );
    }

    #[test]
    fn reads_crictls_container_config_shape() {
        // crictl's docs/examples container-config.json, with a few camelCase fields.
        let v = json!({
            "metadata": {"name": "busybox"},
            "image": {"image": "busybox"},
            "command": ["top"],
            "log_path": "busybox.0.log",
            "envs": [{"key": "A", "value": "b"}],
            "mounts": [{"containerPath": "/data", "hostPath": "/tmp", "readonly": true,
                        "propagation": 2}],
            "stdinOnce": false,
            "linux": {"resources": {"memoryLimitInBytes": "67108864", "cpuShares": 512}}
        });
        let c: ContainerConfig = from_value(v).unwrap();
        assert_eq!(c.metadata.unwrap().name, "busybox");
        assert_eq!(c.image.unwrap().image, "busybox");
        assert_eq!(c.command, ["top"]);
        assert_eq!(c.log_path, "busybox.0.log");
        assert_eq!(
            (c.envs[0].key.as_str(), c.envs[0].value.as_str()),
            ("A", "b")
        );
        let m = &c.mounts[0];
        assert_eq!(
            (m.container_path.as_str(), m.host_path.as_str(), m.readonly),
            ("/data", "/tmp", true)
        );
        assert_eq!(
            m.propagation,
            MountPropagation::PropagationBidirectional as i32
        );
        let r = c.linux.unwrap().resources.unwrap();
        assert_eq!((r.memory_limit_in_bytes, r.cpu_shares), (67108864, 512));
    }

    #[test]
    fn errors_name_the_field() {
        let e = from_value::<PodSandboxConfig>(json!({"metadata": {"attempt": "x"}})).unwrap_err();
        assert!(e.to_string().contains("metadata.attempt"), "{e}");
        let e = from_value::<PodSandboxConfig>(json!({"logDir": "/x"})).unwrap_err();
        assert!(e.to_string().contains("unknown field `logDir`"), "{e}");
        let e =
            from_value::<PodSandboxConfig>(json!({"log_directory": "/a", "logDirectory": "/b"}))
                .unwrap_err();
        assert!(e.to_string().contains("both set"), "{e}");
        let e = from_value::<PodSandboxConfig>(
            json!({"linux": {"securityContext": {"namespaceOptions": {"network": "MOON"}}}}),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("linux.security_context.namespace_options.network"),
            "{e}"
        );
    }

    #[test]
    fn null_means_unset() {
        let c: PodSandboxConfig =
            from_value(json!({"metadata": null, "hostname": null, "labels": null})).unwrap();
        assert!(c.metadata.is_none() && c.hostname.is_empty() && c.labels.is_empty());
    }
}
