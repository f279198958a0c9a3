//! Byte-reproducible safetensors: the `safetensors` crate writes `__metadata__` (a hash map) in
//! random order, so the same file written twice could differ. We rewrite the JSON header with
//! every object's keys sorted; the data section is untouched.

use serde_json::Value;

/// `bytes` (a serialised safetensors file) with a canonical header. Returns the input unchanged
/// if it cannot be parsed (the reader reports such files properly).
pub(crate) fn canonical_safetensors(bytes: Vec<u8>) -> Vec<u8> {
    let Some(len) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
    else {
        return bytes;
    };
    let Some(header) = bytes.get(8..8 + len) else {
        return bytes;
    };
    let Ok(value) = serde_json::from_slice::<Value>(header) else {
        return bytes;
    };
    let mut text = String::with_capacity(len);
    write_sorted(&value, &mut text);
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - len);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&bytes[8 + len..]);
    out
}

fn write_sorted(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_sorted(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_keys_are_sorted_and_data_kept() {
        let data = [1u8, 2, 3, 4];
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::U8, vec![4], &data).unwrap();
        let meta: std::collections::HashMap<String, String> = (0..20)
            .map(|i| (format!("k{i:02}"), format!("v{i}")))
            .collect();
        let bytes = safetensors::serialize([("t", view)], Some(meta)).unwrap();
        let canonical = canonical_safetensors(bytes.clone());
        let len = u64::from_le_bytes(canonical[..8].try_into().unwrap()) as usize;
        assert_eq!(len % 8, 0);
        let header = std::str::from_utf8(&canonical[8..8 + len]).unwrap();
        let positions: Vec<usize> = (0..20)
            .map(|i| header.find(&format!("\"k{i:02}\"")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{header}");
        assert_eq!(&canonical[canonical.len() - 4..], &data);
        let parsed = safetensors::SafeTensors::deserialize(&canonical).unwrap();
        assert_eq!(parsed.tensor("t").unwrap().data(), &data);
        assert_eq!(
            canonical_safetensors(canonical.clone()),
            canonical,
            "idempotent"
        );
    }
}
