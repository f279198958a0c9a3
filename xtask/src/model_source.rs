//! `--model`: a directory or a repo id. Repo ids come from the local Hugging Face cache; when the
//! model is not there and `huggingface-cli` (or `hf`) is installed, it is asked to download it
//! (which needs a network), and the cache is searched again.

use std::path::PathBuf;
use std::process::Command;

use engine::LoadError;

pub fn resolve(source: &str) -> anyhow::Result<PathBuf> {
    match engine::hub::resolve_model(source) {
        Ok(dir) => Ok(dir),
        Err(LoadError::ModelNotFound { .. })
            if engine::hub::parse_repo_id(source).is_some()
                && !std::path::Path::new(source).exists() =>
        {
            for cli in ["hf", "huggingface-cli"] {
                let found = Command::new(cli)
                    .arg("--help")
                    .output()
                    .is_ok_and(|o| o.status.success());
                if !found {
                    continue;
                }
                eprintln!(
                    "{source} is not in the Hugging Face cache; downloading it with `{cli} download {source}` …"
                );
                let status = Command::new(cli).args(["download", source]).status();
                if status.is_ok_and(|s| s.success()) {
                    return Ok(engine::hub::resolve_model(source)?);
                }
                eprintln!("`{cli} download {source}` failed (no network?)");
                break;
            }
            Err(engine::hub::resolve_model(source).unwrap_err().into())
        }
        Err(e) => Err(e.into()),
    }
}
