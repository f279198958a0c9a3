//! What a slot strip shows of a directions file: its concept, classes and the model it was
//! made for, whether a concept-meter probe sits beside it, and the folder's other files for the
//! picker. Read on the GUI thread when a path is committed (a directions file is a few MB at
//! most), never per frame.

use std::path::{Path, PathBuf};

use directions::DirectionsFile;

/// A directions file, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectionsInfo {
    pub path: PathBuf,
    pub concept: String,
    pub classes: Vec<String>,
    /// The model it was trained on (`model` metadata).
    pub model: String,
    pub d_model: usize,
    /// `<stem>.report.json` names a multiclass probe and the probe file is there: the engine
    /// meters this slot.
    pub probe: bool,
}

impl DirectionsInfo {
    /// Read `path`; the error names the file and what is wrong with it.
    pub fn read(path: &Path) -> Result<Self, String> {
        if !path.is_file() {
            return Err(format!("{}: no such file", path.display()));
        }
        let file = DirectionsFile::read(path).map_err(|e| e.to_string())?;
        Ok(Self {
            path: path.to_owned(),
            concept: file.concept,
            classes: file.classes,
            model: file.model,
            d_model: file.d_model,
            probe: has_probe(path),
        })
    }

    /// The class a slot's `class` field names (a name or a 0-based index).
    pub fn class_index(&self, class: &str) -> Option<usize> {
        let class = class.trim();
        self.classes.iter().position(|c| c == class).or_else(|| {
            class
                .parse::<usize>()
                .ok()
                .filter(|&i| i < self.classes.len())
        })
    }

    /// Why this file cannot steer a model of width `d_model`, if it cannot.
    pub fn mismatch(&self, d_model: usize) -> Option<String> {
        (self.d_model != d_model).then(|| {
            format!(
                "made for a model of width {} ({}); the loaded model has width {d_model}",
                self.d_model, self.model
            )
        })
    }
}

/// `<stem><suffix>` beside `path` (the naming `train-probes` uses).
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{stem}{suffix}"))
}

/// Whether the engine will find a multiclass probe for `path` (see `engine::stream::meters`).
fn has_probe(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(beside(path, ".report.json")) else {
        return false;
    };
    let Ok(report) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    let probe = &report["probe"];
    probe["kind"] == "multiclass"
        && probe["file"]
            .as_str()
            .is_some_and(|f| path.with_file_name(f).is_file())
}

/// One entry of the file picker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickerEntry {
    Folder(PathBuf),
    File(PathBuf),
}

/// The picker's listing for `typed` (a folder, or a file whose folder is listed): subfolders
/// and directions files (`*.safetensors`, probes left out), sorted; the folder listed.
pub fn list_folder(typed: &str) -> (PathBuf, Vec<PickerEntry>) {
    let typed = Path::new(typed.trim());
    let folder = if typed.is_dir() {
        typed.to_owned()
    } else {
        match typed.parent().filter(|p| p.is_dir()) {
            Some(parent) => parent.to_owned(),
            None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        }
    };
    let mut entries: Vec<PickerEntry> = std::fs::read_dir(&folder)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let path = entry.path();
            let name = path.file_name()?.to_string_lossy().into_owned();
            if name.starts_with('.') {
                None
            } else if path.is_dir() {
                Some(PickerEntry::Folder(path))
            } else if name.ends_with(".safetensors") && !name.ends_with(".probe.safetensors") {
                Some(PickerEntry::File(path))
            } else {
                None
            }
        })
        .collect();
    entries.sort_by(|a, b| {
        let key = |e: &PickerEntry| match e {
            PickerEntry::Folder(p) => (0, p.clone()),
            PickerEntry::File(p) => (1, p.clone()),
        };
        key(a).cmp(&key(b))
    });
    (folder, entries)
}
