//! Helpers for the unit tests: the xrfm parity fixtures in `tests/fixtures/rfm`.

use std::path::PathBuf;

use faer::{Mat, MatRef};

pub(crate) struct Fixture {
    bytes: Vec<u8>,
    pub params: serde_json::Value,
}

impl Fixture {
    pub fn load(name: &str) -> Self {
        // `cargo test` names the package's directory at run time: right even where a test
        // binary built in another clone sharing the target directory is reused (cargo's
        // fingerprints do not see the clone's path, so `env!` can name another clone).
        let path = std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from)
            .join("../tests/fixtures/rfm")
            .join(format!("{name}.safetensors"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("fixture header");
        let params = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("params"))
            .map(|s| serde_json::from_str(s).expect("params json"))
            .unwrap_or(serde_json::Value::Null);
        Self { bytes, params }
    }

    /// A float64 tensor as a matrix (1-D tensors become one column; 3-D flatten the leading dims).
    pub fn mat(&self, name: &str) -> Mat<f64> {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).expect("fixture");
        let t = st
            .tensor(name)
            .unwrap_or_else(|e| panic!("tensor {name}: {e}"));
        assert_eq!(t.dtype(), safetensors::Dtype::F64, "{name}");
        let vals: Vec<f64> = t
            .data()
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let shape = t.shape();
        let cols = if shape.len() == 1 {
            1
        } else {
            *shape.last().expect("rank >= 1")
        };
        let rows = vals.len() / cols;
        Mat::from_fn(rows, cols, |i, j| vals[i * cols + j])
    }

    pub fn f64(&self, key: &str) -> f64 {
        self.params[key]
            .as_f64()
            .unwrap_or_else(|| panic!("param {key}"))
    }
}

/// max |a − b| / max |b|
pub(crate) fn rel_err(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> f64 {
    assert_eq!((a.nrows(), a.ncols()), (b.nrows(), b.ncols()));
    let mut diff: f64 = 0.0;
    let mut scale: f64 = 0.0;
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            diff = diff.max((a[(i, j)] - b[(i, j)]).abs());
            scale = scale.max(b[(i, j)].abs());
        }
    }
    diff / scale.max(f64::MIN_POSITIVE)
}
