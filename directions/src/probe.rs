//! A trained probe: the best RFM predictor f(Z) = K(Z, X) α with its M, kept so generated audio
//! can be classified later; saved as safetensors (`musicrfm.probe.v1`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use faer::{Mat, MatRef, Par};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::{FitError, ProbeFileError};
use crate::kernel::{KernelParams, cross_kernel, project};
use crate::metrics::clamp_normalize;
use crate::rfm::argmax;
use crate::scalar::Real;

pub const PROBE_FORMAT: &str = "musicrfm.probe.v1";

/// What the probe predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// One output in {0, 1} (one class vs rest).
    Binary,
    /// One z-scored real output.
    Regression,
    /// One-hot over `n_classes` outputs.
    Multiclass { n_classes: usize },
}

impl ProbeKind {
    pub fn n_outputs(self) -> usize {
        match self {
            ProbeKind::Binary | ProbeKind::Regression => 1,
            ProbeKind::Multiclass { n_classes } => n_classes,
        }
    }
    fn name(self) -> &'static str {
        match self {
            ProbeKind::Binary => "binary",
            ProbeKind::Regression => "regression",
            ProbeKind::Multiclass { .. } => "multiclass",
        }
    }
}

/// Everything prediction needs.
#[derive(Clone, Debug)]
pub struct Probe<T> {
    pub kind: ProbeKind,
    pub kernel: KernelParams,
    pub reg: f64,
    pub center_grads: bool,
    /// d × d
    pub m: Mat<T>,
    /// Training points, n × d.
    pub centers: Mat<T>,
    /// n × c
    pub alpha: Mat<T>,
    /// Regression targets were (y − mean) / std; predictions are mapped back.
    pub target_mean: f64,
    pub target_std: f64,
    center_sq_norms: Vec<T>,
}

