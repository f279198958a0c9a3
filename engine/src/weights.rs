//! Reading Hugging Face safetensors checkpoints: one `model.safetensors`, or shards listed in
//! `model.safetensors.index.json`. Files are memory-mapped; each tensor is checked by name,
//! shape and dtype as it is taken, and converted to f32 (F16 and BF16 checkpoints load too).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, SafeTensors, TensorInfo};

use crate::error::LoadError;

/// One memory-mapped safetensors file and its parsed header.
struct WeightFile {
    path: PathBuf,
    map: Mmap,
    /// Byte offset of the data section (8-byte length + JSON header).
    data_start: usize,
    tensors: HashMap<String, TensorInfo>,
}

/// All tensors of a checkpoint, by key.
pub struct Weights {
    dir: PathBuf,
    files: Vec<WeightFile>,
    /// key → index into `files`
    owner: HashMap<String, usize>,
}

impl Weights {
    /// Open the weights of a model directory (single file or sharded).
    pub fn open_dir(dir: &Path) -> Result<Self, LoadError> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let files = if index.is_file() {
            shard_files(dir, &index)?
        } else if single.is_file() {
            vec![single]
        } else {
            return Err(LoadError::NoWeights {
                dir: dir.to_owned(),
            });
        };
        Self::open_files(dir, &files)
    }

    /// Open an explicit list of safetensors files.
    pub fn open_files(dir: &Path, paths: &[PathBuf]) -> Result<Self, LoadError> {
        let mut files = Vec::with_capacity(paths.len());
        let mut owner = HashMap::new();
        for path in paths {
            let file = File::open(path).map_err(|cause| LoadError::Io {
                path: path.clone(),
                cause,
            })?;
            // SAFETY: the map is read-only; a checkpoint modified while we read it is the
            // user's problem in every loader that maps files, as Hugging Face's does.
            let map = unsafe { Mmap::map(&file) }.map_err(|cause| LoadError::Io {
                path: path.clone(),
                cause,
            })?;
            let (header_len, metadata) =
                SafeTensors::read_metadata(&map).map_err(|cause| LoadError::Safetensors {
                    path: path.clone(),
                    cause,
                })?;
            let tensors: HashMap<String, TensorInfo> = metadata
                .tensors()
                .into_iter()
                .map(|(k, info)| (k, info.clone()))
                .collect();
            for key in tensors.keys() {
                owner.insert(key.clone(), files.len());
            }
            files.push(WeightFile {
                path: path.clone(),
                map,
                data_start: 8 + header_len,
                tensors,
            });
        }
        Ok(Self {
            dir: dir.to_owned(),
            files,
            owner,
        })
    }

    pub fn contains(&self, key: &str) -> bool {
        self.owner.contains_key(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.owner.keys().map(String::as_str)
    }

    /// The shape of `key`, if present.
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        let file = &self.files[*self.owner.get(key)?];
        file.tensors.get(key).map(|info| info.shape.as_slice())
    }

    /// The values of `key` as f32, checked against `expected` shape.
    pub fn read_f32(&self, key: &str, expected: &[usize]) -> Result<Vec<f32>, LoadError> {
        let (file, info) = self.locate_shaped(key, expected)?;
        let bytes = self.bytes(file, info);
        let values = match info.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(LoadError::UnsupportedDtype {
                    key: key.to_owned(),
                    file: file.path.clone(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        release(file, info);
        Ok(values)
    }

    /// The values of an integer tensor (I64 or I32) as i64, checked against `expected` shape.
    pub fn read_i64(&self, key: &str, expected: &[usize]) -> Result<Vec<i64>, LoadError> {
        let (file, info) = self.locate_shaped(key, expected)?;
        let bytes = self.bytes(file, info);
        match info.dtype {
            Dtype::I64 => Ok(bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("chunk of 8")))
                .collect()),
            Dtype::I32 => Ok(bytes
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().expect("chunk of 4")) as i64)
                .collect()),
            other => Err(LoadError::UnsupportedDtype {
                key: key.to_owned(),
                file: file.path.clone(),
                dtype: format!("{other:?}"),
            }),
        }
    }

    /// A float tensor of rank `D` on `device`.
    pub fn tensor<const D: usize>(
        &self,
        key: &str,
        shape: [usize; D],
        device: &Device,
    ) -> Result<Tensor<D>, LoadError> {
        let values = self.read_f32(key, &shape)?;
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }

    /// An integer tensor of rank `D` on `device`.
    pub fn int_tensor<const D: usize>(
        &self,
        key: &str,
        shape: [usize; D],
        device: &Device,
    ) -> Result<Tensor<D, Int>, LoadError> {
        let values = self.read_i64(key, &shape)?;
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }

    /// A PyTorch `nn.Linear` weight `[out, in]`, transposed to burn's `[in, out]`. The transpose
    /// is done here, once, so the tensor is contiguous: a strided view would be copied by every
    /// matmul that reads it.
    pub fn linear_weight(
        &self,
        key: &str,
        d_in: usize,
        d_out: usize,
        device: &Device,
    ) -> Result<Tensor<2>, LoadError> {
        let values = self.read_f32(key, &[d_out, d_in])?;
        let mut transposed = vec![0f32; values.len()];
        for (o, row) in values.chunks_exact(d_in.max(1)).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                transposed[i * d_out + o] = v;
            }
        }
        Ok(Tensor::from_data(
            TensorData::new(transposed, [d_in, d_out]),
            device,
        ))
    }

    /// A weight-normalised conv weight `w = g · v / ‖v‖` (norm over every dim but 0), stored
    /// as the hub does (`{prefix}.weight_g` / `.weight_v`) or as recent PyTorch saves it
    /// (`{prefix}.parametrizations.weight.original0` / `original1`).
    pub fn weight_norm<const D: usize>(
        &self,
        prefix: &str,
        shape: [usize; D],
        device: &Device,
    ) -> Result<Tensor<D>, LoadError> {
        let (g_key, v_key) = if self.contains(&format!("{prefix}.weight_g")) {
            (format!("{prefix}.weight_g"), format!("{prefix}.weight_v"))
        } else if self.contains(&format!("{prefix}.parametrizations.weight.original0")) {
            (
                format!("{prefix}.parametrizations.weight.original0"),
                format!("{prefix}.parametrizations.weight.original1"),
            )
        } else {
            return Err(LoadError::MissingTensor {
                key: format!("{prefix}.weight_g"),
                dir: self.dir.clone(),
            });
        };
        let mut g_shape = [1usize; D];
        g_shape[0] = shape[0];
        let g = self.read_f32(&g_key, &g_shape)?;
        let mut v = self.read_f32(&v_key, &shape)?;
        let row = v.len() / shape[0].max(1);
        for (o, chunk) in v.chunks_mut(row.max(1)).enumerate() {
            let norm = chunk
                .iter()
                .map(|x| (*x as f64) * (*x as f64))
                .sum::<f64>()
                .sqrt();
            let scale = (g[o] as f64 / norm) as f32;
            chunk.iter_mut().for_each(|x| *x *= scale);
        }
        Ok(Tensor::from_data(TensorData::new(v, shape), device))
    }

    /// [`Self::locate`], and the tensor must have shape `expected`.
    fn locate_shaped(
        &self,
        key: &str,
        expected: &[usize],
    ) -> Result<(&WeightFile, &TensorInfo), LoadError> {
        let (file, info) = self.locate(key)?;
        if info.shape != expected {
            return Err(LoadError::ShapeMismatch {
                key: key.to_owned(),
                file: file.path.clone(),
                expected: expected.to_vec(),
                found: info.shape.clone(),
            });
        }
        Ok((file, info))
    }

    fn locate(&self, key: &str) -> Result<(&WeightFile, &TensorInfo), LoadError> {
        let missing = || LoadError::MissingTensor {
            key: key.to_owned(),
            dir: self.dir.clone(),
        };
        let file = &self.files[*self.owner.get(key).ok_or_else(missing)?];
        let info = file.tensors.get(key).ok_or_else(missing)?;
        Ok((file, info))
    }

    fn bytes<'a>(&'a self, file: &'a WeightFile, info: &TensorInfo) -> &'a [u8] {
        let (start, end) = info.data_offsets;
        &file.map[file.data_start + start..file.data_start + end]
    }
}

