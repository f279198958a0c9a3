//! Atomic file writes: the workspace's one way to replace a file. The new content goes to a
//! sibling temporary file that is renamed over the target only when writing succeeded, so a
//! failed or interrupted run never leaves a truncated file where a good one was.

use std::path::{Path, PathBuf};

/// Write `path` by calling `write` on a sibling temporary path, then renaming it into place.
/// On any error the temporary file is removed and the target is untouched.
///
/// The temporary name keeps the target's extension last (`.tmp-<pid>-<name>`), so writers that
/// choose a format by extension (PNG plots) still work.
pub fn write_atomic<E: From<std::io::Error>>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let tmp = temporary_sibling(path);
    let result = write(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(E::from));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// [`write_atomic`] for a byte buffer (synced to disk before the rename).
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic(path, |tmp| {
        use std::io::Write;
        let mut file = std::fs::File::create(tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })
}

fn temporary_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".tmp-{}-{name}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_keeps_the_old_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("atomic-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.bin");
        write_bytes_atomic(&path, b"good").unwrap();
        let err = write_atomic(&path, |tmp| {
            std::fs::write(tmp, b"half")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        assert_eq!(std::fs::read(&path).unwrap(), b"good");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.bin")]);
        write_bytes_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