impl<T: Real> Probe<T> {
    /// Builds a probe; checks the shapes.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: ProbeKind,
        kernel: KernelParams,
        reg: f64,
        center_grads: bool,
        m: Mat<T>,
        centers: Mat<T>,
        alpha: Mat<T>,
        target_mean: f64,
        target_std: f64,
    ) -> Result<Self, FitError> {
        let d = centers.ncols();
        if m.nrows() != d
            || m.ncols() != d
            || alpha.nrows() != centers.nrows()
            || alpha.ncols() != kind.n_outputs()
        {
            return Err(FitError::Shape {
                what: format!(
                    "probe M {}×{}, centers {}×{}, alpha {}×{} for {} outputs",
                    m.nrows(),
                    m.ncols(),
                    centers.nrows(),
                    d,
                    alpha.nrows(),
                    alpha.ncols(),
                    kind.n_outputs()
                ),
            });
        }
        let center_sq_norms = project(centers.as_ref(), m.as_ref(), Par::rayon(0)).sq_norms;
        Ok(Self {
            kind,
            kernel,
            reg,
            center_grads,
            m,
            centers,
            alpha,
            target_mean,
            target_std,
            center_sq_norms,
        })
    }

    pub fn dim(&self) -> usize {
        self.centers.ncols()
    }

    /// Raw outputs K(Z, X) α, n_z × c.
    pub fn predict_raw(&self, z: MatRef<'_, T>) -> Result<Mat<T>, FitError> {
        if z.ncols() != self.dim() {
            return Err(FitError::Shape {
                what: format!(
                    "features have {} columns, the probe expects {}",
                    z.ncols(),
                    self.dim()
                ),
            });
        }
        let k = cross_kernel(
            z,
            self.centers.as_ref(),
            &self.center_sq_norms,
            self.m.as_ref(),
            self.kernel,
            Par::rayon(0),
        );
        Ok(&k * &self.alpha)
    }

    /// Class probabilities (xRFM's clamp-and-normalise), one row per sample; binary gives
    /// [P(rest), P(class)].
    pub fn predict_proba(&self, z: MatRef<'_, T>) -> Result<Vec<Vec<f64>>, FitError> {
        let raw = self.predict_raw(z)?;
        let c = raw.ncols();
        let flat: Vec<f64> = (0..raw.nrows())
            .flat_map(|i| (0..c).map(move |j| (i, j)))
            .map(|(i, j)| raw[(i, j)].to_f64())
            .collect();
        let (p, cols) = clamp_normalize(&flat, c);
        Ok(p.chunks_exact(cols).map(<[f64]>::to_vec).collect())
    }

    /// Hard labels: binary 1 iff f > 0.5 (xRFM's `predict`), multiclass the argmax.
    pub fn predict_labels(&self, z: MatRef<'_, T>) -> Result<Vec<usize>, FitError> {
        let raw = self.predict_raw(z)?;
        Ok((0..raw.nrows())
            .map(|i| {
                let row: Vec<f64> = (0..raw.ncols()).map(|j| raw[(i, j)].to_f64()).collect();
                if row.len() == 1 {
                    usize::from(row[0] > 0.5)
                } else {
                    argmax(&row)
                }
            })
            .collect())
    }

    /// Regression predictions in the target's original units.
    pub fn predict_values(&self, z: MatRef<'_, T>) -> Result<Vec<f64>, FitError> {
        let raw = self.predict_raw(z)?;
        Ok((0..raw.nrows())
            .map(|i| raw[(i, 0)].to_f64() * self.target_std + self.target_mean)
            .collect())
    }

    /// Serialises to safetensors bytes (tensors `m`, `centers`, `alpha` in T's dtype).
    pub fn to_bytes(&self) -> Result<Vec<u8>, ProbeFileError> {
        let row_major = |m: &Mat<T>| -> Vec<u8> {
            let v: Vec<T> = (0..m.nrows())
                .flat_map(|i| (0..m.ncols()).map(move |j| m[(i, j)]))
                .collect();
            T::slice_to_le_bytes(&v)
        };
        let bufs = [
            ("m", &self.m),
            ("centers", &self.centers),
            ("alpha", &self.alpha),
        ]
        .map(|(name, m)| (name, vec![m.nrows(), m.ncols()], row_major(m)));
        let mut views = Vec::new();
        for (name, shape, bytes) in &bufs {
            let view = TensorView::new(T::DTYPE, shape.clone(), bytes).map_err(|e| {
                ProbeFileError::Serialize {
                    path: PathBuf::from("<memory>"),
                    reason: format!("{name}: {e}"),
                }
            })?;
            views.push((name.to_string(), view));
        }
        let n_classes = match self.kind {
            ProbeKind::Multiclass { n_classes } => n_classes,
            _ => 1,
        };
        let meta: HashMap<String, String> = [
            ("format", PROBE_FORMAT.to_string()),
            ("kind", self.kind.name().to_string()),
            ("kernel", "l2_high_dim".to_string()),
            ("n_classes", n_classes.to_string()),
            ("bandwidth", format!("{:e}", self.kernel.bandwidth)),
            ("exponent", format!("{:e}", self.kernel.exponent)),
            ("reg", format!("{:e}", self.reg)),
            ("center_grads", self.center_grads.to_string()),
            ("target_mean", format!("{:e}", self.target_mean)),
            ("target_std", format!("{:e}", self.target_std)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        safetensors::serialize(views, Some(meta))
            .map(crate::canonical::canonical_safetensors)
            .map_err(|e| ProbeFileError::Serialize {
                path: PathBuf::from("<memory>"),
                reason: e.to_string(),
            })
    }

    pub fn save(&self, path: &Path) -> Result<(), ProbeFileError> {
        let bytes = self.to_bytes().map_err(|e| match e {
            ProbeFileError::Serialize { reason, .. } => ProbeFileError::Serialize {
                path: path.to_path_buf(),
                reason,
            },
            other => other,
        })?;
        crate::atomic::write_bytes_atomic(path, &bytes).map_err(|source| ProbeFileError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn load(path: &Path) -> Result<Self, ProbeFileError> {
        let bytes = std::fs::read(path).map_err(|source| ProbeFileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses a probe file; `origin` names it in errors. F32 and F64 tensors are accepted.
    pub fn from_bytes(bytes: &[u8], origin: &Path) -> Result<Self, ProbeFileError> {
        let path = || origin.to_path_buf();
        let st = SafeTensors::deserialize(bytes).map_err(|e| ProbeFileError::NotSafetensors {
            path: path(),
            reason: e.to_string(),
        })?;
        let (_, header) =
            SafeTensors::read_metadata(bytes).map_err(|e| ProbeFileError::NotSafetensors {
                path: path(),
                reason: e.to_string(),
            })?;
        let empty = HashMap::new();
        let meta = header.metadata().as_ref().unwrap_or(&empty);
        let get = |key: &'static str| {
            meta.get(key)
                .ok_or(ProbeFileError::MissingMetadata { path: path(), key })
        };
        let format = get("format")?;
        if format != PROBE_FORMAT {
            return Err(ProbeFileError::UnknownFormat {
                path: path(),
                found: format.clone(),
            });
        }
        let bad = |key: &'static str, value: &str, reason| ProbeFileError::BadMetadata {
            path: path(),
            key,
            value: value.to_string(),
            reason,
        };
        let number = |key: &'static str| -> Result<f64, ProbeFileError> {
            let v = get(key)?;
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| bad(key, v, "not a finite number"))
        };
        let n_classes_s = get("n_classes")?;
        let n_classes: usize = n_classes_s
            .parse()
            .map_err(|_| bad("n_classes", n_classes_s, "not an integer"))?;
        let kind_s = get("kind")?;
        let kind = match kind_s.as_str() {
            "binary" => ProbeKind::Binary,
            "regression" => ProbeKind::Regression,
            "multiclass" if n_classes >= 2 => ProbeKind::Multiclass { n_classes },
            "multiclass" => {
                return Err(bad(
                    "n_classes",
                    n_classes_s,
                    "a multiclass probe needs at least 2 classes",
                ));
            }
            _ => {
                return Err(bad(
                    "kind",
                    kind_s,
                    "expected binary, regression or multiclass",
                ));
            }
        };
        let kernel_s = get("kernel")?;
        if kernel_s != "l2_high_dim" {
            return Err(bad("kernel", kernel_s, "only l2_high_dim is supported"));
        }
        let kernel = KernelParams {
            bandwidth: number("bandwidth")?,
            exponent: number("exponent")?,
        };
        if kernel.bandwidth <= 0.0 || kernel.exponent <= 0.0 {
            return Err(bad(
                "bandwidth",
                get("bandwidth")?,
                "bandwidth and exponent must be positive",
            ));
        }
        let center_s = get("center_grads")?;
        let center_grads = center_s
            .parse::<bool>()
            .map_err(|_| bad("center_grads", center_s, "expected true or false"))?;
        let tensor = |name: &'static str| -> Result<Mat<T>, ProbeFileError> {
            let t = st
                .tensor(name)
                .map_err(|_| ProbeFileError::MissingTensor { path: path(), name })?;
            let shape = t.shape().to_vec();
            if shape.len() != 2 {
                return Err(ProbeFileError::WrongShape {
                    path: path(),
                    name,
                    found: shape,
                    expected: "a matrix".into(),
                });
            }
            let vals: Vec<f64> = match t.dtype() {
                Dtype::F32 => t
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                    .collect(),
                Dtype::F64 => t
                    .data()
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
                other => {
                    return Err(ProbeFileError::WrongDtype {
                        path: path(),
                        name,
                        found: format!("{other:?}"),
                    });
                }
            };
            if vals.iter().any(|v| !v.is_finite()) {
                return Err(ProbeFileError::NonFinite { path: path(), name });
            }
            let cols = shape[1];
            Ok(Mat::from_fn(shape[0], cols, |i, j| {
                T::from_f64(vals[i * cols + j])
            }))
        };
        let (m, centers, alpha) = (tensor("m")?, tensor("centers")?, tensor("alpha")?);
        let d = centers.ncols();
        if m.nrows() != d || m.ncols() != d {
            return Err(ProbeFileError::WrongShape {
                path: path(),
                name: "m",
                found: vec![m.nrows(), m.ncols()],
                expected: format!("[{d}, {d}]"),
            });
        }
        if alpha.nrows() != centers.nrows() || alpha.ncols() != kind.n_outputs() {
            return Err(ProbeFileError::WrongShape {
                path: path(),
                name: "alpha",
                found: vec![alpha.nrows(), alpha.ncols()],
                expected: format!("[{}, {}]", centers.nrows(), kind.n_outputs()),
            });
        }
        Probe::new(
            kind,
            kernel,
            number("reg")?,
            center_grads,
            m,
            centers,
            alpha,
            number("target_mean")?,
            number("target_std")?,
        )
        .map_err(|e| ProbeFileError::Serialize {
            path: path(),
            reason: e.to_string(),
        })
    }
}
