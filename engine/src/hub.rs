//! Where a model comes from: a directory, or a Hugging Face repo id (`facebook/musicgen-small`)
//! resolved in the local Hugging Face cache (`models--org--name/snapshots/<rev>/`). Resolving
//! never touches the network; [`download`] (feature `download`) fills the cache when a caller
//! chooses to.

use std::path::{Path, PathBuf};

use crate::error::LoadError;

#[cfg(feature = "download")]
pub mod download;

/// The model every tool uses when none is named.
pub const DEFAULT_MODEL: &str = "facebook/musicgen-small";

/// Resolve `source` (a directory or a repo id) to a model directory.
pub fn resolve_model(source: &str) -> Result<PathBuf, LoadError> {
    let path = Path::new(source);
    if path.is_dir() {
        if path.join("config.json").is_file() {
            return Ok(path.to_owned());
        }
        return Err(LoadError::ModelNotFound {
            source_name: source.to_owned(),
            hint: format!(
                "{} has no config.json; is it a Hugging Face MusicGen directory?",
                path.display()
            ),
        });
    }
    let Some((org, name)) = parse_repo_id(source) else {
        return Err(LoadError::ModelNotFound {
            source_name: source.to_owned(),
            hint: "neither a directory nor a repo id like `facebook/musicgen-small`".to_owned(),
        });
    };
    let caches = cache_dirs();
    for cache in &caches {
        if let Some(dir) = snapshot_in_cache(cache, org, name) {
            return Ok(dir);
        }
    }
    let searched: Vec<String> = caches.iter().map(|c| c.display().to_string()).collect();
    Err(LoadError::ModelNotFound {
        source_name: source.to_owned(),
        hint: format!(
            "not in the Hugging Face cache (searched {}). Download it where a network exists with \
             `huggingface-cli download {source}`, or pass a model directory: `--model <DIR>` works offline",
            searched.join(", ")
        ),
    })
}

/// `org/name` with plain path-safe parts.
pub fn parse_repo_id(source: &str) -> Option<(&str, &str)> {
    let (org, name) = source.split_once('/')?;
    let ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    (ok(org) && ok(name)).then_some((org, name))
}

/// Hub cache directories in the order `huggingface_hub` consults them; the first is where
/// downloads go.
pub fn cache_dirs() -> Vec<PathBuf> {
    cache_dirs_from(|k| std::env::var(k).ok())
}

/// [`cache_dirs`] with the environment read through `var`.
pub fn cache_dirs_from(var: impl Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let env = |k: &str| var(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let mut dirs = Vec::new();
    if let Some(d) = env("HF_HUB_CACHE") {
        dirs.push(d);
    }
    if let Some(d) = env("HUGGINGFACE_HUB_CACHE") {
        dirs.push(d);
    }
    if let Some(home) = env("HF_HOME") {
        dirs.push(home.join("hub"));
    }
    if let Some(xdg) = env("XDG_CACHE_HOME") {
        dirs.push(xdg.join("huggingface").join("hub"));
    }
    if let Some(home) = env("HOME") {
        dirs.push(home.join(".cache").join("huggingface").join("hub"));
    }
    dirs.dedup();
    dirs
}

/// `<cache>/models--org--name/snapshots/<rev>`: the revision `refs/main` names, else any
/// snapshot holding a config.json (newest name first, for a stable choice).
fn snapshot_in_cache(cache: &Path, org: &str, name: &str) -> Option<PathBuf> {
    let repo = cache.join(format!("models--{org}--{name}"));
    let snapshots = repo.join("snapshots");
    if let Ok(rev) = std::fs::read_to_string(repo.join("refs").join("main")) {
        let dir = snapshots.join(rev.trim());
        if dir.join("config.json").is_file() {
            return Some(dir);
        }
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("config.json").is_file())
        .collect();
    candidates.sort();
    candidates.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_are_recognised() {
        assert_eq!(
            parse_repo_id("facebook/musicgen-small"),
            Some(("facebook", "musicgen-small"))
        );
        assert_eq!(parse_repo_id("../etc"), None);
        assert_eq!(parse_repo_id("a/b/c"), None);
        assert_eq!(parse_repo_id("nope"), None);
    }

    #[test]
    fn resolves_a_snapshot_in_a_cache() {
        let cache = std::env::temp_dir().join(format!("musicrfm-hub-test-{}", std::process::id()));
        let snap = cache.join("models--facebook--musicgen-small/snapshots/abc123");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("config.json"), "{}").unwrap();
        std::fs::create_dir_all(cache.join("models--facebook--musicgen-small/refs")).unwrap();
        std::fs::write(
            cache.join("models--facebook--musicgen-small/refs/main"),
            "abc123\n",
        )
        .unwrap();
        assert_eq!(
            snapshot_in_cache(&cache, "facebook", "musicgen-small"),
            Some(snap.clone())
        );
        assert_eq!(
            snapshot_in_cache(&cache, "facebook", "musicgen-large"),
            None
        );
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn missing_model_says_how_to_get_it() {
        let err = resolve_model("nobody/no-such-model-xyz")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("huggingface-cli download nobody/no-such-model-xyz"),
            "{err}"
        );
        assert!(err.contains("--model <DIR>"), "{err}");
    }
}
