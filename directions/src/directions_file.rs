//! The directions file format v1 (docs/architecture.md): one concept for
//! one model, `directions` f32 [n_classes, n_layers, d_model] unit vectors, `scores` f32
//! [n_classes, n_layers], `layers` i64 [n_layers], and string metadata.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::DirectionsFileError as E;

pub const DIRECTIONS_FORMAT: &str = "musicrfm.directions.v1";
/// Allowed deviation of a stored direction's norm from 1 (f32 storage).
pub const UNIT_NORM_TOLERANCE: f64 = 1e-3;

/// `binary` (one class vs rest per class) or `regression` (one class; positive = higher).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConceptKind {
    Binary,
    Regression,
}

/// A directions file in memory. `directions[c][r]` is the unit vector of class c at layer row r
/// (decoder block `layers[r]`).
#[derive(Clone, Debug, PartialEq)]
pub struct DirectionsFile {
    pub concept: String,
    pub classes: Vec<String>,
    pub kind: ConceptKind,
    pub metric: String,
    pub model: String,
    pub d_model: usize,
    pub n_layers_model: usize,
    pub pooling: String,
    pub site: String,
    pub layers: Vec<i64>,
    pub directions: Vec<Vec<Vec<f32>>>,
    /// `scores[c][r]`, higher is better.
    pub scores: Vec<Vec<f32>>,
}

