//! The features directory `extract` writes and `train-probes` reads (`musicrfm.features.v1`):
//!
//! - `features.json`: source (`musicgen` | `chroma` | `logmel`), model, `d_model`,
//!   `n_layers_model`, `layers`, the dataset's concept / classes / kind, clip count, shard names.
//! - `manifest.jsonl`: the dataset's manifest, one row per feature row, same order.
//! - `shard-NNNNN.safetensors`: rows `[start, end)` of every layer, tensors `block{b}` f32
//!   `[rows, d_model]` and `clip_index` i64 `[rows]`; metadata key `musicrfm` holds the run key
//!   (source, model, protocol), so a resumed run never mixes shards of different runs.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde_json::Value;

pub const FEATURES_FORMAT: &str = "musicrfm.features.v1";

pub fn shard_name(i: usize) -> String {
    format!("shard-{i:05}.safetensors")
}

/// One shard in memory: `layers[r]` is `rows × d` row-major for `layer_ids[r]`.
pub struct Shard {
    pub start: usize,
    pub rows: usize,
    pub layers: Vec<Vec<f32>>,
}

/// Writes a shard atomically.
pub fn write_shard(
    path: &Path,
    run_key: &str,
    layer_ids: &[usize],
    d: usize,
    shard: &Shard,
) -> anyhow::Result<()> {
    let bytes: Vec<Vec<u8>> = shard
        .layers
        .iter()
        .map(|l| l.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let index: Vec<u8> = (shard.start..shard.start + shard.rows)
        .flat_map(|i| (i as i64).to_le_bytes())
        .collect();
    let mut views = Vec::new();
    for (b, data) in layer_ids.iter().zip(&bytes) {
        views.push((
            format!("block{b}"),
            TensorView::new(Dtype::F32, vec![shard.rows, d], data)?,
        ));
    }
    views.push((
        "clip_index".into(),
        TensorView::new(Dtype::I64, vec![shard.rows], &index)?,
    ));
    let meta = HashMap::from([("musicrfm".to_string(), run_key.to_string())]);
    crate::write_file_with(path, |tmp| {
        safetensors::serialize_to_file(views, Some(meta), tmp)?;
        Ok(())
    })
}

/// Reads a shard, checking it belongs to this run and holds rows `[start, start + rows)`.
pub fn read_shard(
    path: &Path,
    run_key: &str,
    layer_ids: &[usize],
    d: usize,
    start: usize,
    rows: usize,
) -> anyhow::Result<Shard> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let key = header.metadata().as_ref().and_then(|m| m.get("musicrfm"));
    if key.map(String::as_str) != Some(run_key) {
        bail!(
            "{} was written by another run ({key:?}, expected {run_key:?})",
            path.display()
        );
    }
    let st = SafeTensors::deserialize(&bytes)?;
    let index = st.tensor("clip_index")?;
    let want: Vec<u8> = (start..start + rows)
        .flat_map(|i| (i as i64).to_le_bytes())
        .collect();
    if index.data() != want.as_slice() {
        bail!(
            "{}: clip_index is not rows {start}..{}",
            path.display(),
            start + rows
        );
    }
    let mut layers = Vec::new();
    for b in layer_ids {
        let t = st
            .tensor(&format!("block{b}"))
            .with_context(|| format!("{}: no tensor block{b}", path.display()))?;
        if t.dtype() != Dtype::F32 || t.shape() != [rows, d] {
            bail!(
                "{}: block{b} is {:?} {:?}, expected F32 [{rows}, {d}]",
                path.display(),
                t.dtype(),
                t.shape()
            );
        }
        layers.push(
            t.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        );
    }
    Ok(Shard {
        start,
        rows,
        layers,
    })
}

/// A whole features directory in memory.
pub struct Features {
    pub info: Value,
    pub manifest: Vec<Value>,
    pub layer_ids: Vec<usize>,
    pub d: usize,
    /// `matrices[r]`: n × d row-major features of layer `layer_ids[r]`.
    pub matrices: Vec<Vec<f32>>,
}

impl Features {
    pub fn n(&self) -> usize {
        self.manifest.len()
    }

    pub fn read(dir: &Path) -> anyhow::Result<Self> {
        let info_path = dir.join("features.json");
        let info: Value = serde_json::from_slice(
            &std::fs::read(&info_path)
                .with_context(|| format!("reading --features {}", info_path.display()))?,
        )
        .with_context(|| format!("parsing {}", info_path.display()))?;
        if info["format"] != FEATURES_FORMAT {
            bail!(
                "{}: format is {}, expected {FEATURES_FORMAT}",
                info_path.display(),
                info["format"]
            );
        }
        let field = |k: &str| {
            info[k]
                .as_u64()
                .map(|v| v as usize)
                .with_context(|| format!("{}: `{k}` missing or not a number", info_path.display()))
        };
        let (d, n, shard_size) = (field("d_model")?, field("clips")?, field("shard_size")?);
        let layer_ids: Vec<usize> = info["layers"]
            .as_array()
            .with_context(|| format!("{}: `layers` missing", info_path.display()))?
            .iter()
            .map(|v| v.as_u64().map(|v| v as usize))
            .collect::<Option<_>>()
            .with_context(|| format!("{}: `layers` must hold integers", info_path.display()))?;
        let run_key = info["run_key"].as_str().unwrap_or_default().to_string();
        let manifest = read_manifest(&dir.join("manifest.jsonl"))?;
        if manifest.len() != n {
            bail!(
                "{}: {} manifest rows for {n} clips",
                dir.display(),
                manifest.len()
            );
        }
        let mut matrices = vec![Vec::with_capacity(n * d); layer_ids.len()];
        for (i, start) in (0..n).step_by(shard_size.max(1)).enumerate() {
            let rows = shard_size.min(n - start);
            let shard = read_shard(
                &dir.join(shard_name(i)),
                &run_key,
                &layer_ids,
                d,
                start,
                rows,
            )?;
            for (m, l) in matrices.iter_mut().zip(shard.layers) {
                m.extend(l);
            }
        }
        Ok(Self {
            info,
            manifest,
            layer_ids,
            d,
            matrices,
        })
    }
}

/// A dataset's `manifest.jsonl`.
pub fn read_manifest(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{} line {}", path.display(), i + 1))
        })
        .collect()
}
