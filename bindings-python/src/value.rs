//! Python values ⇄ MessagePack.
//!
//! The mapping is the one `rmp-serde` (and so `oscloud_actors::encode`)
//! uses for the corresponding Rust types, so a Python server and a Rust
//! server exchange the same bytes:
//!
//! | Python | MessagePack | Rust |
//! |---|---|---|
//! | `None` | nil | `()`, `None` |
//! | `bool` | bool | `bool` |
//! | `int` | int (smallest encoding) | integers |
//! | `float` | float 64 | `f64` |
//! | `str` | str | `String` |
//! | `bytes`, `bytearray`, `memoryview` | bin | `Vec<u8>` with `serde_bytes`, `Bytes` |
//! | `list`, `tuple` | array | `Vec<T>`, tuples, structs |
//! | `dict` | map | maps, structs encoded as maps |
//!
//! Decoding gives `list` for arrays and `dict` for maps (an array used as a
//! map key becomes a `tuple`, so it can be hashed).

use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyMemoryView, PyString, PyTuple,
};
use rmpv::Value;
use serde::Deserialize;

use crate::Error;

/// How deeply containers may nest (protects the stack from cyclic or
/// hostile values).
const MAX_DEPTH: usize = 256;

/// Convert a Python value to a MessagePack value.
pub(crate) fn to_value(obj: &Bound<'_, PyAny>) -> Result<Value, Error> {
    to_value_at(obj, 0)
}

fn to_value_at(obj: &Bound<'_, PyAny>, depth: usize) -> Result<Value, Error> {
    if depth > MAX_DEPTH {
        return Err(Error::Encode(format!(
            "values nest deeper than {MAX_DEPTH} levels (a cycle?)"
        )));
    }
    if obj.is_none() {
        return Ok(Value::Nil);
    }
    // bool before int: bool is a subclass of int.
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Boolean(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::from(u));
        }
        return Err(Error::Encode(
            "int out of range for MessagePack (-2**63 .. 2**64-1)".into(),
        ));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Value::F64(f.value()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::from(s.to_cow()?.as_ref()));
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Value::Binary(b.as_bytes().to_vec()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Value::Binary(b.to_vec()));
    }
    if obj.is_instance_of::<PyMemoryView>() {
        let bytes: Vec<u8> = obj.call_method0("tobytes")?.extract()?;
        return Ok(Value::Binary(bytes));
    }
    if let Ok(list) = obj.cast::<PyList>() {
        let mut out = Vec::with_capacity(list.len());
        for item in list.iter() {
            out.push(to_value_at(&item, depth + 1)?);
        }
        return Ok(Value::Array(out));
    }
    if let Ok(tuple) = obj.cast::<PyTuple>() {
        let mut out = Vec::with_capacity(tuple.len());
        for item in tuple.iter() {
            out.push(to_value_at(&item, depth + 1)?);
        }
        return Ok(Value::Array(out));
    }
    if let Ok(dict) = obj.cast::<PyDict>() {
        let mut out = Vec::with_capacity(dict.len());
        for (k, v) in dict.iter() {
            out.push((to_value_at(&k, depth + 1)?, to_value_at(&v, depth + 1)?));
        }
        return Ok(Value::Map(out));
    }
    let type_name = obj
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned());
    Err(Error::Encode(format!(
        "cannot encode a value of type {type_name} as MessagePack \
         (use None, bool, int, float, str, bytes, list, tuple or dict)"
    )))
}

/// Convert a MessagePack value to a Python value.
pub(crate) fn from_value<'py>(py: Python<'py>, value: &Value) -> Result<Bound<'py, PyAny>, Error> {
    from_value_at(py, value, false)
}

fn from_value_at<'py>(
    py: Python<'py>,
    value: &Value,
    as_key: bool,
) -> Result<Bound<'py, PyAny>, Error> {
    Ok(match value {
        Value::Nil => py.None().into_bound(py),
        Value::Boolean(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Integer(i) => {
            if let Some(v) = i.as_i64() {
                match v.into_pyobject(py) {
                    Ok(i) => i.into_any(),
                }
            } else if let Some(v) = i.as_u64() {
                match v.into_pyobject(py) {
                    Ok(i) => i.into_any(),
                }
            } else {
                return Err(Error::Decode("integer out of range".into()));
            }
        }
        Value::F32(f) => PyFloat::new(py, f64::from(*f)).into_any(),
        Value::F64(f) => PyFloat::new(py, *f).into_any(),
        Value::String(s) => match s.as_str() {
            Some(s) => PyString::new(py, s).into_any(),
            // Not UTF-8: hand the bytes over rather than fail.
            None => PyBytes::new(py, s.as_bytes()).into_any(),
        },
        Value::Binary(b) => PyBytes::new(py, b).into_any(),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(from_value_at(py, item, as_key)?);
            }
            if as_key {
                PyTuple::new(py, out)?.into_any()
            } else {
                PyList::new(py, out)?.into_any()
            }
        }
        Value::Map(entries) => {
            if as_key {
                return Err(Error::Decode("a map cannot be a map key in Python".into()));
            }
            let dict = PyDict::new(py);
            for (k, v) in entries {
                dict.set_item(from_value_at(py, k, true)?, from_value_at(py, v, false)?)?;
            }
            dict.into_any()
        }
        Value::Ext(kind, _) => {
            return Err(Error::Decode(format!(
                "MessagePack extension type {kind} is not supported"
            )));
        }
    })
}

/// Encode a MessagePack value to bytes.
pub(crate) fn encode_value(value: &Value) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::with_capacity(64);
    rmpv::encode::write_value(&mut buf, value).map_err(|e| Error::Encode(e.to_string()))?;
    Ok(buf)
}

/// Decode bytes holding exactly one MessagePack value, the way a server
/// decodes its requests (`rmp-serde`).
pub(crate) fn decode_value(bytes: &[u8]) -> Result<Value, Error> {
    let mut rest = bytes;
    let value = {
        let mut de = rmp_serde::Deserializer::new(&mut rest);
        Value::deserialize(&mut de).map_err(|e| Error::Decode(e.to_string()))?
    };
    if !rest.is_empty() {
        return Err(Error::Decode(format!(
            "{} bytes left over after the value",
            rest.len()
        )));
    }
    Ok(value)
}

/// Encode a Python value as MessagePack bytes.
pub(crate) fn encode_py(obj: &Bound<'_, PyAny>) -> Result<Vec<u8>, Error> {
    encode_value(&to_value(obj)?)
}

/// Decode MessagePack bytes into a Python value.
pub(crate) fn decode_py<'py>(py: Python<'py>, bytes: &[u8]) -> Result<Bound<'py, PyAny>, Error> {
    from_value(py, &decode_value(bytes)?)
}