/// Drop the mapped pages of a tensor once it has been copied out, so loading a model peaks at
/// about its size in memory instead of twice that (mapped file pages count as resident).
fn release(file: &WeightFile, info: &TensorInfo) {
    let (start, end) = info.data_offsets;
    // SAFETY: the map is a read-only file mapping; MADV_DONTNEED only discards clean pages,
    // which fault back in from the file if read again. No reference into the range is held.
    let _ = unsafe {
        file.map.unchecked_advise_range(
            memmap2::UncheckedAdvice::DontNeed,
            file.data_start + start,
            end - start,
        )
    };
}

/// The shard files named by `model.safetensors.index.json`, in a stable order.
fn shard_files(dir: &Path, index: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let paths: Vec<PathBuf> = shard_names(index)?.iter().map(|n| dir.join(n)).collect();
    for p in &paths {
        if !p.is_file() {
            return Err(LoadError::Index {
                path: index.to_owned(),
                message: format!("shard {} is missing", p.display()),
            });
        }
    }
    Ok(paths)
}

/// The shard file names `index` (a `model.safetensors.index.json`) maps tensors to, sorted and
/// each named once; names that would leave the model directory are refused.
pub fn shard_names(index: &Path) -> Result<Vec<String>, LoadError> {
    let json: serde_json::Value = crate::config::read_json(index)?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| LoadError::Index {
            path: index.to_owned(),
            message: "no `weight_map` object".to_owned(),
        })?;
    let mut names: Vec<&str> = Vec::new();
    for (key, file) in map {
        let file = file.as_str().ok_or_else(|| LoadError::Index {
            path: index.to_owned(),
            message: format!("`weight_map.{key}` is not a file name"),
        })?;
        if file.contains('/') || file.contains('\\') || file == ".." {
            return Err(LoadError::Index {
                path: index.to_owned(),
                message: format!("`weight_map.{key}` names a file outside the model directory"),
            });
        }
        if !names.contains(&file) {
            names.push(file);
        }
    }
    names.sort_unstable();
    Ok(names.into_iter().map(str::to_owned).collect())
}
