//! Models shared between engines: instances of the plugin in one host that load the same model
//! directory share one copy of the weights (each engine keeps its own caches, steering and
//! stream). The registry holds weak references, so a model is freed when the last engine using
//! it drops it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use crate::error::LoadError;
use crate::model::{LoadOptions, MusicGen};

/// Loaded models by canonical directory and weight format. Loads run under the lock, so two
/// engines asking for the same model at once load it once.
type Key = (PathBuf, &'static str);
static MODELS: Mutex<Option<HashMap<Key, Weak<MusicGen>>>> = Mutex::new(None);

/// The model `name` (a directory or a repo id in the local Hugging Face cache), loaded on the
/// default device with `options`, or the copy another engine already holds.
pub fn load_shared(name: &str, options: LoadOptions) -> Result<Arc<MusicGen>, LoadError> {
    let dir = crate::hub::resolve_model(name)?;
    let key = (
        dir.canonicalize().unwrap_or(dir.clone()),
        options.weight_format.name(),
    );
    let mut guard = MODELS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let models = guard.get_or_insert_with(HashMap::new);
    models.retain(|_, model| model.strong_count() > 0);
    if let Some(model) = models.get(&key).and_then(Weak::upgrade) {
        return Ok(model);
    }
    let model = Arc::new(MusicGen::load_with(
        &dir,
        &crate::default_device(),
        options,
    )?);
    models.insert(key, Arc::downgrade(&model));
    Ok(model)
}

/// Models loaded and still used by some engine.
pub fn resident() -> usize {
    let guard = MODELS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    guard
        .as_ref()
        .map_or(0, |m| m.values().filter(|w| w.strong_count() > 0).count())
}