impl DirectionsFile {
    /// Checks every rule of the format; `origin` names the file in errors.
    pub fn validate(&self, origin: &Path) -> Result<(), E> {
        let path = || origin.to_path_buf();
        let bad = |key: &'static str, value: String, reason: &str| E::BadMetadata {
            path: path(),
            key,
            value,
            reason: reason.into(),
        };
        if self.classes.is_empty() {
            return Err(bad(
                "classes",
                "[]".into(),
                "at least one class is required",
            ));
        }
        if self.kind == ConceptKind::Regression && self.classes.len() != 1 {
            return Err(bad(
                "classes",
                format!("{:?}", self.classes),
                "a regression concept has exactly one class",
            ));
        }
        if self.d_model == 0 {
            return Err(bad("d_model", "0".into(), "must be positive"));
        }
        if self.pooling != "mean" {
            return Err(bad(
                "pooling",
                self.pooling.clone(),
                "v1 defines only `mean`",
            ));
        }
        if self.site != "block_output" {
            return Err(bad(
                "site",
                self.site.clone(),
                "v1 defines only `block_output`",
            ));
        }
        let (nc, nl, d) = (self.classes.len(), self.layers.len(), self.d_model);
        let dims = |name, found: Vec<usize>, expected: Vec<usize>, why| E::WrongDims {
            path: path(),
            name,
            found,
            expected,
            why,
        };
        if self.directions.len() != nc
            || self
                .directions
                .iter()
                .any(|c| c.len() != nl || c.iter().any(|v| v.len() != d))
        {
            let found = vec![
                self.directions.len(),
                self.directions.first().map_or(0, Vec::len),
                self.directions
                    .first()
                    .and_then(|c| c.first())
                    .map_or(0, Vec::len),
            ];
            return Err(dims(
                "directions",
                found,
                vec![nc, nl, d],
                "[classes, layers, d_model]",
            ));
        }
        if self.scores.len() != nc || self.scores.iter().any(|s| s.len() != nl) {
            return Err(dims(
                "scores",
                vec![self.scores.len(), self.scores.first().map_or(0, Vec::len)],
                vec![nc, nl],
                "[classes, layers]",
            ));
        }
        let mut seen = HashSet::new();
        for (row, &block) in self.layers.iter().enumerate() {
            if block < 0 || block as u64 >= self.n_layers_model as u64 {
                return Err(E::LayerOutOfRange {
                    path: path(),
                    row,
                    block,
                    n_layers_model: self.n_layers_model,
                });
            }
            if !seen.insert(block) {
                return Err(E::DuplicateLayer {
                    path: path(),
                    block,
                });
            }
        }
        if self.scores.iter().flatten().any(|s| !s.is_finite()) {
            return Err(E::NonFinite {
                path: path(),
                name: "scores",
            });
        }
        for (class, per_layer) in self.directions.iter().enumerate() {
            for (row, v) in per_layer.iter().enumerate() {
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(E::NonFinite {
                        path: path(),
                        name: "directions",
                    });
                }
                let norm = v
                    .iter()
                    .map(|&x| f64::from(x) * f64::from(x))
                    .sum::<f64>()
                    .sqrt();
                if (norm - 1.0).abs() > UNIT_NORM_TOLERANCE {
                    return Err(E::NonUnitVector {
                        path: path(),
                        class,
                        row,
                        block: self.layers[row],
                        norm,
                    });
                }
            }
        }
        Ok(())
    }

    /// Validates, then serialises to safetensors bytes.
    pub fn to_bytes(&self, origin: &Path) -> Result<Vec<u8>, E> {
        self.validate(origin)?;
        let (nc, nl, d) = (self.classes.len(), self.layers.len(), self.d_model);
        let dir_bytes: Vec<u8> = self
            .directions
            .iter()
            .flatten()
            .flatten()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let score_bytes: Vec<u8> = self
            .scores
            .iter()
            .flatten()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let layer_bytes: Vec<u8> = self.layers.iter().flat_map(|x| x.to_le_bytes()).collect();
        let ser = |reason: String| E::Serialize {
            path: origin.to_path_buf(),
            reason,
        };
        let views = vec![
            (
                "directions",
                TensorView::new(Dtype::F32, vec![nc, nl, d], &dir_bytes)
                    .map_err(|e| ser(e.to_string()))?,
            ),
            (
                "scores",
                TensorView::new(Dtype::F32, vec![nc, nl], &score_bytes)
                    .map_err(|e| ser(e.to_string()))?,
            ),
            (
                "layers",
                TensorView::new(Dtype::I64, vec![nl], &layer_bytes)
                    .map_err(|e| ser(e.to_string()))?,
            ),
        ];
        let kind = match self.kind {
            ConceptKind::Binary => "binary",
            ConceptKind::Regression => "regression",
        };
        let classes = serde_json::to_string(&self.classes).map_err(|e| ser(e.to_string()))?;
        let meta: HashMap<String, String> = [
            ("format", DIRECTIONS_FORMAT.to_string()),
            ("concept", self.concept.clone()),
            ("classes", classes),
            ("kind", kind.to_string()),
            ("metric", self.metric.clone()),
            ("model", self.model.clone()),
            ("d_model", d.to_string()),
            ("n_layers_model", self.n_layers_model.to_string()),
            ("pooling", self.pooling.clone()),
            ("site", self.site.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        safetensors::serialize(views, Some(meta))
            .map(crate::canonical::canonical_safetensors)
            .map_err(|e| ser(e.to_string()))
    }

    pub fn write(&self, path: &Path) -> Result<(), E> {
        let bytes = self.to_bytes(path)?;
        crate::atomic::write_bytes_atomic(path, &bytes).map_err(|source| E::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn read(path: &Path) -> Result<Self, E> {
        let bytes = std::fs::read(path).map_err(|source| E::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses and validates; `origin` names the file in errors.
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Self, E> {
        let path = || -> PathBuf { origin.to_path_buf() };
        let st = SafeTensors::deserialize(bytes).map_err(|e| E::NotSafetensors {
            path: path(),
            reason: e.to_string(),
        })?;
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| E::NotSafetensors {
            path: path(),
            reason: e.to_string(),
        })?;
        let empty = HashMap::new();
        let meta = header.metadata().as_ref().unwrap_or(&empty);
        let get = |key: &'static str| {
            meta.get(key)
                .cloned()
                .ok_or(E::MissingMetadata { path: path(), key })
        };
        let format = get("format")?;
        if format != DIRECTIONS_FORMAT {
            return Err(E::UnknownFormat {
                path: path(),
                found: format,
            });
        }
        let bad = |key: &'static str, value: String, reason: String| E::BadMetadata {
            path: path(),
            key,
            value,
            reason,
        };
        let classes_s = get("classes")?;
        let classes: Vec<String> = serde_json::from_str(&classes_s).map_err(|e| {
            bad(
                "classes",
                classes_s.clone(),
                format!("not a JSON array of strings: {e}"),
            )
        })?;
        let kind_s = get("kind")?;
        let kind = match kind_s.as_str() {
            "binary" => ConceptKind::Binary,
            "regression" => ConceptKind::Regression,
            _ => {
                return Err(bad(
                    "kind",
                    kind_s,
                    "expected `binary` or `regression`".into(),
                ));
            }
        };
        let integer = |key: &'static str| -> Result<usize, E> {
            let v = get(key)?;
            v.parse::<usize>()
                .map_err(|_| bad(key, v.clone(), "not a non-negative integer".into()))
        };
        let (d_model, n_layers_model) = (integer("d_model")?, integer("n_layers_model")?);
        let tensor = |name: &'static str, dtype: Dtype, expected: &'static str| {
            let t = st
                .tensor(name)
                .map_err(|_| E::MissingTensor { path: path(), name })?;
            if t.dtype() != dtype {
                return Err(E::WrongDtype {
                    path: path(),
                    name,
                    found: format!("{:?}", t.dtype()),
                    expected,
                });
            }
            Ok(t)
        };
        let dirs = tensor("directions", Dtype::F32, "F32")?;
        let scores = tensor("scores", Dtype::F32, "F32")?;
        let layers_t = tensor("layers", Dtype::I64, "I64")?;
        let nc = classes.len();
        let nl = layers_t.shape().first().copied().unwrap_or(0);
        let dims = |name, found: &[usize], expected: Vec<usize>, why| E::WrongDims {
            path: path(),
            name,
            found: found.to_vec(),
            expected,
            why,
        };
        if layers_t.shape().len() != 1 {
            return Err(dims("layers", layers_t.shape(), vec![nl], "[layers]"));
        }
        if dirs.shape() != [nc, nl, d_model] {
            return Err(dims(
                "directions",
                dirs.shape(),
                vec![nc, nl, d_model],
                "[classes, layers, d_model]",
            ));
        }
        if scores.shape() != [nc, nl] {
            return Err(dims(
                "scores",
                scores.shape(),
                vec![nc, nl],
                "[classes, layers]",
            ));
        }
        let f32s = |b: &[u8]| -> Vec<f32> {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let dir_vals = f32s(dirs.data());
        let score_vals = f32s(scores.data());
        let layers: Vec<i64> = layers_t
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        let directions = (0..nc)
            .map(|c| {
                (0..nl)
                    .map(|r| dir_vals[(c * nl + r) * d_model..(c * nl + r + 1) * d_model].to_vec())
                    .collect()
            })
            .collect();
        let scores = (0..nc)
            .map(|c| score_vals[c * nl..(c + 1) * nl].to_vec())
            .collect();
        let file = DirectionsFile {
            concept: get("concept")?,
            classes,
            kind,
            metric: get("metric")?,
            model: get("model")?,
            d_model,
            n_layers_model,
            pooling: get("pooling")?,
            site: get("site")?,
            layers,
            directions,
            scores,
        };
        file.validate(origin)?;
        Ok(file)
    }
}
